//! Receive: the HTTP surface of contract §3, in one router.
//!
//! Layers are few on purpose: the webhook handler reads its own body (limit and timeout give
//! JSON errors with the right status), and the per-connection limits (header timeout, connection
//! cap) live in [`crate::server`], where they act before a request exists.

pub mod auth;
pub mod ops;
pub mod receive;

use axum::{
    Router,
    routing::{get, post},
};

use crate::pipeline::Gateway;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub gateway: Gateway,
}

/// All routes of the gateway.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/job/{service}",
            post(receive::webhook).head(receive::probe),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .with_state(state)
}
