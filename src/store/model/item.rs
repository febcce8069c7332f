//! A spooled event's delivery on the local spool (`Inner::run_item`, `Inner::own` and
//! `Inner::claim` in `spool::worker` and `spool::own`), on either store: the memory store, or a
//! shared one whose every operation may fail (and then may have run, see [`super::net`]).

use super::{
    Answer, Finding, GRACE, HORIZON, K, MAX_AGE, Rec, TTL, World,
    actors::{Actor, Item},
    ms,
};
use crate::store::{Claim, Existing, Owner};

impl World {
    /// `run_item`: `None` while not due, `Some(None)` when done.
    pub(super) fn step_item(
        &mut self,
        id: u64,
        owner: Owner,
        claim: bool,
        release_first: bool,
        st: Item,
    ) -> Option<Option<Actor>> {
        let at = |owner, claim, release_first, st| item_at(id, owner, claim, release_first, st);
        // Past the outcome the record may be gone (moved to the DLQ, or removed).
        let rec = self.disk.events.get(&id).cloned();
        let needs_record = !matches!(st, Item::Commit | Item::InsertCommitted | Item::ReleaseDead);
        let Some(rec) = rec.or_else(|| (!needs_record).then(dummy_rec)) else {
            return Some(None);
        };
        match st {
            Item::Due if self.now < rec.not_before => None,
            Item::Due if release_first => match self.release(owner) {
                Ok(_) => at(owner, claim, false, Item::Due),
                // `own`: a store that is down does not hold the event back; sent under the
                // record's own token, which a failed claim that ran unseen owns.
                Err(_) if self.mode.fail_open() => {
                    self.unchecked += 1;
                    at(owner, false, false, Item::Send)
                }
                Err(_) => at(owner, claim, true, Item::Due),
            },
            Item::Due if claim => {
                match self.store_infallible(|s, now| s.claim_held_at(&K, owner, ms(HORIZON), now)) {
                    Ok(true) => at(owner, false, false, Item::Send),
                    Ok(false) => {
                        let fresh = self.owner();
                        at(owner, claim, false, Item::FreshWrite(fresh))
                    }
                    Err(_) => at(owner, claim, true, Item::Due),
                }
            }
            // `record_owner`: a token the record does not name (a fail-open restore's) goes to
            // disk before the send; then `keep_reserved` makes it own the identity.
            Item::Due if owner != rec.owner && self.disk_ok() => {
                if let Some(r) = self.disk.events.get_mut(&id) {
                    r.owner = owner;
                }
                at(owner, false, false, Item::Keep)
            }
            Item::Due if owner != rec.owner => at(owner, false, false, Item::Due),
            Item::Due => at(owner, false, false, Item::Send),
            Item::Keep | Item::KeepReserve | Item::KeepLater(_) => {
                let st = self.step_keep(owner, st)?;
                at(owner, false, false, st)
            }
            Item::FreshWrite(_) | Item::FreshReserve(_) => {
                self.step_fresh(id, owner, claim, st, &rec)
            }
            Item::Watch(due) if self.now < due => None,
            Item::Watch(_) => at(owner, claim, false, Item::Due),
            _ => self.step_outcome(id, owner, (claim, release_first), st, rec),
        }
    }

    /// `claim`'s fresh token: on disk first, then reserved (a held record, or a failed claim).
    fn step_fresh(
        &mut self,
        id: u64,
        owner: Owner,
        claim: bool,
        st: Item,
        rec: &Rec,
    ) -> Option<Option<Actor>> {
        let at = |owner, claim, release_first, st| item_at(id, owner, claim, release_first, st);
        match st {
            // The fresh token goes to disk before it is reserved.
            Item::FreshWrite(fresh) if self.disk_ok() => {
                if let Some(r) = self.disk.events.get_mut(&id) {
                    r.owner = fresh;
                }
                at(owner, claim, false, Item::FreshReserve(fresh))
            }
            Item::FreshWrite(_) => at(owner, claim, true, Item::Due),
            Item::FreshReserve(fresh) => {
                match self.acquire(fresh, false, HORIZON) {
                    Ok(Claim::Acquired | Claim::Preempted) => at(fresh, false, false, Item::Send),
                    // Gives way only to a delivered copy (issue 13 item 1).
                    Ok(Claim::Duplicate(Existing::Delivered)) => {
                        if !self.durable_elsewhere(Some(id)) && self.deliveries == 0 {
                            self.find(Finding::HeldDroppedForNonDurable);
                        }
                        at(fresh, false, false, Item::Remove)
                    }
                    Ok(Claim::Duplicate(_)) if self.now - rec.accepted >= HORIZON => {
                        at(fresh, false, false, Item::WriteDead)
                    }
                    Ok(Claim::Duplicate(_)) => {
                        at(fresh, claim, false, Item::Watch(self.now + GRACE))
                    }
                    _ => at(fresh, claim, true, Item::Due),
                }
            }
            _ => at(owner, claim, false, st),
        }
    }

    /// The send and its outcome: commit and `Delivered`, a retry, or the dead-letter queue.
    fn step_outcome(
        &mut self,
        id: u64,
        owner: Owner,
        (claim, release_first): (bool, bool),
        st: Item,
        rec: Rec,
    ) -> Option<Option<Actor>> {
        let at = |owner, claim, release_first, st| item_at(id, owner, claim, release_first, st);
        match st {
            Item::Send => match std::mem::replace(&mut self.answer, Answer::Ok) {
                Answer::Ok => {
                    self.deliveries += 1;
                    at(owner, false, false, Item::Commit)
                }
                Answer::Retry if self.now.saturating_sub(rec.accepted) < MAX_AGE => {
                    at(owner, false, false, Item::Due)
                }
                Answer::Retry | Answer::Refuse => at(owner, false, false, Item::WriteDead),
            },
            Item::Commit => match self.commit(owner) {
                Ok(false) => at(owner, false, false, Item::InsertCommitted),
                _ => at(owner, false, false, Item::Record),
            },
            Item::InsertCommitted => {
                let _ = self.store_op(|s, now| s.insert_committed_at(&K, ms(TTL), now));
                at(owner, false, false, Item::Record)
            }
            // `write_until_ok`: retried until it succeeds.
            Item::Record if self.disk_ok() => {
                self.disk.events.remove(&id);
                self.disk.committed_until = Some(self.now + TTL);
                Some(None)
            }
            Item::WriteDead if self.disk_ok() => {
                self.disk.events.remove(&id);
                self.disk.dlq.insert(id, rec);
                at(owner, false, false, Item::ReleaseDead)
            }
            Item::ReleaseDead => {
                let _ = self.release(owner);
                Some(None)
            }
            Item::Remove if self.disk_ok() => {
                self.disk.events.remove(&id);
                Some(None)
            }
            Item::Record | Item::WriteDead | Item::Remove => at(owner, claim, release_first, st),
            _ => at(owner, claim, release_first, st),
        }
    }
}

/// An item actor in state `st`, as a step's result.
fn item_at(
    id: u64,
    owner: Owner,
    claim: bool,
    release_first: bool,
    st: Item,
) -> Option<Option<Actor>> {
    Some(Some(Actor::Item {
        id,
        owner,
        claim,
        release_first,
        st,
    }))
}

impl World {
    /// `keep_reserved` for `owner`: the next state, `None` while waiting.
    fn step_keep(&mut self, owner: Owner, st: Item) -> Option<Item> {
        let next = match st {
            Item::KeepLater(due) if self.now < due => return None,
            Item::KeepLater(_) => Item::Keep,
            Item::Keep => {
                match self.store_infallible(|s, now| s.renew_at(&K, owner, ms(HORIZON), now)) {
                    Ok(true) => Item::Send,
                    Ok(false) => Item::KeepReserve,
                    Err(_) => self.keep_failed(),
                }
            }
            _ => match self.acquire(owner, false, HORIZON) {
                Ok(Claim::Acquired | Claim::Preempted) => Item::Send,
                Ok(Claim::Duplicate(Existing::Delivered)) => Item::Remove,
                Ok(Claim::Duplicate(_)) => Item::KeepLater(self.now + GRACE),
                Err(_) => self.keep_failed(),
            },
        };
        Some(next)
    }

    /// A store error while keeping the reservation: sent unchecked (fail-open), else later.
    fn keep_failed(&mut self) -> Item {
        if self.mode.fail_open() {
            self.unchecked += 1;
            return Item::Send;
        }
        Item::KeepLater(self.now + GRACE)
    }
}

/// A stand-in for a record the remaining steps do not read.
fn dummy_rec() -> Rec {
    Rec {
        copy: usize::MAX,
        ..Rec::default()
    }
}
