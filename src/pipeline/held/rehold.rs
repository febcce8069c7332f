//! Re-holding a held copy after a failed attempt (or a store error): release, hold again under
//! a fresh token for the backoff delay, wait. While it waits, a clean copy arriving meanwhile
//! still wins, as during the grace.

use std::time::Duration;

use super::{HeldCopy, Inner};
use crate::{
    identity::new_owner,
    store::{Claim, DedupStore, StoreError},
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
                Ok(_) => {
                    // A clean copy (or another held one) owns the identity now: it carries the trigger.
                    self.metrics.held_superseded();
                    return false;
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
