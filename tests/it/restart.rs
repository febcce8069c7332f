//! State that survives a restart in spool mode: delivered identities (until their TTL),
//! undelivered events, and held PENDING records with their grace.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// Delivered identities survive a restart (a redelivery is a duplicate) until their TTL ends;
/// an event still undelivered at shutdown is delivered after the restart, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_delivered_keys_for_the_ttl_and_undelivered_events() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    let mut cfg = spool_config(&oscar.url());
    cfg.dedup.ttl = Duration::from_secs(3);
    let gw = SpoolGw::start(dir.path(), cfg.clone(), None).await;
    gw.post_event(put_event("ttl-1")).await.assert_status(202);
    wait_for("delivered", Duration::from_secs(10), || {
        oscar.accepted().len() == 1
    })
    .await;
    let delivered_at = Instant::now();
    // One more that cannot be delivered before the shutdown.
    oscar.set_status(503);
    gw.post_event(put_event("ttl-2")).await.assert_status(202);
    gw.stop().await;

    oscar.set_status(201);
    let gw = SpoolGw::start(dir.path(), cfg.clone(), None).await;
    gw.post_event(put_event("ttl-1"))
        .await
        .assert(200, &["duplicate"])
        .assert_reason("already-delivered");
    wait_for(
        "undelivered event delivered after restart",
        Duration::from_secs(10),
        || oscar.accepted().len() == 2,
    )
    .await;
    gw.post_event(put_event("ttl-2"))
        .await
        .assert_verdicts(&["duplicate"]);
    gw.stop().await;

    // After the TTL the identity is forgotten, across a restart too.
    let left = Duration::from_secs(3).saturating_sub(delivered_at.elapsed());
    tokio::time::sleep(left + Duration::from_millis(300)).await;
    let gw = SpoolGw::start(dir.path(), cfg, None).await;
    gw.post_event(put_event("ttl-1"))
        .await
        .assert(202, &["accepted"]);
    wait_for(
        "forwarded again after the TTL",
        Duration::from_secs(10),
        || oscar.accepted().len() == 3,
    )
    .await;
    gw.stop().await;
}

/// A held PENDING record is durable: it survives a restart and is delivered after its grace;
/// a clean copy arriving during the grace preempts it and exactly one reaches OSCAR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_record_survives_restart_and_clean_copy_preempts() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    let mut cfg = spool_config(&oscar.url());
    cfg.policy.pending_grace = Duration::from_secs(1);
    let gw = SpoolGw::start(dir.path(), cfg.clone(), None).await;
    gw.post_event(pending_event("held-1", false))
        .await
        .assert(202, &["held"]);
    gw.stop().await;
    assert!(
        oscar.received().is_empty(),
        "not delivered before its grace"
    );

    let gw = SpoolGw::start(dir.path(), cfg.clone(), None).await;
    // A second marked copy during the grace is a duplicate of the restored held one.
    gw.post_event(pending_event("held-1", false))
        .await
        .assert_verdicts(&["duplicate"]);
    wait_for(
        "held record delivered after its grace",
        Duration::from_secs(10),
        || oscar.accepted().len() == 1,
    )
    .await;

    // Preemption: held, then the clean copy; only the clean copy is delivered.
    gw.post_event(pending_event("held-2", false))
        .await
        .assert_verdicts(&["held"]);
    gw.post_event(pending_event("held-2", true))
        .await
        .assert_status(202)
        .assert_reason("clean-copy-preempted-held");
    wait_for("clean copy delivered", Duration::from_secs(10), || {
        oscar.accepted().len() == 2
    })
    .await;
    let superseded = gw
        .metric_until("dedup_gateway_held_superseded_total", |v| v >= 1.0)
        .await;
    assert!(superseded, "the held copy was dropped after its grace");
    assert_eq!(oscar.accepted().len(), 2);
    assert!(
        oscar.accepted()[1]
            .body
            .windows(9)
            .any(|w| w == b"COMPLETED"),
        "the clean copy went"
    );
    gw.assert_drained().await;
    gw.stop().await;
}
