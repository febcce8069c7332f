//! Owning a message's identity for one POST (the worker's step before the send), and giving it
//! back to the message between retries. Split from `worker.rs`: the token swap and its waits are
//! where the JetStream spool's races with the accepting request are settled, and read best alone.

use std::time::Duration;

use super::Inner;
use crate::{
    identity::{Owner, new_owner},
    spool::record::Entry,
    store::{Claim, DedupStore, Existing, StoreError},
};

/// How long a message that reached a worker before its accept's claim (shared store) waits for
/// that claim: it normally lands within milliseconds of the PubAck, and the default
/// `dedup.redis.command_timeout` (500 ms) bounds it, after which the accept has given up.
pub(super) const CLAIM_WAIT: Duration = Duration::from_millis(500);

/// Whether a message may be sent now.
pub(super) enum Own {
    /// Under this fresh token.
    Send(Owner),
    /// Delivered already (a redelivery after the commit, or a copy's message): ack.
    Done,
    /// Another delivery holds the identity, or the store failed: NAK, try later.
    Later,
    /// The accept's claim has not reached the store yet: NAK for [`CLAIM_WAIT`].
    Unclaimed,
}

impl Inner {
    /// Owns the identity for one POST. The message's own reservation (made at acceptance, or kept
    /// between retries, under `entry.owner`) is released and a fresh token reserves with the short
    /// `dedup.lease`: a second delivery of the same message (redelivered after `AckWait` while
    /// this one still runs) then meets this reservation and waits, instead of sending twice.
    /// A held copy does the same once its grace is over: its hold is released and reserved
    /// afresh, unless a clean copy preempted it — then it waits until that one is delivered.
    ///
    /// On a shared store the accept publishes before it claims, and the consumer may hand the
    /// message to a worker before that claim has run. Taking the identity then would make the
    /// claim meet this delivery and answer `duplicate` for the event it just stored (never lost:
    /// the accept keeps such a message, `admit.rs`). So a clean message whose first delivery
    /// finds nothing of its own to release waits [`CLAIM_WAIT`] once (`first`).
    pub(super) async fn own(&self, entry: &Entry, first: bool) -> Own {
        let fresh = new_owner();
        match self.swap(entry, fresh, first).await {
            Ok(Some(true)) => Own::Send(fresh),
            Ok(None) => Own::Unclaimed,
            Ok(Some(false)) => match self.store.peek(&entry.key).await {
                Ok(Some(Existing::Delivered)) => Own::Done,
                Ok(_) => Own::Later,
                // Another copy owns it (the swap said so): never sent unchecked beside it.
                Err(e) => {
                    self.store_failed(entry, e, None);
                    Own::Later
                }
            },
            Err(e) => self.store_failed(entry, e, Some(fresh)),
        }
    }

    /// Releases `entry.owner`'s claim and reserves for `fresh` (short lease); true if acquired.
    /// `None`: nothing to release on a `first` delivery of a clean message (shared store), so
    /// nothing reserved — the accept's claim may still be on its way (see [`Self::own`]).
    async fn swap(
        &self,
        entry: &Entry,
        fresh: Owner,
        first: bool,
    ) -> Result<Option<bool>, StoreError> {
        let store = &self.store;
        let released = store.release(&entry.key, entry.owner).await?;
        if !released && first && !entry.held && store.is_shared() {
            return Ok(None);
        }
        match store
            .reserve(&entry.key, fresh, self.settings.lease_margin)
            .await?
        {
            Claim::Acquired | Claim::Preempted => Ok(Some(true)),
            Claim::Duplicate(_) => Ok(Some(false)),
        }
    }

    /// The store failed while owning: wait (fail-closed, or a store that is full rather than
    /// down), or send unchecked under `fresh` (fail-open, when given; see the module doc).
    fn store_failed(&self, entry: &Entry, e: StoreError, fresh: Option<Owner>) -> Own {
        self.metrics.store_error();
        if let Some(fresh) = fresh
            && self.settings.fail_open
            && matches!(e, StoreError::Unavailable(_))
        {
            self.metrics.fail_open();
            tracing::warn!(dedup_key = %entry.key, error = %e, "dedup store failed; delivering unchecked (fail-open)");
            return Own::Send(fresh);
        }
        tracing::warn!(dedup_key = %entry.key, error = %e, "dedup store fails; the delivery waits");
        Own::Later
    }

    /// After a retryable failure: the identity goes back under the message's own token for the
    /// retry horizon (best effort: if it is lost, a copy may be spooled meanwhile, and whichever
    /// delivers first makes the other find the identity delivered).
    pub(super) async fn keep_reserved(&self, entry: &Entry, fresh: Owner) {
        self.settler.release(&entry.key, fresh, "retry").await;
        if let Err(e) = self
            .store
            .reserve(&entry.key, entry.owner, self.settings.horizon())
            .await
        {
            self.metrics.store_error();
            tracing::warn!(dedup_key = %entry.key, error = %e, "cannot keep the identity reserved between retries");
        }
    }
}
