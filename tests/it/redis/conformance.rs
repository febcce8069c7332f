//! The dedup-store conformance suite: the semantics table of `src/store/mod.rs`, written once,
//! generic over [`DedupStore`], and run against every backend (`memory::*` and `redis::*` below),
//! so the backends cannot drift apart. A differential test then runs one random operation
//! sequence against both backends side by side and compares every answer.
//!
//! Owners are small distinct integers: the memory store compares the low 22 bits of a token, Redis
//! all 64, and tokens that differ in their low bits behave the same on both. Expiry is real time
//! on both backends (Redis enforces `PX` itself), so the expiry cases use leases of about a second
//! and then poll, bounded, until the entry is gone; nothing asserts how fast that happens.

use std::time::Duration;

use dedup_gateway::{
    config::Config,
    metrics::Metrics,
    pipeline::key::DedupKey,
    store::{Claim, DedupStore, Existing, MemoryStore, RedisStore, StoreError},
};

use super::server::RedisServer;

const LEASE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_millis(1_200);

const IN_FLIGHT: Claim = Claim::Duplicate(Existing::InFlight);
const DELIVERED: Claim = Claim::Duplicate(Existing::Delivered);
const HELD: Claim = Claim::Duplicate(Existing::Held);
const HELD_IN_FLIGHT: Claim = Claim::Duplicate(Existing::HeldInFlight);

pub(super) fn key() -> DedupKey {
    DedupKey(rand::random())
}

fn memory_store() -> MemoryStore {
    MemoryStore::new(100_000)
}

/// A Redis store on its own server; the server lives as long as the returned guard.
pub async fn redis_store() -> (RedisStore, RedisServer) {
    let server = RedisServer::start().await;
    let mut cfg = Config::default().dedup.redis;
    cfg.url = server.url();
    cfg.key_prefix = "conformance:".into();
    cfg.command_timeout = Duration::from_secs(2);
    let store = RedisStore::new(&cfg, Metrics::new()).expect("redis store");
    (store, server)
}

/// Polls `op` (every 50 ms, at most 200 times) until it returns `want`; panics otherwise.
pub(super) async fn until<F, Fut, T>(what: &str, want: T, mut op: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
    T: PartialEq + std::fmt::Debug,
{
    let mut last = None;
    for _ in 0..200 {
        let got = op().await.expect("store answers");
        if got == want {
            return;
        }
        last = Some(got);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: never became {want:?}; last {last:?}");
}

/// Row `reserve`: absent → Acquired; held by another → Preempted; reserved or committed → Duplicate.
pub(super) async fn reserve_row<S: DedupStore>(s: S) {
    let k = key();
    assert_eq!(s.reserve(&k, 1, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.reserve(&k, 2, LEASE).await.unwrap(), IN_FLIGHT);
    assert_eq!(
        s.reserve(&k, 1, LEASE).await.unwrap(),
        IN_FLIGHT,
        "even for its own owner"
    );

    let k = key();
    assert_eq!(s.hold(&k, 3, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.reserve(&k, 4, LEASE).await.unwrap(), Claim::Preempted);
    assert_eq!(
        s.reserve(&k, 5, LEASE).await.unwrap(),
        IN_FLIGHT,
        "the preempting copy owns it now"
    );

    let k = key();
    assert_eq!(s.reserve(&k, 6, LEASE).await.unwrap(), Claim::Acquired);
    assert!(s.commit(&k, 6, TTL).await.unwrap());
    assert_eq!(s.reserve(&k, 7, LEASE).await.unwrap(), DELIVERED);
}

/// Row `hold`: absent → Acquired; anything live → Duplicate naming what it ran into.
pub(super) async fn hold_row<S: DedupStore>(s: S) {
    let k = key();
    assert_eq!(s.hold(&k, 1, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.hold(&k, 2, LEASE).await.unwrap(), HELD);
    assert_eq!(
        s.hold(&k, 1, LEASE).await.unwrap(),
        HELD,
        "even for its own owner"
    );

    let k = key();
    assert_eq!(s.reserve(&k, 3, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.hold(&k, 4, LEASE).await.unwrap(), IN_FLIGHT);

    let k = key();
    s.insert_committed(&k, TTL).await.unwrap();
    assert_eq!(s.hold(&k, 5, LEASE).await.unwrap(), DELIVERED);
}

/// Row `claim_held`: true only for the live holder, which becomes a reservation.
pub(super) async fn claim_held_row<S: DedupStore>(s: S) {
    let k = key();
    assert!(!s.claim_held(&k, 1, LEASE).await.unwrap(), "absent");
    assert_eq!(s.hold(&k, 1, LEASE).await.unwrap(), Claim::Acquired);
    assert!(
        !s.claim_held(&k, 2, LEASE).await.unwrap(),
        "held by another"
    );
    assert!(
        s.claim_held(&k, 1, LEASE).await.unwrap(),
        "held by the caller"
    );
    assert!(
        !s.claim_held(&k, 1, LEASE).await.unwrap(),
        "a second claim: it is being delivered now"
    );
    assert_eq!(
        s.reserve(&k, 3, LEASE).await.unwrap(),
        HELD_IN_FLIGHT,
        "claimed → held-delivering, told apart from a request's reservation"
    );
    assert_eq!(s.hold(&k, 3, LEASE).await.unwrap(), HELD_IN_FLIGHT);
    assert!(!s.commit(&k, 3, TTL).await.unwrap(), "not the owner");
    assert!(!s.release(&k, 3).await.unwrap(), "not the owner");
    assert!(s.commit(&k, 1, TTL).await.unwrap());
    assert!(!s.claim_held(&k, 1, LEASE).await.unwrap(), "committed");

    // A held copy preempted by a clean one cannot claim any more.
    let k = key();
    assert_eq!(s.hold(&k, 4, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.reserve(&k, 5, LEASE).await.unwrap(), Claim::Preempted);
    assert!(!s.claim_held(&k, 4, LEASE).await.unwrap());
    assert!(
        !s.claim_held(&k, 5, LEASE).await.unwrap(),
        "a reservation is not a hold"
    );

    // A held copy being delivered is released by its owner when the delivery fails for good.
    let k = key();
    assert_eq!(s.hold(&k, 6, LEASE).await.unwrap(), Claim::Acquired);
    assert!(s.claim_held(&k, 6, LEASE).await.unwrap());
    assert!(s.release(&k, 6).await.unwrap());
    assert_eq!(s.reserve(&k, 7, LEASE).await.unwrap(), Claim::Acquired);
}

/// `peek`: reports each state without changing it.
pub(super) async fn peek_row<S: DedupStore>(s: S) {
    let k = key();
    assert_eq!(s.peek(&k).await.unwrap(), None, "absent");
    assert_eq!(s.hold(&k, 1, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.peek(&k).await.unwrap(), Some(Existing::Held));
    assert!(s.claim_held(&k, 1, LEASE).await.unwrap());
    assert_eq!(s.peek(&k).await.unwrap(), Some(Existing::HeldInFlight));
    assert!(s.commit(&k, 1, TTL).await.unwrap());
    assert_eq!(s.peek(&k).await.unwrap(), Some(Existing::Delivered));
    let k = key();
    assert_eq!(s.reserve(&k, 2, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.peek(&k).await.unwrap(), Some(Existing::InFlight));
    assert_eq!(
        s.peek(&k).await.unwrap(),
        Some(Existing::InFlight),
        "unchanged"
    );
    assert!(
        s.release(&k, 2).await.unwrap(),
        "still owned after the peeks"
    );
    assert_eq!(s.peek(&k).await.unwrap(), None);
}

/// Row `commit`: only the live owner (holding or reserving) commits; a commit is final.
pub(super) async fn commit_row<S: DedupStore>(s: S) {
    let k = key();
    assert!(!s.commit(&k, 1, TTL).await.unwrap(), "absent");
    assert_eq!(s.reserve(&k, 1, LEASE).await.unwrap(), Claim::Acquired);
    assert!(!s.commit(&k, 2, TTL).await.unwrap(), "not the owner");
    assert_eq!(
        s.reserve(&k, 3, LEASE).await.unwrap(),
        IN_FLIGHT,
        "a refused commit changes nothing"
    );
    assert!(s.commit(&k, 1, TTL).await.unwrap());
    assert!(!s.commit(&k, 1, TTL).await.unwrap(), "already committed");
    assert_eq!(s.reserve(&k, 4, LEASE).await.unwrap(), DELIVERED);

    let k = key();
    assert_eq!(s.hold(&k, 5, LEASE).await.unwrap(), Claim::Acquired);
    assert!(s.commit(&k, 5, TTL).await.unwrap(), "the holder may commit");
    assert_eq!(s.hold(&k, 6, LEASE).await.unwrap(), DELIVERED);

    let k = key();
    assert_eq!(s.hold(&k, 7, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(s.reserve(&k, 8, LEASE).await.unwrap(), Claim::Preempted);
    assert!(
        !s.commit(&k, 7, TTL).await.unwrap(),
        "a late answer for a preempted hold"
    );
    assert!(s.commit(&k, 8, TTL).await.unwrap());
}

/// Row `release`: only the live owner releases; a committed identity cannot be released.
pub(super) async fn release_row<S: DedupStore>(s: S) {
    let k = key();
    assert!(!s.release(&k, 1).await.unwrap(), "absent");
    assert_eq!(s.reserve(&k, 1, LEASE).await.unwrap(), Claim::Acquired);
    assert!(!s.release(&k, 2).await.unwrap(), "not the owner");
    assert_eq!(
        s.reserve(&k, 3, LEASE).await.unwrap(),
        IN_FLIGHT,
        "a refused release changes nothing"
    );
    assert!(s.release(&k, 1).await.unwrap());
    assert!(!s.release(&k, 1).await.unwrap(), "released twice");
    assert_eq!(
        s.reserve(&k, 4, LEASE).await.unwrap(),
        Claim::Acquired,
        "a release hides nothing"
    );

    let k = key();
    assert_eq!(s.hold(&k, 5, LEASE).await.unwrap(), Claim::Acquired);
    assert!(s.release(&k, 5).await.unwrap(), "the holder may release");
    assert_eq!(s.hold(&k, 6, LEASE).await.unwrap(), Claim::Acquired);

    let k = key();
    assert_eq!(s.reserve(&k, 7, LEASE).await.unwrap(), Claim::Acquired);
    assert!(s.commit(&k, 7, TTL).await.unwrap());
    assert!(
        !s.release(&k, 7).await.unwrap(),
        "committed stays committed"
    );
    assert_eq!(s.reserve(&k, 8, LEASE).await.unwrap(), DELIVERED);
}

/// `insert_committed` marks an identity delivered, over whatever was there.
pub(super) async fn insert_committed_row<S: DedupStore>(s: S) {
    let k = key();
    s.insert_committed(&k, TTL).await.unwrap();
    assert_eq!(s.reserve(&k, 1, LEASE).await.unwrap(), DELIVERED);

    let k = key();
    assert_eq!(s.reserve(&k, 2, LEASE).await.unwrap(), Claim::Acquired);
    s.insert_committed(&k, TTL).await.unwrap();
    assert_eq!(s.reserve(&k, 3, LEASE).await.unwrap(), DELIVERED);
    assert!(!s.release(&k, 2).await.unwrap(), "the old owner lost it");
    assert!(!s.commit(&k, 2, TTL).await.unwrap());
    s.ping().await.unwrap();
}

/// A committed identity is forgotten once its TTL ends, and handed out again.
pub(super) async fn ttl_expiry<S: DedupStore>(s: S) {
    let k = key();
    assert_eq!(s.reserve(&k, 1, LEASE).await.unwrap(), Claim::Acquired);
    assert!(s.commit(&k, 1, SHORT).await.unwrap());
    until("committed entry expires", Claim::Acquired, || {
        s.reserve(&k, 2, LEASE)
    })
    .await;
    assert!(
        !s.commit(&k, 1, TTL).await.unwrap(),
        "the first owner's token means nothing now"
    );
    assert!(s.commit(&k, 2, TTL).await.unwrap());
}

/// A reservation whose owner died (never commits nor releases) expires after its lease; the
/// owner's late answers then change nothing.
pub(super) async fn lease_expiry_of_dead_owner<S: DedupStore>(s: S) {
    let k = key();
    assert_eq!(s.reserve(&k, 1, SHORT).await.unwrap(), Claim::Acquired);
    // Owner 1 dies here. Owner 2 waits the lease out.
    until("dead owner's lease ends", Claim::Acquired, || {
        s.reserve(&k, 2, LEASE)
    })
    .await;
    assert!(
        !s.commit(&k, 1, TTL).await.unwrap(),
        "late commit of the dead owner"
    );
    assert!(
        !s.release(&k, 1).await.unwrap(),
        "late release of the dead owner"
    );
    assert_eq!(
        s.reserve(&k, 3, LEASE).await.unwrap(),
        IN_FLIGHT,
        "owner 2 still holds it"
    );
    assert!(s.commit(&k, 2, TTL).await.unwrap());

    // The same for a held copy whose process died.
    let k = key();
    assert_eq!(s.hold(&k, 4, SHORT).await.unwrap(), Claim::Acquired);
    until("dead holder's lease ends", Claim::Acquired, || {
        s.hold(&k, 5, LEASE)
    })
    .await;
    assert!(!s.claim_held(&k, 4, LEASE).await.unwrap());
    assert!(s.claim_held(&k, 5, LEASE).await.unwrap());
}

/// `renew`: a fresh lease for the caller's reservation or held copy's delivery, nothing else.
async fn renew_row<S: DedupStore>(s: S) {
    let k = key();
    assert!(!s.renew(&k, 1, LEASE).await.unwrap(), "absent");
    assert_eq!(s.reserve(&k, 1, SHORT).await.unwrap(), Claim::Acquired);
    assert!(!s.renew(&k, 2, LEASE).await.unwrap(), "not the owner");
    assert!(s.renew(&k, 1, LEASE).await.unwrap());
    // Renewed past the short lease: still reserved after it would have ended.
    tokio::time::sleep(SHORT + Duration::from_millis(300)).await;
    assert_eq!(s.reserve(&k, 3, LEASE).await.unwrap(), IN_FLIGHT);
    assert!(s.commit(&k, 1, TTL).await.unwrap());
    assert!(!s.renew(&k, 1, LEASE).await.unwrap(), "committed");
    // Held: not renewed (its worker claims it); held-delivering: renewed.
    let k = key();
    assert_eq!(s.hold(&k, 4, LEASE).await.unwrap(), Claim::Acquired);
    assert!(!s.renew(&k, 4, LEASE).await.unwrap(), "held");
    assert!(s.claim_held(&k, 4, SHORT).await.unwrap());
    assert!(s.renew(&k, 4, LEASE).await.unwrap(), "held-delivering");
    assert_eq!(s.reserve(&k, 5, LEASE).await.unwrap(), HELD_IN_FLIGHT);
}

/// Many tasks reserve one identity at once: exactly one acquires it; repeated over many keys.
pub(super) async fn concurrent_reserve_one_winner<S: DedupStore + Clone + 'static>(s: S) {
    for _ in 0..10 {
        let k = key();
        let tasks: Vec<_> = (1..=64u64)
            .map(|owner| {
                let s = s.clone();
                tokio::spawn(async move { s.reserve(&k, owner, LEASE).await.unwrap() })
            })
            .collect();
        let mut acquired = 0;
        for t in tasks {
            match t.await.unwrap() {
                Claim::Acquired => acquired += 1,
                other => assert_eq!(other, IN_FLIGHT),
            }
        }
        assert_eq!(acquired, 1, "exactly one owner per identity");
    }
}

/// Many clean copies race for one held identity: exactly one preempts it.
pub(super) async fn concurrent_preempt_one_winner<S: DedupStore + Clone + 'static>(s: S) {
    for _ in 0..10 {
        let k = key();
        assert_eq!(s.hold(&k, 1_000, LEASE).await.unwrap(), Claim::Acquired);
        let tasks: Vec<_> = (1..=64u64)
            .map(|owner| {
                let s = s.clone();
                tokio::spawn(async move { s.reserve(&k, owner, LEASE).await.unwrap() })
            })
            .collect();
        let mut preempted = 0;
        for t in tasks {
            match t.await.unwrap() {
                Claim::Preempted => preempted += 1,
                other => assert_eq!(other, IN_FLIGHT),
            }
        }
        assert_eq!(preempted, 1);
        assert!(!s.claim_held(&k, 1_000, LEASE).await.unwrap());
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::memory_store()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _server) = super::redis_store().await;
                    super::$case(store).await;
                }
            )*
        }
    };
}

conformance!(
    reserve_row,
    hold_row,
    claim_held_row,
    peek_row,
    commit_row,
    release_row,
    insert_committed_row,
    ttl_expiry,
    lease_expiry_of_dead_owner,
    renew_row,
    concurrent_reserve_one_winner,
    concurrent_preempt_one_winner,
);

/// One random sequence of operations over a few identities and owners, run against both backends
/// side by side (no clock advance): every answer must be the same.
#[tokio::test]
async fn backends_agree_on_random_sequences() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let (redis, _server) = redis_store().await;
    let memory = memory_store();
    let keys: Vec<DedupKey> = (0..3).map(|_| key()).collect();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for step in 0..600 {
        let k = &keys[rng.random_range(0..keys.len())];
        let owner = rng.random_range(1..6u64);
        let (m, r) = match rng.random_range(0..6) {
            0 => (
                format!("{:?}", memory.reserve(k, owner, LEASE).await),
                format!("{:?}", redis.reserve(k, owner, LEASE).await),
            ),
            1 => (
                format!("{:?}", memory.hold(k, owner, LEASE).await),
                format!("{:?}", redis.hold(k, owner, LEASE).await),
            ),
            2 => (
                format!("{:?}", memory.claim_held(k, owner, LEASE).await),
                format!("{:?}", redis.claim_held(k, owner, LEASE).await),
            ),
            3 => (
                format!("{:?}", memory.commit(k, owner, TTL).await),
                format!("{:?}", redis.commit(k, owner, TTL).await),
            ),
            4 => (
                format!("{:?}", memory.release(k, owner).await),
                format!("{:?}", redis.release(k, owner).await),
            ),
            _ => {
                // Forget an identity on both sides now and then, so the sequence keeps visiting
                // the absent state instead of ending with everything committed.
                let fresh = rng.random_range(0..10) == 0;
                if fresh {
                    for o in 1..6 {
                        let _ = memory.release(k, o).await;
                        let _ = redis.release(k, o).await;
                    }
                }
                (String::new(), String::new())
            }
        };
        assert_eq!(m, r, "step {step}: memory and redis disagree");
    }
}

/// Redis enforces the expiry itself: every key carries a `PX` (lease for a reservation, TTL for a
/// commit), so nothing needs sweeping and a dead gateway leaves nothing behind for ever.
#[tokio::test]
async fn redis_keys_carry_their_expiry() {
    let (s, server) = redis_store().await;
    let k = key();
    let rk = String::from_utf8(s.redis_key(&k)).unwrap();
    assert!(
        rk.starts_with("conformance:") && rk.ends_with(&k.to_string()),
        "{rk}"
    );
    assert_eq!(s.reserve(&k, 42, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(server.cli(&["GET", &rk]), "R:42");
    let pttl: u64 = server.cli(&["PTTL", &rk]).parse().unwrap();
    assert!(
        pttl > 0 && pttl <= LEASE.as_millis() as u64,
        "lease as PX: {pttl}"
    );
    assert!(s.commit(&k, 42, TTL).await.unwrap());
    assert_eq!(server.cli(&["GET", &rk]), "C");
    let pttl: u64 = server.cli(&["PTTL", &rk]).parse().unwrap();
    assert!(
        pttl > LEASE.as_millis() as u64 && pttl <= TTL.as_millis() as u64,
        "TTL as PX: {pttl}"
    );
}

/// A reserve whose answer never arrives (Redis stalls past the command timeout, then runs it) is
/// undone by the backend's repair: the identity does not stay reserved for a whole lease by an
/// owner that was told "error".
#[tokio::test]
async fn redis_unanswered_reserve_is_undone() {
    let server = RedisServer::start().await;
    let mut cfg = Config::default().dedup.redis;
    cfg.url = server.url();
    cfg.key_prefix = "repair:".into();
    cfg.command_timeout = Duration::from_millis(200);
    let s = RedisStore::new(&cfg, Metrics::new()).expect("redis store");
    // Connect (and prove the store answers) before the stall.
    assert_eq!(s.reserve(&key(), 9, LEASE).await.unwrap(), Claim::Acquired);
    let k = key();
    // Scripts are writes: they queue until the pause ends, then run.
    assert_eq!(server.cli(&["CLIENT", "PAUSE", "1000", "WRITE"]), "OK");
    assert!(
        s.reserve(&k, 1, LEASE).await.is_err(),
        "no answer within the timeout"
    );
    // Answers may time out while the pause lasts; poll (bounded) until owner 2 gets it.
    let mut got = None;
    for _ in 0..200 {
        got = s.reserve(&k, 2, LEASE).await.ok();
        if got == Some(Claim::Acquired) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        got,
        Some(Claim::Acquired),
        "the unanswered reservation is undone"
    );
    assert!(!s.commit(&k, 1, TTL).await.unwrap());
}
