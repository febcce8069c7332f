//! Held records in sync mode: PENDING-marked copies that wait out `pending_grace` in memory.
//!
//! A held copy owns its identity in the store as *held*. When the grace ends it tries to claim the
//! identity; if a clean copy arrived meanwhile, that copy took the identity over (and was
//! forwarded at once). The held copy gives way only to a copy that was *delivered* (the store
//! says `Delivered`): then it is dropped. A copy merely in flight may still fail (its request
//! answers 503, and MinIO without `queue_dir` drops it), so while the identity is owned by a copy
//! that is not delivered, the held copy looks again every `delivery.retry_initial` (up to
//! `delivery.max_age`, then the dead-letter queue); once the identity is free again it holds it
//! afresh and is delivered after all: it was acknowledged (issue 13 item 1). Otherwise it is delivered like any event, through
//! the one settle path ([`crate::deliver::settle`]); while it is, the identity is
//! *held-delivering*, which copies arriving meanwhile wait out rather than being acknowledged as
//! duplicates (no request answers for a held copy; see [`crate::store`]).
//!
//! A failed delivery does not give up: the copy releases its reservation and *re-holds* the identity
//! for the backoff delay, so a clean copy arriving during the wait still wins, and retries until
//! `delivery.max_attempts` or `delivery.max_age`. On graceful shutdown every waiting copy is
//! delivered at once rather than dropped. A copy that is refused permanently, runs out of
//! retries, or is still running when shutdown's grace ends goes to the dead-letter queue
//! (`held/dead.rs`, contract §7): it was acknowledged, so it must end where an operator sees it.
//! What sync mode cannot do is survive a crash: waiting copies live in memory only (contract
//! §6a); spool mode keeps them on disk.
//!
//! The queue sits in the pipeline, not in `deliver/`, because it is the pipeline's held copies in
//! sync mode (as [`crate::spool`] keeps them in spool mode) and records their late delivery in the
//! verdict history.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::SemaphorePermit;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

mod dead;
mod rehold;

use crate::{
    deliver::{
        Delivery, Forwarder, Outcome,
        backoff::Backoff,
        settle::{Lost, RetryBudget, Settler},
    },
    history::History,
    identity::{Owner, new_owner},
    metrics::Metrics,
    spool::{Spool, record::Attempt, unix_ms},
    store::{Claim, DedupStore, Existing, Store},
};

/// How many times one held copy takes a freed identity back (see [`Inner::take_back`]).
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
    budget: RetryBudget,
    store: Store,
    settler: Settler,
    metrics: Metrics,
    /// Cancelled at shutdown: waiting copies stop waiting and are delivered at once.
    flush: CancellationToken,
    /// Cancelled when the shutdown flush runs out of time: every copy still running stops where
    /// it is and goes to the dead-letter queue (see `held/dead.rs`).
    cut: CancellationToken,
    tasks: TaskTracker,
    /// Bounds the deliveries in flight, so a burst of held copies whose grace ends together (or a
    /// shutdown flush) does not open one upstream request each at once.
    permits: tokio::sync::Semaphore,
    /// Where late deliveries are recorded for `/admin/verdicts`; set once at start.
    history: std::sync::OnceLock<History>,
    /// Where a copy that cannot be delivered goes (sync mode's DLQ-only spool); set once at start.
    dlq: std::sync::OnceLock<Spool>,
}

/// One held copy on its way, from the end of its grace to its last attempt.
struct HeldCopy<'a> {
    delivery: Delivery,
    /// The token the copy owns the identity under now (a fresh one per re-hold).
    owner: Owner,
    started: Instant,
    /// When the copy was acknowledged (wall clock), for its dead-letter entry.
    seen: SystemTime,
    /// Each attempt's outcome, for its dead-letter entry.
    log: Vec<Attempt>,
    attempt: u32,
    /// Takeovers of a freed identity in a row; each needs another copy to have come and gone
    /// (or the hold to have expired while waiting for a permit), but they are bounded all the same.
    takeovers: u32,
    /// The permit kept across a takeover: queueing for it again could outlast the fresh hold's
    /// lease, which then looks like yet another takeover, until the copy is dropped.
    kept: Option<SemaphorePermit<'a>>,
}

/// What a copy does next.
enum Next<'a> {
    /// Its identity is claimed: deliver it, under this permit.
    Deliver(SemaphorePermit<'a>),
    /// Take another turn (a takeover, or a retry after its backoff).
    Again,
    /// Delivered, dropped or given up.
    Done,
}

impl HeldQueue {
    pub fn new(
        settings: HeldSettings,
        store: Store,
        forwarder: Forwarder,
        metrics: Metrics,
    ) -> Self {
        let budget = RetryBudget {
            backoff: settings.backoff,
            max_attempts: settings.max_attempts,
            max_age: settings.max_age,
        };
        let settler = Settler::new(forwarder, store.clone(), metrics.clone(), settings.ttl);
        Self {
            inner: Arc::new(Inner {
                permits: tokio::sync::Semaphore::new(settings.concurrency.max(1)),
                settings,
                budget,
                store,
                settler,
                metrics,
                flush: CancellationToken::new(),
                cut: CancellationToken::new(),
                tasks: TaskTracker::new(),
                history: std::sync::OnceLock::new(),
                dlq: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Records each held copy's late delivery in `history` (first call wins).
    pub fn set_history(&self, history: History) {
        let _ = self.inner.history.set(history);
    }

    /// Dead-letters the copies that cannot be delivered into `dlq` (first call wins).
    pub fn set_dlq(&self, dlq: Spool) {
        let _ = self.inner.dlq.set(dlq);
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
            .is_ok()
        {
            return;
        }
        tracing::warn!(
            "held records still undelivered at shutdown: moving them to the dead-letter queue"
        );
        self.inner.cut.cancel();
        if tokio::time::timeout(dead::CUT_WRITE, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                "held records could not be dead-lettered at shutdown: they are lost (sync mode keeps them in memory only)"
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

    /// One held copy: the grace, then turns of claim → deliver until it is done; cut off at
    /// shutdown (see `flush_and_wait`), it goes to the dead-letter queue.
    async fn run(&self, delivery: Delivery, owner: Owner) {
        let mut copy = HeldCopy {
            delivery,
            owner,
            started: Instant::now(),
            seen: SystemTime::now(),
            log: Vec::new(),
            attempt: 0,
            takeovers: 0,
            kept: None,
        };
        let cut = tokio::select! {
            () = self.turns(&mut copy) => false,
            () = self.cut.cancelled() => true,
        };
        if cut {
            self.dead_letter(&copy, "cut-off-by-shutdown").await;
        }
    }

    async fn turns<'a>(&'a self, copy: &mut HeldCopy<'a>) {
        self.wait(self.settings.grace).await;
        loop {
            // Taken before the claim, so the wait for it does not eat into the claimed lease.
            // Given back before any backoff wait.
            let permit = match copy.kept.take() {
                Some(p) => p,
                None => match self.permits.acquire().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let next = match self.claim(copy, permit).await {
                Next::Deliver(permit) => self.deliver(copy, permit).await,
                other => other,
            };
            if let Next::Done = next {
                return;
            }
        }
    }

    /// Claims the held identity once the grace is over.
    async fn claim<'a>(&'a self, copy: &mut HeldCopy<'a>, permit: SemaphorePermit<'a>) -> Next<'a> {
        let key = copy.delivery.key;
        match self
            .store
            .claim_held(&key, copy.owner, self.settings.lease)
            .await
        {
            // Only takeovers in a row are bounded: a hold that expired while the copy
            // waited for its turn also looks like one, once per delivery attempt.
            Ok(true) => {
                copy.takeovers = 0;
                Next::Deliver(permit)
            }
            Ok(false) => self.take_back(copy, permit).await,
            Err(e) => {
                // Unknown state: try again later rather than deliver unchecked.
                self.metrics.store_error();
                tracing::warn!(dedup_key = %key, error = %e, "cannot claim held copy; will retry");
                drop(permit);
                self.retry(copy, None).await
            }
        }
    }

    /// Lost the claim to another copy. If that copy's delivery failed, the identity is free: hold
    /// it again. The held copy gives way only to a copy that was *delivered*: one merely in flight
    /// (or held by another replica) may still fail, and the held copy was acknowledged, so it
    /// looks again after [`Inner::watch`] (issue 13 items 1 and 10).
    async fn take_back<'a>(
        &'a self,
        copy: &mut HeldCopy<'a>,
        permit: SemaphorePermit<'a>,
    ) -> Next<'a> {
        let key = copy.delivery.key;
        let next = new_owner();
        match self.store.hold(&key, next, self.settings.lease).await {
            Ok(Claim::Acquired) if copy.takeovers < MAX_TAKEOVERS => {
                tracing::info!(dedup_key = %key, service = %copy.delivery.service, "the copy that superseded this held copy was not delivered; delivering the held copy");
                copy.takeovers += 1;
                copy.owner = next;
                copy.kept = Some(permit);
                return Next::Again;
            }
            Ok(Claim::Acquired) => {
                // Too many takeovers in a row: count it as a failed attempt (the budget, then the
                // dead-letter queue, bounds it), never a drop.
                copy.owner = next;
                drop(permit);
                return self.retry(copy, None).await;
            }
            Ok(Claim::Duplicate(Existing::Delivered)) => {}
            Ok(_) => {
                drop(permit);
                return self.watch(copy).await;
            }
            Err(e) => {
                // Unknown state: try again later under a fresh token.
                self.metrics.store_error();
                tracing::warn!(dedup_key = %key, error = %e, "cannot re-hold superseded held copy; will retry");
                copy.owner = next;
                drop(permit);
                return self.retry(copy, None).await;
            }
        }
        self.metrics.held_superseded();
        tracing::info!(dedup_key = %key, service = %copy.delivery.service, "held copy superseded by a clean copy");
        Next::Done
    }

    /// One attempt through the settle path; a retryable failure re-holds for the backoff.
    async fn deliver<'a>(
        &'a self,
        copy: &mut HeldCopy<'a>,
        permit: SemaphorePermit<'a>,
    ) -> Next<'a> {
        let (key, service) = (copy.delivery.key, &copy.delivery.service);
        copy.attempt += 1;
        let attempt = copy.attempt;
        match self
            .settler
            .attempt(&copy.delivery, copy.owner, Lost::Ignore)
            .await
        {
            Outcome::Delivered { status } => {
                tracing::info!(verdict = "forwarded", dedup_key = %key, service = %service, status, attempt, "held copy delivered after its grace");
                if let Some(h) = self.history.get() {
                    let now = SystemTime::now();
                    let seen = now.checked_sub(copy.started.elapsed()).unwrap_or(now);
                    h.record_delivery(service, key, "held-grace-elapsed", seen, attempt);
                }
                Next::Done
            }
            Outcome::Permanent { status, reason } => {
                tracing::error!(dedup_key = %key, service = %service, reason, "held copy refused by upstream");
                copy.log.push(attempt_of(Some(status), &reason));
                self.dead_letter(copy, &reason).await;
                Next::Done
            }
            Outcome::Retryable {
                retry_after,
                reason,
                status,
            } => {
                copy.log.push(attempt_of(status, &reason));
                tracing::warn!(dedup_key = %key, service = %service, reason, attempt, "held copy delivery failed; retrying");
                drop(permit);
                self.retry(copy, retry_after).await
            }
        }
    }

    async fn retry<'a>(
        &'a self,
        copy: &mut HeldCopy<'a>,
        retry_after: Option<Duration>,
    ) -> Next<'a> {
        if self.rehold_after_failure(copy, retry_after).await {
            Next::Again
        } else {
            Next::Done
        }
    }
}

/// One attempt's outcome, as its dead-letter entry keeps it.
fn attempt_of(status: Option<u16>, outcome: &str) -> Attempt {
    Attempt {
        at_ms: unix_ms(),
        status,
        outcome: outcome.to_string(),
    }
}
