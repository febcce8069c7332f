//! Configuration: one struct, layered defaults → TOML file → `DEDUP_GATEWAY_*` environment → CLI flags.
//!
//! Every field is documented in `config/gateway.toml`, which is also the file the tests load, so the
//! example cannot drift from the code. Validation happens once, at start: a bad value stops the process
//! with exit code 2 and a message naming the key, because a gateway that starts with a half-understood
//! configuration is the one way to lose or duplicate events silently.
//!
//! Nested keys are reached from the environment with a double underscore:
//! `DEDUP_GATEWAY_DEDUP__TTL=1h` sets `dedup.ttl`; top-level keys need none (`DEDUP_GATEWAY_UPSTREAM`).
//!
//! Layout: this file holds [`Config`] and what reads it after start; `sections` the types of each
//! table, `defaults` the lowest layer, `load` the layering, `validate` the checks in order.

mod defaults;
mod load;
mod redis;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub use defaults::DEFAULT_FORWARD;
pub use load::{DedupOverrides, Overrides, PolicyOverrides};
pub use sections::{
    AdminConfig, AvailableOn, DedupConfig, DeliveryConfig, HttpConfig, LogFormat, Mode,
    OnStoreError, PendingPolicy, PolicyConfig, RedisConfig, ServiceConfig, SpoolConfig,
    StoreBackend,
};

/// Prefix of every environment variable the gateway reads.
pub const ENV_PREFIX: &str = "DEDUP_GATEWAY_";

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

impl Config {
    /// The per-service settings, or the defaults for a service not listed.
    pub fn service(&self, name: &str) -> &ServiceConfig {
        static DEFAULT: ServiceConfig = ServiceConfig {
            available_on: AvailableOn::Any,
            inbound_tokens: Vec::new(),
            reconcile: None,
        };
        self.services.get(name).unwrap_or(&DEFAULT)
    }

    /// The effective configuration as TOML with every secret replaced by `***`.
    pub fn masked_toml(&self) -> String {
        let mut c = self.clone();
        mask(&mut c.dedup.hash_secret);
        mask(&mut c.admin.token);
        c.spool.jetstream.mask();
        if let Ok(mut url) = reqwest::Url::parse(&c.dedup.redis.url)
            && url.password().is_some()
        {
            let _ = url.set_password(Some("***"));
            c.dedup.redis.url = url.to_string();
        }
        redis::mask_cluster_urls(&mut c.dedup.redis.cluster_urls);
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
