//! Deliver: POST one event to `{upstream}/job/{service}` and classify OSCAR's answer.
//!
//! The request is what MinIO would have sent OSCAR itself: the body byte-for-byte, the original
//! `Authorization` header, `Content-Type: application/json`, plus `X-Dedup-Key` so OSCAR-side logs
//! can be joined with the gateway's. Connections are pooled per worker and kept alive (`pool.rs`
//! with `wire.rs` for `http://`, hyper-util in `https.rs` for `https://`), redirects are never
//! followed (a redirect would carry the service token to another host), and a response body is read only up to [`RESPONSE_CAP`] so a misbehaving upstream cannot
//! make the gateway buffer without bound. What counts as success, retryable or permanent is
//! contract §7: 2xx success; 408, 429, 5xx, timeouts and connection errors retryable; other 4xx and
//! 3xx permanent.

pub mod backoff;
mod https;
mod pool;
pub mod settle;
mod wire;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Response, Uri,
    body::Incoming,
    header::{
        ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
    },
};

use crate::{
    config::DeliveryConfig,
    identity::DedupKey,
    metrics::{Metrics, UpstreamClass},
};

/// Bytes of an upstream response body read before the rest is discarded.
pub const RESPONSE_CAP: usize = 64 * 1024;

/// Services whose parsed URI is remembered; beyond that a URI is parsed per request.
const URI_CACHE_MAX: usize = 1024;

const X_DEDUP_KEY: HeaderName = HeaderName::from_static("x-dedup-key");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const ANY: HeaderValue = HeaderValue::from_static("*/*");
const UA: HeaderValue =
    HeaderValue::from_static(concat!("dedup-gateway/", env!("CARGO_PKG_VERSION")));

/// One event to deliver.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub service: String,
    pub authorization: Option<HeaderValue>,
    pub body: Bytes,
    pub key: DedupKey,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// OSCAR accepted the event (2xx).
    Delivered { status: u16 },
    /// Worth trying again, after `retry_after` if OSCAR said so.
    Retryable {
        status: Option<u16>,
        retry_after: Option<Duration>,
        reason: String,
    },
    /// Trying again cannot help (bad token, unknown service, redirect).
    Permanent { status: u16, reason: String },
}

impl Outcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered { .. })
    }

    /// A short description for logs, DLQ entries and response reasons.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Delivered { status } => format!("upstream-{status}"),
            Outcome::Retryable { reason, .. } | Outcome::Permanent { reason, .. } => reason.clone(),
        }
    }
}

/// How requests reach OSCAR: the lean per-worker pool for `http://`, hyper-util for `https://`.
#[derive(Debug)]
enum Transport {
    Plain(pool::PlainPool),
    Tls(Arc<[https::TlsClient]>),
}

/// The HTTP client towards OSCAR; cheap to clone (the pools are shared).
///
/// One connection pool per worker thread ([`crate::runtime`]): a pooled connection's task lives
/// on the runtime that opened it, so a worker that borrowed another worker's connection would
/// hand every request across threads.
#[derive(Debug, Clone)]
pub struct Forwarder {
    transport: Arc<Transport>,
    /// What goes before `/job/{service}` in a request's URI: the whole base for `https://`
    /// (hyper-util wants absolute form), only its path for `http://` (origin form on the wire).
    prefix: Arc<str>,
    uris: Arc<DashMap<String, Uri>>,
    timeout: Duration,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the upstream HTTP client: {0}")]
pub struct ClientError(String);

impl Forwarder {
    pub fn new(
        upstream: &str,
        cfg: &DeliveryConfig,
        ca_file: Option<&std::path::Path>,
        workers: usize,
        metrics: Metrics,
    ) -> Result<Self, ClientError> {
        let base = upstream.trim_end_matches('/');
        let parsed = Uri::try_from(base).map_err(|e| ClientError(format!("upstream: {e}")))?;
        let (transport, prefix) = match (parsed.scheme_str(), parsed.authority()) {
            (Some("http"), Some(authority)) => {
                let pool = pool::PlainPool::new(
                    authority,
                    workers,
                    cfg.pool_max_idle,
                    cfg.connect_timeout,
                )?;
                let path = parsed.path().trim_end_matches('/');
                (Transport::Plain(pool), path.to_owned())
            }
            (Some("https"), Some(_)) => (
                Transport::Tls(https::clients(cfg, ca_file, workers)?),
                base.to_owned(),
            ),
            _ => {
                return Err(ClientError(format!(
                    "upstream {base:?} is not an http:// or https:// URL"
                )));
            }
        };
        Ok(Self {
            transport: Arc::new(transport),
            prefix: prefix.into(),
            uris: Arc::new(DashMap::new()),
            timeout: cfg.request_timeout,
            metrics,
        })
    }

    /// The parsed URI for `service`, remembered for the first [`URI_CACHE_MAX`] services.
    fn uri(&self, service: &str) -> Option<Uri> {
        if let Some(u) = self.uris.get(service) {
            return Some(u.clone());
        }
        let mut target = String::with_capacity(self.prefix.len() + 5 + service.len());
        target.push_str(&self.prefix);
        target.push_str("/job/");
        target.push_str(service);
        let uri = Uri::try_from(target).ok()?;
        if self.uris.len() < URI_CACHE_MAX {
            self.uris.insert(service.to_owned(), uri.clone());
        }
        Some(uri)
    }

    /// Sends one attempt and classifies the answer.
    pub async fn send(&self, d: &Delivery) -> Outcome {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started) + self.timeout;
        let result = match (&*self.transport, self.uri(&d.service)) {
            (_, None) => Err(UpstreamClass::Other),
            (Transport::Plain(pool), Some(target)) => pool
                .exchange(&target, d, deadline)
                .await
                .map(|a| classify(a.status, a.retry_after)),
            (Transport::Tls(clients), Some(target)) => {
                self.exchange_tls(clients, request(target, d), deadline)
                    .await
            }
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(class) => {
                self.metrics.upstream(class, started.elapsed());
                return Outcome::Retryable {
                    status: None,
                    retry_after: None,
                    reason: format!("upstream-{}", class.as_str()),
                };
            }
        };
        let class = match &outcome {
            Outcome::Delivered { .. } => UpstreamClass::Success,
            Outcome::Retryable {
                status: Some(s), ..
            }
            | Outcome::Permanent { status: s, .. } => match s {
                300..=399 => UpstreamClass::Redirect,
                400..=499 => UpstreamClass::ClientError,
                500..=599 => UpstreamClass::ServerError,
                _ => UpstreamClass::Other,
            },
            Outcome::Retryable { status: None, .. } => UpstreamClass::Other,
        };
        self.metrics.upstream(class, started.elapsed());
        outcome
    }

    /// Sends `req` over hyper-util and drains a capped amount of the answer, by `deadline`.
    async fn exchange_tls(
        &self,
        clients: &[https::TlsClient],
        req: Request<Full<Bytes>>,
        deadline: tokio::time::Instant,
    ) -> Result<Outcome, UpstreamClass> {
        let client = &clients[crate::runtime::worker_index() % clients.len()];
        match tokio::time::timeout_at(deadline, client.request(req)).await {
            Err(_) => Err(UpstreamClass::Timeout),
            Ok(Err(e)) => Err(https::error_class(&e)),
            Ok(Ok(resp)) => Ok(read_answer(resp, deadline).await),
        }
    }
}

/// The request hyper-util sends for `d` (it adds `Host`).
fn request(uri: Uri, d: &Delivery) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(d.body.clone()));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    // Six here plus the `Host` the client adds: room for all seven in one allocation.
    h.reserve(7);
    h.insert(CONTENT_TYPE, APPLICATION_JSON);
    if let Ok(key) = HeaderValue::from_bytes(&d.key.hex_bytes()) {
        h.insert(X_DEDUP_KEY, key);
    }
    if let Some(auth) = &d.authorization {
        // Sensitive whatever path built it (webhook, spool, DLQ replay): client-side debug
        // output then shows `Sensitive` instead of the service token.
        let mut auth = auth.clone();
        auth.set_sensitive(true);
        h.insert(AUTHORIZATION, auth);
    }
    h.insert(USER_AGENT, UA);
    h.insert(ACCEPT, ANY);
    req
}

/// Classifies OSCAR's answer (from hyper-util) and drains a little of its body so the
/// connection can be reused: never more than [`RESPONSE_CAP`], never past the request deadline (a
/// slow body still leaves the status to decide).
async fn read_answer(resp: Response<Incoming>, deadline: tokio::time::Instant) -> Outcome {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let mut body = resp.into_body();
    let mut read = 0usize;
    while read < RESPONSE_CAP {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(c) = frame.data_ref() {
                    read += c.len();
                }
            }
            _ => break,
        }
    }
    classify(status.as_u16(), retry_after)
}

/// Contract §7's split of OSCAR's answers.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered { status },
        408 | 425 | 429 | 500..=599 => Outcome::Retryable {
            status: Some(status),
            retry_after,
            reason: format!("upstream-{status}"),
        },
        _ => Outcome::Permanent {
            status,
            reason: format!("upstream-{status}"),
        },
    }
}

/// `Retry-After` in delta-seconds (the form OSCAR's proxies use); HTTP dates are ignored.
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_contract() {
        assert!(classify(201, None).is_delivered());
        assert!(classify(204, None).is_delivered());
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(classify(s, None), Outcome::Retryable { .. }),
                "{s}"
            );
        }
        for s in [301, 302, 400, 401, 403, 404, 413] {
            assert!(
                matches!(classify(s, None), Outcome::Permanent { .. }),
                "{s}"
            );
        }
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
