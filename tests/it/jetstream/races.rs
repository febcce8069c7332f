//! Two orders a loaded machine produces now and then, forced with a relay that holds one
//! replica's Redis traffic at a chosen command ([`HoldProxy`]):
//! - the consumer hands a just-published message to another replica's worker, which reserves
//!   the identity before the accepting replica's own claim reaches Redis (seen in CI: the claim
//!   met that reservation, the message was deleted as a duplicate's, and the event was lost when
//!   that delivery failed);
//! - a claim that ran on Redis but whose answer came too late (fail-open): the event must not be
//!   removed and forwarded from the request, or MinIO's retry meets the claim nobody answers for.
//!   Checked on both spool backends.

use std::time::Duration;

use dedup_gateway::{
    config::{Config, OnStoreError, StoreBackend},
    spool::jetstream::SpoolBackendKind,
};

use super::{NatsServer, js_config, post_until_2xx, start, verdict, wait};
use crate::{
    helpers::*,
    redis::server::RedisServer,
    spool::{deliveries, put_event},
};

/// JetStream spool on Redis at `redis_url`; OSCAR calls may wait long at a gate.
fn race_config(upstream: &str, nats: &NatsServer, redis_url: String) -> Config {
    let mut cfg = js_config(upstream, nats);
    cfg.dedup.backend = StoreBackend::Redis;
    cfg.dedup.redis.url = redis_url;
    cfg.dedup.redis.key_prefix = "race:".into();
    cfg.dedup.redis.command_timeout = Duration::from_secs(5);
    cfg.delivery.request_timeout = Duration::from_secs(30);
    cfg.dedup.lease = Duration::from_secs(40);
    cfg
}

fn delivered(oscar: &GateOscar) -> usize {
    oscar.answered().iter().filter(|s| **s == 201).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_meets_its_own_message_in_delivery_keeps_the_message() {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let proxy = HoldProxy::start(redis.port(), RESERVE_SCRIPT).await;
    let oscar = GateOscar::start().await;
    let mut cfg_a = race_config(&oscar.url(), &nats, proxy.url());
    cfg_a.delivery.concurrency = 1;
    let (a, _da) = start(cfg_a).await;
    // X takes A's only delivery slot and waits at the gate: A pulls nothing more.
    let answer = post_until_2xx(&a, put_event("x")).await;
    assert_eq!(verdict(&answer), "accepted", "{answer}");
    wait("X at OSCAR", Duration::from_secs(10), || {
        oscar.arrived() == 1
    })
    .await;
    let (b, _db) = start(race_config(&oscar.url(), &nats, redis.url())).await;

    // Y: A publishes it, and its claim is held on the way to Redis until B's worker, which got
    // the message from the consumer, has reserved the identity and is sending it.
    proxy.arm(Hold::Request);
    let steps = async {
        wait("A's claim held", Duration::from_secs(10), || {
            proxy.holding()
        })
        .await;
        wait("B sending Y", Duration::from_secs(10), || {
            oscar.arrived() == 2
        })
        .await;
        proxy.release();
    };
    let ((status, _, answer), ()) = tokio::join!(a.post(put_event("y")), steps);
    // The claim met B's reservation: `duplicate`, in flight — and the message stays.
    assert_eq!(status, 200, "{answer}");
    assert_eq!(verdict(&answer), "duplicate", "{answer}");
    assert_eq!(answer["results"][0]["reason"], "in-flight", "{answer}");

    // Both deliveries fail once, so Y's is retried from the stream: it must still be there.
    oscar.set_status(503);
    oscar.open_one();
    oscar.open_one();
    wait("two failed attempts", Duration::from_secs(10), || {
        oscar.answered().len() == 2
    })
    .await;
    oscar.set_status(201);
    oscar.open();
    wait("X and Y delivered", Duration::from_secs(30), || {
        delivered(&oscar) == 2
    })
    .await;
    a.assert_drained().await;
    b.assert_drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(delivered(&oscar), 2, "each once: {:?}", oscar.answered());
    a.stop().await;
    b.stop().await;
}

/// `backend`'s spool on Redis with fail-open and a short command timeout.
fn fail_open_config(
    backend: SpoolBackendKind,
    oscar: &FakeOscar,
    nats: &NatsServer,
    redis_url: String,
) -> Config {
    let mut cfg = js_config(&oscar.url(), nats);
    cfg.spool.backend = backend;
    cfg.dedup.backend = StoreBackend::Redis;
    cfg.dedup.redis.url = redis_url;
    cfg.dedup.redis.key_prefix = format!("unseen-{backend:?}:");
    cfg.dedup.redis.command_timeout = Duration::from_millis(500);
    cfg.dedup.on_store_error = OnStoreError::FailOpen;
    cfg
}

/// A's claim runs on Redis but its answer is held past the command timeout; OSCAR refuses for
/// now. The event stays stored and is accepted; if it were answered 503, MinIO's retry (here to
/// B) would meet the claim nobody answers for. Delivered once OSCAR accepts.
async fn unseen_claim_is_kept(backend: SpoolBackendKind) {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let proxy = HoldProxy::start(redis.port(), RESERVE_SCRIPT).await;
    let oscar = FakeOscar::start().await;
    let (a, _da) = start(fail_open_config(backend, &oscar, &nats, proxy.url())).await;
    let (b, _db) = start(fail_open_config(backend, &oscar, &nats, redis.url())).await;
    // Connect A's store before the hold, and let the delivery end (a retrying worker's
    // reservations would trip the hold instead of the request's claim).
    let warm = post_until_2xx(&a, put_event("warm")).await;
    assert_eq!(verdict(&warm), "accepted", "{warm}");
    wait("warm delivered", Duration::from_secs(10), || {
        deliveries(&oscar).len() == 1
    })
    .await;
    a.assert_drained().await;
    oscar.set_status(503);

    proxy.arm(Hold::Answer);
    let (status, _, answer) = a.post(put_event("y")).await;
    assert!(proxy.holding(), "the claim reached Redis");
    if !(200..300).contains(&status) {
        // What MinIO does with it: send again, to any replica.
        let (again, _, retried) = b.post(put_event("y")).await;
        panic!("{backend:?}: answered {status} {answer}; MinIO's retry got {again} {retried}");
    }
    assert_eq!(verdict(&answer), "accepted", "{backend:?}: {answer}");
    assert_eq!(answer["results"][0]["reason"], "spooled-unclaimed");

    proxy.release();
    assert!(
        a.metric_until("dedup_gateway_store_healthy", |v| v == 1.0)
            .await
    );
    // Attempts made unchecked while A's store was cut off have been answered 503 by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    oscar.set_status(201);
    wait("warm and y delivered", Duration::from_secs(30), || {
        deliveries(&oscar).len() == 2
    })
    .await;
    a.assert_drained().await;
    b.assert_drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = deliveries(&oscar);
    assert!(d.values().all(|n| *n == 1), "{backend:?}: each once: {d:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_claim_that_ran_unseen_keeps_the_event_fail_open() {
    unseen_claim_is_kept(SpoolBackendKind::Jetstream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_claim_that_ran_unseen_keeps_the_event_fail_open() {
    unseen_claim_is_kept(SpoolBackendKind::Local).await;
}
