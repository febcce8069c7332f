//! `[services.NAME.reconcile]`: where the bucket is, how to reach it, and the window.
//!
//! Secrets never sit in the file: the S3 keys and the OSCAR token are named by an environment
//! variable (`*_env`) or a file (`*_file`) and read at start ([`Secrets::load`]), so `check-config`
//! has nothing to mask and a log line can never carry them. Validation ([`ReconcileConfig::validate`])
//! refuses a window that cannot work: a version must spend at least one `interval` inside
//! `settle < age < dedup.ttl - margin`, or it could pass through unseen.
//!
//! Just over 400 lines on purpose: one struct per TOML table with its `///` field docs and the
//! checks that name each key; splitting the checks from the fields they check would scatter both.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Which object versions a pass considers (contract §6 classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReconcileClass {
    /// Object versions (`s3:ObjectCreated:Put` bodies).
    Available,
    /// Delete markers (`s3:ObjectRemoved:DeleteMarkerCreated` bodies); versioned buckets only.
    Removed,
}

/// How to reach one S3 bucket; shared by the replica bucket and the optional source bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Endpoint {
    /// `http(s)://host:port` of the S3 API (path-style requests).
    pub endpoint: String,
    /// Signing region (MinIO: its site region, `us-east-1` when none is set).
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    /// Environment variable holding the access key (or `access_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_file: Option<PathBuf>,
    /// Environment variable holding the secret key (or `secret_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
}

/// Per-service reconciliation; absent: the service is not reconciled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// `http(s)://host:port` of the S3 API of the bucket the service reads (path-style).
    pub endpoint: String,
    /// Signing region (MinIO: its site region, `us-east-1` when none is set).
    #[serde(default = "default_region")]
    pub region: String,
    /// The bucket the service reads (where its webhook events come from).
    pub bucket: String,
    /// Environment variable holding the access key (or `access_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_file: Option<PathBuf>,
    /// Environment variable holding the secret key (or `secret_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// Object-name prefix, the same filter as the MinIO event rule.
    #[serde(default)]
    pub prefix: String,
    /// Object-name suffix, the same filter as the MinIO event rule.
    #[serde(default)]
    pub suffix: String,
    /// `true`: ListObjectVersions (identity by versionId). `false`: ListObjectsV2, the ETag as
    /// the version (contract §6 for an event without versionId or sequencer).
    #[serde(default = "yes")]
    pub versioned: bool,
    /// Environment variable holding the OSCAR service token MinIO sends (or `token_file`).
    /// One word is sent as `Bearer <token>`, two words verbatim, as MinIO does with `auth_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Time between background passes.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// A version younger than this is left to the event path.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// A version older than `dedup.ttl - margin` is never reconciled (its identity may expire
    /// before the pass claims it).
    #[serde(default = "default_margin", with = "humantime_serde")]
    pub margin: Duration,
    /// `["available"]` or `["available", "removed"]`.
    #[serde(default = "default_classes")]
    pub classes: Vec<ReconcileClass>,
    /// S3 requests per second, at most.
    #[serde(default = "default_rps")]
    pub max_requests_per_second: f64,
    /// Entries asked for per listing page (S3 caps it at 1000).
    #[serde(default = "default_page")]
    pub page_size: u32,
    /// Timeout of one S3 request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Attempts per listing page before the pass gives up (it resumes at the next interval).
    #[serde(default = "default_attempts")]
    pub page_attempts: u32,
    /// How long a replica holds the listing lease; others skip meanwhile.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// Versions delivered at once during a pass.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Optional replication health: the source bucket (cluster A) is listed too, and versions
    /// that failed replication or are missing here past `settle` are reported, never triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<S3Endpoint>,
}

fn yes() -> bool {
    true
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_settle() -> Duration {
    Duration::from_secs(300)
}
fn default_margin() -> Duration {
    Duration::from_secs(3600)
}
fn default_classes() -> Vec<ReconcileClass> {
    vec![ReconcileClass::Available]
}
fn default_rps() -> f64 {
    20.0
}
fn default_page() -> u32 {
    1000
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_attempts() -> u32 {
    3
}
fn default_lease() -> Duration {
    Duration::from_secs(1800)
}
fn default_concurrency() -> usize {
    16
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl S3Endpoint {
    fn validate(&self, key: &'static str) -> Result<(), ConfigError> {
        let url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| invalid(key, format!("endpoint is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(key, "endpoint must be an http:// or https:// URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                key,
                "endpoint must not carry credentials: use access_key_env/_file and secret_key_env/_file",
            ));
        }
        if self.bucket.is_empty() {
            return Err(invalid(key, "bucket must be set"));
        }
        if self.region.is_empty() {
            return Err(invalid(key, "region must not be empty"));
        }
        if self.access_key_env.is_some() == self.access_key_file.is_some() {
            return Err(invalid(
                key,
                "exactly one of access_key_env and access_key_file must be set",
            ));
        }
        if self.secret_key_env.is_some() == self.secret_key_file.is_some() {
            return Err(invalid(
                key,
                "exactly one of secret_key_env and secret_key_file must be set",
            ));
        }
        Ok(())
    }
}

impl ReconcileConfig {
    /// The bucket the service reads, as an endpoint.
    pub fn s3(&self) -> S3Endpoint {
        S3Endpoint {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            access_key_env: self.access_key_env.clone(),
            access_key_file: self.access_key_file.clone(),
            secret_key_env: self.secret_key_env.clone(),
            secret_key_file: self.secret_key_file.clone(),
        }
    }

    /// Checks one service's section in the whole configuration; the error names the key.
    pub fn check(&self, cfg: &crate::config::Config) -> Result<(), ConfigError> {
        if cfg.mode == crate::config::Mode::Shadow {
            return Err(invalid(
                "services.reconcile",
                "shadow mode forwards every event unchecked: reconciling there would trigger versions again",
            ));
        }
        self.validate(cfg.dedup.ttl)
    }

    /// Checks one service's section against the dedup TTL; the error names the key.
    pub fn validate(&self, dedup_ttl: Duration) -> Result<(), ConfigError> {
        self.s3().validate("services.reconcile.endpoint")?;
        if let Some(src) = &self.source {
            src.validate("services.reconcile.source")?;
        }
        if self.token_env.is_some() == self.token_file.is_some() {
            return Err(invalid(
                "services.reconcile.token_env",
                "exactly one of token_env and token_file must be set (the Authorization MinIO sends is part of the identity)",
            ));
        }
        if self.interval.is_zero() {
            return Err(invalid("services.reconcile.interval", "must be above zero"));
        }
        if self.margin.is_zero() {
            return Err(invalid("services.reconcile.margin", "must be above zero"));
        }
        let upper = dedup_ttl
            .checked_sub(self.margin)
            .filter(|u| !u.is_zero())
            .ok_or_else(|| {
                invalid(
                    "services.reconcile.margin",
                    "must be below dedup.ttl (the window ends at dedup.ttl - margin)",
                )
            })?;
        let width = upper.checked_sub(self.settle).filter(|w| !w.is_zero());
        match width {
            None => Err(invalid(
                "services.reconcile.settle",
                "the window settle < age < dedup.ttl - margin is empty",
            )),
            Some(w) if w <= self.interval => Err(invalid(
                "services.reconcile.interval",
                "must be shorter than the window (dedup.ttl - margin - settle), or a version can age out unseen",
            )),
            Some(_) => self.validate_limits(),
        }
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        if self.classes.is_empty() {
            return Err(invalid("services.reconcile.classes", "must not be empty"));
        }
        if self.classes.contains(&ReconcileClass::Removed) && !self.versioned {
            return Err(invalid(
                "services.reconcile.classes",
                "`removed` needs a versioned bucket (delete markers)",
            ));
        }
        if !(self.max_requests_per_second.is_finite() && self.max_requests_per_second > 0.0) {
            return Err(invalid(
                "services.reconcile.max_requests_per_second",
                "must be above zero",
            ));
        }
        if !(1..=1000).contains(&self.page_size) {
            return Err(invalid(
                "services.reconcile.page_size",
                "must be between 1 and 1000",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid(
                "services.reconcile.request_timeout",
                "must be above zero",
            ));
        }
        if self.page_attempts == 0 {
            return Err(invalid(
                "services.reconcile.page_attempts",
                "must be at least 1",
            ));
        }
        if self.lease.is_zero() {
            return Err(invalid("services.reconcile.lease", "must be above zero"));
        }
        if self.concurrency == 0 {
            return Err(invalid(
                "services.reconcile.concurrency",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Credentials and the forwarding Authorization, read from the environment or files at start.
#[derive(Clone)]
pub struct Secrets {
    pub access_key: String,
    pub secret_key: String,
    /// The `Authorization` value MinIO sends for this service.
    pub authorization: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

/// A secret that could not be read; names the key, never the value.
#[derive(Debug, thiserror::Error)]
#[error("invalid `{key}`: {reason}")]
pub struct SecretError {
    pub key: &'static str,
    pub reason: String,
}

fn read_secret(
    key: &'static str,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<String, SecretError> {
    let err = |reason: String| SecretError { key, reason };
    let value = match (env, file) {
        (Some(var), _) => {
            std::env::var(var).map_err(|_| err(format!("environment variable {var} is not set")))?
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?,
        (None, None) => return Err(err("not configured".into())),
    };
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(err("is empty".into()));
    }
    Ok(value)
}

/// The `Authorization` MinIO derives from `auth_token`: one word → `Bearer <word>`, two words
/// verbatim (minio-webhook.md §4).
pub fn authorization_from_token(token: &str) -> String {
    let words: Vec<&str> = token.split_whitespace().collect();
    match words.as_slice() {
        [one] => format!("Bearer {one}"),
        _ => words.join(" "),
    }
}

impl S3Endpoint {
    /// The access and secret key of this endpoint.
    pub fn keys(&self, key: &'static str) -> Result<(String, String), SecretError> {
        let access = read_secret(
            key,
            self.access_key_env.as_deref(),
            self.access_key_file.as_deref(),
        )?;
        let secret = read_secret(
            key,
            self.secret_key_env.as_deref(),
            self.secret_key_file.as_deref(),
        )?;
        Ok((access, secret))
    }
}

impl Secrets {
    pub fn load(cfg: &ReconcileConfig) -> Result<Self, SecretError> {
        let (access_key, secret_key) = cfg.s3().keys("services.reconcile.access_key_env")?;
        let token = read_secret(
            "services.reconcile.token_env",
            cfg.token_env.as_deref(),
            cfg.token_file.as_deref(),
        )?;
        Ok(Self {
            access_key,
            secret_key,
            authorization: authorization_from_token(&token),
        })
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
