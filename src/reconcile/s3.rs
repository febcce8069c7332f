//! A small S3 client: SigV4-signed requests (`rusty-s3`, Sans-IO) over `reqwest`, and the two
//! listings a pass needs, one page at a time.
//!
//! Why not an SDK: a pass needs two GETs (ListObjectVersions, ListObjectsV2) and tests need PUT,
//! DELETE and bucket setup. `rusty-s3` signs any request without pulling a second HTTP stack, and
//! `reqwest` (rustls) is already in the tree (cost measured in BENCHMARKS.md).
//!
//! A page is accepted whole or not at all: the body is read to its end under a size cap, parsed
//! completely ([`super::xml`]), and a page that says it is truncated without a marker to continue
//! from is an error. So a caller never acts on half a page. Requests are spaced by the configured
//! rate ([`S3Client::new`]); the spacing slot is taken under a short lock that is never held across
//! an `.await`.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use rusty_s3::{Bucket, Method, UrlStyle};

use super::xml::{self, Cursor, Page};

/// A listing page larger than this is refused (1000 entries are ≈ 500 KiB).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Lifetime of a signed URL; it is used at once.
const SIGNED_FOR_SECS: u64 = 300;

/// Why an S3 request failed; `kind` is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 unreachable: {0}")]
    Unreachable(String),
    #[error("S3 request timed out")]
    Timeout,
    #[error("S3 refused the credentials (HTTP {status}): {detail}")]
    Forbidden { status: u16, detail: String },
    #[error("S3 answered HTTP {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("S3 listing unreadable: {0}")]
    Garbled(String),
    #[error("invalid S3 endpoint: {0}")]
    Config(String),
}

impl S3Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            S3Error::Unreachable(_) => "unreachable",
            S3Error::Timeout => "timeout",
            S3Error::Forbidden { .. } => "forbidden",
            S3Error::Status { .. } => "status",
            S3Error::Garbled(_) => "garbled",
            S3Error::Config(_) => "config",
        }
    }
}

/// One bucket, its credentials and a request pacer.
pub struct S3Client {
    http: reqwest::Client,
    bucket: Bucket,
    access_key: String,
    secret_key: String,
    /// Minimum spacing between requests.
    period: Duration,
    next_slot: Mutex<Instant>,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("bucket", &self.bucket.name())
            .finish_non_exhaustive()
    }
}

impl S3Client {
    /// A client for `bucket` at `endpoint` (path-style), at most `rps` requests per second.
    pub fn new(
        endpoint: &str,
        region: &str,
        bucket: &str,
        (access_key, secret_key): (String, String),
        rps: f64,
        timeout: Duration,
    ) -> Result<Self, S3Error> {
        let url = reqwest::Url::parse(endpoint).map_err(|e| S3Error::Config(e.to_string()))?;
        let bucket = Bucket::new(url, UrlStyle::Path, bucket.to_string(), region.to_string())
            .map_err(|e| S3Error::Config(e.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| S3Error::Config(e.to_string()))?;
        let period = Duration::from_secs_f64(1.0 / rps.max(1e-3));
        Ok(Self {
            http,
            bucket,
            access_key,
            secret_key,
            period,
            next_slot: Mutex::new(Instant::now()),
        })
    }

    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// Waits for this request's slot under the rate limit.
    async fn pace(&self) {
        let at = {
            let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.period;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }

    fn sign(&self, method: Method, url: reqwest::Url, query: &[(&str, &str)]) -> reqwest::Url {
        rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            method,
            url,
            &self.access_key,
            &self.secret_key,
            None,
            self.bucket.region(),
            SIGNED_FOR_SECS,
            query.iter().copied(),
            std::iter::empty(),
        )
    }

    /// Sends one signed request; returns the body of a 2xx answer, read to its end under a cap.
    async fn send(
        &self,
        method: Method,
        url: reqwest::Url,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), S3Error> {
        self.pace().await;
        let signed = self.sign(method, url, query);
        let m = reqwest::Method::from_bytes(method.to_str().as_bytes())
            .map_err(|e| S3Error::Config(e.to_string()))?;
        let mut req = self.http.request(m, signed);
        // A PUT always carries a length (S3 answers 411 otherwise), even when empty.
        if let Some(b) = body.or_else(|| (method == Method::Put).then(Vec::new)) {
            req = req.header(reqwest::header::CONTENT_LENGTH, b.len()).body(b);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = read_capped(resp).await?;
        match status {
            200..=299 => Ok((headers, bytes)),
            401 | 403 => Err(S3Error::Forbidden {
                status,
                detail: error_code(&bytes),
            }),
            _ => Err(S3Error::Status {
                status,
                detail: error_code(&bytes),
            }),
        }
    }

    /// One page of ListObjectVersions (`cursor`: where the previous page ended).
    pub async fn list_versions(
        &self,
        prefix: &str,
        max_keys: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page, S3Error> {
        let max = max_keys.to_string();
        let mut q = vec![
            ("versions", ""),
            ("encoding-type", "url"),
            ("max-keys", max.as_str()),
        ];
        if !prefix.is_empty() {
            q.push(("prefix", prefix));
        }
        if let Some(Cursor::Versions { key, version_id }) = cursor {
            q.push(("key-marker", key));
            if !version_id.is_empty() {
                q.push(("version-id-marker", version_id));
            }
        }
        let (_, body) = self
            .send(Method::Get, self.bucket.base_url().clone(), &q, None)
            .await?;
        let text = std::str::from_utf8(&body).map_err(|e| S3Error::Garbled(e.to_string()))?;
        xml::parse_versions(text).map_err(S3Error::Garbled)
    }

    /// One page of ListObjectsV2 (unversioned buckets).
    pub async fn list_objects(
        &self,
        prefix: &str,
        max_keys: u32,
        cursor: Option<&Cursor>,
    ) -> Result<Page, S3Error> {
        let max = max_keys.to_string();
        let mut q = vec![
            ("list-type", "2"),
            ("encoding-type", "url"),
            ("max-keys", max.as_str()),
        ];
        if !prefix.is_empty() {
            q.push(("prefix", prefix));
        }
        if let Some(Cursor::Objects { token }) = cursor {
            q.push(("continuation-token", token));
        }
        let (_, body) = self
            .send(Method::Get, self.bucket.base_url().clone(), &q, None)
            .await?;
        let text = std::str::from_utf8(&body).map_err(|e| S3Error::Garbled(e.to_string()))?;
        xml::parse_objects(text).map_err(S3Error::Garbled)
    }

    /// The `x-amz-replication-status` of one version (`None`: the server reports none).
    pub async fn replication_status(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<String>, S3Error> {
        let q: Vec<(&str, &str)> = version_id.map(|v| ("versionId", v)).into_iter().collect();
        let (headers, _) = self
            .send(Method::Head, self.bucket.object_url(key), &q, None)
            .await?;
        Ok(headers
            .get("x-amz-replication-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// Uploads an object; returns its `x-amz-version-id` (absent on an unversioned bucket).
    /// For tests, benchmarks and tools: the gateway itself only lists.
    pub async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<Option<String>, S3Error> {
        let (h, _) = self
            .send(Method::Put, self.bucket.object_url(key), &[], Some(body))
            .await?;
        Ok(version_header(&h))
    }

    /// Deletes an object (a delete marker on a versioned bucket); returns the marker's version.
    pub async fn delete_object(&self, key: &str) -> Result<Option<String>, S3Error> {
        let (h, _) = self
            .send(Method::Delete, self.bucket.object_url(key), &[], None)
            .await?;
        Ok(version_header(&h))
    }

    /// Creates the bucket, with versioning enabled when `versioned` (tests and benchmarks).
    pub async fn create_bucket(&self, versioned: bool) -> Result<(), S3Error> {
        let base = self.bucket.base_url().clone();
        self.send(Method::Put, base.clone(), &[], None).await?;
        if versioned {
            let body = br#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#;
            self.send(
                Method::Put,
                base,
                &[("versioning", "")],
                Some(body.to_vec()),
            )
            .await?;
        }
        Ok(())
    }
}

fn version_header(h: &reqwest::header::HeaderMap) -> Option<String> {
    h.get("x-amz-version-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && *v != "null")
        .map(str::to_string)
}

/// The URL is dropped from the error: it is presigned, and its signature is a credential.
fn transport(e: reqwest::Error) -> S3Error {
    if e.is_timeout() {
        S3Error::Timeout
    } else {
        S3Error::Unreachable(error_chain(&e.without_url()))
    }
}

/// An error with its causes ("connection refused" sits below reqwest's own message).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, S3Error> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if out.len() + c.len() > MAX_BODY {
                    return Err(S3Error::Garbled(format!(
                        "answer larger than {MAX_BODY} bytes"
                    )));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            // A body cut off half way: the page is incomplete and must not be used.
            Err(e) if e.is_timeout() => return Err(S3Error::Timeout),
            Err(e) => {
                let e = error_chain(&e.without_url());
                return Err(S3Error::Garbled(format!("answer cut off: {e}")));
            }
        }
    }
}

/// The `<Code>` of an S3 error document, for the log line (bounded, no request ids).
fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.chars().take(64).collect())
        .unwrap_or_else(|| "no S3 error code".into())
}
