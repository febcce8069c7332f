use super::*;

pub(super) const LEASE: Duration = Duration::from_millis(1_000);
pub(super) const TTL: Duration = Duration::from_millis(10_000);

pub(super) fn k(i: u8) -> DedupKey {
    DedupKey([i; 16])
}

#[test]
fn two_phase_marking() {
    let s = MemoryStore::new(100);
    assert_eq!(s.reserve_at(&k(1), 10, LEASE, 0).unwrap(), Claim::Acquired);
    assert_eq!(
        s.reserve_at(&k(1), 11, LEASE, 1).unwrap(),
        Claim::Duplicate(Existing::InFlight)
    );
    assert!(!s.commit_at(&k(1), 11, TTL, 2), "a non-owner cannot commit");
    assert!(s.commit_at(&k(1), 10, TTL, 2));
    assert_eq!(
        s.reserve_at(&k(1), 12, LEASE, 3).unwrap(),
        Claim::Duplicate(Existing::Delivered)
    );
    assert_eq!(
        s.reserve_at(&k(1), 12, LEASE, 10_002).unwrap(),
        Claim::Acquired,
        "after the TTL"
    );
    assert!(s.release_at(&k(1), 12, 10_003));
    assert_eq!(
        s.reserve_at(&k(1), 13, LEASE, 10_004).unwrap(),
        Claim::Acquired,
        "after a release"
    );
}

#[test]
fn clean_copy_preempts_held_copy() {
    let s = MemoryStore::new(100);
    assert_eq!(s.hold_at(&k(1), 1, TTL, 0).unwrap(), Claim::Acquired);
    assert_eq!(
        s.hold_at(&k(1), 2, TTL, 1).unwrap(),
        Claim::Duplicate(Existing::Held)
    );
    assert_eq!(s.reserve_at(&k(1), 3, LEASE, 2).unwrap(), Claim::Preempted);
    assert!(
        !s.claim_held_at(&k(1), 1, LEASE, 3),
        "the held owner lost it"
    );
    assert!(!s.commit_at(&k(1), 1, TTL, 3));
    assert!(s.commit_at(&k(1), 3, TTL, 4));
    // A lone held copy is claimed by its owner after the grace.
    assert_eq!(s.hold_at(&k(2), 5, TTL, 0).unwrap(), Claim::Acquired);
    assert!(s.claim_held_at(&k(2), 5, LEASE, 5));
    assert!(!s.claim_held_at(&k(2), 5, LEASE, 6), "claiming twice fails");
    assert_eq!(
        s.reserve_at(&k(2), 6, LEASE, 6).unwrap(),
        Claim::Duplicate(Existing::HeldInFlight),
        "a claimed held copy is told apart from a request's reservation"
    );
    assert_eq!(
        s.hold_at(&k(2), 6, LEASE, 6).unwrap(),
        Claim::Duplicate(Existing::HeldInFlight)
    );
    assert!(s.release_at(&k(2), 5, 7), "its owner releases it");
    assert_eq!(s.reserve_at(&k(2), 6, LEASE, 8).unwrap(), Claim::Acquired);
}

#[test]
fn bound_evicts_expired_then_oldest_committed_never_in_flight() {
    let s = MemoryStore::new(100);
    for i in 0..50u8 {
        s.reserve_at(&k(i), 1, LEASE, 0).unwrap();
        s.commit_at(&k(i), 1, Duration::from_millis(100 + i as u64), 0);
    }
    for i in 50..100u8 {
        s.reserve_at(&k(i), 1, Duration::from_secs(3600), 0)
            .unwrap();
    }
    assert_eq!(s.len(), 100);
    assert_eq!(s.evicted_live(), 0);
    // Full: the oldest committed entry (k(0)) goes, in-flight ones stay; it was still live, so
    // it is counted (issue 13 item 8).
    assert_eq!(s.reserve_at(&k(200), 1, LEASE, 1).unwrap(), Claim::Acquired);
    assert_eq!(s.state_at(&k(0), 1), None);
    assert_eq!(s.evicted_live(), 1);
    for i in 50..100u8 {
        assert_eq!(s.state_at(&k(i), 1), Some(Existing::InFlight));
    }
    // Past every commit's expiry the sweep frees room first.
    assert_eq!(s.sweep_at(1_000), 49);
}

#[test]
fn full_of_in_flight_refuses() {
    let s = MemoryStore::new(16);
    for i in 0..16u8 {
        s.reserve_at(&k(i), 1, LEASE, 0).unwrap();
    }
    assert!(matches!(
        s.reserve_at(&k(99), 1, LEASE, 1),
        Err(StoreError::Full)
    ));
    // Expired leases make room again.
    assert_eq!(
        s.reserve_at(&k(99), 1, LEASE, 2_000).unwrap(),
        Claim::Acquired
    );
}

/// Only an insert needs room: a copy of a live identity, met while the map is at its bound,
/// is answered from the entry it finds. Making room first evicted the oldest committed
/// identities — possibly the very one asked about, which was then handed out again (a second
/// delivery) — and refused a duplicate of an in-flight identity with `Full` (503).
#[test]
fn a_live_identity_at_the_bound_is_answered_not_evicted() {
    let s = MemoryStore::new(16);
    for i in 0..16u8 {
        s.reserve_at(&k(i), 1, LEASE, 0).unwrap();
        assert!(s.commit_at(&k(i), 1, TTL + Duration::from_millis(i.into()), 0));
    }
    assert_eq!(
        s.reserve_at(&k(0), 2, LEASE, 1).unwrap(),
        Claim::Duplicate(Existing::Delivered),
        "the oldest delivered identity is still a duplicate"
    );
    assert_eq!(
        s.hold_at(&k(0), 2, LEASE, 1).unwrap(),
        Claim::Duplicate(Existing::Delivered)
    );
    assert_eq!(s.len(), 16, "nothing was evicted for a lookup");

    let s = MemoryStore::new(16);
    for i in 0..15u8 {
        s.reserve_at(&k(i), 1, LEASE, 0).unwrap();
    }
    assert_eq!(s.hold_at(&k(15), 1, TTL, 0).unwrap(), Claim::Acquired);
    assert_eq!(
        s.reserve_at(&k(0), 2, LEASE, 1).unwrap(),
        Claim::Duplicate(Existing::InFlight),
        "a copy of an in-flight identity is a duplicate, not a full store"
    );
    assert_eq!(
        s.reserve_at(&k(15), 2, LEASE, 1).unwrap(),
        Claim::Preempted,
        "a clean copy takes over a held one without needing room"
    );
    assert!(matches!(
        s.reserve_at(&k(99), 2, LEASE, 1),
        Err(StoreError::Full)
    ));
}

/// The sweeper thread removes what expired and stops sweeping once its token is cancelled
/// (bounded waits: at most 5 s each).
#[tokio::test]
async fn the_sweeper_thread_sweeps_until_cancelled() {
    let s = MemoryStore::new(100);
    let now = s.now();
    assert_eq!(
        s.reserve_at(&k(1), 1, Duration::from_millis(1), now)
            .unwrap(),
        Claim::Acquired
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let task = s.spawn_sweeper(Duration::from_millis(10), stop.clone());
    let swept = async {
        while !s.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), swept)
        .await
        .expect("swept");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stopped")
        .expect("task");
    // The thread has seen the channel close within one interval; an expired entry now stays.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let now = s.now();
    assert_eq!(
        s.reserve_at(&k(2), 2, Duration::from_millis(1), now)
            .unwrap(),
        Claim::Acquired
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.len(), 1, "no sweep after the cancel");
}
