//! Reconciliation administration (contract §3, §8), behind the admin token like the DLQ routes:
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin/reconcile` | the last pass per service (`null` before the first) |
//! | `POST /admin/reconcile/{service}` | runs a pass now and answers its report (200); 409 when a pass of the service is already running here or another replica holds the listing lease; 404 for a service without a `reconcile` section |
//!
//! The pass runs in its own task: a client that hangs up does not cut it short between a claim
//! and its delivery.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::{AppState, auth::check_admin};
use crate::{error::AppError, reconcile::PassOptions};

/// `GET /admin/reconcile`.
pub async fn last_passes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    check_admin(state.gateway.config(), &headers)?;
    let mut services = Map::new();
    for r in state.reconcilers.iter() {
        let last = r
            .last_report()
            .and_then(|p| serde_json::to_value(p).ok())
            .unwrap_or(Value::Null);
        services.insert(r.service().to_string(), last);
    }
    Ok(Json(json!({ "services": services })))
}

/// `POST /admin/reconcile/{service}`.
pub async fn run_now(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Result<Response, AppError> {
    check_admin(state.gateway.config(), &headers)?;
    let r = state
        .reconcilers
        .get(&service)
        .cloned()
        .ok_or(AppError::NotFound)?;
    let task = tokio::spawn(async move {
        let opts = PassOptions::default();
        r.run(opts, &CancellationToken::new(), &mut |_| {}).await
    });
    let report = task
        .await
        .map_err(|e| AppError::Unavailable(format!("reconciliation pass failed: {e}")))?;
    let status = match report.outcome.as_str() {
        "busy" | "leased-elsewhere" => StatusCode::CONFLICT,
        _ => StatusCode::OK,
    };
    Ok((status, Json(report)).into_response())
}
