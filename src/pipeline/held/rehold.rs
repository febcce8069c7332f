//! Re-holding a held copy after a failed attempt (or a store error): release, hold again under
//! a fresh token for the backoff delay, wait. While it waits, a clean copy arriving meanwhile
//! still wins, as during the grace.

use std::time::{Duration, Instant};

use super::Inner;
use crate::{
    deliver::Delivery,
    identity::{Owner, new_owner},
    store::{Claim, DedupStore, StoreError},
};

impl Inner {
    /// Releases the reservation, re-holds under a new owner for the backoff delay, and waits.
    /// Returns false when the copy should be given up (limits reached, or a clean copy took over).
    pub(super) async fn rehold_after_failure(
        &self,
        delivery: &Delivery,
        owner: &mut Owner,
        attempt: &mut u32,
        started: Instant,
        retry_after: Option<Duration>,
    ) -> bool {
        if self.budget.exhausted(*attempt, started.elapsed()) || self.flush.is_cancelled() {
            self.give_up(delivery, *owner, *attempt).await;
            return false;
        }
        self.metrics.retry();
        let delay = self.budget.delay(*attempt, retry_after);
        // Until the old entry is known to be gone, a re-hold would find it (with a shared store
        // that outlives an outage) and wrongly conclude that another copy took over: retry the
        // release itself first.
        let mut released = false;
        loop {
            if !released {
                match self.store.release(&delivery.key, *owner).await {
                    Ok(_) => released = true,
                    Err(e) => {
                        if !self
                            .store_failed(delivery, e, attempt, started, delay)
                            .await
                        {
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
                    *owner = next;
                    self.wait(delay).await;
                    return true;
                }
                Ok(_) => {
                    // A clean copy (or another held one) owns the identity now: it carries the trigger.
                    self.metrics.held_superseded();
                    return false;
                }
                Err(e) => {
                    if !self
                        .store_failed(delivery, e, attempt, started, delay)
                        .await
                    {
                        return false;
                    }
                }
            }
        }
    }

    /// Past the retry limit (or shutting down): the claim is given back and the copy dropped.
    async fn give_up(&self, delivery: &Delivery, owner: Owner, attempts: u32) {
        let _ = self.store.release(&delivery.key, owner).await;
        tracing::error!(dedup_key = %delivery.key, service = %delivery.service, attempts, "held copy given up after its retry limit");
    }

    /// A store error while re-holding counts as an attempt: waits `delay` and returns true, or
    /// returns false when that spent the budget.
    async fn store_failed(
        &self,
        delivery: &Delivery,
        e: StoreError,
        attempt: &mut u32,
        started: Instant,
        delay: Duration,
    ) -> bool {
        self.metrics.store_error();
        *attempt += 1;
        if self.budget.exhausted(*attempt, started.elapsed()) {
            tracing::error!(dedup_key = %delivery.key, error = %e, "held copy given up: dedup store unavailable");
            return false;
        }
        self.wait(delay).await;
        true
    }
}
