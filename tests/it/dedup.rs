//! Deduplication in sync mode: concurrent copies of one event reach OSCAR once, what counts as
//! one identity (event class, service), how long an identity is remembered (TTL) and that the
//! store's bound never evicts a remembered identity for its own redelivery.

use std::{sync::Arc, time::Duration};

use crate::helpers::*;

/// 100 concurrent POSTs of one event: exactly one reaches OSCAR, all get 2xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_copies_forward_once() {
    let oscar = FakeOscar::start().await;
    oscar.set_delay(Duration::from_millis(100));
    let gw = Arc::new(TestGateway::start(test_config(&oscar.url())).await);
    let body = fixture("put-versioned.json");
    let copies = (0..100).map(|_| body.clone());
    let forwarded = post_concurrently(&gw, copies).await;
    assert_eq!(forwarded, 1);
    assert_eq!(oscar.received().len(), 1);
}

/// Connections spread over three single-threaded runtimes (as the binary runs): 40 events, each
/// POSTed 5 times at once over many connections, reach OSCAR exactly once each, and every
/// forwarded answer comes from a delivery OSCAR saw.
#[tokio::test]
async fn connections_on_several_workers_forward_each_event_once() {
    let oscar = FakeOscar::start().await;
    oscar.set_delay(Duration::from_millis(20));
    let gw = Arc::new(TestGateway::start_on_workers(test_config(&oscar.url()), 3).await);
    let body = String::from_utf8(fixture("put-versioned.json")).unwrap();
    let version = "\"versionId\":\"";
    assert!(body.contains(version), "fixture has a versionId");
    let copies = (0..40).flat_map(|event| {
        let body = body.replacen(version, &format!("{version}w{event}-"), 1);
        std::iter::repeat_n(body.into_bytes(), 5)
    });
    let forwarded = post_concurrently(&gw, copies).await;
    assert_eq!(forwarded, 40);
    let received = oscar.received();
    assert_eq!(received.len(), 40);
    let distinct: std::collections::HashSet<_> = received.iter().map(|r| r.body.clone()).collect();
    assert_eq!(distinct.len(), 40, "each event once");
}

/// POSTs every body at once to `svc`; each must get 200 with `forwarded` or `duplicate`.
/// Returns how many were `forwarded`.
async fn post_concurrently(gw: &Arc<TestGateway>, bodies: impl Iterator<Item = Vec<u8>>) -> usize {
    let tasks: Vec<_> = bodies
        .map(|body| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.post_event(body).await })
        })
        .collect();
    let mut forwarded = 0;
    for t in tasks {
        let p = t.await.unwrap();
        p.assert_status(200);
        match p.verdicts()[0].as_str() {
            "forwarded" => forwarded += 1,
            "duplicate" => {}
            other => panic!("unexpected verdict {other}"),
        }
    }
    forwarded
}

/// A Put and the completed replication of one version are one trigger; a delete of that version is
/// another; the same event to two services triggers each once.
#[tokio::test]
async fn one_trigger_per_identity_class_and_per_service() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let put = fixture("replica-put.json");
    let completed = fixture("replication-completed.json");
    let delete = replaced(
        &completed,
        &[(
            "s3:Replication:OperationCompletedReplication",
            "s3:ObjectRemoved:Delete",
        )],
    );
    gw.post_event(put).await.assert_verdicts(&["forwarded"]);
    gw.post_event(completed.clone())
        .await
        .assert_verdicts(&["duplicate"]);
    assert_eq!(oscar.received().len(), 1);
    gw.post_event(delete.clone())
        .await
        .assert_verdicts(&["forwarded"]);
    gw.post_event(delete).await.assert_verdicts(&["duplicate"]);
    assert_eq!(oscar.received().len(), 2);
    gw.post_as("other", Some(GOOD_TOKEN), completed)
        .await
        .assert_verdicts(&["forwarded"]);
    let services: Vec<String> = oscar.received().iter().map(|r| r.service.clone()).collect();
    assert_eq!(services, ["svc", "svc", "other"]);
    gw.stop().await;
}

/// A failed replication then the completed one of the same version: exactly one forward.
#[tokio::test]
async fn failed_then_completed_replication_forwards_once() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let failed = fixture("replication-failed.json");
    let completed = replaced(
        &failed,
        &[
            (
                "OperationFailedReplication",
                "OperationCompletedReplication",
            ),
            ("\"FAILED\"", "\"COMPLETED\""),
        ],
    );
    for verdict in ["replication-failed", "replication-failed"] {
        gw.post_event(failed.clone())
            .await
            .assert_verdicts(&[verdict]);
    }
    for verdict in ["forwarded", "duplicate"] {
        gw.post_event(completed.clone())
            .await
            .assert_verdicts(&[verdict]);
    }
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}

/// After the TTL the same event is forwarded again.
#[tokio::test]
async fn ttl_expiry_forwards_again() {
    let (oscar, gw) = oscar_and_gateway(|cfg| cfg.dedup.ttl = Duration::from_millis(300)).await;
    let body = fixture("put-versioned.json");
    for verdict in ["forwarded", "duplicate"] {
        gw.post_event(body.clone())
            .await
            .assert_verdicts(&[verdict]);
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    gw.post_event(body).await.assert_verdicts(&["forwarded"]);
    assert_eq!(oscar.received().len(), 2);
    gw.stop().await;
}

/// At `dedup.max_entries`, a MinIO redelivery of an event already delivered is a duplicate: the
/// bound makes room only for a new identity, so a copy of a remembered one must not evict it.
#[tokio::test]
async fn a_redelivery_at_the_store_bound_is_still_a_duplicate() {
    let (oscar, gw) = oscar_and_gateway(|cfg| cfg.dedup.max_entries = 16).await;
    for i in 0..16 {
        gw.post_event(one_record(&format!("o{i}"), "v1"))
            .await
            .assert(200, &["forwarded"]);
    }
    // The store is at its bound, every entry delivered; the oldest one is sent again.
    gw.post_event(one_record("o0", "v1"))
        .await
        .assert(200, &["duplicate"]);
    assert_eq!(oscar.accepted().len(), 16, "o0 reached OSCAR twice");
    gw.stop().await;
}
