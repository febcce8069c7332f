//! Issue 13, sync mode on the memory store: items 1 (held copy dropped for an in-flight clean
//! copy), 7 (permanent answers and dead-lettering), 8 (eviction at `dedup.max_entries`) and 9 (a
//! body of invalid records), with the in-process gateway as the other tests run it.

use std::time::Duration;

use serde_json::Value;

use super::{delivered, key_of, quiet};
use crate::{
    hardening::GateOscar,
    helpers::*,
    spool::{pending_event, put_event},
};

const ADMIN: &str = "admin-token-0123456789abcdef";

/// Sync mode against `upstream` with a short grace and an admin token.
fn sync_config(upstream: &str) -> dedup_gateway::config::Config {
    let mut cfg = test_config(upstream);
    cfg.policy.pending_grace = Duration::from_millis(300);
    cfg.admin.token = ADMIN.into();
    cfg
}

/// The dead-letter entries listed by `GET /admin/dlq` (empty when the route fails).
async fn dlq(gw: &TestGateway) -> Vec<Value> {
    let r = gw
        .client
        .get(gw.url("/admin/dlq"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .send()
        .await
        .expect("GET /admin/dlq");
    let v: Value = r.json().await.unwrap_or(Value::Null);
    v["entries"].as_array().cloned().unwrap_or_default()
}

/// Item 1 (sync): a held copy whose grace ends while the clean copy that preempted it is still in
/// flight takes that reservation for a delivery and drops itself as superseded. The clean copy
/// then fails (OSCAR 503 → the gateway answers 503; MinIO without `queue_dir` drops it), and the
/// held copy — acknowledged with 200 `held` — is never delivered: the event is gone.
/// Shows: after the clean copy's failure no delivery of the identity ever succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item1_sync_held_copy_is_not_dropped_for_an_in_flight_clean_copy() {
    let gate = GateOscar::start().await;
    let gw = TestGateway::start(sync_config(&gate.url())).await;
    let (status, a) = gw
        .post("svc", Some(GOOD_TOKEN), pending_event("i1-sync", false))
        .await;
    assert_eq!(
        (status, verdicts(&a)),
        (200, vec!["held".to_string()]),
        "{a}"
    );
    let clean = {
        let (client, url) = (gw.client.clone(), gw.url("/job/svc"));
        tokio::spawn(async move {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .header("authorization", GOOD_TOKEN)
                .body(pending_event("i1-sync", true))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    assert!(
        eventually(Duration::from_secs(5), || gate.arrived() == 1).await,
        "clean copy in flight"
    );
    // The held copy's grace ends while the clean copy waits at OSCAR.
    quiet(Duration::from_millis(700)).await;
    gate.set_status(503);
    gate.open_one();
    assert_eq!(
        clean.await.unwrap(),
        503,
        "the clean copy failed; MinIO may drop it"
    );
    gate.set_status(201);
    gate.open();
    assert!(
        eventually(Duration::from_secs(5), || gate.answered().contains(&201)).await,
        "the acknowledged held copy is delivered after all: answers {:?}",
        gate.answered()
    );
    gw.stop().await;
}

/// Item 7: a clean copy that OSCAR refuses permanently (404) is answered 503 in sync mode, so
/// MinIO with `queue_dir` retries it every 3 s forever and blocks its queue. Contract §7: it is
/// dead-lettered under `data_dir` and MinIO gets a 2xx. Shows: the answer is 503 and no
/// dead-letter entry is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item7_sync_permanent_answer_is_dead_lettered_with_a_2xx() {
    let oscar = FakeOscar::start().await;
    oscar.set_status(404);
    let gw = TestGateway::start(sync_config(&oscar.url())).await;
    let (status, a) = gw
        .post("svc", Some(GOOD_TOKEN), put_event("i7-clean"))
        .await;
    let listed = dlq(&gw).await;
    gw.stop().await;
    assert!(
        (200..300).contains(&status),
        "a permanent refusal must not stall MinIO: {status} {a}"
    );
    assert_eq!(listed.len(), 1, "dead-lettered and listed: {listed:?}");
}

/// Item 7: a held copy (answered 200 `held`) that OSCAR refuses permanently after its grace is
/// dropped with a log line only. Shows: nothing is listed in the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item7_sync_held_copy_refused_is_dead_lettered() {
    let oscar = FakeOscar::start().await;
    oscar.set_status(404);
    let gw = TestGateway::start(sync_config(&oscar.url())).await;
    let (status, a) = gw
        .post("svc", Some(GOOD_TOKEN), pending_event("i7-held", false))
        .await;
    assert_eq!(
        (status, verdicts(&a)),
        (200, vec!["held".to_string()]),
        "{a}"
    );
    assert!(eventually(Duration::from_secs(5), || oscar.received().len() == 1).await);
    quiet(Duration::from_millis(200)).await;
    let listed = dlq(&gw).await;
    gw.stop().await;
    assert_eq!(
        listed.len(),
        1,
        "the acknowledged held copy ends in the DLQ: {listed:?}"
    );
}

/// Item 7: a held copy whose retries run out (OSCAR 503, `delivery.max_attempts = 2`) is given
/// up with a log line only. Shows: nothing is listed in the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item7_sync_held_copy_past_its_retries_is_dead_lettered() {
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let mut cfg = sync_config(&oscar.url());
    cfg.delivery.max_attempts = 2;
    let gw = TestGateway::start(cfg).await;
    let (_, a) = gw
        .post("svc", Some(GOOD_TOKEN), pending_event("i7-retries", false))
        .await;
    assert_eq!(verdicts(&a), ["held"], "{a}");
    assert!(eventually(Duration::from_secs(5), || oscar.received().len() == 2).await);
    quiet(Duration::from_millis(300)).await;
    let listed = dlq(&gw).await;
    gw.stop().await;
    assert_eq!(oscar.received().len(), 2, "given up after two attempts");
    assert_eq!(
        listed.len(),
        1,
        "the acknowledged held copy ends in the DLQ: {listed:?}"
    );
}

/// Item 7: a held copy cut off by shutdown (OSCAR hangs past `http.shutdown_grace`) ends nowhere;
/// contract §7 puts it in the DLQ under `data_dir`, so a gateway started again on that directory
/// lists it. Shows: the restarted gateway lists nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item7_sync_held_copy_cut_off_by_shutdown_is_dead_lettered() {
    let gate = GateOscar::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sync_config(&gate.url());
    cfg.http.shutdown_grace = Duration::from_millis(500);
    cfg.data_dir = dir.path().to_path_buf();
    let (addr, stop, task) = spawn_gateway(cfg.clone(), Default::default()).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{addr}/job/svc"))
        .header("content-type", "application/json")
        .header("authorization", GOOD_TOKEN)
        .body(pending_event("i7-shutdown", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Shutdown flushes the held copy at once; OSCAR never answers it.
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert_eq!(gate.arrived(), 1, "the flush tried it");
    let (addr, stop, task) = spawn_gateway(cfg, Default::default()).await;
    let v: Value = client
        .get(format!("http://{addr}/admin/dlq"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    let listed = v["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        listed.len(),
        1,
        "the cut-off held copy is in the DLQ after the restart: {v}"
    );
}

/// Item 8 (by design, counted): with `dedup.max_entries` reached, a new identity evicts the
/// oldest *delivered* identities although their TTL has not ended (docs/operations.md, "Sizing":
/// the bound keeps the process alive), and the next repeat of an evicted one is forwarded again.
/// What the fix guarantees is that this is never silent: every such eviction is counted in
/// `dedup_gateway_store_evicted_live_total` (and logged as a warning). Shows: identity 0 is
/// forwarded a second time after identity 16 forced the eviction, and the counter says so;
/// before the eviction the counter is 0 and the repeat is a `duplicate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item8_eviction_of_a_delivered_identity_is_counted() {
    let oscar = FakeOscar::start().await;
    let mut cfg = sync_config(&oscar.url());
    cfg.dedup.max_entries = 16;
    let gw = TestGateway::start(cfg).await;
    let evicted = |text: &str| metric_value(text, "dedup_gateway_store_evicted_live_total");
    let mut keys = Vec::new();
    for i in 0..17 {
        if i == 16 {
            let (_, a) = gw.post("svc", Some(GOOD_TOKEN), put_event("i8-0")).await;
            assert_eq!(verdicts(&a), ["duplicate"], "not evicted yet: {a}");
            let text = gw.metrics().await;
            assert_eq!(evicted(&text), Some(0.0), "nothing evicted yet");
        }
        let (status, a) = gw
            .post("svc", Some(GOOD_TOKEN), put_event(&format!("i8-{i}")))
            .await;
        assert_eq!(
            (status, verdicts(&a)),
            (200, vec!["forwarded".to_string()]),
            "{a}"
        );
        keys.push(key_of(&a));
    }
    let text = gw.metrics().await;
    let n = evicted(&text).unwrap_or(0.0);
    assert!(
        n >= 1.0,
        "the eviction of live delivered identities is counted: {n}"
    );
    let (_, a) = gw.post("svc", Some(GOOD_TOKEN), put_event("i8-0")).await;
    gw.stop().await;
    assert_eq!(verdicts(&a), ["forwarded"], "identity 0 was evicted: {a}");
    assert_eq!(
        delivered(&oscar, &keys[0]),
        2,
        "forwarded again, as documented"
    );
}

/// Item 9: a body whose records are all invalid gets 400, though contract §5 reserves 400 for
/// envelope errors (not JSON, no `Records`). What MinIO then does (shared/specs/minio-webhook.md
/// §4): with `queue_dir` it retries the same event every 3 s forever — head-of-line blocking its
/// whole queue behind a record that can never become valid; without `queue_dir` it logs and drops
/// it. A deliberate drop must be 2xx. Shows: the answer is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item9_a_body_of_invalid_records_is_a_2xx() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(sync_config(&oscar.url())).await;
    // Valid JSON with a `Records` array; the one record has no bucket.
    let body =
        r#"{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"a.csv"}}}]}"#;
    let (status, a) = gw.post("svc", Some(GOOD_TOKEN), body).await;
    gw.stop().await;
    assert_eq!(verdicts(&a), ["invalid"], "{a}");
    assert!(
        (200..300).contains(&status),
        "MinIO would resend it forever: {status} {a}"
    );
    assert!(oscar.received().is_empty());
}
