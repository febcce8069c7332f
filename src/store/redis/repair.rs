//! Background repairs of the Redis store (see [`super`]): after an operation failed without a
//! known outcome, the owner-checked release or commit is retried until Redis answers; on a
//! cluster every commit is also confirmed on a replica and re-applied until one has it.

use std::{sync::atomic::Ordering, time::Duration};

use super::{PROBE_MAX, PROBE_MIN, RedisStore, px, scripts::*};
use crate::store::{Owner, StoreError};

/// How many repairs may wait at once; beyond it a failed operation is left to its lease.
pub(super) const MAX_REPAIRS: usize = 10_000;
/// How long a repair keeps trying: past sync mode's default lease (`dedup.lease`, 120 s). Spool
/// mode's leases are far longer (the retry horizon) but do not rely on repairs: there a failed
/// claim keeps its record and the spool clears the entry itself (`Spool::admit`).
pub(super) const REPAIR_WINDOW: Duration = Duration::from_secs(180);
/// How long after a commit its confirmation first reads it on a replica.
pub(super) const CONFIRM_AFTER: Duration = Duration::from_millis(100);
/// Which repair a failed operation needs.
#[derive(Debug, Clone, Copy)]
pub(super) enum Repair {
    Release,
    Commit(Duration),
    /// Cluster: re-apply a delivered identity's commit until a replica confirms it.
    Confirm(Duration),
}

impl RedisStore {
    /// Retries an owner-checked release or commit in the background until Redis answers or the
    /// repair window ends. Bounded in count ([`MAX_REPAIRS`]) and in time ([`REPAIR_WINDOW`]).
    pub(super) fn repair(&self, key: Vec<u8>, owner: Owner, what: Repair) {
        // Confirmations (one per commit on a cluster) may use only half the budget, so that they
        // never crowd out the repairs that keep an event from being lost.
        let confirm = matches!(what, Repair::Confirm(_));
        if confirm && self.inner.repairs.load(Ordering::Relaxed) >= MAX_REPAIRS / 2 {
            tracing::debug!(
                store = "redis",
                "too many commits awaiting confirmation; not confirming this one"
            );
            return;
        }
        if self.inner.repairs.fetch_add(1, Ordering::Relaxed) >= MAX_REPAIRS {
            self.inner.repairs.fetch_sub(1, Ordering::Relaxed);
            // Once per overflow episode, not once per request.
            if self.inner.repairs_overflowed.swap(true, Ordering::Relaxed) {
                return;
            }
            tracing::warn!(
                store = "redis",
                "too many pending dedup repairs; leaving this one to its lease"
            );
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + REPAIR_WINDOW;
            let mut delay = PROBE_MIN;
            if confirm {
                // Replication takes a moment: look on the replica only after it.
                tokio::time::sleep(CONFIRM_AFTER).await;
            }
            loop {
                let r = match what {
                    Repair::Release => store.run(RELEASE, &key, owner, 1).await.map(Some),
                    Repair::Commit(ttl) => store.run(COMMIT, &key, owner, px(ttl)).await.map(Some),
                    Repair::Confirm(ttl) => store.confirm_once(&key, owner, ttl).await,
                };
                if let Ok(Some(changed)) = r {
                    store
                        .inner
                        .repairs_overflowed
                        .store(false, Ordering::Relaxed);
                    tracing::debug!(
                        store = "redis",
                        ?what,
                        changed = changed == 1,
                        "dedup repair done"
                    );
                    break;
                }
                if tokio::time::Instant::now() + delay >= deadline {
                    tracing::debug!(
                        store = "redis",
                        ?what,
                        "dedup repair gave up; the entry's own expiry will clear it"
                    );
                    break;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(PROBE_MAX);
            }
            store.inner.repairs.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// One round of [`Repair::Confirm`]: `Some(0)` once a replica has the commit; else the
    /// commit is re-applied on the master (a no-op where it is there) and `None` says look again.
    /// The replica read does not touch the health flag: a slow replica is not an outage.
    async fn confirm_once(
        &self,
        key: &[u8],
        owner: Owner,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let read = tokio::time::timeout(self.inner.timeout, self.inner.conn.get_on_replica(key));
        if let Ok(Ok(Some(v))) = read.await
            && v == b"C"
        {
            return Ok(Some(0));
        }
        self.run(CONFIRM, key, owner, px(ttl)).await?;
        Ok(None)
    }
}
