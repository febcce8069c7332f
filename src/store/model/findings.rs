//! What the model reports the moment it sees it: the issue-13 items, and what the shared-store
//! modes found. Each explains a loss or a repeat the end-of-case check would otherwise fail on,
//! and is excused there only while it is in [`KNOWN`].

/// A departure seen while it happened (an issue-13 item, or one the shared-store modes found).
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
    /// Item 1, sync mode: a held copy dropped as superseded by a copy that was not delivered.
    SyncHeldDroppedForInFlight,
    /// Not reported: the restore removed a record as a duplicate while nothing else durable
    /// carries the event.
    RestoreDroppedNonDurable,
    /// Shared store, fail-open (found by this model; fixed in session 11, `Old::fresh_defer`
    /// puts it back): a restore with the store failing
    /// queued a record under a fresh token (`defer_claim`), the worker wrote that token over the
    /// record's own, and the record's reservation from before the restart was left standing,
    /// named by nothing on disk; the next restore meets it and drops the record as a duplicate.
    RestoreOrphanedOwnClaim,
}

/// The findings today's code has (issue 13 items 3 and 8: the model still has the old lease
/// protocol, and eviction is by design). Fixed: items 1, 2 and 7, and the fail-open restore's
/// orphan; see the module doc.
pub(crate) const KNOWN: [Finding; 2] = [Finding::LeaseLapsed, Finding::EvictedLive];
