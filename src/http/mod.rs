//! Receive: the HTTP surface of contract §3.
//!
//! Every connection runs [`App`]: a plain `POST /job/{service}` — nearly every request the
//! gateway sees — goes straight to the webhook handler, and everything else (probes, metrics,
//! admin, odd paths) through one axum router. Why the split: axum's routing, path extraction and
//! boxed per-route services cost a dozen allocations and a noticeable share of the CPU per
//! request, on a path whose own work is a few microseconds (BENCHMARKS.md). The router keeps the
//! webhook route too, for what the fast path declines (a percent-encoded service name), so both
//! answer alike.
//!
//! Layers are few on purpose: the webhook handler reads its own body (limit and timeout give
//! JSON errors with the right status) and takes its in-flight permit itself ([`overload`]: load
//! shedding on webhook POSTs only keeps the health and metrics routes answering under a flood);
//! the per-connection limits (header timeout, connection cap) live in [`crate::server`], where
//! they act before a request exists.

pub mod answer;
pub mod auth;
pub mod dlq;
pub mod h1;
pub mod ops;
pub mod overload;
pub mod receive;
pub mod reconcile;
pub mod verdicts;

use std::{convert::Infallible, future::Future, pin::Pin};

use axum::{
    Router,
    body::Body,
    http::{Method, Request},
    response::Response,
    routing::{delete, get, post},
};
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::pipeline::Gateway;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub gateway: Gateway,
    /// Webhook POSTs in flight, shared by both ways in ([`overload`]).
    pub inflight: overload::Inflight,
    /// Per-service reconciliation (`/admin/reconcile`); empty when none is configured.
    pub reconcilers: crate::reconcile::Reconcilers,
}

impl AppState {
    pub fn new(gateway: Gateway) -> Self {
        let inflight = overload::Inflight::new(gateway.config().http.max_inflight);
        Self {
            gateway,
            inflight,
            reconcilers: Default::default(),
        }
    }

    pub fn with_reconcilers(mut self, r: crate::reconcile::Reconcilers) -> Self {
        self.reconcilers = r;
        self
    }
}

/// The service every connection runs (see the module doc).
#[derive(Debug, Clone)]
pub struct App {
    state: AppState,
    router: Router,
}

impl App {
    pub fn new(state: AppState) -> Self {
        Self {
            router: router(state.clone()),
            state,
        }
    }
}

/// The future of one request, either way in.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<Incoming>) -> ResponseFuture {
        if req.method() == Method::POST
            && let Some(service) = plain_webhook_service(req.uri().path())
        {
            let (state, service) = (self.state.clone(), service.to_owned());
            return Box::pin(async move { Ok(receive::handle(state, service, req).await) });
        }
        let router = self.router.clone();
        Box::pin(async move { router.oneshot(req.map(Body::new)).await })
    }
}

/// `{service}` of a `/job/{service}` path when axum's route would extract it unchanged: one
/// non-empty segment without percent-escapes (those take the router, which decodes them).
fn plain_webhook_service(path: &str) -> Option<&str> {
    let service = path.strip_prefix("/job/")?;
    (!service.is_empty() && !service.contains(['/', '%'])).then_some(service)
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
        .route("/admin/verdicts", get(verdicts::verdicts))
        .route("/admin/dlq", get(dlq::list))
        .route("/admin/dlq/replay", post(dlq::replay_all))
        .route("/admin/dlq/{id}", delete(dlq::delete))
        .route("/admin/dlq/{id}/replay", post(dlq::replay_one))
        .route("/admin/reconcile", get(reconcile::last_passes))
        .route("/admin/reconcile/{service}", post(reconcile::run_now))
        .fallback(ops::not_found)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::plain_webhook_service as svc;

    /// The request's future is boxed and moved whole, several times, on every request: a store
    /// or client future held inline in it (rather than boxed where it is awaited) made it
    /// 7,056 bytes in a release build where 1,680 do (BENCHMARKS.md, session 6).
    #[tokio::test]
    async fn the_request_future_stays_small() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = crate::config::Config {
            mode: crate::config::Mode::Sync,
            data_dir: dir.path().into(),
            ..Default::default()
        };
        let p = crate::Pipeline::build(Arc::new(cfg), &crate::Hooks::default())
            .await
            .expect("pipeline");
        let state = super::AppState::new(p.gateway);
        let req = axum::http::Request::post("/job/s")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let fut = super::receive::handle(state, "s".into(), req);
        let size = std::mem::size_of_val(&fut);
        eprintln!("request future: {size} bytes");
        assert!(size <= BOUND, "the request future is {size} bytes");
    }

    /// 1,664 bytes in a debug build, 1,680 in release; 7,040 / 7,056 before the fix.
    const BOUND: usize = 3 * 1024;

    #[test]
    fn fast_path_takes_only_what_the_route_would_extract_unchanged() {
        assert_eq!(svc("/job/plants"), Some("plants"));
        assert_eq!(svc("/job/a.b-c_d"), Some("a.b-c_d"));
        assert_eq!(svc("/job/"), None);
        assert_eq!(svc("/job/a/b"), None);
        assert_eq!(svc("/job/a/"), None);
        assert_eq!(svc("/job/%61"), None);
        assert_eq!(svc("/jobs/a"), None);
        assert_eq!(svc("/healthz"), None);
    }
}
