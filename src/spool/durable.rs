//! Writes in progress, so that a `duplicate` is answered only once its original is durable
//! (contract §7), on the memory store.
//!
//! With the memory store the claim comes before the spool write (see [`super::admit`]), so for
//! the length of one group commit an identity is reserved (or held) by a record that is not yet
//! on disk. A copy that met that claim and were answered `duplicate` at once would be
//! acknowledged while nothing durable carries the event: a crash before the commit loses both.
//! So a claim registers its write here *before* it asks the store (a copy that sees the claim
//! then also sees the registration, whatever thread it runs on), and the registration ends
//! when the write succeeded or failed and was released. A copy that meets a live reservation or
//! hold while a write of its identity is registered waits for that write, then claims again:
//! the claim it then meets stands for a record on disk, or the identity is free (the write
//! failed) and the copy is admitted itself.
//!
//! The cost stays off the hot path: a repeat of a delivered identity (`Existing::Delivered`)
//! never looks here, and a repeat of a claim whose write finished looks once (one uncontended
//! lock and lookup), without waiting. Only a copy arriving inside an original's group commit
//! waits, for at most that commit. Redis needs none of this: there the write precedes the claim.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

use crate::{
    identity::{DedupKey, Owner},
    store::Existing,
};

/// The writes of one identity in progress: the owner of each and a channel that closes when
/// it ends.
type InProgress = Vec<(Owner, watch::Sender<()>)>;

/// The writes registered per identity.
#[derive(Debug, Default, Clone)]
pub(crate) struct Writes {
    map: Arc<Mutex<HashMap<DedupKey, InProgress>>>,
}

impl Writes {
    /// Registers the write of `key` by `owner` (before its claim is made).
    pub(crate) fn begin(&self, key: DedupKey, owner: Owner) {
        let (tx, _) = watch::channel(());
        if let Ok(mut m) = self.map.lock() {
            m.entry(key).or_default().push((owner, tx));
        }
    }

    /// Ends the registration of `key` by `owner`: its waiters go on.
    pub(crate) fn end(&self, key: &DedupKey, owner: Owner) {
        if let Ok(mut m) = self.map.lock()
            && let Some(list) = m.get_mut(key)
        {
            list.retain(|(o, _)| *o != owner);
            if list.is_empty() {
                m.remove(key);
            }
        }
    }

    /// Whether a copy that met `existing` must wait before it is a `duplicate`: a claim (not a
    /// delivered identity) while a write of `key` is registered.
    pub(crate) fn must_wait(&self, key: &DedupKey, existing: Existing) -> bool {
        existing != Existing::Delivered && self.pending(key).is_some()
    }

    /// Waits until every write of `key` registered now has ended.
    pub(crate) async fn wait(&self, key: &DedupKey) {
        let Some(mut receivers) = self.pending(key) else {
            return;
        };
        for rx in &mut receivers {
            // The sender is dropped when the write ends; `changed` then returns an error.
            while rx.changed().await.is_ok() {}
        }
    }

    fn pending(&self, key: &DedupKey) -> Option<Vec<watch::Receiver<()>>> {
        let m = self.map.lock().ok()?;
        let list = m.get(key)?;
        Some(list.iter().map(|(_, tx)| tx.subscribe()).collect())
    }
}

/// Ends a registration when dropped (the write finished, failed, or its task was torn down).
pub(crate) struct Registered<'a> {
    pub writes: &'a Writes,
    pub key: DedupKey,
    pub owner: Owner,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.writes.end(&self.key, self.owner);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_waiter_goes_on_once_the_write_ends() {
        let w = Writes::default();
        let k = DedupKey([7; 16]);
        assert!(!w.must_wait(&k, Existing::InFlight));
        w.begin(k, 1);
        assert!(w.must_wait(&k, Existing::InFlight));
        assert!(
            !w.must_wait(&k, Existing::Delivered),
            "a delivered repeat never waits"
        );
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.wait(&k).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "waits while the write is registered");
        drop(Registered {
            writes: &w,
            key: k,
            owner: 1,
        });
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("goes on")
            .expect("no panic");
        assert!(!w.must_wait(&k, Existing::InFlight));
    }
}
