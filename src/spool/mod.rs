//! The spool: durable delivery (spool mode, contract §5 and §7). An event is answered 202 only once
//! it is on disk; it stays there until OSCAR accepted it or it was dead-lettered, across crashes.
//!
//! # Why a journal for events and redb for the rest
//! A spooled event is written once at acceptance and ended once at delivery, usually within a
//! second; in a B-tree each of those rewrites a leaf and the branch pages above it, and redb was
//! 55 % of a spooled event's cost (BENCHMARKS.md). So undelivered events live in an append-only
//! journal of segment files ([`writer::journal`]): an acceptance is one checksummed frame, a
//! delivery a tombstone frame carrying the identity, a batch one `pwrite` and one `fdatasync`.
//! What a log does badly stays in [redb](https://docs.rs/redb), a pure-Rust ACID B-tree whose
//! commits are atomic: the dead-letter queue (listed, replayed, deleted by id, kept for days) and
//! the delivered identities (kept for the TTL, then swept by expiry). The journal's own rules —
//! checksummed frames and a torn tail cut off at start, segments deleted oldest first once dead
//! and checkpointed, lone live records relocated — are in its module doc; its start-up
//! reconciliation with redb is in `writer/db.rs`. Every file write passes the fault seam [`io`].
//!
//! # On-disk layout: `{data_dir}/spool.journal/` and `{data_dir}/spool.redb`
//! | where | key | value |
//! |---|---|---|
//! | journal segments `NNNN.seg` | frames by spool id (u64, grows with acceptance) | `Put` [`record::Entry`] (service, `Authorization`, body, times, attempts); `Delivered` identity ‖ expiry; `Gone` |
//! | redb `dlq` | the same id | the entry plus when and why it died |
//! | redb `committed` | expiry ms (u64 BE) ‖ 16-byte identity digest | () |
//! | redb `meta` | `"next_id"` | the next spool id (ids are never reused) |
//!
//! The redb table `events` held undelivered events before the journal; a start moves its rows into
//! the journal.
//!
//! # Write and fsync rule
//! One writer thread ([`writer`]) owns every write. Requests hand it their records and wait; it
//! writes everything that queued up meanwhile as one journal write — one fsync — and then answers
//! each waiter (group commit). So 202 means "fsync'd", and N concurrent requests cost about one
//! fsync, not N. `spool.group_commit_delay` can make the writer wait a little for companions.
//! A write that fails answers every waiter with an error (503 to MinIO, reservation released).
//! A dead-lettering writes its DLQ row (a redb commit) before the journal's tombstone, so a crash
//! between the two leaves the event in both, which the start resolves by keeping it spooled.
//!
//! # Delivery and the dedup store
//! An accepted event reserves its identity for the whole retry horizon (`delivery.max_age` plus
//! margins), so a copy arriving while it waits or retries is a `duplicate`. On 2xx the identity is
//! committed in the store and `Delivered` is written: one journal frame that ends the event and
//! records its identity (copied into `committed` when its segment is closed). The one window in which OSCAR has the event but the disk does not
//! know it yet is that write — one group commit. Workers: [`worker`].
//!
//! # Recovery at start
//! redb repairs its file if the process died mid-commit, and the journal scan ends each segment at
//! its first torn frame. Then: expired identities are deleted;
//! live ones go into the dedup store with `insert_committed` and their remaining TTL, so a MinIO
//! redelivery of a delivered event is a `duplicate` after a restart; every spooled event reserves
//! (or, if held, holds) its identity again and is queued — held ones at their not-before time.
//! Each record names the owner token of its reservation, so that with a store that outlived the
//! process (Redis) the restore first releases that very entry: left there, it would look like
//! another copy in flight and the acknowledged event would be dropped as a duplicate.
//! Committed identities are restored first, so an event that was delivered and recorded can never
//! be delivered again from a stale spool record. If the store fails during the restore, it is not
//! asked again (each call would cost a command timeout before serving starts): the remaining
//! events are queued unclaimed, and the workers claim them once the store answers (fail-closed)
//! or deliver them unchecked (fail-open).
//!
//! # The order of write and claim
//! With the memory store a request claims the identity, then writes the record: a crash between
//! the two loses the claim with the process. With Redis the claim would outlive the crash and
//! stand for a record that was never written, so there the record is written first and then
//! claimed (`admit.rs`); every live Redis entry then has a record on some gateway's disk behind it.
//!
//! # Sync mode
//! Sync mode opens the same file for its dead-letter queue only ([`dlq_direct`]): nothing is
//! admitted into the journal, except a DLQ entry an operator replays, which the workers deliver.
//!
//! # Shutdown
//! No new delivery starts once shutdown begins; a delivery already started is allowed to finish
//! (its attempt is bounded by `delivery.connect_timeout` + `delivery.request_timeout`) and its
//! outcome is committed, even past `http.shutdown_grace`: cutting it off would repeat it after the
//! restart, outside the one-fsync window. See [`Spool::shutdown`].
//!
//! # Limits and failures
//! `spool.max_entries` and `spool.max_bytes` bound the undelivered events; beyond them, and while
//! the disk fails, new events get 503 + `Retry-After` and `/readyz` turns 503. Nothing that is not
//! stored is acknowledged.

mod admit;
mod backend;
mod dlq;
mod dlq_direct;
mod durable;
mod handoff;
pub mod io;
pub mod jetstream;
mod keep;
mod own;
mod queue;
pub mod record;
mod restore;
mod settings;
mod worker;
mod writer;
pub use writer::{journal::SEGMENT_BYTES, stored_events};

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    deliver::{Forwarder, settle::Settler},
    metrics::Metrics,
    store::Store,
};
pub use admit::Admission;
pub use backend::SpoolBackend;
pub use dlq::{DlqPage, Replayed};
pub use dlq_direct::Undeliverable;
pub use io::FaultSwitch;
use queue::Queue;
pub use settings::SpoolSettings;
use writer::{Job, Op};

/// At shutdown, the time allowed beyond the longest delivery attempt to write its outcome.
const COMMIT_MARGIN: Duration = Duration::from_secs(2);

/// The spool file's name inside `data_dir`.
pub const FILE_NAME: &str = "spool.redb";

/// Wall-clock milliseconds since the Unix epoch: the clock of everything stored on disk.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full")]
    Full,
    #[error("spool write failed: {0}")]
    Write(String),
    #[error("spool read failed: {0}")]
    Read(String),
    #[error("no such spool entry")]
    NotFound,
    #[error("spool is shut down")]
    Closed,
    #[error(transparent)]
    Decode(#[from] record::DecodeError),
}

impl SpoolError {
    /// The short reason given to MinIO in a 503 answer.
    pub fn reason(&self) -> &'static str {
        match self {
            SpoolError::Full => "spool-full",
            SpoolError::Closed => "shutting-down",
            _ => "spool-write-failed",
        }
    }
}

/// A handle to the spool; cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    settings: SpoolSettings,
    shared: Arc<writer::Shared>,
    tx: mpsc::Sender<Job>,
    queue: Queue,
    store: Store,
    settler: Settler,
    metrics: Metrics,
    spool_metrics: crate::metrics::SpoolMetrics,
    /// Cancelled at shutdown: the dispatcher stops taking items.
    stop: CancellationToken,
    /// Cancelled when shutdown gives up waiting: outcome writes stop retrying.
    abandon: CancellationToken,
    /// Running deliveries.
    tasks: TaskTracker,
    /// Spool writes in progress of claimed identities (memory store), see [`durable`].
    writes: durable::Writes,
    /// Records just admitted, for their first delivery without a read back ([`handoff`]).
    handoff: handoff::Handoff,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Where deliveries are recorded for `/admin/verdicts` (set once at start, see `set_history`).
    history: std::sync::OnceLock<crate::history::History>,
}

impl Spool {
    /// Records each delivery in `history`, so `/admin/verdicts` shows when a spooled event
    /// actually reached OSCAR (first call wins).
    pub fn set_history(&self, history: crate::history::History) {
        let _ = self.inner.history.set(history);
    }

    /// Opens the spool under `settings.path`, restores committed identities and reservations into
    /// `store`, starts the writer thread and the delivery dispatcher.
    pub async fn open(
        settings: SpoolSettings,
        store: Store,
        forwarder: Forwarder,
        metrics: Metrics,
    ) -> Result<Self, SpoolError> {
        let (path, faults) = (settings.path.clone(), settings.faults.clone());
        let opened = tokio::task::spawn_blocking(move || writer::open(&path, &faults))
            .await
            .map_err(|e| SpoolError::Write(e.to_string()))??;
        if let Ok(mut j) = opened.shared.journal.lock() {
            j.segment_bytes = settings.segment_bytes;
        }
        let spool_metrics = metrics.spool().clone();
        let (tx, rx) = mpsc::channel(writer::CHANNEL);
        let w = writer::Writer {
            path: settings.path.clone(),
            faults: settings.faults.clone(),
            shared: opened.shared.clone(),
            next_id: opened.next_id,
            limits: writer::Limits {
                max_bytes: settings.max_bytes,
                max_entries: settings.max_entries,
            },
            delay: settings.group_commit_delay,
            metrics: spool_metrics.clone(),
            last_sweep: std::time::Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| SpoolError::Write(e.to_string()))?;
        let settler = Settler::new(forwarder, store.clone(), metrics.clone(), settings.ttl);
        let inner = Arc::new(Inner {
            settings,
            shared: opened.shared,
            tx,
            queue: Queue::default(),
            settler,
            store,
            metrics,
            spool_metrics,
            stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
            tasks: TaskTracker::new(),
            writes: durable::Writes::default(),
            handoff: handoff::Handoff::default(),
            writer: Mutex::new(Some(handle)),
            history: std::sync::OnceLock::new(),
        });
        let spool = Self { inner };
        spool.restore(opened.committed, opened.events).await;
        spool.refresh_metrics();
        // Tracked like the deliveries it starts: shutdown's wait then also covers an item the
        // dispatcher took just as the stop came, which it spawns before it returns.
        spool
            .inner
            .tasks
            .spawn(worker::dispatch(spool.inner.clone()));
        Ok(spool)
    }

    /// `Ok` when the spool takes writes and has room; the reason otherwise (for `/readyz`). After a
    /// disk error it probes with an empty commit, so readiness returns once the disk does.
    pub async fn ready(&self) -> Result<(), String> {
        let i = &self.inner;
        if !i.shared.healthy.load(Ordering::SeqCst) {
            match tokio::time::timeout(Duration::from_secs(2), i.submit(Op::Probe)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("spool write probe timed out".into()),
            }
        }
        let depth = i.shared.depth.load(Ordering::Relaxed);
        let bytes = i.shared.bytes.load(Ordering::Relaxed);
        if depth >= i.settings.max_entries || bytes >= i.settings.max_bytes {
            return Err(format!("spool full: {depth} events, {bytes} bytes"));
        }
        Ok(())
    }

    /// Undelivered events on disk.
    pub fn depth(&self) -> u64 {
        self.inner.shared.depth.load(Ordering::Relaxed)
    }

    /// Brings the gauges up to date (called at scrape time: the oldest event's age grows by itself).
    pub fn refresh_metrics(&self) {
        let i = &self.inner;
        let m = &i.spool_metrics;
        m.depth.set(i.shared.depth.load(Ordering::Relaxed) as i64);
        m.bytes.set(i.shared.bytes.load(Ordering::Relaxed) as i64);
        m.dlq_entries
            .set(i.shared.dlq.load(Ordering::Relaxed) as i64);
        let oldest = i.shared.oldest_ms.load(Ordering::Relaxed);
        let age = if oldest == 0 {
            0
        } else {
            unix_ms().saturating_sub(oldest) / 1000
        };
        m.oldest_age_seconds.set(age as i64);
    }

    /// Stops delivering (no new delivery starts), lets running deliveries finish and record
    /// their outcome, commits what is queued and closes the file. Undelivered events stay on
    /// disk for the next start.
    ///
    /// The wait is `grace`, but never shorter than one delivery attempt can take plus a commit
    /// ([`SpoolSettings::attempt_bound`] + [`COMMIT_MARGIN`]): a delivery cut off at shutdown
    /// may have reached OSCAR with its outcome never written, and would be sent again after the
    /// restart — a repeat outside the one-fsync window, without any crash (issue 13 item 12).
    pub async fn shutdown(&self, grace: Duration) {
        let i = &self.inner;
        i.stop.cancel();
        i.tasks.close();
        let wait = grace.max(i.settings.attempt_bound + COMMIT_MARGIN);
        if tokio::time::timeout(wait, i.tasks.wait()).await.is_err() {
            tracing::warn!("deliveries still running at shutdown; their events stay in the spool");
            i.abandon.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), i.tasks.wait()).await;
        }
        let _ = i.submit(Op::Stop).await;
        let handle = i.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        tracing::info!(
            undelivered = i.shared.depth.load(Ordering::Relaxed),
            queued = i.queue.len(),
            "spool closed"
        );
    }
}

impl Inner {
    /// Hands `op` to the writer and waits until it is committed (or failed).
    async fn submit(&self, op: Op) -> Result<u64, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { op, reply })
            .await
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Submits `op` until it is written, backing off between tries; gives up only when the spool is
    /// closing for good (the event then stays on disk as it was).
    async fn write_until_ok(&self, op: impl Fn() -> Op) -> Result<u64, SpoolError> {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.submit(op()).await {
                Ok(v) => return Ok(v),
                Err(e @ (SpoolError::NotFound | SpoolError::Closed)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "spool write failed; retrying it");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.abandon.cancelled() => return Err(e),
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
