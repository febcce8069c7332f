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

use super::{DLQ, Delta, Job, META, Op, SpoolError, Writer, db::write_err, journal::Staged};
use crate::spool::record::Entry;

type Answers = [Option<Result<u64, SpoolError>>];

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
        let mut st = Staged::default();
        let mut mine = Delta::default();
        let mut answers = Vec::new();
        let mut revived = Vec::new();
        for (i, job) in batch.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let live = |st: &Staged, id| j.live_len(st, id).map_err(write_err);
            let r = match &job.op {
                Op::Append(entry) if !self.fits(&mine, entry.len()) => Err(SpoolError::Full),
                Op::Append(entry) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    st.put(id, entry, Entry::accepted_ms_of(entry).unwrap_or(0));
                    mine.depth += 1;
                    mine.bytes += entry.len() as i64;
                    Ok(id)
                }
                Op::Delivered {
                    id,
                    key,
                    expires_ms,
                } => {
                    if let Some(len) = live(&st, *id)? {
                        mine.depth -= 1;
                        mine.bytes -= i64::from(len);
                    }
                    st.delivered(*id, *key, *expires_ms);
                    Ok(0)
                }
                Op::Update { id, entry } => match live(&st, *id)? {
                    Some(len) => {
                        st.put(*id, entry, Entry::accepted_ms_of(entry).unwrap_or(0));
                        mine.bytes += entry.len() as i64 - i64::from(len);
                        Ok(0)
                    }
                    None => Err(SpoolError::NotFound),
                },
                Op::Dead { id, .. } | Op::Remove { id } => match live(&st, *id)? {
                    Some(len) => {
                        st.gone(*id);
                        mine.depth -= 1;
                        mine.bytes -= i64::from(len);
                        Ok(0)
                    }
                    None if matches!(job.op, Op::Dead { .. }) => Ok(0),
                    None => Err(SpoolError::NotFound),
                },
                Op::Revive { entry, .. } if !self.fits(&mine, entry.len()) => Err(SpoolError::Full),
                Op::Revive { id, entry } => {
                    match live(&st, *id)? {
                        Some(len) => mine.bytes += entry.len() as i64 - i64::from(len),
                        None => {
                            mine.depth += 1;
                            mine.bytes += entry.len() as i64;
                        }
                    }
                    st.put(*id, entry, Entry::accepted_ms_of(entry).unwrap_or(0));
                    revived.push(*id);
                    Ok(*id)
                }
                Op::Probe => j.sync().map(|()| 0).map_err(write_err),
                _ => Ok(0),
            };
            answers.push((i, r));
        }
        j.write(st).map_err(write_err)?;
        self.shared
            .oldest_ms
            .store(j.oldest_ms(), std::sync::atomic::Ordering::Relaxed);
        drop(j);
        for (i, r) in answers {
            out[i] = Some(r);
        }
        delta.depth += mine.depth;
        delta.bytes += mine.bytes;
        if !revived.is_empty() {
            delta.dlq -= self.unlink_revived(revived);
        }
        Ok(())
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
