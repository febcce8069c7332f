//! Dedup: the store of identities, with the two-phase marking of contract §7.
//!
//! # Semantics (what the property test in `memory/model_tests.rs` and the conformance suite check)
//! An identity is in one of five states: *absent*, *held* (a PENDING-marked copy waits out its
//! grace), *reserved* (a copy is being delivered by its owner), *held-delivering* (a held copy whose
//! grace is over is being delivered) or *committed* (delivered; remembered until the TTL). Every
//! entry carries an owner token and an expiry; an expired entry counts as absent.
//!
//! | operation | absent | held by other | reserved / held-delivering / committed |
//! |---|---|---|---|
//! | `reserve` (clean copy) | → reserved, `Acquired` | → reserved by caller, `Preempted` | `Duplicate` |
//! | `hold` (marked copy) | → held, `Acquired` | `Duplicate` | `Duplicate` |
//! | `claim_held` (grace over) | false | true only if the caller still holds it (→ held-delivering) | false |
//! | `renew` (queued event due) | false | false | reserved / held-delivering by the caller: fresh lease, true |
//! | `commit` (OSCAR said 2xx) | | → committed for the TTL, only if the caller owns it | |
//! | `release` (delivery failed) | | → absent, only if the caller owns it | |
//!
//! Why *held-delivering* is not simply *reserved*: a copy that meets a reservation is told
//! `duplicate` because somebody still answers for the original — in sync mode the MinIO request
//! that made the reservation, which gets 503 and is retried if the delivery fails. A held copy's
//! delivery after its grace has no such request (the held copy was answered long ago), so in sync
//! mode a copy that meets it must not be acknowledged as a duplicate: the pipeline waits for the
//! outcome instead (see [`crate::pipeline`]). In spool mode both are durable and both are duplicates.
//!
//! Invariants: at most one owner per identity at any time; a committed identity is never handed out
//! again before its TTL ends; a held copy never blocks a clean copy (the clean one preempts it, so
//! the trigger is never delayed by a stale PENDING mark); only the owner can commit or release, so a
//! late answer for a preempted or expired reservation never undoes somebody else's delivery.
//! A reservation's lease bounds how long a crashed or stuck owner can block the identity.

pub mod memory;
#[cfg(test)]
mod model;
pub mod redis;

use std::{future::Future, time::Duration};

use crate::identity::{DedupKey, Owner};

pub use self::redis::RedisStore;
pub use memory::MemoryStore;

/// What the store found for a reserve or hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the identity now.
    Acquired,
    /// The caller owns it now, taking it over from a held PENDING copy.
    Preempted,
    /// Someone else owns it or it was delivered within the TTL.
    Duplicate(Existing),
}

/// The state a duplicate ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Held,
    InFlight,
    /// A held copy's delivery after its grace (no inbound request answers for it).
    HeldInFlight,
    Delivered,
}

impl Existing {
    pub fn reason(self) -> &'static str {
        match self {
            Existing::Held => "held-copy-exists",
            Existing::InFlight => "in-flight",
            Existing::HeldInFlight => "held-copy-in-flight",
            Existing::Delivered => "already-delivered",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("dedup store unavailable: {0}")]
    Unavailable(String),
    #[error("dedup store full: every entry is in flight")]
    Full,
}

/// The store operations of the table above. Implemented by every backend; the conformance suite
/// runs the same checks against each.
///
/// An owner token must not be used again after `reserve`, `hold`, `commit` or `release` returned
/// an error: the operation may have taken effect without its answer arriving, and a networked
/// backend (Redis) undoes (reserve, hold, release) or completes (commit) it in the background
/// under that token. After a failed `claim_held` the caller still owns the entry either way.
pub trait DedupStore: Send + Sync {
    fn reserve(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    fn hold(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;

    fn claim_held(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A fresh `lease` for the caller's live reservation or held copy's delivery (a spooled
    /// event about to be sent after waiting in the queue); false if the caller owns none.
    fn renew(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn commit(
        &self,
        key: &DedupKey,
        owner: Owner,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn release(
        &self,
        key: &DedupKey,
        owner: Owner,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The live state of an identity, changing nothing (`None`: absent). A hint only — the state
    /// may change before the caller's next operation, whose own answer then rules.
    fn peek(
        &self,
        key: &DedupKey,
    ) -> impl Future<Output = Result<Option<Existing>, StoreError>> + Send;

    /// Marks an identity delivered without a reservation (restoring durable state at start).
    fn insert_committed(
        &self,
        key: &DedupKey,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Answers whether the store can serve (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The configured backend; an enum rather than a trait object so the hot path is static dispatch.
#[derive(Debug, Clone)]
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    /// Whether the store is shared beyond this process (Redis), which decides three orders in
    /// the pipeline and the spool:
    /// - an entry can outlive its owner (another replica, or this process before a crash), so a
    ///   copy meeting a reservation in flight cannot trust it to answer for the event (sync mode
    ///   waits for its outcome);
    /// - a claim can outlive a crash, so in spool mode the record is written before the claim;
    /// - every call is a network round trip that can take effect and then be cut off, so it runs
    ///   in a task a client hang-up cannot cancel.
    ///
    /// The memory store is none of these: it dies with the process and answers without waiting.
    pub fn is_shared(&self) -> bool {
        match self {
            Store::Memory(_) => false,
            Store::Redis(_) => true,
        }
    }

    /// Delivered identities the memory store evicted inside their TTL (`None`: Redis, which
    /// runs with `noeviction`).
    pub fn evicted_live(&self) -> Option<u64> {
        match self {
            Store::Memory(s) => Some(s.evicted_live()),
            Store::Redis(_) => None,
        }
    }

    /// Live entries, when counting them is free (the memory store). Redis counts its own keys
    /// (`DBSIZE`, `INFO keyspace`), so it is not asked per scrape.
    pub fn local_entries(&self) -> Option<usize> {
        match self {
            Store::Memory(s) => Some(s.len()),
            Store::Redis(_) => None,
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Memory($s) => $e,
            Store::Redis($s) => $e,
        }
    };
}

impl DedupStore for Store {
    async fn reserve(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        dispatch!(self, s => s.reserve(key, owner, lease).await)
    }
    async fn hold(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        dispatch!(self, s => s.hold(key, owner, lease).await)
    }
    async fn claim_held(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.claim_held(key, owner, lease).await)
    }
    async fn renew(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renew(key, owner, lease).await)
    }
    async fn commit(
        &self,
        key: &DedupKey,
        owner: Owner,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.commit(key, owner, ttl).await)
    }
    async fn release(&self, key: &DedupKey, owner: Owner) -> Result<bool, StoreError> {
        dispatch!(self, s => s.release(key, owner).await)
    }
    async fn peek(&self, key: &DedupKey) -> Result<Option<Existing>, StoreError> {
        dispatch!(self, s => s.peek(key).await)
    }
    async fn insert_committed(&self, key: &DedupKey, ttl: Duration) -> Result<(), StoreError> {
        dispatch!(self, s => s.insert_committed(key, ttl).await)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_is_local_and_counts_its_entries() {
        let store = Store::Memory(MemoryStore::new(16));
        assert!(!store.is_shared());
        assert_eq!(store.local_entries(), Some(0));
        let claim = store
            .reserve(&DedupKey([1; 16]), 3, Duration::from_secs(5))
            .await
            .expect("the memory store answers");
        assert_eq!(claim, Claim::Acquired);
        assert_eq!(store.local_entries(), Some(1));
    }
}
