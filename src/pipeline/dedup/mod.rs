//! Dedup: the decision the gateway is named for — claim the identity, then settle the claim.
//!
//! [`super::Gateway::judge`] has a record's identity; from there this file decides, per mode:
//! - **claim**: reserve (clean copy) or hold (PENDING-marked copy) the identity for a fresh owner
//!   token, with the lease of the mode. A store that answers without waiting (memory) is asked in
//!   the request's own task, so a duplicate costs no task; a shared store (Redis, see
//!   [`crate::store::Store::is_shared`]) is asked in the settling task, since a networked call
//!   can take effect and then be cut off by a client hang-up.
//! - **wait**: in sync mode a copy that meets a held copy's delivery (or, with a shared store,
//!   any delivery in flight) waits for its outcome instead of being a `duplicate` (see
//!   [`super`]'s delivery semantics).
//! - **settle**: in a detachable future (`detach.rs`; a hang-up cannot cut it short): sync mode
//!   sends and commits or releases ([`crate::deliver::settle`]), or hands a held copy to
//!   [`super::held`]; spool mode hands the record to [`crate::spool::Spool::admit`], which writes
//!   and claims in the order the store needs.
//! - **store errors**: fail-closed answers 503; fail-open forwards unchecked.
//! - **alias** (services that reconcile, sequencer-keyed records only): the alias identity of
//!   [`crate::pipeline::key::KeyDeriver::alias`] is looked up before the claim and committed once
//!   the record is forwarded or durably accepted, so an unversioned write that reconciliation
//!   triggered is a `duplicate` as an event, and the other way round (the rule is in
//!   `pipeline/key/alias.rs`; the steps in `dedup/alias.rs`). Every other record costs one
//!   comparison.

use std::time::SystemTime;

mod alias;

use super::{Gateway, parse::Record};
use crate::{
    config::{Mode, OnStoreError},
    deliver::{Delivery, Outcome, settle::Lost},
    identity::{DedupKey, Owner, new_owner},
    spool::{Admission, Undeliverable, record::Attempt, unix_ms},
    store::{Claim, DedupStore, Existing, Store, StoreError},
    verdict::{RecordResult, Verdict},
};

/// How often a copy waiting for its original's delivery (see `Gateway::waits_for`) asks the
/// store again.
const ORIGINAL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Who settles a claim: the owner token, whether the copy is held, and its alias identity (if
/// any) to commit once it is delivered or spooled.
pub(super) struct Claimant {
    pub owner: Owner,
    pub hold: bool,
    pub alias: Option<DedupKey>,
}

/// What the claim in the request's own task found.
pub(super) enum InPlace {
    /// A duplicate that needs nothing more (no task, no body).
    Duplicate(RecordResult),
    /// Go on in the settling task, with the claim made here (`Some`) or still to make (`None`).
    Settle(Option<Result<Claim, StoreError>>),
}

impl Gateway {
    /// The claim made before any task is spawned: only with a store whose claim cannot be cut
    /// off half-way (nothing can cancel between it and the spawn), see the module doc.
    pub(super) async fn claim_in_place(&self, key: &DedupKey, owner: Owner, hold: bool) -> InPlace {
        if self.inner.store.is_shared() {
            return InPlace::Settle(None);
        }
        // The memory store is asked without a future; anything else is boxed. Either way the
        // store's and the spool's futures (Redis, JetStream: kilobytes) stay out of the request's
        // own future, which is copied whole into its box on every request (BENCHMARKS.md).
        let claimed = match (self.spool(), &self.inner.store) {
            (None, Store::Memory(m)) if hold => m.hold_at(key, owner, self.lease(true), m.now()),
            (None, Store::Memory(m)) => m.reserve_at(key, owner, self.lease(false), m.now()),
            _ => Box::pin(self.claim(key, owner, hold)).await,
        };
        match claimed {
            Ok(Claim::Duplicate(existing))
                if !self.waits_for(existing)
                    && !self.spool().is_some_and(|s| s.must_wait(key, existing)) =>
            {
                InPlace::Duplicate(RecordResult::keyed(
                    Verdict::Duplicate,
                    existing.reason(),
                    *key,
                ))
            }
            claimed => InPlace::Settle(Some(claimed)),
        }
    }

    /// Runs [`Self::settle_claim`] to the end even if the request is cancelled: inline in the
    /// request's task, moved to a task of its own only if the request is dropped first
    /// ([`super::detach`]). The future owns what it logs, so the decision line, the history entry
    /// and the verdict count are written either way.
    pub(super) async fn settle_in_task(
        &self,
        seen: SystemTime,
        delivery: Delivery,
        rec: &Record<'_>,
        claimant: Claimant,
        claim: Option<Result<Claim, StoreError>>,
    ) -> RecordResult {
        let Claimant { owner, hold, alias } = claimant;
        let key = delivery.key;
        let told =
            crate::history::OwnedSubject::new(super::report::subject(&delivery.service, rec));
        let gateway = self.clone();
        let settle = super::detach::Detached::new(async move {
            let result = gateway.settle_claim(&delivery, owner, hold, claim).await;
            if let Some(alias) = alias {
                gateway.commit_alias(&alias, &result).await;
            }
            gateway.finish(seen, told.subject(), &result);
            result
        });
        match settle.await {
            Ok(result) => result,
            Err(e) => {
                // A panic mid-delivery: the request is retried.
                tracing::error!(dedup_key = %key, error = %e, "delivery task failed; answering 503");
                self.inner.metrics.verdict(Verdict::Failed);
                RecordResult::keyed(Verdict::Failed, "internal-error", key)
            }
        }
    }

    /// Reserves (or holds) `key` for `owner` with the lease of the mode.
    async fn claim(&self, key: &DedupKey, owner: Owner, hold: bool) -> Result<Claim, StoreError> {
        if let Some(spool) = self.spool() {
            return spool.claim(key, owner, hold).await;
        }
        let s = &self.inner.store;
        let lease = self.lease(hold);
        if hold {
            s.hold(key, owner, lease).await
        } else {
            s.reserve(key, owner, lease).await
        }
    }

    /// The lease a claim takes outside spool mode: a held copy's, or the configured one.
    fn lease(&self, hold: bool) -> std::time::Duration {
        if hold {
            self.inner.held.hold_lease()
        } else {
            self.inner.cfg.dedup.lease
        }
    }

    /// From the claim (already made by the memory store, `claim = Some`; made here for Redis) to
    /// its settlement: sync mode sends and commits or releases, or hands a held copy to the held
    /// queue; spool mode hands the record to the spool. Runs in its own task.
    async fn settle_claim(
        &self,
        delivery: &Delivery,
        owner: Owner,
        hold: bool,
        claim: Option<Result<Claim, StoreError>>,
    ) -> RecordResult {
        let key = delivery.key;
        if let Some(spool) = self.spool() {
            let admission = spool.admit(delivery, owner, hold, claim).await;
            return self.admitted(admission, delivery, owner, hold).await;
        }
        let mut claim = match claim {
            Some(claim) => claim,
            None => self.claim(&key, owner, hold).await,
        };
        if matches!(claim, Ok(Claim::Duplicate(e)) if self.waits_for(e)) {
            match self.await_original(&key, owner, hold).await {
                Some(c) => claim = c,
                None => {
                    return RecordResult::keyed(Verdict::Failed, "original-still-in-flight", key);
                }
            }
        }
        let preempted = match claim {
            Ok(Claim::Acquired) => false,
            Ok(Claim::Preempted) => true,
            Ok(Claim::Duplicate(Existing::Held)) if hold && self.inner.store.is_shared() => {
                // Another process holds it, in its memory only, and may be dead: this copy
                // becomes a backup (see `backs_up`).
                return self.backs_up(delivery);
            }
            Ok(Claim::Duplicate(existing)) => {
                return RecordResult::keyed(Verdict::Duplicate, existing.reason(), key);
            }
            Err(e) => return self.on_store_error(e, delivery, owner).await,
        };
        if hold {
            self.inner.held.schedule(delivery.clone(), owner);
            return RecordResult::keyed(Verdict::Held, "replication-pending", key);
        }
        self.send(delivery, owner, preempted).await
    }

    /// Sync mode with a shared store (Redis): a marked copy that meets another marked copy's hold.
    /// That hold lives in the memory of whichever replica took it, and dies with it; a
    /// `duplicate` answer here would lose the event with that replica (issue 13 item 10). So the
    /// copy is `held` too, under a fresh token that owns nothing: after its grace its held task
    /// finds the identity owned by the other copy and, as any held copy, gives way only once
    /// that copy is *delivered*; if the other's hold lapses instead, it takes the identity and
    /// delivers (`pipeline/held.rs`). The store lets only one of them claim it.
    fn backs_up(&self, delivery: &Delivery) -> RecordResult {
        self.inner.held.schedule(delivery.clone(), new_owner());
        RecordResult::keyed(Verdict::Held, "replication-pending-backup", delivery.key)
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
                Existing::InFlight => self.inner.store.is_shared(),
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
        let settler = &self.inner.settler;
        let outcome = settler.attempt(delivery, owner, Lost::Ignore).await;
        if outcome.is_delivered() {
            let reason = if preempted {
                "clean-copy-preempted-held"
            } else {
                "delivered"
            };
            return RecordResult::keyed(Verdict::Forwarded, reason, key);
        }
        if let Outcome::Permanent { status, reason } = &outcome
            && let Some(crate::spool::SpoolBackend::Local(dlq)) = self.inner.dlq.get()
        {
            let event = Undeliverable {
                delivery,
                held: false,
                accepted: SystemTime::now(),
                attempts: vec![Attempt {
                    at_ms: unix_ms(),
                    status: Some(*status),
                    outcome: reason.clone(),
                }],
                reason: reason.clone(),
            };
            // Written first, released after: a crash in between leaves the entry (see
            // `spool/dlq_direct.rs`). A failed write answers 503: nothing unstored is acknowledged.
            let written = dlq.dead_letter_new(event, false).await;
            settler.release(&key, owner, "a permanent refusal").await;
            return match written {
                Ok(_) => RecordResult {
                    verdict: Verdict::DeadLettered,
                    reason: reason.clone().into(),
                    key: Some(key),
                },
                Err(e) => RecordResult::keyed(Verdict::Failed, e.reason(), key),
            };
        }
        settler.release(&key, owner, "a failed delivery").await;
        RecordResult::failed(outcome.describe(), key)
    }

    /// A store error on the claim: 503 (fail-closed), or forwarded unchecked (fail-open). An
    /// unchecked delivery that OSCAR takes is still marked delivered (`Lost::MarkDelivered`: the
    /// commit finds no reservation of `owner` and inserts the identity as delivered), so that a
    /// later copy is a `duplicate` once the store answers again (issue 13 item 11); if the store
    /// is still down then, that is counted and logged, and the next copy may be forwarded again.
    async fn on_store_error(
        &self,
        e: StoreError,
        delivery: &Delivery,
        owner: Owner,
    ) -> RecordResult {
        self.inner.metrics.store_error();
        let key = delivery.key;
        match (self.inner.cfg.dedup.on_store_error, &e) {
            (OnStoreError::FailOpen, StoreError::Unavailable(_)) => {
                self.inner.metrics.fail_open();
                tracing::warn!(dedup_key = %key, error = %e, "dedup store failed; forwarding unchecked (fail-open)");
                let outcome = self
                    .inner
                    .settler
                    .attempt(delivery, owner, Lost::MarkDelivered)
                    .await;
                if outcome.is_delivered() {
                    RecordResult::keyed(Verdict::Forwarded, "fail-open-unchecked", key)
                } else {
                    RecordResult::failed(outcome.describe(), key)
                }
            }
            _ => {
                tracing::warn!(dedup_key = %key, error = %e, "dedup store failed; answering 503 (fail-closed)");
                RecordResult::keyed(Verdict::Failed, "dedup-store-unavailable", key)
            }
        }
    }

    /// Spool mode's answer: the spool claimed and stored the record in the order the store needs
    /// ([`crate::spool::Spool::admit`]); `held` or `accepted` (202) only once it is on disk and
    /// claimed.
    async fn admitted(
        &self,
        admission: Admission,
        delivery: &Delivery,
        owner: Owner,
        hold: bool,
    ) -> RecordResult {
        let key = delivery.key;
        match admission {
            Admission::Spooled { preempted } => spooled(hold, preempted, key),
            Admission::Duplicate(existing) => {
                RecordResult::keyed(Verdict::Duplicate, existing.reason(), key)
            }
            Admission::StoreFailed(e) => self.on_store_error(e, delivery, owner).await,
            Admission::Unclaimed(e) => {
                self.inner.metrics.store_error();
                tracing::warn!(dedup_key = %key, error = %e, "dedup store failed after the event was stored; accepted, the worker claims or delivers it (fail-open)");
                RecordResult::keyed(Verdict::Accepted, "spooled-unclaimed", key)
            }
            Admission::Refused(e) => RecordResult::keyed(Verdict::Failed, e.reason(), key),
        }
    }
}

/// The answer for a record that is on disk and claimed: `held`, or `accepted`.
fn spooled(hold: bool, preempted: bool, key: DedupKey) -> RecordResult {
    match (hold, preempted) {
        (true, _) => RecordResult::keyed(Verdict::Held, "replication-pending", key),
        (false, true) => RecordResult::keyed(Verdict::Accepted, "clean-copy-preempted-held", key),
        (false, false) => RecordResult::keyed(Verdict::Accepted, "spooled", key),
    }
}
