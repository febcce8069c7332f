//! Dead-letter queue administration (contract §3), spool and sync mode:
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin/dlq?limit=&after=` | a page of entries, oldest first; `next` is the `after` of the next page |
//! | `POST /admin/dlq/{id}/replay` | 202 back in the spool; 409 if the identity was delivered meanwhile; 404 |
//! | `POST /admin/dlq/replay` | replays every entry; counts per outcome |
//! | `DELETE /admin/dlq/{id}` | 204; 404 |
//!
//! Every route passes [`check_admin`] first (bearer token in constant time; 404 when no admin token
//! is configured), and answers 404 in shadow mode, where there is no queue. In sync mode the queue
//! is the DLQ-only spool (`spool/dlq_direct.rs`); a replayed entry is delivered by its workers.
//! A listing shows the body and which headers will be sent, but the `Authorization` value is kept
//! only for the replay and never shown: it is the OSCAR service token.

use std::time::{Duration, UNIX_EPOCH};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, auth::check_admin};
use crate::{
    error::AppError,
    spool::{Replayed, SpoolBackend, SpoolError, record::Entry},
};

/// Entries per page when `limit` is not given.
const DEFAULT_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<usize>,
    after: Option<u64>,
}

fn spool(state: &AppState, headers: &HeaderMap) -> Result<SpoolBackend, AppError> {
    check_admin(state.gateway.config(), headers)?;
    state.gateway.dlq().cloned().ok_or(AppError::NotFound)
}

fn spool_error(e: SpoolError) -> AppError {
    match e {
        SpoolError::NotFound => AppError::NotFound,
        e => AppError::Unavailable(e.to_string()),
    }
}

/// `GET /admin/dlq`.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, AppError> {
    let spool = spool(&state, &headers)?;
    let page = spool
        .dlq_page(q.after, q.limit.unwrap_or(DEFAULT_PAGE))
        .await
        .map_err(spool_error)?;
    let entries: Vec<Value> = page.entries.iter().map(|(id, e)| view(*id, e)).collect();
    Ok(Json(
        json!({ "entries": entries, "next": page.next, "total": page.total }),
    ))
}

/// `POST /admin/dlq/{id}/replay`.
pub async fn replay_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Response, AppError> {
    let spool = spool(&state, &headers)?;
    let resp = match spool.replay_dlq(id).await.map_err(spool_error)? {
        Replayed::Accepted => (
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "verdict": "accepted" })),
        ),
        Replayed::Duplicate(existing) => (
            StatusCode::CONFLICT,
            Json(json!({ "id": id, "verdict": "duplicate", "reason": existing.reason() })),
        ),
    };
    Ok(resp.into_response())
}

/// `POST /admin/dlq/replay`: every entry, page by page (ids are read first, so entries replayed
/// back into the DLQ during the walk are not replayed twice).
pub async fn replay_all(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    let spool = spool(&state, &headers)?;
    let mut ids = Vec::new();
    let mut after = None;
    // Bounded: each page advances `after`, and the queue holds finitely many ids.
    loop {
        let page = spool.dlq_page(after, 1000).await.map_err(spool_error)?;
        ids.extend(page.entries.iter().map(|(id, _)| *id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let (mut replayed, mut duplicate, mut failed) = (0u64, 0u64, 0u64);
    for id in ids {
        match spool.replay_dlq(id).await {
            Ok(Replayed::Accepted) => replayed += 1,
            Ok(Replayed::Duplicate(_)) => duplicate += 1,
            Err(SpoolError::NotFound) => {}
            Err(e) => {
                failed += 1;
                tracing::warn!(dlq_id = id, error = %e, "dead-letter replay failed");
            }
        }
    }
    Ok(Json(
        json!({ "replayed": replayed, "duplicate": duplicate, "failed": failed }),
    ))
}

/// `DELETE /admin/dlq/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<StatusCode, AppError> {
    let spool = spool(&state, &headers)?;
    spool.delete_dlq(id).await.map_err(spool_error)?;
    tracing::info!(dlq_id = id, "dead-letter entry deleted");
    Ok(StatusCode::NO_CONTENT)
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// One entry as listed. The authorization value is replaced by a marker, never shown.
fn view(id: u64, e: &Entry) -> Value {
    let mut headers = json!({ "content-type": "application/json" });
    if e.authorization.is_some() {
        headers["authorization"] = json!("[redacted]");
    }
    let attempts: Vec<Value> = e
        .attempts
        .iter()
        .map(|a| json!({ "at": time(a.at_ms), "status": a.status, "outcome": a.outcome }))
        .collect();
    json!({
        "id": id,
        "service": e.service,
        "dedup_key": e.key.to_hex(),
        "accepted_at": time(e.accepted_ms),
        "dead_at": e.dead.as_ref().map(|d| time(d.at_ms)),
        "reason": e.dead.as_ref().map(|d| d.reason.as_str()),
        "held": e.held,
        "attempts_made": e.attempts_made,
        "attempts": attempts,
        "headers": headers,
        "body": String::from_utf8_lossy(&e.body),
    })
}
