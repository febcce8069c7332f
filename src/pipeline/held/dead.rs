//! A held copy that cannot be delivered goes to the dead-letter queue (contract §7): it was
//! acknowledged with 200 `held`, so nothing but an operator may end it. That covers a permanent
//! refusal (400/401/403/404), a spent retry budget (`delivery.max_attempts`, `delivery.max_age`,
//! or the dedup store failing past it) and a shutdown whose flush ran out of `http.shutdown_grace`
//! (the copy is cut off where it is: a delivery in flight at that moment may have reached OSCAR,
//! and a replay of it is then answered by the dedup store as any copy would be).
//!
//! The entry is written first (sync mode's DLQ-only spool, `spool/dlq_direct.rs`), then the claim
//! is given back; without a DLQ (a gateway built without one) the copy is logged and dropped.

use std::time::Duration;

use super::{HeldCopy, Inner};
use crate::{spool::Undeliverable, store::DedupStore};

/// How long a shutdown waits for the cut-off copies' dead-letter writes.
pub(super) const CUT_WRITE: Duration = Duration::from_secs(5);

impl Inner {
    /// Writes `copy` to the dead-letter queue with `reason`, then releases its claim.
    pub(super) async fn dead_letter(&self, copy: &HeldCopy<'_>, reason: &str) {
        let (key, service) = (copy.delivery.key, &copy.delivery.service);
        match self.dlq.get() {
            Some(dlq) => {
                let event = Undeliverable {
                    delivery: &copy.delivery,
                    held: true,
                    accepted: copy.seen,
                    attempts: copy.log.clone(),
                    reason: reason.to_string(),
                };
                if dlq.dead_letter_new(event, true).await.is_err() {
                    tracing::error!(dedup_key = %key, service = %service, reason, "held copy lost: the dead-letter queue refused it");
                }
            }
            None => {
                tracing::error!(dedup_key = %key, service = %service, reason, "held copy given up; no dead-letter queue: dropped");
            }
        }
        if let Err(e) = self.store.release(&key, copy.owner).await {
            self.metrics.store_error();
            tracing::warn!(dedup_key = %key, error = %e, "could not release a dead-lettered held copy's claim; its lease will");
        }
    }
}
