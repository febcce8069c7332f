//! Issue 4 end to end: gateway replicas sharing one Redis, and what happens when Redis goes away.

use std::{collections::HashMap, time::Duration};

use dedup_gateway::config::{Config, OnStoreError, StoreBackend};
use futures_util::{StreamExt, stream};
use rand::seq::SliceRandom;
use serde_json::Value;

use super::server::RedisServer;
use crate::helpers::*;

const TOKEN: &str = GOOD_TOKEN;
const FIXTURE_VERSION: &str = "3f1c9a2e-6b7d-4e8f-9a0b-1c2d3e4f5a6b";

/// A sync-mode gateway on `redis`, with the secret every replica shares.
fn redis_config(upstream: &str, redis: &RedisServer) -> Config {
    let mut cfg = test_config(upstream);
    cfg.dedup.backend = StoreBackend::Redis;
    cfg.dedup.hash_secret = "replicas-share-this-secret-0123456789".into();
    cfg.dedup.redis.url = redis.url();
    cfg.dedup.redis.key_prefix = "it:".into();
    cfg
}

/// A private Redis, a fake OSCAR, and a gateway configuration using both.
async fn redis_and_oscar() -> (RedisServer, FakeOscar, Config) {
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    let cfg = redis_config(&oscar.url(), &redis);
    (redis, oscar, cfg)
}

/// The versioned Put fixture with its `versionId` replaced: one distinct identity per version.
pub(super) fn put(version: &str) -> Vec<u8> {
    let body = String::from_utf8(fixture("put-versioned.json")).unwrap();
    assert!(body.contains(FIXTURE_VERSION));
    body.replace(FIXTURE_VERSION, version).into_bytes()
}

/// The versionId of a body OSCAR received.
fn version_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["Records"][0]["s3"]["object"]["versionId"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How many times OSCAR accepted each version.
pub(super) fn accepted_by_version(oscar: &FakeOscar) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in oscar.accepted() {
        *m.entry(version_of(&r.body)).or_default() += 1;
    }
    m
}

async fn readyz(gw: &TestGateway) -> u16 {
    gw.client
        .get(gw.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The value of an unlabelled metric (`name` as exposed, e.g. `..._total`).
async fn metric(gw: &TestGateway, name: &str) -> f64 {
    metric_value(&gw.metrics().await, name).unwrap_or_else(|| panic!("metric {name} not found"))
}

/// Polls `readyz` until it answers `want` (at most 15 s).
pub(super) async fn wait_ready(gw: &TestGateway, want: u16) {
    for _ in 0..300 {
        if readyz(gw).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never answered {want}");
}

/// Posts like MinIO with `queue_dir`: retries on 503 (at most 100 times, 50 ms apart) until 2xx.
async fn post_until_accepted(gw: &TestGateway, body: Vec<u8>) -> Value {
    for _ in 0..100 {
        let (status, answer) = gw.post("svc", Some(TOKEN), body.clone()).await;
        if status == 200 {
            return answer;
        }
        assert_eq!(status, 503, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never accepted");
}

/// Three replicas, one Redis, a storm of repeats spread over all of them concurrently: every
/// identity reaches OSCAR exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_deliver_each_identity_once() {
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    // A slow OSCAR keeps originals in flight while their copies arrive at the other replicas.
    oscar.set_delay(Duration::from_millis(20));
    let mut gws = Vec::new();
    for _ in 0..3 {
        let gw = TestGateway::start(redis_config(&oscar.url(), &redis)).await;
        wait_ready(&gw, 200).await;
        gws.push(gw);
    }
    const IDENTITIES: usize = 40;
    const COPIES: usize = 6;
    let mut sends: Vec<(usize, String)> = (0..IDENTITIES)
        .flat_map(|i| (0..COPIES).map(move |c| ((i + c) % 3, format!("version-{i:04}"))))
        .collect();
    sends.shuffle(&mut rand::rng());
    let gws_ref = &gws;
    let answers: Vec<(u16, Value)> = stream::iter(sends)
        .map(|(g, version)| async move { gws_ref[g].post("svc", Some(TOKEN), put(&version)).await })
        .buffer_unordered(48)
        .collect()
        .await;

    let mut forwarded = 0;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        match verdicts(answer).as_slice() {
            [v] if v == "forwarded" => forwarded += 1,
            [v] if v == "duplicate" => {}
            other => panic!("unexpected verdicts {other:?}: {answer}"),
        }
    }
    assert_eq!(
        forwarded, IDENTITIES,
        "one forwarded verdict per identity across all replicas"
    );
    let by_version = accepted_by_version(&oscar);
    assert_eq!(by_version.len(), IDENTITIES);
    assert!(by_version.values().all(|n| *n == 1), "{by_version:?}");
    assert_eq!(
        oscar.received().len(),
        IDENTITIES,
        "nothing else reached OSCAR"
    );
    for gw in gws {
        gw.stop().await;
    }
}

/// A PENDING-marked copy held by one replica and the clean copy arriving at another: the clean
/// copy is forwarded at once, the held one is dropped after its grace. Exactly one delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_copy_at_one_replica_preempts_held_copy_at_another() {
    let (_redis, oscar, mut cfg) = redis_and_oscar().await;
    cfg.policy.pending_grace = Duration::from_millis(300);
    let a = TestGateway::start(cfg.clone()).await;
    let b = TestGateway::start(cfg).await;
    let (status, answer) = a
        .post("svc", Some(TOKEN), fixture("put-replication-pending.json"))
        .await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["held".to_string()]),
        "{answer}"
    );
    let (status, answer) = b
        .post("svc", Some(TOKEN), fixture("replication-completed.json"))
        .await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["forwarded".to_string()]),
        "{answer}"
    );
    assert_eq!(answer["results"][0]["reason"], "clean-copy-preempted-held");
    let mut superseded = 0.0;
    for _ in 0..200 {
        superseded = metric(&a, "dedup_gateway_held_superseded_total").await;
        if superseded >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(superseded, 1.0, "the held copy gave way");
    assert_eq!(oscar.received().len(), 1);
    a.stop().await;
    b.stop().await;
}

/// fail-closed (default): while Redis is down, new events get 503 and nothing reaches OSCAR
/// unchecked; `/readyz` is 503 and the health gauge 0. After Redis returns on the same port the
/// gateway recovers without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_closed_answers_503_and_recovers() {
    let (mut redis, oscar, cfg) = redis_and_oscar().await;
    let gw = TestGateway::start(cfg).await;
    wait_ready(&gw, 200).await;
    assert_eq!(metric(&gw, "dedup_gateway_store_healthy").await, 1.0);
    let (status, answer) = gw.post("svc", Some(TOKEN), put("before")).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["forwarded".to_string()])
    );

    redis.stop();
    for i in 0..5 {
        let (status, answer) = gw
            .post("svc", Some(TOKEN), put(&format!("during-{i}")))
            .await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(verdicts(&answer), ["failed"]);
        assert_eq!(answer["results"][0]["reason"], "dedup-store-unavailable");
    }
    assert_eq!(
        oscar.received().len(),
        1,
        "fail-closed forwards nothing unchecked"
    );
    wait_ready(&gw, 503).await;
    assert_eq!(metric(&gw, "dedup_gateway_store_healthy").await, 0.0);
    assert!(metric(&gw, "dedup_gateway_store_errors_total").await >= 5.0);
    assert_eq!(
        metric(&gw, "dedup_gateway_fail_open_forwards_total").await,
        0.0
    );

    redis.restart().await;
    wait_ready(&gw, 200).await;
    assert_eq!(metric(&gw, "dedup_gateway_store_healthy").await, 1.0);
    // MinIO's retries of the refused events now go through, once each.
    for i in 0..5 {
        let answer = post_until_accepted(&gw, put(&format!("during-{i}"))).await;
        assert_eq!(verdicts(&answer), ["forwarded"], "{answer}");
        let (status, answer) = gw
            .post("svc", Some(TOKEN), put(&format!("during-{i}")))
            .await;
        assert_eq!(
            (status, verdicts(&answer)),
            (200, vec!["duplicate".to_string()])
        );
    }
    let by_version = accepted_by_version(&oscar);
    assert_eq!(by_version.len(), 6);
    assert!(by_version.values().all(|n| *n == 1), "{by_version:?}");
    gw.stop().await;
}

/// fail-open: while Redis is down, events are forwarded unchecked and counted; repeats are not
/// caught meanwhile (the documented price). After Redis returns, dedup works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fail_open_forwards_and_counts_then_recovers() {
    let (mut redis, oscar, mut cfg) = redis_and_oscar().await;
    cfg.dedup.on_store_error = OnStoreError::FailOpen;
    let gw = TestGateway::start(cfg).await;
    wait_ready(&gw, 200).await;

    redis.stop();
    for _ in 0..2 {
        let (status, answer) = gw.post("svc", Some(TOKEN), put("unchecked")).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(verdicts(&answer), ["forwarded"]);
        assert_eq!(answer["results"][0]["reason"], "fail-open-unchecked");
    }
    assert_eq!(
        accepted_by_version(&oscar).get("unchecked"),
        Some(&2),
        "a repeat is not caught while Redis is down"
    );
    assert_eq!(
        metric(&gw, "dedup_gateway_fail_open_forwards_total").await,
        2.0
    );
    wait_ready(&gw, 503).await;

    redis.restart().await;
    wait_ready(&gw, 200).await;
    let (status, answer) = gw.post("svc", Some(TOKEN), put("after")).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["forwarded".to_string()]),
        "{answer}"
    );
    assert_eq!(answer["results"][0]["reason"], "delivered");
    let (status, answer) = gw.post("svc", Some(TOKEN), put("after")).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["duplicate".to_string()]),
        "{answer}"
    );
    assert_eq!(
        metric(&gw, "dedup_gateway_fail_open_forwards_total").await,
        2.0
    );
    gw.stop().await;
}

/// Redis restarted empty (no persistence): identities committed before the restart are forgotten,
/// so a repeat of one of them is forwarded again — the documented lost window. Identities seen
/// after the restart are deduplicated as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_forgets_the_lost_window() {
    let (mut redis, oscar, cfg) = redis_and_oscar().await;
    let gw = TestGateway::start(cfg).await;
    wait_ready(&gw, 200).await;
    let (_, answer) = gw.post("svc", Some(TOKEN), put("old")).await;
    assert_eq!(verdicts(&answer), ["forwarded"]);
    let (_, answer) = gw.post("svc", Some(TOKEN), put("old")).await;
    assert_eq!(verdicts(&answer), ["duplicate"]);

    redis.restart().await;
    wait_ready(&gw, 200).await;
    let answer = post_until_accepted(&gw, put("old")).await;
    assert_eq!(
        verdicts(&answer),
        ["forwarded"],
        "forgotten with the restart: delivered again"
    );
    let (_, answer) = gw.post("svc", Some(TOKEN), put("old")).await;
    assert_eq!(
        verdicts(&answer),
        ["duplicate"],
        "and remembered again from now on"
    );
    assert_eq!(accepted_by_version(&oscar).get("old"), Some(&2));
    gw.stop().await;
}

/// A held copy whose grace ends while Redis is down is neither lost nor doubled: it retries the
/// store and is delivered once after Redis returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_copy_survives_a_redis_outage() {
    let (mut redis, oscar, mut cfg) = redis_and_oscar().await;
    cfg.policy.pending_grace = Duration::from_millis(300);
    cfg.delivery.max_attempts = 200;
    let gw = TestGateway::start(cfg).await;
    wait_ready(&gw, 200).await;
    let (status, answer) = gw
        .post("svc", Some(TOKEN), fixture("put-replication-pending.json"))
        .await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["held".to_string()]),
        "{answer}"
    );
    redis.stop();
    // The grace ends while Redis is down: claiming fails and is retried.
    for _ in 0..200 {
        if metric(&gw, "dedup_gateway_store_errors_total").await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&gw, "dedup_gateway_store_errors_total").await >= 1.0);
    assert!(oscar.received().is_empty(), "nothing delivered unchecked");
    redis.restart().await;
    assert!(
        eventually(Duration::from_secs(20), || oscar.received().len() == 1).await,
        "the held copy is delivered after Redis returns"
    );
    // And only once.
    let (_, answer) = gw
        .post("svc", Some(TOKEN), fixture("put-replication-pending.json"))
        .await;
    assert_eq!(verdicts(&answer), ["duplicate"], "{answer}");
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}

/// fail-closed when Redis stalls: the reservation runs on Redis after its command timed out and
/// the event got 503. MinIO's retry must be forwarded — not answered `duplicate` against that
/// orphaned reservation, which would lose the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_an_unanswered_reservation_is_forwarded() {
    let (redis, oscar, mut cfg) = redis_and_oscar().await;
    cfg.dedup.redis.command_timeout = Duration::from_millis(200);
    let gw = TestGateway::start(cfg).await;
    wait_ready(&gw, 200).await;
    // Connect (and prove the store answers) before the stall.
    let (_, answer) = gw.post("svc", Some(TOKEN), put("warm-up")).await;
    assert_eq!(verdicts(&answer), ["forwarded"]);
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]), "OK");
    let (status, answer) = gw.post("svc", Some(TOKEN), put("stalled")).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(oscar.received().len(), 1, "only the warm-up");
    let answer = post_until_accepted(&gw, put("stalled")).await;
    assert_eq!(verdicts(&answer), ["forwarded"], "{answer}");
    assert_eq!(accepted_by_version(&oscar).get("stalled"), Some(&1));
    gw.stop().await;
}

/// A held copy whose grace ends while Redis stalls (commands queue, then run late; the data
/// survives): its store calls time out, and the copy must neither mistake its own late-running
/// entries for another copy (and drop itself) nor be delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_copy_survives_a_redis_stall() {
    let (redis, oscar, mut cfg) = redis_and_oscar().await;
    cfg.policy.pending_grace = Duration::from_millis(300);
    cfg.delivery.max_attempts = 200;
    cfg.dedup.redis.command_timeout = Duration::from_millis(200);
    let gw = TestGateway::start(cfg).await;
    wait_ready(&gw, 200).await;
    let (status, answer) = gw
        .post("svc", Some(TOKEN), fixture("put-replication-pending.json"))
        .await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["held".to_string()]),
        "{answer}"
    );
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "2000", "ALL"]), "OK");
    assert!(
        eventually(Duration::from_secs(20), || oscar.received().len() == 1).await,
        "the held copy is delivered after the stall"
    );
    let (_, answer) = gw
        .post("svc", Some(TOKEN), fixture("put-replication-pending.json"))
        .await;
    assert_eq!(verdicts(&answer), ["duplicate"], "{answer}");
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}
