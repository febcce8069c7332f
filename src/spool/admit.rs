//! Admission: how an event enters the spool — claimed and on disk, or refused with nothing left
//! behind.
//!
//! The pipeline makes one call, [`Spool::admit`]; the order of the write and the claim is the
//! spool's business, because it is what keeps a crash from losing an acknowledged event:
//! - **memory store: claim, then write.** A crash between the two loses the claim with the
//!   process. A write that fails or is refused releases the claim: nothing that is not stored is
//!   acknowledged. A copy that meets the claim while the write is still in progress is not a
//!   `duplicate` yet: it waits for the write ([`super::durable`]) and claims again, so a
//!   `duplicate` is answered only once its original is on disk (§7), as with Redis. (A held copy this one preempted is still spooled; its worker finds the
//!   identity free again and delivers it, so the release cannot lose it.)
//! - **shared store (Redis): write, then claim.** The claim would outlive a crash and stand for a
//!   record that was never written: an orphan reservation for the whole retry horizon, and
//!   MinIO's retry answered `duplicate` for an event nobody has. Written first, every live entry
//!   in the store stands for a record on some gateway's disk, so a copy that meets one is safely
//!   a `duplicate` — which a read-only peek finds without writing anything, so repeats (the
//!   common case) cost no disk write. After the write: claimed → queued; a duplicate after all →
//!   removed; a store error → kept and claimed later by the workers, whatever
//!   `dedup.on_store_error` says. The failed claim may have taken effect unseen: removing the
//!   record would leave that entry standing for nothing, and MinIO's retry (of a 503, or of a
//!   failed unchecked forward) would be answered `duplicate` for an event nobody has. Fail-closed
//!   answers 503 all the same (the store is down); fail-open answers `accepted`
//!   ([`Admission::Unclaimed`]) and the worker delivers the record unchecked if the store is still
//!   down when its turn comes. (Removing the record and forwarding from the request instead, as
//!   fail-open once did, lost the event when that forward failed and the unseen claim outlived
//!   the store's repair release: `tests/it/jetstream/races.rs`.)

use std::time::Duration;

use super::{
    Spool, SpoolError, SpoolSettings, durable::Registered, ms, queue::Due, record::Entry, unix_ms,
    writer::Op,
};
use crate::{
    deliver::Delivery,
    identity::{DedupKey, Owner},
    store::{Claim, DedupStore, Existing, Store, StoreError},
};

/// How long a copy waits for an original's spool write in progress (beyond the group-commit
/// delay) before it is answered 503 instead of `duplicate`.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

/// What [`Spool::admit`] did with an event.
#[derive(Debug)]
pub enum Admission {
    /// On disk and claimed; the workers deliver it. `preempted`: taken over from a held copy.
    Spooled { preempted: bool },
    /// Another copy carries the identity; nothing of this one stays on disk.
    Duplicate(Existing),
    /// The dedup store failed before anything was stored; the caller applies
    /// `dedup.on_store_error`. (A record already written stays queued unclaimed: fail-closed
    /// answers 503 for it through this variant too.)
    StoreFailed(StoreError),
    /// Stored, but the claim after the write failed (shared store, fail-open): the record is
    /// queued unclaimed and the worker claims it, or delivers it unchecked while the store is
    /// down. Answered `accepted`: it is durable.
    Unclaimed(StoreError),
    /// Not stored (full, disk error, shutting down), and no claim left behind.
    Refused(SpoolError),
}

impl Spool {
    /// Claims `delivery`'s identity for `owner` (held when `hold`) and stores it durably, in the
    /// order the store needs (see the module doc). `claim`: the claim the caller already made
    /// with [`Self::claim`] (only with a store that is not shared), `None` to make it here.
    pub async fn admit(
        &self,
        delivery: &Delivery,
        owner: Owner,
        hold: bool,
        claim: Option<Result<Claim, StoreError>>,
    ) -> Admission {
        if self.inner.store.is_shared() {
            return self.write_then_claim(delivery, owner, hold).await;
        }
        let claim = match claim {
            Some(claim) => claim,
            None => self.claim(&delivery.key, owner, hold).await,
        };
        let claim = match self.until_durable(&delivery.key, owner, hold, claim).await {
            Some(claim) => claim,
            None => {
                tracing::warn!(dedup_key = %delivery.key, "the original's spool write is still pending; answering 503");
                return Admission::Refused(SpoolError::Write("original not yet durable".into()));
            }
        };
        match claim {
            Ok(Claim::Duplicate(existing)) => Admission::Duplicate(existing),
            Err(e) => Admission::StoreFailed(e),
            Ok(claim) => {
                self.write_claimed(delivery, owner, hold, claim == Claim::Preempted)
                    .await
            }
        }
    }

    /// Reserves (or holds) `key` for `owner` for the whole retry horizon (plus the grace). With
    /// the memory store the write this claim is for is registered first ([`super::durable`]);
    /// the registration ends here unless the claim succeeded, else when the write has.
    pub async fn claim(
        &self,
        key: &DedupKey,
        owner: Owner,
        hold: bool,
    ) -> Result<Claim, StoreError> {
        let store = &self.inner.store;
        let local = !store.is_shared();
        if local {
            self.inner.writes.begin(*key, owner);
        }
        let claim = claim_for(store, &self.inner.settings, key, owner, hold).await;
        if local && !matches!(claim, Ok(Claim::Acquired | Claim::Preempted)) {
            self.inner.writes.end(key, owner);
        }
        claim
    }

    /// Whether a copy that met `existing` must wait for a spool write of `key` in progress
    /// before it may be answered `duplicate` (memory store, see [`super::durable`]).
    pub fn must_wait(&self, key: &DedupKey, existing: Existing) -> bool {
        self.inner.writes.must_wait(key, existing)
    }

    /// A `duplicate` claim that met a write in progress waits for it and claims again, until the
    /// claim it meets stands for a record on disk (or it owns the identity itself). `None`: the
    /// write took longer than [`DURABLE_WAIT`] plus the group-commit delay.
    async fn until_durable(
        &self,
        key: &DedupKey,
        owner: Owner,
        hold: bool,
        mut claim: Result<Claim, StoreError>,
    ) -> Option<Result<Claim, StoreError>> {
        if !matches!(claim, Ok(Claim::Duplicate(e)) if self.must_wait(key, e)) {
            // The common case: no timer, and no copy of the wait's future.
            return Some(claim);
        }
        let bound = DURABLE_WAIT + self.inner.settings.group_commit_delay;
        let settle = async {
            while let Ok(Claim::Duplicate(existing)) = claim
                && self.must_wait(key, existing)
            {
                self.inner.writes.wait(key).await;
                // Reusing `owner` is safe: the `duplicate` it got changed nothing.
                claim = self.claim(key, owner, hold).await;
            }
            claim
        };
        tokio::time::timeout(bound, settle).await.ok()
    }

    /// The reservation lease of an accepted event.
    pub fn lease(&self) -> Duration {
        self.inner.settings.horizon()
    }

    /// The hold lease of a held record: its grace plus the retry horizon.
    pub fn hold_lease(&self) -> Duration {
        self.inner.settings.grace + self.inner.settings.horizon()
    }

    /// Memory store: the identity is claimed; write and queue the record, or release the claim.
    async fn write_claimed(
        &self,
        delivery: &Delivery,
        owner: Owner,
        hold: bool,
        preempted: bool,
    ) -> Admission {
        let key = delivery.key;
        // Copies waiting for this write go on once it is on disk, or failed and released.
        let _registered = Registered {
            writes: &self.inner.writes,
            key,
            owner,
        };
        match self.write(delivery, owner, hold).await {
            Ok((id, entry)) => {
                self.keep_for_delivery(id, entry, hold);
                self.enqueue(id, owner, hold);
                Admission::Spooled { preempted }
            }
            Err(e) => {
                if let Err(se) = self.inner.store.release(&key, owner).await {
                    self.inner.metrics.store_error();
                    tracing::warn!(dedup_key = %key, error = %se, "could not release after a failed spool write; the lease will");
                }
                tracing::warn!(dedup_key = %key, error = %e, "event not stored; answering 503");
                Admission::Refused(e)
            }
        }
    }

    /// Shared store: peek, write, claim, then queue, keep or remove the record.
    async fn write_then_claim(&self, delivery: &Delivery, owner: Owner, hold: bool) -> Admission {
        let key = delivery.key;
        if let Some(answer) = after_peek(self.inner.store.peek(&key).await, hold) {
            return answer;
        }
        let (id, entry) = match self.write(delivery, owner, hold).await {
            Ok(written) => written,
            Err(e) => {
                tracing::warn!(dedup_key = %key, error = %e, "event not stored; answering 503");
                return Admission::Refused(e);
            }
        };
        match self.claim(&key, owner, hold).await {
            Ok(claim @ (Claim::Acquired | Claim::Preempted)) => {
                self.keep_for_delivery(id, entry, hold);
                self.enqueue(id, owner, hold);
                Admission::Spooled {
                    preempted: claim == Claim::Preempted,
                }
            }
            Ok(Claim::Duplicate(existing)) => {
                self.discard(id).await;
                Admission::Duplicate(existing)
            }
            Err(e) => {
                // The record stays: the workers claim it once the store answers again (never
                // removing it on this error), and MinIO's retry of a 503 meets that claim.
                self.enqueue_unclaimed(id, owner, hold);
                if self.inner.settings.fail_open && matches!(e, StoreError::Unavailable(_)) {
                    Admission::Unclaimed(e)
                } else {
                    Admission::StoreFailed(e)
                }
            }
        }
    }

    /// Stores `delivery` durably (fsync'd, group-committed) without queueing it; returns its spool
    /// id for [`Self::enqueue`] or [`Self::discard`], and the record as written. A record left
    /// behind by a crash before either is claimed and queued (or dropped as a duplicate) by the
    /// restore.
    async fn write(
        &self,
        delivery: &Delivery,
        owner: Owner,
        held: bool,
    ) -> Result<(u64, Entry), SpoolError> {
        let i = &self.inner;
        let entry = new_entry(delivery, owner, held, i.settings.grace);
        let id = i
            .submit(Op::Append(entry.encode()))
            .await
            .inspect_err(|e| {
                if matches!(e, SpoolError::Full) {
                    i.spool_metrics.rejected_full.inc();
                }
            })?;
        Ok((id, entry))
    }

    /// Hands the record just written to its first delivery in memory ([`super::handoff`]); a
    /// held one is due only after its grace and is read from disk then.
    fn keep_for_delivery(&self, id: u64, entry: Entry, held: bool) {
        if !held {
            self.inner.handoff.put(id, entry);
        }
    }

    /// Queues a written record for delivery (after its grace when `held`); the caller owns its
    /// identity as `owner`.
    fn enqueue(&self, id: u64, owner: Owner, held: bool) {
        let wait = if held {
            self.inner.settings.grace
        } else {
            Duration::ZERO
        };
        self.inner.queue.push(Due {
            at: tokio::time::Instant::now() + wait,
            id,
            owner,
            claim: held,
            release_first: false,
        });
    }

    /// Queues a written record whose claim failed on a store error: the worker clears whatever
    /// that claim may have left under `owner`, then claims the identity afresh (or drops the
    /// record if another copy holds it), once the store answers again. Thus a record is never
    /// removed on a store error; it can only be delivered or found a duplicate.
    fn enqueue_unclaimed(&self, id: u64, owner: Owner, held: bool) {
        let s = &self.inner.settings;
        let wait = if held {
            s.grace
        } else {
            s.backoff.delay(1, None)
        };
        self.inner.queue.push(Due {
            at: tokio::time::Instant::now() + wait,
            id,
            owner,
            claim: true,
            release_first: true,
        });
    }

    /// Removes a written record that turned out not to be needed (its identity was a duplicate, or
    /// could not be claimed). Best effort: a record left behind is dropped as a duplicate by the
    /// next restore, or delivered if its identity is free by then.
    async fn discard(&self, id: u64) {
        if let Err(e) = self.inner.submit(Op::Remove { id }).await {
            tracing::warn!(spool_id = id, error = %e, "could not remove an unneeded spool record; the next restore will");
        }
    }
}

// Shared by both spool backends (`spool.backend`): the JetStream spool admits in the same orders
// with a publish in place of the disk write (`jetstream/admit.rs`).

/// Reserves (clean copy) or holds (`hold`) `key` for `owner` for an accepted event's whole life:
/// the retry horizon, plus the grace for a held copy.
pub(crate) async fn claim_for(
    store: &Store,
    s: &SpoolSettings,
    key: &DedupKey,
    owner: Owner,
    hold: bool,
) -> Result<Claim, StoreError> {
    if hold {
        store.hold(key, owner, s.grace + s.horizon()).await
    } else {
        store.reserve(key, owner, s.horizon()).await
    }
}

/// What the read-only peek of a shared store decides before anything is stored: `Some` is the
/// answer (a live identity is a `duplicate`, except a held one meeting a clean copy, which takes
/// it over; a store error), `None` goes on to store and claim.
pub(crate) fn after_peek(
    peeked: Result<Option<Existing>, StoreError>,
    hold: bool,
) -> Option<Admission> {
    match peeked {
        Ok(Some(existing)) if hold || existing != Existing::Held => {
            Some(Admission::Duplicate(existing))
        }
        Ok(_) => None,
        Err(e) => Some(Admission::StoreFailed(e)),
    }
}

/// The record an accepted event is kept as, accepted now (a held copy not before its grace).
pub(crate) fn new_entry(delivery: &Delivery, owner: Owner, held: bool, grace: Duration) -> Entry {
    let now = unix_ms();
    Entry {
        key: delivery.key,
        service: delivery.service.clone(),
        authorization: delivery
            .authorization
            .as_ref()
            .map(|a| a.as_bytes().to_vec()),
        body: delivery.body.clone(),
        accepted_ms: now,
        not_before_ms: if held {
            now.saturating_add(ms(grace))
        } else {
            0
        },
        held,
        attempts_made: 0,
        attempts: Vec::new(),
        dead: None,
        owner,
    }
}
