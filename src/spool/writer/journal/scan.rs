//! Recovery: reading every segment at start into the index, the records to restore and the
//! identities delivered since the last checkpoint.
//!
//! Why every segment is read in full: the last frame of an id decides its state, and frames of one
//! id are spread over segments (an update or a relocation writes the record again at the tail, a
//! delivery's tombstone lands wherever the tail was then). The first torn frame of a segment ends
//! it — after a crash that is the batch being written when the power went, which nobody was
//! answered for. Writing then continues in a fresh segment, so no frame ever follows garbage.

use std::{collections::BTreeMap, path::Path};

use super::{
    Index, Journal, Loc, Reader, Segment,
    frame::{self, Frame, MAGIC},
};
use crate::{
    identity::DedupKey,
    spool::{io::FaultSwitch, record::Entry, writer::Restored},
};

/// What the segments on disk hold.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// The journal over the segments found; no current segment yet ([`Journal::start_segment`]).
    pub journal: Journal,
    /// Every live record that decodes, by id, and the total bytes of live records.
    pub restored: BTreeMap<u64, Restored>,
    pub bytes: u64,
    pub oldest_ms: u64,
    /// Identities of every `Delivered` frame, (key, expiry).
    pub delivered: Vec<(DedupKey, u64)>,
    /// The largest id any frame names.
    pub max_id: u64,
}

/// The segment numbers in `dir`, in order.
fn segment_numbers(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut nos = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(no) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            nos.push(no);
        }
    }
    nos.sort_unstable();
    Ok(nos)
}

/// The state of the scan while segments are read.
#[derive(Default)]
struct Acc {
    live: BTreeMap<u64, Loc>,
    restored: BTreeMap<u64, Restored>,
    delivered: Vec<(DedupKey, u64)>,
    max_id: u64,
}

impl Acc {
    fn frame(&mut self, seg: u64, off: u64, f: Frame<'_>) {
        self.max_id = self.max_id.max(f.id());
        match f {
            Frame::Put { id, entry } => {
                let len = u32::try_from(entry.len()).unwrap_or(u32::MAX);
                let accepted_ms = Entry::accepted_ms_of(entry).unwrap_or(0);
                self.live.insert(
                    id,
                    Loc {
                        seg,
                        off,
                        len,
                        accepted_ms,
                    },
                );
                Restored::note(&mut self.restored, id, entry);
            }
            Frame::Delivered {
                id,
                key,
                expires_ms,
            } => {
                self.live.remove(&id);
                self.restored.remove(&id);
                self.delivered.push((key, expires_ms));
            }
            Frame::Gone { id } => {
                self.live.remove(&id);
                self.restored.remove(&id);
            }
        }
    }

    /// Reads one segment's frames; a torn frame ends it.
    fn segment(&mut self, no: u64, bytes: &[u8]) {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            // Created, but its header never reached the disk: nothing was answered from it.
            if !bytes.is_empty() {
                tracing::warn!(segment = no, "journal segment without a header ignored");
            }
            return;
        }
        let mut at = MAGIC.len();
        loop {
            match frame::parse(&bytes[at..]) {
                Ok(Some((f, n))) => {
                    self.frame(no, at as u64, f);
                    at += n;
                }
                Ok(None) => return,
                Err(frame::Torn) => {
                    tracing::warn!(
                        segment = no,
                        offset = at,
                        ignored = bytes.len() - at,
                        "journal segment ends in a torn frame (a write cut off by a crash); the rest is ignored"
                    );
                    return;
                }
            }
        }
    }
}

/// Reads every segment under `dir` (creating it if needed).
pub(crate) fn scan(dir: &Path, faults: &FaultSwitch) -> std::io::Result<Scanned> {
    std::fs::create_dir_all(dir)?;
    let mut acc = Acc::default();
    let mut segs = BTreeMap::new();
    let mut index = Index::default();
    for no in segment_numbers(dir)? {
        let path = super::seg_path(dir, no);
        acc.segment(no, &std::fs::read(&path)?);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let seg = Segment::new(file);
        index.files.insert(no, seg.file.clone());
        segs.insert(no, seg);
    }
    let (mut bytes, mut oldest_ms) = (0u64, 0u64);
    for loc in acc.live.values() {
        bytes += u64::from(loc.len);
        oldest_ms = match oldest_ms {
            0 => loc.accepted_ms,
            o => o.min(loc.accepted_ms),
        };
        if let Some(s) = segs.get_mut(&loc.seg) {
            s.live += 1;
            s.live_bytes += u64::from(loc.len);
        }
    }
    index.live = acc.live;
    let journal = Journal {
        dir: dir.to_path_buf(),
        faults: faults.clone(),
        reader: std::sync::Arc::new(Reader(std::sync::Mutex::new(index))),
        segs,
        cur: 0,
        pos: 0,
        segment_bytes: super::SEGMENT_BYTES,
        dirty: false,
        unlink: Vec::new(),
        copier: None,
    };
    Ok(Scanned {
        journal,
        restored: acc.restored,
        bytes,
        oldest_ms,
        delivered: acc.delivered,
        max_id: acc.max_id,
    })
}
