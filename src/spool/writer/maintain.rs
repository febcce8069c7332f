//! Upkeep between batches: checkpoint closed segments' identities into redb, sweep expired ones,
//! delete dead segments and move live records out of a mostly dead one.
//!
//! Why after the batch, and the copy on a thread of its own: none of these steps answers anyone.
//! The copy of a closed segment's identities is one redb transaction of thousands of inserts
//! (tens of milliseconds for a 32 MiB segment); run on the writer thread it stalled every batch
//! queued behind it (the spool path's p99 went from 10 to 25–30 ms). On the copier thread only a
//! dead-letter op, which needs redb's write lock too, can wait for it. A failure only postpones a
//! step: nothing is deleted before the copy it depends on has committed, and identities whose
//! copy failed go back to their segment for the next try.

use std::{sync::Arc, time::Instant};

use redb::{Database, ReadableTable};

use super::{
    COMMITTED, META, SWEEP_EVERY, SWEEP_MAX, SpoolError, Writer, committed_key, sweep, write_err,
};
use crate::{identity::DedupKey, spool::unix_ms};

/// Identities of closed segments, by segment number.
type Lists = Vec<(u64, Vec<(DedupKey, u64)>)>;

/// What the copier thread ends with: the segments now checkpointed, or the lists to give back.
pub(crate) type Copied = Result<Vec<u64>, (SpoolError, Lists)>;

impl Writer {
    /// Runs every step that is due; errors are logged and the step is tried again later.
    pub(super) fn maintain(&mut self) {
        self.collect_copy(false);
        self.start_copy();
        let shared = self.shared.clone();
        let Ok(mut j) = shared.journal.lock() else {
            return;
        };
        if let Err(e) = j.delete_dead() {
            tracing::warn!(error = %e, "dead journal segments not deleted yet");
        }
        match j.relocation() {
            Ok(Some(st)) => {
                if let Err(e) = j.write(st) {
                    tracing::warn!(error = %e, "journal relocation postponed");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "journal relocation postponed"),
        }
        let pending = !j.unlink.is_empty();
        drop(j);
        if pending {
            let gone = self.unlink_revived(Vec::new());
            super::add(&self.shared.dlq, -gone);
        }
    }

    /// Takes the copier's result once it is done (`wait`: waits for it, as at shutdown).
    pub(super) fn collect_copy(&mut self, wait: bool) {
        let shared = self.shared.clone();
        let Ok(mut j) = shared.journal.lock() else {
            return;
        };
        if !j.copier.as_ref().is_some_and(|t| wait || t.is_finished()) {
            return;
        }
        let Some(t) = j.copier.take() else { return };
        match t.join() {
            Ok(Ok(nos)) => j.checkpointed(&nos),
            Ok(Err((e, lists))) => {
                tracing::warn!(error = %e, "spool checkpoint postponed");
                j.give_back(lists);
                // redb wants a reopen after an I/O error (the writer's next job does it).
                self.shared.set_db(None);
            }
            Err(_) => tracing::error!("spool checkpoint thread panicked; retried"),
        }
    }

    /// Starts a copy of closed segments' identities (and a sweep, when one is due) unless one runs.
    fn start_copy(&mut self) {
        let sweep_due = self.last_sweep.elapsed() >= SWEEP_EVERY;
        let shared = self.shared.clone();
        let Ok(mut j) = shared.journal.lock() else {
            return;
        };
        if j.copier.is_some() {
            return;
        }
        let lists = j.take_checkpoint();
        if lists.is_empty() && !sweep_due {
            return;
        }
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => {
                tracing::warn!(error = %e, "spool checkpoint postponed");
                j.give_back(lists);
                return;
            }
        };
        if sweep_due {
            self.last_sweep = Instant::now();
        }
        let next_id = self.next_id;
        let spawned = std::thread::Builder::new()
            .name("spool-checkpoint".into())
            .spawn(move || copy(&db, lists, next_id, sweep_due));
        match spawned {
            Ok(t) => j.copier = Some(t),
            Err(e) => tracing::warn!(error = %e, "spool checkpoint thread not started"),
        }
    }
}

/// One transaction: the identities, the sweep, the id counter.
fn copy(db: &Arc<Database>, lists: Lists, next_id: u64, sweep_due: bool) -> Copied {
    let run = || -> Result<Vec<u64>, SpoolError> {
        let txn = db.begin_write().map_err(write_err)?;
        let now = unix_ms();
        {
            let mut committed = txn.open_table(COMMITTED).map_err(write_err)?;
            for (key, expires) in lists.iter().flat_map(|l| &l.1).filter(|(_, e)| *e > now) {
                committed
                    .insert(&committed_key(*expires, key)[..], ())
                    .map_err(write_err)?;
            }
            if sweep_due {
                let removed = sweep(&mut committed, now, SWEEP_MAX)?;
                if removed > 0 {
                    tracing::debug!(removed, "spool: expired delivered identities removed");
                }
            }
            // Ids of a deleted segment are gone from the journal; the counter keeps them used.
            let mut meta = txn.open_table(META).map_err(write_err)?;
            let stored = meta
                .get("next_id")
                .map_err(write_err)?
                .map_or(0, |v| v.value());
            meta.insert("next_id", next_id.max(stored))
                .map_err(write_err)?;
        }
        txn.commit().map_err(write_err)?;
        Ok(lists.iter().map(|l| l.0).collect())
    };
    run().map_err(|e| (e, lists.clone()))
}
