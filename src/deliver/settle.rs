//! Settle: one delivery attempt of a claimed identity, and what OSCAR's answer does to the claim.
//!
//! Every path that delivers — sync mode's request ([`crate::pipeline`]), sync mode's held copies
//! ([`crate::pipeline::held`]) and spool mode's workers ([`crate::spool`]) — owns the identity
//! under an owner token when it sends, and they all go through [`Settler`]:
//! - [`Settler::attempt`]: POST, classify ([`super::classify`]), and on 2xx commit the identity for
//!   the TTL. A commit that fails is counted and logged: OSCAR has the event all the same, and the
//!   identity may be forwarded again once its lease ends. A commit that finds the identity no
//!   longer ours ([`Lost`]) is ignored, or — for a durable event that must not be delivered twice
//!   — marked delivered anyway.
//! - Any other answer leaves the claim as it is, because what follows differs by path: the request
//!   releases it ([`Settler::release`]) and answers 503; a held copy re-holds it for its backoff; a
//!   spooled event keeps it while it retries and releases it once dead-lettered.
//! - [`RetryBudget`]: whether a failed event is tried again (`delivery.max_attempts`,
//!   `delivery.max_age`) and after which delay, the same for held copies and spooled events.
//!
//! Recording the delivery (the verdict history) is the caller's: this module knows neither the
//! history nor the verdicts.

use std::time::Duration;

use super::{Delivery, Forwarder, Outcome, backoff::Backoff};
use crate::{
    identity::{DedupKey, Owner},
    metrics::Metrics,
    store::{DedupStore, Store},
};

/// What a 2xx's commit does when the identity is no longer the sender's (its lease lapsed, or it
/// was delivered unchecked after a store error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// Leave the store as it is: whoever owns the identity now answers for it.
    Ignore,
    /// Mark the identity delivered all the same (`insert_committed`), or a later copy of a
    /// durable event would be forwarded again.
    MarkDelivered,
}

/// Sends claimed deliveries and settles their claims; cheap to clone.
#[derive(Debug, Clone)]
pub struct Settler {
    forwarder: Forwarder,
    store: Store,
    metrics: Metrics,
    /// How long a delivered identity is remembered (`dedup.ttl`).
    ttl: Duration,
}

impl Settler {
    pub fn new(forwarder: Forwarder, store: Store, metrics: Metrics, ttl: Duration) -> Self {
        Self {
            forwarder,
            store,
            metrics,
            ttl,
        }
    }

    /// POSTs `delivery`, whose identity `owner` holds, and commits the identity on 2xx (see the
    /// module doc). Any other outcome leaves the claim to the caller.
    pub async fn attempt(&self, delivery: &Delivery, owner: Owner, lost: Lost) -> Outcome {
        let outcome = self.forwarder.send(delivery).await;
        if outcome.is_delivered() {
            self.commit(&delivery.key, owner, lost).await;
        }
        outcome
    }

    async fn commit(&self, key: &DedupKey, owner: Owner, lost: Lost) {
        match self.store.commit(key, owner, self.ttl).await {
            Ok(true) => {}
            Ok(false) if lost == Lost::Ignore => {}
            Ok(false) => {
                if let Err(e) = self.store.insert_committed(key, self.ttl).await {
                    self.metrics.store_error();
                    tracing::warn!(dedup_key = %key, error = %e, "delivered but the identity could not be marked delivered");
                }
            }
            Err(e) => {
                // Delivered all the same; the identity may be forwarded again once its lease ends.
                self.metrics.store_error();
                tracing::warn!(dedup_key = %key, error = %e, "delivered but the commit failed");
            }
        }
    }

    /// Gives `owner`'s claim on `key` back after `why` (a failed delivery, a dead-lettered
    /// event). A failure is counted and logged; the claim's lease then ends it.
    pub async fn release(&self, key: &DedupKey, owner: Owner, why: &'static str) {
        if let Err(e) = self.store.release(key, owner).await {
            self.metrics.store_error();
            tracing::warn!(dedup_key = %key, error = %e, after = why, "could not release a claim; its lease will");
        }
    }

    /// The forwarder, for a delivery made without a claim (fail-open).
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }
}

/// How long a failed event is tried again, and how long it waits between tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryBudget {
    pub backoff: Backoff,
    /// `delivery.max_attempts`.
    pub max_attempts: u32,
    /// `delivery.max_age`: since the event was accepted.
    pub max_age: Duration,
}

impl RetryBudget {
    /// Whether an event that made `attempts` attempts and is `age` old is given up.
    pub fn exhausted(&self, attempts: u32, age: Duration) -> bool {
        attempts >= self.max_attempts || age >= self.max_age
    }

    /// The wait before the next attempt (`Retry-After` honoured within the backoff's bounds).
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        self.backoff.delay(attempts.max(1), retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> RetryBudget {
        RetryBudget {
            backoff: Backoff::try_new(Duration::from_millis(100), Duration::from_secs(2))
                .expect("valid backoff"),
            max_attempts: 3,
            max_age: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_budget_is_spent_at_either_limit() {
        let b = budget();
        assert!(!b.exhausted(0, Duration::ZERO));
        assert!(!b.exhausted(2, Duration::from_secs(59)));
        assert!(b.exhausted(3, Duration::ZERO));
        assert!(b.exhausted(1, Duration::from_secs(60)));
    }

    #[test]
    fn the_delay_grows_from_the_first_attempt_and_honours_retry_after() {
        let b = budget();
        // Zero attempts (a store error before any send) waits like the first one.
        for attempts in [0, 1] {
            let d = b.delay(attempts, None);
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{d:?}"
            );
        }
        let d = b.delay(3, None);
        assert!(
            d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
            "{d:?}"
        );
        // `Retry-After` lengthens the wait, within the backoff's cap.
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(30))),
            Duration::from_secs(2)
        );
    }
}
