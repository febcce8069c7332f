//! The shared store (Redis) as the protocols see it: every operation may fail, and a failed one
//! may have run on the server all the same (a command timeout after it executed), so the real
//! `RedisStore` schedules a background repair after a failed `reserve`, `hold`, `release` or
//! `commit` (`store::redis::repair`); and the store outlives a gateway's crash, so the restore
//! (`Spool::restore` on a shared store) finds the entries of the records it reads back.
//!
//! The store is still the real [`MemoryStore`] (same semantics, the model's clock): a fault
//! "after effect" runs the real operation, then hands the caller an error.

use super::{
    Finding, GRACE, HORIZON, K, Mode, Rec, TTL, World,
    actors::{self, Actor},
    ms,
};
use crate::store::{Claim, Existing, Owner, StoreError, memory::MemoryStore};

/// An injected store error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The operation did not run.
    NoEffect,
    /// The operation ran; its answer was lost.
    AfterEffect,
}

/// What a failed Redis operation leaves for a background repair (`Repair` in `redis/repair.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repair {
    None,
    /// After a failed `reserve`, `hold` or `release`: the owner-checked release.
    Release(Owner),
    /// After a failed `commit`: the owner-checked commit.
    Commit(Owner),
}

/// `REPAIR_WINDOW` (180 s, past sync mode's 120 s lease) in the model's time.
pub(crate) const REPAIR_WINDOW: u64 = super::sync::LEASE * 3 / 2;

impl World {
    /// One operation on the shared store: an injected fault fails it (having run it first when
    /// [`Fault::AfterEffect`]) and schedules its repair, as `RedisStore::acquire` and `owned` do.
    pub fn net<T>(
        &mut self,
        repair: Repair,
        f: impl FnOnce(&MemoryStore, u64) -> T,
    ) -> Result<T, StoreError> {
        let Some(fault) = self.store_fault.take() else {
            return Ok(f(&self.store, self.now));
        };
        if fault == Fault::AfterEffect {
            let _ = f(&self.store, self.now);
        } else if matches!(repair, Repair::Commit(_)) {
            self.uncommitted += 1;
        }
        if repair != Repair::None {
            self.actors.push(Actor::Repair {
                repair,
                until: self.now + REPAIR_WINDOW,
            });
        }
        Err(StoreError::Unavailable("model: command timeout".into()))
    }

    /// `release` on either store (the memory store's cannot fail).
    pub fn release(&mut self, owner: Owner) -> Result<bool, StoreError> {
        if self.mode.shared() {
            return self.net(Repair::Release(owner), |s, now| {
                s.release_at(&K, owner, now)
            });
        }
        Ok(self.store.release_at(&K, owner, self.now))
    }

    /// `commit` for the dedup TTL on either store.
    pub fn commit(&mut self, owner: Owner) -> Result<bool, StoreError> {
        let commit = |s: &MemoryStore, now| s.commit_at(&K, owner, ms(TTL), now);
        if self.mode.shared() {
            return self.net(Repair::Commit(owner), commit);
        }
        Ok(commit(&self.store, self.now))
    }

    /// `hold` (when `held`) or `reserve` for `lease` on either store.
    pub fn acquire(&mut self, owner: Owner, held: bool, lease: u64) -> Result<Claim, StoreError> {
        let claim = |s: &MemoryStore, now| {
            if held {
                s.hold_at(&K, owner, ms(lease), now)
            } else {
                s.reserve_at(&K, owner, ms(lease), now)
            }
        };
        if self.mode.shared() {
            return self.net(Repair::Release(owner), claim).and_then(|c| c);
        }
        self.store_op(claim).and_then(|c| c)
    }

    /// The shared store's read-only `peek` (a `GET`).
    pub fn peek(&mut self) -> Result<Option<Existing>, StoreError> {
        self.net(Repair::None, |s, now| s.state_at(&K, now))
    }

    /// `insert_committed` for the dedup TTL (no repair).
    pub fn insert_committed(&mut self) -> Result<(), StoreError> {
        self.store_op(|s, now| s.insert_committed_at(&K, ms(TTL), now))
            .and_then(|r| r)
    }

    /// One try of a background repair; `None` when it is done (or gave up at its window's end,
    /// leaving the entry to its lease). A crash ends it with the process.
    pub(super) fn step_repair(&mut self, repair: Repair, until: u64) -> Option<Actor> {
        if self.now > until {
            return None;
        }
        let done = match repair {
            Repair::Release(owner) => self.net(Repair::None, |s, now| s.release_at(&K, owner, now)),
            Repair::Commit(owner) => {
                self.net(Repair::None, |s, now| s.commit_at(&K, owner, ms(TTL), now))
            }
            Repair::None => Ok(true),
        };
        match done {
            Ok(_) => None,
            Err(_) => Some(Actor::Repair { repair, until }),
        }
    }

    /// `Spool::restore` on a shared store, which kept its entries through the crash: committed
    /// identities back in, then each record releases its own entry and claims again under the
    /// same token; after the first store error the store is not asked again (`defer_claim`).
    pub(super) fn restore_shared(&mut self) {
        let mut down = false;
        if let Some(until) = self.disk.committed_until.filter(|t| *t > self.now) {
            let ttl = ms(until - self.now);
            down = self
                .store_op(|s, now| s.insert_committed_at(&K, ttl, now))
                .is_err();
        }
        let records: Vec<(u64, Rec)> = self.disk.events.clone().into_iter().collect();
        for (id, rec) in records {
            if down {
                self.defer_claim(id, &rec);
                continue;
            }
            let wait = rec.not_before.saturating_sub(self.now);
            let lease = if rec.held { wait + HORIZON } else { HORIZON };
            let claim = self
                .release(rec.owner)
                .and_then(|_| self.acquire(rec.owner, rec.held, lease));
            match claim {
                Ok(Claim::Duplicate(_)) => {
                    // The entry met may stand for a dead-letter entry (a replay cut off).
                    if !self.durable_elsewhere(Some(id)) && self.disk.dlq.is_empty() {
                        self.find(if self.mode.fail_open() {
                            Finding::RestoreOrphanedOwnClaim
                        } else {
                            Finding::RestoreDroppedNonDurable
                        });
                    }
                    self.disk.events.remove(&id);
                }
                Ok(_) => self
                    .actors
                    .push(actors::Actor::item(id, rec.owner, rec.held, false)),
                Err(_) => {
                    down = true;
                    self.defer_claim(id, &rec);
                }
            }
        }
    }

    /// `defer_claim`: the worker releases the record's own entry and claims afresh, fail-open
    /// or not (a store still down then fails the release, and fail-open delivers unchecked
    /// under the record's token). `Old::fresh_defer`, the protocol before session 11: fail-open
    /// went on under a fresh token: a held record claims, a clean one goes through
    /// `record_owner` and `keep_reserved` (which the model has on this path only; see item 3).
    fn defer_claim(&mut self, id: u64, rec: &Rec) {
        let item = if self.mode.fail_open() && self.old.fresh_defer {
            actors::Actor::item(id, self.owner(), rec.held, false)
        } else {
            actors::Actor::item(id, rec.owner, true, true)
        };
        self.actors.push(item);
    }

    /// After a crash with the JetStream spool: the stream and the store are intact; every
    /// message not acked is handed out again (after `AckWait`, which the model lets pass at once).
    pub(super) fn redeliver_all(&mut self) {
        debug_assert!(matches!(self.mode, Mode::Jet { .. }));
        let ids: Vec<u64> = self.disk.events.keys().copied().collect();
        for id in ids {
            self.actors.push(Actor::jet(id, self.now));
        }
    }

    /// How long a NAK'd message waits before it is handed out again (the first backoff delay).
    pub(super) fn backoff(&self) -> u64 {
        self.now + GRACE
    }
}
