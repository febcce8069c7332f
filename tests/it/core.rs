//! Issue 2: the gateway end to end in sync mode.

use std::{sync::Arc, time::Duration};

use dedup_gateway::config::PendingPolicy;
use serde_json::Value;

use crate::helpers::*;

const TOKEN: &str = GOOD_TOKEN;

/// The verdict each shared fixture gets from a fresh identity under the default policy.
const EXPECTED: &[(&str, &[&str])] = &[
    ("complete-multipart-upload.json", &["held"]),
    ("delete-marker-created.json", &["forwarded"]),
    ("delete-noop.json", &["ignored"]),
    ("delete-unversioned.json", &["forwarded"]),
    ("delete-version.json", &["forwarded"]),
    ("put-key-special-chars.json", &["forwarded"]),
    ("put-replication-pending.json", &["held"]),
    ("put-source-replicated-bucket.json", &["forwarded"]),
    ("put-unversioned.json", &["forwarded"]),
    ("put-versioned.json", &["forwarded"]),
    ("replica-put.json", &["forwarded"]),
    ("replication-completed-no-metadata.json", &["forwarded"]),
    ("replication-completed-status-pending.json", &["held"]),
    ("replication-completed.json", &["forwarded"]),
    ("replication-failed.json", &["replication-failed"]),
    ("rustfs-put-replicated-bucket.json", &["held"]),
    (
        "rustfs-replication-completed-stale-pending.json",
        &["forwarded"],
    ),
    ("rustfs-replication-failed.json", &["replication-failed"]),
    (
        "synthetic-multi-record.json",
        &["forwarded", "replication-failed"],
    ),
];

/// Every fixture in the shared directory is covered, and gets its verdict; each runs under its own
/// service so identities never meet.
#[tokio::test]
async fn every_fixture_gets_its_verdict() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        EXPECTED.len(),
        "a fixture has no expected verdict"
    );
    for (i, name) in names.iter().enumerate() {
        let expected = EXPECTED
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .expect(name);
        let (status, answer) = gw
            .post(&format!("svc-{i}"), Some(TOKEN), fixture(name))
            .await;
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(verdicts(&answer), expected, "{name}: {answer}");
        for r in answer["results"].as_array().unwrap() {
            assert!(r["reason"].is_string(), "{name}: every result has a reason");
        }
    }
    let forwarded: usize = EXPECTED
        .iter()
        .flat_map(|(_, v)| v.iter())
        .filter(|v| **v == "forwarded")
        .count();
    assert_eq!(oscar.received().len(), forwarded);
    gw.stop().await;
}

/// 100 concurrent POSTs of one event: exactly one reaches OSCAR, all get 2xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_copies_forward_once() {
    let oscar = FakeOscar::start().await;
    oscar.set_delay(Duration::from_millis(100));
    let gw = std::sync::Arc::new(TestGateway::start(test_config(&oscar.url())).await);
    let body = fixture("put-versioned.json");
    let copies = (0..100).map(|_| body.clone());
    let forwarded = post_concurrently(&gw, copies).await;
    assert_eq!(forwarded, 1);
    assert_eq!(oscar.received().len(), 1);
}

/// Connections spread over three single-threaded runtimes (as the binary runs): 40 events, each
/// POSTed 5 times at once over many connections, reach OSCAR exactly once each, and every
/// forwarded answer comes from a delivery OSCAR saw.
#[tokio::test]
async fn connections_on_several_workers_forward_each_event_once() {
    let oscar = FakeOscar::start().await;
    oscar.set_delay(Duration::from_millis(20));
    let gw = std::sync::Arc::new(TestGateway::start_on_workers(test_config(&oscar.url()), 3).await);
    let body = String::from_utf8(fixture("put-versioned.json")).unwrap();
    let version = "\"versionId\":\"";
    assert!(body.contains(version), "fixture has a versionId");
    let copies = (0..40).flat_map(|event| {
        let body = body.replacen(version, &format!("{version}w{event}-"), 1);
        std::iter::repeat_n(body.into_bytes(), 5)
    });
    let forwarded = post_concurrently(&gw, copies).await;
    assert_eq!(forwarded, 40);
    let received = oscar.received();
    assert_eq!(received.len(), 40);
    let distinct: std::collections::HashSet<_> = received.iter().map(|r| r.body.clone()).collect();
    assert_eq!(distinct.len(), 40, "each event once");
}

/// POSTs every body at once to `svc`; each must get 200 with `forwarded` or `duplicate`.
/// Returns how many were `forwarded`.
async fn post_concurrently(
    gw: &std::sync::Arc<TestGateway>,
    bodies: impl Iterator<Item = Vec<u8>>,
) -> usize {
    let tasks: Vec<_> = bodies
        .map(|body| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.post("svc", Some(TOKEN), body).await })
        })
        .collect();
    let mut forwarded = 0;
    for t in tasks {
        let (status, answer) = t.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        match verdicts(&answer)[0].as_str() {
            "forwarded" => forwarded += 1,
            "duplicate" => {}
            other => panic!("unexpected verdict {other}"),
        }
    }
    forwarded
}

fn with_event_name(body: &[u8], from: &str, to: &str) -> Vec<u8> {
    String::from_utf8(body.to_vec())
        .unwrap()
        .replace(from, to)
        .into_bytes()
}

/// A Put and the completed replication of one version are one trigger; a delete of that version is
/// another; the same event to two services triggers each once.
#[tokio::test]
async fn identity_classes_and_services() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let put = fixture("replica-put.json");
    let completed = fixture("replication-completed.json");
    let delete = with_event_name(
        &completed,
        "s3:Replication:OperationCompletedReplication",
        "s3:ObjectRemoved:Delete",
    );
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), put.clone()).await.1),
        ["forwarded"]
    );
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), completed.clone()).await.1),
        ["duplicate"]
    );
    assert_eq!(oscar.received().len(), 1);
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), delete.clone()).await.1),
        ["forwarded"]
    );
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), delete).await.1),
        ["duplicate"]
    );
    assert_eq!(oscar.received().len(), 2);
    assert_eq!(
        verdicts(&gw.post("other", Some(TOKEN), completed).await.1),
        ["forwarded"]
    );
    let services: Vec<String> = oscar.received().iter().map(|r| r.service.clone()).collect();
    assert_eq!(services, ["svc", "svc", "other"]);
    gw.stop().await;
}

/// A held PENDING copy followed by a clean copy within the grace: the clean copy is forwarded at
/// once and is the only one forwarded.
#[tokio::test]
async fn pending_then_clean_copy_forwards_the_clean_one_at_once() {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.policy.pending_grace = Duration::from_millis(800);
    let gw = TestGateway::start(cfg).await;
    let held = fixture("rustfs-put-replicated-bucket.json");
    let clean = fixture("rustfs-replication-completed-stale-pending.json");
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), held.clone()).await.1),
        ["held"]
    );
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), held).await.1),
        ["duplicate"]
    );
    let (status, answer) = gw.post("svc", Some(TOKEN), clean.clone()).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["forwarded".to_string()])
    );
    // Forwarded within the request, not after the grace.
    assert_eq!(oscar.received().len(), 1);
    assert_eq!(oscar.received()[0].body, clean);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(oscar.received().len(), 1, "the held copy must be dropped");
    gw.stop().await;
}

/// A lone PENDING copy is forwarded once, and not before the grace ends.
#[tokio::test]
async fn lone_pending_copy_is_forwarded_after_the_grace() {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.policy.pending_grace = Duration::from_millis(700);
    let gw = TestGateway::start(cfg).await;
    let body = fixture("complete-multipart-upload.json");
    let sent = tokio::time::Instant::now();
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), body.clone()).await.1),
        ["held"]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(oscar.received().is_empty(), "forwarded before the grace");
    assert!(eventually(Duration::from_secs(5), || oscar.received().len() == 1).await);
    assert!(sent.elapsed() >= Duration::from_millis(700));
    assert_eq!(oscar.received()[0].body, body);
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), body).await.1),
        ["duplicate"]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}

/// `policy.pending = "drop"`: a marked record is never forwarded.
#[tokio::test]
async fn pending_drop_never_forwards() {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.policy.pending = PendingPolicy::Drop;
    cfg.policy.pending_grace = Duration::from_millis(200);
    let gw = TestGateway::start(cfg).await;
    let (status, answer) = gw
        .post("svc", Some(TOKEN), fixture("put-replication-pending.json"))
        .await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["pending".to_string()])
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(oscar.received().is_empty());
    gw.stop().await;
}

/// The RustFS completed event with a stale public PENDING is forwarded at once (internal status wins).
#[tokio::test]
async fn stale_public_pending_is_forwarded_at_once() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let body = fixture("rustfs-replication-completed-stale-pending.json");
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), body).await.1),
        ["forwarded"]
    );
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}

/// A failed replication then the completed one of the same version: exactly one forward.
#[tokio::test]
async fn failed_then_completed_replication_forwards_once() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let failed = fixture("replication-failed.json");
    let completed = String::from_utf8(failed.clone())
        .unwrap()
        .replace(
            "OperationFailedReplication",
            "OperationCompletedReplication",
        )
        .replace("\"FAILED\"", "\"COMPLETED\"");
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), failed.clone()).await.1),
        ["replication-failed"]
    );
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), failed).await.1),
        ["replication-failed"]
    );
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), completed.clone()).await.1),
        ["forwarded"]
    );
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), completed).await.1),
        ["duplicate"]
    );
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}

/// The forwarded request is MinIO's: same body bytes, same Authorization, JSON, plus X-Dedup-Key.
#[tokio::test]
async fn forwarded_request_is_byte_for_byte() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let body = fixture("put-key-special-chars.json");
    let (_, answer) = gw.post("my-service", Some(TOKEN), body.clone()).await;
    let got = &oscar.received()[0];
    assert_eq!(got.service, "my-service");
    assert_eq!(got.body, body);
    assert_eq!(got.headers["authorization"], TOKEN);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(
        got.headers["x-dedup-key"].to_str().unwrap(),
        answer["results"][0]["key"].as_str().unwrap()
    );
    gw.stop().await;
}

/// A multi-record body is split: each record is forwarded alone in MinIO's top-level shape.
#[tokio::test]
async fn multi_record_body_is_split() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let (status, answer) = gw
        .post("svc", Some(TOKEN), fixture("synthetic-multi-record.json"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(verdicts(&answer), ["forwarded", "replication-failed"]);
    let got: Value = serde_json::from_slice(&oscar.received()[0].body).unwrap();
    assert_eq!(
        got["EventName"],
        "s3:Replication:OperationCompletedReplication"
    );
    assert_eq!(got["Key"], "intermediate/input/run-17/data.parquet");
    assert_eq!(got["Records"].as_array().unwrap().len(), 1);
    let original: Value = serde_json::from_slice(&fixture("synthetic-multi-record.json")).unwrap();
    assert_eq!(got["Records"][0], original["Records"][0]);
    gw.stop().await;
}

/// A wrong token (OSCAR 401) never shadows the real event: the right token is then forwarded once.
#[tokio::test]
async fn wrong_token_then_right_token_forwards_once() {
    let oscar = FakeOscar::start().await;
    oscar.require_token(true);
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let body = fixture("put-versioned.json");
    let (status, answer) = gw.post("svc", Some("Bearer wrong"), body.clone()).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (503, vec!["failed".to_string()])
    );
    let (status, answer) = gw.post("svc", Some(TOKEN), body.clone()).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["forwarded".to_string()])
    );
    let (_, answer) = gw.post("svc", Some(TOKEN), body).await;
    assert_eq!(verdicts(&answer), ["duplicate"]);
    assert_eq!(oscar.accepted().len(), 1);
    gw.stop().await;
}

/// OSCAR 503 → MinIO 503 with Retry-After, the key released, the retry forwarded.
#[tokio::test]
async fn upstream_failure_releases_the_key() {
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let body = fixture("put-versioned.json");
    let resp = gw
        .client
        .post(gw.url("/job/svc"))
        .header("authorization", TOKEN)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    oscar.set_status(201);
    let (status, answer) = gw.post("svc", Some(TOKEN), body).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["forwarded".to_string()])
    );
    assert_eq!(oscar.accepted().len(), 1);
    assert_eq!(oscar.received().len(), 2);
    gw.stop().await;
}

/// OSCAR unreachable (connection refused) → 503, nothing committed.
#[tokio::test]
async fn upstream_down_answers_503() {
    let oscar = FakeOscar::start().await;
    let url = oscar.url();
    oscar.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gw = TestGateway::start(test_config(&url)).await;
    let (status, answer) = gw
        .post("svc", Some(TOKEN), fixture("put-versioned.json"))
        .await;
    assert_eq!(status, 503, "{answer}");
    gw.stop().await;
}

/// After the TTL the same event is forwarded again.
#[tokio::test]
async fn ttl_expiry_forwards_again() {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.dedup.ttl = Duration::from_millis(300);
    let gw = TestGateway::start(cfg).await;
    let body = fixture("put-versioned.json");
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), body.clone()).await.1),
        ["forwarded"]
    );
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), body.clone()).await.1),
        ["duplicate"]
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), body).await.1),
        ["forwarded"]
    );
    assert_eq!(oscar.received().len(), 2);
    gw.stop().await;
}

/// Bad bodies get 400/413/415 with a JSON reason and nothing is forwarded.
#[tokio::test]
async fn bad_requests_are_rejected_with_reasons() {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.http.body_limit = 4096;
    let gw = TestGateway::start(cfg).await;
    let post = |ct: Option<&'static str>, body: Vec<u8>| {
        let mut req = gw
            .client
            .post(gw.url("/job/svc"))
            .header("authorization", TOKEN)
            .body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let cases: Vec<(Option<&str>, Vec<u8>, u16)> = vec![
        (Some("application/json"), b"not json".to_vec(), 400),
        (
            Some("application/json"),
            b"{\"EventName\":\"x\"}".to_vec(),
            400,
        ),
        (Some("application/json"), b"[]".to_vec(), 400),
        (Some("application/json"), vec![b' '; 5000], 413),
        (Some("text/plain"), fixture("put-versioned.json"), 415),
    ];
    for (ct, body, want) in cases {
        let resp = post(ct, body).await.unwrap();
        assert_eq!(resp.status().as_u16(), want);
        let json: Value = resp.json().await.unwrap();
        assert!(
            json["error"].as_str().is_some_and(|s| !s.is_empty()),
            "{json}"
        );
    }
    // A streamed (chunked) body over the limit, with no Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 1000])).collect();
    let resp = gw
        .client
        .post(gw.url("/job/svc"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // No Content-Type at all is accepted (MinIO always sends one, curl may not).
    let resp = post(None, fixture("put-versioned.json")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        oscar.received().len(),
        1,
        "only the last, valid request reached OSCAR"
    );
    gw.stop().await;
}

/// The webhook fast path and the router answer alike: a percent-encoded service name takes the
/// router, decodes to the same service and so the same identity; a name the fast path would take
/// but is invalid gets the same 400 either way; odd paths stay 404.
#[tokio::test]
async fn both_ways_into_the_webhook_agree() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let body = fixture("put-versioned.json");
    let (status, answer) = gw.post("%73vc", Some(TOKEN), body.clone()).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["forwarded".into()]),
        "{answer}"
    );
    let (status, answer) = gw.post("svc", Some(TOKEN), body.clone()).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["duplicate".into()]),
        "{answer}"
    );
    let received = oscar.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].service, "svc");
    for bad in ["a%20b", "a~b"] {
        let (status, answer) = gw.post(bad, Some(TOKEN), body.clone()).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(answer["error"].is_string(), "{bad}: {answer}");
    }
    for odd in ["/job/", "/job/a/b", "/jobs/svc"] {
        let resp = gw
            .client
            .post(gw.url(odd))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{odd}");
    }
    gw.stop().await;
}

/// HEAD probes, health, readiness and metrics.
#[tokio::test]
async fn probes_and_metrics() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let head = gw.client.head(gw.url("/job/svc")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        gw.client
            .get(gw.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        gw.client
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.post("svc", Some(TOKEN), fixture("put-versioned.json"))
        .await;
    gw.post("svc", Some(TOKEN), fixture("put-versioned.json"))
        .await;
    let text = gw.metrics().await;
    assert!(
        text.contains("dedup_gateway_records_total{verdict=\"forwarded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dedup_gateway_records_total{verdict=\"duplicate\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dedup_gateway_upstream_responses_total{class=\"2xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dedup_gateway_upstream_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
    gw.stop().await;
}

/// Graceful shutdown finishes an in-flight request before the gateway stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let oscar = FakeOscar::start().await;
    oscar.set_delay(Duration::from_millis(500));
    let gw = std::sync::Arc::new(TestGateway::start(test_config(&oscar.url())).await);
    let g = gw.clone();
    let req = tokio::spawn(async move {
        g.post("svc", Some(TOKEN), fixture("put-versioned.json"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    gw.shutdown.cancel();
    let (status, answer) = req.await.unwrap();
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["forwarded".to_string()])
    );
    assert_eq!(oscar.accepted().len(), 1);
}

/// At `dedup.max_entries`, a MinIO redelivery of an event already delivered is a duplicate: the
/// bound makes room only for a new identity, so a copy of a remembered one must not evict it.
#[tokio::test]
async fn a_redelivery_at_the_store_bound_is_still_a_duplicate() {
    use crate::hardening::{body, record};
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.dedup.max_entries = 16;
    let gw = TestGateway::start(cfg).await;
    for i in 0..16 {
        let (status, answer) = gw
            .post("svc", Some(TOKEN), body(&[record(&format!("o{i}"), "v1")]))
            .await;
        assert_eq!((status, verdicts(&answer)), (200, vec!["forwarded".into()]));
    }
    // The store is at its bound, every entry delivered; the oldest one is sent again.
    let (status, answer) = gw
        .post("svc", Some(TOKEN), body(&[record("o0", "v1")]))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(verdicts(&answer), ["duplicate"], "{answer}");
    assert_eq!(oscar.accepted().len(), 16, "o0 reached OSCAR twice");
    gw.stop().await;
}

/// A clean copy that arrives while the held PENDING copy of its identity is being delivered
/// after its grace must not be acknowledged unless the event is then certain to reach OSCAR.
/// A request's own in-flight delivery justifies a 200 `duplicate` for a concurrent copy because
/// that request answers 503 to its sender on failure and MinIO sends it again; a held copy's
/// delivery has no such sender (the held copy was acknowledged long ago). So the clean copy waits
/// for that delivery's outcome: delivered → `duplicate`; given up (503 past the retry limit, or a
/// permanent 404) → the clean copy is forwarded itself. Exactly one 2xx from OSCAR either way.
#[tokio::test]
async fn a_clean_copy_met_during_the_held_copys_delivery_is_not_lost() {
    for (held_answer, clean_verdict) in [(503, "forwarded"), (404, "forwarded"), (201, "duplicate")]
    {
        let oscar = crate::hardening::GateOscar::start().await;
        let mut cfg = test_config(&oscar.url());
        cfg.policy.pending_grace = Duration::from_millis(100);
        cfg.delivery.max_attempts = 1;
        let gw = TestGateway::start(cfg).await;
        let held = fixture("rustfs-put-replicated-bucket.json");
        let clean = fixture("rustfs-replication-completed-stale-pending.json");
        assert_eq!(
            verdicts(&gw.post("svc", Some(TOKEN), held).await.1),
            ["held"]
        );
        // After the grace the held copy's delivery reaches OSCAR, which keeps it waiting.
        assert!(eventually(Duration::from_secs(5), || oscar.arrived() == 1).await);
        let gw = Arc::new(gw);
        let clean_post = {
            let gw = gw.clone();
            tokio::spawn(async move { gw.post("svc", Some(TOKEN), clean).await })
        };
        // The clean copy is not answered while the held copy's delivery is open.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !clean_post.is_finished(),
            "answered before the held copy's outcome"
        );
        oscar.set_status(held_answer);
        oscar.open_one();
        assert!(eventually(Duration::from_secs(5), || oscar.answered().len() == 1).await);
        oscar.set_status(201);
        oscar.open();
        let (status, answer) = tokio::time::timeout(Duration::from_secs(10), clean_post)
            .await
            .expect("the clean copy is answered once the held copy's delivery ends")
            .expect("post task");
        assert_eq!(status, 200, "held copy answered {held_answer}: {answer}");
        assert_eq!(
            verdicts(&answer),
            [clean_verdict],
            "held copy answered {held_answer}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            oscar.answered().iter().filter(|s| **s == 201).count(),
            1,
            "delivered exactly once (held copy answered {held_answer})"
        );
        Arc::into_inner(gw).expect("one owner").stop().await;
    }
}

/// The clean copy that preempted a held copy fails to reach OSCAR (503 to MinIO): when the held
/// copy's grace ends the identity is free again, so the held copy — acknowledged long ago — is
/// delivered after all instead of being dropped as superseded. Exactly one delivery.
#[tokio::test]
async fn a_held_copy_is_delivered_when_the_copy_that_preempted_it_failed() {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.policy.pending_grace = Duration::from_millis(300);
    let gw = TestGateway::start(cfg).await;
    let held = fixture("rustfs-put-replicated-bucket.json");
    let clean = fixture("rustfs-replication-completed-stale-pending.json");
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), held).await.1),
        ["held"]
    );
    oscar.set_status(503);
    let (status, answer) = gw.post("svc", Some(TOKEN), clean).await;
    assert_eq!(status, 503, "{answer}");
    oscar.set_status(201);
    assert!(
        eventually(Duration::from_secs(5), || oscar.accepted().len() == 1).await,
        "the held copy was dropped although nothing was delivered"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(oscar.accepted().len(), 1);
    gw.stop().await;
}

/// Held copies whose grace ends together are delivered at most `delivery.concurrency` at a time
/// (as the setting documents), and all of them in the end.
#[tokio::test]
async fn held_copies_are_delivered_within_the_concurrency_bound() {
    let oscar = crate::hardening::GateOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.policy.pending_grace = Duration::from_millis(100);
    cfg.delivery.concurrency = 2;
    let gw = TestGateway::start(cfg).await;
    for i in 0..6 {
        let body = crate::spool::pending_event(&format!("bound-{i}"), false);
        assert_eq!(
            verdicts(&gw.post("svc", Some(TOKEN), body).await.1),
            ["held"]
        );
    }
    assert!(eventually(Duration::from_secs(5), || oscar.arrived() == 2).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(oscar.arrived(), 2, "no more than the bound in flight");
    oscar.open();
    assert!(
        eventually(Duration::from_secs(10), || oscar.answered().len() == 6).await,
        "all delivered: {:?}",
        oscar.answered()
    );
    gw.stop().await;
}

/// Graceful shutdown in sync mode delivers a held copy at once instead of dropping it with the
/// process (it was acknowledged 2xx and lives in memory only).
#[tokio::test]
async fn graceful_shutdown_delivers_held_copies_at_once() {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.policy.pending_grace = Duration::from_secs(3600);
    let gw = TestGateway::start(cfg).await;
    let body = fixture("complete-multipart-upload.json");
    assert_eq!(
        verdicts(&gw.post("svc", Some(TOKEN), body.clone()).await.1),
        ["held"]
    );
    assert!(oscar.received().is_empty());
    gw.stop().await;
    assert_eq!(
        oscar.accepted().len(),
        1,
        "the held copy is delivered at shutdown"
    );
    assert_eq!(oscar.accepted()[0].body, body);
}

/// A record whose wrongly typed field holds a long non-ASCII string is `invalid` with a reason,
/// answered like any broken record: not a panic that drops the connection unanswered (which
/// MinIO, with `queue_dir`, would resend forever at the head of its queue).
#[tokio::test]
async fn a_non_ascii_shape_error_is_answered_not_a_dropped_connection() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(test_config(&oscar.url())).await;
    let long = format!("a{}", "é".repeat(150));
    let body = format!(r#"{{"Records":[{{"eventName":"s3:ObjectCreated:Put","s3":"{long}"}}]}}"#);
    let resp = gw
        .client
        .post(gw.url("/job/svc"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(resp.status(), 400);
    let answer: Value = resp.json().await.expect("a JSON answer");
    assert_eq!(verdicts(&answer), ["invalid"], "{answer}");
    assert!(oscar.received().is_empty());
    gw.stop().await;
}

/// Held copies queued for a delivery permit longer than their lease (a slow OSCAR, more held
/// copies than `delivery.concurrency`) find their hold expired when their turn comes: nothing
/// superseded them, and each must still be delivered once OSCAR answers. (A copy that took its
/// expired identity back gave its permit up and queued again, expired again; and each expiry
/// counted as a takeover, so after a few rounds, or a few failed attempts, the copy was dropped
/// as "superseded": an acknowledged event lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_copies_waiting_past_their_lease_for_a_permit_are_still_delivered() {
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    oscar.set_delay(Duration::from_millis(100));
    let mut cfg = test_config(&oscar.url());
    cfg.policy.pending_grace = Duration::from_millis(100);
    cfg.delivery.concurrency = 1;
    cfg.delivery.request_timeout = Duration::from_millis(300);
    cfg.delivery.connect_timeout = Duration::from_millis(100);
    cfg.delivery.max_attempts = 1000;
    cfg.dedup.lease = Duration::from_millis(400);
    let gw = TestGateway::start(cfg).await;
    let n = 8;
    for i in 0..n {
        let body = crate::spool::pending_event(&format!("permit-wait-{i}"), false);
        assert_eq!(
            verdicts(&gw.post("svc", Some(TOKEN), body).await.1),
            ["held"]
        );
    }
    // OSCAR stays slow and failing for a while: the copies queue for the one permit.
    tokio::time::sleep(Duration::from_secs(20)).await;
    oscar.set_delay(Duration::ZERO);
    oscar.set_status(201);
    let all = eventually(Duration::from_secs(30), || {
        crate::spool::deliveries(&oscar).len() == n
    })
    .await;
    let superseded = metric_value(&gw.metrics().await, "dedup_gateway_held_superseded_total");
    assert!(
        all,
        "every held copy delivered: {} of {n} (superseded: {superseded:?})",
        crate::spool::deliveries(&oscar).len()
    );
    gw.stop().await;
}
