//! `/admin/verdicts`: the decisions recorded for an identity, found by dedup key or by
//! bucket/object/version, with their times and attempts; guarded by the admin token. (The
//! dead-letter routes are in `dlq`.)

use std::time::Duration;

use dedup_gateway::config::Mode;
use serde_json::Value;

use crate::helpers::*;

/// `GET /admin/verdicts?query` with `token` as bearer; status and JSON answer.
async fn lookup(gw: &TestGateway, token: Option<&str>, query: &[(&str, &str)]) -> (u16, Value) {
    let mut req = gw.client.get(gw.url("/admin/verdicts")).query(query);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// Looks `key` up (at most 100 times, 20 ms apart) until two decisions are recorded; every
/// answer must be 200. Returns the last answer.
async fn two_decisions(gw: &TestGateway, key: &str) -> Value {
    retry(
        100,
        Duration::from_millis(20),
        async || {
            let (status, v) = lookup(gw, Some(ADMIN), &[("key", key)]).await;
            assert_eq!(status, 200, "{v}");
            v
        },
        |v| v["decisions"].as_array().is_some_and(|d| d.len() == 2),
    )
    .await
}

/// The verdict of each decision, in order.
fn decision_verdicts(v: &Value) -> Vec<&str> {
    v["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| d["verdict"].as_str().unwrap())
        .collect()
}

/// Decisions are found by dedup key and by bucket/object/version, with times and attempts;
/// the endpoint needs the admin token and validates its query.
#[tokio::test]
async fn verdict_lookup_by_key_and_by_object_version() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(admin_config(&oscar.url(), ADMIN)).await;
    let body = fixture("put-versioned.json");
    let key = gw.post_event(body.clone()).await.key();
    gw.post_event(body).await;
    gw.post_event(fixture("delete-noop.json")).await;

    let (status, v) = lookup(&gw, Some(ADMIN), &[("key", &key)]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(decision_verdicts(&v), ["forwarded", "duplicate"], "{v}");
    let d = v["decisions"].as_array().unwrap();
    assert_eq!(d[0]["reason"], "delivered");
    assert_eq!(d[0]["service"], "svc");
    assert_eq!(d[0]["event"], "s3:ObjectCreated:Put");
    assert_eq!(d[0]["attempts"], 1);
    assert!(
        d[0]["delivered_at"].is_string() && d[1]["delivered_at"].is_null(),
        "{v}"
    );
    assert_eq!(d[1]["reason"], "already-delivered");
    assert!(
        v["first_seen"].is_string() && v["delivered_at"].is_string(),
        "{v}"
    );

    let field = |name: &str| d[0][name].as_str().unwrap().to_string();
    let (bucket, object, version) = (field("bucket"), field("object"), field("version"));
    assert_eq!(
        object, "input/batch-0042/sample-001.csv",
        "the decoded object key"
    );
    for (version, decisions) in [(version.as_str(), 2), ("other", 0)] {
        let (status, v) = lookup(
            &gw,
            Some(ADMIN),
            &[
                ("bucket", &bucket),
                ("object", &object),
                ("version", version),
            ],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(v["decisions"].as_array().unwrap().len(), decisions, "{v}");
    }

    check_refusals(&gw, &key, &bucket).await;
    gw.stop().await;

    let plain = TestGateway::start(test_config(&oscar.url())).await;
    assert_eq!(
        lookup(&plain, Some(ADMIN), &[("key", &key)]).await.0,
        404,
        "admin disabled"
    );
    plain.stop().await;
}

/// The lookup needs the admin token (401 without it or with a wrong one) and a valid query (400
/// for a malformed key, a bucket alone, nothing); an unknown key is 200 with no decisions.
async fn check_refusals(gw: &TestGateway, key: &str, bucket: &str) {
    for (token, query, want) in [
        (None, &[("key", key)][..], 401),
        (Some("wrong-token-wrong-token"), &[("key", key)], 401),
        (Some(ADMIN), &[("key", "xyz")], 400),
        (Some(ADMIN), &[("bucket", bucket)], 400),
        (Some(ADMIN), &[], 400),
    ] {
        let status = lookup(gw, token, query).await.0;
        assert_eq!(status, want, "{token:?} {query:?}");
    }
    let (status, v) = lookup(gw, Some(ADMIN), &[("key", &"0".repeat(32))]).await;
    assert_eq!(status, 200);
    assert!(v["decisions"].as_array().unwrap().is_empty());
}

/// A held PENDING copy delivered after its grace shows both decisions: `held`, then `forwarded`
/// with its delivery time, found by key and by object.
#[tokio::test]
async fn verdict_lookup_shows_a_held_copy_delivered_later() {
    let oscar = FakeOscar::start().await;
    let mut cfg = admin_config(&oscar.url(), ADMIN);
    cfg.policy.pending_grace = Duration::from_millis(150);
    let gw = TestGateway::start(cfg).await;
    let p = gw
        .post_event(fixture("complete-multipart-upload.json"))
        .await;
    p.assert_verdicts(&["held"]);
    assert!(eventually(Duration::from_secs(5), || oscar.received().len() == 1).await);
    let found = two_decisions(&gw, &p.key()).await;
    assert_eq!(decision_verdicts(&found), ["held", "forwarded"], "{found}");
    let d = &found["decisions"];
    assert_eq!(d[1]["reason"], "held-grace-elapsed");
    assert_eq!(d[1]["attempts"], 1);
    assert!(d[1]["delivered_at"].is_string() && found["delivered_at"].is_string());
    let (_, v) = lookup(
        &gw,
        Some(ADMIN),
        &[
            ("bucket", "intermediate"),
            ("object", "input/run-20/big-archive.tar.gz"),
        ],
    )
    .await;
    assert_eq!(v["decisions"].as_array().unwrap().len(), 2, "{v}");
    gw.stop().await;
}

/// In spool mode (the default) the lookup shows the `accepted` decision and, once a worker has
/// delivered the event, when OSCAR took it and after how many attempts.
#[tokio::test]
async fn verdict_lookup_in_spool_mode_shows_the_delivery() {
    let oscar = FakeOscar::start().await;
    let mut cfg = admin_config(&oscar.url(), ADMIN);
    cfg.mode = Mode::Spool;
    let gw = TestGateway::start(cfg).await;
    let first = gw.post_event(fixture("put-versioned.json")).await;
    first.assert_status(202);
    assert!(eventually(Duration::from_secs(10), || oscar.accepted().len() == 1).await);
    let last = two_decisions(&gw, &first.key()).await;
    assert_eq!(
        decision_verdicts(&last),
        ["accepted", "forwarded"],
        "{last}"
    );
    let d = &last["decisions"];
    assert_eq!(d[1]["reason"], "spooled-delivered");
    assert_eq!(d[1]["attempts"], 1);
    assert!(d[1]["delivered_at"].is_string(), "{last}");
    assert!(last["delivered_at"].is_string(), "{last}");
    gw.stop().await;
}
