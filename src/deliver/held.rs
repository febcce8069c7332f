//! Held records in sync mode: PENDING-marked copies that wait out `pending_grace` in memory.
//!
//! A held copy owns its identity in the store as *held*. When the grace ends it tries to claim the
//! identity; if a clean copy arrived meanwhile, that copy took the identity over (and was
//! forwarded at once), so the held one is dropped — unless the identity is free again by then (the
//! clean copy's delivery failed and released it): the held copy was acknowledged, so it holds the
//! identity afresh and is delivered after all. Otherwise it is delivered like any event; while it
//! is, the identity is *held-delivering*, which copies arriving meanwhile wait out rather than
//! being acknowledged as duplicates (no request answers for a held copy; see [`crate::store`]).
//!
//! A failed delivery does not give up: the copy releases its reservation and *re-holds* the identity
//! for the backoff delay, so a clean copy arriving during the wait still wins, and retries until
//! `delivery.max_attempts` or `delivery.max_age`. On graceful shutdown every waiting copy is
//! delivered at once rather than dropped. What sync mode cannot do is survive a crash: these copies
//! live in memory only (contract §6a); spool mode keeps them on disk.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Delivery, Forwarder, Outcome, backoff::Backoff};
use crate::{
    identity::{Owner, new_owner},
    metrics::Metrics,
    store::{Claim, DedupStore, Store},
};

/// How many times one held copy takes a freed identity back (see [`Inner::run`]).
const MAX_TAKEOVERS: u32 = 8;

/// Settings the held-copy tasks need.
#[derive(Debug, Clone)]
pub struct HeldSettings {
    pub grace: Duration,
    pub lease: Duration,
    pub ttl: Duration,
    pub backoff: Backoff,
    pub max_attempts: u32,
    pub max_age: Duration,
    /// Deliveries of held copies at once (`delivery.concurrency`).
    pub concurrency: usize,
}

/// Spawns and tracks the held-copy tasks; cheap to clone.
#[derive(Debug, Clone)]
pub struct HeldQueue {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: HeldSettings,
    store: Store,
    forwarder: Forwarder,
    metrics: Metrics,
    /// Cancelled at shutdown: waiting copies stop waiting and are delivered at once.
    flush: CancellationToken,
    tasks: TaskTracker,
    /// Bounds the deliveries in flight, so a burst of held copies whose grace ends together (or a
    /// shutdown flush) does not open one upstream request each at once.
    permits: tokio::sync::Semaphore,
    /// Where late deliveries are recorded for `/admin/verdicts`; set once at start.
    history: std::sync::OnceLock<crate::history::History>,
}

impl HeldQueue {
    pub fn new(
        settings: HeldSettings,
        store: Store,
        forwarder: Forwarder,
        metrics: Metrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                permits: tokio::sync::Semaphore::new(settings.concurrency.max(1)),
                settings,
                store,
                forwarder,
                metrics,
                flush: CancellationToken::new(),
                tasks: TaskTracker::new(),
                history: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Records each held copy's late delivery in `history` (first call wins).
    pub fn set_history(&self, history: crate::history::History) {
        let _ = self.inner.history.set(history);
    }

    /// The lease a held reservation needs: the grace plus one delivery.
    pub fn hold_lease(&self) -> Duration {
        self.inner.settings.grace + self.inner.settings.lease
    }

    /// Starts the wait for a copy that now holds `delivery.key` as `owner`.
    pub fn schedule(&self, delivery: Delivery, owner: Owner) {
        let inner = self.inner.clone();
        inner.metrics.held_waiting(1);
        self.inner.tasks.spawn(async move {
            inner.run(delivery, owner).await;
            inner.metrics.held_waiting(-1);
        });
    }

    /// Delivers every waiting copy now and waits until all are done (or `limit` passes).
    pub async fn flush_and_wait(&self, limit: Duration) {
        self.inner.flush.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(limit, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                "held records still undelivered at shutdown: they are lost (sync mode keeps them in memory only)"
            );
        }
    }
}

impl Inner {
    async fn wait(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.flush.cancelled() => {}
        }
    }

    async fn run(&self, delivery: Delivery, mut owner: Owner) {
        let s = &self.settings;
        let started = Instant::now();
        let key = delivery.key;
        self.wait(s.grace).await;
        let mut attempt = 0u32;
        // Takeovers of a freed identity in a row; each needs another copy to have come and gone
        // (or the hold to have expired while waiting for a permit), but the loop is bounded all
        // the same.
        let mut takeovers = 0u32;
        // The permit kept across a takeover: queueing for it again could outlast the fresh
        // hold's lease, which then looks like yet another takeover, until the copy is dropped.
        let mut kept = None;
        loop {
            // Taken before the claim, so the wait for it does not eat into the claimed lease.
            // Given back before any backoff wait.
            let permit = match kept.take() {
                Some(p) => p,
                None => match self.permits.acquire().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            match self.store.claim_held(&key, owner, s.lease).await {
                // Only takeovers in a row are bounded: a hold that expired while the copy
                // waited for its turn also looks like one, once per delivery attempt.
                Ok(true) => takeovers = 0,
                Ok(false) => {
                    // Lost to a clean copy. If that copy's delivery failed, the identity is free.
                    let next = new_owner();
                    takeovers += 1;
                    match self.store.hold(&key, next, s.lease).await {
                        Ok(Claim::Acquired) if takeovers <= MAX_TAKEOVERS => {
                            tracing::info!(dedup_key = %key, service = %delivery.service, "the copy that superseded this held copy was not delivered; delivering the held copy");
                            owner = next;
                            kept = Some(permit);
                            continue;
                        }
                        Ok(Claim::Acquired) => {
                            let _ = self.store.release(&key, next).await;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            // Unknown state: try again later under a fresh token.
                            self.metrics.store_error();
                            tracing::warn!(dedup_key = %key, error = %e, "cannot re-hold superseded held copy; will retry");
                            owner = next;
                            drop(permit);
                            if !self
                                .rehold_after_failure(
                                    &delivery,
                                    &mut owner,
                                    &mut attempt,
                                    started,
                                    None,
                                )
                                .await
                            {
                                return;
                            }
                            continue;
                        }
                    }
                    self.metrics.held_superseded();
                    tracing::info!(dedup_key = %key, service = %delivery.service, "held copy superseded by a clean copy");
                    return;
                }
                Err(e) => {
                    // Unknown state: try again later rather than deliver unchecked.
                    self.metrics.store_error();
                    tracing::warn!(dedup_key = %key, error = %e, "cannot claim held copy; will retry");
                    drop(permit);
                    if !self
                        .rehold_after_failure(&delivery, &mut owner, &mut attempt, started, None)
                        .await
                    {
                        return;
                    }
                    continue;
                }
            }
            attempt += 1;
            let outcome = self.forwarder.send(&delivery).await;
            match &outcome {
                Outcome::Delivered { status } => {
                    if let Err(e) = self.store.commit(&key, owner, s.ttl).await {
                        self.metrics.store_error();
                        tracing::warn!(dedup_key = %key, error = %e, "delivered held copy but could not commit its key");
                    }
                    tracing::info!(verdict = "forwarded", dedup_key = %key, service = %delivery.service, status, attempt, "held copy delivered after its grace");
                    self.remember_delivery(&delivery, started, attempt);
                    return;
                }
                Outcome::Permanent { reason, .. } => {
                    let _ = self.store.release(&key, owner).await;
                    tracing::error!(dedup_key = %key, service = %delivery.service, reason, "held copy refused by upstream; dropped (sync mode has no dead-letter queue)");
                    return;
                }
                Outcome::Retryable {
                    retry_after,
                    reason,
                    ..
                } => {
                    tracing::warn!(dedup_key = %key, service = %delivery.service, reason, attempt, "held copy delivery failed; retrying");
                    let ra = *retry_after;
                    drop(permit);
                    if !self
                        .rehold_after_failure(&delivery, &mut owner, &mut attempt, started, ra)
                        .await
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Records a late delivery in the verdict history, when there is one.
    fn remember_delivery(&self, delivery: &Delivery, started: Instant, attempts: u32) {
        use crate::{history::Decision, verdict::Verdict};
        let Some(h) = self.history.get().filter(|h| h.is_enabled()) else {
            return;
        };
        let now = std::time::SystemTime::now();
        let reason = "held-grace-elapsed";
        let d = Decision::keyed(&delivery.service, delivery.key, Verdict::Forwarded, reason)
            .seen_at(now.checked_sub(started.elapsed()).unwrap_or(now))
            .delivered_at(Some(now), attempts);
        h.record(d);
    }

    /// Releases the reservation, re-holds under a new owner for the backoff delay, and waits.
    /// Returns false when the copy should be given up (limits reached, or a clean copy took over).
    async fn rehold_after_failure(
        &self,
        delivery: &Delivery,
        owner: &mut Owner,
        attempt: &mut u32,
        started: Instant,
        retry_after: Option<Duration>,
    ) -> bool {
        let s = &self.settings;
        if *attempt >= s.max_attempts || started.elapsed() >= s.max_age || self.flush.is_cancelled()
        {
            let _ = self.store.release(&delivery.key, *owner).await;
            tracing::error!(dedup_key = %delivery.key, service = %delivery.service, attempts = *attempt, "held copy given up after its retry limit");
            return false;
        }
        self.metrics.retry();
        let delay = s.backoff.delay((*attempt).max(1), retry_after);
        // Until the old entry is known to be gone, a re-hold would find it (with a shared store
        // that outlives an outage) and wrongly conclude that another copy took over: retry the
        // release itself first.
        let mut released = false;
        loop {
            if !released {
                match self.store.release(&delivery.key, *owner).await {
                    Ok(_) => released = true,
                    Err(e) => {
                        self.metrics.store_error();
                        *attempt += 1;
                        if *attempt >= s.max_attempts || started.elapsed() >= s.max_age {
                            tracing::error!(dedup_key = %delivery.key, error = %e, "held copy given up: dedup store unavailable");
                            return false;
                        }
                        self.wait(delay).await;
                        continue;
                    }
                }
            }
            // A fresh token per attempt: a token is never reused after a store error.
            let next = new_owner();
            match self.store.hold(&delivery.key, next, delay + s.lease).await {
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
                    self.metrics.store_error();
                    *attempt += 1;
                    if *attempt >= s.max_attempts || started.elapsed() >= s.max_age {
                        tracing::error!(dedup_key = %delivery.key, error = %e, "held copy given up: dedup store unavailable");
                        return false;
                    }
                    self.wait(delay).await;
                }
            }
        }
    }
}
