//! Delivery workers: a time-ordered queue of spool ids, one dispatcher, and at most
//! `delivery.concurrency` deliveries at a time.
//!
//! The dispatcher takes a concurrency permit, waits for the earliest due item ([`super::queue`]),
//! and hands the item to a tracked task that owns the permit until the item's outcome is on disk.
//! Each item is a few named steps: load it, own its identity under a token the record names,
//! attempt it through the one settle path ([`crate::deliver::settle`]), then record the outcome —
//! delivered, queued again, or dead-lettered. Owning (clearing a failed claim, claiming, recording a
//! new token) is in [`super::own`]; keeping a reservation while queued, in [`super::keep`].
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
    identity::Owner,
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
