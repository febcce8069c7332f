//! The pipeline: parse → policy → key → dedup → deliver, one record at a time.
//!
//! # Delivery semantics (sync mode)
//! - Each record of a body is judged on its own; a broken record is `invalid` and never spoils
//!   the others. A single-record body is forwarded as the original bytes; a record of a
//!   multi-record body is forwarded as a single-record body in MinIO's own shape.
//! - A record that may trigger is *reserved* in the dedup store before it is sent and
//!   *committed* only when OSCAR answers 2xx. Any other answer *releases* the identity and the
//!   whole request gets 503, so MinIO (with `queue_dir`) retries and the retry is not a duplicate.
//!   The records of that request that were delivered stay committed: the retry finds them
//!   `duplicate` and forwards only what failed.
//! - A copy arriving while the original is in flight is `duplicate` and gets 2xx: the original's
//!   request is still open and will either deliver or answer 503 to its own sender.
//! - A PENDING-marked record is `held` (2xx) and forwarded by [`crate::deliver::held`] after the
//!   grace, unless a clean copy of the same identity arrives first; that copy is forwarded at once
//!   and the held copy is dropped. Exactly one of them reaches OSCAR.
//! - A dedup-store failure answers 503 (fail-closed, default) or forwards unchecked and counts it
//!   (fail-open); a delivery is never skipped because the store could not be asked.
//!
//! The work of a request runs in its own task, so a client that disconnects mid-request cannot
//! cancel a delivery between its reservation and its commit or release.

pub mod key;
pub mod parse;
pub mod policy;

use std::{borrow::Cow, sync::Arc};

use bytes::Bytes;
use reqwest::header::HeaderValue;
use serde::Serialize;

use crate::{
    config::{Config, Mode, OnStoreError},
    deliver::{Delivery, Forwarder, Outcome, held::HeldQueue},
    metrics::Metrics,
    store::{Claim, DedupStore, Store, StoreError, new_owner},
};
use key::{DedupKey, KeyDeriver, RequestScope};
use parse::{EnvelopeError, Record};
use policy::{Decision, FinalVerdict, Policy};

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
    Failed,
}

impl Verdict {
    pub const ALL: [Verdict; 9] = [
        Verdict::Forwarded,
        Verdict::Accepted,
        Verdict::Duplicate,
        Verdict::Held,
        Verdict::Pending,
        Verdict::ReplicationFailed,
        Verdict::Ignored,
        Verdict::Invalid,
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
            Verdict::Failed => "failed",
        }
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

fn ser_key<S: serde::Serializer>(k: &Option<DedupKey>, s: S) -> Result<S::Ok, S::Error> {
    match k {
        Some(k) => s.collect_str(k),
        None => s.serialize_none(),
    }
}

/// A received webhook POST.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub service: String,
    pub authorization: Option<HeaderValue>,
    pub body: Bytes,
}

/// The answer to a whole request.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub results: Vec<RecordResult>,
    #[serde(skip)]
    pub status: u16,
}

/// Cheap to clone; everything the pipeline needs.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: Arc<Config>,
    policy: Policy,
    keys: KeyDeriver,
    store: Store,
    forwarder: Forwarder,
    held: HeldQueue,
    metrics: Metrics,
}

impl Gateway {
    pub fn new(
        cfg: Arc<Config>,
        keys: KeyDeriver,
        store: Store,
        forwarder: Forwarder,
        held: HeldQueue,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let policy = Policy::new(&cfg.policy.forward, cfg.policy.pending)?;
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                policy,
                keys,
                store,
                forwarder,
                held,
                metrics,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn held(&self) -> &HeldQueue {
        &self.inner.held
    }

    /// Runs every record of a request through the pipeline.
    pub async fn handle(&self, req: Inbound) -> Result<Answer, EnvelopeError> {
        let env = parse::envelope(&req.body)?;
        let scope = self
            .inner
            .keys
            .scope(&req.service, req.authorization.as_ref().map(HeaderValue::as_bytes));
        let single = env.records.len() == 1;
        let mut results = Vec::with_capacity(env.records.len());
        for raw in &env.records {
            let result = match parse::record(raw) {
                Ok(rec) => {
                    let body = if single {
                        req.body.clone()
                    } else {
                        Bytes::from(parse::single_record_body(&rec, raw))
                    };
                    self.judge(&req, &scope, &rec, body).await
                }
                Err(e) => {
                    tracing::info!(verdict = "invalid", service = %req.service, reason = %e, "record rejected");
                    RecordResult {
                        verdict: Verdict::Invalid,
                        reason: Cow::Owned(e.to_string()),
                        key: None,
                    }
                }
            };
            self.inner.metrics.verdict(result.verdict);
            results.push(result);
        }
        let status = self.status(&results);
        Ok(Answer { results, status })
    }

    /// The HTTP status for a set of record results (contract §5).
    fn status(&self, results: &[RecordResult]) -> u16 {
        if results.iter().any(|r| r.verdict == Verdict::Failed) {
            return 503;
        }
        if results.iter().all(|r| r.verdict == Verdict::Invalid) {
            return 400;
        }
        let spooled = results
            .iter()
            .any(|r| matches!(r.verdict, Verdict::Accepted) || r.verdict == Verdict::Held && self.inner.cfg.mode == Mode::Spool);
        if spooled { 202 } else { 200 }
    }

    async fn judge(&self, req: &Inbound, scope: &RequestScope, rec: &Record<'_>, body: Bytes) -> RecordResult {
        let available_on = self.inner.cfg.service(&req.service).available_on;
        let decision = self.inner.policy.decide(rec, available_on);
        let (class, hold) = match decision {
            Decision::Final(v, reason) => {
                let verdict = match v {
                    FinalVerdict::Ignored => Verdict::Ignored,
                    FinalVerdict::Pending => Verdict::Pending,
                    FinalVerdict::ReplicationFailed => Verdict::ReplicationFailed,
                };
                log_decision(verdict, reason, &req.service, rec, None);
                return RecordResult {
                    verdict,
                    reason: Cow::Borrowed(reason),
                    key: None,
                };
            }
            Decision::Forward(c) => (c, false),
            Decision::Hold(c) => (c, true),
        };
        let key = self.inner.keys.key(scope, rec, class);
        let delivery = Delivery {
            service: req.service.clone(),
            authorization: req.authorization.clone(),
            body,
            key,
        };
        let result = if hold {
            self.hold(delivery).await
        } else {
            self.forward(delivery).await
        };
        log_decision(result.verdict, &result.reason, &req.service, rec, Some(&key));
        result
    }

    async fn hold(&self, delivery: Delivery) -> RecordResult {
        let owner = new_owner();
        let key = delivery.key;
        match self.inner.store.hold(&key, owner, self.inner.held.hold_lease()).await {
            Ok(Claim::Acquired | Claim::Preempted) => {
                self.inner.held.schedule(delivery, owner);
                result(Verdict::Held, "replication-pending", key)
            }
            Ok(Claim::Duplicate(existing)) => result(Verdict::Duplicate, existing.reason(), key),
            Err(e) => self.on_store_error(e, delivery).await,
        }
    }

    async fn forward(&self, delivery: Delivery) -> RecordResult {
        let owner = new_owner();
        let key = delivery.key;
        let s = &self.inner.store;
        let preempted = match s.reserve(&key, owner, self.inner.cfg.dedup.lease).await {
            Ok(Claim::Acquired) => false,
            Ok(Claim::Preempted) => true,
            Ok(Claim::Duplicate(existing)) => return result(Verdict::Duplicate, existing.reason(), key),
            Err(e) => return self.on_store_error(e, delivery).await,
        };
        let outcome = self.inner.forwarder.send(&delivery).await;
        if let Outcome::Delivered { .. } = outcome {
            if let Err(e) = s.commit(&key, owner, self.inner.cfg.dedup.ttl).await {
                // Delivered all the same; the identity may be forwarded again once its lease ends.
                self.inner.metrics.store_error();
                tracing::warn!(dedup_key = %key, error = %e, "delivered but the commit failed");
            }
            let reason = if preempted { "clean-copy-preempted-held" } else { "delivered" };
            return result(Verdict::Forwarded, reason, key);
        }
        if let Err(e) = s.release(&key, owner).await {
            self.inner.metrics.store_error();
            tracing::warn!(dedup_key = %key, error = %e, "could not release after a failed delivery; the lease will");
        }
        RecordResult {
            verdict: Verdict::Failed,
            reason: Cow::Owned(outcome.describe()),
            key: Some(key),
        }
    }

    async fn on_store_error(&self, e: StoreError, delivery: Delivery) -> RecordResult {
        self.inner.metrics.store_error();
        let key = delivery.key;
        match (self.inner.cfg.dedup.on_store_error, &e) {
            (OnStoreError::FailOpen, StoreError::Unavailable(_)) => {
                self.inner.metrics.fail_open();
                tracing::warn!(dedup_key = %key, error = %e, "dedup store failed; forwarding unchecked (fail-open)");
                let outcome = self.inner.forwarder.send(&delivery).await;
                if outcome.is_delivered() {
                    result(Verdict::Forwarded, "fail-open-unchecked", key)
                } else {
                    RecordResult {
                        verdict: Verdict::Failed,
                        reason: Cow::Owned(outcome.describe()),
                        key: Some(key),
                    }
                }
            }
            _ => {
                tracing::warn!(dedup_key = %key, error = %e, "dedup store failed; answering 503 (fail-closed)");
                result(Verdict::Failed, "dedup-store-unavailable", key)
            }
        }
    }

    /// Forwarder access for components built on the pipeline (spool workers, admin replay).
    pub fn forwarder(&self) -> &Forwarder {
        &self.inner.forwarder
    }
}

fn result(verdict: Verdict, reason: &'static str, key: DedupKey) -> RecordResult {
    RecordResult {
        verdict,
        reason: Cow::Borrowed(reason),
        key: Some(key),
    }
}

/// The one log line per decision: verdict, reason, where, and the dedup key (never a token).
fn log_decision(verdict: Verdict, reason: &str, service: &str, rec: &Record<'_>, key: Option<&DedupKey>) {
    tracing::info!(
        verdict = verdict.as_str(),
        reason,
        service,
        event = %rec.event_name,
        bucket = %rec.bucket,
        object = %rec.key,
        version = %rec.version,
        dedup_key = key.map(tracing::field::display),
        "decision"
    );
}
