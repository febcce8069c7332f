//! A fake OSCAR that records every request: the upstream of most tests.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use tokio::net::TcpListener;
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
    pub at: Instant,
}

#[derive(Debug, Default)]
struct FakeState {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    require_token: AtomicBool,
    /// Requests that reached the handler, counted before any delay (a request in flight counts).
    arrived: AtomicU64,
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

    /// Requests that have reached the fake, including those still waiting out the delay.
    pub fn arrivals(&self) -> u64 {
        self.state.arrived.load(Ordering::SeqCst)
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
    state.arrived.fetch_add(1, Ordering::SeqCst);
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
        at: Instant::now(),
    });
    StatusCode::from_u16(status).unwrap()
}

/// 2xx deliveries per dedup key (`X-Dedup-Key`): "each event exactly once" is every count 1.
pub fn deliveries(oscar: &FakeOscar) -> HashMap<String, usize> {
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

/// The requests OSCAR received for one dedup key, in order.
pub fn received_for(oscar: &FakeOscar, key: &str) -> Vec<Received> {
    oscar
        .received()
        .into_iter()
        .filter(|r| r.headers["x-dedup-key"] == key)
        .collect()
}

/// Serves `app` on a fresh loopback port until the test ends: for one-off upstreams that
/// misbehave in a way [`FakeOscar`] never does.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
