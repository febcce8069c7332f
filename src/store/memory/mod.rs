//! The in-process dedup store: a `DashMap` from 16-byte digests to one packed `u64`.
//!
//! Why this shape: at the default bound of 1,000,000 identities the map must stay small and every
//! operation must be one short critical section on one shard. Each entry is the digest (16 bytes)
//! plus a `u64` packing expiry (40 bits of milliseconds since the store started, 34 years), state
//! (2 bits: held, reserved, held-delivering, committed) and the low 22 bits of the owner token.
//! Owners are compared only for the same identity, so 22 bits make a false match need four
//! million reservations of one identity while an old owner is still acting — not a case that
//! happens. No operation awaits while it holds a shard lock: the
//! async trait methods are synchronous bodies.
//!
//! Bounding: when an insert finds the map at `max_entries`, expired entries are swept first; if the
//! map is still full, the oldest ~1% of *committed* entries (smallest expiry) are evicted. Held and
//! reserved entries are never evicted — that would lose a held event or allow a double delivery —
//! so a map full of in-flight entries refuses the insert (`StoreError::Full`, 503 upstream).
//!
//! The sweeper is a background task that removes expired entries every `sweep_interval`; it ends
//! when the cancellation token given to [`MemoryStore::spawn_sweeper`] is cancelled.
//!
//! Layout: the claim operations here; the packing in `slot`, the map's hasher in `hasher`, the
//! sweep and the bound in `sweep`, the unit tests in `tests` and the model-based property test in
//! `model_tests`.

mod hasher;
#[cfg(test)]
mod model_tests;
mod slot;
mod sweep;
#[cfg(test)]
mod tests;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use dashmap::{DashMap, mapref::entry::Entry};

use super::{Claim, DedupStore, Existing, Owner, StoreError};
use crate::identity::DedupKey;
use slot::{Slot, State};

/// Shards of the map. More than dashmap's default (4 × cores): each shard is locked on its own
/// by the sweep and by a table resize, so at 10 M identities a shard holds ≈ 40 k entries and
/// no lock is held for more than a fraction of a millisecond (`sweep.rs`). One shard costs a
/// lock and an empty table, ≈ 64 bytes.
const SHARDS: usize = 256;

/// Cheap to clone: all clones share one map.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Keyed digests hash as themselves ([`hasher`] says why that is safe).
    map: DashMap<[u8; 16], u64, hasher::DigestState>,
    /// Approximate entry count, kept so the bound check costs one atomic load, not a shard scan.
    len: AtomicUsize,
    max_entries: usize,
    started: Instant,
    /// Delivered identities evicted at the bound while their TTL still ran (see `sweep.rs`).
    evicted_live: AtomicU64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                map: DashMap::with_hasher_and_shard_amount(hasher::DigestState::default(), SHARDS),
                len: AtomicUsize::new(0),
                max_entries: max_entries.max(1),
                started: Instant::now(),
                evicted_live: AtomicU64::new(0),
            }),
        }
    }

    /// Delivered identities evicted so far while their TTL still ran: each one's next repeat is
    /// forwarded again (`dedup_gateway_store_evicted_live_total`).
    pub fn evicted_live(&self) -> u64 {
        self.inner.evicted_live.load(Ordering::Relaxed)
    }

    /// Milliseconds since the store started: the clock of every expiry.
    pub fn now(&self) -> u64 {
        ms(self.inner.started.elapsed())
    }

    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.map.is_empty()
    }

    /// Inserts into a vacant slot or overwrites an expired one; the shared path of reserve and hold.
    ///
    /// Only an insert needs room: an entry of this identity, live or expired, is answered or
    /// overwritten in place. Making room first could evict this very identity (which was then
    /// handed out again: a second delivery) or refuse a plain duplicate as `Full`.
    fn acquire_at(
        &self,
        key: &DedupKey,
        slot: Slot,
        now: u64,
        preempt_held: bool,
    ) -> Result<Claim, StoreError> {
        match self.inner.map.entry(key.0) {
            Entry::Occupied(mut o) => return Ok(settle(o.get_mut(), slot, now, preempt_held)),
            Entry::Vacant(v) if self.inner.len.load(Ordering::Relaxed) < self.inner.max_entries => {
                v.insert(slot.pack());
                self.inner.len.fetch_add(1, Ordering::Relaxed);
                return Ok(Claim::Acquired);
            }
            // At the bound: make room, but not under this shard's lock (that sweeps every shard).
            Entry::Vacant(_) => {}
        }
        self.make_room(now)?;
        match self.inner.map.entry(key.0) {
            Entry::Vacant(v) => {
                v.insert(slot.pack());
                self.inner.len.fetch_add(1, Ordering::Relaxed);
                Ok(Claim::Acquired)
            }
            Entry::Occupied(mut o) => Ok(settle(o.get_mut(), slot, now, preempt_held)),
        }
    }

    pub fn reserve_at(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
        now: u64,
    ) -> Result<Claim, StoreError> {
        let slot = Slot::new(State::Reserved, owner, now.saturating_add(ms(lease)));
        self.acquire_at(key, slot, now, true)
    }

    pub fn hold_at(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
        now: u64,
    ) -> Result<Claim, StoreError> {
        let slot = Slot::new(State::Held, owner, now.saturating_add(ms(lease)));
        self.acquire_at(key, slot, now, false)
    }

    /// Applies `f` to the live entry owned by `owner`; returns whether it was owned.
    fn with_owned(
        &self,
        key: &DedupKey,
        owner: Owner,
        now: u64,
        f: impl FnOnce(Slot) -> Option<Slot>,
    ) -> bool {
        let Some(mut e) = self.inner.map.get_mut(&key.0) else {
            return false;
        };
        let cur = Slot::unpack(*e);
        if cur.expires <= now || !cur.owned_by(owner) || cur.state == State::Committed {
            return false;
        }
        match f(cur) {
            Some(next) => {
                *e = next.pack();
                true
            }
            None => {
                drop(e);
                // Re-check under the removal lock: the owner cannot have changed in between,
                // because only this owner may change an owned entry.
                let removed = self
                    .inner
                    .map
                    .remove_if(&key.0, |_, v| Slot::unpack(*v).owned_by(owner))
                    .is_some();
                if removed {
                    // Saturating: a sweep may have stored a count that already lacks this
                    // entry, and a wrapped count would send every insert into `make_room`.
                    let _ =
                        self.inner
                            .len
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                Some(n.saturating_sub(1))
                            });
                }
                removed
            }
        }
    }

    pub fn claim_held_at(&self, key: &DedupKey, owner: Owner, lease: Duration, now: u64) -> bool {
        let Some(mut e) = self.inner.map.get_mut(&key.0) else {
            return false;
        };
        let cur = Slot::unpack(*e);
        if cur.expires <= now || cur.state != State::Held || !cur.owned_by(owner) {
            return false;
        }
        *e = Slot::new(State::HeldInFlight, owner, now.saturating_add(ms(lease))).pack();
        true
    }

    /// A fresh lease for the caller's live reservation (or held copy's delivery); false if it is
    /// not the caller's (any more).
    pub fn renew_at(&self, key: &DedupKey, owner: Owner, lease: Duration, now: u64) -> bool {
        let Some(mut e) = self.inner.map.get_mut(&key.0) else {
            return false;
        };
        let cur = Slot::unpack(*e);
        let live = cur.expires > now && cur.owned_by(owner);
        if !live || !matches!(cur.state, State::Reserved | State::HeldInFlight) {
            return false;
        }
        *e = Slot::new(cur.state, owner, now.saturating_add(ms(lease))).pack();
        true
    }

    pub fn commit_at(&self, key: &DedupKey, owner: Owner, ttl: Duration, now: u64) -> bool {
        self.with_owned(key, owner, now, |_| {
            Some(Slot::new(
                State::Committed,
                owner,
                now.saturating_add(ms(ttl)),
            ))
        })
    }

    pub fn release_at(&self, key: &DedupKey, owner: Owner, now: u64) -> bool {
        self.with_owned(key, owner, now, |_| None)
    }

    pub fn insert_committed_at(
        &self,
        key: &DedupKey,
        ttl: Duration,
        now: u64,
    ) -> Result<(), StoreError> {
        self.make_room(now)?;
        let slot = Slot::new(State::Committed, 0, now.saturating_add(ms(ttl)));
        if self.inner.map.insert(key.0, slot.pack()).is_none() {
            self.inner.len.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The live state of an identity, for tests and lookups.
    pub fn state_at(&self, key: &DedupKey, now: u64) -> Option<Existing> {
        let v = *self.inner.map.get(&key.0)?;
        let s = Slot::unpack(v);
        (s.expires > now).then(|| s.existing())
    }
}

/// A reserve or hold meeting an existing entry `v`: takes it over when expired (or held, for a
/// clean copy that may preempt), else reports what it found.
fn settle(v: &mut u64, slot: Slot, now: u64, preempt_held: bool) -> Claim {
    let cur = Slot::unpack(*v);
    if cur.expires <= now {
        *v = slot.pack();
        Claim::Acquired
    } else if preempt_held && cur.state == State::Held {
        *v = slot.pack();
        Claim::Preempted
    } else {
        Claim::Duplicate(cur.existing())
    }
}

impl DedupStore for MemoryStore {
    async fn reserve(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.reserve_at(key, owner, lease, self.now())
    }
    async fn hold(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.hold_at(key, owner, lease, self.now())
    }
    async fn claim_held(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.claim_held_at(key, owner, lease, self.now()))
    }
    async fn renew(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.renew_at(key, owner, lease, self.now()))
    }
    async fn commit(
        &self,
        key: &DedupKey,
        owner: Owner,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.commit_at(key, owner, ttl, self.now()))
    }
    async fn release(&self, key: &DedupKey, owner: Owner) -> Result<bool, StoreError> {
        Ok(self.release_at(key, owner, self.now()))
    }
    async fn peek(&self, key: &DedupKey) -> Result<Option<Existing>, StoreError> {
        Ok(self.state_at(key, self.now()))
    }
    async fn insert_committed(&self, key: &DedupKey, ttl: Duration) -> Result<(), StoreError> {
        self.insert_committed_at(key, ttl, self.now())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
