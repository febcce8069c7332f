//! The events journal: undelivered spooled events as an append-only log of segment files, beside
//! the redb database that keeps the dead-letter queue and the delivered identities.
//!
//! # Why a log for the events, and redb for the rest
//! A spooled event lives for one delivery, usually well under a second: it is written once at
//! acceptance and removed once at delivery. In a B-tree each of those is a copy-on-write of the
//! leaf and of every branch page above it, once per commit; measured, redb was 55 % of a spooled
//! event's instructions and its writer thread a pwrite per dirty page (BENCHMARKS.md, "What
//! limits the figures not met", session 9). Here the acceptance is one frame appended to the
//! current segment and the delivery another, each batch one `pwrite` and one `fdatasync`. What
//! a log does badly stays in redb: the dead-letter queue (listed, replayed and deleted by id, kept
//! for days) and delivered identities (kept for the dedup TTL, then swept by expiry).
//!
//! # The rules that keep it safe
//! - A batch is answered only after its frames are fsync'd, and the in-memory index changes only
//!   then: a failed write leaves both the file position and the index as they were, so the next
//!   batch overwrites whatever part of the failed one reached the disk.
//! - A `Delivered` frame carries the identity and its expiry, so until the identity is in redb's
//!   `committed` table the journal is where it is durable. A segment's identities are copied into
//!   redb after the segment is closed ([`Journal::take_checkpoint`], on a thread of its own so a
//!   large copy does not hold up the batches); only a checkpointed segment may be deleted.
//! - Segments are deleted oldest first and only when nothing in them is live: a tombstone always
//!   lives in the same or a later segment than the record it ends, so deleting a prefix can never
//!   bring a delivered record back at the next start.
//! - A live record left alone in an old segment (a held event, a long retry) is relocated: written
//!   again, same id, at the tail ([`Journal::relocation`]), once its segment is mostly dead, so one
//!   slow event does not pin every segment after it.
//! - Recovery ([`scan`]) reads every segment in order; the last frame of a version wins. The first
//!   torn frame ends a segment; the journal then continues in a fresh segment, never after garbage.

pub(crate) mod frame;
mod index;
pub(crate) mod scan;
mod staged;

use index::poisoned;
pub(crate) use index::{Index, Loc, Reader};
use staged::PutAt;
pub(crate) use staged::Staged;

use std::{
    collections::BTreeMap,
    fs::File,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use frame::MAGIC;

use crate::{identity::DedupKey, spool::io::FaultSwitch};

/// A segment is closed once a batch would take it past this size.
pub const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
/// Live records moved per relocation step, so one step stays short.
const RELOCATE_MAX: usize = 512;

/// What the writer knows of one segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub file: Arc<File>,
    /// Live records in it, and their bytes.
    pub live: u64,
    pub live_bytes: u64,
    /// Identities delivered by its `Delivered` frames, until they are checkpointed into redb.
    pub delivered: Vec<(DedupKey, u64)>,
    pub checkpointed: bool,
    /// Its identities are being copied into redb right now.
    pub copying: bool,
}

impl Segment {
    pub fn new(file: File) -> Self {
        Self {
            file: Arc::new(file),
            live: 0,
            live_bytes: 0,
            delivered: Vec::new(),
            checkpointed: false,
            copying: false,
        }
    }
}

/// The writer's side of the journal; only the writer thread touches it.
#[derive(Debug)]
pub(crate) struct Journal {
    pub dir: PathBuf,
    pub faults: FaultSwitch,
    pub reader: Arc<Reader>,
    pub segs: BTreeMap<u64, Segment>,
    /// The segment appended to, and where its next frame goes.
    pub cur: u64,
    pub pos: u64,
    /// A segment is closed once a batch would take it past this ([`SEGMENT_BYTES`]; tests make
    /// it small).
    pub segment_bytes: u64,
    /// A write failed after its bytes may have reached the file: cut them off before the next.
    pub dirty: bool,
    /// Spool ids whose DLQ row a revive must still remove (the removal failed; retried).
    pub unlink: Vec<u64>,
    /// The checkpoint running beside the writer, if any (`maintain.rs`).
    pub copier: Option<std::thread::JoinHandle<super::maintain::Copied>>,
}

/// The segment file `no` inside `dir`.
pub(crate) fn seg_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}.seg"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    fn check(&self) -> std::io::Result<()> {
        if self.faults.failing() {
            Err(std::io::Error::other("injected spool write failure"))
        } else {
            Ok(())
        }
    }

    /// The length of the live record `id`, as `staged` leaves it.
    pub fn live_len(&self, staged: &Staged, id: u64) -> Result<Option<u32>, std::io::Error> {
        if let Some(v) = staged.overlay.get(&id) {
            return Ok(*v);
        }
        let ix = self.reader.0.lock().map_err(|_| poisoned())?;
        Ok(ix.live.get(&id).map(|l| l.len))
    }

    /// Opens a new, empty segment after every existing one and makes it the current one.
    pub fn start_segment(&mut self) -> std::io::Result<()> {
        self.check()?;
        let no = self.segs.keys().next_back().map_or(1, |n| n + 1);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(seg_path(&self.dir, no))?;
        file.write_all_at(MAGIC, 0)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        let seg = Segment::new(file);
        self.reader
            .0
            .lock()
            .map_err(|_| poisoned())?
            .files
            .insert(no, seg.file.clone());
        self.segs.insert(no, seg);
        self.cur = no;
        self.pos = MAGIC.len() as u64;
        Ok(())
    }

    /// Writes and fsyncs the staged frames, then applies them to the index. On an error nothing
    /// is applied and the next write starts where this one did.
    pub fn write(&mut self, staged: Staged) -> std::io::Result<()> {
        if staged.is_empty() {
            return Ok(());
        }
        self.check()?;
        if self.dirty {
            let seg = self
                .segs
                .get(&self.cur)
                .ok_or_else(|| std::io::Error::other("no segment"))?;
            seg.file.set_len(self.pos)?;
            self.dirty = false;
        }
        if self.pos + staged.buf.len() as u64 > self.segment_bytes && self.pos > MAGIC.len() as u64
        {
            self.start_segment()?;
        }
        let seg = self
            .segs
            .get(&self.cur)
            .ok_or_else(|| std::io::Error::other("no segment"))?;
        self.dirty = true;
        seg.file.write_all_at(&staged.buf, self.pos)?;
        seg.file.sync_data()?;
        self.dirty = false;
        self.apply(staged)
    }

    /// Whether the current segment takes an fsync (the probe after a disk error).
    pub fn sync(&self) -> std::io::Result<()> {
        self.check()?;
        match self.segs.get(&self.cur) {
            Some(seg) => seg.file.sync_data(),
            None => Err(std::io::Error::other("no journal segment")),
        }
    }

    fn apply(&mut self, staged: Staged) -> std::io::Result<()> {
        let (base, cur) = (self.pos, self.cur);
        self.pos += staged.buf.len() as u64;
        let mut ix = self.reader.0.lock().map_err(|_| poisoned())?;
        for (id, change) in staged.changes {
            let old = match change {
                Some(PutAt {
                    off,
                    len,
                    accepted_ms,
                }) => {
                    let loc = Loc {
                        seg: cur,
                        off: base + off,
                        len,
                        accepted_ms,
                    };
                    if let Some(s) = self.segs.get_mut(&cur) {
                        s.live += 1;
                        s.live_bytes += u64::from(len);
                    }
                    ix.live.insert(id, loc)
                }
                None => ix.live.remove(&id),
            };
            if let Some(s) = old.and_then(|o| self.segs.get_mut(&o.seg).map(|s| (s, o))) {
                s.0.live = s.0.live.saturating_sub(1);
                s.0.live_bytes = s.0.live_bytes.saturating_sub(u64::from(s.1.len));
            }
        }
        drop(ix);
        if let Some(s) = self.segs.get_mut(&cur) {
            s.delivered.extend(staged.delivered);
        }
        Ok(())
    }

    /// The bytes of every live record and the oldest acceptance time among them (0: none).
    pub fn totals(&self) -> (u64, u64) {
        let Ok(ix) = self.reader.0.lock() else {
            return (0, 0);
        };
        let bytes = ix.live.values().map(|l| u64::from(l.len)).sum();
        let oldest = ix.live.values().map(|l| l.accepted_ms).min().unwrap_or(0);
        (bytes, oldest)
    }

    /// The acceptance time of the live record with the smallest id (0: none), the spool's oldest.
    pub fn oldest_ms(&self) -> u64 {
        self.reader
            .0
            .lock()
            .ok()
            .and_then(|ix| ix.live.first_key_value().map(|(_, l)| l.accepted_ms))
            .unwrap_or(0)
    }

    /// Takes the identities of closed segments not yet in redb (and not being copied), oldest
    /// first; they stay uncheckpointed until [`Journal::checkpointed`] or go back with
    /// [`Journal::give_back`].
    pub fn take_checkpoint(&mut self) -> Vec<(u64, Vec<(DedupKey, u64)>)> {
        let cur = self.cur;
        self.segs
            .iter_mut()
            .filter(|(no, s)| **no != cur && !s.checkpointed && !s.copying)
            .map(|(no, s)| {
                s.copying = true;
                (*no, std::mem::take(&mut s.delivered))
            })
            .collect()
    }

    /// Marks segments checkpointed (their identities are committed in redb).
    pub fn checkpointed(&mut self, nos: &[u64]) {
        for no in nos {
            if let Some(s) = self.segs.get_mut(no) {
                s.checkpointed = true;
                s.copying = false;
                s.delivered = Vec::new();
            }
        }
    }

    /// Returns identities whose copy into redb failed, to be tried again.
    pub fn give_back(&mut self, lists: Vec<(u64, Vec<(DedupKey, u64)>)>) {
        for (no, list) in lists {
            if let Some(s) = self.segs.get_mut(&no) {
                s.copying = false;
                s.delivered = list;
            }
        }
    }

    /// Deletes the oldest segments while nothing in them is live and they are checkpointed.
    pub fn delete_dead(&mut self) -> std::io::Result<usize> {
        let mut removed = 0;
        while let Some((&no, s)) = self.segs.iter().next() {
            if no == self.cur || s.live > 0 || !s.checkpointed {
                break;
            }
            self.check()?;
            std::fs::remove_file(seg_path(&self.dir, no))?;
            self.segs.remove(&no);
            self.reader
                .0
                .lock()
                .map_err(|_| poisoned())?
                .files
                .remove(&no);
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// A batch that moves live records out of the oldest segment when it is mostly dead and
    /// checkpointed, so it can be deleted; `None` when nothing needs moving.
    pub fn relocation(&self) -> std::io::Result<Option<Staged>> {
        let Some((&no, s)) = self.segs.iter().next() else {
            return Ok(None);
        };
        if no == self.cur || s.live == 0 || !s.checkpointed || s.live_bytes * 4 > self.segment_bytes
        {
            return Ok(None);
        }
        let picked: Vec<(u64, Loc)> = {
            let ix = self.reader.0.lock().map_err(|_| poisoned())?;
            ix.live
                .iter()
                .filter(|(_, l)| l.seg == no)
                .take(RELOCATE_MAX)
                .map(|(id, l)| (*id, *l))
                .collect()
        };
        let mut staged = Staged::default();
        for (id, loc) in picked {
            if let Some(entry) = self.reader.read(id)? {
                staged.put(id, &entry, loc.accepted_ms);
            }
        }
        Ok(Some(staged))
    }
}
