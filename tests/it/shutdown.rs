//! Graceful shutdown in sync mode: nothing the gateway has acknowledged, or is answering, is
//! dropped with the process.

use std::{sync::Arc, time::Duration};

use crate::helpers::*;

/// Graceful shutdown finishes an in-flight request before the gateway stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let oscar = FakeOscar::start().await;
    oscar.set_delay(Duration::from_millis(500));
    let gw = Arc::new(TestGateway::start(test_config(&oscar.url())).await);
    let g = gw.clone();
    let req = tokio::spawn(async move { g.post_event(fixture("put-versioned.json")).await });
    // Shut down only once the request is in flight at OSCAR (a fixed sleep lost the race on a
    // loaded machine: the stop came before the POST was accepted).
    wait_for("the POST to reach OSCAR", Duration::from_secs(10), || {
        oscar.arrivals() == 1
    })
    .await;
    gw.shutdown.cancel();
    req.await.unwrap().assert(200, &["forwarded"]);
    assert_eq!(oscar.accepted().len(), 1);
}

/// Graceful shutdown in sync mode delivers a held copy at once instead of dropping it with the
/// process (it was acknowledged 2xx and lives in memory only).
#[tokio::test]
async fn graceful_shutdown_delivers_held_copies_at_once() {
    let (oscar, gw) =
        oscar_and_gateway(|cfg| cfg.policy.pending_grace = Duration::from_secs(3600)).await;
    let body = fixture("complete-multipart-upload.json");
    gw.post_event(body.clone()).await.assert_verdicts(&["held"]);
    assert!(oscar.received().is_empty());
    gw.stop().await;
    assert_eq!(
        oscar.accepted().len(),
        1,
        "the held copy is delivered at shutdown"
    );
    assert_eq!(oscar.accepted()[0].body, body);
}
