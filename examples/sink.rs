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

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
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
async fn answer(req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Empty::new());
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}
