//! The spool database: its table layout, opening it (with the journal) at start, and the reads
//! that go around the writer thread.
//!
//! Kept apart from the thread so the layout (what a row means, how an identity's expiry is
//! ordered) reads in one place, and the start-up scan that feeds restore can be followed without
//! the batching around it. Reads take the shared handle and a read transaction of their own: redb
//! lets them run beside the writer's transaction, so no read waits for a commit. Undelivered
//! events are in the journal ([`super::journal`]); redb keeps the dead-letter queue, the delivered
//! identities and the id counter.
//!
//! # What the start reconciles
//! - Identities of `Delivered` frames are copied into `committed` (the checkpoint the running
//!   writer makes when it closes a segment), so every segment found can be deleted once dead.
//! - Rows of the `events` table (the layout before the journal) are moved into the journal: the
//!   journal write is fsync'd before the rows are removed, so a crash in between moves them again.
//! - An id live in the journal *and* in the dead-letter queue is a dead-lettering cut off between
//!   its two writes (the DLQ row first, then the journal's tombstone) or a replay cut off between
//!   its two (the journal first, then the DLQ row's removal). Either way the journal wins and the
//!   DLQ row goes: the event is delivered (again), never lost, and never in both.

use std::sync::{
    Arc, Mutex, RwLock,
    atomic::{AtomicBool, AtomicU64},
};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::journal::{Journal, Reader, Staged, scan};
use crate::{
    identity::DedupKey,
    spool::{
        SpoolError,
        io::{FaultSwitch, SpoolFile},
        record::Entry,
        unix_ms,
    },
};

/// Before the journal: undelivered events by id. Read once at start and moved into the journal.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Dead-lettered events, by their spool id.
pub(crate) const DLQ: TableDefinition<u64, &[u8]> = TableDefinition::new("dlq");
/// Delivered identities: `expiry_ms (u64 BE) ‖ key (16 bytes)`, so expired ones are one range.
pub(crate) const COMMITTED: TableDefinition<&[u8], ()> = TableDefinition::new("committed");
/// `next_id`: ids are never reused, so a dead-letter id always names one event.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Page cache of the database; the spool is read once per delivery, so a small cache suffices.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

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
    /// The journal's index, for reads of undelivered events.
    pub events: Arc<Reader>,
    /// The journal's writing side: only the writer thread locks it (uncontended).
    pub journal: Mutex<Journal>,
}

impl Shared {
    pub fn db(&self) -> Result<Arc<Database>, SpoolError> {
        self.db
            .read()
            .map_err(|_| SpoolError::Read("spool handle poisoned".into()))?
            .clone()
            .ok_or_else(|| SpoolError::Read("spool database not open after a disk error".into()))
    }

    pub(super) fn set_db(&self, db: Option<Arc<Database>>) {
        if let Ok(mut g) = self.db.write() {
            *g = db;
        }
    }
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

impl Restored {
    /// Files the latest version of record `id` for the restore, by id. A record this version
    /// cannot read is left on disk for an operator, not dropped: it stays live (and counted) but
    /// is not scheduled.
    pub(crate) fn note(
        into: &mut std::collections::BTreeMap<u64, Restored>,
        id: u64,
        entry: &[u8],
    ) {
        match Entry::decode(entry) {
            Ok(e) => {
                let r = Restored {
                    id,
                    key: e.key,
                    held: e.held,
                    not_before_ms: e.not_before_ms,
                    owner: e.owner,
                };
                into.insert(id, r);
            }
            Err(e) => {
                into.remove(&id);
                tracing::error!(spool_id = id, error = %e, "undecodable spool record left in place");
            }
        }
    }
}

pub(super) fn write_err(e: impl std::fmt::Display) -> SpoolError {
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

/// The journal's directory beside the database file: `spool.redb` → `spool.journal/`.
pub(crate) fn journal_dir(path: &std::path::Path) -> std::path::PathBuf {
    path.with_extension("journal")
}

/// Opens the spool at start: reads the journal, reconciles it with the database (see the module
/// doc), removes expired identities and reads what must be restored.
pub(crate) fn open(path: &std::path::Path, faults: &FaultSwitch) -> Result<Opened, SpoolError> {
    let db = open_db(path, faults)?;
    let mut s = scan::scan(&journal_dir(path), faults).map_err(write_err)?;
    // Checkpointed below, once their identities are in `committed`; the fresh segment is not.
    let found: Vec<u64> = s.journal.segs.keys().copied().collect();
    s.journal.start_segment().map_err(write_err)?;
    let legacy = move_legacy(&db, &mut s)?;
    let txn = db.begin_write().map_err(write_err)?;
    {
        let mut committed = txn.open_table(COMMITTED).map_err(write_err)?;
        let now = unix_ms();
        for (key, expires) in s.delivered.iter().filter(|(_, e)| *e > now) {
            committed
                .insert(&committed_key(*expires, key)[..], ())
                .map_err(write_err)?;
        }
        sweep(&mut committed, now, usize::MAX)?;
        let mut events = txn.open_table(EVENTS).map_err(write_err)?;
        for id in &legacy {
            events.remove(*id).map_err(write_err)?;
        }
        let mut dlq = txn.open_table(DLQ).map_err(write_err)?;
        for id in s.restored.keys() {
            if dlq.remove(*id).map_err(write_err)?.is_some() {
                tracing::warn!(
                    spool_id = id,
                    "event both spooled and dead-lettered: kept in the spool"
                );
            }
        }
    }
    txn.commit().map_err(write_err)?;
    s.journal.checkpointed(&found);
    s.journal.delete_dead().map_err(write_err)?;

    let txn = db.begin_read().map_err(read_err)?;
    let committed = read_committed(&txn.open_table(COMMITTED).map_err(read_err)?)?;
    let dlq_t = txn.open_table(DLQ).map_err(read_err)?;
    let dlq = dlq_t.len().map_err(read_err)?;
    let last_dead = dlq_t
        .last()
        .map_err(read_err)?
        .map_or(0, |(k, _)| k.value());
    let stored_next = txn
        .open_table(META)
        .map_err(read_err)?
        .get("next_id")
        .map_err(read_err)?
        .map_or(1, |v| v.value());
    let next_id = (s.max_id.max(last_dead) + 1).max(stored_next);
    drop((dlq_t, txn));
    let depth = s
        .journal
        .reader
        .0
        .lock()
        .map_or(0, |ix| ix.live.len() as u64);
    let shared = Arc::new(Shared {
        db: RwLock::new(Some(Arc::new(db))),
        depth: AtomicU64::new(depth),
        bytes: AtomicU64::new(s.bytes),
        dlq: AtomicU64::new(dlq),
        oldest_ms: AtomicU64::new(s.oldest_ms),
        healthy: AtomicBool::new(true),
        events: s.journal.reader.clone(),
        journal: Mutex::new(s.journal),
    });
    Ok(Opened {
        shared,
        next_id,
        committed,
        events: s.restored.into_values().collect(),
    })
}

/// Writes the rows of the old `events` table into the journal (fsync'd) and adds them to what the
/// scan found; answers their ids, which the caller removes from the table.
fn move_legacy(db: &Database, s: &mut scan::Scanned) -> Result<Vec<u64>, SpoolError> {
    let txn = db.begin_read().map_err(read_err)?;
    let t = match txn.open_table(EVENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut staged = Staged::default();
    let mut ids = Vec::new();
    for row in t.iter().map_err(read_err)? {
        let (id, v) = row.map_err(read_err)?;
        let (id, entry) = (id.value(), v.value());
        let accepted = Entry::accepted_ms_of(entry).unwrap_or(0);
        staged.put(id, entry, accepted);
        ids.push(id);
        s.max_id = s.max_id.max(id);
        Restored::note(&mut s.restored, id, entry);
    }
    if !ids.is_empty() {
        s.journal.write(staged).map_err(write_err)?;
        (s.bytes, s.oldest_ms) = s.journal.totals();
        tracing::info!(
            events = ids.len(),
            "spooled events moved from the database into the journal"
        );
    }
    Ok(ids)
}

/// Every delivered identity on disk, as (key, expiry in Unix ms).
fn read_committed(
    t: &redb::ReadOnlyTable<&'static [u8], ()>,
) -> Result<Vec<(DedupKey, u64)>, SpoolError> {
    let mut committed = Vec::new();
    for row in t.iter().map_err(read_err)? {
        let (k, _) = row.map_err(read_err)?;
        if let Some((expires, key)) = split_committed(k.value()) {
            committed.push((key, expires));
        }
    }
    Ok(committed)
}

/// The row key of a delivered identity: its expiry first, so expired rows form one range.
pub(super) fn committed_key(expires_ms: u64, key: &DedupKey) -> [u8; 24] {
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
pub(super) fn sweep(
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

/// Reads one event (or DLQ entry) by id.
pub(crate) fn load(shared: &Shared, dlq: bool, id: u64) -> Result<Entry, SpoolError> {
    if !dlq {
        let bytes = shared.events.read(id).map_err(read_err)?;
        return Ok(Entry::decode(&bytes.ok_or(SpoolError::NotFound)?)?);
    }
    let db = shared.db()?;
    let txn = db.begin_read().map_err(read_err)?;
    let t = txn.open_table(DLQ).map_err(read_err)?;
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

/// The undelivered events of a stopped spool, read without changing anything (inspection and
/// tests; the live spool reads through the writer's index instead).
pub fn stored_events(path: &std::path::Path) -> Result<Vec<(u64, Entry)>, SpoolError> {
    let s = scan::scan(&journal_dir(path), &FaultSwitch::new()).map_err(read_err)?;
    let mut out = Vec::new();
    for id in s.restored.keys() {
        if let Some(bytes) = s.journal.reader.read(*id).map_err(read_err)? {
            out.push((*id, Entry::decode(&bytes)?));
        }
    }
    Ok(out)
}
