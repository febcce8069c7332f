//! Recovery at start: what the disk knows goes back into the dedup store and the delivery queue
//! (see the "Recovery at start" section of [`super`]).
//!
//! Committed identities first, so an event that was delivered and recorded can never be
//! delivered again from a stale spool record; then every spooled event claims its identity
//! again (releasing its own entry first, which a shared store kept from before the restart) and
//! is queued. After the first store error the store is not asked again during the restore: with
//! Redis down every call costs a command timeout, and the restore precedes serving, so asking per
//! record would keep the gateway from starting for N timeouts. What is skipped: delivered
//! identities (a shared store usually still has them) and event claims, which the workers make
//! once the store answers again (or skip, fail-open).
//!
//! A *full* memory store (`StoreError::Full`: every slot in flight) is not a store that is down,
//! as on the request path, which fails open only on `Unavailable`: the restore goes on asking,
//! the identity it could not restore is skipped (logged), and an event it could not claim is
//! queued to be claimed by the worker once a delivery made room — never delivered unchecked.

use std::{sync::atomic::Ordering, time::Duration};

use super::{
    Spool, SpoolError,
    queue::Due,
    unix_ms,
    writer::{self, Op},
};
use crate::{
    identity::{DedupKey, Owner, new_owner},
    store::{Claim, DedupStore, StoreError},
};

/// What the restore did, for its log line; and whether the store failed during it.
#[derive(Debug, Default)]
struct Tally {
    restored_keys: usize,
    skipped_keys: usize,
    queued: usize,
    dropped: usize,
    store_down: bool,
    /// The memory store was full of identities in flight for some delivered ones.
    full: bool,
}

impl Spool {
    /// Puts what the disk knows back into the dedup store and the delivery queue.
    pub(super) async fn restore(
        &self,
        committed: Vec<(DedupKey, u64)>,
        events: Vec<writer::Restored>,
    ) {
        let now = unix_ms();
        let mut t = Tally::default();
        self.restore_committed(&committed, now, &mut t).await;
        for entry in events {
            if self.restore_event(entry, now, &mut t.store_down).await {
                t.queued += 1;
            } else {
                t.dropped += 1;
            }
        }
        if t.store_down {
            tracing::warn!(
                skipped_keys = t.skipped_keys,
                "restore skipped the dedup store after its first error; spooled events claim their identities when it answers again"
            );
        }
        if t.full {
            tracing::warn!(
                skipped_keys = t.skipped_keys,
                "dedup store full at restore; some delivered identities were not restored (raise dedup.max_entries)"
            );
        }
        tracing::info!(
            restored_keys = t.restored_keys,
            queued = t.queued,
            dropped = t.dropped,
            dlq = self.inner.shared.dlq.load(Ordering::Relaxed),
            "spool restored"
        );
    }

    /// Delivered identities that are still live go back into the store for their remaining TTL.
    async fn restore_committed(&self, committed: &[(DedupKey, u64)], now: u64, t: &mut Tally) {
        let i = &self.inner;
        for (key, expires) in committed {
            let ttl = Duration::from_millis(expires.saturating_sub(now));
            if ttl.is_zero() {
                continue;
            }
            if t.store_down {
                t.skipped_keys += 1;
                continue;
            }
            match i.store.insert_committed(key, ttl).await {
                Ok(()) => t.restored_keys += 1,
                // Full of identities in flight: this one is skipped, the store still serves.
                Err(StoreError::Full) => {
                    t.skipped_keys += 1;
                    t.full = true;
                }
                Err(e) => {
                    i.metrics.store_error();
                    t.store_down = true;
                    t.skipped_keys += 1;
                    tracing::warn!(dedup_key = %key, error = %e, "cannot restore delivered identities; the dedup store fails");
                }
            }
        }
    }

    /// One spooled event: claimed again and queued, queued unclaimed (true), or removed as a
    /// duplicate (false).
    async fn restore_event(
        &self,
        entry: writer::Restored,
        now: u64,
        store_down: &mut bool,
    ) -> bool {
        let i = &self.inner;
        let id = entry.id;
        let wait = Duration::from_millis(entry.not_before_ms.saturating_sub(now));
        // A shared store (Redis) outlives the process, and the record's own reservation (or
        // hold) from before the restart lasts the whole retry horizon: it would be taken for
        // another copy, and the acknowledged event dropped. So it is released first (owner-
        // checked: nobody else's entry is touched) and claimed again under the same token,
        // which stays the one on disk. A record without a token (older version) gets a new one,
        // written to disk before it is reserved (`record_fresh_owner`).
        if *store_down {
            self.defer_claim(&entry, wait);
            return true;
        }
        let (owner, released) = match entry.owner {
            0 => match self.record_fresh_owner(id).await {
                Ok(fresh) => (fresh, Ok(())),
                Err(e) => {
                    tracing::warn!(spool_id = id, error = %e, "cannot record an owner for an old-format record; the worker claims it");
                    self.defer_claim(&entry, wait);
                    return true;
                }
            },
            stored => (stored, i.store.release(&entry.key, stored).await.map(drop)),
        };
        let horizon = i.settings.horizon();
        let claim = match released {
            Ok(()) if entry.held => i.store.hold(&entry.key, owner, wait + horizon).await,
            Ok(()) => i.store.reserve(&entry.key, owner, horizon).await,
            Err(e) => Err(e),
        };
        match claim {
            Ok(Claim::Duplicate(existing)) => {
                // Delivered (and recorded) already, or another spooled copy carries it.
                tracing::info!(spool_id = id, dedup_key = %entry.key, reason = existing.reason(), "spooled copy is a duplicate; removed");
                if entry.held {
                    i.metrics.held_superseded();
                }
                let _ = i.submit(Op::Remove { id }).await;
                return false;
            }
            Ok(_) => i.queue.push(Due {
                at: tokio::time::Instant::now() + wait,
                id,
                owner,
                claim: entry.held,
                release_first: false,
            }),
            Err(StoreError::Full) => {
                // The store serves but is full of identities in flight: never a reason to
                // deliver unchecked (the request path fails open only on `Unavailable`). The
                // worker claims the identity once a delivery made room, as a request would
                // be answered 503 and sent again.
                i.metrics.store_error();
                self.defer_claim(&entry, wait);
            }
            Err(e) => {
                i.metrics.store_error();
                *store_down = true;
                tracing::warn!(dedup_key = %entry.key, error = %e, "cannot claim restored events; the dedup store fails");
                self.defer_claim(&entry, wait);
            }
        }
        true
    }

    /// A record without an owner token (an older version): a fresh token is written into it
    /// *before* it is reserved, so a crash (or a second restart) after the reserve finds the
    /// reservation named by the record and releases it, instead of taking it for another copy
    /// and dropping the acknowledged event.
    async fn record_fresh_owner(&self, id: u64) -> Result<Owner, SpoolError> {
        let i = &self.inner;
        let shared = i.shared.clone();
        let mut entry = tokio::task::spawn_blocking(move || writer::load(&shared, false, id))
            .await
            .map_err(|e| SpoolError::Read(e.to_string()))??;
        let fresh = new_owner();
        entry.owner = fresh;
        i.submit(Op::Update {
            id,
            entry: entry.encode(),
        })
        .await?;
        Ok(fresh)
    }

    /// Queues a restored event without having claimed its identity (the store failed): the
    /// worker releases the record's own entry and claims afresh once the store answers (as a
    /// request would wait for it). Under fail-open, a store still down when the worker runs does
    /// not hold it back: the release fails with `Unavailable` and `own` delivers unchecked under
    /// the record's own token.
    ///
    /// Never under a fresh token, fail-open or not: the store (Redis) kept the record's own
    /// reservation through the restart, for the whole retry horizon. A fresh token written over
    /// the record's own would leave that reservation named by nothing on disk; the worker would
    /// meet it as another copy in flight, and the next restart would drop the acknowledged event
    /// as its duplicate (found by the model, `store/model`, test
    /// `model_shared_fail_open_restore_releases_the_records_own_claim`).
    fn defer_claim(&self, entry: &writer::Restored, wait: Duration) {
        self.inner.queue.push(Due {
            at: tokio::time::Instant::now() + wait,
            id: entry.id,
            owner: entry.owner,
            claim: true,
            release_first: entry.owner != 0,
        });
    }
}
