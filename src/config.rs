//! Configuration: one struct, layered defaults → TOML file → `DEDUP_GATEWAY_*` environment → CLI flags.
//!
//! Every field is documented in `config/gateway.toml`, which is also the file the tests load, so the
//! example cannot drift from the code. Validation happens once, at start: a bad value stops the process
//! with exit code 2 and a message naming the key, because a gateway that starts with a half-understood
//! configuration is the one way to lose or duplicate events silently.
//!
//! Nested keys are reached from the environment with a double underscore:
//! `DEDUP_GATEWAY_DEDUP__TTL=1h` sets `dedup.ttl`; top-level keys need none (`DEDUP_GATEWAY_UPSTREAM`).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

use crate::pipeline::policy::Pattern;

/// Prefix of every environment variable the gateway reads.
pub const ENV_PREFIX: &str = "DEDUP_GATEWAY_";

/// How accepted events reach OSCAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Wait for OSCAR before answering MinIO; a failure becomes 503 so MinIO retries.
    Sync,
    /// Fsync the event to the local spool, answer 202, deliver in the background.
    Spool,
    /// Forward every POST as received, like a plain proxy (the answer follows OSCAR's), while
    /// computing and counting the verdicts sync mode would give; nothing is ever dropped.
    Shadow,
}

/// What a record marked PENDING gets (contract §6a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PendingPolicy {
    Hold,
    Drop,
    Forward,
}

/// Which `available` events may trigger a service (contract §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AvailableOn {
    #[default]
    Any,
    Created,
    Replicated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnStoreError {
    FailClosed,
    FailOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The longest duration any setting takes.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the webhook listener binds.
    pub listen: SocketAddr,
    /// OSCAR base URL; events go to `{upstream}/job/{service}`.
    pub upstream: String,
    /// `spool` (durable, default), `sync` or `shadow` (forward everything, count would-be verdicts).
    pub mode: Mode,
    /// Directory for the spool and the dedup hash secret.
    pub data_dir: PathBuf,
    /// PEM certificate chain of the HTTPS listener; with `tls_key`, the listener serves HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the HTTPS listener (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    pub http: HttpConfig,
    pub delivery: DeliveryConfig,
    pub dedup: DedupConfig,
    pub policy: PolicyConfig,
    pub spool: SpoolConfig,
    pub admin: AdminConfig,
    /// Per-service settings, keyed by the `{service}` path segment.
    pub services: BTreeMap<String, ServiceConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body in bytes (declared or streamed); larger gets 413.
    pub body_limit: usize,
    /// Time a client has to send its request headers.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time a client has to send its whole body once the headers are in.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Open connections beyond this are shed at accept time.
    pub max_connections: usize,
    /// Webhook POSTs handled at once; beyond it a POST is answered 503 + `Retry-After` at once,
    /// while the health and metrics routes keep answering.
    pub max_inflight: usize,
    /// Records accepted in one body; more gets 413 before any record is judged.
    pub max_records: usize,
    /// How long graceful shutdown waits for in-flight requests.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Threads serving connections, each with its own single-threaded runtime and upstream
    /// connection pool; 0 = one per core ([`crate::runtime`]).
    pub workers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// TCP connect timeout towards OSCAR.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whole-request timeout towards OSCAR (headers and the capped body read).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Extra PEM CA bundle trusted for an `https://` upstream, besides the system and Mozilla roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Idle keep-alive connections kept per upstream host.
    pub pool_max_idle: usize,
    /// Concurrent deliveries per upstream (spool workers, held-event deliveries).
    pub concurrency: usize,
    /// First retry delay; doubles each attempt, with full jitter.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Ceiling of one retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Attempts before an event goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Age after which a failing event goes to the dead-letter queue.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// `memory` or `redis`.
    pub backend: StoreBackend,
    /// How long a delivered identity is remembered.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Memory backend bound; expired entries are evicted first, then the oldest delivered ones.
    pub max_entries: usize,
    /// Interval of the memory backend's expiry sweep.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long an in-flight reservation (sync mode) is honoured if its owner never finishes.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// `fail-closed` (503, MinIO retries) or `fail-open` (forward unchecked, counted).
    pub on_store_error: OnStoreError,
    /// Secret keying the identity digest. Empty: read or create `{data_dir}/dedup-secret`.
    /// Replicas sharing a Redis store must share this secret.
    pub hash_secret: String,
    pub redis: RedisConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://`).
    pub url: String,
    /// Prefix of every key the gateway writes.
    pub key_prefix: String,
    /// Per-command timeout.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Redis Cluster seed nodes; non-empty selects cluster mode (`url` is then unused).
    pub cluster_urls: Vec<String>,
    /// Cluster mode: read every commit back from a replica and re-apply it until one has it.
    pub confirm_commits: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Event names that are forwarded; `*` matches any run of characters.
    pub forward: Vec<String>,
    /// `hold` (default), `drop` or `forward` for records marked PENDING.
    pub pending: PendingPolicy,
    /// How long a held record waits for a clean copy before it is forwarded itself.
    #[serde(with = "humantime_serde")]
    pub pending_grace: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Spool refuses new events (503) beyond this many undelivered bytes.
    pub max_bytes: u64,
    /// Spool refuses new events (503) beyond this many undelivered events.
    pub max_entries: u64,
    /// Longest a write waits for companions to share its fsync.
    #[serde(with = "humantime_serde")]
    pub group_commit_delay: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for `/admin/*`; empty disables the admin routes.
    pub token: String,
    /// Decisions kept for `/admin/verdicts`.
    pub verdict_history: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `any`, `created` or `replicated`.
    #[serde(default)]
    pub available_on: AvailableOn,
    /// If non-empty, only requests whose `Authorization` is one of these are accepted (else 401).
    #[serde(default)]
    pub inbound_tokens: Vec<String>,
}

/// The forwarding patterns used when none are configured: creations, removals and completed replications.
pub const DEFAULT_FORWARD: &[&str] = &[
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:ObjectRemoved:DeleteAllVersions",
    "s3:Replication:OperationCompletedReplication",
    "s3:Replication:OperationReplicatedAfterThreshold",
];

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            upstream: "http://oscar.oscar:8080".into(),
            mode: Mode::Spool,
            data_dir: PathBuf::from("./data"),
            tls_cert: None,
            tls_key: None,
            log_format: LogFormat::Text,
            http: HttpConfig {
                body_limit: 1024 * 1024,
                header_timeout: Duration::from_secs(10),
                body_timeout: Duration::from_secs(30),
                max_connections: 4096,
                max_inflight: 1024,
                max_records: 1000,
                shutdown_grace: Duration::from_secs(30),
                workers: 0,
            },
            delivery: DeliveryConfig {
                connect_timeout: Duration::from_secs(5),
                request_timeout: Duration::from_secs(30),
                ca_file: None,
                pool_max_idle: 64,
                concurrency: 32,
                retry_initial: Duration::from_millis(500),
                retry_max: Duration::from_secs(300),
                max_attempts: 20,
                max_age: Duration::from_secs(24 * 3600),
            },
            dedup: DedupConfig {
                backend: StoreBackend::Memory,
                ttl: Duration::from_secs(24 * 3600),
                max_entries: 1_000_000,
                sweep_interval: Duration::from_secs(60),
                lease: Duration::from_secs(120),
                on_store_error: OnStoreError::FailClosed,
                hash_secret: String::new(),
                redis: RedisConfig {
                    url: "redis://127.0.0.1:6379/0".into(),
                    key_prefix: "dedup-gateway:".into(),
                    command_timeout: Duration::from_millis(500),
                    connect_timeout: Duration::from_secs(2),
                    cluster_urls: Vec::new(),
                    confirm_commits: true,
                },
            },
            policy: PolicyConfig {
                forward: DEFAULT_FORWARD.iter().map(|s| s.to_string()).collect(),
                pending: PendingPolicy::Hold,
                pending_grace: Duration::from_secs(30),
            },
            spool: SpoolConfig {
                max_bytes: 1024 * 1024 * 1024,
                max_entries: 1_000_000,
                group_commit_delay: Duration::from_millis(0),
            },
            admin: AdminConfig {
                token: String::new(),
                verdict_history: 10_000,
            },
            services: BTreeMap::new(),
        }
    }
}

/// A configuration that could not be loaded or is not valid; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    #[error("invalid `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Settings given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyOverrides>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct DedupOverrides {
    pub ttl: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PolicyOverrides {
    pub pending_grace: String,
}

impl Config {
    /// Loads defaults, then `file`, then the environment, then `overrides`, and validates.
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        Self::load_with_env(file, overrides, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Like [`Config::load`] with an explicit environment provider, so tests need not mutate
    /// the process environment.
    pub fn load_with_env(
        file: Option<&std::path::Path>,
        overrides: &Overrides,
        env: Env,
    ) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        let fig = fig
            .merge(env.map(|k| k.as_str().to_ascii_lowercase().into()))
            .merge(Serialized::defaults(overrides));
        let cfg: Config = fig.extract().map_err(|e| {
            let mut msg = String::new();
            for err in e {
                if !msg.is_empty() {
                    msg.push_str("; ");
                }
                let path = err.path.join(".");
                if path.is_empty() {
                    msg.push_str(&err.kind.to_string());
                } else {
                    msg.push_str(&format!("invalid `{path}`: {}", err.kind));
                }
            }
            ConfigError::Load(msg)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string over the defaults (no environment); for tests and examples.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value whose type alone does not make it valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let up = reqwest::Url::parse(&self.upstream)
            .map_err(|e| invalid("upstream", format!("not a URL: {e}")))?;
        if !matches!(up.scheme(), "http" | "https") || up.host_str().is_none() {
            return Err(invalid("upstream", "must be an http:// or https:// URL"));
        }
        if up.query().is_some() || up.fragment().is_some() {
            return Err(invalid("upstream", "must not carry a query or fragment"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let key = if self.tls_cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            };
            return Err(invalid(key, "tls_cert and tls_key must be set together"));
        }
        if self.http.body_limit < 1024 {
            return Err(invalid("http.body_limit", "must be at least 1024 bytes"));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        if self.http.max_inflight == 0 {
            return Err(invalid("http.max_inflight", "must be at least 1"));
        }
        if self.http.max_records == 0 {
            return Err(invalid("http.max_records", "must be at least 1"));
        }
        // Sums of these (grace + lease, now + timeout, the retry horizon) must not overflow.
        let (h, d, r) = (&self.http, &self.delivery, &self.dedup.redis);
        for (key, value) in [
            ("http.header_timeout", h.header_timeout),
            ("http.body_timeout", h.body_timeout),
            ("http.shutdown_grace", h.shutdown_grace),
            ("delivery.connect_timeout", d.connect_timeout),
            ("delivery.request_timeout", d.request_timeout),
            ("delivery.retry_initial", d.retry_initial),
            ("delivery.retry_max", d.retry_max),
            ("delivery.max_age", d.max_age),
            ("dedup.ttl", self.dedup.ttl),
            ("dedup.sweep_interval", self.dedup.sweep_interval),
            ("dedup.lease", self.dedup.lease),
            ("dedup.redis.command_timeout", r.command_timeout),
            ("dedup.redis.connect_timeout", r.connect_timeout),
            ("policy.pending_grace", self.policy.pending_grace),
            ("spool.group_commit_delay", self.spool.group_commit_delay),
        ] {
            if value > MAX_DURATION {
                return Err(invalid(key, "must be at most 10 years"));
            }
        }
        if self.http.header_timeout.is_zero() || self.http.body_timeout.is_zero() {
            return Err(invalid(
                "http.header_timeout",
                "timeouts must be above zero",
            ));
        }
        let d = &self.delivery;
        if d.connect_timeout.is_zero() || d.request_timeout.is_zero() {
            return Err(invalid(
                "delivery.request_timeout",
                "timeouts must be above zero",
            ));
        }
        if d.concurrency == 0 {
            return Err(invalid("delivery.concurrency", "must be at least 1"));
        }
        if d.retry_initial.is_zero() || d.retry_max < d.retry_initial {
            return Err(invalid(
                "delivery.retry_max",
                "retry_initial must be above zero and not above retry_max",
            ));
        }
        if d.max_attempts == 0 {
            return Err(invalid("delivery.max_attempts", "must be at least 1"));
        }
        if self.dedup.ttl.is_zero() {
            return Err(invalid("dedup.ttl", "must be above zero"));
        }
        if self.dedup.max_entries < 16 {
            return Err(invalid("dedup.max_entries", "must be at least 16"));
        }
        if self.dedup.sweep_interval.is_zero() {
            return Err(invalid("dedup.sweep_interval", "must be above zero"));
        }
        if self.dedup.lease <= d.request_timeout {
            return Err(invalid(
                "dedup.lease",
                "must be longer than delivery.request_timeout, or a slow delivery loses its reservation",
            ));
        }
        if !self.dedup.hash_secret.is_empty() && self.dedup.hash_secret.len() < 16 {
            return Err(invalid(
                "dedup.hash_secret",
                "must be at least 16 characters",
            ));
        }
        if self.dedup.backend == StoreBackend::Redis {
            crate::store::redis::validate_cluster(&self.dedup.redis)
                .map_err(|(k, r)| invalid(k, r))?;
            let url = reqwest::Url::parse(&self.dedup.redis.url)
                .map_err(|e| invalid("dedup.redis.url", e.to_string()))?;
            if !matches!(url.scheme(), "redis" | "rediss" | "valkey" | "valkeys") {
                return Err(invalid("dedup.redis.url", "must be redis:// or rediss://"));
            }
            if self.dedup.hash_secret.is_empty() {
                return Err(invalid(
                    "dedup.hash_secret",
                    "must be set (and equal on every replica) with the redis backend",
                ));
            }
        }
        if self.policy.forward.is_empty() {
            return Err(invalid(
                "policy.forward",
                "must list at least one event pattern",
            ));
        }
        for p in &self.policy.forward {
            Pattern::new(p).map_err(|reason| invalid("policy.forward", reason))?;
        }
        if self.policy.pending_grace.is_zero() && self.policy.pending == PendingPolicy::Hold {
            return Err(invalid(
                "policy.pending_grace",
                "must be above zero with pending = hold",
            ));
        }
        if self.spool.max_bytes == 0 || self.spool.max_entries == 0 {
            return Err(invalid(
                "spool.max_entries",
                "spool limits must be above zero",
            ));
        }
        if !self.admin.token.is_empty() && self.admin.token.len() < 16 {
            return Err(invalid("admin.token", "must be at least 16 characters"));
        }
        for (name, svc) in &self.services {
            if !valid_service_name(name) {
                return Err(invalid(
                    "services",
                    format!("`{name}` is not a valid service name"),
                ));
            }
            if svc.inbound_tokens.iter().any(|t| t.trim().is_empty()) {
                return Err(invalid(
                    "services.inbound_tokens",
                    "tokens must not be empty",
                ));
            }
        }
        Ok(())
    }

    /// The per-service settings, or the defaults for a service not listed.
    pub fn service(&self, name: &str) -> &ServiceConfig {
        static DEFAULT: ServiceConfig = ServiceConfig {
            available_on: AvailableOn::Any,
            inbound_tokens: Vec::new(),
        };
        self.services.get(name).unwrap_or(&DEFAULT)
    }

    /// The effective configuration as TOML with every secret replaced by `***`.
    pub fn masked_toml(&self) -> String {
        let mut c = self.clone();
        mask(&mut c.dedup.hash_secret);
        mask(&mut c.admin.token);
        if let Ok(mut url) = reqwest::Url::parse(&c.dedup.redis.url)
            && url.password().is_some()
        {
            let _ = url.set_password(Some("***"));
            c.dedup.redis.url = url.to_string();
        }
        crate::store::redis::mask_cluster_urls(&mut c.dedup.redis.cluster_urls);
        for svc in c.services.values_mut() {
            svc.inbound_tokens.iter_mut().for_each(mask);
        }
        toml_string(&c)
    }
}

fn mask(s: &mut String) {
    if !s.is_empty() {
        *s = "***".into();
    }
}

fn toml_string(c: &Config) -> String {
    toml::to_string_pretty(c).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
}

/// Service names become a URL path segment towards OSCAR: keep them to DNS-label characters.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != "."
        && name != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_and_matches_defaults_where_stated() {
        let text = include_str!("../config/gateway.toml");
        let cfg = Config::from_toml(text).expect("config/gateway.toml must be valid");
        assert_eq!(cfg.dedup.ttl, Duration::from_secs(24 * 3600));
        assert_eq!(cfg.dedup.max_entries, 1_000_000);
        assert_eq!(cfg.http.body_limit, 1024 * 1024);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure signature, test only
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(
            &file,
            "upstream = \"http://file:1\"\n[dedup]\nttl = \"2h\"\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("DEDUP_GATEWAY_DEDUP__TTL", "3h");
            jail.set_env("DEDUP_GATEWAY_MODE", "spool");
            let cfg = Config::load(Some(&file), &Overrides::default()).unwrap();
            assert_eq!(cfg.upstream, "http://file:1");
            assert_eq!(cfg.dedup.ttl, Duration::from_secs(3 * 3600));
            assert_eq!(cfg.mode, Mode::Spool);
            let o = Overrides {
                dedup: Some(DedupOverrides { ttl: "4h".into() }),
                upstream: Some("http://flag:2".into()),
                ..Default::default()
            };
            let cfg = Config::load(Some(&file), &o).unwrap();
            assert_eq!(cfg.dedup.ttl, Duration::from_secs(4 * 3600));
            assert_eq!(cfg.upstream, "http://flag:2");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::from_toml("[dedup]\nttl = \"0s\"").unwrap_err();
        assert!(err.to_string().contains("dedup.ttl"), "{err}");
        let err = Config::from_toml("upstream = \"ftp://x\"").unwrap_err();
        assert!(err.to_string().contains("upstream"), "{err}");
        let err = Config::from_toml("[policy]\npending = \"maybe\"").unwrap_err();
        assert!(err.to_string().contains("pending"), "{err}");
        let err = Config::from_toml("nonsense = 1").unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
        // Huge durations would overflow `grace + lease` or `now + timeout` later (a panic).
        for (section, key) in [
            ("policy", "pending_grace"),
            ("dedup", "lease"),
            ("delivery", "max_age"),
        ] {
            let err =
                Config::from_toml(&format!("[{section}]\n{key} = \"100000000y\"")).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
            assert!(err.to_string().contains("10 years"), "{err}");
        }
    }

    #[test]
    fn masked_output_hides_secrets() {
        let cfg = Config::from_toml(
            "[admin]\ntoken = \"admin-secret-123456\"\n[services.s]\ninbound_tokens = [\"Bearer tok-very-secret\"]",
        )
        .unwrap();
        let out = cfg.masked_toml();
        assert!(!out.contains("admin-secret-123456"));
        assert!(!out.contains("tok-very-secret"));
        assert!(out.contains("***"));
        // The masked output is itself valid configuration (modulo the masks).
        assert!(Config::from_toml(&out.replace("\"***\"", "\"xxxxxxxxxxxxxxxxxxxx\"")).is_ok());
    }
}
