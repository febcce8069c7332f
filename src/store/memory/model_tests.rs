//! The memory store checked against a plain model of the state table in `store/mod.rs`, over any
//! sequence of operations and clock advances.

use std::collections::HashMap;

use proptest::prelude::*;

use super::{
    Claim, Existing, MemoryStore,
    tests::{LEASE, TTL, k},
};

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

/// The model's view of one identity: its state, owner and expiry.
#[derive(Debug, Clone, Copy, PartialEq)]
enum M {
    Held(u8, u64),
    Reserved(u8, u64),
    HeldDelivering(u8, u64),
    Committed(u64),
}

impl M {
    fn expires(self) -> u64 {
        match self {
            M::Held(_, e) | M::Reserved(_, e) | M::HeldDelivering(_, e) | M::Committed(e) => e,
        }
    }

    fn existing(self) -> Existing {
        match self {
            M::Held(..) => Existing::Held,
            M::Reserved(..) => Existing::InFlight,
            M::HeldDelivering(..) => Existing::HeldInFlight,
            M::Committed(_) => Existing::Delivered,
        }
    }
}

/// The model: every live identity, and the clock.
#[derive(Default)]
struct Model {
    ids: HashMap<u8, M>,
    now: u64,
}

impl Model {
    /// Forgets what expired, as the store does lazily.
    fn expire(&mut self) {
        let now = self.now;
        self.ids.retain(|_, m| m.expires() > now);
    }

    /// Whether `o` is the live owner of `i` (held, reserved or held-delivering).
    fn owned(&self, i: u8, o: u8) -> bool {
        matches!(self.ids.get(&i), Some(M::Held(p, _) | M::Reserved(p, _) | M::HeldDelivering(p, _)) if *p == o)
    }

    fn expected_reserve(&self, i: u8) -> Claim {
        match self.ids.get(&i) {
            None => Claim::Acquired,
            Some(M::Held(..)) => Claim::Preempted,
            Some(m) => Claim::Duplicate(m.existing()),
        }
    }
}

/// Applies `op` to the store and the model, checking the store's answer against the model's.
fn step(s: &MemoryStore, m: &mut Model, op: Op) -> Result<(), TestCaseError> {
    let (lease, ttl, now) = (LEASE.as_millis() as u64, TTL.as_millis() as u64, m.now);
    match op {
        Op::Advance(d) => m.now += d as u64,
        Op::Reserve(i, o) => {
            let r = s.reserve_at(&k(i), o as u64, LEASE, now).unwrap();
            prop_assert_eq!(r, m.expected_reserve(i));
            if matches!(r, Claim::Acquired | Claim::Preempted) {
                m.ids.insert(i, M::Reserved(o, now + lease));
            }
        }
        Op::Hold(i, o) => {
            let r = s.hold_at(&k(i), o as u64, LEASE, now).unwrap();
            prop_assert_eq!(r == Claim::Acquired, !m.ids.contains_key(&i));
            if r == Claim::Acquired {
                m.ids.insert(i, M::Held(o, now + lease));
            }
        }
        Op::Claim(i, o) => {
            let ok = s.claim_held_at(&k(i), o as u64, LEASE, now);
            prop_assert_eq!(ok, matches!(m.ids.get(&i), Some(M::Held(p, _)) if *p == o));
            if ok {
                m.ids.insert(i, M::HeldDelivering(o, now + lease));
            }
        }
        Op::Commit(i, o) => {
            let ok = s.commit_at(&k(i), o as u64, TTL, now);
            prop_assert_eq!(
                ok,
                m.owned(i, o),
                "commit succeeds exactly for the live owner"
            );
            if ok {
                m.ids.insert(i, M::Committed(now + ttl));
            }
        }
        Op::Release(i, o) => {
            let ok = s.release_at(&k(i), o as u64, now);
            prop_assert_eq!(
                ok,
                m.owned(i, o),
                "release succeeds exactly for the live owner"
            );
            if ok {
                m.ids.remove(&i);
            }
        }
    }
    Ok(())
}

proptest! {
    /// For any sequence of operations and clock advances: at most one holder per identity, and a
    /// committed identity is never handed out again inside its TTL. The store is checked against
    /// a plain model of the state table in `store/mod.rs`.
    #[test]
    fn at_most_one_holder_and_no_reissue_within_ttl(ops in prop::collection::vec(op(), 1..300)) {
        let s = MemoryStore::new(1_000);
        let mut model = Model::default();
        for op in ops {
            model.expire();
            step(&s, &mut model, op)?;
            model.expire();
            // The store and the model agree on every identity's state.
            for i in 0..3u8 {
                let want = model.ids.get(&i).map(|m| m.existing());
                prop_assert_eq!(s.state_at(&k(i), model.now), want);
            }
        }
    }
}
