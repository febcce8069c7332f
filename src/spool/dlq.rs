//! The dead-letter queue's admin side: list a page, replay an entry into the spool, delete one.
//!
//! An event is dead-lettered by a worker ([`super::worker`]) after a permanent answer or once its
//! retries are exhausted, with every attempt kept. A replay is a fresh start (new retry budget
//! and age, never held again), but only if its identity is free: replaying an event whose
//! identity was delivered or is being delivered meanwhile would forward a duplicate.
//!
//! A reservation that no record names would block the identity for the whole retry horizon
//! with a shared store (Redis), which outlives a crash. Dead-lettering writes the entry (which
//! keeps the owner token) before it releases, and a replay writes its fresh token into the entry
//! before it reserves; so a crash between the two steps of either leaves a reservation the DLQ
//! entry names, and the next replay releases exactly that one (owner-checked) before it reserves.

use super::{
    Spool, SpoolError,
    queue::Due,
    record::Entry,
    unix_ms,
    writer::{self, Op},
};
use crate::{
    identity::new_owner,
    store::{Claim, DedupStore, Existing},
};

/// One page of the dead-letter queue.
#[derive(Debug)]
pub struct DlqPage {
    pub entries: Vec<(u64, Entry)>,
    /// The `after` of the next page, if there may be one.
    pub next: Option<u64>,
    /// Entries in the whole queue, from the same snapshot as `entries`.
    pub total: u64,
}

/// What replaying a dead-letter entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// Back in the spool; it will be delivered.
    Accepted,
    /// Its identity was delivered or is being delivered meanwhile; the entry stays in the DLQ.
    Duplicate(Existing),
}

impl Spool {
    /// A page of the dead-letter queue: up to `limit` entries with ids above `after`.
    pub async fn dlq_page(&self, after: Option<u64>, limit: usize) -> Result<DlqPage, SpoolError> {
        let shared = self.inner.shared.clone();
        let limit = limit.clamp(1, 1000);
        let (entries, total, next) =
            tokio::task::spawn_blocking(move || writer::dlq_page(&shared, after, limit))
                .await
                .map_err(|e| SpoolError::Read(e.to_string()))??;
        Ok(DlqPage {
            entries,
            next,
            total,
        })
    }

    /// Moves dead-letter entry `id` back into the spool for delivery, unless its identity was
    /// delivered or is being delivered meanwhile (then it stays: replaying would forward a duplicate).
    ///
    /// Every reservation stays named by a record on disk (the worker's order, see the module doc):
    /// the token the entry names is released first (an interrupted dead-lettering or replay may
    /// have left its entry standing), and a fresh token is written into the entry before it is
    /// reserved.
    pub async fn replay_dlq(&self, id: u64) -> Result<Replayed, SpoolError> {
        let i = &self.inner;
        let shared = i.shared.clone();
        let mut entry = tokio::task::spawn_blocking(move || writer::load(&shared, true, id))
            .await
            .map_err(|e| SpoolError::Read(e.to_string()))??;
        let store_failed = |e: crate::store::StoreError| {
            i.metrics.store_error();
            SpoolError::Write(e.to_string())
        };
        if entry.owner != 0 {
            i.store
                .release(&entry.key, entry.owner)
                .await
                .map_err(store_failed)?;
        }
        let owner = new_owner();
        entry.owner = owner;
        i.submit(Op::DlqUpdate {
            id,
            entry: entry.encode(),
        })
        .await?;
        match i
            .store
            .reserve(&entry.key, owner, i.settings.horizon())
            .await
        {
            Ok(Claim::Acquired | Claim::Preempted) => {}
            Ok(Claim::Duplicate(existing)) => return Ok(Replayed::Duplicate(existing)),
            Err(e) => return Err(store_failed(e)),
        }
        // A fresh start: new retry budget and age; a replayed event is never held again.
        entry.accepted_ms = unix_ms();
        entry.not_before_ms = 0;
        entry.held = false;
        entry.attempts_made = 0;
        entry.attempts.clear();
        entry.dead = None;
        if let Err(e) = i
            .submit(Op::Revive {
                id,
                entry: entry.encode(),
            })
            .await
        {
            let _ = i.store.release(&entry.key, owner).await;
            return Err(e);
        }
        tracing::info!(dlq_id = id, dedup_key = %entry.key, service = %entry.service, "dead-letter entry replayed");
        i.queue.push(Due {
            at: tokio::time::Instant::now(),
            id,
            owner,
            claim: false,
            release_first: false,
        });
        Ok(Replayed::Accepted)
    }

    /// Deletes dead-letter entry `id`.
    pub async fn delete_dlq(&self, id: u64) -> Result<(), SpoolError> {
        self.inner.submit(Op::DlqDelete { id }).await.map(|_| ())
    }
}
