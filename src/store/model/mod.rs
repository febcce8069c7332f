//! A small-scope model of one identity's life in spool mode, run against the real [`MemoryStore`]
//! operations, checked against the invariant of contract §7: every acknowledged event is
//! delivered once (a repeat only inside the crash window), or is in the dead-letter queue.
//!
//! # Why a model, and what is real in it
//! The delivery code spreads one identity's state machine — free, reserved, held,
//! held-delivering, delivered, dead — over the pipeline (claim, spool write, answer), the spool
//! worker (claim after the grace, send, commit, record the outcome, dead-letter) and the restore
//! after a crash. Races between concurrent copies, crashes between any two steps, store errors,
//! lease expiry and eviction are too many to reach with timed integration tests, so here each of
//! those *protocols* is written down as a sequence of atomic steps, one store operation or one disk
//! write each, in the order the code performs them (`pipeline::Gateway::spool_write`,
//! `spool::worker`, `Spool::restore`, `Spool::replay_dlq`). The store operations are the real
//! ones (`MemoryStore::*_at` with the model's clock); the disk is a map that a crash keeps, and
//! the memory store is what a crash loses. A proptest draws sequences of actions: copies
//! arriving (clean or PENDING-marked), one step of any running actor, a crash, time passing,
//! a store error or disk error on the next operation, OSCAR's next answer, filler identities that
//! fill the store to its bound (eviction), and a DLQ replay. Each case ends by letting everything
//! run to completion with a healthy OSCAR, then checks the invariant.
//!
//! # Known departures
//! Checks made at the moment they apply name the issue-13 item they catch (see [`Finding`]):
//! a `duplicate` answered while no durable record carries the event (item 2), a held record
//! dropped for a copy that is not durable (item 1), a queued event whose reservation lapsed
//! (item 3), a delivered identity evicted inside its TTL (item 8). The property test excuses the
//! losses and repeats those findings explain (today's code has them) and fails on anything else;
//! each finding also has a named `#[ignore]`d test in `tests.rs` with the smallest sequence that
//! shows it. `MODEL_STRICT=1,8` (or `all`) stops excusing those items, so the property searches
//! for their failing sequences itself (it finds each of the four within a few hundred cases).
//! When an item is fixed, change its protocol here to the fixed order, remove it from [`KNOWN`]
//! and un-ignore its test.
//!
//! # How to extend
//! - A new step in the code: add a state to the actor's enum and its arm in `step_*`, in the
//!   order the code does it; every store call goes through [`World::store_op`] (so injected
//!   store errors reach it) and every disk write through [`World::disk_ok`].
//! - A new protocol (sync mode, the Redis write-first order, fail-open): a new [`Actor`] variant
//!   and `step_*` function; a crash drops every actor, so a protocol that must survive one keeps
//!   its state on [`Disk`].
//! - A new fault: a new [`Action`] and its weight in `tests::action`.

mod actors;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, time::Duration};

use super::{Owner, StoreError, memory::MemoryStore};
use crate::pipeline::key::DedupKey;

/// The identity under study; fillers use other digests.
pub(crate) const K: DedupKey = DedupKey([7; 16]);
/// `dedup.max_entries` (the smallest valid bound).
pub(crate) const BOUND: usize = 16;
pub(crate) const GRACE: u64 = 100;
/// `delivery.max_age`: a retryable failure past it dead-letters.
pub(crate) const MAX_AGE: u64 = 600;
/// The reservation lease of a spooled event (`SpoolSettings::horizon`: max age plus margins).
pub(crate) const HORIZON: u64 = 1_000;
/// The dedup TTL: longer than any case, so no repeat is legitimate by expiry.
pub(crate) const TTL: u64 = 10_000_000;

pub(crate) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// One step of the environment or of an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// A MinIO copy of the event arrives.
    Copy { held: bool },
    /// Actor `n` (modulo the running ones) takes one step.
    Step(u8),
    /// kill -9 and restart: actors and the memory store are gone, the disk stays.
    Crash,
    /// Time passes (grace, backoff, lease expiry).
    Advance(u16),
    /// The next store operation fails without effect.
    StoreFault,
    /// The next disk write fails.
    DiskFault,
    /// OSCAR's next answer.
    Oscar(Answer),
    /// Filler identities are delivered until the store is at its bound, and one more.
    Pressure,
    /// An operator replays the first dead-letter entry.
    Replay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Ok,
    Retry,
    Refuse,
}

/// A spooled event on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rec {
    pub owner: Owner,
    pub held: bool,
    pub not_before: u64,
    pub accepted: u64,
    /// The copy whose request wrote it (replays keep it).
    pub copy: usize,
}

/// What survives a crash.
#[derive(Debug, Default, Clone)]
pub(crate) struct Disk {
    pub events: BTreeMap<u64, Rec>,
    pub dlq: BTreeMap<u64, Rec>,
    /// The identity's entry in the `committed` table: until when.
    pub committed_until: Option<u64>,
    pub next_id: u64,
}

/// An issue-13 departure seen while it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Finding {
    /// Item 1: a held record removed as superseded while no other durable record carries it.
    HeldDroppedForNonDurable,
    /// Item 2: `duplicate` answered while no durable record carries the event.
    DuplicateBeforeDurable,
    /// Item 3: the reservation of a queued event lapsed.
    LeaseLapsed,
    /// Item 8: the delivered identity was evicted inside its TTL.
    EvictedLive,
    /// Not reported: the restore removed a record as a duplicate while nothing else durable
    /// carries the event.
    RestoreDroppedNonDurable,
}

/// The findings today's code has (issue 13 items 1, 2, 3, 8); see the module doc.
pub(crate) const KNOWN: [Finding; 4] = [
    Finding::HeldDroppedForNonDurable,
    Finding::DuplicateBeforeDurable,
    Finding::LeaseLapsed,
    Finding::EvictedLive,
];

/// The model's whole state.
pub(crate) struct World {
    pub now: u64,
    pub store: MemoryStore,
    pub disk: Disk,
    pub actors: Vec<actors::Actor>,
    pub copies: usize,
    /// Copies answered 2xx: (copy, verdict).
    pub acked: Vec<(usize, &'static str)>,
    /// 2xx deliveries of the identity at OSCAR.
    pub deliveries: usize,
    /// Crashes that came while a delivery was in the window (OSCAR took it, the disk not yet).
    pub windows: usize,
    pub findings: Vec<Finding>,
    /// How often a queued event's reservation lapsed (item 3) and the delivered identity was
    /// evicted inside its TTL (item 8).
    pub lapses: usize,
    pub evictions: usize,
    pub store_fault: bool,
    pub disk_fault: bool,
    pub answer: Answer,
    fillers: u8,
    next_owner: Owner,
}

impl World {
    pub fn new() -> Self {
        Self {
            now: 0,
            store: MemoryStore::new(BOUND),
            disk: Disk::default(),
            actors: Vec::new(),
            copies: 0,
            acked: Vec::new(),
            deliveries: 0,
            windows: 0,
            findings: Vec::new(),
            lapses: 0,
            evictions: 0,
            store_fault: false,
            disk_fault: false,
            answer: Answer::Ok,
            fillers: 0,
            next_owner: 1,
        }
    }

    /// A fresh owner token (deterministic, so a failing case replays exactly).
    pub fn owner(&mut self) -> Owner {
        self.next_owner += 2;
        self.next_owner
    }

    /// A store operation, unless an injected error takes its place (no effect, as a memory
    /// store's `Full` has none).
    pub fn store_op<T>(&mut self, f: impl FnOnce(&MemoryStore, u64) -> T) -> Result<T, StoreError> {
        if std::mem::take(&mut self.store_fault) {
            return Err(StoreError::Full);
        }
        Ok(f(&self.store, self.now))
    }

    /// Whether the next disk write succeeds (an injected error fails it).
    pub fn disk_ok(&mut self) -> bool {
        !std::mem::take(&mut self.disk_fault)
    }

    /// Whether a durable record other than event `except` carries the event: a spooled record,
    /// or the delivered identity in the `committed` table.
    pub fn durable_elsewhere(&self, except: Option<u64>) -> bool {
        self.disk.committed_until.is_some_and(|t| t > self.now)
            || self.disk.events.keys().any(|id| Some(*id) != except)
    }

    pub fn find(&mut self, f: Finding) {
        if !self.findings.contains(&f) {
            self.findings.push(f);
        }
    }

    pub fn apply(&mut self, a: Action) {
        match a {
            Action::Copy { held } => {
                let copy = self.copies;
                self.copies += 1;
                let owner = self.owner();
                self.actors.push(actors::Actor::request(copy, held, owner));
            }
            Action::Step(n) if !self.actors.is_empty() => {
                let i = usize::from(n) % self.actors.len();
                self.step(i);
            }
            Action::Step(_) => {}
            Action::Crash => self.crash(),
            Action::Advance(d) => self.advance(u64::from(d)),
            Action::StoreFault => self.store_fault = true,
            Action::DiskFault => self.disk_fault = true,
            Action::Oscar(answer) => self.answer = answer,
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
    fn advance(&mut self, d: u64) {
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
    fn pressure(&mut self) {
        let delivered = self.store.state_at(&K, self.now) == Some(super::Existing::Delivered);
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
    fn crash(&mut self) {
        self.windows += self.actors.iter().filter(|a| a.in_window()).count();
        self.actors.clear();
        self.store_fault = false;
        self.disk_fault = false;
        self.store = MemoryStore::new(BOUND);
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
                Ok(super::Claim::Duplicate(_)) => {
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
        self.store_fault = false;
        self.disk_fault = false;
        self.answer = Answer::Ok;
        for _ in 0..2_000 {
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
            || forgiven(Finding::DuplicateBeforeDurable);
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
        let mut allowance = self.windows;
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
}
