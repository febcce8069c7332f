//! `[spool.jetstream]`: where the shared queue lives and how it is shaped.
//!
//! Kept here rather than in `config.rs` so the backend's keys, defaults, validation and masking
//! sit next to the code that reads them; `config.rs` only embeds the table. The token and the
//! credentials are secrets: `check-config` prints them as `***`, and they are never logged (the
//! connection logs name the servers only).

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// Which spool takes accepted events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolBackendKind {
    /// The embedded redb file under `data_dir` (default).
    #[default]
    Local,
    /// A NATS JetStream stream shared by every replica.
    Jetstream,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamConfig {
    /// NATS servers (`nats://` or `tls://`); the client fails over between them.
    pub urls: Vec<String>,
    /// Token authentication (secret, masked).
    pub token: String,
    /// A `.creds` file (JWT + NKey seed) for decentralized authentication.
    pub credentials_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) to verify the servers' TLS certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub require_tls: bool,
    /// The work-queue stream of accepted events.
    pub stream: String,
    /// Its subject.
    pub subject: String,
    /// The durable pull consumer every replica reads from.
    pub consumer: String,
    /// The dead-letter stream and its subject.
    pub dlq_stream: String,
    pub dlq_subject: String,
    /// Stream replicas (1, 3 or 5 on a NATS cluster).
    pub replicas: usize,
    /// JetStream's duplicate window for `Nats-Msg-Id` (the second dedup guard).
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long an accept waits for the PubAck before answering 503.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long a delivery may go without an ack or progress before another replica gets it.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Publishes in flight at once per replica (the pipelining depth).
    pub max_inflight_publishes: usize,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".into()],
            token: String::new(),
            credentials_file: None,
            tls_ca_file: None,
            require_tls: false,
            stream: "DEDUP_GATEWAY".into(),
            subject: "dedup-gateway.events".into(),
            consumer: "dedup-gateway".into(),
            dlq_stream: "DEDUP_GATEWAY_DLQ".into(),
            dlq_subject: "dedup-gateway.dlq".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            publish_timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            max_inflight_publishes: 4096,
        }
    }
}

/// A key that is not valid, and why.
pub type Invalid = (&'static str, String);

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

fn subject_ok(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
}

impl JetStreamConfig {
    /// Checks every key; the error names the key (`spool.jetstream.*`).
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |k: &'static str, r: &str| Err((k, r.to_string()));
        if self.urls.is_empty() {
            return bad("spool.jetstream.urls", "must list at least one NATS server");
        }
        for u in &self.urls {
            let url =
                reqwest::Url::parse(u).map_err(|e| ("spool.jetstream.urls", e.to_string()))?;
            if !matches!(url.scheme(), "nats" | "tls") {
                return bad("spool.jetstream.urls", "must be nats:// or tls:// URLs");
            }
        }
        if !self.token.is_empty() && self.credentials_file.is_some() {
            return bad(
                "spool.jetstream.token",
                "set either token or credentials_file, not both",
            );
        }
        for (k, v) in [
            ("spool.jetstream.stream", &self.stream),
            ("spool.jetstream.consumer", &self.consumer),
            ("spool.jetstream.dlq_stream", &self.dlq_stream),
        ] {
            if !name_ok(v) {
                return bad(k, "must be letters, digits, '-' or '_'");
            }
        }
        if self.stream == self.dlq_stream {
            return bad("spool.jetstream.dlq_stream", "must differ from stream");
        }
        for (k, v) in [
            ("spool.jetstream.subject", &self.subject),
            ("spool.jetstream.dlq_subject", &self.dlq_subject),
        ] {
            if !subject_ok(v) {
                return bad(k, "must be a literal NATS subject (no wildcards)");
            }
        }
        if self.subject == self.dlq_subject {
            return bad("spool.jetstream.dlq_subject", "must differ from subject");
        }
        if !matches!(self.replicas, 1..=5) {
            return bad("spool.jetstream.replicas", "must be 1 to 5");
        }
        for (k, v) in [
            ("spool.jetstream.duplicate_window", self.duplicate_window),
            ("spool.jetstream.publish_timeout", self.publish_timeout),
            ("spool.jetstream.ack_wait", self.ack_wait),
        ] {
            if v.is_zero() || v > Duration::from_secs(10 * 365 * 24 * 3600) {
                return bad(k, "must be above zero and at most 10 years");
            }
        }
        if self.ack_wait < Duration::from_secs(1) {
            return bad("spool.jetstream.ack_wait", "must be at least 1s");
        }
        if self.max_inflight_publishes == 0 {
            return bad(
                "spool.jetstream.max_inflight_publishes",
                "must be at least 1",
            );
        }
        Ok(())
    }

    /// Replaces the secrets with `***` (for `check-config`).
    pub fn mask(&mut self) {
        if !self.token.is_empty() {
            self.token = "***".into();
        }
        for u in &mut self.urls {
            if let Ok(mut url) = reqwest::Url::parse(u)
                && (url.password().is_some() || !url.username().is_empty())
            {
                let _ = url.set_password(Some("***"));
                *u = url.to_string();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(JetStreamConfig::default().validate().is_ok());
    }

    #[test]
    fn bad_keys_are_named() {
        let mut c = JetStreamConfig {
            urls: vec!["http://x".into()],
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "spool.jetstream.urls");
        c.urls = vec!["nats://127.0.0.1:4222".into()];
        c.subject = "a.*".into();
        assert_eq!(c.validate().unwrap_err().0, "spool.jetstream.subject");
        c.subject = "a.b".into();
        c.replicas = 0;
        assert_eq!(c.validate().unwrap_err().0, "spool.jetstream.replicas");
        c.replicas = 3;
        c.dlq_stream = c.stream.clone();
        assert_eq!(c.validate().unwrap_err().0, "spool.jetstream.dlq_stream");
    }

    #[test]
    fn secrets_are_masked() {
        let mut c = JetStreamConfig {
            token: "s3cr3t-token".into(),
            urls: vec!["nats://user:pw-secret@127.0.0.1:4222".into()],
            ..Default::default()
        };
        c.mask();
        assert_eq!(c.token, "***");
        assert!(!c.urls[0].contains("pw-secret"));
    }
}
