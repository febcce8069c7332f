//! The single writer: one thread owns every write to the spool database and commits whatever has
//! queued up in one transaction, so concurrent requests share one fsync (group commit).
//!
//! Protocol: callers send a [`Job`] (an [`Op`] plus a oneshot reply) on a bounded channel; the
//! thread takes the first job (blocking), waits `group_commit_delay` if configured, drains up to
//! [`MAX_BATCH`] more without waiting, applies them all in one redb write transaction, commits
//! (redb's commit with `Durability::Immediate` ends in the fsync), and only then answers every
//! job. A failed commit answers every job of the batch with [`SpoolError::Write`]: nothing of it is
//! on disk, so nothing of it may be acknowledged. Ops that fail on their own (a full spool, a
//! missing id) get their own error and do not spoil the batch.
//!
//! After an I/O error redb refuses further work until the database is reopened, so the writer drops
//! its handle and reopens on the next job; while the disk keeps failing, every job fails fast and
//! `/readyz` reports not ready. Counters (depth, bytes, DLQ size) live in [`Shared`] and change only
//! after a commit succeeded, so they always describe what is on disk.
//!
//! The thread ends when it receives [`Op::Stop`] (after committing the ops queued before it) or when
//! every sender is gone. The table layout, the start-up scan and the reads are in `db`; they are
//! re-exported here because the writer owns the handle they go through.
//!
//! Just over 400 lines on purpose: the batching loop and the per-op steps share one `Tables`
//! transaction; the table layout and the reads already live in `db`.

mod db;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redb::{Database, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::{SpoolError, io::FaultSwitch, record::Entry, unix_ms};
use crate::{identity::DedupKey, metrics::SpoolMetrics};
#[cfg(test)]
pub(crate) use db::Opened;
use db::{COMMITTED, DLQ, EVENTS, META, committed_key, open_db, sweep, write_err};
pub(crate) use db::{Restored, Shared, dlq_page, load, open};

/// Most ops one commit makes durable.
pub const MAX_BATCH: usize = 1024;
/// Capacity of the job channel; beyond it callers wait (backpressure on the writer).
pub const CHANNEL: usize = 4096;
/// How often expired delivered identities are removed from disk.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Expired identities removed per sweep, so one commit stays short.
const SWEEP_MAX: usize = 10_000;

/// One write.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new event; answers its id. Refused with `Full` beyond the limits.
    Append(Vec<u8>),
    /// OSCAR took event `id`: remove it and remember its identity until `expires_ms`.
    Delivered {
        id: u64,
        key: DedupKey,
        expires_ms: u64,
    },
    /// Replace event `id` (a failed attempt recorded).
    Update { id: u64, entry: Vec<u8> },
    /// Move event `id` to the dead-letter queue with this record.
    Dead { id: u64, entry: Vec<u8> },
    /// A dead-letter entry for an event that was never in `events` (sync mode: see
    /// `spool/dlq_direct.rs`); answers its new id. Not bounded by the spool's limits, like `Dead`.
    DeadNew(Vec<u8>),
    /// Remove event `id` (a held copy a clean copy superseded).
    Remove { id: u64 },
    /// Remove dead-letter entry `id`.
    DlqDelete { id: u64 },
    /// Replace dead-letter entry `id` (a fresh owner token before a replay reserves it); one that
    /// is gone stays gone.
    DlqUpdate { id: u64, entry: Vec<u8> },
    /// Move dead-letter entry `id` back into the spool with this (reset) record.
    Revive { id: u64, entry: Vec<u8> },
    /// An empty commit: answers whether the disk takes writes again.
    Probe,
    /// Commit what came before, then end the thread.
    Stop,
}

#[derive(Debug)]
pub(crate) struct Job {
    pub op: Op,
    pub reply: oneshot::Sender<Result<u64, SpoolError>>,
}

/// Limits checked on append.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub path: PathBuf,
    pub faults: FaultSwitch,
    pub shared: Arc<Shared>,
    pub next_id: u64,
    pub limits: Limits,
    pub delay: Duration,
    pub metrics: SpoolMetrics,
    pub last_sweep: Instant,
}

/// Counter changes of one batch, applied only once it is committed.
#[derive(Default)]
struct Delta {
    depth: i64,
    bytes: i64,
    dlq: i64,
}

fn add(a: &AtomicU64, d: i64) {
    if d >= 0 {
        a.fetch_add(d as u64, Ordering::Relaxed);
    } else {
        let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(d.unsigned_abs()))
        });
    }
}

impl Writer {
    /// Runs until [`Op::Stop`] or until every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            if !self.delay.is_zero() && !matches!(batch[0].op, Op::Stop) {
                std::thread::sleep(self.delay);
            }
            while batch.len() < MAX_BATCH && !matches!(batch.last().map(|j| &j.op), Some(Op::Stop))
            {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let stop = matches!(batch.last().map(|j| &j.op), Some(Op::Stop));
            self.commit(batch);
            if stop {
                break;
            }
        }
        // Closing the database here (last handle) releases the file lock for a restart.
        self.shared.set_db(None);
        tracing::debug!("spool writer stopped");
    }

    fn db(&mut self) -> Result<Arc<Database>, SpoolError> {
        if let Ok(db) = self.shared.db() {
            return Ok(db);
        }
        let db = Arc::new(open_db(&self.path, &self.faults)?);
        self.shared.set_db(Some(db.clone()));
        tracing::info!(path = %self.path.display(), "spool database reopened after a disk error");
        Ok(db)
    }

    fn commit(&mut self, batch: Vec<Job>) {
        let started = Instant::now();
        let mut delta = Delta::default();
        let outcome = self.db().and_then(|db| self.apply(&db, &batch, &mut delta));
        match outcome {
            Ok(results) => {
                self.metrics.fsync_batch_size.observe(batch.len() as f64);
                self.metrics
                    .fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
                add(&self.shared.depth, delta.depth);
                add(&self.shared.bytes, delta.bytes);
                add(&self.shared.dlq, delta.dlq);
                self.shared.healthy.store(true, Ordering::SeqCst);
                for (job, r) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
            }
            Err(e) => {
                self.metrics.write_errors.inc();
                self.shared.healthy.store(false, Ordering::SeqCst);
                // redb wants a reopen after an I/O error; drop the handle, reopen on the next job.
                self.shared.set_db(None);
                tracing::error!(error = %e, ops = batch.len(), "spool commit failed; its events are refused with 503");
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
        self.metrics
            .depth
            .set(self.shared.depth.load(Ordering::Relaxed) as i64);
        self.metrics
            .bytes
            .set(self.shared.bytes.load(Ordering::Relaxed) as i64);
        self.metrics
            .dlq_entries
            .set(self.shared.dlq.load(Ordering::Relaxed) as i64);
    }

    /// Whether one more event of `len` bytes stays within the limits, counting this batch so far.
    fn fits(&self, delta: &Delta, len: usize) -> bool {
        let cap = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let depth = cap(self.shared.depth.load(Ordering::Relaxed)).saturating_add(delta.depth);
        let bytes = cap(self.shared.bytes.load(Ordering::Relaxed)).saturating_add(delta.bytes);
        depth.saturating_add(1) <= cap(self.limits.max_entries)
            && bytes.saturating_add(cap(len as u64)) <= cap(self.limits.max_bytes)
    }

    /// Applies every op in one transaction and commits; per-op results on success.
    fn apply(
        &mut self,
        db: &Database,
        batch: &[Job],
        delta: &mut Delta,
    ) -> Result<Vec<Result<u64, SpoolError>>, SpoolError> {
        let txn = db.begin_write().map_err(write_err)?;
        let first_id = self.next_id;
        let (results, oldest) = {
            let mut t = Tables {
                events: txn.open_table(EVENTS).map_err(write_err)?,
                dlq: txn.open_table(DLQ).map_err(write_err)?,
                committed: txn.open_table(COMMITTED).map_err(write_err)?,
            };
            let results = batch
                .iter()
                .map(|job| self.apply_op(&mut t, &job.op, delta))
                .collect::<Result<Vec<_>, _>>()?;
            self.sweep_if_due(&mut t.committed)?;
            if self.next_id != first_id {
                let mut meta = txn.open_table(META).map_err(write_err)?;
                meta.insert("next_id", self.next_id).map_err(write_err)?;
            }
            let oldest = match t.events.first().map_err(write_err)? {
                Some((_, v)) => Entry::accepted_ms_of(v.value()).unwrap_or(0),
                None => 0,
            };
            (results, oldest)
        };
        txn.commit().map_err(write_err)?;
        self.shared.oldest_ms.store(oldest, Ordering::Relaxed);
        Ok(results)
    }

    /// One op inside the batch's transaction. The outer error fails the whole batch (nothing is
    /// committed); the inner one is this op's own answer.
    fn apply_op(
        &mut self,
        t: &mut Tables<'_>,
        op: &Op,
        delta: &mut Delta,
    ) -> Result<Result<u64, SpoolError>, SpoolError> {
        match op {
            Op::Append(entry) => self.append(t, entry, delta),
            Op::Delivered {
                id,
                key,
                expires_ms,
            } => {
                t.remove_event(*id, delta)?;
                t.committed
                    .insert(&committed_key(*expires_ms, key)[..], ())
                    .map_err(write_err)?;
                Ok(Ok(0))
            }
            Op::Update { id, entry } => t.update(*id, entry, delta),
            Op::Dead { id, entry } => {
                t.remove_event(*id, delta)?;
                if t.dlq
                    .insert(*id, entry.as_slice())
                    .map_err(write_err)?
                    .is_none()
                {
                    delta.dlq += 1;
                }
                Ok(Ok(0))
            }
            Op::DeadNew(entry) => {
                let id = self.next_id;
                self.next_id += 1;
                t.dlq.insert(id, entry.as_slice()).map_err(write_err)?;
                delta.dlq += 1;
                Ok(Ok(id))
            }
            Op::Remove { id } => Ok(match t.remove_event(*id, delta)? {
                Some(_) => Ok(0),
                None => Err(SpoolError::NotFound),
            }),
            Op::DlqDelete { id } => Ok(match t.dlq.remove(*id).map_err(write_err)? {
                Some(_) => {
                    delta.dlq -= 1;
                    Ok(0)
                }
                None => Err(SpoolError::NotFound),
            }),
            Op::DlqUpdate { id, entry } => {
                if t.dlq.get(*id).map_err(write_err)?.is_none() {
                    return Ok(Err(SpoolError::NotFound));
                }
                t.dlq.insert(*id, entry.as_slice()).map_err(write_err)?;
                Ok(Ok(0))
            }
            Op::Revive { id, entry } => self.revive(t, *id, entry, delta),
            Op::Probe | Op::Stop => Ok(Ok(0)),
        }
    }

    fn append(
        &mut self,
        t: &mut Tables<'_>,
        entry: &[u8],
        delta: &mut Delta,
    ) -> Result<Result<u64, SpoolError>, SpoolError> {
        if !self.fits(delta, entry.len()) {
            return Ok(Err(SpoolError::Full));
        }
        let id = self.next_id;
        self.next_id += 1;
        t.events.insert(id, entry).map_err(write_err)?;
        delta.depth += 1;
        delta.bytes += entry.len() as i64;
        Ok(Ok(id))
    }

    fn revive(
        &mut self,
        t: &mut Tables<'_>,
        id: u64,
        entry: &[u8],
        delta: &mut Delta,
    ) -> Result<Result<u64, SpoolError>, SpoolError> {
        if !self.fits(delta, entry.len()) {
            return Ok(Err(SpoolError::Full));
        }
        if t.dlq.remove(id).map_err(write_err)?.is_none() {
            return Ok(Err(SpoolError::NotFound));
        }
        t.events.insert(id, entry).map_err(write_err)?;
        delta.dlq -= 1;
        delta.depth += 1;
        delta.bytes += entry.len() as i64;
        Ok(Ok(id))
    }

    /// Removes expired delivered identities, at most every [`SWEEP_EVERY`], inside the batch.
    fn sweep_if_due(
        &mut self,
        committed: &mut redb::Table<'_, &'static [u8], ()>,
    ) -> Result<(), SpoolError> {
        if self.last_sweep.elapsed() >= SWEEP_EVERY {
            self.last_sweep = Instant::now();
            let removed = sweep(committed, unix_ms(), SWEEP_MAX)?;
            if removed > 0 {
                tracing::debug!(removed, "spool: expired delivered identities removed");
            }
        }
        Ok(())
    }
}

/// The tables one batch writes, open in its transaction.
struct Tables<'txn> {
    events: redb::Table<'txn, u64, &'static [u8]>,
    dlq: redb::Table<'txn, u64, &'static [u8]>,
    committed: redb::Table<'txn, &'static [u8], ()>,
}

impl Tables<'_> {
    /// Removes event `id` if present, counting it out of the batch's delta; its length if it was.
    fn remove_event(&mut self, id: u64, delta: &mut Delta) -> Result<Option<usize>, SpoolError> {
        let removed = self
            .events
            .remove(id)
            .map_err(write_err)?
            .map(|v| v.value().len());
        if let Some(len) = removed {
            delta.depth -= 1;
            delta.bytes -= len as i64;
        }
        Ok(removed)
    }

    /// Replaces event `id`; one that is gone stays gone (a record update never resurrects it).
    fn update(
        &mut self,
        id: u64,
        entry: &[u8],
        delta: &mut Delta,
    ) -> Result<Result<u64, SpoolError>, SpoolError> {
        let old = self
            .events
            .insert(id, entry)
            .map_err(write_err)?
            .map(|v| v.value().len());
        match old {
            Some(len) => {
                delta.bytes += entry.len() as i64 - len as i64;
                Ok(Ok(0))
            }
            None => {
                self.events.remove(id).map_err(write_err)?;
                Ok(Err(SpoolError::NotFound))
            }
        }
    }
}
