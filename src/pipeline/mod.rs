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
//!   then the copy is forwarded).
//! - A PENDING-marked record is `held` (2xx) and forwarded by [`crate::deliver::held`] after the
//!   grace, unless a clean copy of the same identity arrives first; that copy is forwarded at once
//!   and the held copy is dropped. Exactly one of them reaches OSCAR.
//! - A dedup-store failure answers 503 (fail-closed, default) or forwards unchecked and counts it
//!   (fail-open); a delivery is never skipped because the store could not be asked.
//!
//! A client that disconnects mid-request cannot cancel a delivery between its reservation and its
//! commit or release: judging a record (parse, policy, key, and a memory-store claim, none of
//! which wait) runs in the request's own task, and everything from a successful claim to its
//! commit, release or spool write runs in a spawned task the request awaits. With Redis the claim
//! itself is in that task too, since a networked call can take effect and then be cut off. A
//! record that is dropped (ignored, invalid, duplicate) therefore costs no task.
//!
//! # Spool mode (default)
//! `forward` and `hold` hand the record to [`crate::spool`] instead of sending it: the identity is
//! reserved (or held) for the whole retry horizon, the record is fsync'd (group commit), and only
//! then is it `accepted` / `held` with 202. A refused or failed write releases the identity and
//! answers 503. Delivery, retries, the dead-letter queue and crash recovery are the spool's.
//! With the Redis store the order is reversed — write, then claim — so that no reservation can
//! outlive a crash without a record behind it (`Gateway::spool_write_first`).

pub mod check;
pub mod key;
pub mod parse;
pub mod policy;
pub mod shadow;

use std::{borrow::Cow, sync::Arc, time::SystemTime};

use bytes::Bytes;
use reqwest::header::HeaderValue;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    config::{Config, Mode, OnStoreError},
    deliver::{Delivery, Forwarder, Outcome, held::HeldQueue},
    history::{self, History},
    identity::{Owner, new_owner},
    metrics::Metrics,
    spool::Spool,
    store::{Claim, DedupStore, Existing, Store, StoreError},
};

pub use crate::verdict::{RecordResult, Verdict};
use key::{DedupKey, KeyDeriver, RequestScope};
use parse::{EnvelopeError, Record, RecordError, Records};
use policy::{Decision, FinalVerdict, Policy};

/// How often a copy waiting for its original's delivery (see `Gateway::waits_for`) asks the
/// store again.
const ORIGINAL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

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
    held: HeldQueue,
    metrics: Metrics,
    /// Recent decisions for `/admin/verdicts`; disabled when the admin routes are.
    history: History,
    /// Spool mode: where accepted and held records go (set once at start, see `attach_spool`).
    spool: std::sync::OnceLock<Spool>,
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
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                policy,
                keys,
                store,
                forwarder,
                held,
                metrics,
                history,
                spool: std::sync::OnceLock::new(),
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
    pub fn attach_spool(&self, spool: Spool) {
        let _ = self.inner.spool.set(spool);
    }

    pub fn spool(&self) -> Option<&Spool> {
        self.inner.spool.get()
    }

    /// Runs every record of a request through the pipeline.
    ///
    /// Runs in the caller's task, which a client hang-up can cancel at any await. Parse, policy,
    /// key and a memory-store claim never wait, so a record that ends there (ignored, invalid,
    /// duplicate) costs no task of its own; everything from a successful claim to its commit,
    /// release, hand-off to the held queue or spool write runs in a spawned task that the request
    /// awaits (`Gateway::settle_claim`), so a hang-up cannot cut it short. Shadow mode keeps its
    /// whole-request task (`http::receive`).
    pub async fn handle(&self, req: Inbound) -> Result<Answer, EnvelopeError> {
        if self.inner.cfg.mode == Mode::Shadow {
            return Ok(self.shadow(req).await);
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

    /// The HTTP status for a set of record results (contract §5).
    fn status(&self, results: &[RecordResult]) -> u16 {
        if results.iter().any(|r| r.verdict == Verdict::Failed) {
            return 503;
        }
        if results.iter().all(|r| r.verdict == Verdict::Invalid) {
            return 400;
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
            Decision::Final(v, reason) => {
                let result = RecordResult {
                    verdict: Verdict::from(v),
                    reason: Cow::Borrowed(reason),
                    key: None,
                };
                self.finish(seen, &req.service, rec, &result);
                return result;
            }
            Decision::Forward(c) => (c, false),
            Decision::Hold(c) => (c, true),
        };
        let key = self.inner.keys.key(scope, rec, class);
        let owner = new_owner();
        // The memory store answers without waiting (its operations have no await point), so its
        // claim runs here: nothing can cancel between it and the spawn below, and a duplicate
        // costs no task. A networked claim (Redis) can take effect and then be cut off before
        // its answer arrives, so it runs in the task with the rest.
        let claim = match &self.inner.store {
            Store::Memory(_) => match self.claim(&key, owner, hold).await {
                Ok(Claim::Duplicate(existing)) if !self.waits_for(existing) => {
                    let result = result(Verdict::Duplicate, existing.reason(), key);
                    self.finish(seen, &req.service, rec, &result);
                    return result;
                }
                claimed => Some(claimed),
            },
            Store::Redis(_) => None,
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
        // The task owns what it logs, so the decision line, the history entry and the verdict
        // count are written even when the request is cancelled while it runs.
        let rec = rec.clone().into_owned();
        let gateway = self.clone();
        let task = tokio::spawn(async move {
            let result = gateway.settle_claim(&delivery, owner, hold, claim).await;
            gateway.finish(seen, &delivery.service, &rec, &result);
            result
        });
        match task.await {
            Ok(result) => result,
            Err(e) => {
                // A panic (or runtime shutdown) mid-delivery: the request is retried.
                tracing::error!(dedup_key = %key, error = %e, "delivery task failed; answering 503");
                self.inner.metrics.verdict(Verdict::Failed);
                result(Verdict::Failed, "internal-error", key)
            }
        }
    }

    /// The one decision line, the history entry and the verdict count of a judged record.
    fn finish(&self, seen: SystemTime, service: &str, rec: &Record<'_>, result: &RecordResult) {
        log_decision(
            result.verdict,
            &result.reason,
            service,
            rec,
            result.key.as_ref(),
        );
        self.remember(seen, service, rec, result);
        self.inner.metrics.verdict(result.verdict);
    }

    /// Reserves (or holds) `key` for `owner` with the lease of the mode.
    async fn claim(&self, key: &DedupKey, owner: Owner, hold: bool) -> Result<Claim, StoreError> {
        let s = &self.inner.store;
        match (self.spool(), hold) {
            (Some(spool), true) => s.hold(key, owner, spool.hold_lease()).await,
            (Some(spool), false) => s.reserve(key, owner, spool.lease()).await,
            (None, true) => s.hold(key, owner, self.inner.held.hold_lease()).await,
            (None, false) => s.reserve(key, owner, self.inner.cfg.dedup.lease).await,
        }
    }

    /// Records a decision in the verdict history (a no-op when it is disabled).
    fn remember(&self, seen: SystemTime, service: &str, rec: &Record<'_>, r: &RecordResult) {
        if !self.inner.history.is_enabled() {
            return;
        }
        let delivered = (r.verdict == Verdict::Forwarded).then(SystemTime::now);
        let d = history::Decision::new(subject(service, rec), r.key, r.verdict, r.reason.clone())
            .seen_at(seen)
            .delivered_at(delivered, u32::from(delivered.is_some()));
        self.inner.history.record(d);
    }

    /// From the claim (already made by the memory store, `claim = Some`; made here for Redis) to
    /// its settlement: sync mode sends and commits or releases, or hands a held copy to the held
    /// queue; spool mode writes the record durably or releases. Runs in its own task.
    async fn settle_claim(
        &self,
        delivery: &Delivery,
        owner: Owner,
        hold: bool,
        claim: Option<Result<Claim, StoreError>>,
    ) -> RecordResult {
        let key = delivery.key;
        if let (Some(spool), Store::Redis(_)) = (self.spool(), &self.inner.store) {
            return self.spool_write_first(spool, delivery, owner, hold).await;
        }
        let mut claim = match claim {
            Some(claim) => claim,
            None => self.claim(&key, owner, hold).await,
        };
        if matches!(claim, Ok(Claim::Duplicate(e)) if self.waits_for(e)) {
            match self.await_original(&key, owner, hold).await {
                Some(c) => claim = c,
                None => return result(Verdict::Failed, "original-still-in-flight", key),
            }
        }
        let preempted = match claim {
            Ok(Claim::Acquired) => false,
            Ok(Claim::Preempted) => true,
            Ok(Claim::Duplicate(existing)) => {
                return result(Verdict::Duplicate, existing.reason(), key);
            }
            Err(e) => return self.on_store_error(e, delivery).await,
        };
        if let Some(spool) = self.spool() {
            return self
                .spool_write(spool, delivery, owner, hold, preempted)
                .await;
        }
        if hold {
            self.inner.held.schedule(delivery.clone(), owner);
            return result(Verdict::Held, "replication-pending", key);
        }
        self.send(delivery, owner, preempted).await
    }

    /// Whether a copy that met `existing` waits for its outcome instead of being a `duplicate`
    /// (sync mode; see the module doc): a held copy's delivery, which no request answers for; and,
    /// with a shared store (Redis), any delivery in flight — its owner may be another process,
    /// which can die without a word, and its reservation would then answer for nothing until
    /// the lease ends. (With the memory store the owner is this process: if it dies, so does
    /// the reservation.)
    fn waits_for(&self, existing: Existing) -> bool {
        self.inner.cfg.mode == Mode::Sync
            && match existing {
                Existing::HeldInFlight => true,
                Existing::InFlight => matches!(self.inner.store, Store::Redis(_)),
                Existing::Held | Existing::Delivered => false,
            }
    }

    /// Sync mode: claims `key` again until the delivery it met (see [`Self::waits_for`]) has an
    /// outcome, or gives up (`None`) after the longest one delivery attempt can take. Polls the
    /// store, which works the same for every backend and every replica sharing one.
    async fn await_original(
        &self,
        key: &DedupKey,
        owner: Owner,
        hold: bool,
    ) -> Option<Result<Claim, StoreError>> {
        let d = &self.inner.cfg.delivery;
        // One delivery attempt at most; never past the lease, after which the entry is gone.
        let bound = (d.connect_timeout + d.request_timeout).min(self.inner.cfg.dedup.lease);
        let deadline = tokio::time::Instant::now() + bound + ORIGINAL_POLL;
        tracing::debug!(dedup_key = %key, "the original is being delivered; waiting for its outcome");
        loop {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(dedup_key = %key, "the original is still being delivered; answering 503 so the copy is sent again");
                return None;
            }
            tokio::time::sleep(ORIGINAL_POLL).await;
            // Reusing `owner` is safe: every earlier answer was a duplicate, which changed nothing.
            let claim = self.claim(key, owner, hold).await;
            if !matches!(claim, Ok(Claim::Duplicate(e)) if self.waits_for(e)) {
                return Some(claim);
            }
        }
    }

    /// Sync mode: POST a reserved record, then commit (2xx) or release (anything else).
    async fn send(&self, delivery: &Delivery, owner: Owner, preempted: bool) -> RecordResult {
        let key = delivery.key;
        let s = &self.inner.store;
        let outcome = self.inner.forwarder.send(delivery).await;
        if let Outcome::Delivered { .. } = outcome {
            if let Err(e) = s.commit(&key, owner, self.inner.cfg.dedup.ttl).await {
                // Delivered all the same; the identity may be forwarded again once its lease ends.
                self.inner.metrics.store_error();
                tracing::warn!(dedup_key = %key, error = %e, "delivered but the commit failed");
            }
            let reason = if preempted {
                "clean-copy-preempted-held"
            } else {
                "delivered"
            };
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

    async fn on_store_error(&self, e: StoreError, delivery: &Delivery) -> RecordResult {
        self.inner.metrics.store_error();
        let key = delivery.key;
        match (self.inner.cfg.dedup.on_store_error, &e) {
            (OnStoreError::FailOpen, StoreError::Unavailable(_)) => {
                self.inner.metrics.fail_open();
                tracing::warn!(dedup_key = %key, error = %e, "dedup store failed; forwarding unchecked (fail-open)");
                let outcome = self.inner.forwarder.send(delivery).await;
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

    /// Spool mode on a store that outlives the process (Redis): the record is written *before*
    /// its identity is claimed, so that a crash can never leave a reservation without a durable
    /// record behind it. (The other order, kept for the memory store, would leave an orphan
    /// reservation in Redis for the whole retry horizon after a crash between the two, and
    /// MinIO's retry would be answered `duplicate` for an event nobody has: a lost event.) Thus
    /// every live entry in the store stands for a record on some gateway's disk, and a copy that
    /// meets one is safely a `duplicate` — which a read-only peek finds without writing anything,
    /// so repeats (the common case) cost no disk write. Otherwise: write, claim, then queue the
    /// record (claimed) or remove it (a duplicate after all). If the claim fails on a store
    /// error (fail-closed), the record is kept and claimed later by the spool: the failed claim
    /// may have taken effect unseen, and removing the record would leave that entry standing
    /// for nothing.
    async fn spool_write_first(
        &self,
        spool: &Spool,
        delivery: &Delivery,
        owner: Owner,
        hold: bool,
    ) -> RecordResult {
        let key = delivery.key;
        match self.inner.store.peek(&key).await {
            // A clean copy takes a held identity over; anything else live is a duplicate.
            Ok(Some(existing)) if hold || existing != Existing::Held => {
                return result(Verdict::Duplicate, existing.reason(), key);
            }
            Ok(_) => {}
            Err(e) => return self.on_store_error(e, delivery).await,
        }
        let id = match spool.write(delivery, owner, hold).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(dedup_key = %key, error = %e, "event not stored; answering 503");
                return result(Verdict::Failed, e.reason(), key);
            }
        };
        match self.claim(&key, owner, hold).await {
            Ok(claim @ (Claim::Acquired | Claim::Preempted)) => {
                spool.enqueue(id, owner, hold);
                spooled(hold, claim == Claim::Preempted, key)
            }
            Ok(Claim::Duplicate(existing)) => {
                spool.discard(id).await;
                result(Verdict::Duplicate, existing.reason(), key)
            }
            Err(e) if self.inner.cfg.dedup.on_store_error == OnStoreError::FailClosed => {
                // The record stays: the spool claims it once the store answers again (never
                // removing it on this error), and MinIO's retry of the 503 meets that claim.
                spool.enqueue_unclaimed(id, owner, hold);
                self.on_store_error(e, delivery).await
            }
            Err(e) => {
                // Fail-open forwards now, unchecked; a queued copy would be a second delivery.
                spool.discard(id).await;
                self.on_store_error(e, delivery).await
            }
        }
    }

    /// Spool mode, after the identity was reserved (or held) for the whole retry horizon: store
    /// the event durably and answer `accepted` (or `held`); the spool's workers deliver it. A
    /// failed or refused write releases the identity and answers 503: nothing that is not stored
    /// is acknowledged.
    async fn spool_write(
        &self,
        spool: &Spool,
        delivery: &Delivery,
        owner: Owner,
        hold: bool,
        preempted: bool,
    ) -> RecordResult {
        let key = delivery.key;
        match spool.accept(delivery, owner, hold).await {
            Ok(()) => spooled(hold, preempted, key),
            Err(e) => {
                // A held copy this one preempted is still spooled; its worker finds the identity
                // free again and delivers it, so the release cannot lose it.
                if let Err(se) = self.inner.store.release(&key, owner).await {
                    self.inner.metrics.store_error();
                    tracing::warn!(dedup_key = %key, error = %se, "could not release after a failed spool write; the lease will");
                }
                tracing::warn!(dedup_key = %key, error = %e, "event not stored; answering 503");
                result(Verdict::Failed, e.reason(), key)
            }
        }
    }
}

/// The answer for a record that is on disk and claimed: `held`, or `accepted`.
fn spooled(hold: bool, preempted: bool, key: DedupKey) -> RecordResult {
    match (hold, preempted) {
        (true, _) => result(Verdict::Held, "replication-pending", key),
        (false, true) => result(Verdict::Accepted, "clean-copy-preempted-held", key),
        (false, false) => result(Verdict::Accepted, "spooled", key),
    }
}

fn result(verdict: Verdict, reason: &'static str, key: DedupKey) -> RecordResult {
    RecordResult {
        verdict,
        reason: Cow::Borrowed(reason),
        key: Some(key),
    }
}

/// The history's view of a record.
fn subject<'a>(service: &'a str, rec: &'a Record<'_>) -> history::Subject<'a> {
    history::Subject {
        service,
        event: &rec.event_name,
        bucket: &rec.bucket,
        object: &rec.key,
        version: &rec.version,
        version_id: rec.version_id.as_deref(),
    }
}

/// The one log line per decision: verdict, reason, where, and the dedup key (never a token).
fn log_decision(
    verdict: Verdict,
    reason: &str,
    service: &str,
    rec: &Record<'_>,
    key: Option<&DedupKey>,
) {
    tracing::info!(
        verdict = verdict.as_str(),
        reason,
        service,
        // As `&str`, not `%`: the text format then quotes and escapes them, so an object key
        // with a newline (`%0A`) cannot forge a log line; the JSON format escapes either way.
        event = rec.event_name.as_ref(),
        bucket = rec.bucket.as_ref(),
        object = rec.key.as_str(),
        version = rec.version.as_ref(),
        dedup_key = key.map(tracing::field::display),
        "decision"
    );
}
