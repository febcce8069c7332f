//! One batch's frames as the writer puts them together, and the index changes they make once
//! they are durable. Kept apart from the journal so that nothing staged can touch the index
//! before the batch's fsync: the journal applies it in one go after the write.

use std::collections::HashMap;

use super::frame::Frame;
use crate::identity::DedupKey;

/// A staged `Put`: its frame's offset in the batch, the entry's length, its acceptance time.
#[derive(Debug, Clone, Copy)]
pub(super) struct PutAt {
    pub off: u64,
    pub len: u32,
    pub accepted_ms: u64,
}

/// One batch's frames and the index changes they make once they are durable.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub(super) buf: Vec<u8>,
    /// Per frame: its id, and where the record now is (offset in `buf`, length, accepted time)
    /// or `None` when the frame ends it.
    pub(super) changes: Vec<(u64, Option<PutAt>)>,
    pub(super) delivered: Vec<(DedupKey, u64)>,
    /// The batch's own view of ids it changed: `Some(len)` live, `None` gone.
    pub(super) overlay: HashMap<u64, Option<u32>>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Room for `bytes` of frames, so a batch's buffer grows once.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// The record `id` is now `entry`.
    pub fn put(&mut self, id: u64, entry: &[u8], accepted_ms: u64) {
        self.append(id, entry, accepted_ms);
        let len = u32::try_from(entry.len()).unwrap_or(u32::MAX);
        self.overlay.insert(id, Some(len));
    }

    /// A new record under a fresh id: no op of this batch can name it yet, so the batch's own
    /// view need not know it.
    pub fn append(&mut self, id: u64, entry: &[u8], accepted_ms: u64) {
        let off = self.buf.len() as u64;
        Frame::Put { id, entry }.encode(&mut self.buf);
        let len = u32::try_from(entry.len()).unwrap_or(u32::MAX);
        self.changes.push((
            id,
            Some(PutAt {
                off,
                len,
                accepted_ms,
            }),
        ));
    }

    pub fn delivered(&mut self, id: u64, key: DedupKey, expires_ms: u64) {
        Frame::Delivered {
            id,
            key,
            expires_ms,
        }
        .encode(&mut self.buf);
        self.changes.push((id, None));
        self.overlay.insert(id, None);
        self.delivered.push((key, expires_ms));
    }

    pub fn gone(&mut self, id: u64) {
        Frame::Gone { id }.encode(&mut self.buf);
        self.changes.push((id, None));
        self.overlay.insert(id, None);
    }
}
