//! PENDING copies in sync mode: a copy marked PENDING is held for `policy.pending_grace`; a clean
//! copy within the grace preempts it; a lone one is delivered after the grace; `pending = "drop"`
//! never forwards; and a held copy's delivery after the grace (acknowledged long ago, with no
//! sender left to retry it) is never lost to a copy that meets it or to a slow OSCAR.

use std::{sync::Arc, time::Duration};

use dedup_gateway::config::PendingPolicy;

use crate::helpers::*;

/// The RustFS put with PENDING (held) and the completed event of the same version (clean).
fn held_and_clean() -> (Vec<u8>, Vec<u8>) {
    (
        fixture("rustfs-put-replicated-bucket.json"),
        fixture("rustfs-replication-completed-stale-pending.json"),
    )
}

/// A held PENDING copy followed by a clean copy within the grace: the clean copy is forwarded at
/// once and is the only one forwarded.
#[tokio::test]
async fn pending_then_clean_copy_forwards_the_clean_one_at_once() {
    let (oscar, gw) =
        oscar_and_gateway(|cfg| cfg.policy.pending_grace = Duration::from_millis(800)).await;
    let (held, clean) = held_and_clean();
    for verdict in ["held", "duplicate"] {
        gw.post_event(held.clone())
            .await
            .assert_verdicts(&[verdict]);
    }
    gw.post_event(clean.clone())
        .await
        .assert(200, &["forwarded"]);
    // Forwarded within the request, not after the grace.
    assert_eq!(oscar.received().len(), 1);
    assert_eq!(oscar.received()[0].body, clean);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(oscar.received().len(), 1, "the held copy must be dropped");
    gw.stop().await;
}

/// A lone PENDING copy is forwarded once, and not before the grace ends.
#[tokio::test]
async fn lone_pending_copy_is_forwarded_after_the_grace() {
    let (oscar, gw) =
        oscar_and_gateway(|cfg| cfg.policy.pending_grace = Duration::from_millis(700)).await;
    let body = fixture("complete-multipart-upload.json");
    let sent = tokio::time::Instant::now();
    gw.post_event(body.clone()).await.assert_verdicts(&["held"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(oscar.received().is_empty(), "forwarded before the grace");
    assert!(eventually(Duration::from_secs(5), || oscar.received().len() == 1).await);
    assert!(sent.elapsed() >= Duration::from_millis(700));
    assert_eq!(oscar.received()[0].body, body);
    gw.post_event(body).await.assert_verdicts(&["duplicate"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}

/// `policy.pending = "drop"`: a marked record is never forwarded.
#[tokio::test]
async fn pending_drop_never_forwards() {
    let (oscar, gw) = oscar_and_gateway(|cfg| {
        cfg.policy.pending = PendingPolicy::Drop;
        cfg.policy.pending_grace = Duration::from_millis(200);
    })
    .await;
    gw.post_event(fixture("put-replication-pending.json"))
        .await
        .assert(200, &["pending"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(oscar.received().is_empty());
    gw.stop().await;
}

/// The RustFS completed event with a stale public PENDING is forwarded at once (internal status wins).
#[tokio::test]
async fn stale_public_pending_is_forwarded_at_once() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let (_, clean) = held_and_clean();
    gw.post_event(clean).await.assert_verdicts(&["forwarded"]);
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}

/// A clean copy that arrives while the held PENDING copy of its identity is being delivered
/// after its grace must not be acknowledged unless the event is then certain to reach OSCAR.
/// A request's own in-flight delivery justifies a 200 `duplicate` for a concurrent copy because
/// that request answers 503 to its sender on failure and MinIO sends it again; a held copy's
/// delivery has no such sender (the held copy was acknowledged long ago). So the clean copy waits
/// for that delivery's outcome: delivered → `duplicate`; given up (503 past the retry limit, or a
/// permanent 404) → the clean copy is forwarded itself. Exactly one 2xx from OSCAR either way.
#[tokio::test]
async fn a_clean_copy_met_during_the_held_copys_delivery_is_not_lost() {
    for (held_answer, clean_verdict) in [(503, "forwarded"), (404, "forwarded"), (201, "duplicate")]
    {
        let (oscar, gw) = gate_and_gateway(|cfg| {
            cfg.policy.pending_grace = Duration::from_millis(100);
            cfg.delivery.max_attempts = 1;
        })
        .await;
        let gw = Arc::new(gw);
        let (held, clean) = held_and_clean();
        gw.post_event(held).await.assert_verdicts(&["held"]);
        // After the grace the held copy's delivery reaches OSCAR, which keeps it waiting.
        assert!(eventually(Duration::from_secs(5), || oscar.arrived() == 1).await);
        let clean_post = {
            let gw = gw.clone();
            tokio::spawn(async move { gw.post_event(clean).await })
        };
        // The clean copy is not answered while the held copy's delivery is open.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !clean_post.is_finished(),
            "answered before the held copy's outcome"
        );
        oscar.set_status(held_answer);
        oscar.open_one();
        assert!(eventually(Duration::from_secs(5), || oscar.answered().len() == 1).await);
        oscar.set_status(201);
        oscar.open();
        let p = tokio::time::timeout(Duration::from_secs(10), clean_post)
            .await
            .expect("the clean copy is answered once the held copy's delivery ends")
            .expect("post task");
        let answer = &p.answer;
        assert_eq!(p.status, 200, "held copy answered {held_answer}: {answer}");
        assert_eq!(
            p.verdicts(),
            [clean_verdict],
            "held copy answered {held_answer}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            oscar.answered().iter().filter(|s| **s == 201).count(),
            1,
            "delivered exactly once (held copy answered {held_answer})"
        );
        Arc::into_inner(gw).expect("one owner").stop().await;
    }
}

/// The clean copy that preempted a held copy fails to reach OSCAR (503 to MinIO): when the held
/// copy's grace ends the identity is free again, so the held copy — acknowledged long ago — is
/// delivered after all instead of being dropped as superseded. Exactly one delivery.
#[tokio::test]
async fn a_held_copy_is_delivered_when_the_copy_that_preempted_it_failed() {
    let (oscar, gw) =
        oscar_and_gateway(|cfg| cfg.policy.pending_grace = Duration::from_millis(300)).await;
    let (held, clean) = held_and_clean();
    gw.post_event(held).await.assert_verdicts(&["held"]);
    oscar.set_status(503);
    gw.post_event(clean).await.assert_status(503);
    oscar.set_status(201);
    assert!(
        eventually(Duration::from_secs(5), || oscar.accepted().len() == 1).await,
        "the held copy was dropped although nothing was delivered"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(oscar.accepted().len(), 1);
    gw.stop().await;
}

/// Held copies whose grace ends together are delivered at most `delivery.concurrency` at a time
/// (as the setting documents), and all of them in the end.
#[tokio::test]
async fn held_copies_are_delivered_within_the_concurrency_bound() {
    let (oscar, gw) = gate_and_gateway(|cfg| {
        cfg.policy.pending_grace = Duration::from_millis(100);
        cfg.delivery.concurrency = 2;
    })
    .await;
    for i in 0..6 {
        gw.post_event(pending_event(&format!("bound-{i}"), false))
            .await
            .assert_verdicts(&["held"]);
    }
    assert!(eventually(Duration::from_secs(5), || oscar.arrived() == 2).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(oscar.arrived(), 2, "no more than the bound in flight");
    oscar.open();
    assert!(
        eventually(Duration::from_secs(10), || oscar.answered().len() == 6).await,
        "all delivered: {:?}",
        oscar.answered()
    );
    gw.stop().await;
}

/// Held copies queued for a delivery permit longer than their lease (a slow OSCAR, more held
/// copies than `delivery.concurrency`) find their hold expired when their turn comes: nothing
/// superseded them, and each must still be delivered once OSCAR answers. (A copy that took its
/// expired identity back gave its permit up and queued again, expired again; and each expiry
/// counted as a takeover, so after a few rounds, or a few failed attempts, the copy was dropped
/// as "superseded": an acknowledged event lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_copies_waiting_past_their_lease_for_a_permit_are_still_delivered() {
    let (oscar, gw) = oscar_and_gateway(|cfg| {
        cfg.policy.pending_grace = Duration::from_millis(100);
        cfg.delivery.concurrency = 1;
        cfg.delivery.request_timeout = Duration::from_millis(300);
        cfg.delivery.connect_timeout = Duration::from_millis(100);
        cfg.delivery.max_attempts = 1000;
        cfg.dedup.lease = Duration::from_millis(400);
    })
    .await;
    oscar.set_status(503);
    oscar.set_delay(Duration::from_millis(100));
    let n = 8;
    for i in 0..n {
        gw.post_event(pending_event(&format!("permit-wait-{i}"), false))
            .await
            .assert_verdicts(&["held"]);
    }
    // OSCAR stays slow and failing for a while: the copies queue for the one permit.
    tokio::time::sleep(Duration::from_secs(20)).await;
    oscar.set_delay(Duration::ZERO);
    oscar.set_status(201);
    let all = eventually(Duration::from_secs(30), || deliveries(&oscar).len() == n).await;
    let superseded = metric_value(&gw.metrics().await, "dedup_gateway_held_superseded_total");
    assert!(
        all,
        "every held copy delivered: {} of {n} (superseded: {superseded:?})",
        deliveries(&oscar).len()
    );
    gw.stop().await;
}
