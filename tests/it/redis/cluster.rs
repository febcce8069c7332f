//! Issue 12 part B: the Redis store on a real Redis Cluster (3 masters, 3 replicas; see
//! [`super::cluster_server`]). The whole conformance suite runs against it, then the store is
//! taken through a graceful failover and a killed master while a workload runs, and through the
//! one loss that asynchronous replication allows (a commit acknowledged by a master that died
//! before its replica received it).

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dedup_gateway::{
    config::Config,
    metrics::Metrics,
    pipeline::key::DedupKey,
    store::{Claim, DedupStore, Existing, RedisStore},
};

use super::{cluster_server::RedisCluster, conformance as c};

const LEASE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(600);

/// A cluster store over `cluster`'s nodes.
pub fn cluster_store(cluster: &RedisCluster, prefix: &str, confirm_commits: bool) -> RedisStore {
    let mut cfg = Config::default().dedup.redis;
    cfg.cluster_urls = cluster.urls();
    cfg.key_prefix = prefix.into();
    cfg.command_timeout = Duration::from_secs(2);
    cfg.confirm_commits = confirm_commits;
    RedisStore::new(&cfg, Metrics::new()).expect("cluster store")
}

fn key_str(s: &RedisStore, k: &DedupKey) -> String {
    String::from_utf8(s.redis_key(k)).expect("keys are ASCII")
}

/// Polls `op` (every 50 ms, at most 10 s) until it answers `want`, tolerating store errors: the
/// first command on a connection to a node that died fails, as it must (the store cannot know
/// whether it ran); the next ones follow the new topology. Returns the errors seen.
async fn settle<F, Fut, T>(what: &str, want: T, mut op: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, dedup_gateway::store::StoreError>>,
    T: PartialEq + std::fmt::Debug,
{
    let mut last = None;
    let mut errors = 0;
    for _ in 0..200 {
        match op().await {
            Ok(got) if got == want => return errors,
            Ok(got) => last = Some(format!("{got:?}")),
            Err(e) => {
                errors += 1;
                last = Some(e.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: never became {want:?}; last {last:?}");
}

/// Runs the conformance cases one after the other, each with a fresh store (and so a fresh
/// connection) on the same cluster.
async fn conformance_cases(cluster: &RedisCluster, prefix: &str) {
    let s = || cluster_store(cluster, prefix, true);
    c::reserve_row(s()).await;
    c::hold_row(s()).await;
    c::claim_held_row(s()).await;
    c::peek_row(s()).await;
    c::commit_row(s()).await;
    c::release_row(s()).await;
    c::insert_committed_row(s()).await;
    c::ttl_expiry(s()).await;
    c::lease_expiry_of_dead_owner(s()).await;
    c::concurrent_reserve_one_winner(s()).await;
    c::concurrent_preempt_one_winner(s()).await;
}

/// The whole store conformance suite on a 6-node cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    conformance_cases(&cluster, "conformance:").await;
}

/// Keys carry a per-identity hash tag: they spread over the slots and over all three masters,
/// each with its expiry, and a slot's keys live on that slot's master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_slots_by_a_per_identity_hash_tag() {
    let cluster = RedisCluster::start().await;
    let s = cluster_store(&cluster, "tag:", true);
    let mut slots = HashSet::new();
    let mut masters = HashSet::new();
    for owner in 1..=30u64 {
        let k = c::key();
        let rk = key_str(&s, &k);
        assert_eq!(rk, format!("tag:{{{k}}}"), "the digest is the hash tag");
        assert_eq!(s.reserve(&k, owner, LEASE).await.unwrap(), Claim::Acquired);
        assert!(s.commit(&k, owner, TTL).await.unwrap());
        let (m, _) = cluster.master_and_replica_of(&rk);
        assert_eq!(cluster.cli(m, &["GET", &rk]), "C", "on its slot's master");
        let pttl: u64 = cluster.cli(m, &["PTTL", &rk]).parse().unwrap();
        assert!(pttl > LEASE.as_millis() as u64 && pttl <= TTL.as_millis() as u64);
        slots.insert(cluster.cli(m, &["CLUSTER", "KEYSLOT", &rk]));
        masters.insert(m);
    }
    assert!(slots.len() >= 25, "30 identities in {} slots", slots.len());
    assert_eq!(masters.len(), 3, "every master holds identities");
}

/// Phases of the failover run: which answers are legal depends on it.
const GRACEFUL: u8 = 0;
const CRASH: u8 = 1;

#[derive(Default)]
struct Tally {
    acquired: AtomicUsize,
    committed: AtomicUsize,
    errors: AtomicUsize,
    lost_reservations: AtomicUsize,
    window_duplicates: AtomicUsize,
    rechecked: AtomicUsize,
    violations: Mutex<Vec<String>>,
    delivered: Mutex<Vec<DedupKey>>,
}

/// One worker of the failover run: fresh identities reserved and committed by one owner each,
/// and delivered ones checked again. Stops at `stop` (and after at most 100,000 rounds).
async fn worker(
    s: RedisStore,
    id: u64,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    t: Arc<Tally>,
) {
    for round in 0..100_000u64 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let k = c::key();
        let owner = (id << 32) | (round + 1);
        match s.reserve(&k, owner, LEASE).await {
            Ok(Claim::Acquired) => {
                t.acquired.fetch_add(1, Ordering::Relaxed);
            }
            Ok(other) => {
                // Nobody else ever touched this identity: a duplicate here is a lost event.
                t.violations
                    .lock()
                    .unwrap()
                    .push(format!("fresh reserve answered {other:?}"));
                continue;
            }
            Err(_) => {
                t.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        match s.commit(&k, owner, TTL).await {
            Ok(true) => {
                t.committed.fetch_add(1, Ordering::Relaxed);
                t.delivered.lock().unwrap().push(k);
            }
            Ok(false) if phase.load(Ordering::Relaxed) == CRASH => {
                // The reservation was on the killed master and not yet on its replica.
                t.lost_reservations.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => t
                .violations
                .lock()
                .unwrap()
                .push("commit refused during a graceful failover".into()),
            Err(_) => {
                t.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Re-check an identity delivered earlier: it must never be handed out again.
        let old = {
            let d = t.delivered.lock().unwrap();
            (!d.is_empty()).then(|| d[(round as usize * 7919) % d.len()])
        };
        if let Some(old) = old {
            let again = owner | (1 << 31);
            match s.reserve(&old, again, LEASE).await {
                Ok(Claim::Duplicate(Existing::Delivered)) => {
                    t.rechecked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Claim::Acquired) if phase.load(Ordering::Relaxed) == CRASH => {
                    // The documented window: a commit (and its reservation) acknowledged by the
                    // killed master within its last replication round trip, met before the
                    // confirmation re-applied it. The copy is delivered again, as a gateway would.
                    t.window_duplicates.fetch_add(1, Ordering::Relaxed);
                    let _ = s.commit(&old, again, TTL).await;
                }
                Ok(other) => t
                    .violations
                    .lock()
                    .unwrap()
                    .push(format!("a delivered identity answered {other:?}")),
                Err(_) => {
                    t.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A workload runs while a replica takes over gracefully (`CLUSTER FAILOVER`) and then while a
/// master is killed and its replica promoted. The store follows the new topology; no fresh
/// identity is ever answered `duplicate` (a lost event); no delivered identity is handed out
/// again, except — only around the crash, and counted — one whose commit the killed master
/// acknowledged within its last replication round trip; every identity whose commit was
/// answered is still delivered afterwards; and the
/// conformance suite passes on the changed cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_killed_master_keep_the_dedup_state() {
    let mut cluster = RedisCluster::start().await;
    let store = cluster_store(&cluster, "failover:", true);
    let phase = Arc::new(AtomicU8::new(GRACEFUL));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (1..=6u64)
        .map(|id| {
            tokio::spawn(worker(
                store.clone(),
                id,
                phase.clone(),
                stop.clone(),
                tally.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Graceful: the replica of one shard takes over; nothing may be lost.
    let probe = key_str(&store, &c::key());
    let (_, r1) = cluster.master_and_replica_of(&probe);
    assert_eq!(cluster.cli(r1, &["CLUSTER", "FAILOVER"]), "OK");
    cluster.wait_promoted(r1, Duration::from_secs(30)).await;
    let before_crash = tally.committed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Crash: another shard's master is killed; its replica is promoted by the cluster itself.
    phase.store(CRASH, Ordering::Relaxed);
    let (m2, r2) = loop {
        let (m, r) = cluster.master_and_replica_of(&key_str(&store, &c::key()));
        if m != r1 {
            break (m, r);
        }
    };
    cluster.kill(m2);
    cluster.wait_promoted(r2, Duration::from_secs(30)).await;
    let at_promotion = tally.committed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let t = &tally;
    let violations = t.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:?}");
    let committed = t.committed.load(Ordering::Relaxed);
    eprintln!(
        "failover run: {} acquired, {committed} committed ({before_crash} before the crash), {} rechecked, {} errors, {} reservations lost with the killed master, {} duplicates in the crash window",
        t.acquired.load(Ordering::Relaxed),
        t.rechecked.load(Ordering::Relaxed),
        t.errors.load(Ordering::Relaxed),
        t.lost_reservations.load(Ordering::Relaxed),
        t.window_duplicates.load(Ordering::Relaxed),
    );
    // At most the few commits in flight on the killed master at the instant it died.
    assert!(t.window_duplicates.load(Ordering::Relaxed) <= 6);
    assert!(before_crash > 0, "the graceful phase made progress");
    assert!(
        committed > at_promotion,
        "the store works on the new topology after the promotion"
    );
    // Every answered commit is still there (re-applied by the store where no replica had it).
    let delivered = t.delivered.lock().unwrap().clone();
    let mut errors = 0;
    for k in &delivered {
        errors += settle(
            "a delivered identity stays delivered",
            Some(Existing::Delivered),
            || store.peek(k),
        )
        .await;
    }
    assert!(errors <= 3, "{errors} errors after the cluster settled");
    conformance_cases(&cluster, "after-failover:").await;
}

/// The loss asynchronous replication allows, made deterministic: the replica is frozen and the
/// master's replication link is cut (`CLIENT KILL TYPE replica`) before the commit, so
/// the commit exists only on the master, which is then killed; the replica takes over without it.
///
/// With `confirm_commits = true` (the default) the store reads the commit back from the replica,
/// does not find it there, keeps re-applying it on the master, and once the replica is master
/// the identity is delivered again there. With `confirm_commits = false` the same commit is
/// simply gone: the identity is left reserved by the delivering owner until its lease ends, after
/// which a copy would be forwarded again (the documented duplicate window of that setting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_lost_with_its_master_is_re_applied_on_the_promoted_replica() {
    let mut cluster = RedisCluster::start().await;
    let confirms = cluster_store(&cluster, "lost:", true);
    let no_confirm = cluster_store(&cluster, "lost:", false);
    let k1 = c::key();
    let (m, r) = cluster.master_and_replica_of(&key_str(&confirms, &k1));
    // A second identity on the same master, for the store that does not confirm.
    let k2 = (0..1_000)
        .map(|_| c::key())
        .find(|k| cluster.master_and_replica_of(&key_str(&no_confirm, k)).0 == m)
        .expect("an identity on the same master");
    assert_eq!(
        confirms.reserve(&k1, 1, LEASE).await.unwrap(),
        Claim::Acquired
    );
    assert_eq!(
        no_confirm.reserve(&k2, 2, LEASE).await.unwrap(),
        Claim::Acquired
    );
    // Both reservations are on the replica before it is frozen; then the master drops its
    // replication link and the frozen replica cannot come back for what follows.
    cluster.wait_replicated(m).await;
    cluster.signal(r, "STOP");
    assert_eq!(cluster.cli(m, &["CLIENT", "KILL", "TYPE", "replica"]), "1");
    assert!(
        confirms.commit(&k1, 1, TTL).await.unwrap(),
        "acknowledged by the master"
    );
    assert!(no_confirm.commit(&k2, 2, TTL).await.unwrap());
    let (rk1, rk2) = (key_str(&confirms, &k1), key_str(&no_confirm, &k2));
    assert_eq!(
        cluster.cli(m, &["GET", &rk2]),
        "C",
        "committed on the master"
    );

    cluster.kill(m);
    cluster.signal(r, "CONT");
    assert_eq!(cluster.cli(r, &["CLUSTER", "FAILOVER", "TAKEOVER"]), "OK");
    cluster.wait_promoted(r, Duration::from_secs(30)).await;
    assert_eq!(
        cluster.cli(r, &["GET", &rk2]),
        "R:2",
        "the promoted replica never received the commit"
    );

    settle(
        "the lost commit is re-applied",
        Some(Existing::Delivered),
        || confirms.peek(&k1),
    )
    .await;
    assert_eq!(cluster.cli(r, &["GET", &rk1]), "C");
    assert_eq!(
        confirms.reserve(&k1, 3, LEASE).await.unwrap(),
        Claim::Duplicate(Existing::Delivered),
        "a later copy is a duplicate"
    );
    // This store's connection to the dead master fails once; then it reads the new master.
    settle(
        "unconfirmed, the commit is lost; only the lease ends the reservation",
        Some(Existing::InFlight),
        || no_confirm.peek(&k2),
    )
    .await;
}

/// A slot being migrated between masters (resharding, e.g. when masters are added): the source
/// answers `ASK` for an identity it does not have, and the store follows it to the importing
/// node with `ASKING`; once the slot is moved, `MOVED` brings the store to the new owner, where
/// the identity's state is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_being_migrated_is_followed_through_ask_and_moved() {
    let cluster = RedisCluster::start().await;
    let s = cluster_store(&cluster, "ask:", true);
    let k = c::key();
    let rk = key_str(&s, &k);
    let (src, _) = cluster.master_and_replica_of(&rk);
    let dst = (0..6)
        .find(|&i| i != src && cluster.is_master(i))
        .expect("another master");
    let slot = cluster.cli(src, &["CLUSTER", "KEYSLOT", &rk]);
    let (src_id, dst_id) = (
        cluster.cli(src, &["CLUSTER", "MYID"]),
        cluster.cli(dst, &["CLUSTER", "MYID"]),
    );
    assert_eq!(
        cluster.cli(dst, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]),
        "OK"
    );
    assert_eq!(
        cluster.cli(src, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]),
        "OK"
    );

    assert_eq!(s.reserve(&k, 1, LEASE).await.unwrap(), Claim::Acquired);
    assert_eq!(
        cluster.cli_script(dst, &["ASKING", &format!("GET {rk}")]),
        "OK\nR:1",
        "written on the importing node"
    );
    assert!(
        cluster.cli(src, &["EXISTS", &rk]).starts_with("ASK "),
        "not on the migrating node, which sends the client on"
    );
    assert_eq!(
        s.reserve(&k, 2, LEASE).await.unwrap(),
        Claim::Duplicate(Existing::InFlight)
    );
    assert!(s.commit(&k, 1, TTL).await.unwrap());

    // The migration ends: every master learns the slot's new owner.
    for i in (0..6).filter(|&i| cluster.is_master(i)) {
        assert_eq!(
            cluster.cli(i, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]),
            "OK"
        );
    }
    settle("after the move", Some(Existing::Delivered), || s.peek(&k)).await;
    assert_eq!(
        s.reserve(&k, 3, LEASE).await.unwrap(),
        Claim::Duplicate(Existing::Delivered)
    );
    assert_eq!(cluster.master_and_replica_of(&rk).0, dst);
}
