//! Issue 3: spool mode — durable acceptance, retries with backoff, the dead-letter queue,
//! backpressure, disk failures, and state that survives a restart.

use std::{collections::HashMap, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use dedup_gateway::{
    Hooks,
    config::{Config, Mode},
    spool::FaultSwitch,
};
use serde_json::Value;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const TOKEN: &str = GOOD_TOKEN;
const ADMIN: &str = "admin-token-0123456789abcdef";

/// The put fixture with its own version: one identity per `version`.
pub fn put_event(version: &str) -> Vec<u8> {
    let text = String::from_utf8(fixture("put-versioned.json")).unwrap();
    let out = text.replace("3f1c9a2e-6b7d-4e8f-9a0b-1c2d3e4f5a6b", version);
    assert_ne!(out, text);
    out.into_bytes()
}

/// A PENDING-marked put (held), and its clean copy (same identity, status COMPLETED).
pub(crate) fn pending_event(version: &str, clean: bool) -> Vec<u8> {
    let text = String::from_utf8(fixture("put-replication-pending.json")).unwrap();
    let mut out = text.replace("6a1d8f4b-0c3e-4b72-9d5a-e8f1b2c3d4a5", version);
    if clean {
        out = out.replace("\"PENDING\"", "\"COMPLETED\"");
    }
    out.into_bytes()
}

/// Spool mode with short retries, an admin token, and the fake as upstream.
pub(crate) fn spool_config(upstream: &str) -> Config {
    let mut cfg = test_config(upstream);
    cfg.mode = Mode::Spool;
    cfg.admin.token = ADMIN.into();
    cfg.delivery.retry_initial = Duration::from_millis(20);
    cfg.delivery.retry_max = Duration::from_millis(200);
    cfg.delivery.max_attempts = 1000;
    cfg
}

/// A gateway in spool mode on a data directory the test keeps, so it can be restarted on it.
pub(crate) struct SpoolGw {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    client: reqwest::Client,
}

impl SpoolGw {
    pub(crate) async fn start(dir: &Path, mut cfg: Config, faults: Option<FaultSwitch>) -> Self {
        cfg.data_dir = dir.to_path_buf();
        let hooks = Hooks {
            spool_faults: faults,
            ..Default::default()
        };
        let (addr, shutdown, task) = spawn_gateway(cfg, hooks).await;
        Self {
            addr,
            shutdown,
            task,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a body as MinIO does; status, `Retry-After`, JSON answer.
    pub(crate) async fn post(&self, body: Vec<u8>) -> (u16, Option<String>, Value) {
        let resp = self
            .client
            .post(self.url("/job/svc"))
            .header("content-type", "application/json")
            .header("authorization", TOKEN)
            .body(body)
            .send()
            .await
            .expect("post");
        let status = resp.status().as_u16();
        let ra = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (status, ra, resp.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, String) {
        let resp = self
            .client
            .request(method, self.url(path))
            .header("authorization", format!("Bearer {ADMIN}"))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub(crate) async fn status_of(&self, path: &str) -> u16 {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub(crate) async fn metrics(&self) -> String {
        scrape_metrics(&self.client, &self.url("")).await
    }

    /// Waits (bounded, see `metric_until`) until the spool holds no undelivered event.
    /// Polls `/readyz` (at most 100 times, 50 ms apart) until it answers 200.
    pub(crate) async fn ready_within_5s(&self) -> bool {
        for _ in 0..100 {
            if self.status_of("/readyz").await == 200 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub(crate) async fn assert_drained(&self) {
        assert!(
            self.metric_until("dedup_gateway_spool_depth", |v| v == 0.0)
                .await,
            "spool drained"
        );
    }

    /// Polls `/metrics` (at most 150 times, 50 ms apart) until `name` satisfies `f`.
    pub(crate) async fn metric_until(&self, name: &str, f: impl Fn(f64) -> bool) -> bool {
        for _ in 0..150 {
            if f(metric(&self.metrics().await, name)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("gateway stops in time")
            .expect("gateway task");
    }
}

/// The value of an unlabelled metric line.
fn metric(text: &str, name: &str) -> f64 {
    metric_value(text, name).unwrap_or(-1.0)
}

/// 2xx deliveries per dedup key.
pub(crate) fn deliveries(oscar: &FakeOscar) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in oscar.accepted() {
        let k = r
            .headers
            .get("x-dedup-key")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        *m.entry(k).or_default() += 1;
    }
    m
}

fn key_of(answer: &Value) -> String {
    answer["results"][0]["key"].as_str().unwrap().to_string()
}

async fn wait(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(eventually(limit, f).await, "timed out waiting for {what}");
}

/// OSCAR refuses connections, then answers 503, then 201: every accepted event arrives exactly
/// once, a copy sent meanwhile is a duplicate, and the spacing between attempts grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oscar_down_then_failing_then_up_delivers_each_once_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    // A port with nothing listening: connection refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = spool_config(&format!("http://{addr}"));
    cfg.delivery.retry_max = Duration::from_secs(5);
    let gw = SpoolGw::start(dir.path(), cfg, None).await;
    let mut keys = Vec::new();
    for i in 0..5 {
        let (status, _, answer) = gw.post(put_event(&format!("down-{i}"))).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(verdicts(&answer), ["accepted"]);
        keys.push(key_of(&answer));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let oscar = FakeOscar::start_on(TcpListener::bind(addr).await.unwrap()).await;
    oscar.set_status(503);
    // A copy arriving during the retries is a duplicate: the original is durable.
    let (status, _, answer) = gw.post(put_event("down-0")).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["duplicate".to_string()]),
        "{answer}"
    );
    let first = keys[0].clone();
    wait(
        "four 503 attempts of one event",
        Duration::from_secs(20),
        || {
            oscar
                .received()
                .iter()
                .filter(|r| r.headers["x-dedup-key"] == first.as_str())
                .count()
                >= 4
        },
    )
    .await;
    let times: Vec<_> = oscar
        .received()
        .iter()
        .filter(|r| r.headers["x-dedup-key"] == first.as_str())
        .map(|r| r.at)
        .collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Equal jitter keeps retry n+2 above retry n: delays grow while the upstream keeps failing.
    assert!(gaps[2] > gaps[0], "backoff must grow: {gaps:?}");
    oscar.set_status(201);
    wait("all five delivered", Duration::from_secs(20), || {
        deliveries(&oscar).len() == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = deliveries(&oscar);
    for k in &keys {
        assert_eq!(d.get(k), Some(&1), "{k} delivered exactly once: {d:?}");
    }
    let m = gw.metrics().await;
    assert!(
        metric(&m, "dedup_gateway_delivery_retries_total") >= 4.0,
        "{m}"
    );
    assert!(
        m.contains("dedup_gateway_spool_fsync_batch_size_bucket"),
        "{m}"
    );
    gw.assert_drained().await;
    gw.stop().await;
}

/// 404 and 401 are permanent: one attempt, then the dead-letter queue (listed without the token);
/// once OSCAR is fixed, a replay delivers each exactly once and empties the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_go_to_the_dlq_and_replay_once() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), None).await;
    assert_eq!(
        gw.status_of("/admin/dlq").await,
        401,
        "admin needs the token"
    );

    oscar.set_status(404);
    let (status, _, a) = gw.post(put_event("dlq-404")).await;
    assert_eq!(status, 202, "{a}");
    wait("404 dead-lettered", Duration::from_secs(10), || {
        oscar.received().len() == 1
    })
    .await;
    oscar.set_status(201);
    oscar.require_token(true);
    // A wrong token is refused with 401 by the fake: permanent too.
    let resp = gw
        .client
        .post(gw.url("/job/svc"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer wrong-token-0123456789")
        .body(put_event("dlq-401"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    wait("401 attempt", Duration::from_secs(10), || {
        oscar.received().len() == 2
    })
    .await;
    let mut listing = Value::Null;
    for _ in 0..100 {
        let (s, text) = gw.admin(reqwest::Method::GET, "/admin/dlq?limit=10").await;
        assert_eq!(s, 200, "{text}");
        assert!(
            !text.contains(&TOKEN[7..]),
            "the token must never be listed: {text}"
        );
        assert!(
            !text.contains("wrong-token-0123456789"),
            "no token is ever listed: {text}"
        );
        listing = serde_json::from_str(&text).unwrap();
        if listing["total"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listing["total"], 2, "{listing}");
    let entries = listing["entries"].as_array().unwrap();
    assert_eq!(
        entries[0]["attempts"].as_array().unwrap().len(),
        1,
        "one attempt only: {listing}"
    );
    assert_eq!(entries[0]["attempts"][0]["status"], 404);
    assert_eq!(entries[1]["attempts"][0]["status"], 401);
    assert_eq!(entries[0]["headers"]["authorization"], "[redacted]");
    // Paging: one per page.
    let (_, text) = gw.admin(reqwest::Method::GET, "/admin/dlq?limit=1").await;
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    let next = page["next"].as_u64().unwrap();
    let (_, text) = gw
        .admin(
            reqwest::Method::GET,
            &format!("/admin/dlq?limit=1&after={next}"),
        )
        .await;
    let page2: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page2["entries"][0]["id"], entries[1]["id"]);

    // Fix OSCAR for the 404 one and replay it alone.
    oscar.require_token(false);
    let id404 = entries[0]["id"].as_u64().unwrap();
    let (s, text) = gw
        .admin(reqwest::Method::POST, &format!("/admin/dlq/{id404}/replay"))
        .await;
    assert_eq!(s, 202, "{text}");
    wait("replayed delivery", Duration::from_secs(10), || {
        oscar.accepted().len() == 1
    })
    .await;
    let (s, _) = gw
        .admin(reqwest::Method::POST, &format!("/admin/dlq/{id404}/replay"))
        .await;
    assert_eq!(s, 404, "the entry is gone from the queue");
    // The rest: replay all.
    let (s, text) = gw.admin(reqwest::Method::POST, "/admin/dlq/replay").await;
    assert_eq!(s, 200, "{text}");
    let counts: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(counts["replayed"], 1, "{counts}");
    wait("both delivered", Duration::from_secs(10), || {
        oscar.accepted().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = deliveries(&oscar);
    assert_eq!(d.len(), 2);
    assert!(d.values().all(|n| *n == 1), "{d:?}");
    // The replay carries the original Authorization header.
    assert!(
        oscar
            .accepted()
            .iter()
            .any(|r| r.headers["authorization"] == TOKEN)
    );
    let (_, text) = gw.admin(reqwest::Method::GET, "/admin/dlq").await;
    let listing: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listing["total"], 0, "{listing}");

    // DELETE: a new dead letter, deleted.
    oscar.set_status(403);
    gw.post(put_event("dlq-403")).await;
    let mut id = None;
    for _ in 0..200 {
        let (_, text) = gw.admin(reqwest::Method::GET, "/admin/dlq").await;
        let l: Value = serde_json::from_str(&text).unwrap();
        if let Some(i) = l["entries"][0]["id"].as_u64() {
            id = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let id = id.expect("403 dead-lettered");
    assert_eq!(
        gw.admin(reqwest::Method::DELETE, &format!("/admin/dlq/{id}"))
            .await
            .0,
        204
    );
    assert_eq!(
        gw.admin(reqwest::Method::DELETE, &format!("/admin/dlq/{id}"))
            .await
            .0,
        404
    );
    gw.stop().await;
}

/// A full spool answers 503 with Retry-After (and /readyz turns 503); once deliveries drain it,
/// events are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_answers_503_until_drained() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let mut cfg = spool_config(&oscar.url());
    cfg.spool.max_entries = 2;
    let gw = SpoolGw::start(dir.path(), cfg, None).await;
    for i in 0..2 {
        let (status, _, a) = gw.post(put_event(&format!("full-{i}"))).await;
        assert_eq!(status, 202, "{a}");
    }
    let (status, retry_after, a) = gw.post(put_event("full-2")).await;
    assert_eq!(status, 503, "{a}");
    assert!(retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(a["results"][0]["reason"], "spool-full", "{a}");
    assert_eq!(gw.status_of("/readyz").await, 503);
    // The refused event's identity was released: it is not a duplicate later.
    oscar.set_status(201);
    wait("drained", Duration::from_secs(10), || {
        oscar.accepted().len() == 2
    })
    .await;
    let mut accepted = false;
    for _ in 0..100 {
        let (status, _, a) = gw.post(put_event("full-2")).await;
        if status == 202 {
            assert_eq!(verdicts(&a), ["accepted"]);
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "accepted again once drained");
    wait("third delivered", Duration::from_secs(10), || {
        oscar.accepted().len() == 3
    })
    .await;
    assert_eq!(gw.status_of("/readyz").await, 200);
    assert!(
        metric(
            &gw.metrics().await,
            "dedup_gateway_spool_rejected_full_total"
        ) >= 1.0
    );
    gw.stop().await;
}

/// Injected disk failures: writes fail → 503 + Retry-After and /readyz 503; nothing acknowledged
/// is lost, and once the disk recovers everything is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_write_failure_answers_503_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let faults = FaultSwitch::new();
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), Some(faults.clone())).await;
    let mut keys = Vec::new();
    for i in 0..3 {
        let (status, _, a) = gw.post(put_event(&format!("disk-{i}"))).await;
        assert_eq!(status, 202, "{a}");
        keys.push(key_of(&a));
    }
    faults.fail_writes(true);
    let (status, retry_after, a) = gw.post(put_event("disk-3")).await;
    assert_eq!(status, 503, "{a}");
    assert!(retry_after.is_some());
    assert_eq!(a["results"][0]["reason"], "spool-write-failed", "{a}");
    assert_eq!(gw.status_of("/readyz").await, 503);
    // Deliveries succeed meanwhile, but their outcome cannot be written yet.
    oscar.set_status(201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    faults.fail_writes(false);
    assert!(
        gw.ready_within_5s().await,
        "ready again once the disk recovers"
    );
    let (status, _, a) = gw.post(put_event("disk-3")).await;
    assert_eq!(
        status, 202,
        "MinIO's retry of the refused event is accepted: {a}"
    );
    keys.push(key_of(&a));
    wait("all four delivered", Duration::from_secs(10), || {
        deliveries(&oscar).len() == 4
    })
    .await;
    let d = deliveries(&oscar);
    for k in &keys {
        assert_eq!(d.get(k), Some(&1), "{d:?}");
    }
    assert!(
        metric(
            &gw.metrics().await,
            "dedup_gateway_spool_write_errors_total"
        ) >= 1.0
    );
    gw.stop().await;
    // After a restart nothing is delivered again: every outcome reached the disk.
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(oscar.accepted().len(), 4);
    gw.stop().await;
}

/// Delivered identities survive a restart (a redelivery is a duplicate) until their TTL ends;
/// an event still undelivered at shutdown is delivered after the restart, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_delivered_keys_for_the_ttl_and_undelivered_events() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    let mut cfg = spool_config(&oscar.url());
    cfg.dedup.ttl = Duration::from_secs(3);
    let gw = SpoolGw::start(dir.path(), cfg.clone(), None).await;
    let (status, _, a) = gw.post(put_event("ttl-1")).await;
    assert_eq!(status, 202, "{a}");
    wait("delivered", Duration::from_secs(10), || {
        oscar.accepted().len() == 1
    })
    .await;
    let delivered_at = std::time::Instant::now();
    // One more that cannot be delivered before the shutdown.
    oscar.set_status(503);
    let (status, _, a) = gw.post(put_event("ttl-2")).await;
    assert_eq!(status, 202, "{a}");
    gw.stop().await;

    oscar.set_status(201);
    let gw = SpoolGw::start(dir.path(), cfg.clone(), None).await;
    let (status, _, a) = gw.post(put_event("ttl-1")).await;
    assert_eq!(
        (status, verdicts(&a)),
        (200, vec!["duplicate".to_string()]),
        "{a}"
    );
    assert_eq!(a["results"][0]["reason"], "already-delivered");
    wait(
        "undelivered event delivered after restart",
        Duration::from_secs(10),
        || oscar.accepted().len() == 2,
    )
    .await;
    let (_, _, a) = gw.post(put_event("ttl-2")).await;
    assert_eq!(verdicts(&a), ["duplicate"], "{a}");
    gw.stop().await;

    // After the TTL the identity is forgotten, across a restart too.
    let left = Duration::from_secs(3).saturating_sub(delivered_at.elapsed());
    tokio::time::sleep(left + Duration::from_millis(300)).await;
    let gw = SpoolGw::start(dir.path(), cfg, None).await;
    let (status, _, a) = gw.post(put_event("ttl-1")).await;
    assert_eq!(
        (status, verdicts(&a)),
        (202, vec!["accepted".to_string()]),
        "{a}"
    );
    wait(
        "forwarded again after the TTL",
        Duration::from_secs(10),
        || oscar.accepted().len() == 3,
    )
    .await;
    gw.stop().await;
}

/// A held PENDING record is durable: it survives a restart and is delivered after its grace;
/// a clean copy arriving during the grace preempts it and exactly one reaches OSCAR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_record_survives_restart_and_clean_copy_preempts() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    let mut cfg = spool_config(&oscar.url());
    cfg.policy.pending_grace = Duration::from_secs(1);
    let gw = SpoolGw::start(dir.path(), cfg.clone(), None).await;
    let (status, _, a) = gw.post(pending_event("held-1", false)).await;
    assert_eq!(
        (status, verdicts(&a)),
        (202, vec!["held".to_string()]),
        "{a}"
    );
    gw.stop().await;
    assert!(
        oscar.received().is_empty(),
        "not delivered before its grace"
    );

    let gw = SpoolGw::start(dir.path(), cfg.clone(), None).await;
    // A second marked copy during the grace is a duplicate of the restored held one.
    let (_, _, a) = gw.post(pending_event("held-1", false)).await;
    assert_eq!(verdicts(&a), ["duplicate"], "{a}");
    wait(
        "held record delivered after its grace",
        Duration::from_secs(10),
        || oscar.accepted().len() == 1,
    )
    .await;

    // Preemption: held, then the clean copy; only the clean copy is delivered.
    let (_, _, a) = gw.post(pending_event("held-2", false)).await;
    assert_eq!(verdicts(&a), ["held"], "{a}");
    let (status, _, a) = gw.post(pending_event("held-2", true)).await;
    assert_eq!(status, 202, "{a}");
    assert_eq!(
        a["results"][0]["reason"], "clean-copy-preempted-held",
        "{a}"
    );
    wait("clean copy delivered", Duration::from_secs(10), || {
        oscar.accepted().len() == 2
    })
    .await;
    let superseded = gw
        .metric_until("dedup_gateway_held_superseded_total", |v| v >= 1.0)
        .await;
    assert!(superseded, "the held copy was dropped after its grace");
    assert_eq!(oscar.accepted().len(), 2);
    assert!(
        oscar.accepted()[1]
            .body
            .windows(9)
            .any(|w| w == b"COMPLETED"),
        "the clean copy went"
    );
    gw.assert_drained().await;
    gw.stop().await;
}

/// Concurrent requests share fsyncs: with many in flight at once, some commits carry several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    let gw = Arc::new(SpoolGw::start(dir.path(), spool_config(&oscar.url()), None).await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            gw.post(put_event(&format!("gc-{i}"))).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 202);
    }
    wait("all delivered", Duration::from_secs(20), || {
        oscar.accepted().len() == 200
    })
    .await;
    let m = gw.metrics().await;
    let commits = metric(&m, "dedup_gateway_spool_fsync_batch_size_count");
    let ops = metric(&m, "dedup_gateway_spool_fsync_batch_size_sum");
    let fsync_s = metric(&m, "dedup_gateway_spool_fsync_duration_seconds_sum");
    println!(
        "group commit: {ops} ops in {commits} commits, mean commit {:.2} ms",
        fsync_s * 1000.0 / commits
    );
    assert!(commits > 0.0 && ops >= 200.0, "{m}");
    assert!(commits < ops, "some commits carried several operations");
    Arc::try_unwrap(gw).ok().expect("sole owner").stop().await;
}

/// After a disk error only the writer reopens the database. Once the disk recovers, an event
/// already spooled must still be delivered when nothing else writes: no new request, no
/// `/readyz` probe (which would reopen it as a side effect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_event_is_delivered_after_a_disk_error_without_new_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let faults = FaultSwitch::new();
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), Some(faults.clone())).await;
    let (status, _, a) = gw.post(put_event("quiet-1")).await;
    assert_eq!(status, 202, "{a}");
    faults.fail_writes(true);
    let (status, _, a) = gw.post(put_event("quiet-2")).await;
    assert_eq!(status, 503, "{a}");
    faults.fail_writes(false);
    oscar.set_status(201);
    wait(
        "the spooled event delivered once the disk recovered",
        Duration::from_secs(10),
        || oscar.accepted().len() == 1,
    )
    .await;
    gw.assert_drained().await;
    gw.stop().await;
}

/// A dead-letter entry this version cannot decode is skipped in a listing, but must not end the
/// paging: the entries after it are still listed (via `next`) and replayed by `replay all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_dlq_entry_does_not_hide_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    oscar.set_status(404);
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), None).await;
    for i in 0..3 {
        let (status, _, a) = gw.post(put_event(&format!("dlq-page-{i}"))).await;
        assert_eq!(status, 202, "{a}");
    }
    assert!(
        gw.metric_until("dedup_gateway_dlq_entries", |v| v == 3.0)
            .await,
        "three dead-lettered"
    );
    gw.stop().await;
    // Damage the first entry, as a newer version's record or a bad sector would look.
    {
        const DLQ: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("dlq");
        let db = redb::Database::open(dir.path().join("spool.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(DLQ).unwrap();
            let first = redb::ReadableTable::first(&t).unwrap().unwrap().0.value();
            t.insert(first, &b"\x09garbage"[..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), None).await;
    let mut listed = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let (s, text) = gw
            .admin(reqwest::Method::GET, &format!("/admin/dlq?limit=2{after}"))
            .await;
        assert_eq!(s, 200, "{text}");
        let page: Value = serde_json::from_str(&text).unwrap();
        listed.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
        match page["next"].as_u64() {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    assert_eq!(listed.len(), 2, "both decodable entries listed: {listed:?}");
    oscar.set_status(201);
    let (s, text) = gw.admin(reqwest::Method::POST, "/admin/dlq/replay").await;
    assert_eq!(s, 200, "{text}");
    let counts: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(counts["replayed"], 2, "{counts}");
    gw.stop().await;
}
