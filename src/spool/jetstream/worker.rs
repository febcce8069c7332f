//! Delivery from the shared consumer: every replica pulls, at most `delivery.concurrency` messages
//! at a time (it asks for no more than it has permits for, so no message waits in a local buffer
//! while its `AckWait` runs).
//!
//! One message: wait out a held copy's grace (NAK delayed to its not-before time) → own the
//! identity under a fresh token with the short `dedup.lease` (see [`Inner::own`]) → POST through
//! the settle path, which commits on 2xx, with in-progress acks every third of `AckWait` → ack.
//! A retryable answer re-reserves the identity under the message's own token for the retry
//! horizon (copies meanwhile are `duplicate`) and NAKs with the backoff delay; a permanent answer
//! or a spent budget publishes the entry to the dead-letter stream, then releases and acks.
//! A failed ack is harmless: the redelivery finds the identity delivered and only acks.
//!
//! Each failed attempt is also added to the message's history ([`super::attempts`]), which the
//! dead-letter entry lists. A dedup store that is down (`StoreError::Unavailable`) while a
//! message's identity is being owned makes the delivery wait (NAK, fail-closed), or go ahead
//! unchecked (`dedup.on_store_error = "fail-open"`, counted): sent under a fresh token that owns
//! nothing, marked delivered on 2xx (`Lost::MarkDelivered`) once the store takes the commit —
//! what the request path does with a record it cannot claim (`pipeline/dedup/`).

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;
use reqwest::header::HeaderValue;
use tokio::sync::Semaphore;

use super::{
    Inner, attempts,
    own::{CLAIM_WAIT, Own},
};
use crate::{
    deliver::{Delivery, Outcome, settle::Lost},
    identity::Owner,
    spool::{
        record::{Attempt, Dead, Entry},
        unix_ms,
    },
};

/// How long one pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// Pulls until the stop token is cancelled.
pub(super) async fn pull(inner: Arc<Inner>) {
    let permits = Arc::new(Semaphore::new(inner.settings.concurrency));
    let mut failing = false;
    loop {
        let first = tokio::select! {
            _ = inner.stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let mut held = vec![first];
        while let Ok(p) = permits.clone().try_acquire_owned() {
            held.push(p);
        }
        let batch = inner
            .consumer
            .batch()
            .max_messages(held.len())
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => {
                failing = false;
                b
            }
            Err(e) => {
                // Once per outage at warn level: the pull is retried every 500 ms meanwhile.
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "cannot pull from the jetstream consumer; retrying");
                } else {
                    tracing::debug!(error = %e, "pull still failing");
                }
                drop(held);
                tokio::select! {
                    _ = inner.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = inner.stop.cancelled() => None,
                m = batch.next() => m,
            };
            match next {
                Some(Ok(msg)) => {
                    let Some(permit) = held.pop() else { break };
                    let item = inner.clone();
                    inner.tasks.spawn(async move {
                        item.handle(msg).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "pull batch ended with an error");
                    break;
                }
                None => break,
            }
        }
    }
    tracing::debug!("jetstream puller stopped");
}

impl Inner {
    async fn handle(&self, msg: Message) {
        let (delivered, seq) = match msg.info() {
            Ok(i) => (
                u32::try_from(i.delivered.max(1)).unwrap_or(u32::MAX),
                i.stream_sequence,
            ),
            Err(_) => (1, 0),
        };
        let mut entry = match Entry::decode(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(stream_seq = seq, error = %e, "undecodable message in the events stream; terminated");
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        if delivered > 1 {
            self.spool_metrics.jetstream_redeliveries.inc();
        }
        let now = unix_ms();
        if entry.not_before_ms > now {
            let wait = Duration::from_millis(entry.not_before_ms - now);
            self.nak(&msg, wait).await;
            return;
        }
        // Attempts made before this delivery: a held copy's first delivery only waited.
        let prior = delivered - 1 - u32::from(entry.held && delivered > 1);
        entry.attempts_made = prior;
        let budget = self.settings.budget();
        let age = Duration::from_millis(now.saturating_sub(entry.accepted_ms));
        // Only the age is checked before sending: the delivery count also counts the waits
        // (held grace, another copy in flight), so the attempt limit is applied after a real
        // failed attempt (`settle`).
        if prior > 0 && age >= self.settings.max_age {
            let owner = entry.owner;
            let why = format!("retries exhausted after {prior} deliveries (delivery.max_age)");
            self.dead_letter(&msg, seq, entry, owner, why).await;
            return;
        }
        let owner = match self.own(&entry, delivered == 1).await {
            Own::Send(owner) => owner,
            Own::Done => {
                if entry.held {
                    self.metrics.held_superseded();
                }
                tracing::info!(dedup_key = %entry.key, stream_seq = seq, "message already delivered; acked");
                self.ack(&msg).await;
                if prior > 0 {
                    self.forget_attempts(seq).await;
                }
                return;
            }
            Own::Later => {
                self.nak(&msg, budget.delay(prior.max(1), None)).await;
                return;
            }
            Own::Unclaimed => {
                tracing::debug!(dedup_key = %entry.key, stream_seq = seq, "message reached a worker before its accept's claim; looking again shortly");
                self.nak(&msg, CLAIM_WAIT).await;
                return;
            }
        };
        let outcome = self.attempt(&msg, &entry, owner).await;
        self.settle(&msg, seq, entry, owner, outcome).await;
    }

    /// POSTs under `owner`, sending in-progress acks while OSCAR takes its time.
    async fn attempt(&self, msg: &Message, entry: &Entry, owner: Owner) -> Outcome {
        let delivery = delivery(entry);
        let send = self.settler.attempt(&delivery, owner, Lost::MarkDelivered);
        tokio::pin!(send);
        let every = self.cfg.ack_wait / 3;
        loop {
            tokio::select! {
                outcome = &mut send => return outcome,
                _ = tokio::time::sleep(every) => {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            }
        }
    }

    async fn settle(
        &self,
        msg: &Message,
        seq: u64,
        mut entry: Entry,
        owner: Owner,
        outcome: Outcome,
    ) {
        let now = unix_ms();
        match outcome {
            Outcome::Delivered { status } => {
                self.ack(msg).await;
                self.delivered(&entry, status);
                if entry.attempts_made > 0 {
                    self.forget_attempts(seq).await;
                }
            }
            Outcome::Permanent { status, reason } => {
                entry.push_attempt(Attempt {
                    at_ms: now,
                    status: Some(status),
                    outcome: reason.clone(),
                });
                self.dead_letter(msg, seq, entry, owner, reason).await;
            }
            Outcome::Retryable {
                status,
                retry_after,
                reason,
            } => {
                let attempt = Attempt {
                    at_ms: now,
                    status,
                    outcome: reason.clone(),
                };
                entry.push_attempt(attempt.clone());
                let budget = self.settings.budget();
                let age = Duration::from_millis(now.saturating_sub(entry.accepted_ms));
                if budget.exhausted(entry.attempts_made, age) {
                    let why = format!(
                        "retries exhausted after {} attempts: {reason}",
                        entry.attempts_made
                    );
                    self.dead_letter(msg, seq, entry, owner, why).await;
                    return;
                }
                let delay = budget.delay(entry.attempts_made, retry_after);
                tracing::warn!(dedup_key = %entry.key, service = %entry.service, reason, attempt = entry.attempts_made, delay_ms = delay.as_millis() as u64, "delivery failed; retrying");
                self.metrics.retry();
                self.record_attempt(seq, entry.attempts_made, &attempt)
                    .await;
                self.keep_reserved(&entry, owner).await;
                self.nak(msg, delay).await;
            }
        }
    }

    /// Moves the entry to the dead-letter stream (PubAck awaited), then releases and acks. A
    /// failed publish NAKs instead: the event stays in the events stream and is tried again.
    async fn dead_letter(
        &self,
        msg: &Message,
        seq: u64,
        mut entry: Entry,
        owner: Owner,
        reason: String,
    ) {
        entry.dead = Some(Dead {
            at_ms: unix_ms(),
            reason: reason.clone(),
        });
        let current = std::mem::take(&mut entry.attempts);
        entry.attempts = attempts::merged(self.attempts_of(seq).await, current);
        let id = format!("{}:dlq:{seq}", entry.key.to_hex());
        if let Err(e) = self.send(&self.cfg.dlq_subject, entry.encode(), id).await {
            tracing::error!(dedup_key = %entry.key, error = %e, "could not move the event to the dead-letter stream; retrying later");
            self.nak(msg, self.settings.budget().delay(1, None)).await;
            return;
        }
        self.spool_metrics.dead_lettered.inc();
        self.settler
            .release(&entry.key, owner, "dead-lettered")
            .await;
        if owner != entry.owner {
            self.settler
                .release(&entry.key, entry.owner, "dead-lettered")
                .await;
        }
        self.ack(msg).await;
        self.forget_attempts(seq).await;
        tracing::error!(verdict = "dead-lettered", dedup_key = %entry.key, service = %entry.service, reason, attempts = entry.attempts_made, stream_seq = seq, "event moved to the dead-letter stream");
    }

    fn delivered(&self, entry: &Entry, status: u16) {
        let attempts = entry.attempts_made + 1;
        tracing::info!(verdict = "forwarded", dedup_key = %entry.key, service = %entry.service, status, attempts, "spooled event delivered");
        if let Some(h) = self.history.get() {
            let reason = if entry.held {
                "held-grace-elapsed"
            } else {
                "spooled-delivered"
            };
            let accepted = std::time::UNIX_EPOCH + Duration::from_millis(entry.accepted_ms);
            h.record_delivery(&entry.service, entry.key, reason, accepted, attempts);
        }
    }

    /// Acks and waits for the server's confirmation (a lost ack only means a redelivery that
    /// finds the identity delivered).
    async fn ack(&self, msg: &Message) {
        if let Err(e) = msg.double_ack().await {
            tracing::warn!(error = %e, "ack not confirmed; the message may be redelivered (and found delivered)");
        }
    }

    async fn nak(&self, msg: &Message, delay: Duration) {
        if let Err(e) = msg.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(error = %e, "nak failed; the message is redelivered after AckWait");
        }
    }
}

/// The request a message stands for.
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
