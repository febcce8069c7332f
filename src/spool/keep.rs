//! The worker's steps that keep an item's identity while it waits: a held record that meets a
//! copy not yet delivered keeps looking (`watch`), and a queued item renews its reservation before
//! each send (`keep_reserved`), so a long queue cannot let its lease lapse (issue 13 items 1, 3).
//! Split from `worker.rs` so each file holds one concern.

use std::time::Duration;

use super::{Inner, queue::Due, record::Entry, unix_ms, writer::Op};
use crate::{
    identity::Owner,
    store::{Claim, DedupStore, Existing, StoreError},
};

impl Inner {
    /// A held record whose identity another copy owns, not delivered: queued again after the
    /// first backoff delay, until the retry horizon; past it, dead-lettered (that copy never got
    /// delivered, and this one was acknowledged).
    pub(super) async fn watch(&self, due: Due, entry: &Entry, owner: Owner) {
        let age = Duration::from_millis(unix_ms().saturating_sub(entry.accepted_ms));
        if age >= self.settings.horizon() {
            let why = "the copy that owns its identity was never delivered".to_string();
            self.dead_letter(due.id, entry.clone(), owner, why).await;
            return;
        }
        tracing::debug!(dedup_key = %entry.key, "another copy owns the identity and is not delivered yet; looking again");
        let due = Due {
            owner,
            claim: true,
            release_first: false,
            ..due
        };
        self.later(due, self.settings.backoff.delay(1, None));
    }

    /// An item reserved earlier (at acceptance, at restore, or before its last retry) may have
    /// waited in the queue past its lease: the reservation is renewed for the horizon before
    /// the send. If it lapsed, the identity is reserved again under the same token; if another
    /// copy took it meanwhile, this item is not sent: removed once that copy was delivered,
    /// queued again while it is still on its way (it may yet fail and release). A store that is
    /// down: sent anyway with fail-open, else queued again. False: not now.
    pub(super) async fn keep_reserved(&self, due: Due, entry: &Entry, owner: Owner) -> bool {
        let lease = self.settings.horizon();
        let retry = self.settings.backoff.delay(1, None);
        let renewed = match self.store.renew(&entry.key, owner, lease).await {
            Ok(true) => return true,
            Ok(false) => self.store.reserve(&entry.key, owner, lease).await,
            Err(e) => Err(e),
        };
        match renewed {
            Ok(Claim::Acquired | Claim::Preempted) => {
                tracing::warn!(dedup_key = %entry.key, "a queued event outlived its reservation; reserved again");
                true
            }
            Ok(Claim::Duplicate(Existing::Delivered)) => {
                tracing::info!(dedup_key = %entry.key, "another copy was delivered while this one was queued; removed");
                let _ = self.write_until_ok(|| Op::Remove { id: due.id }).await;
                false
            }
            Ok(Claim::Duplicate(_)) => {
                tracing::warn!(dedup_key = %entry.key, "another copy took the identity while this one was queued; waiting for its outcome");
                self.later(due, retry);
                false
            }
            Err(e) if self.settings.fail_open && matches!(e, StoreError::Unavailable(_)) => {
                // `on_store_error = "fail-open"`: a store that is down (never one that is full)
                // does not hold the event back, as on the request path; the settle path marks it
                // delivered once the store answers again.
                self.metrics.store_error();
                self.metrics.fail_open();
                tracing::warn!(dedup_key = %entry.key, error = %e, "cannot renew the reservation of a queued event; delivering unchecked (fail-open)");
                true
            }
            Err(e) => {
                self.metrics.store_error();
                tracing::warn!(dedup_key = %entry.key, error = %e, "cannot renew the reservation of a queued event; will retry");
                self.later(due, retry);
                false
            }
        }
    }
}
