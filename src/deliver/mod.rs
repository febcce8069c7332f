//! Deliver: POST one event to `{upstream}/job/{service}` and classify OSCAR's answer.
//!
//! The request is what MinIO would have sent OSCAR itself: the body byte-for-byte, the original
//! `Authorization` header, `Content-Type: application/json`, plus `X-Dedup-Key` so OSCAR-side logs
//! can be joined with the gateway's. Connections are pooled and kept alive (one client for the
//! process), redirects are never followed (a redirect would carry the service token to another
//! host), and a response body is read only up to [`RESPONSE_CAP`] so a misbehaving upstream cannot
//! make the gateway buffer without bound. What counts as success, retryable or permanent is
//! contract §7: 2xx success; 408, 429, 5xx, timeouts and connection errors retryable; other 4xx and
//! 3xx permanent.

pub mod backoff;
pub mod settle;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, Uri,
    header::{
        ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
    },
};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tokio_rustls::rustls::{
    self, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
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

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The HTTP client towards OSCAR; cheap to clone (the pools are shared).
///
/// One connection pool per worker thread ([`crate::runtime`]): a pooled connection's task lives
/// on the runtime that opened it, so a worker that borrowed another worker's connection would
/// hand every request across threads.
#[derive(Debug, Clone)]
pub struct Forwarder {
    clients: Arc<[HttpClient]>,
    base: Arc<str>,
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
        let roots = trust_roots(ca_file)?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();

        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let clients = (0..workers.max(1))
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(cfg.pool_max_idle)
                    .build(https.clone())
            })
            .collect();
        Ok(Self {
            clients,
            base: upstream.trim_end_matches('/').into(),
            uris: Arc::new(DashMap::new()),
            timeout: cfg.request_timeout,
            metrics,
        })
    }

    /// The URL an event for `service` goes to.
    pub fn url(&self, service: &str) -> String {
        let mut url = String::with_capacity(self.base.len() + 5 + service.len());
        url.push_str(&self.base);
        url.push_str("/job/");
        url.push_str(service);
        url
    }

    /// The parsed URI for `service`, remembered for the first [`URI_CACHE_MAX`] services.
    fn uri(&self, service: &str) -> Option<Uri> {
        if let Some(u) = self.uris.get(service) {
            return Some(u.clone());
        }
        let uri = Uri::try_from(self.url(service)).ok()?;
        if self.uris.len() < URI_CACHE_MAX {
            self.uris.insert(service.to_owned(), uri.clone());
        }
        Some(uri)
    }

    /// Sends one attempt and classifies the answer.
    pub async fn send(&self, d: &Delivery) -> Outcome {
        let started = Instant::now();
        let result = match self.request(d) {
            Some(req) => self.exchange(req, started).await,
            None => Err(UpstreamClass::Other),
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

    fn request(&self, d: &Delivery) -> Option<Request<Full<Bytes>>> {
        let uri = self.uri(&d.service)?;
        let mut req = Request::new(Full::new(d.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        // Six here plus the `Host` the client adds: room for all seven in one allocation.
        h.reserve(7);
        h.insert(CONTENT_TYPE, APPLICATION_JSON);
        h.insert(
            X_DEDUP_KEY,
            HeaderValue::from_bytes(&d.key.hex_bytes()).ok()?,
        );
        if let Some(auth) = &d.authorization {
            // Sensitive whatever path built it (webhook, spool, DLQ replay): client-side debug
            // output then shows `Sensitive` instead of the service token.
            let mut auth = auth.clone();
            auth.set_sensitive(true);
            h.insert(AUTHORIZATION, auth);
        }
        h.insert(USER_AGENT, UA);
        h.insert(ACCEPT, ANY);
        Some(req)
    }

    /// Sends `req` and drains a capped amount of the answer, all within the request timeout.
    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
        started: Instant,
    ) -> Result<Outcome, UpstreamClass> {
        let deadline = tokio::time::Instant::from_std(started) + self.timeout;
        let client = &self.clients[crate::runtime::worker_index() % self.clients.len()];
        let resp = match tokio::time::timeout_at(deadline, client.request(req)).await {
            Err(_) => return Err(UpstreamClass::Timeout),
            Ok(Err(e)) => return Err(error_class(&e)),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // Drain a little so the connection can be reused; never more than the cap, never past
        // the request deadline (a slow body still leaves the status to decide).
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
        Ok(classify(status.as_u16(), retry_after))
    }
}

/// Timeout, connect error or anything else, as reqwest told them apart: a connect that timed out
/// counts as a timeout.
/// The roots an upstream certificate may chain to: the bundled Mozilla roots, the system's roots
/// and `delivery.ca_file`.
fn trust_roots(ca_file: Option<&std::path::Path>) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            // An empty trust list would silently fall back to the default roots only.
            return Err(ClientError(format!(
                "{}: no PEM certificate found",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(roots)
}

fn error_class(e: &hyper_util::client::legacy::Error) -> UpstreamClass {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return UpstreamClass::Timeout;
        }
        source = err.source();
    }
    if e.is_connect() {
        UpstreamClass::Connect
    } else {
        UpstreamClass::Other
    }
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
