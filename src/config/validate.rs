//! Validation: every value whose type alone does not make it valid, checked once at start.
//!
//! The steps run in a fixed order and the first failure is the one reported, so an operator fixes
//! one named key at a time; each step is one section (or one cross-section rule) of the file.

use super::{
    Config, ConfigError, MAX_DURATION, PendingPolicy, StoreBackend, invalid, valid_service_name,
};
use crate::pipeline::pattern::Pattern;

impl Config {
    /// Checks every value whose type alone does not make it valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_upstream()?;
        self.check_tls()?;
        self.check_http_limits()?;
        self.check_duration_bounds()?;
        self.check_timeouts()?;
        self.check_delivery()?;
        self.check_dedup()?;
        self.check_redis()?;
        self.check_policy()?;
        self.check_spool_and_admin()?;
        self.check_services()
    }

    fn check_upstream(&self) -> Result<(), ConfigError> {
        let up = reqwest::Url::parse(&self.upstream)
            .map_err(|e| invalid("upstream", format!("not a URL: {e}")))?;
        if !matches!(up.scheme(), "http" | "https") || up.host_str().is_none() {
            return Err(invalid("upstream", "must be an http:// or https:// URL"));
        }
        if up.query().is_some() || up.fragment().is_some() {
            return Err(invalid("upstream", "must not carry a query or fragment"));
        }
        Ok(())
    }

    fn check_tls(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            let key = if self.tls_cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            };
            return Err(invalid(key, "tls_cert and tls_key must be set together"));
        }
        Ok(())
    }

    fn check_http_limits(&self) -> Result<(), ConfigError> {
        if self.http.body_limit < 1024 {
            return Err(invalid("http.body_limit", "must be at least 1024 bytes"));
        }
        for (key, value) in [
            ("http.max_connections", self.http.max_connections),
            ("http.max_inflight", self.http.max_inflight),
            ("http.max_records", self.http.max_records),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Sums of these (grace + lease, now + timeout, the retry horizon) must not overflow.
    fn check_duration_bounds(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn check_timeouts(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn check_delivery(&self) -> Result<(), ConfigError> {
        let d = &self.delivery;
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
        Ok(())
    }

    fn check_dedup(&self) -> Result<(), ConfigError> {
        if self.dedup.ttl.is_zero() {
            return Err(invalid("dedup.ttl", "must be above zero"));
        }
        if self.dedup.max_entries < 16 {
            return Err(invalid("dedup.max_entries", "must be at least 16"));
        }
        if self.dedup.sweep_interval.is_zero() {
            return Err(invalid("dedup.sweep_interval", "must be above zero"));
        }
        if self.dedup.lease <= self.delivery.request_timeout {
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
        Ok(())
    }

    /// Only with the redis backend: a shared store needs a URL it can reach and one secret on
    /// every replica, or replicas compute different identities for the same event.
    fn check_redis(&self) -> Result<(), ConfigError> {
        if self.dedup.backend != StoreBackend::Redis {
            return Ok(());
        }
        super::redis::validate_cluster(&self.dedup.redis).map_err(|(k, r)| invalid(k, r))?;
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
        Ok(())
    }

    fn check_policy(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn check_spool_and_admin(&self) -> Result<(), ConfigError> {
        if self.spool.max_bytes == 0 || self.spool.max_entries == 0 {
            return Err(invalid(
                "spool.max_entries",
                "spool limits must be above zero",
            ));
        }
        if !(4096..=1 << 30).contains(&self.spool.segment_bytes) {
            return Err(invalid(
                "spool.segment_bytes",
                "journal segments must be 4 KiB to 1 GiB",
            ));
        }
        if self.spool.backend == crate::spool::jetstream::SpoolBackendKind::Jetstream {
            self.spool
                .jetstream
                .validate()
                .map_err(|(k, r)| invalid(k, r))?;
            if self.dedup.hash_secret.is_empty() {
                return Err(invalid(
                    "dedup.hash_secret",
                    "must be set (and equal on every replica) with spool.backend = \"jetstream\"",
                ));
            }
        }
        if !self.admin.token.is_empty() && self.admin.token.len() < 16 {
            return Err(invalid("admin.token", "must be at least 16 characters"));
        }
        Ok(())
    }

    fn check_services(&self) -> Result<(), ConfigError> {
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
            if let Some(r) = &svc.reconcile {
                r.check(self)?;
            }
        }
        Ok(())
    }
}
