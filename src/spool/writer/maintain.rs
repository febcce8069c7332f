//! Upkeep between batches: checkpoint closed segments' identities into redb, sweep expired ones,
//! delete dead segments and move live records out of a mostly dead one.
//!
//! Why here and not in the batch: each step is rare (once per closed segment, once a minute) and
//! larger than a batch's own work, and none of them answers anyone; run after the batch was
//! answered, they stay off every request's latency except the next batch's. A failure only
//! postpones the step: nothing is deleted before the copy it depends on committed.

use std::time::Instant;

use super::{
    COMMITTED, META, SWEEP_EVERY, SWEEP_MAX, SpoolError, Writer, committed_key, sweep, write_err,
};
use crate::spool::unix_ms;

impl Writer {
    /// Runs every step that is due; errors are logged and the step is tried again later.
    pub(super) fn maintain(&mut self) {
        if let Err(e) = self.checkpoint_and_sweep() {
            tracing::warn!(error = %e, "spool checkpoint postponed");
            return;
        }
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

    /// Copies the identities of closed segments into `committed`, and sweeps expired ones when a
    /// sweep is due, in one transaction.
    fn checkpoint_and_sweep(&mut self) -> Result<(), SpoolError> {
        let shared = self.shared.clone();
        let mut j = shared
            .journal
            .lock()
            .map_err(|_| SpoolError::Write("journal poisoned".into()))?;
        let todo = j.checkpoint();
        let sweep_due = self.last_sweep.elapsed() >= SWEEP_EVERY;
        if todo.is_empty() && !sweep_due {
            return Ok(());
        }
        let db = self.db()?;
        let txn = db.begin_write().map_err(write_err)?;
        let now = unix_ms();
        let mut nos = Vec::new();
        {
            let mut committed = txn.open_table(COMMITTED).map_err(write_err)?;
            for (no, delivered) in &todo {
                for (key, expires) in delivered.iter().filter(|(_, e)| *e > now) {
                    committed
                        .insert(&committed_key(*expires, key)[..], ())
                        .map_err(write_err)?;
                }
                nos.push(*no);
            }
            if sweep_due {
                let removed = sweep(&mut committed, now, SWEEP_MAX)?;
                if removed > 0 {
                    tracing::debug!(removed, "spool: expired delivered identities removed");
                }
            }
            // Ids of a deleted segment are gone from the journal; the counter keeps them used.
            let mut meta = txn.open_table(META).map_err(write_err)?;
            meta.insert("next_id", self.next_id).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)?;
        if sweep_due {
            self.last_sweep = Instant::now();
        }
        j.checkpointed(&nos);
        Ok(())
    }
}
