//! The ceiling for an HTTP server on this machine: a bare axum server that reads each webhook
//! POST's body and answers `200 OK`, with nothing else (no parsing, no store, no logging).
//!
//! The gateway's drop path (all duplicates) is measured against this: the gap between the two is
//! what parsing, policy, key derivation, the store lookup, metrics, logging and the JSON answer
//! cost per request.
//!
//! Run: `cargo run --release --example bare [ADDR]` (default `127.0.0.1:0`); the bound address is
//! printed on the first line of stdout. Uses the same multi-thread runtime as the gateway (one
//! worker per core). It runs until killed.

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

use axum::{Router, body::Bytes, http::StatusCode, routing::post};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let app = Router::new().route("/job/{service}", post(accept));
    let listener = TcpListener::bind(&addr).await?;
    println!("{}", listener.local_addr()?);
    axum::serve(listener, app).await
}

/// Takes the whole body, as the gateway must before it can decide.
async fn accept(_body: Bytes) -> StatusCode {
    StatusCode::OK
}
