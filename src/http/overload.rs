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

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use axum::response::{IntoResponse, Response};

use crate::{error::AppError, metrics::Metrics};

/// The webhook route's in-flight count and its bound; cheap to clone (one shared counter).
///
/// A counter rather than tower's `ConcurrencyLimit` + `LoadShed` + `HandleErrorLayer`: those
/// boxed the request's service and future several times per request, a measurable share of the
/// drop path's allocations (BENCHMARKS.md), for what is one atomic increment.
#[derive(Debug, Clone)]
pub struct Inflight {
    used: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted request; dropping it lets the next one in.
#[derive(Debug)]
pub struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inflight {
    pub fn new(max: usize) -> Self {
        Self {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// A permit when fewer than `max` requests are in flight, else `None` (shed this one).
    pub fn try_enter(&self) -> Option<Permit> {
        if self.used.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.used.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Permit(self.used.clone()))
    }
}

/// The answer to a shed request: a JSON 503 with `Retry-After`, counted.
pub fn shed(metrics: &Metrics) -> Response {
    let started = Instant::now();
    metrics.request_shed();
    let resp = AppError::Unavailable("overloaded: too many requests in flight; retry later".into())
        .into_response();
    metrics.response(resp.status().as_u16(), started.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_max_then_sheds_until_a_permit_drops() {
        let limit = Inflight::new(2);
        let a = limit.try_enter().expect("first");
        let _b = limit.try_enter().expect("second");
        assert!(limit.try_enter().is_none(), "third is shed");
        assert!(limit.try_enter().is_none(), "a shed attempt takes no slot");
        drop(a);
        assert!(limit.try_enter().is_some(), "a slot freed");
    }
}
