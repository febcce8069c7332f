//! Verdict: what the gateway decided for one record, the words every stage reports in.
//!
//! The verdict (contract §4) is produced by the pipeline but counted by the metrics, kept by the
//! history, logged by the held queue and the spool worker, and returned to MinIO. It lives in a
//! leaf module, importing only [`crate::identity`], so none of those has to import the pipeline.

use std::borrow::Cow;

use serde::Serialize;

use crate::identity::DedupKey;

/// The verdict of one record (contract §4), plus `failed` for a record that could not be
/// delivered or stored in this request (the request gets 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Forwarded,
    Accepted,
    Duplicate,
    Held,
    Pending,
    ReplicationFailed,
    Ignored,
    Invalid,
    /// Sync mode: OSCAR refused the event permanently; it is in the dead-letter queue (2xx).
    DeadLettered,
    Failed,
}

impl Verdict {
    pub const ALL: [Verdict; 10] = [
        Verdict::Forwarded,
        Verdict::Accepted,
        Verdict::Duplicate,
        Verdict::Held,
        Verdict::Pending,
        Verdict::ReplicationFailed,
        Verdict::Ignored,
        Verdict::Invalid,
        Verdict::DeadLettered,
        Verdict::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Forwarded => "forwarded",
            Verdict::Accepted => "accepted",
            Verdict::Duplicate => "duplicate",
            Verdict::Held => "held",
            Verdict::Pending => "pending",
            Verdict::ReplicationFailed => "replication-failed",
            Verdict::Ignored => "ignored",
            Verdict::Invalid => "invalid",
            Verdict::DeadLettered => "dead-lettered",
            Verdict::Failed => "failed",
        }
    }

    /// Whether sync mode would not forward a record with this verdict (now or after a grace):
    /// shadow mode's `would_drop` label.
    pub fn would_drop(self) -> bool {
        matches!(
            self,
            Verdict::Duplicate
                | Verdict::Pending
                | Verdict::ReplicationFailed
                | Verdict::Ignored
                | Verdict::Invalid
        )
    }
}

/// One record's answer, as returned to MinIO in `results`.
#[derive(Debug, Clone, Serialize)]
pub struct RecordResult {
    pub verdict: Verdict,
    pub reason: Cow<'static, str>,
    #[serde(serialize_with = "ser_key")]
    pub key: Option<DedupKey>,
}

impl RecordResult {
    /// A result about an identity, with a fixed reason.
    pub fn keyed(verdict: Verdict, reason: &'static str, key: DedupKey) -> Self {
        Self {
            verdict,
            reason: Cow::Borrowed(reason),
            key: Some(key),
        }
    }

    /// `failed` with a reason made at run time (an upstream answer's description).
    pub fn failed(reason: String, key: DedupKey) -> Self {
        Self {
            verdict: Verdict::Failed,
            reason: Cow::Owned(reason),
            key: Some(key),
        }
    }
}

fn ser_key<S: serde::Serializer>(k: &Option<DedupKey>, s: S) -> Result<S::Ok, S::Error> {
    match k {
        Some(k) => s.collect_str(k),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn would_drop_is_the_final_verdicts_and_duplicates() {
        let dropped: Vec<_> = Verdict::ALL
            .into_iter()
            .filter(|v| v.would_drop())
            .map(Verdict::as_str)
            .collect();
        assert_eq!(
            dropped,
            [
                "duplicate",
                "pending",
                "replication-failed",
                "ignored",
                "invalid"
            ]
        );
    }

    #[test]
    fn a_result_serializes_its_key_as_hex() {
        let r = RecordResult::keyed(Verdict::Accepted, "spooled", DedupKey([0xab; 16]));
        let json = serde_json::to_value(&r).expect("serializable");
        assert_eq!(json["verdict"], "accepted");
        assert_eq!(json["reason"], "spooled");
        assert_eq!(json["key"], "ab".repeat(16));
        let none = RecordResult {
            key: None,
            ..RecordResult::failed("upstream-500".into(), DedupKey([0; 16]))
        };
        assert!(serde_json::to_value(&none).expect("serializable")["key"].is_null());
    }
}
