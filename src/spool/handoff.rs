//! The hand-off from a request to the first delivery of the record it just wrote: the decoded
//! record, kept in memory for a while, so the worker does not read back from disk what the
//! request had in hand a moment ago.
//!
//! Why it is safe to deliver from this copy instead of the disk: between the `Append` commit and
//! the item's first run nothing else writes that record. Every other op on an event id is made
//! by the worker running that very item (the queue holds each id once), by the restore (before
//! any request is served) or by the dead-letter admin routes (on ids that left `events`). So the
//! copy is the record on disk, byte for byte, when the worker takes it. A copy is only ever
//! *taken* (removed) by the first run of its item; a retry reads the disk again, where the
//! attempts it recorded are.
//!
//! Why it is bounded: the queue promises that a long backlog (OSCAR down for hours) costs a few
//! dozen bytes per event, not its body; this copy adds at most [`MAX_BYTES`] (64 MiB) to that.
//! Beyond [`MAX_ENTRIES`] records or [`MAX_BYTES`] bytes of bodies, a new record is simply not
//! kept here, and its worker loads it from disk as before.
//! Held records (due only after their grace) are never kept.

use std::{collections::HashMap, sync::Mutex};

use super::record::Entry;

/// Records kept at most: a burst of this many events is delivered without reading one back.
/// (4,096 before session 8: a 10 s burst of 64 connections outran delivery by ≈ 80 k events, so
/// most deliveries read the disk on the blocking pool, on the core the intake needed; with
/// 65,536 the spool's intake rose ≈ 20 %, BENCHMARKS.md "Session 8 levers".)
pub(crate) const MAX_ENTRIES: usize = 65_536;
/// Body bytes kept at most: the memory a backlog may cost beyond its queue entries.
pub(crate) const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Admitted records not yet taken by their first delivery, by spool id. The std mutex is held only
/// to insert or remove one entry, never across an await.
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    map: HashMap<u64, Entry>,
    bytes: usize,
}

impl Handoff {
    /// Keeps `entry` for the first delivery of `id` if there is room; otherwise that delivery
    /// reads the disk.
    pub(crate) fn put(&self, id: u64, entry: Entry) {
        let Ok(mut k) = self.kept.lock() else {
            return;
        };
        let len = entry.body.len();
        if k.map.len() >= MAX_ENTRIES || k.bytes.saturating_add(len) > MAX_BYTES {
            return;
        }
        if k.map.insert(id, entry).is_none() {
            k.bytes += len;
        }
    }

    /// The record of `id` as it was written, if it was kept (and not taken before).
    pub(crate) fn take(&self, id: u64) -> Option<Entry> {
        let mut k = self.kept.lock().ok()?;
        let entry = k.map.remove(&id)?;
        k.bytes = k.bytes.saturating_sub(entry.body.len());
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::identity::DedupKey;

    fn entry(body: usize) -> Entry {
        Entry {
            key: DedupKey([1; 16]),
            service: "svc".into(),
            authorization: None,
            body: Bytes::from(vec![b'x'; body]),
            accepted_ms: 1,
            not_before_ms: 0,
            held: false,
            attempts_made: 0,
            attempts: Vec::new(),
            dead: None,
            owner: 7,
        }
    }

    #[test]
    fn a_kept_record_is_taken_once() {
        let h = Handoff::default();
        h.put(1, entry(10));
        assert_eq!(h.take(1), Some(entry(10)));
        assert_eq!(h.take(1), None, "a second run reads the disk");
        assert_eq!(h.take(2), None);
    }

    #[test]
    fn beyond_the_bounds_nothing_is_kept() {
        let h = Handoff::default();
        for id in 0..MAX_ENTRIES as u64 + 5 {
            h.put(id, entry(1));
        }
        assert!(h.take(MAX_ENTRIES as u64).is_none(), "entry cap");
        assert!(h.take(0).is_some());
        let h = Handoff::default();
        h.put(1, entry(MAX_BYTES - 1));
        h.put(2, entry(2));
        assert!(h.take(2).is_none(), "byte cap");
        assert!(h.take(1).is_some());
        h.put(3, entry(2));
        assert!(h.take(3).is_some(), "room again once taken");
    }
}
