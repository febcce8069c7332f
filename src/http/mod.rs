//! Receive: the HTTP surface of contract §3, in one router.
//!
//! Layers are few on purpose: the webhook handler reads its own body (limit and timeout give
//! JSON errors with the right status), and the per-connection limits (header timeout, connection
//! cap) live in [`crate::server`], where they act before a request exists. The one layer is the
//! webhook route's in-flight limit with load shedding ([`overload`]), which keeps the health and
//! metrics routes answering under a flood.

pub mod admin;
pub mod auth;
pub mod ops;
pub mod overload;
pub mod receive;
pub mod verdicts;

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    routing::{delete, get, post},
};
use tower::ServiceBuilder;

use crate::pipeline::Gateway;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub gateway: Gateway,
}

/// All routes of the gateway.
pub fn router(state: AppState) -> Router {
    // Webhook POSTs only (see `overload`): the error handler is outermost so it sees the shed;
    // the limit is innermost so a permit is held exactly while the handler runs.
    let limit = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overload::on_error(
            state.gateway.metrics().clone(),
        )))
        .load_shed()
        .concurrency_limit(state.gateway.config().http.max_inflight);
    Router::new()
        .route(
            "/job/{service}",
            post(receive::webhook).layer(limit).head(receive::probe),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/admin/verdicts", get(verdicts::verdicts))
        .route("/admin/dlq", get(admin::list))
        .route("/admin/dlq/replay", post(admin::replay_all))
        .route("/admin/dlq/{id}", delete(admin::delete))
        .route("/admin/dlq/{id}/replay", post(admin::replay_one))
        .fallback(ops::not_found)
        .with_state(state)
}
