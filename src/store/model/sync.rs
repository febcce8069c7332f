//! Sync mode on the memory store, one atomic step at a time: a request (`Gateway::judge` →
//! `settle_claim` → `send`, with `await_original` for a held copy's delivery) and a held copy's
//! task (`deliver::held`: grace, claim, re-hold after a takeover, send, re-hold after a failure).
//!
//! Sync mode keeps nothing on disk: a crash forgets every delivered identity and every waiting
//! held copy (contract §6a, documented), so [`super::World`] counts what a crash forgets instead
//! of restoring it.

use super::{Answer, Finding, GRACE, HORIZON, K, TTL, World, ms};
use crate::store::{Claim, Existing, Owner};

/// `dedup.lease` in sync mode (one delivery).
pub(crate) const LEASE: u64 = HORIZON / 4;
/// `delivery.max_attempts` for a held copy.
pub(crate) const MAX_ATTEMPTS: u32 = 3;
/// `await_original`: how often a copy polls a held copy's delivery before answering 503.
const POLLS: u8 = 3;
/// `held::MAX_TAKEOVERS`.
const MAX_TAKEOVERS: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Req {
    Claim {
        polls: u8,
    },
    Send {
        preempted: bool,
    },
    Commit,
    Release,
    /// A permanent answer: write the event to the DLQ (sync mode's DLQ-only spool), then
    /// release and answer 2xx `dead-lettered`; a failed write releases and answers 503.
    DeadLetter,
    ReleaseDead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// Waiting out the grace (or a backoff) until `due`, then claiming.
    Wait {
        due: u64,
    },
    /// Lost the claim: hold afresh under `next`.
    Rehold {
        next: Owner,
    },
    Send,
    Commit,
    /// After a failed delivery: release, then hold under a fresh token for the backoff.
    Release,
    Backoff {
        next: Owner,
    },
    /// Refused or out of retries: to the DLQ (`write_until_ok`), then release (item 7).
    DeadLetter,
    ReleaseDead,
}

impl World {
    /// A sync-mode request; `None` when answered.
    pub(super) fn step_sync_request(
        &mut self,
        copy: usize,
        held: bool,
        owner: Owner,
        st: Req,
        since: u64,
    ) -> Option<super::actors::Actor> {
        let now = self.now;
        let again = |st, since| {
            Some(super::actors::Actor::SyncRequest {
                copy,
                held,
                owner,
                st,
                since,
            })
        };
        match st {
            Req::Claim { polls } => {
                let claim = self.store_op(|s, now| {
                    if held {
                        s.hold_at(&K, owner, ms(GRACE + LEASE), now)
                    } else {
                        s.reserve_at(&K, owner, ms(LEASE), now)
                    }
                });
                match claim {
                    Ok(Ok(Claim::Acquired | Claim::Preempted)) if held => {
                        self.acked.push((copy, "held"));
                        self.sync_held_acked.push(copy);
                        let due = self.now + GRACE;
                        self.actors.push(super::actors::Actor::SyncHeld {
                            copy,
                            owner,
                            st: Held::Wait { due },
                            attempts: 0,
                            takeovers: 0,
                            since: now,
                        });
                        None
                    }
                    Ok(Ok(c @ (Claim::Acquired | Claim::Preempted))) => again(
                        Req::Send {
                            preempted: c == Claim::Preempted,
                        },
                        now,
                    ),
                    // A held copy's delivery has no request behind it: wait for its outcome.
                    Ok(Ok(Claim::Duplicate(Existing::HeldInFlight))) if polls < POLLS => {
                        again(Req::Claim { polls: polls + 1 }, since)
                    }
                    Ok(Ok(Claim::Duplicate(Existing::HeldInFlight))) => None,
                    Ok(Ok(Claim::Duplicate(_))) => {
                        self.acked.push((copy, "duplicate"));
                        None
                    }
                    _ => None,
                }
            }
            Req::Send { .. } => match std::mem::replace(&mut self.answer, Answer::Ok) {
                Answer::Ok => {
                    self.deliveries += 1;
                    again(Req::Commit, since)
                }
                Answer::Refuse => again(Req::DeadLetter, since),
                Answer::Retry => again(Req::Release, since),
            },
            Req::DeadLetter if self.disk_ok() => {
                self.write_dead(copy, owner, held);
                again(Req::ReleaseDead, since)
            }
            Req::DeadLetter => again(Req::Release, since),
            Req::ReleaseDead => {
                let _ = self.store_infallible(|s, now| s.release_at(&K, owner, now));
                self.acked.push((copy, "dead-lettered"));
                None
            }
            Req::Commit => {
                let _ = self.store_infallible(|s, now| s.commit_at(&K, owner, ms(TTL), now));
                self.acked.push((copy, "forwarded"));
                None
            }
            Req::Release => {
                let _ = self.store_infallible(|s, now| s.release_at(&K, owner, now));
                None
            }
        }
    }

    /// A held copy's task; `None` while waiting for time, `Some(None)` when it ends.
    pub(super) fn step_sync_held(
        &mut self,
        copy: usize,
        owner: Owner,
        st: Held,
        (attempts, takeovers): (u32, u32),
        since: u64,
    ) -> Option<Option<super::actors::Actor>> {
        let now = self.now;
        let at = |owner, st, attempts, takeovers| {
            // The lease of a delivery counts from the claim that started it.
            let since = if st == Held::Send { now } else { since };
            Some(Some(super::actors::Actor::SyncHeld {
                copy,
                owner,
                st,
                attempts,
                takeovers,
                since,
            }))
        };
        match st {
            Held::Wait { due } if self.now < due => None,
            Held::Wait { .. } => {
                match self.store_infallible(|s, now| s.claim_held_at(&K, owner, ms(LEASE), now)) {
                    Ok(true) => at(owner, Held::Send, attempts, 0),
                    Ok(false) => {
                        let next = self.owner();
                        at(owner, Held::Rehold { next }, attempts, takeovers + 1)
                    }
                    Err(_) => at(owner, Held::Release, attempts + 1, takeovers),
                }
            }
            Held::Rehold { next } => {
                match self.store_op(|s, now| s.hold_at(&K, next, ms(LEASE), now)) {
                    Ok(Ok(Claim::Acquired)) if takeovers <= MAX_TAKEOVERS => {
                        at(next, Held::Wait { due: self.now }, attempts, takeovers)
                    }
                    // Too many takeovers in a row: a failed attempt (`held::take_back`).
                    Ok(Ok(Claim::Acquired)) => at(next, Held::Release, attempts + 1, takeovers),
                    Ok(Ok(Claim::Duplicate(Existing::Delivered))) => self.superseded(copy),
                    // Owned by a copy not delivered (yet): look again later (`held::watch`).
                    Ok(Ok(_)) => at(
                        owner,
                        Held::Wait {
                            due: self.now + GRACE,
                        },
                        attempts,
                        takeovers,
                    ),
                    Ok(Err(_)) | Err(_) => at(next, Held::Release, attempts + 1, takeovers),
                }
            }
            Held::Send => match std::mem::replace(&mut self.answer, Answer::Ok) {
                Answer::Ok => {
                    self.deliveries += 1;
                    at(owner, Held::Commit, attempts + 1, takeovers)
                }
                Answer::Retry => at(owner, Held::Release, attempts + 1, takeovers),
                Answer::Refuse => at(owner, Held::DeadLetter, attempts + 1, takeovers),
            },
            // `write_until_ok`: retried until it succeeds.
            Held::DeadLetter if self.disk_ok() => {
                self.write_dead(copy, owner, true);
                self.sync_held_done(copy);
                at(owner, Held::ReleaseDead, attempts, takeovers)
            }
            Held::DeadLetter => at(owner, Held::DeadLetter, attempts, takeovers),
            Held::ReleaseDead => {
                let _ = self.store_infallible(|s, now| s.release_at(&K, owner, now));
                Some(None)
            }
            Held::Commit => {
                let _ = self.store_infallible(|s, now| s.commit_at(&K, owner, ms(TTL), now));
                self.sync_held_done(copy);
                Some(None)
            }
            Held::Release if attempts >= MAX_ATTEMPTS => {
                at(owner, Held::DeadLetter, attempts, takeovers)
            }
            Held::Release => match self.store_infallible(|s, now| s.release_at(&K, owner, now)) {
                Ok(_) => {
                    let next = self.owner();
                    at(owner, Held::Backoff { next }, attempts, takeovers)
                }
                Err(_) => at(owner, Held::Release, attempts + 1, takeovers),
            },
            Held::Backoff { next } => {
                match self.store_op(|s, now| s.hold_at(&K, next, ms(GRACE + LEASE), now)) {
                    Ok(Ok(Claim::Acquired)) => at(
                        next,
                        Held::Wait {
                            due: self.now + GRACE,
                        },
                        attempts,
                        takeovers,
                    ),
                    Ok(Ok(Claim::Duplicate(Existing::Delivered))) => self.superseded(copy),
                    // Owned by a copy not delivered (yet): look again after the backoff.
                    Ok(Ok(_)) => at(
                        owner,
                        Held::Wait {
                            due: self.now + GRACE,
                        },
                        attempts,
                        takeovers,
                    ),
                    Ok(Err(_)) | Err(_) => at(owner, Held::Release, attempts + 1, takeovers),
                }
            }
        }
    }

    /// Superseded by a delivered copy (the only one a held copy gives way to); checked, so a
    /// regression shows as item 1's finding.
    fn superseded(&mut self, copy: usize) -> Option<Option<super::actors::Actor>> {
        if self.store.state_at(&K, self.now) != Some(Existing::Delivered) {
            self.find(Finding::SyncHeldDroppedForInFlight);
        }
        self.sync_held_done(copy);
        Some(None)
    }

    /// `Spool::dead_letter_new`: the event straight into the DLQ under a fresh id.
    fn write_dead(&mut self, copy: usize, owner: Owner, held: bool) {
        let id = self.disk.next_id;
        self.disk.next_id += 1;
        let rec = super::Rec {
            owner,
            held,
            not_before: 0,
            accepted: self.now,
            copy,
            ..super::Rec::default()
        };
        self.disk.dlq.insert(id, rec);
    }

    /// A held copy's task ended (delivered, superseded or given up).
    fn sync_held_done(&mut self, copy: usize) {
        self.sync_held_acked.retain(|c| *c != copy);
    }
}
