//! One JetStream message's deliveries on a shared store, a step at a time (`Inner::handle`,
//! `Inner::own` and `swap`, `settle`, `keep_reserved` and `dead_letter` in `spool/jetstream/`):
//! wait out a held copy's grace, own the identity under a fresh token with the short lease,
//! POST, commit, ack; a retry gives the identity back to the message's own token and NAKs.
//!
//! The message's actor exists from its publish on, before the accepting request's claim: the
//! consumer (on any replica) may hand it out at once, which is the order the session-10 fixes
//! are about. The stream and the store both outlive a crash; an unacked message is handed out
//! again.

use super::{Answer, HORIZON, MAX_AGE, Rec, World, actors::Actor, sync::LEASE};
use crate::store::{Claim, Existing, Owner};

/// `CLAIM_WAIT` (500 ms): a clean message's first delivery that found nothing of its own
/// waits this long for the accept's claim.
pub(crate) const CLAIM_WAIT: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Msg {
    /// Handed out (again) by the consumer.
    Handle,
    /// NAK'd: handed out again at this time.
    Wait(u64),
    /// `swap`: release the message's own token (`first`: its first delivery).
    Release {
        first: bool,
    },
    /// `swap`: reserve under the fresh token for `dedup.lease`.
    Reserve,
    /// The fresh reservation met another owner: is it delivered?
    Peek,
    Send,
    Commit,
    Insert,
    /// Ack; `window`: the identity may not be committed (a repeat after a crash is the window).
    Ack {
        window: bool,
    },
    /// After a retryable answer: release the fresh token, reserve under the message's own.
    KeepRelease,
    KeepReserve,
    /// To the dead-letter stream (a publish), then release `owner` (and the message's token).
    DeadLetter {
        owner: Owner,
    },
    DeadRelease {
        owner: Owner,
    },
}

impl Actor {
    pub fn jet(id: u64, now: u64) -> Self {
        Actor::Jet {
            id,
            fresh: 0,
            st: Msg::Handle,
            since: now,
            rec: Rec::default(),
        }
    }
}

impl World {
    /// One step of a message's delivery: `None` while it waits, `Some(None)` when it ends.
    pub(super) fn step_jet(
        &mut self,
        id: u64,
        fresh: Owner,
        st: Msg,
        since: u64,
        rec: Rec,
    ) -> Option<Option<Actor>> {
        let next = match st {
            Msg::Wait(due) if self.now < due => return None,
            Msg::Wait(_) | Msg::Handle => match self.hand_out(id) {
                Some(rec) => {
                    // Handing out is no store operation: one step with the release that follows.
                    let (fresh, st) = match self.handle(&rec) {
                        (fresh, st @ Msg::Release { .. }) => self.own_jet(fresh, st, &rec),
                        other => other,
                    };
                    return Some(Some(Actor::Jet {
                        id,
                        fresh,
                        st,
                        since,
                        rec,
                    }));
                }
                // Acked or deleted meanwhile: the consumer has nothing more to hand out.
                None => return Some(None),
            },
            Msg::Release { .. } | Msg::Reserve | Msg::Peek => Some(self.own_jet(fresh, st, &rec)),
            _ => self.settle_jet(id, fresh, st, &rec),
        };
        Some(next.map(|(fresh, st)| {
            // The lease of a delivery counts from the reservation that started it.
            let since = if st == Msg::Send { self.now } else { since };
            Actor::Jet {
                id,
                fresh,
                st,
                since,
                rec,
            }
        }))
    }

    /// `own` and `swap`: the message's own token released, a fresh one reserved (or a wait).
    fn own_jet(&mut self, fresh: Owner, st: Msg, rec: &Rec) -> (Owner, Msg) {
        let next = match st {
            Msg::Release { first } => match self.release(rec.owner) {
                // `Own::Unclaimed`: the accept's claim may still be on its way.
                Ok(false) if first && !rec.held => Msg::Wait(self.now + CLAIM_WAIT),
                Ok(_) => Msg::Reserve,
                Err(_) => self.store_failed(Some(fresh)),
            },
            Msg::Reserve => match self.acquire(fresh, false, LEASE) {
                Ok(Claim::Acquired | Claim::Preempted) => Msg::Send,
                Ok(Claim::Duplicate(_)) => Msg::Peek,
                Err(_) => self.store_failed(Some(fresh)),
            },
            Msg::Peek => match self.peek() {
                Ok(Some(Existing::Delivered)) => Msg::Ack { window: false },
                Ok(_) => Msg::Wait(self.backoff()),
                // Another copy owns it: never sent unchecked beside it.
                Err(_) => self.store_failed(None),
            },
            other => other,
        };
        (fresh, next)
    }

    /// The POST and its outcome (`settle`, `keep_reserved`, `dead_letter`); `None` once acked.
    fn settle_jet(&mut self, id: u64, fresh: Owner, st: Msg, rec: &Rec) -> Option<(Owner, Msg)> {
        let later = self.backoff();
        let next = match st {
            Msg::Send => match std::mem::replace(&mut self.answer, Answer::Ok) {
                Answer::Ok => {
                    self.deliveries += 1;
                    Msg::Commit
                }
                Answer::Retry if self.now.saturating_sub(rec.accepted) < MAX_AGE => {
                    Msg::KeepRelease
                }
                Answer::Retry | Answer::Refuse => Msg::DeadLetter { owner: fresh },
            },
            Msg::Commit => match self.commit(fresh) {
                Ok(true) => Msg::Ack { window: false },
                Ok(false) => Msg::Insert,
                // The commit's repair may still land it.
                Err(_) => Msg::Ack { window: true },
            },
            Msg::Insert => Msg::Ack {
                window: self.insert_committed().is_err(),
            },
            // A lost ack: handed out again, and found delivered.
            Msg::Ack { .. } if !self.disk_ok() => Msg::Wait(later),
            Msg::Ack { .. } => {
                self.disk.events.remove(&id);
                return None;
            }
            Msg::KeepRelease => {
                let _ = self.release(fresh);
                Msg::KeepReserve
            }
            Msg::KeepReserve => {
                let _ = self.acquire(rec.owner, false, HORIZON);
                Msg::Wait(later)
            }
            // A failed publish to the dead-letter stream NAKs: tried again.
            Msg::DeadLetter { .. } if !self.disk_ok() => Msg::Wait(later),
            Msg::DeadLetter { owner } => {
                self.disk.dlq.insert(id, rec.clone());
                Msg::DeadRelease { owner }
            }
            Msg::DeadRelease { owner } => {
                let _ = self.release(owner);
                if owner == rec.owner {
                    Msg::Ack { window: false }
                } else {
                    Msg::DeadRelease { owner: rec.owner }
                }
            }
            other => other,
        };
        Some((fresh, next))
    }

    /// The consumer hands the message out (once more); `None` if it is no longer in the stream.
    fn hand_out(&mut self, id: u64) -> Option<Rec> {
        let rec = self.disk.events.get_mut(&id)?;
        rec.handed += 1;
        Some(rec.clone())
    }

    /// `handle` before the store: the grace (NAK to the not-before time), the age limit on a
    /// redelivery, then `own`'s release, with the fresh token it will reserve under.
    fn handle(&mut self, rec: &Rec) -> (Owner, Msg) {
        let fresh = self.owner();
        if rec.not_before > self.now {
            return (fresh, Msg::Wait(rec.not_before));
        }
        let prior = rec.handed - 1 - u32::from(rec.held && rec.handed > 1);
        if prior > 0 && self.now.saturating_sub(rec.accepted) >= MAX_AGE {
            return (fresh, Msg::DeadLetter { owner: rec.owner });
        }
        let first = rec.handed == 1;
        (fresh, Msg::Release { first })
    }

    /// `store_failed`: fail-open sends unchecked under the fresh token (when given); otherwise
    /// the delivery waits (NAK).
    fn store_failed(&mut self, fresh: Option<Owner>) -> Msg {
        if fresh.is_some() && self.mode.fail_open() {
            self.unchecked += 1;
            return Msg::Send;
        }
        Msg::Wait(self.backoff())
    }
}
