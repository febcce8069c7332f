//! Delivery workers: a time-ordered queue of spool ids, one dispatcher, and at most
//! `delivery.concurrency` deliveries at a time.
//!
//! The dispatcher takes a concurrency permit, waits for the earliest due item ([`super::queue`]),
//! and hands the item to a tracked task that owns the permit until the item's outcome is on disk.
//! Each item is a few named steps: load it, own its identity under a token the record names,
//! attempt it through the one settle path ([`crate::deliver::settle`]), then record the outcome —
//! delivered, queued again, or dead-lettered.
//!
//! One item's life (contract §7):
//! - a held record first claims its identity (`claim_held`); if a clean copy took it over, the held
//!   record gives way only once that copy is *delivered* (the store says `Delivered`): then it is
//!   removed from the spool and counted as superseded. A copy merely in flight may still fail (its
//!   spool write refused as full, answered 503), so while the identity is owned by a copy not
//!   delivered, the held record is queued again and looks after the first backoff delay (up to
//!   the retry horizon, then the dead-letter queue). If the identity turned out to be free (the
//!   clean copy's own write failed and it released), the held record reserves it and is
//!   delivered after all — it was acknowledged, so it must not be lost (issue 13 item 1);
//! - 2xx: the identity is committed in the store, then `Delivered` (remove + remember the identity)
//!   is written; this write is retried until it succeeds, never the delivery;
//! - 400/401/403/404 and other permanent answers, or retries exhausted (`delivery.max_attempts`,
//!   `delivery.max_age`): moved to the dead-letter queue with every attempt, identity released;
//! - 429/5xx/timeouts/connection errors: the attempt is recorded and the item is queued again after
//!   the backoff delay (`Retry-After` honoured). The reservation is kept meanwhile, so copies arriving
//!   during the retries are duplicates — the original is durable. Before each send the
//!   reservation is renewed for the horizon (`keep_reserved`), so an event that waited in a long
//!   queue (slow OSCAR) cannot outlive its lease and let a copy be accepted and delivered again;
//!   one whose lease lapsed anyway re-reserves, or defers to the copy that took it.
//!
//! A delivery keeps its permit until `Delivered` is on disk, so at most `delivery.concurrency`
//! events can be in the crash window (OSCAR has them, the disk does not know yet) at any moment;
//! with concurrency 1 a crash repeats at most one delivery (what `tests/it/crash.rs` checks).
//!
//! Shutdown: the dispatcher stops taking items; running items finish (their outcome is written);
//! everything else simply stays on disk for the next start.
//!
//! Just over 400 lines: the item's steps in order (load → own → attempt → record); the
//! identity-keeping steps are in `keep.rs`.

use std::{sync::Arc, time::Duration};

use reqwest::header::HeaderValue;
use tokio::{sync::Semaphore, time::Instant};

use super::{
    Inner, SpoolError,
    queue::Due,
    record::{Attempt, Dead, Entry},
    unix_ms,
    writer::{self, Op},
};
use crate::{
    deliver::{Delivery, Outcome, settle::Lost},
    identity::{Owner, new_owner},
    store::{Claim, DedupStore, Existing, StoreError},
};

/// Runs until the spool's stop token is cancelled.
pub(crate) async fn dispatch(inner: Arc<Inner>) {
    let permits = Arc::new(Semaphore::new(inner.settings.concurrency));
    loop {
        let permit = tokio::select! {
            _ = inner.stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let due = tokio::select! {
            _ = inner.stop.cancelled() => break,
            d = inner.queue.next_due() => d,
        };
        let item = inner.clone();
        // Boxed: the spawn then moves a pointer, not the whole delivery future (several copies
        // of it per item without, measured with callgrind).
        inner.tasks.spawn(Box::pin(async move {
            item.run_item(due).await;
            drop(permit);
        }));
    }
    tracing::debug!("spool dispatcher stopped");
}

/// Whether a held record may be delivered.
enum ClaimResult {
    Deliver(Owner),
    Superseded,
    /// Owned by another copy that is not delivered (yet): look again later under this token,
    /// which owns nothing.
    Watch(Owner),
    /// Try again later, first releasing what this token may hold.
    Retry(Owner),
}

impl Inner {
    async fn load(&self, id: u64) -> Result<Entry, SpoolError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || writer::load(&shared, false, id))
            .await
            .map_err(|e| SpoolError::Read(e.to_string()))?
    }

    /// Queues `id` again after `delay`.
    pub(super) fn later(&self, due: Due, delay: Duration) {
        self.queue.push(Due {
            at: Instant::now() + delay,
            ..due
        });
    }

    /// One due item: load, own, attempt, record the outcome.
    async fn run_item(&self, due: Due) {
        let Some(mut entry) = self.load_due(due).await else {
            return;
        };
        let Some(owner) = self.own(due, &mut entry).await else {
            return;
        };
        let delivery = delivery(&entry);
        let outcome = self
            .settler
            .attempt(&delivery, owner, Lost::MarkDelivered)
            .await;
        let now = unix_ms();
        match outcome {
            Outcome::Delivered { status } => self.delivered(due.id, &entry, status, now).await,
            Outcome::Permanent { status, reason } => {
                entry.push_attempt(Attempt {
                    at_ms: now,
                    status: Some(status),
                    outcome: reason.clone(),
                });
                self.dead_letter(due.id, entry, owner, reason).await;
            }
            Outcome::Retryable {
                status,
                retry_after,
                reason,
            } => {
                entry.push_attempt(Attempt {
                    at_ms: now,
                    status,
                    outcome: reason.clone(),
                });
                self.retry_or_dead_letter(due, entry, owner, retry_after, reason, now)
                    .await;
            }
        }
    }

    /// The due record, or `None`: gone meanwhile, or unreadable (queued again). The first run of
    /// a record just admitted takes it from the hand-off, as written ([`super::handoff`]).
    async fn load_due(&self, due: Due) -> Option<Entry> {
        if let Some(entry) = self.handoff.take(due.id) {
            return Some(entry);
        }
        match self.load(due.id).await {
            Ok(e) => Some(e),
            Err(SpoolError::NotFound) => None,
            Err(e) => {
                tracing::warn!(spool_id = due.id, error = %e, "cannot read spooled event; will try again");
                // After a disk error only the writer reopens the database, on its next job; with
                // no other traffic that job never comes, so ask for one (it fails fast while the
                // disk still fails).
                let _ = self.submit(Op::Probe).await;
                self.later(
                    due,
                    self.settings
                        .backoff
                        .ceiling(1)
                        .max(Duration::from_millis(200)),
                );
                None
            }
        }
    }

    /// Makes sure the record's identity is owned, under a token the record names, before it is
    /// sent: clears a failed claim, claims (held, or unclaimed), records a new token. `None`:
    /// not now (queued again) or never (superseded and removed).
    async fn own(&self, due: Due, entry: &mut Entry) -> Option<Owner> {
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

    /// 2xx (the identity is committed by the settle path): `Delivered` is written — retried until
    /// it is, never the delivery — and the delivery recorded in the verdict history.
    async fn delivered(&self, id: u64, entry: &Entry, status: u16, now: u64) {
        let ttl = self.settings.ttl;
        let expires_ms = now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let key = entry.key;
        if self
            .write_until_ok(|| Op::Delivered {
                id,
                key,
                expires_ms,
            })
            .await
            .is_err()
        {
            tracing::error!(dedup_key = %key, "delivered but not recorded; it may be delivered again after a restart");
        }
        let attempts = entry.attempts_made + 1;
        tracing::info!(verdict = "forwarded", dedup_key = %entry.key, service = %entry.service, status, attempts, "spooled event delivered");
        if let Some(h) = self.history.get() {
            // The accept decision is already there (`accepted`/`held`); this adds when OSCAR
            // took it and after how many attempts.
            let reason = if entry.held {
                "held-grace-elapsed"
            } else {
                "spooled-delivered"
            };
            let accepted = std::time::UNIX_EPOCH + Duration::from_millis(entry.accepted_ms);
            h.record_delivery(&entry.service, key, reason, accepted, attempts);
        }
    }

    /// A retryable failure: queued again after the backoff (the reservation kept), or
    /// dead-lettered once the retry budget is spent.
    async fn retry_or_dead_letter(
        &self,
        due: Due,
        entry: Entry,
        owner: Owner,
        retry_after: Option<Duration>,
        reason: String,
        now: u64,
    ) {
        let budget = self.settings.budget();
        let age = Duration::from_millis(now.saturating_sub(entry.accepted_ms));
        if budget.exhausted(entry.attempts_made, age) {
            let why = format!(
                "retries exhausted after {} attempts: {reason}",
                entry.attempts_made
            );
            self.dead_letter(due.id, entry, owner, why).await;
            return;
        }
        let delay = budget.delay(entry.attempts_made, retry_after);
        tracing::warn!(dedup_key = %entry.key, service = %entry.service, reason, attempt = entry.attempts_made, delay_ms = delay.as_millis() as u64, "delivery failed; retrying");
        self.metrics.retry();
        // Recording the attempt is best effort: losing it only under-counts attempts.
        if let Err(e) = self
            .submit(Op::Update {
                id: due.id,
                entry: entry.encode(),
            })
            .await
        {
            tracing::warn!(spool_id = due.id, error = %e, "could not record the failed attempt");
        }
        self.later(
            Due {
                owner,
                claim: false,
                release_first: false,
                ..due
            },
            delay,
        );
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

    pub(super) async fn dead_letter(
        &self,
        id: u64,
        mut entry: Entry,
        owner: Owner,
        reason: String,
    ) {
        entry.dead = Some(Dead {
            at_ms: unix_ms(),
            reason: reason.clone(),
        });
        let bytes = entry.encode();
        if self
            .write_until_ok(|| Op::Dead {
                id,
                entry: bytes.clone(),
            })
            .await
            .is_err()
        {
            // Still in the spool on disk: it is retried after a restart, never lost.
            tracing::error!(dedup_key = %entry.key, "could not move the event to the dead-letter queue");
            return;
        }
        self.spool_metrics.dead_lettered.inc();
        self.settler
            .release(&entry.key, owner, "dead-lettered")
            .await;
        tracing::error!(verdict = "dead-lettered", dedup_key = %entry.key, service = %entry.service, reason, attempts = entry.attempts_made, dlq_id = id, "event moved to the dead-letter queue");
    }
}

/// The request a spooled record stands for.
fn delivery(entry: &Entry) -> Delivery {
    Delivery {
        service: entry.service.clone(),
        authorization: entry
            .authorization
            .as_deref()
            .and_then(|a| HeaderValue::from_bytes(a).ok()),
        body: entry.body.clone(),
        key: entry.key,
    }
}
