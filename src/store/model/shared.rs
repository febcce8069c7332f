//! A request in spool mode on a shared store (Redis), one step at a time: peek, write, claim
//! (`Spool::write_then_claim` in `spool/admit.rs`, `JetSpool::publish_then_claim` in
//! `spool/jetstream/admit.rs`), then the answer (`Gateway::admitted`, `on_store_error`).
//!
//! Why write first: a claim that outlived a crash, with no record behind it, would make MinIO's
//! retry a `duplicate` of nothing; written first, every live entry stands for a record somewhere.
//! The price is a record whose claim fails: it is kept (the claim may have run unseen) and the
//! worker owns it later. With JetStream the consumer may even hand the message to a worker before
//! the claim: the worker's reservation is then what the claim meets, so a claim that finds a
//! reservation in flight keeps the message. The model checks both at the moment they answer
//! (a `duplicate` needs a durable original: [`Finding::DuplicateBeforeDurable`]).

use super::{Answer, Finding, GRACE, HORIZON, Mode, Rec, World, actors::Actor};
use crate::store::{Claim, Existing, Owner};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Req {
    /// The read-only peek: a live identity is a `duplicate` before anything is stored.
    Peek,
    /// The spool write (local spool), or the publish with its PubAck (JetStream).
    Write,
    Claim {
        id: u64,
    },
    /// The claim met another copy: remove the record just stored (best effort).
    Discard {
        id: u64,
    },
    /// Fail-open after a failed peek: forwarded from the request, unchecked.
    Unchecked,
    UncheckedCommit,
    UncheckedInsert,
}

/// Test switches that put back a protocol the session-10 fixes replaced, to show the model
/// finds what they lost (see `tests_shared.rs`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Old {
    /// JetStream: a claim that meets a reservation in flight deletes the message just stored.
    pub delete_on_in_flight: bool,
    /// Fail-open: a claim that fails after the write removes the record and forwards from the
    /// request instead of keeping it.
    pub forward_on_claim_error: bool,
    /// Fail-open: a restore that could not claim queues the record under a fresh token.
    pub fresh_defer: bool,
}

impl World {
    /// One step of a shared-store request; `None` when it is answered (or cut off with a 503).
    pub(super) fn step_shared_request(
        &mut self,
        copy: usize,
        held: bool,
        owner: Owner,
        st: Req,
    ) -> Option<Actor> {
        let again = |st| {
            Some(Actor::SharedRequest {
                copy,
                held,
                owner,
                st,
            })
        };
        match st {
            Req::Peek => match self.peek() {
                Ok(Some(e)) if held || e != Existing::Held => {
                    self.duplicate(copy);
                    None
                }
                Ok(_) => again(Req::Write),
                Err(_) if self.mode.fail_open() => {
                    self.unchecked += 1;
                    again(Req::Unchecked)
                }
                // Fail-closed: 503.
                Err(_) => None,
            },
            // Stored all the same: the consumer has it, and MinIO sends the copy again.
            Req::Write if std::mem::take(&mut self.pub_ack_lost) => {
                self.write_shared(copy, held, owner);
                None
            }
            Req::Write if self.disk_ok() => again(Req::Claim {
                id: self.write_shared(copy, held, owner),
            }),
            // Refused (disk error, or no PubAck): 503, nothing claimed.
            Req::Write => None,
            Req::Claim { id } => self.claim_after_write(copy, held, owner, id),
            Req::Discard { id } => {
                if self.disk_ok() {
                    self.disk.events.remove(&id);
                }
                self.duplicate(copy);
                None
            }
            Req::Unchecked | Req::UncheckedCommit | Req::UncheckedInsert => {
                self.forward_unchecked(copy, held, owner, st)
            }
        }
    }

    /// Fail-open after a failed peek: `on_store_error` forwards from the request, and a 2xx
    /// marks the identity delivered (`Lost::MarkDelivered`: the token owns nothing).
    fn forward_unchecked(
        &mut self,
        copy: usize,
        held: bool,
        owner: Owner,
        st: Req,
    ) -> Option<Actor> {
        let again = |st| {
            Some(Actor::SharedRequest {
                copy,
                held,
                owner,
                st,
            })
        };
        match st {
            Req::Unchecked => match std::mem::replace(&mut self.answer, Answer::Ok) {
                Answer::Ok => {
                    self.deliveries += 1;
                    again(Req::UncheckedCommit)
                }
                // Not delivered: a non-2xx answer, MinIO sends it again.
                Answer::Retry | Answer::Refuse => None,
            },
            Req::UncheckedCommit => match self.commit(owner) {
                Ok(false) => again(Req::UncheckedInsert),
                _ => {
                    self.acked.push((copy, "forwarded"));
                    None
                }
            },
            Req::UncheckedInsert => {
                let _ = self.insert_committed();
                self.acked.push((copy, "forwarded"));
                None
            }
            _ => None,
        }
    }

    /// The record (message) as written; with JetStream the consumer may hand it out at once.
    fn write_shared(&mut self, copy: usize, held: bool, owner: Owner) -> u64 {
        let id = self.disk.next_id;
        self.disk.next_id += 1;
        let rec = Rec {
            owner,
            held,
            not_before: if held { self.now + GRACE } else { 0 },
            accepted: self.now,
            copy,
            handed: 0,
        };
        self.disk.events.insert(id, rec);
        if matches!(self.mode, Mode::Jet { .. }) {
            self.actors.push(Actor::jet(id, self.now));
        }
        id
    }

    /// The claim after the write, and what it makes of the record and the answer.
    fn claim_after_write(
        &mut self,
        copy: usize,
        held: bool,
        owner: Owner,
        id: u64,
    ) -> Option<Actor> {
        let jet = matches!(self.mode, Mode::Jet { .. });
        let lease = if held { GRACE + HORIZON } else { HORIZON };
        let again = |st| {
            Some(Actor::SharedRequest {
                copy,
                held,
                owner,
                st,
            })
        };
        match self.acquire(owner, held, lease) {
            Ok(Claim::Acquired | Claim::Preempted) => {
                if !jet {
                    self.actors.push(Actor::item(id, owner, held, false));
                }
                self.acked
                    .push((copy, if held { "held" } else { "accepted" }));
                None
            }
            // Perhaps this message's own delivery (JetStream): kept.
            Ok(Claim::Duplicate(Existing::InFlight)) if jet && !self.old.delete_on_in_flight => {
                self.duplicate(copy);
                None
            }
            Ok(Claim::Duplicate(_)) => again(Req::Discard { id }),
            Err(_) if self.old.forward_on_claim_error && self.mode.fail_open() => {
                self.disk.events.remove(&id);
                self.unchecked += 1;
                again(Req::Unchecked)
            }
            Err(_) => {
                // Kept, whatever `on_store_error` says: the workers claim it (`enqueue_unclaimed`;
                // JetStream's message is already with the consumer).
                if !jet {
                    self.actors.push(Actor::item(id, owner, true, true));
                }
                if self.mode.fail_open() {
                    self.acked.push((copy, "accepted"));
                }
                None
            }
        }
    }

    /// Answers `duplicate`, which needs a durable original (§7), or a dead-letter entry.
    /// (The orphan [`Finding::RestoreOrphanedOwnClaim`] leaves explains every later one.)
    fn duplicate(&mut self, copy: usize) {
        let explained = self.findings.contains(&Finding::RestoreOrphanedOwnClaim);
        if !self.durable_elsewhere(None) && self.disk.dlq.is_empty() && !explained {
            self.find(Finding::DuplicateBeforeDurable);
        }
        self.acked.push((copy, "duplicate"));
    }
}
