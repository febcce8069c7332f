//! The journal's index: where the live version of every undelivered record is, shared by the
//! writer (which changes it once a batch is durable) and the readers (a retry's load, restore,
//! inspection), which read the record's bytes straight from its segment.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    os::unix::fs::FileExt,
    sync::{Arc, Mutex},
};

use super::frame::{self, Frame, PUT_ENTRY_AT};

/// Where the live version of a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub seg: u64,
    /// Offset of the frame in its segment.
    pub off: u64,
    /// Length of the entry (the record's bytes).
    pub len: u32,
    pub accepted_ms: u64,
}

/// The index readers share with the writer: the live record of every id, and the open segments.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub live: BTreeMap<u64, Loc>,
    pub files: HashMap<u64, Arc<File>>,
}

/// The index behind a lock held only for a lookup or for applying one batch, never across I/O.
#[derive(Debug, Default)]
pub(crate) struct Reader(pub Mutex<Index>);

impl Reader {
    /// The record of `id`, read from its segment; `None` when `id` is not live.
    pub fn read(&self, id: u64) -> std::io::Result<Option<Vec<u8>>> {
        // A segment is deleted only when nothing in it is live, so a lookup that races a deletion
        // finds the id gone on its second look.
        for _ in 0..2 {
            let (loc, file) = {
                let ix = self.0.lock().map_err(|_| poisoned())?;
                match ix.live.get(&id) {
                    None => return Ok(None),
                    Some(loc) => (*loc, ix.files.get(&loc.seg).cloned()),
                }
            };
            let Some(file) = file else { continue };
            let mut buf = vec![0u8; PUT_ENTRY_AT + loc.len as usize];
            file.read_exact_at(&mut buf, loc.off)?;
            return match frame::parse(&buf) {
                Ok(Some((Frame::Put { id: got, entry }, _))) if got == id => {
                    Ok(Some(entry.to_vec()))
                }
                _ => Err(std::io::Error::other(format!(
                    "journal frame of spool id {id} does not check out"
                ))),
            };
        }
        Ok(None)
    }
}

pub(super) fn poisoned() -> std::io::Error {
    std::io::Error::other("journal index poisoned")
}
