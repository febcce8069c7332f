//! The pipeline: parse → policy → key → dedup → deliver, one record at a time.
//!
//! # Delivery semantics (sync mode)
//! - Each record of a body is judged on its own; a broken record is `invalid` and never spoils
//!   the others. `invalid` is final: a body of only invalid records is answered 200 (not 400,
//!   which §5 keeps for envelope errors), so MinIO drops it from its queue instead of resending
//!   it forever. A single-record body is forwarded as the original bytes; a record of a
//!   multi-record body is forwarded as a single-record body in MinIO's own shape.
//! - A record that may trigger is *reserved* in the dedup store before it is sent and
//!   *committed* only when OSCAR answers 2xx. A transient answer *releases* the identity and the
//!   whole request gets 503, so MinIO (with `queue_dir`) retries and the retry is not a duplicate.
//!   A permanent answer (400/401/403/404), which a retry cannot change, is written to the
//!   dead-letter queue (a spool under `data_dir` opened for its DLQ only,
//!   `spool/dlq_direct.rs`), then released, and the record gets verdict `dead-lettered` with
//!   the upstream answer as reason (200): MinIO's queue does not stall on it (contract §7). If the
//!   DLQ write fails, the record is `failed` (503).
//!   The records of that request that were delivered stay committed: the retry finds them
//!   `duplicate` and forwards only what failed.
//! - A copy arriving while the original is in flight is `duplicate` and gets 2xx: the original's
//!   request is still open and will either deliver or answer 503 to its own sender.
//! - A copy arriving while a *held* copy is being delivered after its grace waits for that
//!   delivery's outcome (polling the store, bounded by one delivery's timeouts): no request answers
//!   for a held copy, so acknowledging the copy as a `duplicate` would lose the event if that
//!   delivery then failed for good. Committed → `duplicate`; released or re-held → the copy is
//!   judged again (forwarded, or preempts the re-held one); still in flight at the bound → 503, so
//!   MinIO sends it again. The contract (§7) names only a request's own in-flight original; this is
//!   the safe reading for the held case.
//! - With the Redis store the same wait applies to *every* in-flight original: its owner may be
//!   another replica (or this process before a crash) that died mid-delivery, and its reservation
//!   then stands for nothing until its lease (`dedup.lease`) ends. A `duplicate` answer there
//!   would lose the event; waiting turns a crashed owner into a delay (503 until the lease ends,
//!   then the copy is forwarded). Likewise a marked copy that meets another marked copy's hold
//!   is not a `duplicate` there: that hold lives in one replica's memory only, so the copy is
//!   `held` as a backup and delivers if the other hold lapses undelivered (`dedup/`
//!   `backs_up`).
//! - A PENDING-marked record is `held` (2xx) and forwarded by [`crate::pipeline::held`] after the
//!   grace, unless a clean copy of the same identity arrives first; that copy is forwarded at once
//!   and the held copy is dropped. Exactly one of them reaches OSCAR. A held copy that cannot be
//!   delivered (refused, out of retries, cut off at shutdown) goes to the same dead-letter queue
//!   ([`crate::pipeline::held`]).
//! - A dedup-store failure answers 503 (fail-closed, default) or forwards unchecked and counts it
//!   (fail-open); a delivery is never skipped because the store could not be asked.
//!
//! A client that disconnects mid-request cannot cancel a delivery between its reservation and its
//! commit or release: judging a record (parse, policy, key, and a memory-store claim, none of
//! which wait) runs in the request's own task, and everything from a successful claim to its
//! commit, release or spool write runs as a detachable future ([`detach`]): polled in the
//! request's task too, and moved to a task of its own only if the request is dropped before it
//! finishes. With Redis the claim itself is in that future, since a networked call can take
//! effect and then be cut off. A record costs a task only when its client hangs up mid-delivery.
//!
//! # Spool mode (default)
//! `forward` and `hold` hand the record to [`crate::spool`] instead of sending it: the identity is
//! reserved (or held) for the whole retry horizon, the record is fsync'd (group commit), and only
//! then is it `accepted` / `held` with 202. A refused or failed write releases the identity and
//! answers 503. Delivery, retries, the dead-letter queue and crash recovery are the spool's.
//! With the Redis store the order is reversed — write, then claim — so that no reservation can
//! outlive a crash without a record behind it (`Spool::admit`).

pub mod check;
mod dedup;
mod detach;
pub mod held;
pub mod key;
pub mod parse;
pub mod pattern;
pub mod policy;
mod report;
pub mod shadow;

use std::{borrow::Cow, sync::Arc, time::SystemTime};

use bytes::Bytes;
use reqwest::header::HeaderValue;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    config::{Config, Mode},
    deliver::{Delivery, Forwarder, settle::Settler},
    history::History,
    identity::new_owner,
    metrics::Metrics,
    spool::SpoolBackend,
    store::Store,
};

pub use crate::verdict::{RecordResult, Verdict};
use held::HeldQueue;
use key::{KeyDeriver, RequestScope};
use parse::{EnvelopeError, Record, RecordError, Records};
use policy::{FinalVerdict, Policy, Ruling};

impl From<FinalVerdict> for Verdict {
    fn from(v: FinalVerdict) -> Self {
        match v {
            FinalVerdict::Ignored => Verdict::Ignored,
            FinalVerdict::Pending => Verdict::Pending,
            FinalVerdict::ReplicationFailed => Verdict::ReplicationFailed,
        }
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
    /// Sync mode's send → commit/release (the settle path shared with held copies and the spool).
    settler: Settler,
    held: HeldQueue,
    metrics: Metrics,
    /// Recent decisions for `/admin/verdicts`; disabled when the admin routes are.
    history: History,
    /// Spool mode: where accepted and held records go (set once at start, see `attach_spool`).
    spool: std::sync::OnceLock<SpoolBackend>,
    /// Sync mode: the spool file opened for its dead-letter queue only (see `attach_dlq`).
    dlq: std::sync::OnceLock<SpoolBackend>,
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
        // Nobody could read the history without an admin token: do not record it then.
        let enabled = !cfg.admin.token.is_empty();
        let history = History::new(cfg.admin.verdict_history * usize::from(enabled));
        let settler = Settler::new(
            forwarder.clone(),
            store.clone(),
            metrics.clone(),
            cfg.dedup.ttl,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                policy,
                keys,
                store,
                forwarder,
                settler,
                held,
                metrics,
                history,
                spool: std::sync::OnceLock::new(),
                dlq: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The verdict history behind `/admin/verdicts`.
    pub fn history(&self) -> &History {
        &self.inner.history
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

    /// Switches `forward` and `hold` to the durable spool (spool mode); set once, at start.
    pub fn attach_spool(&self, spool: SpoolBackend) {
        let _ = self.inner.spool.set(spool);
    }

    pub fn spool(&self) -> Option<&SpoolBackend> {
        self.inner.spool.get()
    }

    /// Sync mode: dead-letters permanently refused events into `dlq` (a spool opened for its
    /// dead-letter queue only, [`crate::spool::Undeliverable`]); set once, at start.
    pub fn attach_dlq(&self, dlq: SpoolBackend) {
        let _ = self.inner.dlq.set(dlq);
    }

    /// The dead-letter queue behind `/admin/dlq`: the spool's in spool mode, the DLQ-only one in
    /// sync mode; `None` in shadow mode.
    pub fn dlq(&self) -> Option<&SpoolBackend> {
        self.inner.spool.get().or_else(|| self.inner.dlq.get())
    }

    /// Runs every record of a request through the pipeline.
    ///
    /// Runs in the caller's task, which a client hang-up can cancel at any await. Parse, policy,
    /// key and a memory-store claim never wait, so a record that ends there (ignored, invalid,
    /// duplicate) costs no task of its own; everything from a successful claim to its commit,
    /// release, hand-off to the held queue or spool write runs as a detachable future
    /// (`Gateway::settle_in_task`, [`detach`]) that moves to a task of its own if the request is
    /// dropped, so a hang-up cannot cut it short. Shadow mode keeps its whole-request task
    /// (`http::receive`).
    pub async fn handle(&self, req: Inbound) -> Result<Answer, EnvelopeError> {
        if self.inner.cfg.mode == Mode::Shadow {
            // Boxed: shadow mode's forward would otherwise sit inline in every request's future.
            return Ok(Box::pin(self.shadow(req)).await);
        }
        let records = parse::records(&req.body)?;
        // Bounds the work, the log lines and the answer a single small body can cause.
        let limit = self.inner.cfg.http.max_records;
        if records.len() > limit {
            return Err(EnvelopeError::TooManyRecords {
                count: records.len(),
                limit,
            });
        }
        let scope = self.inner.keys.scope(
            &req.service,
            req.authorization.as_ref().map(HeaderValue::as_bytes),
        );
        let mut results = Vec::with_capacity(records.len());
        match &records {
            Records::Single(rec) => results.push(self.record(&req, &scope, rec, None).await),
            Records::Many(many) => {
                for (raw, rec) in many {
                    results.push(self.record(&req, &scope, rec, Some(raw)).await);
                }
            }
        }
        let status = self.status(&results);
        Ok(Answer { results, status })
    }

    /// One record of a request: `invalid`, or judged. `raw` is its slice in a multi-record body
    /// (`None` for a single-record body, which is forwarded as the original bytes).
    async fn record(
        &self,
        req: &Inbound,
        scope: &RequestScope,
        rec: &Result<Record<'_>, RecordError>,
        raw: Option<&RawValue>,
    ) -> RecordResult {
        match rec {
            Ok(rec) => self.judge(req, scope, rec, raw).await,
            Err(e) => {
                tracing::info!(verdict = "invalid", service = %req.service, reason = %e, "record rejected");
                self.inner.metrics.verdict(Verdict::Invalid);
                RecordResult {
                    verdict: Verdict::Invalid,
                    reason: Cow::Owned(e.to_string()),
                    key: None,
                }
            }
        }
    }

    /// The HTTP status for a set of record results (contract §5). A body whose records are all
    /// `invalid` is 200 like any other decided body: 400 is for envelope errors only (§5), an
    /// invalid record can never become valid on a resend, and MinIO with `queue_dir` would resend
    /// a non-2xx every 3 s forever at the head of its queue (issue 13 item 9).
    fn status(&self, results: &[RecordResult]) -> u16 {
        if results.iter().any(|r| r.verdict == Verdict::Failed) {
            return 503;
        }
        let spooled = results.iter().any(|r| {
            matches!(r.verdict, Verdict::Accepted)
                || r.verdict == Verdict::Held && self.inner.cfg.mode == Mode::Spool
        });
        if spooled { 202 } else { 200 }
    }

    async fn judge(
        &self,
        req: &Inbound,
        scope: &RequestScope,
        rec: &Record<'_>,
        raw: Option<&RawValue>,
    ) -> RecordResult {
        // Only the verdict history reads it; a clock read per record is not free.
        let seen = if self.inner.history.is_enabled() {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        };
        let available_on = self.inner.cfg.service(&req.service).available_on;
        let (class, hold) = match self.inner.policy.decide(rec, available_on) {
            Ruling::Final(v, reason) => {
                let result = RecordResult {
                    verdict: Verdict::from(v),
                    reason: Cow::Borrowed(reason),
                    key: None,
                };
                self.finish(seen, report::subject(&req.service, rec), &result);
                return result;
            }
            Ruling::Forward(c) => (c, false),
            Ruling::Hold(c) => (c, true),
        };
        let key = self.inner.keys.key(scope, rec, class);
        let alias = self.alias_of(&req.service, scope, rec, class);
        if let Some(a) = &alias
            && let Some(result) = self.alias_duplicate(a, key).await
        {
            self.finish(seen, report::subject(&req.service, rec), &result);
            return result;
        }
        let owner = new_owner();
        let claim = match self.claim_in_place(&key, owner, hold).await {
            dedup::InPlace::Duplicate(result) => {
                self.finish(seen, report::subject(&req.service, rec), &result);
                return result;
            }
            dedup::InPlace::Settle(claim) => claim,
        };
        // Built only now: a dropped record of a multi-record body needs no body of its own.
        let body = match raw {
            Some(raw) => Bytes::from(parse::single_record_body(rec, raw)),
            None => req.body.clone(),
        };
        let delivery = Delivery {
            service: req.service.clone(),
            authorization: req.authorization.clone(),
            body,
            key,
        };
        let claimant = dedup::Claimant { owner, hold, alias };
        self.settle_in_task(seen, delivery, rec, claimant, claim)
            .await
    }
}
