//! A fake OSCAR that holds every request until the test opens its gate: a slow or hung OSCAR
//! without timing assumptions.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use tokio::sync::Semaphore;

use super::serve;

/// A fake OSCAR that records each request on arrival and answers 201 (or the status set with
/// [`GateOscar::set_status`]) only once the test opens the gate: a slow or hung OSCAR whose
/// slowness the test controls exactly.
#[derive(Debug, Clone)]
pub struct GateOscar {
    pub addr: SocketAddr,
    arrived: Arc<Mutex<Vec<(String, HeaderMap)>>>,
    gate: Arc<Semaphore>,
    status: Arc<AtomicU16>,
    /// Answers sent, with their status.
    answered: Arc<Mutex<Vec<u16>>>,
}

impl GateOscar {
    pub async fn start() -> Self {
        let mut me = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            arrived: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            status: Arc::new(AtomicU16::new(201)),
            answered: Arc::default(),
        };
        let app = Router::new()
            .route("/job/{service}", post(gated))
            .with_state(me.clone());
        me.addr = serve(app).await;
        me
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests that reached the fake so far (answered or still held).
    pub fn arrived(&self) -> usize {
        self.arrived.lock().expect("lock").len()
    }

    /// Lets every held and future request through.
    pub fn open(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Lets exactly one held (or the next) request through.
    pub fn open_one(&self) {
        self.gate.add_permits(1);
    }

    /// The status answered to requests that pass the gate from now on (201 by default).
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The statuses answered so far, in order.
    pub fn answered(&self) -> Vec<u16> {
        self.answered.lock().expect("lock").clone()
    }
}

async fn gated(
    State(me): State<GateOscar>,
    Path(service): Path<String>,
    headers: HeaderMap,
) -> StatusCode {
    me.arrived.lock().expect("lock").push((service, headers));
    if let Ok(p) = me.gate.acquire().await {
        p.forget();
    }
    let status = me.status.load(Ordering::SeqCst);
    me.answered.lock().expect("lock").push(status);
    StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED)
}
