//! Spool mode on the Redis store: what a restart restores into a shared store that outlived it.

use std::time::Duration;

use dedup_gateway::{
    config::{Config, StoreBackend},
    spool::FaultSwitch,
};
use serde_json::Value;

use super::server::RedisServer;
use crate::{
    helpers::*,
    spool::{SpoolGw, deliveries, pending_event, put_event, spool_config},
};

/// Spool mode (short retries, admin token) with the dedup store on `redis`.
fn redis_spool_config(upstream: &str, redis: &RedisServer) -> Config {
    let mut cfg = spool_config(upstream);
    cfg.dedup.backend = StoreBackend::Redis;
    cfg.dedup.hash_secret = "replicas-share-this-secret-0123456789".into();
    cfg.dedup.redis.url = redis.url();
    cfg.dedup.redis.key_prefix = "it:".into();
    cfg.policy.pending_grace = Duration::from_millis(300);
    cfg
}

/// Posts until the gateway answers 2xx (the store connects lazily); at most 100 tries.
async fn post_until_2xx(gw: &SpoolGw, body: Vec<u8>) -> (u16, Value) {
    for _ in 0..100 {
        let (status, _, answer) = gw.post(body.clone()).await;
        if (200..300).contains(&status) {
            return (status, answer);
        }
        assert_eq!(status, 503, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never accepted");
}

/// An accepted and a held event, both still undelivered (OSCAR answers 503) when the gateway
/// stops: after a restart on the same data directory both are delivered, once. Their
/// reservations from before the stop are still in Redis (the lease is the whole retry horizon);
/// the restore must not mistake them for another copy and drop the acknowledged events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_events_survive_a_restart_on_redis() {
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let cfg = redis_spool_config(&oscar.url(), &redis);
    let gw = SpoolGw::start(dir.path(), cfg.clone(), None).await;
    let (status, a) = post_until_2xx(&gw, put_event("restart-accepted")).await;
    assert_eq!(
        (status, verdicts(&a)),
        (202, vec!["accepted".into()]),
        "{a}"
    );
    let (status, a) = post_until_2xx(&gw, pending_event("restart-held", false)).await;
    assert_eq!((status, verdicts(&a)), (202, vec!["held".into()]), "{a}");
    gw.stop().await;
    assert!(oscar.accepted().is_empty());

    oscar.set_status(201);
    let gw = SpoolGw::start(dir.path(), cfg, None).await;
    let both = eventually(Duration::from_secs(15), || oscar.accepted().len() >= 2).await;
    let counts: Vec<usize> = deliveries(&oscar).into_values().collect();
    assert!(
        both,
        "both acknowledged events delivered after the restart: {} delivered",
        oscar.accepted().len()
    );
    assert_eq!(counts, vec![1, 1], "each once");
    gw.stop().await;
}

/// The restore meets a Redis that is down, so it delivers the spooled event unchecked. Once Redis
/// is back and OSCAR has taken the event, the identity must be known as delivered: a repeat of
/// it is a `duplicate`, not a second delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_restored_while_redis_is_down_is_committed_once_delivered() {
    let mut redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = redis_spool_config(&oscar.url(), &redis);
    cfg.dedup.redis.command_timeout = Duration::from_millis(300);
    let gw = SpoolGw::start(dir.path(), cfg.clone(), None).await;
    let (status, a) = post_until_2xx(&gw, put_event("restore-down")).await;
    assert_eq!(status, 202, "{a}");
    gw.stop().await;

    redis.stop();
    let gw = SpoolGw::start(dir.path(), cfg, None).await;
    // The restore ran against the dead Redis (it precedes serving: a metrics answer proves it).
    let m = gw.metrics().await;
    assert!(
        metric_value(&m, "dedup_gateway_store_errors_total").unwrap_or(0.0) >= 1.0,
        "restore met the store error"
    );
    redis.restart().await;
    oscar.set_status(201);
    assert!(
        eventually(Duration::from_secs(15), || oscar.accepted().len() == 1).await,
        "the restored event is delivered"
    );
    // The store commit precedes the `Delivered` write that empties the spool.
    assert!(
        gw.metric_until("dedup_gateway_spool_depth", |v| v == 0.0)
            .await,
        "delivery recorded"
    );
    let (status, a) = post_until_2xx(&gw, put_event("restore-down")).await;
    assert_eq!(
        (status, verdicts(&a)),
        (200, vec!["duplicate".into()]),
        "a repeat of a delivered event: {a}"
    );
    assert_eq!(oscar.accepted().len(), 1, "delivered once");
    gw.stop().await;
}

/// A held copy whose clean copy preempted it and then failed to be stored (503, released) must
/// reserve its identity anew after its grace, under a new owner token. Still undelivered at a
/// restart, it must be delivered after it: the restore must know that token, or it takes the
/// copy's own reservation for another copy and drops the acknowledged event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_copy_that_reserved_anew_survives_a_restart_on_redis() {
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let cfg = redis_spool_config(&oscar.url(), &redis);
    let faults = FaultSwitch::new();
    let gw = SpoolGw::start(dir.path(), cfg.clone(), Some(faults.clone())).await;
    let (status, a) = post_until_2xx(&gw, pending_event("reheld", false)).await;
    assert_eq!((status, verdicts(&a)), (202, vec!["held".into()]), "{a}");
    // The clean copy preempts the held one, but cannot be stored: 503, its identity released.
    faults.fail_writes(true);
    let (status, _, a) = gw.post(pending_event("reheld", true)).await;
    assert_eq!(status, 503, "{a}");
    faults.fail_writes(false);
    let mut ready = false;
    for _ in 0..100 {
        if gw.status_of("/readyz").await == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the spool takes writes again");
    // After its grace the held copy finds the identity free, reserves it and is attempted.
    assert!(
        eventually(Duration::from_secs(15), || !oscar.received().is_empty()).await,
        "the held copy is attempted"
    );
    gw.stop().await;
    assert!(oscar.accepted().is_empty());

    oscar.set_status(201);
    let gw = SpoolGw::start(dir.path(), cfg, None).await;
    assert!(
        eventually(Duration::from_secs(15), || oscar.accepted().len() == 1).await,
        "the held copy is delivered after the restart"
    );
    assert!(
        gw.metric_until("dedup_gateway_spool_depth", |v| v == 0.0)
            .await,
        "spool drained"
    );
    assert_eq!(oscar.accepted().len(), 1, "once");
    gw.stop().await;
}
