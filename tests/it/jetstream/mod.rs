//! Issue 12 A: `spool.backend = "jetstream"` against a real `nats-server -js` that each test
//! starts on a loopback port ([`server`]). Acceptance, delivery once, retries with backoff, the
//! dead-letter stream, held copies, and a NATS crash with nothing acknowledged lost.

mod deploy;
mod parity;
mod races;
mod replicas;
mod server;

use std::time::Duration;

use dedup_gateway::{config::Config, spool::jetstream::SpoolBackendKind};
use serde_json::Value;

use crate::{
    helpers::*,
    spool::{SpoolGw, deliveries, pending_event, put_event, spool_config},
};
pub use server::NatsServer;

/// Spool mode on JetStream with short leases and waits, so redeliveries happen within a test.
pub(crate) fn js_config(upstream: &str, nats: &NatsServer) -> Config {
    let mut cfg = spool_config(upstream);
    cfg.spool.backend = SpoolBackendKind::Jetstream;
    cfg.spool.jetstream.urls = vec![nats.url()];
    // Generous: parallel tests share two cores and one disk, and every test server fsyncs each write.
    cfg.spool.jetstream.publish_timeout = Duration::from_secs(10);
    cfg.spool.jetstream.ack_wait = Duration::from_secs(3);
    cfg.dedup.hash_secret = "jetstream-test-secret-0123456789".into();
    cfg.delivery.request_timeout = Duration::from_secs(2);
    cfg.dedup.lease = Duration::from_secs(3);
    cfg
}

async fn start(cfg: Config) -> (SpoolGw, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let gw = SpoolGw::start(dir.path(), cfg, None).await;
    (gw, dir)
}

/// Posts until a 2xx (the store connects lazily); at most 100 tries.
pub(super) async fn post_until_2xx(gw: &SpoolGw, body: Vec<u8>) -> Value {
    for _ in 0..100 {
        let (status, _, answer) = gw.post(body.clone()).await;
        if (200..300).contains(&status) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never acknowledged");
}

fn verdict(answer: &Value) -> String {
    answer["results"][0]["verdict"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn wait(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(eventually(limit, f).await, "timed out waiting for {what}");
}

/// 40 events, each posted twice: 202 `accepted`, then `duplicate`; every one reaches OSCAR once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_delivers_each_accepted_event_once() {
    let nats = NatsServer::start().await;
    let oscar = FakeOscar::start().await;
    let (gw, _dir) = start(js_config(&oscar.url(), &nats)).await;
    assert!(gw.ready_within_5s().await, "ready while NATS is up");
    for i in 0..40 {
        let (status, _, answer) = gw.post(put_event(&format!("v-{i}"))).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(verdict(&answer), "accepted");
        let (status, _, answer) = gw.post(put_event(&format!("v-{i}"))).await;
        assert!(status == 200 || status == 202, "{answer}");
        assert_eq!(verdict(&answer), "duplicate", "{answer}");
    }
    wait("40 deliveries", Duration::from_secs(15), || {
        deliveries(&oscar).len() == 40
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = deliveries(&oscar);
    assert_eq!(d.len(), 40);
    assert!(d.values().all(|&n| n == 1), "each delivered once: {d:?}");
    gw.assert_drained().await;
    gw.stop().await;
}

/// OSCAR answers 503 for a while, then 201: every event arrives once, after NAK-delayed retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_retries_with_backoff_until_oscar_accepts() {
    let nats = NatsServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let (gw, _dir) = start(js_config(&oscar.url(), &nats)).await;
    for i in 0..5 {
        let (status, _, answer) = gw.post(put_event(&format!("r-{i}"))).await;
        assert_eq!(status, 202, "{answer}");
    }
    wait(
        "several failed attempts each",
        Duration::from_secs(10),
        || oscar.received().len() >= 20,
    )
    .await;
    assert!(deliveries(&oscar).is_empty());
    // The stream holds the 5 undelivered events, and the server counts their redeliveries.
    assert!(
        gw.metric_until("dedup_gateway_spool_depth", |v| v == 5.0)
            .await,
        "spool depth follows the stream"
    );
    assert!(
        gw.metric_until("dedup_gateway_jetstream_consumer_redelivered", |v| v >= 1.0)
            .await,
        "redeliveries counted"
    );
    oscar.set_status(201);
    wait("5 deliveries", Duration::from_secs(10), || {
        deliveries(&oscar).len() == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = deliveries(&oscar);
    assert!(d.values().all(|&n| n == 1), "each delivered once: {d:?}");
    let m = gw.metrics().await;
    assert!(
        metric_value(&m, "dedup_gateway_jetstream_redeliveries_total").unwrap_or(0.0) >= 15.0,
        "{m}"
    );
    // Backoff: the attempts of one event grow apart (retry_initial 20 ms, retry_max 200 ms).
    let key = d.keys().next().unwrap().clone();
    let times: Vec<_> = oscar
        .received()
        .iter()
        .filter(|r| r.headers.get("x-dedup-key").unwrap().to_str().unwrap() == key)
        .map(|r| r.at)
        .collect();
    assert!(times.len() >= 4, "{} attempts", times.len());
    let first = times[1] - times[0];
    let later = times[times.len() - 1] - times[times.len() - 2];
    assert!(
        later > first,
        "backoff grows: first gap {first:?}, last {later:?}"
    );
    gw.assert_drained().await;
    gw.stop().await;
}

/// OSCAR 401: the event goes to the dead-letter stream at once, is listed, and replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_permanent_failure_dead_letters_and_replays() {
    let nats = NatsServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(401);
    let (gw, _dir) = start(js_config(&oscar.url(), &nats)).await;
    let (status, _, _) = gw.post(put_event("dead-1")).await;
    assert_eq!(status, 202);
    let mut listed = Value::Null;
    for _ in 0..100 {
        let (code, body) = gw.admin(reqwest::Method::GET, "/admin/dlq").await;
        assert_eq!(code, 200, "{body}");
        listed = serde_json::from_str(&body).unwrap();
        if listed["total"] == 1 && listed["entries"].as_array().map(|a| a.len()) == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["total"], 1, "{listed}");
    assert_eq!(
        oscar.received().len(),
        1,
        "a permanent answer is not retried"
    );
    let id = listed["entries"][0]["id"].as_u64().unwrap();
    // A copy arriving now is accepted again: the dead-lettered identity was released.
    oscar.set_status(201);
    let (code, body) = gw
        .admin(reqwest::Method::POST, &format!("/admin/dlq/{id}/replay"))
        .await;
    assert_eq!(code, 202, "{body}");
    wait("the replayed delivery", Duration::from_secs(10), || {
        deliveries(&oscar).len() == 1
    })
    .await;
    let (_, body) = gw.admin(reqwest::Method::GET, "/admin/dlq").await;
    let after: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(after["total"], 0, "{after}");
    let (code, _) = gw
        .admin(reqwest::Method::DELETE, &format!("/admin/dlq/{id}"))
        .await;
    assert_eq!(code, 404, "replayed entry is gone");
    // A MinIO redelivery of the delivered event is a duplicate.
    let (_, _, answer) = gw.post(put_event("dead-1")).await;
    assert_eq!(verdict(&answer), "duplicate", "{answer}");
    gw.stop().await;
}

/// A PENDING-marked copy waits out its grace (a delayed NAK) and is then delivered; a held copy
/// whose clean copy arrives is superseded, and the clean one goes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_held_copies_wait_their_grace_or_are_superseded() {
    let nats = NatsServer::start().await;
    let oscar = FakeOscar::start().await;
    let mut cfg = js_config(&oscar.url(), &nats);
    cfg.policy.pending_grace = Duration::from_millis(1500);
    let (gw, _dir) = start(cfg).await;
    let t0 = std::time::Instant::now();
    let (status, _, answer) = gw.post(pending_event("held-only", false)).await;
    assert_eq!(status, 202);
    assert_eq!(verdict(&answer), "held", "{answer}");
    let (_, _, answer) = gw.post(pending_event("held-then-clean", false)).await;
    assert_eq!(verdict(&answer), "held", "{answer}");
    let (status, _, answer) = gw.post(pending_event("held-then-clean", true)).await;
    assert_eq!(status, 202);
    assert_eq!(verdict(&answer), "accepted", "{answer}");
    wait("the clean copy", Duration::from_secs(5), || {
        deliveries(&oscar).len() == 1
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "clean copy went at once"
    );
    wait(
        "the held-only copy after its grace",
        Duration::from_secs(10),
        || deliveries(&oscar).len() == 2,
    )
    .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "held until its grace"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = deliveries(&oscar);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.values().all(|&n| n == 1), "each once: {d:?}");
    gw.assert_drained().await;
    gw.stop().await;
}

/// NATS killed with SIGKILL while events wait for OSCAR: new events get 503 + Retry-After and
/// `/readyz` 503; after the restart every acknowledged event is delivered, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_nats_crash_loses_nothing_acknowledged() {
    let mut nats = NatsServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let (gw, _dir) = start(js_config(&oscar.url(), &nats)).await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let (status, _, answer) = gw.post(put_event(&format!("n-{i}"))).await;
        assert_eq!(status, 202, "{answer}");
        acked.push(key(&answer));
    }
    nats.kill();
    let mut refused = 0;
    for i in 0..5 {
        let (status, retry_after, answer) = gw.post(put_event(&format!("out-{i}"))).await;
        if status == 202 {
            // Taken before the client noticed the disconnect: it must be delivered too.
            acked.push(key(&answer));
            continue;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(retry_after.is_some(), "503 carries Retry-After");
        refused += 1;
    }
    assert!(
        refused >= 4,
        "new events refused while NATS is down ({refused})"
    );
    assert_eq!(gw.status_of("/readyz").await, 503);
    nats.restart().await;
    assert!(gw.ready_within_5s().await, "ready again after NATS is back");
    oscar.set_status(201);
    wait("every acknowledged event", Duration::from_secs(20), || {
        let d = deliveries(&oscar);
        acked.iter().all(|k| d.contains_key(k))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let d = deliveries(&oscar);
    assert!(d.values().all(|&n| n == 1), "each once: {d:?}");
    gw.stop().await;
}

fn key(answer: &Value) -> String {
    answer["results"][0]["key"].as_str().unwrap().to_string()
}

/// With the Redis store, a copy of an event dead-lettered within the duplicate window is accepted
/// and delivered (a failure never hides a later copy), and a delivered one stays a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_with_redis_a_dead_lettered_event_does_not_hide_a_later_copy() {
    let nats = NatsServer::start().await;
    let redis = crate::redis::server::RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(404);
    let mut cfg = js_config(&oscar.url(), &nats);
    cfg.dedup.backend = dedup_gateway::config::StoreBackend::Redis;
    cfg.dedup.redis.url = redis.url();
    let (gw, _dir) = start(cfg).await;
    let (status, _, answer) = gw.post(put_event("again-1")).await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        gw.metric_until("dedup_gateway_dlq_entries", |v| v == 1.0)
            .await,
        "dead-lettered"
    );
    oscar.set_status(201);
    // The gauge follows the DLQ stream, which has the entry just before the worker releases the
    // identity: a copy in that moment meets the original still in flight (`duplicate`, by design).
    // Bounded: 50 × 100 ms until the release has happened.
    let mut answer = Value::Null;
    for _ in 0..50 {
        let (status, _, a) = gw.post(put_event("again-1")).await;
        answer = a;
        if status != 200 || answer["results"][0]["reason"] != "in-flight" {
            assert_eq!(status, 202, "{answer}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(verdict(&answer), "accepted", "{answer}");
    wait("the later copy", Duration::from_secs(10), || {
        deliveries(&oscar).len() == 1
    })
    .await;
    let (_, _, answer) = gw.post(put_event("again-1")).await;
    assert_eq!(verdict(&answer), "duplicate", "{answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deliveries(&oscar).values().sum::<usize>(), 1);
    gw.stop().await;
}

/// A NATS that comes back without its store: the gateway creates the streams and the consumer
/// again by itself, and new events are accepted and delivered (no restart of the gateway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_streams_are_recreated_after_nats_lost_its_store() {
    let mut nats = NatsServer::start().await;
    let oscar = FakeOscar::start().await;
    let (gw, _dir) = start(js_config(&oscar.url(), &nats)).await;
    let (status, _, _) = gw.post(put_event("before")).await;
    assert_eq!(status, 202);
    wait("the first delivery", Duration::from_secs(10), || {
        deliveries(&oscar).len() == 1
    })
    .await;
    nats.restart_empty().await;
    let mut accepted = false;
    // At most 100 tries, 100 ms apart: the stats loop recreates the streams within ~2 s.
    for _ in 0..100 {
        let (status, _, _) = gw.post(put_event("after")).await;
        if status == 202 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "accepting again once the stream exists again");
    wait(
        "the delivery after the recreation",
        Duration::from_secs(10),
        || deliveries(&oscar).len() == 2,
    )
    .await;
    gw.stop().await;
}
