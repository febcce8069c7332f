//! `kill -9` variants of the restart tests that stop the gateway gracefully
//! (`spool::restart_keeps_delivered_keys_for_the_ttl_and_undelivered_events`,
//! `spool::held_record_survives_restart_and_clean_copy_preempts`,
//! `redis::spool::spooled_events_survive_a_restart_on_redis`,
//! `redis::spool::held_copy_that_reserved_anew_survives_a_restart_on_redis`,
//! `redis::spool::event_restored_while_redis_is_down_is_committed_once_delivered`,
//! `redis::spool::restore_with_redis_down_asks_the_store_once`), on the real binary. Not here:
//! `spool::disk_write_failure_answers_503_and_loses_nothing` (its fault switch exists only in
//! process; the crash test covers "nothing delivered again after a kill") and
//! `spool::undecodable_dlq_entry_does_not_hide_the_rest` (a damaged file, not a delivery).
//!
//! A graceful stop lets running deliveries write their outcome; a kill does not, so these check
//! what the disk alone (and, with Redis, a store that outlived the process) brings back. After the
//! expected delivery each waits a quiet period longer than the retry ceiling and the grace, so a
//! late redelivery would be seen.

use std::time::Duration;

use super::{delivered, key_of, metric_of, quiet, recorded};
use crate::{
    crash::Bin,
    helpers::*,
    redis::server::RedisServer,
    spool::{pending_event, put_event},
};

/// The settings of the binary on `redis` (the same as the in-process Redis spool tests).
fn redis_env(redis: &RedisServer) -> Vec<(&'static str, String)> {
    vec![
        ("DEDUP_GATEWAY_DEDUP__BACKEND", "redis".into()),
        ("DEDUP_GATEWAY_DEDUP__REDIS__URL", redis.url()),
        ("DEDUP_GATEWAY_DEDUP__REDIS__KEY_PREFIX", "it:".into()),
        (
            "DEDUP_GATEWAY_DEDUP__HASH_SECRET",
            "replicas-share-this-secret-0123456789".into(),
        ),
        ("DEDUP_GATEWAY_POLICY__PENDING_GRACE", "300ms".into()),
    ]
}

fn as_env<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Posts until a 2xx (the Redis store connects lazily); at most 100 tries.
async fn post_until_2xx(gw: &Bin, body: Vec<u8>) -> (u16, serde_json::Value) {
    for _ in 0..100 {
        let (status, a) = gw.post(GOOD_TOKEN, body.clone()).await;
        if (200..300).contains(&status) {
            return (status, a);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never acknowledged");
}

/// Delivered identities survive a kill -9 (a redelivery is a duplicate) until their TTL ends; an
/// event undelivered at the kill is delivered after the restart, once — also across a second kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_delivered_keys_for_the_ttl_and_undelivered_events() {
    let tmp = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    let env = [("DEDUP_GATEWAY_DEDUP__TTL", "4s")];
    let mut gw = Bin::start(tmp.path(), &oscar.url(), &env).await;
    let (status, a) = gw.post(GOOD_TOKEN, put_event("k9-ttl-1")).await;
    assert_eq!(status, 202, "{a}");
    let k1 = key_of(&a);
    assert!(eventually(Duration::from_secs(10), || delivered(&oscar, &k1) == 1).await);
    let delivered_at = std::time::Instant::now();
    // Once the outcome is on disk (past the crash window), one that cannot be delivered yet.
    assert!(recorded(&gw, &k1).await, "outcome on disk");
    oscar.set_status(503);
    let (status, a) = gw.post(GOOD_TOKEN, put_event("k9-ttl-2")).await;
    assert_eq!(status, 202, "{a}");
    let k2 = key_of(&a);
    gw.restart().await;

    oscar.set_status(201);
    let (status, a) = gw.post(GOOD_TOKEN, put_event("k9-ttl-1")).await;
    assert_eq!(
        (status, verdicts(&a)),
        (200, vec!["duplicate".to_string()]),
        "{a}"
    );
    assert!(
        eventually(Duration::from_secs(10), || delivered(&oscar, &k2) == 1).await,
        "the event undelivered at the kill is delivered after the restart"
    );
    assert!(recorded(&gw, &k2).await, "outcome on disk");
    gw.restart().await;
    let (_, a) = gw.post(GOOD_TOKEN, put_event("k9-ttl-2")).await;
    assert_eq!(verdicts(&a), ["duplicate"], "{a}");
    quiet(Duration::from_millis(800)).await;
    assert_eq!(
        (delivered(&oscar, &k1), delivered(&oscar, &k2)),
        (1, 1),
        "no late redelivery"
    );

    // After the TTL the identity is forgotten, across a kill too.
    let left = Duration::from_secs(4).saturating_sub(delivered_at.elapsed());
    quiet(left + Duration::from_millis(300)).await;
    gw.restart().await;
    let (status, a) = gw.post(GOOD_TOKEN, put_event("k9-ttl-1")).await;
    assert_eq!(
        (status, verdicts(&a)),
        (202, vec!["accepted".to_string()]),
        "{a}"
    );
    assert!(eventually(Duration::from_secs(10), || delivered(&oscar, &k1) == 2).await);
}

/// A held record survives a kill -9 right after its 202 and is delivered after its grace, once —
/// also across a kill after the delivery; a clean copy preempting a held one after a kill leaves
/// exactly one delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_held_record_survives_and_clean_copy_preempts() {
    let tmp = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    let env = [("DEDUP_GATEWAY_POLICY__PENDING_GRACE", "1s")];
    let mut gw = Bin::start(tmp.path(), &oscar.url(), &env).await;
    let (status, a) = gw.post(GOOD_TOKEN, pending_event("k9-held-1", false)).await;
    assert_eq!(
        (status, verdicts(&a)),
        (202, vec!["held".to_string()]),
        "{a}"
    );
    let k1 = key_of(&a);
    gw.restart().await;
    assert!(
        oscar.received().is_empty(),
        "not delivered before its grace"
    );
    let (_, a) = gw.post(GOOD_TOKEN, pending_event("k9-held-1", false)).await;
    assert_eq!(verdicts(&a), ["duplicate"], "{a}");
    assert!(
        eventually(Duration::from_secs(10), || delivered(&oscar, &k1) == 1).await,
        "held record delivered after its grace"
    );
    assert!(recorded(&gw, &k1).await, "outcome on disk");
    gw.restart().await;

    let (_, a) = gw.post(GOOD_TOKEN, pending_event("k9-held-2", false)).await;
    assert_eq!(verdicts(&a), ["held"], "{a}");
    let k2 = key_of(&a);
    gw.restart().await;
    let (status, a) = gw.post(GOOD_TOKEN, pending_event("k9-held-2", true)).await;
    assert_eq!(status, 202, "{a}");
    assert_eq!(
        a["results"][0]["reason"], "clean-copy-preempted-held",
        "{a}"
    );
    assert!(eventually(Duration::from_secs(10), || delivered(&oscar, &k2) == 1).await);
    // Past the crash window (one group commit): a kill inside it may deliver once more.
    assert!(recorded(&gw, &k2).await);
    gw.restart().await;
    // Longer than the grace and the retry ceiling: the held copy must not come back.
    quiet(Duration::from_millis(1800)).await;
    assert_eq!(
        (delivered(&oscar, &k1), delivered(&oscar, &k2)),
        (1, 1),
        "no late redelivery"
    );
    let clean = oscar
        .accepted()
        .iter()
        .filter(|r| r.body.windows(9).any(|w| w == b"COMPLETED"))
        .count();
    assert_eq!(clean, 1, "the clean copy went");
    assert_eq!(metric_of(&gw, "dedup_gateway_spool_depth").await, 0.0);
}

/// Redis: an accepted and a held event undelivered at a kill -9 are delivered after the restart,
/// once each: their reservations outlived the process in Redis, and the restore must not take them
/// for another copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_spooled_events_survive_on_redis() {
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let tmp = tempfile::tempdir().unwrap();
    let env = redis_env(&redis);
    let mut gw = Bin::start(tmp.path(), &oscar.url(), &as_env(&env)).await;
    let (status, a) = post_until_2xx(&gw, put_event("k9-redis-accepted")).await;
    assert_eq!(
        (status, verdicts(&a)),
        (202, vec!["accepted".into()]),
        "{a}"
    );
    let ka = key_of(&a);
    let (status, a) = post_until_2xx(&gw, pending_event("k9-redis-held", false)).await;
    assert_eq!((status, verdicts(&a)), (202, vec!["held".into()]), "{a}");
    let kh = key_of(&a);
    gw.restart().await;
    assert!(oscar.accepted().is_empty());

    oscar.set_status(201);
    assert!(
        eventually(Duration::from_secs(15), || {
            delivered(&oscar, &ka) == 1 && delivered(&oscar, &kh) == 1
        })
        .await,
        "both acknowledged events delivered after the kill: {} delivered",
        oscar.accepted().len()
    );
    assert!(
        recorded(&gw, &ka).await && recorded(&gw, &kh).await,
        "outcomes on disk"
    );
    gw.restart().await;
    quiet(Duration::from_millis(1000)).await;
    assert_eq!(
        (delivered(&oscar, &ka), delivered(&oscar, &kh)),
        (1, 1),
        "each once"
    );
}

/// Redis: a held copy whose clean copy was refused by a full spool (503; `spool.max_entries = 1`
/// here, a fault switch in the graceful test) is attempted after its grace; undelivered at a
/// kill -9, it is delivered after the restart, once. (On Redis the clean copy is written before
/// it claims, so its refused write never touches the held copy's entry: the held copy claims its
/// own hold, and does not reserve anew as the graceful test's doc says.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_held_copy_that_reserved_anew_survives_on_redis() {
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let tmp = tempfile::tempdir().unwrap();
    let mut env = redis_env(&redis);
    env.push(("DEDUP_GATEWAY_SPOOL__MAX_ENTRIES", "1".into()));
    let mut gw = Bin::start(tmp.path(), &oscar.url(), &as_env(&env)).await;
    let (status, a) = post_until_2xx(&gw, pending_event("k9-reheld", false)).await;
    assert_eq!((status, verdicts(&a)), (202, vec!["held".into()]), "{a}");
    let k = key_of(&a);
    let (status, a) = gw.post(GOOD_TOKEN, pending_event("k9-reheld", true)).await;
    assert_eq!(
        status, 503,
        "the clean copy is refused by the full spool: {a}"
    );
    assert!(
        eventually(Duration::from_secs(15), || !oscar.received().is_empty()).await,
        "the held copy is attempted after its grace"
    );
    gw.restart().await;
    oscar.set_status(201);
    assert!(
        eventually(Duration::from_secs(15), || delivered(&oscar, &k) == 1).await,
        "the held copy is delivered after the kill"
    );
    assert!(recorded(&gw, &k).await, "outcome on disk");
    gw.restart().await;
    quiet(Duration::from_millis(1000)).await;
    assert_eq!(delivered(&oscar, &k), 1, "once");
    assert_eq!(metric_of(&gw, "dedup_gateway_spool_depth").await, 0.0);
}

/// Redis: an event accepted before a kill -9 is restored while Redis is down (delivered
/// unchecked); once Redis is back and OSCAR took it, a repeat is a `duplicate`, and no late
/// redelivery follows. (The kill -9 variant of
/// `redis::spool::event_restored_while_redis_is_down_is_committed_once_delivered`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_event_restored_while_redis_is_down_is_committed_once_delivered() {
    let mut redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let tmp = tempfile::tempdir().unwrap();
    let mut env = redis_env(&redis);
    env.push((
        "DEDUP_GATEWAY_DEDUP__REDIS__COMMAND_TIMEOUT",
        "300ms".into(),
    ));
    let mut gw = Bin::start(tmp.path(), &oscar.url(), &as_env(&env)).await;
    let (status, a) = post_until_2xx(&gw, put_event("k9-restore-down")).await;
    assert_eq!(status, 202, "{a}");
    let k = key_of(&a);
    gw.kill9();
    redis.stop();
    gw.restart().await;
    assert!(
        metric_of(&gw, "dedup_gateway_store_errors_total").await >= 1.0,
        "the restore met the store error"
    );
    redis.restart().await;
    oscar.set_status(201);
    assert!(
        eventually(Duration::from_secs(15), || delivered(&oscar, &k) == 1).await,
        "the restored event is delivered"
    );
    assert!(recorded(&gw, &k).await, "outcome on disk");
    let (status, a) = post_until_2xx(&gw, put_event("k9-restore-down")).await;
    assert_eq!(
        (status, verdicts(&a)),
        (200, vec!["duplicate".into()]),
        "{a}"
    );
    gw.restart().await;
    quiet(Duration::from_millis(1000)).await;
    assert_eq!(delivered(&oscar, &k), 1, "once");
}

/// Redis: five events accepted before a kill -9, restored while Redis does not answer (paused):
/// the restore asks the store once, and every event is delivered once when Redis answers again,
/// also across one more kill. (The kill -9 variant of
/// `redis::spool::restore_with_redis_down_asks_the_store_once`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_restore_with_redis_down_asks_the_store_once() {
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let tmp = tempfile::tempdir().unwrap();
    let mut env = redis_env(&redis);
    env.push(("DEDUP_GATEWAY_DEDUP__REDIS__COMMAND_TIMEOUT", "3s".into()));
    let mut gw = Bin::start(tmp.path(), &oscar.url(), &as_env(&env)).await;
    let mut keys = Vec::new();
    for i in 0..5 {
        let (status, a) = post_until_2xx(&gw, put_event(&format!("k9-down-{i}"))).await;
        assert_eq!(status, 202, "{a}");
        keys.push(key_of(&a));
    }
    gw.kill9();
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "60000", "WRITE"]), "OK");
    gw.restart().await;
    assert_eq!(
        metric_of(&gw, "dedup_gateway_store_errors_total").await,
        1.0,
        "the restore asked the failing store once"
    );
    assert_eq!(redis.cli(&["CLIENT", "UNPAUSE"]), "OK");
    oscar.set_status(201);
    assert!(
        eventually(Duration::from_secs(20), || keys
            .iter()
            .all(|k| delivered(&oscar, k) == 1))
        .await,
        "{} of 5 delivered once Redis answers",
        oscar.accepted().len()
    );
    for k in &keys {
        assert!(recorded(&gw, k).await, "outcome on disk");
    }
    gw.restart().await;
    quiet(Duration::from_millis(1000)).await;
    let counts: Vec<usize> = keys.iter().map(|k| delivered(&oscar, k)).collect();
    assert_eq!(counts, [1; 5], "each once");
}
