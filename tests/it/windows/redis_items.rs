//! Issue 13 on the Redis store, whose entries outlive a gateway process: items 4 (orphan
//! reservations after a crash in DLQ replay or dead-lettering), 5 (old-format records restored
//! twice), 10 (sync mode: a marked copy meeting a dead replica's hold) and 11 (sync mode:
//! fail-open never marks the event delivered).

use std::time::Duration;

use serde_json::Value;

use super::{delivered, key_of, quiet};
use crate::{
    crash::{Bin, post_to},
    hardening::GateOscar,
    helpers::*,
    redis::server::RedisServer,
    spool::{pending_event, put_event},
};

const SECRET: &str = "replicas-share-this-secret-0123456789";

/// The binary's settings for `redis` (spool mode unless `extra` says otherwise).
fn env_for(redis: &RedisServer, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = vec![
        ("DEDUP_GATEWAY_DEDUP__BACKEND", "redis".into()),
        ("DEDUP_GATEWAY_DEDUP__REDIS__URL", redis.url()),
        ("DEDUP_GATEWAY_DEDUP__REDIS__KEY_PREFIX", "it:".into()),
        ("DEDUP_GATEWAY_DEDUP__HASH_SECRET", SECRET.into()),
    ];
    v.extend(extra.iter().map(|(k, s)| (*k, s.to_string())));
    v
}

async fn bin_on(dir: &std::path::Path, upstream: &str, env: &[(&'static str, String)]) -> Bin {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Bin::start(dir, upstream, &env).await
}

/// Posts until a 2xx (the store connects lazily); at most 100 tries.
async fn post_until_2xx(gw: &Bin, body: Vec<u8>) -> (u16, Value) {
    for _ in 0..100 {
        let (status, a) = gw.post(GOOD_TOKEN, body.clone()).await;
        if (200..300).contains(&status) {
            return (status, a);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never acknowledged");
}

/// The id of the only dead-letter entry, once there is one (bounded wait).
async fn only_dlq_id(gw: &Bin) -> u64 {
    for _ in 0..100 {
        if let [e] = gw.dlq().await.as_slice() {
            return e["id"].as_u64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no dead-letter entry");
}

/// Item 4 (replay): `replay_dlq` reserves the identity in Redis before it writes the revived
/// record; a kill -9 in between (here: while the write waits in a 3 s group-commit delay) leaves a
/// reservation that no record names, for the whole retry horizon. Shows: after the restart the
/// replay of the entry is refused (409, "being delivered") and the event is never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item4_kill_during_dlq_replay_leaves_no_orphan_reservation() {
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(404);
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = bin_on(tmp.path(), &oscar.url(), &env_for(&redis, &[])).await;
    let (_, a) = post_until_2xx(&gw, put_event("i4-replay")).await;
    let k = key_of(&a);
    let id = only_dlq_id(&gw).await;
    oscar.set_status(201);
    gw.set_env("DEDUP_GATEWAY_SPOOL__GROUP_COMMIT_DELAY", "3s");
    gw.restart().await;
    let replay = {
        let (client, url) = (
            gw.client.clone(),
            gw.url(&format!("/admin/dlq/{id}/replay")),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .header("authorization", format!("Bearer {}", crate::crash::ADMIN))
                .send()
                .await
        })
    };
    quiet(Duration::from_millis(800)).await;
    assert!(!replay.is_finished(), "the revive write is pending");
    gw.kill9();
    let _ = replay.await;
    gw.set_env("DEDUP_GATEWAY_SPOOL__GROUP_COMMIT_DELAY", "0s");
    gw.restart().await;
    let (status, v) = gw
        .admin(reqwest::Method::POST, &format!("/admin/dlq/{id}/replay"))
        .await;
    let ok = eventually(Duration::from_secs(5), || delivered(&oscar, &k) == 1).await;
    assert!(
        (200..300).contains(&status) && ok,
        "the replay after the kill is refused ({status} {v}) by a reservation no record names"
    );
}

/// Item 4 (dead-letter): dead-lettering writes the DLQ entry, then releases the reservation; a
/// kill -9 in between (here: the release is held up by `CLIENT PAUSE WRITE` on Redis) leaves the
/// reservation standing for the retry horizon with no record naming it. Shows: after the restart
/// the replay of the entry is refused (409) and the event is never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item4_kill_during_dead_lettering_leaves_no_orphan_reservation() {
    let redis = RedisServer::start().await;
    let gate = GateOscar::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = bin_on(tmp.path(), &gate.url(), &env_for(&redis, &[])).await;
    let (_, a) = post_until_2xx(&gw, put_event("i4-dead")).await;
    let k = key_of(&a);
    assert!(eventually(Duration::from_secs(5), || gate.arrived() == 1).await);
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "2000", "WRITE"]), "OK");
    gate.set_status(404);
    gate.open_one();
    // The DLQ write reaches the disk; the release waits for Redis.
    quiet(Duration::from_millis(600)).await;
    gw.kill9();
    redis.cli(&["CLIENT", "UNPAUSE"]);
    gate.set_status(201);
    gate.open();
    gw.restart().await;
    let id = only_dlq_id(&gw).await;
    let (status, v) = gw
        .admin(reqwest::Method::POST, &format!("/admin/dlq/{id}/replay"))
        .await;
    let ok = eventually(Duration::from_secs(5), || gate.answered().contains(&201)).await;
    assert!(
        (200..300).contains(&status) && ok,
        "the replay of {k} after the kill is refused ({status} {v}) by a reservation no record names"
    );
}

/// Item 5: a record of an older version (owner token 0) gets a fresh token at restore, which is
/// reserved (here: held, its grace still running) before it is written to disk; a second restart
/// before the worker writes it finds that entry, takes it for another copy and removes the record.
/// Shows: the acknowledged held record is gone after two restarts and never delivered. (Graceful
/// stops suffice; a kill -9 does the same.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item5_old_format_record_survives_two_restarts() {
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut gw = bin_on(tmp.path(), &oscar.url(), &env_for(&redis, &[])).await;
    let (status, a) = post_until_2xx(&gw, pending_event("i5", false)).await;
    assert_eq!(
        (status, verdicts(&a)),
        (202, vec!["held".to_string()]),
        "{a}"
    );
    let k = key_of(&a);
    assert!(gw.terminate(Duration::from_secs(10)).await);
    // Make it an old-format record (no owner) whose grace ends in 3 s, and forget its hold, as
    // a store that never saw this version's token would.
    rewrite_as_old_format(&tmp.path().join("spool.redb"), 3_000);
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    gw.restart().await;
    assert!(gw.terminate(Duration::from_secs(10)).await);
    gw.restart().await;
    let ok = eventually(Duration::from_secs(8), || delivered(&oscar, &k) == 1).await;
    assert!(
        ok,
        "the old-format held record was removed by the second restart"
    );
}

/// Sets owner 0 and `not_before` = now + `in_ms` on every spooled record, and writes them back
/// the way a version before the journal kept them: as rows of the database's `events` table
/// (which the start moves into the journal, superseding the journal's own copy).
fn rewrite_as_old_format(path: &std::path::Path, in_ms: u64) {
    const EVENTS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");
    let entries = dedup_gateway::spool::stored_events(path).unwrap();
    assert_eq!(entries.len(), 1);
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(EVENTS).unwrap();
        for (id, mut e) in entries {
            e.owner = 0;
            e.not_before_ms = dedup_gateway::spool::unix_ms() + in_ms;
            t.insert(id, e.encode().as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// Item 10: sync mode on Redis. Replica A holds a marked copy (200 `held`; the hold lives in A's
/// memory, its entry in Redis) and dies (kill -9). Replica B gets the next marked copy and meets
/// A's held entry: answered `duplicate`, and nobody delivers the event — A's hold died with A.
/// Shows: long after A's hold lease ended, OSCAR has received nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item10_marked_copy_meeting_a_dead_replicas_hold_is_delivered() {
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    let tmp_a = tempfile::tempdir().unwrap();
    let tmp_b = tempfile::tempdir().unwrap();
    let env = env_for(
        &redis,
        &[
            ("DEDUP_GATEWAY_MODE", "sync"),
            ("DEDUP_GATEWAY_POLICY__PENDING_GRACE", "500ms"),
            ("DEDUP_GATEWAY_DELIVERY__REQUEST_TIMEOUT", "1s"),
            ("DEDUP_GATEWAY_DEDUP__LEASE", "2s"),
        ],
    );
    let mut a = bin_on(tmp_a.path(), &oscar.url(), &env).await;
    let b = bin_on(tmp_b.path(), &oscar.url(), &env).await;
    let (status, ans) = post_until_2xx(&a, pending_event("i10", false)).await;
    assert_eq!(
        (status, verdicts(&ans)),
        (200, vec!["held".to_string()]),
        "{ans}"
    );
    let k = key_of(&ans);
    a.kill9();
    let (status, ans) = post_until_2xx(&b, pending_event("i10", false)).await;
    println!("item 10: replica B answered {status} {ans}");
    // A's hold lease is grace + lease = 2.5 s; wait well past it.
    let ok = eventually(Duration::from_secs(6), || delivered(&oscar, &k) == 1).await;
    assert!(ok, "acknowledged twice ({ans}), delivered never");
}

/// Item 11: sync mode, fail-open. A copy forwarded unchecked while Redis is down is never marked
/// delivered — not even when Redis answers again before OSCAR does — so the next copy is
/// forwarded again. Shows: the identity reaches OSCAR twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item11_fail_open_delivery_is_marked_delivered() {
    let mut redis = RedisServer::start().await;
    let gate = GateOscar::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = env_for(
        &redis,
        &[
            ("DEDUP_GATEWAY_MODE", "sync"),
            ("DEDUP_GATEWAY_DEDUP__ON_STORE_ERROR", "fail-open"),
            ("DEDUP_GATEWAY_DEDUP__REDIS__COMMAND_TIMEOUT", "200ms"),
            ("DEDUP_GATEWAY_DEDUP__REDIS__CONNECT_TIMEOUT", "200ms"),
        ],
    );
    let gw = bin_on(tmp.path(), &gate.url(), &env).await;
    redis.stop();
    let first = {
        let (client, port) = (gw.client.clone(), gw.port);
        tokio::spawn(async move { post_to(&client, port, GOOD_TOKEN, put_event("i11")).await })
    };
    assert!(
        eventually(Duration::from_secs(5), || gate.arrived() == 1).await,
        "forwarded unchecked"
    );
    redis.restart().await;
    let ready = async {
        for _ in 0..100 {
            let r = gw.client.get(gw.url("/readyz")).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return true;
            }
            quiet(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(ready.await, "Redis answers again");
    gate.open();
    let (status, a) = first.await.unwrap().unwrap();
    assert_eq!(
        (status, a["results"][0]["reason"].as_str()),
        (200, Some("fail-open-unchecked")),
        "{a}"
    );
    let (_, copy) = gw.post(GOOD_TOKEN, put_event("i11")).await;
    quiet(Duration::from_millis(200)).await;
    assert_eq!(gate.arrived(), 1, "the copy ({copy}) was forwarded again");
}

/// Spool mode, fail-open: an event restored after a kill -9 while Redis is down is delivered
/// unchecked (counted), not held until Redis answers. Before the fix the restored item's renewal
/// before the send failed on the down store and the event waited, against `on_store_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_delivers_an_event_restored_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let tmp = tempfile::tempdir().unwrap();
    let env = env_for(
        &redis,
        &[
            ("DEDUP_GATEWAY_DEDUP__ON_STORE_ERROR", "fail-open"),
            ("DEDUP_GATEWAY_DEDUP__REDIS__COMMAND_TIMEOUT", "200ms"),
            ("DEDUP_GATEWAY_DEDUP__REDIS__CONNECT_TIMEOUT", "200ms"),
            ("DEDUP_GATEWAY_DELIVERY__RETRY_INITIAL", "100ms"),
            ("DEDUP_GATEWAY_DELIVERY__RETRY_MAX", "200ms"),
        ],
    );
    let mut gw = bin_on(tmp.path(), &oscar.url(), &env).await;
    let (status, ans) = post_until_2xx(&gw, put_event("fo-restored")).await;
    assert_eq!(status, 202, "{ans}");
    let k = key_of(&ans);
    assert!(
        eventually(Duration::from_secs(5), || oscar.arrivals() >= 1).await,
        "tried once against the 503"
    );
    gw.kill9();
    redis.stop();
    oscar.set_status(201);
    gw.restart().await;
    let ok = eventually(Duration::from_secs(8), || delivered(&oscar, &k) == 1).await;
    assert!(
        ok,
        "the restored event waited for the down store despite fail-open"
    );
    let forwards = super::metric_of(&gw, "dedup_gateway_fail_open_forwards_total").await;
    assert!(forwards >= 1.0, "fail-open forwards counted: {forwards}");
    quiet(Duration::from_millis(500)).await;
    assert_eq!(delivered(&oscar, &k), 1, "delivered more than once");
}
