//! The dead-letter queue: a permanent failure (404, 401, 403) is tried once and dead-lettered;
//! `/admin/dlq` lists (token redacted, paged), replays (one entry or all, each delivered once)
//! and deletes entries; an entry this version cannot decode does not hide the rest.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

/// 404 and 401 are permanent: one attempt, then the dead-letter queue (listed without the token);
/// once OSCAR is fixed, a replay delivers each exactly once and empties the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_go_to_the_dlq_and_replay_once() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), None).await;
    assert_eq!(
        gw.status_of("/admin/dlq").await,
        401,
        "admin needs the token"
    );
    let id404 = dead_letter_a_404_and_a_401(&gw, &oscar).await;

    // Fix OSCAR for the 404 one and replay it alone.
    oscar.require_token(false);
    let replay_one = format!("/admin/dlq/{id404}/replay");
    let (s, text) = gw.admin(Method::POST, &replay_one).await;
    assert_eq!(s, 202, "{text}");
    wait_for("replayed delivery", Duration::from_secs(10), || {
        oscar.accepted().len() == 1
    })
    .await;
    let (s, _) = gw.admin(Method::POST, &replay_one).await;
    assert_eq!(s, 404, "the entry is gone from the queue");
    // The rest: replay all.
    let (s, text) = gw.admin(Method::POST, "/admin/dlq/replay").await;
    assert_eq!(s, 200, "{text}");
    let counts: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(counts["replayed"], 1, "{counts}");
    wait_for("both delivered", Duration::from_secs(10), || {
        oscar.accepted().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = deliveries(&oscar);
    assert_eq!(d.len(), 2);
    assert!(d.values().all(|n| *n == 1), "{d:?}");
    // The replay carries the original Authorization header.
    assert!(
        oscar
            .accepted()
            .iter()
            .any(|r| r.headers["authorization"] == GOOD_TOKEN)
    );
    let (_, text) = gw.admin(Method::GET, "/admin/dlq").await;
    let listing: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listing["total"], 0, "{listing}");
    delete_a_new_dead_letter(&gw, &oscar).await;
    gw.stop().await;
}

/// OSCAR answers 404 to one event and 401 (a wrong token) to another: each is tried once and
/// dead-lettered, listed in order with its attempt and the token redacted, one per page when
/// paged. Returns the 404 entry's id; OSCAR is left answering 201 but requiring the good token.
async fn dead_letter_a_404_and_a_401(gw: &SpoolGw, oscar: &FakeOscar) -> u64 {
    oscar.set_status(404);
    gw.post_event(put_event("dlq-404")).await.assert_status(202);
    wait_for("404 dead-lettered", Duration::from_secs(10), || {
        oscar.received().len() == 1
    })
    .await;
    oscar.set_status(201);
    oscar.require_token(true);
    // A wrong token is refused with 401 by the fake: permanent too.
    gw.post_as("Bearer wrong-token-0123456789", put_event("dlq-401"))
        .await
        .assert_status(202);
    wait_for("401 attempt", Duration::from_secs(10), || {
        oscar.received().len() == 2
    })
    .await;
    let listing = retry(
        100,
        Duration::from_millis(50),
        async || {
            let (s, text) = gw.admin(Method::GET, "/admin/dlq?limit=10").await;
            assert_eq!(s, 200, "{text}");
            for token in [&GOOD_TOKEN[7..], "wrong-token-0123456789"] {
                assert!(!text.contains(token), "no token is ever listed: {text}");
            }
            serde_json::from_str::<Value>(&text).unwrap()
        },
        |l| l["total"] == 2,
    )
    .await;
    assert_eq!(listing["total"], 2, "{listing}");
    let entries = listing["entries"].as_array().unwrap();
    assert_eq!(
        entries[0]["attempts"].as_array().unwrap().len(),
        1,
        "one attempt only: {listing}"
    );
    assert_eq!(entries[0]["attempts"][0]["status"], 404);
    assert_eq!(entries[1]["attempts"][0]["status"], 401);
    assert_eq!(entries[0]["headers"]["authorization"], "[redacted]");
    // Paging: one per page.
    let page = gw.admin_get("/admin/dlq?limit=1").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    let next = page["next"].as_u64().unwrap();
    let page2 = gw
        .admin_get(&format!("/admin/dlq?limit=1&after={next}"))
        .await;
    assert_eq!(page2["entries"][0]["id"], entries[1]["id"]);
    entries[0]["id"].as_u64().unwrap()
}

/// A new dead letter (OSCAR 403) is deleted with `DELETE /admin/dlq/{id}`, once.
async fn delete_a_new_dead_letter(gw: &SpoolGw, oscar: &FakeOscar) {
    oscar.set_status(403);
    gw.post_event(put_event("dlq-403")).await;
    let first_id = retry(
        200,
        Duration::from_millis(25),
        async || {
            let (_, text) = gw.admin(Method::GET, "/admin/dlq").await;
            let l: Value = serde_json::from_str(&text).unwrap();
            l["entries"][0]["id"].as_u64()
        },
        Option::is_some,
    )
    .await;
    let entry = format!("/admin/dlq/{}", first_id.expect("403 dead-lettered"));
    assert_eq!(gw.admin(Method::DELETE, &entry).await.0, 204);
    assert_eq!(gw.admin(Method::DELETE, &entry).await.0, 404);
}

/// A dead-letter entry this version cannot decode is skipped in a listing, but must not end the
/// paging: the entries after it are still listed (via `next`) and replayed by `replay all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_dlq_entry_does_not_hide_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    oscar.set_status(404);
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), None).await;
    for i in 0..3 {
        gw.post_event(put_event(&format!("dlq-page-{i}")))
            .await
            .assert_status(202);
    }
    assert!(
        gw.metric_until("dedup_gateway_dlq_entries", |v| v == 3.0)
            .await,
        "three dead-lettered"
    );
    gw.stop().await;
    damage_first_dlq_entry(dir.path());
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), None).await;
    let mut listed = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let page = gw.admin_get(&format!("/admin/dlq?limit=2{after}")).await;
        listed.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].clone()),
        );
        match page["next"].as_u64() {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    assert_eq!(listed.len(), 2, "both decodable entries listed: {listed:?}");
    oscar.set_status(201);
    let (s, text) = gw.admin(Method::POST, "/admin/dlq/replay").await;
    assert_eq!(s, 200, "{text}");
    let counts: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(counts["replayed"], 2, "{counts}");
    gw.stop().await;
}

/// Overwrites the first dead-letter record in the stopped gateway's spool with bytes no version
/// decodes, as a newer version's record or a bad sector would look.
fn damage_first_dlq_entry(dir: &std::path::Path) {
    const DLQ: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("dlq");
    let db = redb::Database::open(dir.join("spool.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(DLQ).unwrap();
        let first = redb::ReadableTable::first(&t).unwrap().unwrap().0.value();
        t.insert(first, &b"\x09garbage"[..]).unwrap();
    }
    txn.commit().unwrap();
}
