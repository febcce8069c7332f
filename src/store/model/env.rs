//! What happens around the actors: the actions (copies arriving, faults, OSCAR's answers), time,
//! eviction pressure, a crash and the restore (`Spool::restore`), the end of a case (everything
//! runs to completion), and the check of contract §7; and an operator's DLQ replay
//! (`Spool::replay_dlq`).

use super::{
    Action, Answer, BOUND, Finding, GRACE, HORIZON, K, Mode, Rec, TTL, World,
    actors::{self, Actor, Replay},
    ms, net, shared, sync,
};
use crate::{
    pipeline::key::DedupKey,
    store::{Claim, Existing, Owner, memory::MemoryStore},
};

impl World {
    /// A copy arrives (again, for a MinIO retry of `copy`).
    pub(super) fn resend(&mut self, copy: usize, held: bool) {
        let owner = self.owner();
        let actor = match self.mode {
            Mode::Spool => actors::Actor::request(copy, held, owner, self.now),
            Mode::Shared { .. } | Mode::Jet { .. } => actors::Actor::SharedRequest {
                copy,
                held,
                owner,
                st: shared::Req::Peek,
            },
            Mode::Sync => actors::Actor::SyncRequest {
                copy,
                held,
                owner,
                st: sync::Req::Claim { polls: 0 },
                since: self.now,
            },
        };
        self.actors.push(actor);
    }

    pub fn apply(&mut self, a: Action) {
        match a {
            Action::Copy { held } => {
                let copy = self.copies;
                self.copies += 1;
                self.resend(copy, held);
            }
            Action::Step(n) if !self.actors.is_empty() => {
                let i = usize::from(n) % self.actors.len();
                self.step(i);
            }
            Action::Step(_) => {}
            Action::Crash => self.crash(),
            Action::Advance(d) => self.advance(u64::from(d)),
            Action::StoreFault => self.store_fault = Some(net::Fault::NoEffect),
            // A memory store's error has no effect (it cannot time out).
            Action::StoreFaultAfterEffect if self.mode.shared() => {
                self.store_fault = Some(net::Fault::AfterEffect);
            }
            Action::StoreFaultAfterEffect => self.store_fault = Some(net::Fault::NoEffect),
            Action::DiskFault => self.disk_fault = true,
            Action::PubAckLost if matches!(self.mode, Mode::Jet { .. }) => self.pub_ack_lost = true,
            Action::PubAckLost => self.disk_fault = true,
            Action::Oscar(answer) => self.answer = answer,
            // Not drawn against Redis (no bound of entries in flight), nor JetStream's DLQ replay.
            Action::Pressure if self.mode.shared() => {}
            Action::Replay if matches!(self.mode, Mode::Jet { .. }) => {}
            Action::Pressure => self.pressure(),
            Action::Replay => {
                if let Some(id) = self.disk.dlq.keys().next().copied() {
                    let owner = self.owner();
                    self.actors.push(actors::Actor::replay(id, owner));
                }
            }
        }
    }

    /// Lets time pass; a queued event whose reservation lapses meanwhile is item 3.
    pub(super) fn advance(&mut self, d: u64) {
        // Sync mode: a delivery in flight ends within its lease (see `Actor::deadline`).
        let cap = self.actors.iter().filter_map(actors::Actor::deadline).min();
        let d = cap.map_or(d, |c| d.min(c.saturating_sub(self.now)));
        let before = self.store.state_at(&K, self.now);
        self.now += d;
        if before.is_some()
            && self.store.state_at(&K, self.now).is_none()
            && !self.disk.events.is_empty()
        {
            self.find(Finding::LeaseLapsed);
            self.lapses += 1;
        }
    }

    /// Fills the store with delivered filler identities to its bound, and one more.
    pub(super) fn pressure(&mut self) {
        let delivered = self.store.state_at(&K, self.now) == Some(Existing::Delivered);
        for _ in 0..=BOUND {
            if self.store.len() > BOUND {
                break;
            }
            self.fillers = self.fillers.wrapping_add(1).max(100);
            let key = DedupKey([self.fillers; 16]);
            let owner = self.owner();
            if self
                .store
                .reserve_at(&key, owner, ms(HORIZON), self.now)
                .is_ok()
            {
                self.store.commit_at(&key, owner, ms(TTL), self.now);
            }
        }
        if delivered && self.store.state_at(&K, self.now).is_none() {
            self.find(Finding::EvictedLive);
            self.evictions += 1;
        }
    }

    /// kill -9, then `Spool::restore` on a fresh memory store.
    pub(super) fn crash(&mut self) {
        self.windows += self.actors.iter().filter(|a| a.in_window()).count();
        // Requests cut off get no answer: MinIO sends them again.
        let cut: Vec<_> = self
            .actors
            .iter()
            .filter_map(actors::Actor::carried)
            .collect();
        self.unanswered.extend(cut);
        self.actors.clear();
        self.disk_fault = false;
        self.pub_ack_lost = false;
        // A shared store and a JetStream stream outlive the gateway (and see a pending fault).
        match self.mode {
            Mode::Shared { .. } => return self.restore_shared(),
            Mode::Jet { .. } => return self.redeliver_all(),
            Mode::Spool | Mode::Sync => {}
        }
        self.store_fault = None;
        self.store = MemoryStore::new(BOUND);
        if self.mode == Mode::Sync {
            self.forgotten += usize::from(self.deliveries > 0);
            self.documented_lost.append(&mut self.sync_held_acked);
            // Sync mode's disk holds only its DLQ and the replays taken from it (the DLQ-only
            // spool): restored like spool mode's.
        }
        if let Some(until) = self.disk.committed_until.filter(|t| *t > self.now) {
            let _ = self
                .store
                .insert_committed_at(&K, ms(until - self.now), self.now);
        }
        let records: Vec<(u64, Rec)> = self.disk.events.clone().into_iter().collect();
        for (id, rec) in records {
            let wait = rec.not_before.saturating_sub(self.now);
            let claim = if rec.held {
                self.store
                    .hold_at(&K, rec.owner, ms(wait + HORIZON), self.now)
            } else {
                self.store.reserve_at(&K, rec.owner, ms(HORIZON), self.now)
            };
            match claim {
                Ok(Claim::Duplicate(_)) => {
                    if !self.durable_elsewhere(Some(id)) {
                        self.find(Finding::RestoreDroppedNonDurable);
                    }
                    self.disk.events.remove(&id);
                }
                // A full store at restore: the worker claims later (fail-closed).
                Err(_) => self
                    .actors
                    .push(actors::Actor::item(id, rec.owner, true, true)),
                Ok(_) => self
                    .actors
                    .push(actors::Actor::item(id, rec.owner, rec.held, false)),
            }
        }
    }

    /// Runs every actor to its end with a healthy OSCAR, store and disk (bounded).
    pub fn quiesce(&mut self) {
        self.store_fault = None;
        self.disk_fault = false;
        self.pub_ack_lost = false;
        self.answer = Answer::Ok;
        for _ in 0..2_000 {
            if self.actors.is_empty() && self.minio_retries && !self.unanswered.is_empty() {
                for (copy, held) in std::mem::take(&mut self.unanswered) {
                    self.resend(copy, held);
                }
            }
            if self.actors.is_empty() {
                return;
            }
            let before = self.actors.len();
            let progressed = (0..self.actors.len()).rev().any(|i| self.step(i));
            if !progressed && self.actors.len() == before {
                self.advance(GRACE);
            }
        }
        panic!("the model did not settle: {:?}", self.actors);
    }

    /// Contract §7 at the end of a case, with the findings in `excused` forgiven.
    pub fn check(&self, excused: &[Finding]) -> Result<(), String> {
        let forgiven = |f: Finding| excused.contains(&f) && self.findings.contains(&f);
        let loss_explained = forgiven(Finding::HeldDroppedForNonDurable)
            || forgiven(Finding::DuplicateBeforeDurable)
            || forgiven(Finding::SyncHeldDroppedForInFlight)
            || forgiven(Finding::RestoreOrphanedOwnClaim)
            || !self.documented_lost.is_empty();
        if !self.acked.is_empty()
            && self.deliveries == 0
            && self.disk.dlq.is_empty()
            && !loss_explained
        {
            return Err(format!(
                "acknowledged {:?}, never delivered, not in the DLQ (findings {:?})",
                self.acked, self.findings
            ));
        }
        // Each lapse or eviction (when forgiven) explains one repeat, as each crash window does.
        let mut allowance = self.windows + self.forgotten + self.unchecked + self.uncommitted;
        if forgiven(Finding::LeaseLapsed) {
            allowance += self.lapses;
        }
        if forgiven(Finding::EvictedLive) {
            allowance += self.evictions;
        }
        if self.deliveries.saturating_sub(1) > allowance {
            return Err(format!(
                "delivered {} times with {} crash windows (findings {:?})",
                self.deliveries, self.windows, self.findings
            ));
        }
        Ok(())
    }

    /// `replay_dlq`: reserve, then write the revived record.
    pub(super) fn step_replay(&mut self, id: u64, owner: Owner, st: Replay) -> Option<Actor> {
        match st {
            Replay::Reserve => match self.acquire(owner, false, HORIZON) {
                Ok(Claim::Acquired | Claim::Preempted) => Some(Actor::Replay {
                    id,
                    owner,
                    st: Replay::Write,
                }),
                _ => None,
            },
            Replay::Write if self.disk_ok() => {
                let Some(mut rec) = self.disk.dlq.remove(&id) else {
                    return Some(Actor::Replay {
                        id,
                        owner,
                        st: Replay::Release,
                    });
                };
                rec.owner = owner;
                rec.held = false;
                rec.not_before = 0;
                rec.accepted = self.now;
                self.disk.events.insert(id, rec);
                self.actors.push(Actor::item(id, owner, false, false));
                None
            }
            Replay::Write => Some(Actor::Replay {
                id,
                owner,
                st: Replay::Release,
            }),
            Replay::Release => {
                let _ = self.release(owner);
                None
            }
        }
    }
}
