//! Where the JetStream spool must behave as the local one does (issue 12's leftovers):
//! - a dead-letter entry lists every attempt (time, status, outcome), not only the last — checked
//!   on both backends with the same configuration, so the two `/admin/dlq` answers match;
//! - `dedup.on_store_error = "fail-open"` with Redis stopped: new events are forwarded unchecked
//!   and counted, as `tests/it/redis/gateway.rs` checks for the local spool, and an event already
//!   in the stream is delivered unchecked too instead of waiting for Redis; after Redis returns,
//!   dedup works again.

use std::time::Duration;

use dedup_gateway::{
    config::{Config, OnStoreError, StoreBackend},
    spool::jetstream::SpoolBackendKind,
};
use serde_json::Value;

use super::{NatsServer, js_config, post_until_2xx, start, verdict, wait};
use crate::{
    helpers::*,
    redis::server::RedisServer,
    spool::{deliveries, put_event},
};

/// Waits (bounded) until `/admin/dlq` lists one entry; returns it.
async fn only_entry(gw: &SpoolGw) -> Value {
    for _ in 0..200 {
        let listed = gw.admin_get("/admin/dlq").await;
        if let Some([e]) = listed["entries"].as_array().map(Vec::as_slice) {
            return e.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no dead-letter entry");
}

/// (status, outcome) of each listed attempt.
fn attempts(entry: &Value) -> Vec<(Option<u64>, String)> {
    entry["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["status"].as_u64(),
                a["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Four 503s, then the budget is spent: the entry lists four attempts, in time order, on both
/// backends alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_dlq_entry_lists_every_attempt_as_the_local_one_does() {
    let nats = NatsServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let mut listed = Vec::new();
    for backend in [SpoolBackendKind::Local, SpoolBackendKind::Jetstream] {
        let mut cfg = js_config(&oscar.url(), &nats);
        cfg.spool.backend = backend;
        cfg.delivery.max_attempts = 4;
        let (gw, _dir) = start(cfg).await;
        let (status, _, answer) = gw.post(put_event(&format!("history-{backend:?}"))).await;
        assert_eq!(status, 202, "{answer}");
        let entry = only_entry(&gw).await;
        assert_eq!(entry["attempts_made"], 4, "{backend:?}: {entry}");
        let times: Vec<_> = entry["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["at"].as_str().unwrap().to_string())
            .collect();
        assert!(times.is_sorted(), "{backend:?}: {times:?}");
        listed.push(attempts(&entry));
        gw.stop().await;
    }
    let four = vec![(Some(503), "upstream-503".to_string()); 4];
    assert_eq!(listed[0], four, "local");
    assert_eq!(
        listed[1], four,
        "jetstream lists what the local spool lists"
    );
}

fn fail_open_config(oscar: &FakeOscar, nats: &NatsServer, redis: &RedisServer) -> Config {
    let mut cfg = js_config(&oscar.url(), nats);
    cfg.dedup.backend = StoreBackend::Redis;
    cfg.dedup.redis.url = redis.url();
    cfg.dedup.redis.key_prefix = "it:".into();
    cfg.dedup.redis.command_timeout = Duration::from_millis(300);
    cfg.dedup.redis.connect_timeout = Duration::from_millis(300);
    cfg.dedup.on_store_error = OnStoreError::FailOpen;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_fail_open_forwards_unchecked_while_redis_is_down() {
    let nats = NatsServer::start().await;
    let mut redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    let (gw, _dir) = start(fail_open_config(&oscar, &nats, &redis)).await;
    // Accepted while Redis is up; OSCAR refuses it until Redis has stopped.
    oscar.set_status(503);
    let answer = post_until_2xx(&gw, put_event("queued")).await;
    // `duplicate` (in flight) when the worker got the message from the consumer before the
    // request's claim reached Redis: the message stays and is delivered all the same (the order
    // `races.rs` forces; a loaded CI machine produced it here).
    let v = (verdict(&answer), answer["results"][0]["reason"].clone());
    assert!(
        v.0 == "accepted" || (v.0 == "duplicate" && v.1 == "in-flight"),
        "{answer}"
    );
    wait("a failed attempt", Duration::from_secs(10), || {
        !oscar.received().is_empty()
    })
    .await;

    redis.stop();
    // OSCAR accepts only once the gateway knows Redis is down, so the queued event's successful
    // attempt cannot be one that claimed it just before the stop (it would be delivered checked,
    // and not counted below).
    assert!(
        gw.metric_until("dedup_gateway_store_healthy", |v| v == 0.0)
            .await
    );
    oscar.set_status(201);
    // The queued event is delivered unchecked, without waiting for Redis.
    wait(
        "the queued event, delivered unchecked",
        Duration::from_secs(15),
        || deliveries(&oscar).len() == 1,
    )
    .await;
    // New events: forwarded unchecked by the request, a repeat too (the documented price).
    for _ in 0..2 {
        let (status, _, answer) = gw.post(put_event("unchecked")).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(verdict(&answer), "forwarded", "{answer}");
        assert_eq!(answer["results"][0]["reason"], "fail-open-unchecked");
    }
    let d = deliveries(&oscar);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(
        gw.metric("dedup_gateway_fail_open_forwards_total").await >= 3.0,
        "two requests and the queued event counted"
    );
    gw.assert_drained().await;

    redis.restart().await;
    assert!(
        gw.metric_until("dedup_gateway_store_healthy", |v| v == 1.0)
            .await
    );
    let answer = post_until_2xx(&gw, put_event("after")).await;
    assert_eq!(verdict(&answer), "accepted", "{answer}");
    let answer = post_until_2xx(&gw, put_event("after")).await;
    assert_eq!(verdict(&answer), "duplicate", "dedup works again: {answer}");
    wait(
        "the event after the outage",
        Duration::from_secs(10),
        || deliveries(&oscar).len() == 3,
    )
    .await;
    gw.stop().await;
}
