//! The protocols of the model, one atomic step (one store operation or one disk write) at a time,
//! in the order the code performs them: a request in spool mode on the memory store
//! (`Gateway::judge` → `Gateway::spool_write`), a spooled event's delivery (`Inner::run_item`
//! and `Inner::claim` in `spool::worker`) and a DLQ replay (`Spool::replay_dlq`).
//!
//! Test-only (`#[cfg(test)]`), over 400 lines: one state machine per actor, kept in one file so a
//! step of each protocol can be read beside the code it models.

use super::{Finding, GRACE, HORIZON, K, Rec, World, ms};
use crate::store::{Claim, Existing, Owner};

#[derive(Debug, Clone)]
pub(crate) enum Actor {
    Request {
        copy: usize,
        held: bool,
        owner: Owner,
        st: Req,
        /// When it arrived (and claimed): its write ends well within the reservation.
        since: u64,
    },
    Item {
        id: u64,
        owner: Owner,
        /// A held record (or one whose claim failed) that must claim its identity first.
        claim: bool,
        /// Release `owner` before claiming (after a failed claim).
        release_first: bool,
        st: Item,
    },
    Replay {
        id: u64,
        owner: Owner,
        st: Replay,
    },
    SyncRequest {
        copy: usize,
        held: bool,
        owner: Owner,
        st: super::sync::Req,
        /// When the claim succeeded: a delivery ends (or times out) within the lease.
        since: u64,
    },
    SyncHeld {
        copy: usize,
        owner: Owner,
        st: super::sync::Held,
        attempts: u32,
        takeovers: u32,
        since: u64,
    },
    /// A request on a shared store (local spool or JetStream): peek, write, claim.
    SharedRequest {
        copy: usize,
        held: bool,
        owner: Owner,
        st: super::shared::Req,
    },
    /// A JetStream message's deliveries; `rec` as last handed out, `fresh` the delivery's token.
    Jet {
        id: u64,
        fresh: Owner,
        st: super::jet::Msg,
        /// When the current delivery reserved: it ends (or times out) within `dedup.lease`.
        since: u64,
        rec: Rec,
    },
    /// A shared store's background repair after a failed operation (`redis/repair.rs`).
    Repair {
        repair: super::net::Repair,
        until: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Req {
    Claim,
    Write,
    Release,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    Due,
    FreshWrite(Owner),
    FreshReserve(Owner),
    /// Another copy owns the identity, not delivered: look again at this time (`worker::watch`).
    Watch(u64),
    Send,
    Commit,
    InsertCommitted,
    Record,
    WriteDead,
    ReleaseDead,
    Remove,
    /// `keep_reserved` (only after `record_owner`, see [`super::net`]): renew, else reserve.
    Keep,
    KeepReserve,
    /// Another copy holds the identity: `keep_reserved` again at this time.
    KeepLater(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    Reserve,
    Write,
    Release,
}

impl Actor {
    pub fn request(copy: usize, held: bool, owner: Owner, since: u64) -> Self {
        Actor::Request {
            copy,
            held,
            owner,
            st: Req::Claim,
            since,
        }
    }

    pub fn item(id: u64, owner: Owner, claim: bool, release_first: bool) -> Self {
        Actor::Item {
            id,
            owner,
            claim,
            release_first,
            st: Item::Due,
        }
    }

    pub fn replay(id: u64, owner: Owner) -> Self {
        Actor::Replay {
            id,
            owner,
            st: Replay::Reserve,
        }
    }

    /// The copy a request carries (and whether it is marked).
    pub fn carried(&self) -> Option<(usize, bool)> {
        match self {
            Actor::Request { copy, held, .. }
            | Actor::SyncRequest { copy, held, .. }
            | Actor::SharedRequest { copy, held, .. } => Some((*copy, *held)),
            _ => None,
        }
    }

    /// Sync mode: until when time may pass for this actor's delivery in flight (its lease;
    /// `delivery.request_timeout` is shorter, so the delivery ends first).
    pub fn deadline(&self) -> Option<u64> {
        use super::sync::{Held, LEASE, Req};
        match self {
            // A spool write takes one group commit, far less than the reservation's horizon.
            Actor::Request { st, since, .. } if *st != self::Req::Claim => {
                Some(since + HORIZON - 1)
            }
            Actor::SyncRequest { st, since, .. } if !matches!(st, Req::Claim { .. }) => {
                Some(since + LEASE - 1)
            }
            Actor::SyncHeld {
                st: Held::Send | Held::Commit,
                since,
                ..
            } => Some(since + LEASE - 1),
            Actor::Jet {
                st: super::jet::Msg::Send | super::jet::Msg::Commit,
                since,
                ..
            } => Some(since + LEASE - 1),
            _ => None,
        }
    }

    /// OSCAR has the event, the disk does not know yet: a crash now may deliver it again.
    pub fn in_window(&self) -> bool {
        use super::jet::Msg;
        matches!(
            self,
            Actor::Item {
                st: Item::Commit | Item::InsertCommitted | Item::Record,
                ..
            } | Actor::Jet {
                st: Msg::Commit | Msg::Insert | Msg::Ack { window: true },
                ..
            }
        )
    }
}

impl World {
    /// One step of actor `i`; false when it is waiting for time to pass.
    pub(crate) fn step(&mut self, i: usize) -> bool {
        let Some(next) = self.next_of(self.actors[i].clone()) else {
            return false;
        };
        match next {
            Some(a) => self.actors[i] = a,
            None => {
                let done = self.actors.remove(i);
                // A request that ended without a 2xx: MinIO (queue_dir) sends it again.
                if let Some((copy, held)) = done.carried()
                    && !self.acked.iter().any(|(c, _)| *c == copy)
                {
                    self.unanswered.push((copy, held));
                }
            }
        }
        true
    }

    /// What `actor` becomes after one step (`Some(None)`: it ended); `None` while it waits.
    fn next_of(&mut self, actor: Actor) -> Option<Option<Actor>> {
        let next = match actor {
            // Waiting for another request's write in progress (`spool::durable`).
            Actor::Request {
                held,
                st: Req::Claim,
                ..
            } if self.claim_waits(held) => return None,
            Actor::Request {
                copy,
                held,
                owner,
                st,
                since,
            } => self.step_request(copy, held, owner, st, since),
            Actor::Item {
                id,
                owner,
                claim,
                release_first,
                st,
            } => return self.step_item(id, owner, claim, release_first, st),
            Actor::Replay { id, owner, st } => self.step_replay(id, owner, st),
            Actor::SyncRequest {
                copy,
                held,
                owner,
                st,
                since,
            } => self.step_sync_request(copy, held, owner, st, since),
            Actor::SyncHeld {
                copy,
                owner,
                st,
                attempts,
                takeovers,
                since,
            } => return self.step_sync_held(copy, owner, st, (attempts, takeovers), since),
            Actor::SharedRequest {
                copy,
                held,
                owner,
                st,
            } => self.step_shared_request(copy, held, owner, st),
            Actor::Jet {
                id,
                fresh,
                st,
                since,
                rec,
            } => return self.step_jet(id, fresh, st, since, rec),
            Actor::Repair { repair, until } => self.step_repair(repair, until),
        };
        Some(next)
    }

    /// Whether a claim now would be a `duplicate` of a claim whose write is in progress, which
    /// waits for that write (`spool::durable`): a live claim, not a delivered identity (and a
    /// clean copy preempts a held one rather than meeting it).
    fn claim_waits(&self, held: bool) -> bool {
        let state = self.store.state_at(&K, self.now);
        self.write_in_progress()
            && match state {
                None | Some(Existing::Delivered) => false,
                Some(Existing::Held) => held,
                Some(Existing::InFlight | Existing::HeldInFlight) => true,
            }
    }

    /// `judge` → `claim` → `spool_write`; `None` when the request is answered.
    fn step_request(
        &mut self,
        copy: usize,
        held: bool,
        owner: Owner,
        st: Req,
        since: u64,
    ) -> Option<Actor> {
        let again = |st| {
            Some(Actor::Request {
                copy,
                held,
                owner,
                st,
                since,
            })
        };
        match st {
            Req::Claim => {
                let claim = self.store_op(|s, now| {
                    if held {
                        s.hold_at(&K, owner, ms(GRACE + HORIZON), now)
                    } else {
                        s.reserve_at(&K, owner, ms(HORIZON), now)
                    }
                });
                match claim {
                    Ok(Ok(Claim::Acquired | Claim::Preempted)) => again(Req::Write),
                    // A claim whose write is in progress: wait for it, then claim again
                    // (`spool::durable`); a delivered identity never waits.
                    Ok(Ok(Claim::Duplicate(e)))
                        if e != Existing::Delivered && self.write_in_progress() =>
                    {
                        again(Req::Claim)
                    }
                    Ok(Ok(Claim::Duplicate(_))) => {
                        // Durable: a spooled record, the delivered identity, or a dead-letter
                        // entry whose release is still to come (§7: delivered or in the DLQ).
                        if !self.durable_elsewhere(None) && self.disk.dlq.is_empty() {
                            self.find(Finding::DuplicateBeforeDurable);
                        }
                        self.acked.push((copy, "duplicate"));
                        None
                    }
                    // 503: MinIO retries (a later `Copy`).
                    _ => None,
                }
            }
            Req::Write if self.disk_ok() => {
                let id = self.disk.next_id;
                self.disk.next_id += 1;
                let not_before = if held { self.now + GRACE } else { 0 };
                let rec = Rec {
                    owner,
                    held,
                    not_before,
                    accepted: self.now,
                    copy,
                    ..Rec::default()
                };
                self.disk.events.insert(id, rec);
                self.actors.push(Actor::item(id, owner, held, false));
                self.acked
                    .push((copy, if held { "held" } else { "accepted" }));
                None
            }
            Req::Write => again(Req::Release),
            Req::Release => {
                let _ = self.store_infallible(|s, now| s.release_at(&K, owner, now));
                None
            }
        }
    }
}
