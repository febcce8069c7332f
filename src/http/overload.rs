//! Load shedding for the webhook route: at most `http.max_inflight` POSTs are handled at once,
//! and the next one is answered 503 + `Retry-After` at once instead of queueing.
//!
//! Why on the webhook route only: a flood of webhooks (or a slow OSCAR that makes them pile up in
//! sync mode) must not take `/healthz`, `/readyz` or `/metrics` down with it, or an orchestrator
//! would restart a gateway that is merely busy and lose its in-memory state. Why shed rather than
//! queue: MinIO retries a 503 from its `queue_dir` anyway, so an immediate answer costs nothing,
//! while a queue would hold a connection and a body per waiting request. Nothing of a shed
//! request is read, stored or forwarded.
//!
//! The connection-level limits (header timeout, connection cap) stay in [`crate::server`]; keep
//! `max_inflight` below `max_connections` so that health probes always find a free connection.

use std::{future::Future, pin::Pin, time::Instant};

use axum::response::{IntoResponse, Response};
use tower::{BoxError, load_shed::error::Overloaded};

use crate::{error::AppError, metrics::Metrics};

/// The boxed future [`on_error`]'s handler returns.
pub type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// The `HandleErrorLayer` handler of the webhook route's limit: a shed request becomes a JSON
/// 503 with `Retry-After` and is counted; any other layer error is a plain 500.
pub fn on_error(metrics: Metrics) -> impl Fn(BoxError) -> Answer + Clone + Send + Sync + 'static {
    move |err: BoxError| {
        let metrics = metrics.clone();
        Box::pin(async move { answer(&err, &metrics) })
    }
}

fn answer(err: &BoxError, metrics: &Metrics) -> Response {
    let started = Instant::now();
    let resp = if err.is::<Overloaded>() {
        metrics.request_shed();
        AppError::Unavailable("overloaded: too many requests in flight; retry later".into())
            .into_response()
    } else {
        AppError::Internal.into_response()
    };
    metrics.response(resp.status().as_u16(), started.elapsed());
    resp
}
