//! The sections of the configuration and their value enums, one type per TOML table.
//!
//! Each field's `///` doc is the short form of its entry in `config/gateway.toml`; the types
//! alone make a value well-formed, `validate` makes it sensible.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

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
    /// Idle keep-alive connections to OSCAR kept per worker thread (`http.workers`); 0 opens a
    /// connection per delivery.
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

fn default_segment_bytes() -> u64 {
    crate::spool::SEGMENT_BYTES
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
    /// Size at which a journal segment is closed (local backend; 4 KiB to 1 GiB).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// `local` (redb under `data_dir`, default) or `jetstream` (a shared NATS stream).
    #[serde(default)]
    pub backend: crate::spool::jetstream::SpoolBackendKind,
    /// `[spool.jetstream]`: used with `backend = "jetstream"`.
    #[serde(default)]
    pub jetstream: crate::spool::jetstream::JetStreamConfig,
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
    /// Reconciliation of the bucket this service reads (contract §8); absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<crate::reconcile::ReconcileConfig>,
}
