//! `GET /admin/verdicts`: what the gateway decided about an object version, and when.
//!
//! Two ways to ask (contract §3):
//! - `?key=<dedup key hex>` — the key from a response's `results`, a log line's `dedup_key` or
//!   OSCAR's `X-Dedup-Key` request header;
//! - `?bucket=B&object=O[&version=V]` — the object key decoded (as in the logs); `version` is the
//!   `versionId` (or the sequencer/eTag for unversioned buckets); without it, every version.
//!
//! The answer lists the matching decisions oldest first, with the first time the version was seen
//! and when it was delivered. Only the last `admin.verdict_history` decisions are kept, so an empty
//! list means "nothing recent", not "never". Guarded by the admin token (404 when admin is off).

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, auth::check_admin};
use crate::{
    error::AppError,
    history::{DecisionView, ObjectQuery, rfc3339},
    identity::DedupKey,
    verdict::Verdict,
};

/// The query string; either `key` or `bucket` + `object`.
#[derive(Debug, Default, Deserialize)]
pub struct VerdictQuery {
    pub key: Option<String>,
    pub bucket: Option<String>,
    pub object: Option<String>,
    pub version: Option<String>,
}

pub async fn verdicts(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<VerdictQuery>,
) -> Result<Response, AppError> {
    check_admin(state.gateway.config(), &headers)?;
    let history = state.gateway.history();
    let found = match (&q.key, &q.bucket, &q.object) {
        (Some(k), None, None) => match DedupKey::from_hex(k.trim()) {
            Some(key) => history.by_key(&key),
            None => return Ok(bad_request("`key` must be 32 hex digits")),
        },
        (None, Some(bucket), Some(object)) if !bucket.is_empty() && !object.is_empty() => history
            .by_object(&ObjectQuery {
                bucket,
                object,
                version: q.version.as_deref().filter(|v| !v.is_empty()),
            }),
        _ => {
            return Ok(bad_request(
                "give either `key`, or `bucket` and `object` (and optionally `version`)",
            ));
        }
    };
    let first_seen = found.iter().map(|d| d.seen).min().map(rfc3339);
    let delivered_at = found
        .iter()
        .filter(|d| d.verdict == Verdict::Forwarded)
        .filter_map(|d| d.delivered)
        .min()
        .map(rfc3339);
    let decisions: Vec<DecisionView> = found.iter().map(DecisionView::from).collect();
    Ok(Json(json!({
        "first_seen": first_seen,
        "delivered_at": delivered_at,
        "history_capacity": state.gateway.config().admin.verdict_history,
        "decisions": decisions,
    }))
    .into_response())
}

fn bad_request(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response()
}
