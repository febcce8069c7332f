//! Owning a queued record's identity before its send: clearing a claim that failed, claiming a
//! held or unclaimed record, and putting a new owner token on disk first. Split from
//! `worker.rs`: these are the steps where a store error, a failed claim that may have run unseen,
//! and fail-open meet, and they read best together.

use super::{Inner, SpoolError, queue::Due, record::Entry, writer::Op};
use crate::{
    identity::{Owner, new_owner},
    store::{Claim, DedupStore, Existing, StoreError},
};

/// Whether a held record may be delivered.
pub(super) enum ClaimResult {
    Deliver(Owner),
    Superseded,
    /// Owned by another copy that is not delivered (yet): look again later under this token,
    /// which owns nothing.
    Watch(Owner),
    /// Try again later, first releasing what this token may hold.
    Retry(Owner),
}

impl Inner {
    /// Makes sure the record's identity is owned, under a token the record names, before it is
    /// sent: clears a failed claim, claims (held, or unclaimed), records a new token. `None`:
    /// not now (queued again) or never (superseded and removed).
    pub(super) async fn own(&self, due: Due, entry: &mut Entry) -> Option<Owner> {
        let mut owner = due.owner;
        if due.release_first
            && let Err(e) = self.store.release(&entry.key, owner).await
        {
            self.metrics.store_error();
            if self.settings.fail_open && matches!(e, StoreError::Unavailable(_)) {
                // Fail-open: a store that is down does not hold the event back. Sent under the
                // record's own token, so that a failed claim that took effect unseen is the
                // entry the commit turns into "delivered".
                self.metrics.fail_open();
                tracing::warn!(dedup_key = %entry.key, error = %e, "cannot clear a failed claim; delivering unchecked (fail-open)");
                return Some(owner);
            }
            tracing::warn!(dedup_key = %entry.key, error = %e, "cannot clear a failed claim; will retry");
            self.later(due, self.settings.backoff.delay(1, None));
            return None;
        }
        if due.claim {
            match self.claim(due.id, entry, owner).await {
                ClaimResult::Deliver(o) => owner = o,
                ClaimResult::Superseded => {
                    self.metrics.held_superseded();
                    tracing::info!(dedup_key = %entry.key, service = %entry.service, "held copy superseded by a clean copy");
                    let _ = self.write_until_ok(|| Op::Remove { id: due.id }).await;
                    return None;
                }
                ClaimResult::Watch(owner) => {
                    self.watch(due, entry, owner).await;
                    return None;
                }
                ClaimResult::Retry(owner) => {
                    // A failed `claim_held` or `reserve` may have taken effect unseen (the entry is
                    // then held-delivering or reserved under `owner`, which the next claim would
                    // take for another copy): clear it first, as after a failed claim at acceptance.
                    let due = Due {
                        owner,
                        release_first: true,
                        ..due
                    };
                    self.later(due, self.settings.backoff.delay(1, None));
                    return None;
                }
            }
        }
        if owner != entry.owner && !self.record_owner(due, entry, owner).await {
            return None;
        }
        if !due.claim && !self.keep_reserved(due, entry, owner).await {
            return None;
        }
        Some(owner)
    }

    /// The identity is now owned under a token the record does not name (a record restored
    /// without one; a fresh token from `claim` is already on disk): put it on disk before the
    /// delivery, so that a restart releases this entry instead of taking it for another copy and
    /// dropping the event. False: not recorded (queued again, or the record is gone).
    async fn record_owner(&self, due: Due, entry: &mut Entry, owner: Owner) -> bool {
        entry.owner = owner;
        let r = self
            .submit(Op::Update {
                id: due.id,
                entry: entry.encode(),
            })
            .await;
        let Err(e) = r else {
            return true;
        };
        if due.claim {
            // Claimed here: give it back; the next try claims again.
            let _ = self.store.release(&entry.key, owner).await;
        }
        if !matches!(e, SpoolError::NotFound) {
            tracing::warn!(spool_id = due.id, error = %e, "cannot record the owner of a spooled event; will try again");
            self.later(due, self.settings.backoff.delay(1, None));
        }
        false
    }

    /// Claims a record's identity: a held one once its grace is over (see the module doc), or
    /// one whose claim at acceptance failed (`claim_held` then finds nothing, and it reserves).
    ///
    /// A fresh token is written into the record *before* it is used to reserve: a crash between
    /// the two must not leave a reservation that the record does not name (the restore releases
    /// only the named one, and would take the other for a copy in flight and drop the event).
    async fn claim(&self, id: u64, entry: &mut Entry, owner: Owner) -> ClaimResult {
        let lease = self.settings.horizon();
        match self.store.claim_held(&entry.key, owner, lease).await {
            Ok(true) => return ClaimResult::Deliver(owner),
            Ok(false) => {}
            Err(e) => {
                self.metrics.store_error();
                tracing::warn!(dedup_key = %entry.key, error = %e, "cannot claim held copy; will retry");
                return ClaimResult::Retry(owner);
            }
        }
        let fresh = new_owner();
        let previous = std::mem::replace(&mut entry.owner, fresh);
        if let Err(e) = self
            .submit(Op::Update {
                id,
                entry: entry.encode(),
            })
            .await
        {
            entry.owner = previous;
            tracing::warn!(spool_id = id, error = %e, "cannot record a new owner; will retry");
            return ClaimResult::Retry(owner);
        }
        match self.store.reserve(&entry.key, fresh, lease).await {
            Ok(Claim::Acquired | Claim::Preempted) => ClaimResult::Deliver(fresh),
            Ok(Claim::Duplicate(Existing::Delivered)) => ClaimResult::Superseded,
            Ok(Claim::Duplicate(_)) => ClaimResult::Watch(fresh),
            Err(e) => {
                self.metrics.store_error();
                tracing::warn!(dedup_key = %entry.key, error = %e, "cannot reserve held copy; will retry");
                ClaimResult::Retry(fresh)
            }
        }
    }
}
