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
//! every sender is gone.

use std::{
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{
    SpoolError,
    io::{FaultSwitch, SpoolFile},
    record::Entry,
    unix_ms,
};
use crate::{identity::DedupKey, metrics::SpoolMetrics};

/// Undelivered events (and held ones), by id; ids grow with acceptance order and are never reused.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Dead-lettered events, by their spool id.
pub(crate) const DLQ: TableDefinition<u64, &[u8]> = TableDefinition::new("dlq");
/// Delivered identities: `expiry_ms (u64 BE) ‖ key (16 bytes)`, so expired ones are one range.
pub(crate) const COMMITTED: TableDefinition<&[u8], ()> = TableDefinition::new("committed");
/// `next_id`: ids are never reused, so a dead-letter id always names one event.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Most ops one commit makes durable.
pub const MAX_BATCH: usize = 1024;
/// Capacity of the job channel; beyond it callers wait (backpressure on the writer).
pub const CHANNEL: usize = 4096;
/// How often expired delivered identities are removed from disk.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Expired identities removed per sweep, so one commit stays short.
const SWEEP_MAX: usize = 10_000;
/// Page cache of the database; the spool is read once per delivery, so a small cache suffices.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

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
    /// Remove event `id` (a held copy a clean copy superseded).
    Remove { id: u64 },
    /// Remove dead-letter entry `id`.
    DlqDelete { id: u64 },
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

/// State the writer shares with readers and the HTTP side.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The open database; `None` after an I/O error until the writer reopens it. Readers clone the
    /// `Arc` out and never hold the lock across anything slow.
    pub db: RwLock<Option<Arc<Database>>>,
    pub depth: AtomicU64,
    pub bytes: AtomicU64,
    pub dlq: AtomicU64,
    /// Accepted time of the oldest undelivered event; 0 when the spool is empty.
    pub oldest_ms: AtomicU64,
    /// False after a failed commit, true again after a successful one.
    pub healthy: AtomicBool,
}

impl Shared {
    pub fn db(&self) -> Result<Arc<Database>, SpoolError> {
        self.db
            .read()
            .map_err(|_| SpoolError::Read("spool handle poisoned".into()))?
            .clone()
            .ok_or_else(|| SpoolError::Read("spool database not open after a disk error".into()))
    }

    fn set_db(&self, db: Option<Arc<Database>>) {
        if let Ok(mut g) = self.db.write() {
            *g = db;
        }
    }
}

/// Limits checked on append.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// What [`open`] found on disk.
#[derive(Debug)]
pub(crate) struct Opened {
    pub shared: Arc<Shared>,
    pub next_id: u64,
    /// Delivered identities still inside their TTL: (key, expiry in Unix ms).
    pub committed: Vec<(DedupKey, u64)>,
    /// Undelivered events to schedule again (without their bodies, which stay on disk).
    pub events: Vec<Restored>,
}

/// What restore needs of one spooled event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Restored {
    pub id: u64,
    pub key: DedupKey,
    pub held: bool,
    pub not_before_ms: u64,
    /// The owner token of its reservation before the restart; 0 when the record has none.
    pub owner: u64,
}

fn write_err(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Write(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Read(e.to_string())
}

/// Opens (or creates) the database file and makes sure every table exists.
pub(crate) fn open_db(
    path: &std::path::Path,
    faults: &FaultSwitch,
) -> Result<Database, SpoolError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let file = SpoolFile::open(path, faults.clone()).map_err(write_err)?;
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(file)
        .map_err(write_err)?;
    let txn = db.begin_write().map_err(write_err)?;
    {
        txn.open_table(EVENTS).map_err(write_err)?;
        txn.open_table(DLQ).map_err(write_err)?;
        txn.open_table(COMMITTED).map_err(write_err)?;
        txn.open_table(META).map_err(write_err)?;
    }
    txn.commit().map_err(write_err)?;
    Ok(db)
}

/// Opens the spool at start: removes expired identities and reads what must be restored.
pub(crate) fn open(path: &std::path::Path, faults: &FaultSwitch) -> Result<Opened, SpoolError> {
    let db = open_db(path, faults)?;
    let now = unix_ms();
    // Drop expired identities first, so restore reads only live ones.
    let txn = db.begin_write().map_err(write_err)?;
    {
        let mut committed = txn.open_table(COMMITTED).map_err(write_err)?;
        sweep(&mut committed, now, usize::MAX)?;
    }
    txn.commit().map_err(write_err)?;

    let txn = db.begin_read().map_err(read_err)?;
    let committed_t = txn.open_table(COMMITTED).map_err(read_err)?;
    let mut committed = Vec::new();
    for row in committed_t.iter().map_err(read_err)? {
        let (k, _) = row.map_err(read_err)?;
        if let Some((expires, key)) = split_committed(k.value()) {
            committed.push((key, expires));
        }
    }
    let events_t = txn.open_table(EVENTS).map_err(read_err)?;
    let mut events = Vec::new();
    let mut bytes = 0u64;
    let mut oldest = 0u64;
    for row in events_t.iter().map_err(read_err)? {
        let (id, v) = row.map_err(read_err)?;
        bytes += v.value().len() as u64;
        match Entry::decode(v.value()) {
            Ok(e) => {
                oldest = if oldest == 0 {
                    e.accepted_ms
                } else {
                    oldest.min(e.accepted_ms)
                };
                events.push(Restored {
                    id: id.value(),
                    key: e.key,
                    held: e.held,
                    not_before_ms: e.not_before_ms,
                    owner: e.owner,
                });
            }
            // A record this version cannot read is left on disk for an operator, not dropped.
            Err(e) => {
                tracing::error!(spool_id = id.value(), error = %e, "undecodable spool record left in place")
            }
        }
    }
    let dlq_t = txn.open_table(DLQ).map_err(read_err)?;
    let dlq = dlq_t.len().map_err(read_err)?;
    let last_event = events_t.last().map_err(read_err)?.map(|(k, _)| k.value());
    let last_dead = dlq_t.last().map_err(read_err)?.map(|(k, _)| k.value());
    let stored_next = txn
        .open_table(META)
        .map_err(read_err)?
        .get("next_id")
        .map_err(read_err)?
        .map_or(1, |v| v.value());
    let next_id = (last_event.max(last_dead).unwrap_or(0) + 1).max(stored_next);
    let depth = events_t.len().map_err(read_err)?;
    drop((committed_t, events_t, dlq_t, txn));
    let shared = Arc::new(Shared {
        db: RwLock::new(Some(Arc::new(db))),
        depth: AtomicU64::new(depth),
        bytes: AtomicU64::new(bytes),
        dlq: AtomicU64::new(dlq),
        oldest_ms: AtomicU64::new(oldest),
        healthy: AtomicBool::new(true),
    });
    Ok(Opened {
        shared,
        next_id,
        committed,
        events,
    })
}

fn committed_key(expires_ms: u64, key: &DedupKey) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&expires_ms.to_be_bytes());
    k[8..].copy_from_slice(&key.0);
    k
}

fn split_committed(k: &[u8]) -> Option<(u64, DedupKey)> {
    if k.len() != 24 {
        return None;
    }
    let mut e = [0u8; 8];
    e.copy_from_slice(&k[..8]);
    let mut key = [0u8; 16];
    key.copy_from_slice(&k[8..]);
    Some((u64::from_be_bytes(e), DedupKey(key)))
}

/// Removes up to `max` identities whose expiry is at or before `now`.
fn sweep(
    t: &mut redb::Table<'_, &'static [u8], ()>,
    now: u64,
    max: usize,
) -> Result<usize, SpoolError> {
    let bound = now.saturating_add(1).to_be_bytes();
    let stale: Vec<Vec<u8>> = t
        .range::<&[u8]>(..&bound[..])
        .map_err(write_err)?
        .take(max)
        .filter_map(|r| r.ok().map(|(k, _)| k.value().to_vec()))
        .collect();
    for k in &stale {
        t.remove(k.as_slice()).map_err(write_err)?;
    }
    Ok(stale.len())
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
        let mut results = Vec::with_capacity(batch.len());
        let oldest;
        let first_id = self.next_id;
        {
            let mut events = txn.open_table(EVENTS).map_err(write_err)?;
            let mut dlq = txn.open_table(DLQ).map_err(write_err)?;
            let mut committed = txn.open_table(COMMITTED).map_err(write_err)?;
            for job in batch {
                let r = match &job.op {
                    Op::Append(entry) => {
                        if !self.fits(delta, entry.len()) {
                            Err(SpoolError::Full)
                        } else {
                            let id = self.next_id;
                            self.next_id += 1;
                            events.insert(id, entry.as_slice()).map_err(write_err)?;
                            delta.depth += 1;
                            delta.bytes += entry.len() as i64;
                            Ok(id)
                        }
                    }
                    Op::Delivered {
                        id,
                        key,
                        expires_ms,
                    } => {
                        let removed = events
                            .remove(*id)
                            .map_err(write_err)?
                            .map(|v| v.value().len());
                        if let Some(len) = removed {
                            delta.depth -= 1;
                            delta.bytes -= len as i64;
                        }
                        committed
                            .insert(&committed_key(*expires_ms, key)[..], ())
                            .map_err(write_err)?;
                        Ok(0)
                    }
                    Op::Update { id, entry } => {
                        let old = events
                            .insert(*id, entry.as_slice())
                            .map_err(write_err)?
                            .map(|v| v.value().len());
                        match old {
                            Some(len) => {
                                delta.bytes += entry.len() as i64 - len as i64;
                                Ok(0)
                            }
                            None => {
                                // It was gone: do not resurrect it.
                                events.remove(*id).map_err(write_err)?;
                                Err(SpoolError::NotFound)
                            }
                        }
                    }
                    Op::Dead { id, entry } => {
                        if let Some(len) = events
                            .remove(*id)
                            .map_err(write_err)?
                            .map(|v| v.value().len())
                        {
                            delta.depth -= 1;
                            delta.bytes -= len as i64;
                        }
                        if dlq
                            .insert(*id, entry.as_slice())
                            .map_err(write_err)?
                            .is_none()
                        {
                            delta.dlq += 1;
                        }
                        Ok(0)
                    }
                    Op::Remove { id } => match events
                        .remove(*id)
                        .map_err(write_err)?
                        .map(|v| v.value().len())
                    {
                        Some(len) => {
                            delta.depth -= 1;
                            delta.bytes -= len as i64;
                            Ok(0)
                        }
                        None => Err(SpoolError::NotFound),
                    },
                    Op::DlqDelete { id } => match dlq.remove(*id).map_err(write_err)? {
                        Some(_) => {
                            delta.dlq -= 1;
                            Ok(0)
                        }
                        None => Err(SpoolError::NotFound),
                    },
                    Op::Revive { id, entry } => {
                        if !self.fits(delta, entry.len()) {
                            Err(SpoolError::Full)
                        } else if dlq.remove(*id).map_err(write_err)?.is_none() {
                            Err(SpoolError::NotFound)
                        } else {
                            events.insert(*id, entry.as_slice()).map_err(write_err)?;
                            delta.dlq -= 1;
                            delta.depth += 1;
                            delta.bytes += entry.len() as i64;
                            Ok(*id)
                        }
                    }
                    Op::Probe | Op::Stop => Ok(0),
                };
                results.push(r);
            }
            if self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.last_sweep = Instant::now();
                let removed = sweep(&mut committed, unix_ms(), SWEEP_MAX)?;
                if removed > 0 {
                    tracing::debug!(removed, "spool: expired delivered identities removed");
                }
            }
            if self.next_id != first_id {
                let mut meta = txn.open_table(META).map_err(write_err)?;
                meta.insert("next_id", self.next_id).map_err(write_err)?;
            }
            oldest = match events.first().map_err(write_err)? {
                Some((_, v)) => Entry::accepted_ms_of(v.value()).unwrap_or(0),
                None => 0,
            };
        }
        txn.commit().map_err(write_err)?;
        self.shared.oldest_ms.store(oldest, Ordering::Relaxed);
        Ok(results)
    }
}

/// Reads one event (or DLQ entry) by id.
pub(crate) fn load(shared: &Shared, dlq: bool, id: u64) -> Result<Entry, SpoolError> {
    let db = shared.db()?;
    let txn = db.begin_read().map_err(read_err)?;
    let t = txn
        .open_table(if dlq { DLQ } else { EVENTS })
        .map_err(read_err)?;
    let v = t.get(id).map_err(read_err)?.ok_or(SpoolError::NotFound)?;
    Ok(Entry::decode(v.value())?)
}

/// What [`dlq_page`] read: the entries, the queue's length, the `after` of the next page.
pub(crate) type RawDlqPage = (Vec<(u64, Entry)>, u64, Option<u64>);

/// A page of the dead-letter queue: up to `limit` entries with ids above `after`, the queue's
/// length, both read from the same snapshot, and the `after` of the next page when `limit` rows
/// were scanned. (The `Shared.dlq` counter is updated after a commit, so reading it separately
/// could report an entry the page does not hold yet; and an undecodable row is skipped, so the
/// page's length alone cannot tell whether more rows follow.)
pub(crate) fn dlq_page(
    shared: &Shared,
    after: Option<u64>,
    limit: usize,
) -> Result<RawDlqPage, SpoolError> {
    let db = shared.db()?;
    let txn = db.begin_read().map_err(read_err)?;
    let t = txn.open_table(DLQ).map_err(read_err)?;
    let total = t.len().map_err(read_err)?;
    let start = after.map_or(0, |a| a.saturating_add(1));
    let mut out = Vec::new();
    let (mut scanned, mut last) = (0usize, None);
    for row in t.range(start..).map_err(read_err)?.take(limit) {
        let (k, v) = row.map_err(read_err)?;
        scanned += 1;
        last = Some(k.value());
        match Entry::decode(v.value()) {
            Ok(e) => out.push((k.value(), e)),
            Err(e) => {
                tracing::warn!(dlq_id = k.value(), error = %e, "undecodable dead-letter entry skipped")
            }
        }
    }
    let next = if scanned == limit { last } else { None };
    Ok((out, total, next))
}
