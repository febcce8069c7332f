//! Shadow mode: every POST is forwarded and answered with OSCAR's status, while the verdicts
//! sync mode would give are computed and counted, so an operator can see what dedup would drop
//! before turning it on.

use std::time::Duration;

use dedup_gateway::config::{Config, Mode};

use crate::helpers::{
    internals::{verdict_named, would_drop},
    *,
};

const VERDICTS: [&str; 9] = [
    "forwarded",
    "accepted",
    "duplicate",
    "held",
    "pending",
    "replication-failed",
    "ignored",
    "invalid",
    "failed",
];

/// The input sequence both modes see: repeats, PENDING copies, a preempting clean copy,
/// ignored, failed-replication, multi-record and invalid records.
fn sequence() -> Vec<Vec<u8>> {
    let invalid = br#"{"Records":[{"eventName":"s3:ObjectCreated:Put"}]}"#.to_vec();
    [
        "put-versioned.json",
        "put-versioned.json",
        "replication-completed.json",
        "replication-completed.json",
        "delete-noop.json",
        "replication-failed.json",
        "rustfs-put-replicated-bucket.json",
        "rustfs-put-replicated-bucket.json",
        "rustfs-replication-completed-stale-pending.json",
        "synthetic-multi-record.json",
        "synthetic-multi-record.json",
        "put-replication-pending.json",
        "put-versioned.json",
    ]
    .iter()
    .map(|n| fixture(n))
    .chain([invalid])
    .collect()
}

/// [`test_config`] in shadow mode.
fn shadow_config(upstream: &str) -> Config {
    let mut cfg = test_config(upstream);
    cfg.mode = Mode::Shadow;
    cfg
}

/// Shadow mode forwards every POST, answers with OSCAR's status, and its would-be verdicts are
/// exactly sync mode's verdicts on the same input — per request and in the counters.
#[tokio::test]
async fn shadow_forwards_everything_and_counts_what_sync_would_drop() {
    let oscar_sync = FakeOscar::start().await;
    let oscar_shadow = FakeOscar::start().await;
    let sync = TestGateway::start(test_config(&oscar_sync.url())).await;
    let shadow = TestGateway::start(shadow_config(&oscar_shadow.url())).await;
    let seq = sequence();
    for (i, body) in seq.iter().enumerate() {
        let normal = sync.post_event(body.clone()).await;
        let would = shadow.post_event(body.clone()).await;
        assert_eq!(
            would.status, 201,
            "step {i}: shadow answers with OSCAR's status: {}",
            would.answer
        );
        assert_eq!(would.verdicts(), normal.verdicts(), "step {i}");
    }
    let received = oscar_shadow.received();
    assert_eq!(
        received.len(),
        seq.len(),
        "shadow mode must forward every POST"
    );
    for (r, body) in received.iter().zip(&seq) {
        assert_eq!(&r.body[..], &body[..], "forwarded byte-for-byte, in order");
        assert_eq!(r.headers.get("authorization").unwrap(), GOOD_TOKEN);
    }
    let m_sync = sync.metrics().await;
    let m_shadow = shadow.metrics().await;
    let mut dropped = 0.0;
    for v in VERDICTS {
        let normal = sample(&m_sync, "dedup_gateway_records_total", &[("verdict", v)]);
        let would = sample(
            &m_shadow,
            "dedup_gateway_shadow_verdicts_total",
            &[("verdict", v)],
        );
        assert_eq!(would, normal, "verdict {v}");
        if would_drop(verdict_named(v)) {
            dropped += normal;
        }
    }
    assert!(
        dropped >= 8.0,
        "the sequence must exercise drops: {dropped}"
    );
    let would_drop = sample(
        &m_shadow,
        "dedup_gateway_shadow_verdicts_total",
        &[("would_drop", "true")],
    );
    assert_eq!(would_drop, dropped);
    assert_eq!(
        sample(&m_sync, "dedup_gateway_shadow_verdicts_total", &[]),
        0.0
    );
    sync.stop().await;
    shadow.stop().await;
}

/// OSCAR's failure is passed through and releases the reservation, so MinIO's retry is judged
/// afresh; a body that is not a MinIO envelope is forwarded too, counted once as `invalid`.
#[tokio::test]
async fn shadow_passes_oscar_failures_through_and_releases() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(shadow_config(&oscar.url())).await;
    let body = fixture("put-versioned.json");
    oscar.set_status(500);
    gw.post_event(body.clone()).await.assert(500, &["failed"]);
    oscar.set_status(201);
    gw.post_event(body.clone())
        .await
        .assert(201, &["forwarded"]);
    gw.post_event(body).await.assert(201, &["duplicate"]);
    gw.post_event(b"not json at all".to_vec())
        .await
        .assert(201, &["invalid"]);
    assert_eq!(oscar.received().len(), 4);
    oscar.stop();
    let p = gw.post_event(fixture("put-unversioned.json")).await;
    assert_eq!(p.status, 503, "no answer from OSCAR: 503 so MinIO retries");
    gw.stop().await;
}

/// A held copy becomes "delivered" in the store when its grace ends, as sync mode's delayed
/// delivery would make it: a later copy is then `already-delivered`, not `held-copy-exists`.
#[tokio::test]
async fn shadow_held_copy_counts_as_delivered_after_the_grace() {
    let oscar = FakeOscar::start().await;
    let mut cfg = shadow_config(&oscar.url());
    cfg.policy.pending_grace = Duration::from_millis(150);
    let gw = TestGateway::start(cfg).await;
    let body = fixture("complete-multipart-upload.json");
    gw.post_event(body.clone()).await.assert_verdicts(&["held"]);
    let later = retry(
        100,
        Duration::from_millis(50),
        async || {
            let p = gw.post_event(body.clone()).await;
            p.assert_verdicts(&["duplicate"]);
            p
        },
        |p| p.reason() == "already-delivered",
    )
    .await;
    assert_eq!(later.reason(), "already-delivered");
    gw.stop().await;
}
