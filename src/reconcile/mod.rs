//! Reconciliation (contract §8): every object version in the service's bucket runs once.
//!
//! The webhook path can only deduplicate events that arrive. Events get lost before that (MinIO
//! without `queue_dir`, queue-store losses, replicas that emit nothing, resyncs), so with
//! `[services.NAME.reconcile]` the gateway also lists the bucket and treats every version in the
//! window `settle < age < dedup.ttl - margin` as if its event had come:
//!
//! | part | module |
//! |---|---|
//! | settings, window validation, secrets from env/files | [`config`] |
//! | signed S3 requests, one complete page at a time | [`s3`], [`xml`] |
//! | the MinIO-shaped body (identity of contract §6) | [`body`] |
//! | lease, pages, window | [`pass`] |
//! | one version through the pipeline (or a dry-run peek) | [`claim`] |
//! | replication health of the source bucket | [`health`] |
//! | counters and gauges | [`metrics`] |
//! | summaries and per-version lines | [`report`] |
//! | the `reconcile` command | [`oneshot`] |
//! | the read-only S3 policy `mc-setup --reconcile` prints | [`policy`] |
//!
//! Why the window: a version younger than `settle` belongs to the event path (it gets the first
//! chance); a version older than `dedup.ttl - margin` may have had its identity expire, and
//! triggering it would run it twice. Why the pipeline entry point: identity, claim and delivery
//! (sync, or spool: durable, retried, DLQ) are then the normal ones by construction, and a real
//! event arriving after a pass is a `duplicate` like any copy.
//!
//! Replicas sharing Redis: each version is claimed once by the store's own reserve. Listing is
//! guarded by a lease in the same store — a reservation on a synthetic identity no event can have
//! (its service part contains a NUL byte, which no service name may) — plus a "recent pass" mark
//! that lets other replicas' background loops skip an interval.

pub mod body;
pub mod claim;
pub mod config;
pub mod health;
pub mod metrics;
pub mod oneshot;
pub mod pass;
pub mod policy;
pub mod report;
pub mod s3;
pub mod xml;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::Duration,
};

use reqwest::header::HeaderValue;
use tokio_util::sync::CancellationToken;

pub use config::{ReconcileClass, ReconcileConfig};
pub use pass::PassOptions;
pub use report::PassReport;

use crate::pipeline::{
    Gateway,
    key::{DedupKey, KeyDeriver},
    parse::{Marking, Record, VersionSource},
    policy::{Class, Policy},
};

/// A reconciler that cannot be built at start; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{0}")]
    Secret(#[from] config::SecretError),
    #[error("invalid `services.reconcile.endpoint` of service {service}: {reason}")]
    Endpoint { service: String, reason: String },
    #[error("invalid `services.reconcile.token_env` of service {0}: not a valid header value")]
    Token(String),
    #[error("{0}")]
    Policy(String),
}

/// One service's reconciliation.
pub struct Reconciler {
    service: String,
    cfg: ReconcileConfig,
    client: s3::S3Client,
    source: Option<s3::S3Client>,
    authorization: HeaderValue,
    gateway: Gateway,
    keys: KeyDeriver,
    policy: Arc<Policy>,
    metrics: metrics::ReconcileMetrics,
    /// `dedup.ttl - margin`: the window's upper end.
    window_end: Duration,
    lease_key: DedupKey,
    recent_key: DedupKey,
    running: AtomicBool,
    last: Mutex<Option<PassReport>>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("service", &self.service)
            .field("bucket", &self.cfg.bucket)
            .finish_non_exhaustive()
    }
}

/// The lease (and recent-pass mark) identity of a service: never the identity of an event.
fn synthetic_key(keys: &KeyDeriver, service: &str, what: &str) -> DedupKey {
    let scope = keys.scope(&format!("\0reconcile\0{service}"), None);
    let rec = Record {
        event_name: "reconcile".into(),
        bucket: "\0".into(),
        key: what.into(),
        version: "\0".into(),
        version_source: VersionSource::VersionId,
        version_id: None,
        etag: None,
        marking: Marking::Clean,
    };
    keys.key(&scope, &rec, Class::Other("reconcile-lease"))
}

impl Reconciler {
    /// Builds the reconciler of `service`: reads its secrets, opens the S3 clients.
    pub fn new(
        gateway: &Gateway,
        keys: KeyDeriver,
        service: &str,
        cfg: &ReconcileConfig,
    ) -> Result<Self, ReconcileError> {
        let secrets = config::Secrets::load(cfg)?;
        let endpoint = |reason: String| ReconcileError::Endpoint {
            service: service.to_string(),
            reason,
        };
        let client = s3::S3Client::new(
            &cfg.endpoint,
            &cfg.region,
            &cfg.bucket,
            (secrets.access_key.clone(), secrets.secret_key.clone()),
            cfg.max_requests_per_second,
            cfg.request_timeout,
        )
        .map_err(|e| endpoint(e.to_string()))?;
        let source = match &cfg.source {
            Some(src) => {
                let creds = src.keys("services.reconcile.source")?;
                Some(
                    s3::S3Client::new(
                        &src.endpoint,
                        &src.region,
                        &src.bucket,
                        creds,
                        cfg.max_requests_per_second,
                        cfg.request_timeout,
                    )
                    .map_err(|e| endpoint(e.to_string()))?,
                )
            }
            None => None,
        };
        let authorization = HeaderValue::from_str(&secrets.authorization)
            .map_err(|_| ReconcileError::Token(service.to_string()))?;
        let gcfg = gateway.config();
        let policy = Policy::new(&gcfg.policy.forward, gcfg.policy.pending)
            .map_err(ReconcileError::Policy)?;
        let metrics = gateway.metrics().reconcile().clone();
        metrics.init_service(service);
        Ok(Self {
            service: service.to_string(),
            cfg: cfg.clone(),
            client,
            source,
            authorization,
            gateway: gateway.clone(),
            lease_key: synthetic_key(&keys, service, "lease"),
            recent_key: synthetic_key(&keys, service, "recent"),
            keys,
            policy: Arc::new(policy),
            metrics,
            window_end: gcfg.dedup.ttl.saturating_sub(cfg.margin),
            running: AtomicBool::new(false),
            last: Mutex::new(None),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn config(&self) -> &ReconcileConfig {
        &self.cfg
    }

    /// The last pass's report (or the running one's so far).
    pub fn last_report(&self) -> Option<PassReport> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember(&self, r: &PassReport) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
    }

    /// A full pass followed by the replication-health check (when a source is configured).
    pub async fn run(
        &self,
        opts: PassOptions,
        cancel: &CancellationToken,
        line: &mut (dyn FnMut(&report::VersionLine<'_>) + Send),
    ) -> PassReport {
        let mut report = self.run_pass(opts, cancel, line).await;
        if self.source.is_some() && matches!(report.outcome.as_str(), "ok" | "failed") {
            report.replication = Some(self.health(cancel).await);
            self.remember(&report);
        }
        report
    }
}

/// Every configured reconciler, by service; cheap to clone (empty when none is configured).
#[derive(Debug, Clone, Default)]
pub struct Reconcilers {
    by_service: Arc<BTreeMap<String, Arc<Reconciler>>>,
}

impl Reconcilers {
    /// One reconciler per service with a `reconcile` section.
    pub fn new(gateway: &Gateway) -> Result<Self, ReconcileError> {
        let cfg = gateway.config();
        let mut by_service = BTreeMap::new();
        let mut keys = None;
        for (name, svc) in &cfg.services {
            let Some(rc) = &svc.reconcile else { continue };
            let k = keys.get_or_insert_with(|| crate::key_deriver(cfg)).clone();
            let r = Reconciler::new(gateway, k, name, rc)?;
            by_service.insert(name.clone(), Arc::new(r));
        }
        Ok(Self {
            by_service: Arc::new(by_service),
        })
    }

    pub fn get(&self, service: &str) -> Option<&Arc<Reconciler>> {
        self.by_service.get(service)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Reconciler>> {
        self.by_service.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_service.is_empty()
    }

    /// Starts one background loop per service; they stop when `stop` is cancelled.
    pub fn spawn_loops(&self, stop: CancellationToken) -> Loops {
        let mut tasks = Vec::new();
        for r in self.by_service.values() {
            let (r, stop) = (r.clone(), stop.clone());
            tasks.push(tokio::spawn(async move { background(r, stop).await }));
        }
        Loops { tasks }
    }
}

/// The background loops, to be awaited before the spool shuts down.
#[derive(Debug)]
pub struct Loops {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Loops {
    /// Waits for every loop (their pass ends at the next page or version once stopped).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// First pass soon after start (a restart often follows the disconnection), then every interval.
async fn background(r: Arc<Reconciler>, stop: CancellationToken) {
    let mut wait = r.cfg.interval.min(Duration::from_secs(30));
    tracing::info!(service = %r.service, bucket = %r.cfg.bucket, interval = ?r.cfg.interval, settle = ?r.cfg.settle, "reconciliation loop started");
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let opts = PassOptions {
            dry_run: false,
            skip_if_recent: true,
        };
        r.run(opts, &stop, &mut |_| {}).await;
        wait = r.cfg.interval;
    }
}
