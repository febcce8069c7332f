//! Probes and metrics: `/healthz`, `/readyz`, `/metrics`.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header::CONTENT_TYPE},
    response::IntoResponse,
};
use serde_json::json;

use super::AppState;
use crate::{error::AppError, store::DedupStore};

/// 200 while the process serves.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 when the dedup store answers (and the spool is writable, in spool mode); else 503.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(spool) = state.gateway.spool()
        && let Err(reason) = spool.ready().await
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not-ready", "reason": reason })),
        );
    }
    match state.gateway.store().ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not-ready", "reason": e.to_string() })),
        ),
    }
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = state.gateway.metrics();
    if let Some(spool) = state.gateway.spool() {
        spool.refresh_metrics();
    }
    if let Some(n) = state.gateway.store().local_entries() {
        m.store_entries(n);
    }
    if let Some(n) = state.gateway.store().evicted_live() {
        m.store_evicted_live(n);
    }
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

pub async fn not_found() -> AppError {
    AppError::NotFound
}
