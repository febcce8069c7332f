//! The in-process dedup store: a `DashMap` from 16-byte digests to one packed `u64`.
//!
//! Why this shape: at the default bound of 1,000,000 identities the map must stay small and every
//! operation must be one short critical section on one shard. Each entry is the digest (16 bytes)
//! plus a `u64` packing expiry (40 bits of milliseconds since the store started, 34 years), state
//! (2 bits: held, reserved, held-delivering, committed) and the low 22 bits of the owner token.
//! Owners are compared only for the same identity, so 22 bits make a false match need four million reservations of one identity while an old owner
//! is still acting — not a case that happens. No operation awaits while it holds a shard lock: the
//! async trait methods are synchronous bodies.
//!
//! Bounding: when an insert finds the map at `max_entries`, expired entries are swept first; if the
//! map is still full, the oldest ~1% of *committed* entries (smallest expiry) are evicted. Held and
//! reserved entries are never evicted — that would lose a held event or allow a double delivery —
//! so a map full of in-flight entries refuses the insert (`StoreError::Full`, 503 upstream).
//!
//! The sweeper is a background task that removes expired entries every `sweep_interval`; it ends
//! when the cancellation token given to [`MemoryStore::spawn_sweeper`] is cancelled.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use dashmap::{DashMap, mapref::entry::Entry};
use tokio_util::sync::CancellationToken;

use super::{Claim, DedupStore, Existing, Owner, StoreError};
use crate::identity::DedupKey;

const EXPIRY_BITS: u32 = 40;
const EXPIRY_MASK: u64 = (1 << EXPIRY_BITS) - 1;
const STATE_SHIFT: u32 = EXPIRY_BITS;
const OWNER_SHIFT: u32 = EXPIRY_BITS + 2;
const OWNER_MASK: u64 = (1 << (64 - OWNER_SHIFT)) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// A held copy being delivered after its grace (see [`super`]).
    HeldInFlight = 0,
    Held = 1,
    Reserved = 2,
    Committed = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    expires: u64,
    state: State,
    owner: u64,
}

impl Slot {
    fn new(state: State, owner: Owner, expires: u64) -> Self {
        Self {
            expires: expires.min(EXPIRY_MASK),
            state,
            owner: owner & OWNER_MASK,
        }
    }

    fn pack(self) -> u64 {
        self.expires | (self.state as u64) << STATE_SHIFT | self.owner << OWNER_SHIFT
    }

    fn unpack(v: u64) -> Self {
        let state = match (v >> STATE_SHIFT) & 0b11 {
            0 => State::HeldInFlight,
            1 => State::Held,
            2 => State::Reserved,
            _ => State::Committed,
        };
        Self {
            expires: v & EXPIRY_MASK,
            state,
            owner: v >> OWNER_SHIFT,
        }
    }

    fn owned_by(self, owner: Owner) -> bool {
        self.owner == owner & OWNER_MASK
    }

    fn existing(self) -> Existing {
        match self.state {
            State::Held => Existing::Held,
            State::Reserved => Existing::InFlight,
            State::HeldInFlight => Existing::HeldInFlight,
            State::Committed => Existing::Delivered,
        }
    }
}

/// Cheap to clone: all clones share one map.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    map: DashMap<[u8; 16], u64>,
    /// Approximate entry count, kept so the bound check costs one atomic load, not a shard scan.
    len: AtomicUsize,
    max_entries: usize,
    started: Instant,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                map: DashMap::new(),
                len: AtomicUsize::new(0),
                max_entries: max_entries.max(1),
                started: Instant::now(),
            }),
        }
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

    /// Runs the expiry sweep every `interval` until `stop` is cancelled.
    pub fn spawn_sweeper(
        &self,
        interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        let removed = store.sweep_at(store.now());
                        if removed > 0 {
                            tracing::debug!(removed, "dedup sweep");
                        }
                    }
                }
            }
        })
    }

    /// Removes every entry expired at `now`; returns how many.
    pub fn sweep_at(&self, now: u64) -> usize {
        let before = self.inner.map.len();
        self.inner.map.retain(|_, v| Slot::unpack(*v).expires > now);
        let after = self.inner.map.len();
        self.inner.len.store(after, Ordering::Relaxed);
        before.saturating_sub(after)
    }

    /// Makes room for one insert when the map is at its bound.
    fn make_room(&self, now: u64) -> Result<(), StoreError> {
        if self.inner.len.load(Ordering::Relaxed) < self.inner.max_entries {
            return Ok(());
        }
        self.sweep_at(now);
        if self.inner.map.len() < self.inner.max_entries {
            return Ok(());
        }
        // Evict the oldest ~1% of committed entries: one scan to find the expiry threshold.
        let mut expiries: Vec<u64> = self
            .inner
            .map
            .iter()
            .map(|e| Slot::unpack(*e.value()))
            .filter(|s| s.state == State::Committed)
            .map(|s| s.expires)
            .collect();
        if expiries.is_empty() {
            return Err(StoreError::Full);
        }
        let nth = (self.inner.max_entries / 100).clamp(1, expiries.len()) - 1;
        let (_, threshold, _) = expiries.select_nth_unstable(nth);
        let threshold = *threshold;
        self.inner.map.retain(|_, v| {
            let s = Slot::unpack(*v);
            s.state != State::Committed || s.expires > threshold
        });
        self.inner
            .len
            .store(self.inner.map.len(), Ordering::Relaxed);
        tracing::warn!(
            max_entries = self.inner.max_entries,
            "dedup store full: evicted the oldest delivered identities; raise dedup.max_entries or lower dedup.ttl"
        );
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const LEASE: Duration = Duration::from_millis(1_000);
    const TTL: Duration = Duration::from_millis(10_000);

    fn k(i: u8) -> DedupKey {
        DedupKey([i; 16])
    }

    #[test]
    fn packing_round_trips() {
        for state in [
            State::HeldInFlight,
            State::Held,
            State::Reserved,
            State::Committed,
        ] {
            let s = Slot::new(state, u64::MAX, 123_456_789);
            assert_eq!(Slot::unpack(s.pack()), s);
            assert!(s.owned_by(u64::MAX));
        }
    }

    #[test]
    fn two_phase_marking() {
        let s = MemoryStore::new(100);
        assert_eq!(s.reserve_at(&k(1), 10, LEASE, 0).unwrap(), Claim::Acquired);
        assert_eq!(
            s.reserve_at(&k(1), 11, LEASE, 1).unwrap(),
            Claim::Duplicate(Existing::InFlight)
        );
        assert!(!s.commit_at(&k(1), 11, TTL, 2), "a non-owner cannot commit");
        assert!(s.commit_at(&k(1), 10, TTL, 2));
        assert_eq!(
            s.reserve_at(&k(1), 12, LEASE, 3).unwrap(),
            Claim::Duplicate(Existing::Delivered)
        );
        assert_eq!(
            s.reserve_at(&k(1), 12, LEASE, 10_002).unwrap(),
            Claim::Acquired,
            "after the TTL"
        );
        assert!(s.release_at(&k(1), 12, 10_003));
        assert_eq!(
            s.reserve_at(&k(1), 13, LEASE, 10_004).unwrap(),
            Claim::Acquired,
            "after a release"
        );
    }

    #[test]
    fn clean_copy_preempts_held_copy() {
        let s = MemoryStore::new(100);
        assert_eq!(s.hold_at(&k(1), 1, TTL, 0).unwrap(), Claim::Acquired);
        assert_eq!(
            s.hold_at(&k(1), 2, TTL, 1).unwrap(),
            Claim::Duplicate(Existing::Held)
        );
        assert_eq!(s.reserve_at(&k(1), 3, LEASE, 2).unwrap(), Claim::Preempted);
        assert!(
            !s.claim_held_at(&k(1), 1, LEASE, 3),
            "the held owner lost it"
        );
        assert!(!s.commit_at(&k(1), 1, TTL, 3));
        assert!(s.commit_at(&k(1), 3, TTL, 4));
        // A lone held copy is claimed by its owner after the grace.
        assert_eq!(s.hold_at(&k(2), 5, TTL, 0).unwrap(), Claim::Acquired);
        assert!(s.claim_held_at(&k(2), 5, LEASE, 5));
        assert!(!s.claim_held_at(&k(2), 5, LEASE, 6), "claiming twice fails");
        assert_eq!(
            s.reserve_at(&k(2), 6, LEASE, 6).unwrap(),
            Claim::Duplicate(Existing::HeldInFlight),
            "a claimed held copy is told apart from a request's reservation"
        );
        assert_eq!(
            s.hold_at(&k(2), 6, LEASE, 6).unwrap(),
            Claim::Duplicate(Existing::HeldInFlight)
        );
        assert!(s.release_at(&k(2), 5, 7), "its owner releases it");
        assert_eq!(s.reserve_at(&k(2), 6, LEASE, 8).unwrap(), Claim::Acquired);
    }

    #[test]
    fn bound_evicts_expired_then_oldest_committed_never_in_flight() {
        let s = MemoryStore::new(100);
        for i in 0..50u8 {
            s.reserve_at(&k(i), 1, LEASE, 0).unwrap();
            s.commit_at(&k(i), 1, Duration::from_millis(100 + i as u64), 0);
        }
        for i in 50..100u8 {
            s.reserve_at(&k(i), 1, Duration::from_secs(3600), 0)
                .unwrap();
        }
        assert_eq!(s.len(), 100);
        // Full: the oldest committed entry (k(0)) goes, in-flight ones stay.
        assert_eq!(s.reserve_at(&k(200), 1, LEASE, 1).unwrap(), Claim::Acquired);
        assert_eq!(s.state_at(&k(0), 1), None);
        for i in 50..100u8 {
            assert_eq!(s.state_at(&k(i), 1), Some(Existing::InFlight));
        }
        // Past every commit's expiry the sweep frees room first.
        assert_eq!(s.sweep_at(1_000), 49);
    }

    #[test]
    fn full_of_in_flight_refuses() {
        let s = MemoryStore::new(16);
        for i in 0..16u8 {
            s.reserve_at(&k(i), 1, LEASE, 0).unwrap();
        }
        assert!(matches!(
            s.reserve_at(&k(99), 1, LEASE, 1),
            Err(StoreError::Full)
        ));
        // Expired leases make room again.
        assert_eq!(
            s.reserve_at(&k(99), 1, LEASE, 2_000).unwrap(),
            Claim::Acquired
        );
    }

    /// Only an insert needs room: a copy of a live identity, met while the map is at its bound,
    /// is answered from the entry it finds. Making room first evicted the oldest committed
    /// identities — possibly the very one asked about, which was then handed out again (a second
    /// delivery) — and refused a duplicate of an in-flight identity with `Full` (503).
    #[test]
    fn a_live_identity_at_the_bound_is_answered_not_evicted() {
        let s = MemoryStore::new(16);
        for i in 0..16u8 {
            s.reserve_at(&k(i), 1, LEASE, 0).unwrap();
            assert!(s.commit_at(&k(i), 1, TTL + Duration::from_millis(i.into()), 0));
        }
        assert_eq!(
            s.reserve_at(&k(0), 2, LEASE, 1).unwrap(),
            Claim::Duplicate(Existing::Delivered),
            "the oldest delivered identity is still a duplicate"
        );
        assert_eq!(
            s.hold_at(&k(0), 2, LEASE, 1).unwrap(),
            Claim::Duplicate(Existing::Delivered)
        );
        assert_eq!(s.len(), 16, "nothing was evicted for a lookup");

        let s = MemoryStore::new(16);
        for i in 0..15u8 {
            s.reserve_at(&k(i), 1, LEASE, 0).unwrap();
        }
        assert_eq!(s.hold_at(&k(15), 1, TTL, 0).unwrap(), Claim::Acquired);
        assert_eq!(
            s.reserve_at(&k(0), 2, LEASE, 1).unwrap(),
            Claim::Duplicate(Existing::InFlight),
            "a copy of an in-flight identity is a duplicate, not a full store"
        );
        assert_eq!(
            s.reserve_at(&k(15), 2, LEASE, 1).unwrap(),
            Claim::Preempted,
            "a clean copy takes over a held one without needing room"
        );
        assert!(matches!(
            s.reserve_at(&k(99), 2, LEASE, 1),
            Err(StoreError::Full)
        ));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reserve(u8, u8),
        Hold(u8, u8),
        Claim(u8, u8),
        Commit(u8, u8),
        Release(u8, u8),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = 0u8..3;
        let owner = 1u8..6;
        prop_oneof![
            (id.clone(), owner.clone()).prop_map(|(i, o)| Op::Reserve(i, o)),
            (id.clone(), owner.clone()).prop_map(|(i, o)| Op::Hold(i, o)),
            (id.clone(), owner.clone()).prop_map(|(i, o)| Op::Claim(i, o)),
            (id.clone(), owner.clone()).prop_map(|(i, o)| Op::Commit(i, o)),
            (id, owner).prop_map(|(i, o)| Op::Release(i, o)),
            (0u16..3_000).prop_map(Op::Advance),
        ]
    }

    /// The model's view of one identity.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum M {
        Held(u8, u64),
        Reserved(u8, u64),
        HeldDelivering(u8, u64),
        Committed(u64),
    }

    proptest! {
        /// For any sequence of operations and clock advances: at most one holder per identity, and a
        /// committed identity is never handed out again inside its TTL. The store is checked against
        /// a plain model of the state table in `store/mod.rs`.
        #[test]
        fn at_most_one_holder_and_no_reissue_within_ttl(ops in prop::collection::vec(op(), 1..300)) {
            let s = MemoryStore::new(1_000);
            let mut now = 0u64;
            let mut model: HashMap<u8, M> = HashMap::new();
            let lease = LEASE.as_millis() as u64;
            let ttl = TTL.as_millis() as u64;
            for op in ops {
                // Expire the model first, as the store does lazily.
                model.retain(|_, m| match *m { M::Held(_, e) | M::Reserved(_, e) | M::HeldDelivering(_, e) | M::Committed(e) => e > now });
                match op {
                    Op::Advance(d) => now += d as u64,
                    Op::Reserve(i, o) => {
                        let r = s.reserve_at(&k(i), o as u64, LEASE, now).unwrap();
                        let expected = match model.get(&i) {
                            None => Claim::Acquired,
                            Some(M::Held(..)) => Claim::Preempted,
                            Some(M::Reserved(..)) => Claim::Duplicate(Existing::InFlight),
                            Some(M::HeldDelivering(..)) => Claim::Duplicate(Existing::HeldInFlight),
                            Some(M::Committed(_)) => Claim::Duplicate(Existing::Delivered),
                        };
                        prop_assert_eq!(r, expected);
                        if matches!(r, Claim::Acquired | Claim::Preempted) {
                            model.insert(i, M::Reserved(o, now + lease));
                        }
                    }
                    Op::Hold(i, o) => {
                        let r = s.hold_at(&k(i), o as u64, LEASE, now).unwrap();
                        prop_assert_eq!(r == Claim::Acquired, !model.contains_key(&i));
                        if r == Claim::Acquired {
                            model.insert(i, M::Held(o, now + lease));
                        }
                    }
                    Op::Claim(i, o) => {
                        let ok = s.claim_held_at(&k(i), o as u64, LEASE, now);
                        prop_assert_eq!(ok, matches!(model.get(&i), Some(M::Held(p, _)) if *p == o));
                        if ok {
                            model.insert(i, M::HeldDelivering(o, now + lease));
                        }
                    }
                    Op::Commit(i, o) => {
                        let ok = s.commit_at(&k(i), o as u64, TTL, now);
                        let owned = matches!(model.get(&i), Some(M::Held(p, _) | M::Reserved(p, _) | M::HeldDelivering(p, _)) if *p == o);
                        prop_assert_eq!(ok, owned, "commit succeeds exactly for the live owner");
                        if ok {
                            model.insert(i, M::Committed(now + ttl));
                        }
                    }
                    Op::Release(i, o) => {
                        let ok = s.release_at(&k(i), o as u64, now);
                        let owned = matches!(model.get(&i), Some(M::Held(p, _) | M::Reserved(p, _) | M::HeldDelivering(p, _)) if *p == o);
                        prop_assert_eq!(ok, owned, "release succeeds exactly for the live owner");
                        if ok {
                            model.remove(&i);
                        }
                    }
                }
                model.retain(|_, m| match *m { M::Held(_, e) | M::Reserved(_, e) | M::HeldDelivering(_, e) | M::Committed(e) => e > now });
                // The store and the model agree on every identity's state.
                for i in 0..3u8 {
                    let want = model.get(&i).map(|m| match m {
                        M::Held(..) => Existing::Held,
                        M::Reserved(..) => Existing::InFlight,
                        M::HeldDelivering(..) => Existing::HeldInFlight,
                        M::Committed(_) => Existing::Delivered,
                    });
                    prop_assert_eq!(s.state_at(&k(i), now), want);
                }
            }
        }
    }
}
