//! The packed entry: one `u64` per identity, so that a million identities cost the digest and eight
//! bytes each and every update is one store under the shard lock.
//!
//! Layout (low to high): 40 bits of expiry in milliseconds since the store started (34 years),
//! 2 bits of state, the low 22 bits of the owner token (see the parent module on why 22 suffice).

use super::{Existing, Owner};

const EXPIRY_BITS: u32 = 40;
const EXPIRY_MASK: u64 = (1 << EXPIRY_BITS) - 1;
const STATE_SHIFT: u32 = EXPIRY_BITS;
const OWNER_SHIFT: u32 = EXPIRY_BITS + 2;
const OWNER_MASK: u64 = (1 << (64 - OWNER_SHIFT)) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum State {
    /// A held copy being delivered after its grace (see [`super`]).
    HeldInFlight = 0,
    Held = 1,
    Reserved = 2,
    Committed = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) expires: u64,
    pub(super) state: State,
    pub(super) owner: u64,
}

impl Slot {
    pub(super) fn new(state: State, owner: Owner, expires: u64) -> Self {
        Self {
            expires: expires.min(EXPIRY_MASK),
            state,
            owner: owner & OWNER_MASK,
        }
    }

    pub(super) fn pack(self) -> u64 {
        self.expires | (self.state as u64) << STATE_SHIFT | self.owner << OWNER_SHIFT
    }

    pub(super) fn unpack(v: u64) -> Self {
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

    pub(super) fn owned_by(self, owner: Owner) -> bool {
        self.owner == owner & OWNER_MASK
    }

    pub(super) fn existing(self) -> Existing {
        match self.state {
            State::Held => Existing::Held,
            State::Reserved => Existing::InFlight,
            State::HeldInFlight => Existing::HeldInFlight,
            State::Committed => Existing::Delivered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
