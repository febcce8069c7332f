//! Test harness: the real gateway on 127.0.0.1:0 and a fake OSCAR that records every request.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use dedup_gateway::config::{Config, Mode};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// The token the fake OSCAR accepts when `require_token` is set.
pub const GOOD_TOKEN: &str =
    "Bearer 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// One request the fake OSCAR received.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the fake answered.
    pub status: u16,
    /// When the fake received it (for checking retry spacing).
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
struct FakeState {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    require_token: std::sync::atomic::AtomicBool,
}

/// A stand-in for OSCAR's `POST /job/{service}`: records requests, answers a switchable status
/// (201 by default, like OSCAR), optionally only for [`GOOD_TOKEN`], optionally after a delay.
#[derive(Debug, Clone)]
pub struct FakeOscar {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    stop: CancellationToken,
}

impl FakeOscar {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake oscar");
        Self::start_on(listener).await
    }

    pub async fn start_on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FakeState::default());
        state.status.store(201, Ordering::SeqCst);
        let app = Router::new()
            .route("/job/{service}", post(job))
            .with_state(state.clone());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        Self { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answer 401 unless the request carries [`GOOD_TOKEN`].
    pub fn require_token(&self, on: bool) {
        self.state.require_token.store(on, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Requests answered 2xx: what OSCAR turned into jobs.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn job(
    State(state): State<Arc<FakeState>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut status = state.status.load(Ordering::SeqCst);
    if state.require_token.load(Ordering::SeqCst)
        && headers.get("authorization").map(|v| v.as_bytes()) != Some(GOOD_TOKEN.as_bytes())
    {
        status = 401;
    }
    state.received.lock().unwrap().push(Received {
        service,
        headers,
        body,
        status,
        at: std::time::Instant::now(),
    });
    StatusCode::from_u16(status).unwrap()
}

/// A running gateway.
#[derive(Debug)]
pub struct TestGateway {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    /// Extra worker threads, when started with [`TestGateway::start_on_workers`].
    _workers: Option<dedup_gateway::runtime::Workers>,
}

/// A configuration for tests: sync mode, the fake as upstream, short timeouts, data in a temp dir.
pub fn test_config(upstream: &str) -> Config {
    // Spool mode is the default; these tests exercise sync mode (spool tests set it themselves).
    let mut cfg = Config {
        mode: Mode::Sync,
        upstream: upstream.to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    cfg.delivery.request_timeout = Duration::from_secs(5);
    cfg.delivery.connect_timeout = Duration::from_secs(1);
    cfg.delivery.retry_initial = Duration::from_millis(50);
    cfg.delivery.retry_max = Duration::from_millis(500);
    cfg.dedup.lease = Duration::from_secs(10);
    cfg.policy.pending_grace = Duration::from_secs(30);
    cfg.http.shutdown_grace = Duration::from_secs(5);
    cfg
}

impl TestGateway {
    /// Starts the gateway with `cfg` (its `data_dir` is replaced by a fresh temp dir).
    pub async fn start(cfg: Config) -> Self {
        Self::start_with(cfg, None).await
    }

    /// Starts the gateway as the binary does: connections spread over `count` single-threaded
    /// runtimes, this test's runtime first.
    pub async fn start_on_workers(cfg: Config, count: usize) -> Self {
        let workers =
            dedup_gateway::runtime::Workers::start(tokio::runtime::Handle::current(), count)
                .expect("worker threads");
        Self::start_with(cfg, Some(workers)).await
    }

    async fn start_with(mut cfg: Config, workers: Option<dedup_gateway::runtime::Workers>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        cfg.data_dir = dir.path().to_path_buf();
        let hooks = dedup_gateway::Hooks {
            workers: workers
                .as_ref()
                .map(|w| w.handles().to_vec())
                .unwrap_or_default(),
            ..Default::default()
        };
        let (addr, shutdown, task) = spawn_gateway(cfg, hooks).await;
        Self {
            addr,
            shutdown,
            task,
            client: reqwest::Client::new(),
            _dir: dir,
            _workers: workers,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The gateway's `/metrics` text.
    pub async fn metrics(&self) -> String {
        scrape_metrics(&self.client, &self.url("")).await
    }

    /// POSTs `body` to `/job/{service}` as MinIO does; returns status and parsed JSON answer.
    pub async fn post(
        &self,
        service: &str,
        auth: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .client
            .post(self.url(&format!("/job/{service}")))
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("post to gateway");
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Validates `cfg`, binds a free loopback port and runs the gateway on it in a task; returns its
/// address, the token that stops it and the task.
pub async fn spawn_gateway(
    cfg: Config,
    hooks: dedup_gateway::Hooks,
) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    cfg.validate().expect("test config must be valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        dedup_gateway::run_with_hooks(cfg, listener, s, hooks)
            .await
            .expect("gateway run");
    });
    (addr, shutdown, task)
}

/// The text of `GET {base}/metrics`.
pub async fn scrape_metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the unlabelled sample `name` (as exposed, e.g. `..._total`) in a metrics text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The shared MinIO fixtures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minio-events")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// The verdicts of an answer, in record order.
pub fn verdicts(answer: &serde_json::Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["verdict"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `f` every 20 ms until it is true or `limit` passes; returns the last value.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
