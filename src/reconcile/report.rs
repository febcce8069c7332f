//! What a pass did: the summary behind `GET /admin/reconcile`, the command's last line and the
//! per-version lines of the command.

use serde::Serialize;

/// The summary of one pass.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PassReport {
    pub service: String,
    pub bucket: String,
    pub dry_run: bool,
    /// RFC 3339 UTC.
    pub started: String,
    pub finished: Option<String>,
    /// `running`, `ok`, `failed`, `leased-elsewhere`, `skipped-recent`, `busy`.
    pub outcome: String,
    /// Entries listed (every page, every class).
    pub listed: u64,
    /// Inside the window and of a configured class.
    pub in_window: u64,
    pub too_young: u64,
    pub too_old: u64,
    pub already_seen: u64,
    /// Handed to delivery (`forwarded`/`accepted`/`held`), or with `--dry-run`, would be.
    pub triggered: u64,
    /// The forwarding policy ignored the synthesised event (e.g. its name is not forwarded).
    pub ignored: u64,
    /// Versions that could not be claimed or stored, plus failed listing requests.
    pub errors: u64,
    pub pages: u64,
    pub s3_requests: u64,
    /// Why the pass failed, when it did (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<HealthReport>,
}

/// Replication health from the source bucket (not triggered, only reported).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HealthReport {
    pub source_bucket: String,
    /// Source versions past settle checked against the replica.
    pub checked: u64,
    pub failed: u64,
    pub missing: u64,
    /// The first few affected versions, for the operator (bounded).
    pub samples: Vec<HealthSample>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthSample {
    pub key: String,
    pub version_id: Option<String>,
    /// `FAILED`, `PENDING`, or `missing` when the source reports no status.
    pub status: String,
}

/// One version a pass triggered or (dry run) would trigger.
#[derive(Debug, Clone, Serialize)]
pub struct VersionLine<'a> {
    pub service: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<&'a str>,
    pub class: &'static str,
    pub last_modified: String,
    /// The gateway's verdict, or `would-trigger` for a dry run.
    pub verdict: &'a str,
    pub dedup_key: String,
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}
