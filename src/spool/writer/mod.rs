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
pub(crate) mod journal;
mod maintain;
mod phases;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::{SpoolError, io::FaultSwitch};
use crate::{identity::DedupKey, metrics::SpoolMetrics};
pub use db::stored_events;
use db::{COMMITTED, DLQ, META, committed_key, open_db, sweep, write_err};
#[cfg(test)]
pub(crate) use db::{DLQ as DLQ_TABLE, Opened};
pub(crate) use db::{Restored, Shared, dlq_page, load, open};

/// How often the writer gives the CPU away before a commit, while each time brought more ops.
/// Where the writer shares a core with the request handlers (a pinned or busy pod), a yield lets
/// them run until they wait for it, so their ops join this fsync instead of each wave paying its
/// own; with nothing else runnable it returns at once, so an idle spool pays nothing. Measured:
/// BENCHMARKS.md, "Session 11 levers".
const YIELDS: usize = 4;

/// Whether the batch takes more jobs: not full, and not ended by a `Stop`.
fn room(batch: &[Job]) -> bool {
    batch.len() < MAX_BATCH && !matches!(batch.last().map(|j| &j.op), Some(Op::Stop))
}

/// Takes every job already queued while the batch has [`room`]; how many it took.
fn drain(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) -> usize {
    let before = batch.len();
    while room(batch) {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch.len() - before
}

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
            // Drain; then give the CPU away and drain again: once, and again while that
            // brought companions (see [`YIELDS`]).
            drain(&mut rx, &mut batch);
            for _ in 0..YIELDS {
                if !room(&batch) {
                    break;
                }
                std::thread::yield_now();
                if drain(&mut rx, &mut batch) == 0 {
                    break;
                }
            }
            let stop = matches!(batch.last().map(|j| &j.op), Some(Op::Stop));
            self.commit(batch);
            if stop {
                break;
            }
        }
        // The copier holds a handle too; closing the database here (last handle) releases the
        // file lock for a restart.
        self.collect_copy(true);
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
        let results = self.apply(&batch, &mut delta);
        match results.iter().find_map(|r| match r {
            Err(e @ (SpoolError::Write(_) | SpoolError::Read(_))) => Some(e.clone()),
            _ => None,
        }) {
            None => {
                self.metrics.fsync_batch_size.observe(batch.len() as f64);
                self.metrics
                    .fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.shared.healthy.store(true, Ordering::SeqCst);
            }
            Some(e) => {
                self.metrics.write_errors.inc();
                self.shared.healthy.store(false, Ordering::SeqCst);
                tracing::error!(error = %e, ops = batch.len(), "spool commit failed; its events are refused with 503");
            }
        }
        add(&self.shared.depth, delta.depth);
        add(&self.shared.bytes, delta.bytes);
        add(&self.shared.dlq, delta.dlq);
        for (job, r) in batch.into_iter().zip(results) {
            let _ = job.reply.send(r);
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

    /// Applies the batch: the database's part first, then the journal's (see `phases`); the
    /// journal's failure fails only the ops it carries.
    fn apply(&mut self, batch: &[Job], delta: &mut Delta) -> Vec<Result<u64, SpoolError>> {
        let mut out: Vec<Option<Result<u64, SpoolError>>> = batch.iter().map(|_| None).collect();
        let failed = match self.db_phase(batch, &mut out, delta) {
            Err(e) => Some(e),
            Ok(()) => self.journal_phase(batch, &mut out, delta).err(),
        };
        if failed.is_none() {
            self.maintain();
        }
        out.into_iter()
            .map(|r| match (r, &failed) {
                (Some(r), _) => r,
                (None, Some(e)) => Err(e.clone()),
                (None, None) => Ok(0),
            })
            .collect()
    }
}
