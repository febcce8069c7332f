//! The two halves of a batch: the database's part (dead-letter rows), then the journal's (events).
//!
//! Why this order: the only op that moves an event between the two is dead-lettering (and its
//! reverse, a replay's revive). Writing the DLQ row before the journal's tombstone means a crash
//! between the two leaves the event in both places — which the start resolves by keeping it in
//! the spool (`db.rs`) — and never in neither. A revive writes the journal first and removes its
//! DLQ row after, in a third, small transaction, for the same reason. Ops that touch only one side
//! are answered from that side alone, so a journal failure does not fail a DLQ delete, and the
//! reverse.

use redb::ReadableTable;

use super::{
    DLQ, Delta, Job, META, Op, SpoolError, Writer,
    db::write_err,
    journal::{Journal, Staged},
};
use crate::spool::record::Entry;

type Answer = Result<u64, SpoolError>;
type Answers = [Option<Answer>];

/// A batch's journal part while it is put together: its frames, what they change in the
/// counters, and the revived ids whose DLQ rows go once the frames are durable.
#[derive(Default)]
struct Stage {
    st: Staged,
    mine: Delta,
    revived: Vec<u64>,
}

impl Op {
    /// Whether the op has a part in the database transaction.
    fn in_db(&self) -> bool {
        matches!(
            self,
            Op::Dead { .. }
                | Op::DeadNew(_)
                | Op::DlqDelete { .. }
                | Op::DlqUpdate { .. }
                | Op::Revive { .. }
                | Op::Probe
        )
    }
}

impl Op {
    /// About how many journal bytes the op writes.
    fn frame_bytes(&self) -> usize {
        match self {
            Op::Append(e) | Op::Update { entry: e, .. } | Op::Revive { entry: e, .. } => {
                e.len() + 17
            }
            Op::Delivered { .. } => 41,
            Op::Dead { .. } | Op::Remove { .. } => 17,
            _ => 0,
        }
    }
}

impl Writer {
    /// The dead-letter rows of the batch, in one redb transaction. Answers the ops that end here.
    pub(super) fn db_phase(
        &mut self,
        batch: &[Job],
        out: &mut Answers,
        delta: &mut Delta,
    ) -> Result<(), SpoolError> {
        if !batch.iter().any(|j| j.op.in_db()) {
            return Ok(());
        }
        let r = self.db_txn(batch, out);
        match r {
            Ok(dlq) => {
                delta.dlq += dlq;
                Ok(())
            }
            Err(e) => {
                // redb wants a reopen after an I/O error; drop the handle, reopen on the next job.
                self.shared.set_db(None);
                for a in out.iter_mut() {
                    *a = None;
                }
                Err(e)
            }
        }
    }

    fn db_txn(&mut self, batch: &[Job], out: &mut Answers) -> Result<i64, SpoolError> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(write_err)?;
        let first_id = self.next_id;
        let mut dlq_delta = 0;
        {
            let mut dlq = txn.open_table(DLQ).map_err(write_err)?;
            for (i, job) in batch.iter().enumerate() {
                match &job.op {
                    Op::Dead { id, entry } => {
                        let fresh = dlq.insert(*id, entry.as_slice()).map_err(write_err)?;
                        dlq_delta += i64::from(fresh.is_none());
                    }
                    Op::DeadNew(entry) => {
                        let id = self.next_id;
                        self.next_id += 1;
                        dlq.insert(id, entry.as_slice()).map_err(write_err)?;
                        dlq_delta += 1;
                        out[i] = Some(Ok(id));
                    }
                    Op::DlqDelete { id } => {
                        let gone = dlq.remove(*id).map_err(write_err)?.is_some();
                        dlq_delta -= i64::from(gone);
                        out[i] = Some(if gone {
                            Ok(0)
                        } else {
                            Err(SpoolError::NotFound)
                        });
                    }
                    Op::DlqUpdate { id, entry } => {
                        out[i] = Some(if dlq.get(*id).map_err(write_err)?.is_none() {
                            Err(SpoolError::NotFound)
                        } else {
                            dlq.insert(*id, entry.as_slice()).map_err(write_err)?;
                            Ok(0)
                        });
                    }
                    Op::Revive { id, .. } if dlq.get(*id).map_err(write_err)?.is_none() => {
                        out[i] = Some(Err(SpoolError::NotFound));
                    }
                    _ => {}
                }
            }
            if self.next_id != first_id {
                let mut meta = txn.open_table(META).map_err(write_err)?;
                meta.insert("next_id", self.next_id).map_err(write_err)?;
            }
        }
        txn.commit().map_err(write_err)?;
        Ok(dlq_delta)
    }

    /// The batch's journal frames, one write and one fsync; then the revives' DLQ rows go.
    pub(super) fn journal_phase(
        &mut self,
        batch: &[Job],
        out: &mut Answers,
        delta: &mut Delta,
    ) -> Result<(), SpoolError> {
        let shared = self.shared.clone();
        let mut j = shared
            .journal
            .lock()
            .map_err(|_| SpoolError::Write("journal poisoned".into()))?;
        let bytes = batch.iter().map(|j| j.op.frame_bytes()).sum();
        let mut b = Stage {
            st: Staged::with_capacity(bytes),
            ..Stage::default()
        };
        let mut answers = Vec::new();
        for (i, job) in batch.iter().enumerate() {
            if out[i].is_none() {
                answers.push((i, self.stage(&j, &mut b, &job.op)?));
            }
        }
        j.write(b.st).map_err(write_err)?;
        self.shared
            .oldest_ms
            .store(j.oldest_ms(), std::sync::atomic::Ordering::Relaxed);
        drop(j);
        for (i, r) in answers {
            out[i] = Some(r);
        }
        delta.depth += b.mine.depth;
        delta.bytes += b.mine.bytes;
        if !b.revived.is_empty() {
            delta.dlq -= self.unlink_revived(b.revived);
        }
        Ok(())
    }

    /// One op's frames into the batch; its answer once the batch is durable. The outer error
    /// (the index could not be read) fails the batch.
    fn stage(&mut self, j: &Journal, b: &mut Stage, op: &Op) -> Result<Answer, SpoolError> {
        let live = |st: &Staged, id| j.live_len(st, id).map_err(write_err);
        let accepted = |entry: &[u8]| Entry::accepted_ms_of(entry).unwrap_or(0);
        Ok(match op {
            Op::Append(entry) | Op::Revive { entry, .. } if !self.fits(&b.mine, entry.len()) => {
                Err(SpoolError::Full)
            }
            Op::Append(entry) => {
                let id = self.next_id;
                self.next_id += 1;
                b.st.append(id, entry, accepted(entry));
                b.mine.depth += 1;
                b.mine.bytes += entry.len() as i64;
                Ok(id)
            }
            Op::Delivered {
                id,
                key,
                expires_ms,
            } => {
                if let Some(len) = live(&b.st, *id)? {
                    b.mine.depth -= 1;
                    b.mine.bytes -= i64::from(len);
                }
                b.st.delivered(*id, *key, *expires_ms);
                Ok(0)
            }
            Op::Update { id, entry } => match live(&b.st, *id)? {
                Some(len) => {
                    b.st.put(*id, entry, accepted(entry));
                    b.mine.bytes += entry.len() as i64 - i64::from(len);
                    Ok(0)
                }
                None => Err(SpoolError::NotFound),
            },
            Op::Dead { id, .. } | Op::Remove { id } => match live(&b.st, *id)? {
                Some(len) => {
                    b.st.gone(*id);
                    b.mine.depth -= 1;
                    b.mine.bytes -= i64::from(len);
                    Ok(0)
                }
                None if matches!(op, Op::Dead { .. }) => Ok(0),
                None => Err(SpoolError::NotFound),
            },
            Op::Revive { id, entry } => {
                let old = live(&b.st, *id)?;
                b.mine.depth += i64::from(old.is_none());
                b.mine.bytes += entry.len() as i64 - old.map_or(0, i64::from);
                b.st.put(*id, entry, accepted(entry));
                b.revived.push(*id);
                Ok(*id)
            }
            Op::Probe => j.sync().map(|()| 0).map_err(write_err),
            _ => Ok(0),
        })
    }

    /// Removes the DLQ rows of revived events (and of earlier revives whose removal failed);
    /// answers how many went. A failure keeps them for the next batch.
    pub(super) fn unlink_revived(&mut self, mut ids: Vec<u64>) -> i64 {
        let shared = self.shared.clone();
        let Ok(mut j) = shared.journal.lock() else {
            return 0;
        };
        ids.append(&mut j.unlink);
        let r = self.db().and_then(|db| {
            let txn = db.begin_write().map_err(write_err)?;
            let mut n = 0;
            {
                let mut dlq = txn.open_table(DLQ).map_err(write_err)?;
                for id in &ids {
                    n += i64::from(dlq.remove(*id).map_err(write_err)?.is_some());
                }
            }
            txn.commit().map_err(write_err)?;
            Ok(n)
        });
        match r {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, rows = ids.len(), "dead-letter rows of replayed events not removed yet; retried with the next batch");
                j.unlink = ids;
                0
            }
        }
    }
}
