//! Re-holding a held copy after a failed attempt (or a store error): release, hold again under
//! a fresh token for the backoff delay, wait. While it waits, a clean copy arriving meanwhile
//! still wins, as during the grace.

use std::time::Duration;

use super::{HeldCopy, Inner};
use crate::{
    identity::new_owner,
    store::{Claim, DedupStore, Existing, StoreError},
};

impl Inner {
    /// Releases the reservation, re-holds under a new owner for the backoff delay, and waits.
    /// Returns false when the copy should be given up (limits reached, or a clean copy took over).
    pub(super) async fn rehold_after_failure(
        &self,
        copy: &mut HeldCopy<'_>,
        retry_after: Option<Duration>,
    ) -> bool {
        if self.budget.exhausted(copy.attempt, copy.started.elapsed()) || self.flush.is_cancelled()
        {
            self.give_up(copy).await;
            return false;
        }
        self.metrics.retry();
        let delay = self.budget.delay(copy.attempt, retry_after);
        let delivery = copy.delivery.clone();
        // Until the old entry is known to be gone, a re-hold would find it (with a shared store
        // that outlives an outage) and wrongly conclude that another copy took over: retry the
        // release itself first.
        let mut released = false;
        loop {
            if !released {
                match self.store.release(&delivery.key, copy.owner).await {
                    Ok(_) => released = true,
                    Err(e) => {
                        if !self.store_failed(copy, e, delay).await {
                            return false;
                        }
                        continue;
                    }
                }
            }
            // A fresh token per attempt: a token is never reused after a store error.
            let next = new_owner();
            match self
                .store
                .hold(&delivery.key, next, delay + self.settings.lease)
                .await
            {
                Ok(Claim::Acquired) => {
                    copy.owner = next;
                    self.wait(delay).await;
                    return true;
                }
                Ok(Claim::Duplicate(Existing::Delivered)) => {
                    // Another copy was delivered meanwhile: it carried the trigger.
                    self.metrics.held_superseded();
                    return false;
                }
                Ok(_) => {
                    // Another copy owns the identity but is not delivered (yet): look again later
                    // rather than give way to it (issue 13 item 1). The next turn's claim fails
                    // and `take_back` decides.
                    self.wait(delay).await;
                    return true;
                }
                Err(e) => {
                    if !self.store_failed(copy, e, delay).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Past the retry limit (or shutting down after a failed attempt): to the dead-letter queue.
    async fn give_up(&self, copy: &HeldCopy<'_>) {
        let (key, service, attempts) = (copy.delivery.key, &copy.delivery.service, copy.attempt);
        tracing::error!(dedup_key = %key, service = %service, attempts, "held copy given up after its retry limit");
        let reason = if self.flush.is_cancelled() {
            "shutdown-after-failed-attempt"
        } else {
            "retries-exhausted"
        };
        self.dead_letter(copy, reason).await;
    }

    /// A store error while re-holding counts as an attempt: waits `delay` and returns true, or
    /// returns false when that spent the budget.
    async fn store_failed(&self, copy: &mut HeldCopy<'_>, e: StoreError, delay: Duration) -> bool {
        self.metrics.store_error();
        copy.attempt += 1;
        if self.budget.exhausted(copy.attempt, copy.started.elapsed()) {
            tracing::error!(dedup_key = %copy.delivery.key, error = %e, "held copy given up: dedup store unavailable");
            self.dead_letter(copy, "dedup-store-unavailable").await;
            return false;
        }
        self.wait(delay).await;
        true
    }
}

impl Inner {
    /// Another copy owns the identity and is not delivered: wait (not cut short by the shutdown
    /// flush, which would spin; the shutdown's cut dead-letters the copy instead) and take
    /// another turn, until `delivery.max_age`, then the dead-letter queue.
    pub(super) async fn watch<'a>(&'a self, copy: &mut HeldCopy<'a>) -> super::Next<'a> {
        if copy.started.elapsed() >= self.budget.max_age {
            tracing::error!(dedup_key = %copy.delivery.key, "held copy given up: the copy that owns its identity was never delivered");
            self.dead_letter(copy, "owner-never-delivered").await;
            return super::Next::Done;
        }
        tracing::debug!(dedup_key = %copy.delivery.key, "another copy owns the identity and is not delivered yet; looking again");
        tokio::time::sleep(self.budget.delay(1, None)).await;
        super::Next::Again
    }
}
