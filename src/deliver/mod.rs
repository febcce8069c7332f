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
pub mod held;

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use crate::{
    config::DeliveryConfig,
    metrics::{Metrics, UpstreamClass},
    pipeline::key::DedupKey,
};

/// Bytes of an upstream response body read before the rest is discarded.
pub const RESPONSE_CAP: usize = 64 * 1024;

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

/// The HTTP client towards OSCAR; cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: reqwest::Client,
    base: String,
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
        metrics: Metrics,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dedup-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientError(e.to_string()))?;
            if certs.is_empty() {
                // An empty trust list would silently fall back to the default roots only.
                return Err(ClientError(format!(
                    "{}: no PEM certificate found",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| ClientError(e.to_string()))?;
        Ok(Self {
            client,
            base: upstream.trim_end_matches('/').to_owned(),
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

    /// Sends one attempt and classifies the answer.
    pub async fn send(&self, d: &Delivery) -> Outcome {
        let started = Instant::now();
        let mut req = self
            .client
            .post(self.url(&d.service))
            .header(CONTENT_TYPE, "application/json")
            .header("x-dedup-key", d.key.to_hex())
            .body(d.body.clone());
        if let Some(auth) = &d.authorization {
            // Sensitive whatever path built it (webhook, spool, DLQ replay): client-side debug
            // output then shows `Sensitive` instead of the service token.
            let mut auth = auth.clone();
            auth.set_sensitive(true);
            req = req.header(AUTHORIZATION, auth);
        }
        let outcome = match req.send().await {
            Ok(mut resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                // Drain a little so the connection can be reused; never more than the cap.
                let mut read = 0usize;
                while read < RESPONSE_CAP {
                    match resp.chunk().await {
                        Ok(Some(c)) => read += c.len(),
                        _ => break,
                    }
                }
                classify(status.as_u16(), retry_after)
            }
            Err(e) => {
                let class = if e.is_timeout() {
                    UpstreamClass::Timeout
                } else if e.is_connect() {
                    UpstreamClass::Connect
                } else {
                    UpstreamClass::Other
                };
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
