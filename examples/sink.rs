//! A minimal upstream for the benchmarks: answers every request as OSCAR answers a trigger,
//! `201 Created` with an empty body, after reading the request body.
//!
//! Why hyper directly and not axum: the sink sits behind every forwarding scenario (nginx and the
//! gateway alike), so it must be the cheapest server this machine can run, leaving the measured
//! difference to the component in front of it. No routing, no extractors, no middleware.
//!
//! Run: `cargo run --release --example sink [ADDR]` (default `127.0.0.1:0`); the bound address is
//! printed on the first line of stdout. `SINK_THREADS` sets the worker threads (default: one per
//! core). It runs until killed.
//!
//! Counting mode (`SINK_COUNT=1`, for `examples/burst.rs`): the sink also records the
//! `X-Dedup-Key` header of every POST and answers `GET /count` with one line,
//! `received=N distinct=M max_per_key=K no_key=Z`, so a run can check that every distinct event
//! was forwarded exactly once. Off by default: the plain sink stays the cheapest server.

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Mutex, OnceLock},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Counting mode's tally: `X-Dedup-Key` → times received, and POSTs without one.
#[derive(Default)]
struct Tally {
    per_key: HashMap<Vec<u8>, u32>,
    no_key: u64,
}

static COUNTS: OnceLock<Mutex<Tally>> = OnceLock::new();

fn main() -> std::io::Result<()> {
    if std::env::var("SINK_COUNT").is_ok_and(|v| v == "1") {
        let _ = COUNTS.set(Mutex::new(Tally::default()));
    }
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("SINK_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        rt.worker_threads(n);
    }
    rt.enable_all().build()?.block_on(serve(addr))
}

async fn serve(addr: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(&addr).await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            // Out of descriptors under a connection storm: keep serving the open ones.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

/// Reads the body (OSCAR does, and a server that answers before reading can reset keep-alive
/// connections), then answers 201 with no body.
async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(counts) = COUNTS.get() {
        if req.method() == Method::GET && req.uri().path() == "/count" {
            return Ok(Response::new(Full::new(Bytes::from(summary(counts)))));
        }
        let key = req
            .headers()
            .get("x-dedup-key")
            .map(|v| v.as_bytes().to_vec());
        let mut t = counts.lock().unwrap();
        match key {
            Some(k) => *t.per_key.entry(k).or_default() += 1,
            None => t.no_key += 1,
        }
    }
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

fn summary(counts: &Mutex<Tally>) -> String {
    let t = counts.lock().unwrap();
    let received: u64 = t.per_key.values().map(|&n| u64::from(n)).sum();
    let max = t.per_key.values().copied().max().unwrap_or(0);
    format!(
        "received={received} distinct={} max_per_key={max} no_key={}\n",
        t.per_key.len(),
        t.no_key
    )
}
