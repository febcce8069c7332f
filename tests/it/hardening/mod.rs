//! Hardening (issue 6): hostile and broken input, slow and abusive clients, misbehaving
//! upstreams, secrets and TLS. Every case runs against the real gateway on 127.0.0.1:0 and checks
//! the status, the error body and that OSCAR received nothing it should not have.
//!
//! The fakes here differ from [`crate::helpers::FakeOscar`] in one way each: [`GateOscar`] holds
//! every request until the test opens the gate (deterministic "slow OSCAR" without timing), and
//! the upstream tests build raw TCP or streaming fakes for what a well-behaved server never does.

mod bad_input;
mod clients;
mod fuzz_corpus;
mod secrets;
mod tls;
mod upstream;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

/// A minimal valid MinIO record for object `key` at `version`.
pub fn record(key: &str, version: &str) -> String {
    format!(
        r#"{{"eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"in"}},"object":{{"key":"{key}","size":1,"eTag":"e","versionId":"{version}","sequencer":"1"}}}}}}"#
    )
}

/// A body with the given records.
pub fn body(records: &[String]) -> String {
    format!(
        r#"{{"EventName":"s3:ObjectCreated:Put","Key":"in/x","Records":[{}]}}"#,
        records.join(",")
    )
}

/// The `error` string of an error answer, checked to be short.
pub fn error_reason(answer: &serde_json::Value) -> String {
    let reason = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no `error` in {answer}"));
    assert!(
        !reason.is_empty() && reason.len() < 200,
        "reason should be short: {reason}"
    );
    reason.to_string()
}

/// Sends raw bytes on a fresh connection and returns everything the server sent until it closed
/// (or `limit` passed; then what was read so far).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    read_until_close(&mut s, limit).await
}

/// Reads until EOF, a reset or `limit`.
pub async fn read_until_close(s: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

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
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gate oscar");
        let addr = listener.local_addr().expect("addr");
        let me = Self {
            addr,
            arrived: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            status: Arc::new(AtomicU16::new(201)),
            answered: Arc::default(),
        };
        let app = Router::new()
            .route("/job/{service}", post(gated))
            .with_state(me.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
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
