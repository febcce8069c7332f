//! Receiving a webhook in sync mode: each fixture's verdict, the request OSCAR gets (MinIO's
//! bytes and headers, one record per request), the two routes into the handler, and the 4xx
//! answers for bodies the gateway cannot take. (The full hostile-input matrix is in
//! `hardening::bad_input`.)

use serde_json::Value;

use crate::helpers::*;

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
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
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
        let p = gw
            .post_as(&format!("svc-{i}"), Some(GOOD_TOKEN), fixture(name))
            .await;
        assert_eq!(p.status, 200, "{name}: {}", p.answer);
        assert_eq!(p.verdicts(), expected, "{name}: {}", p.answer);
        for r in p.answer["results"].as_array().unwrap() {
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

/// The forwarded request is MinIO's: same body bytes, same Authorization, JSON, plus X-Dedup-Key.
#[tokio::test]
async fn forwarded_request_is_byte_for_byte() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let body = fixture("put-key-special-chars.json");
    let p = gw
        .post_as("my-service", Some(GOOD_TOKEN), body.clone())
        .await;
    let got = &oscar.received()[0];
    assert_eq!(got.service, "my-service");
    assert_eq!(got.body, body);
    assert_eq!(got.headers["authorization"], GOOD_TOKEN);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["x-dedup-key"].to_str().unwrap(), p.key());
    gw.stop().await;
}

/// A multi-record body is split: each record is forwarded alone in MinIO's top-level shape.
#[tokio::test]
async fn multi_record_body_is_split() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    gw.post_event(fixture("synthetic-multi-record.json"))
        .await
        .assert_status(200)
        .assert_verdicts(&["forwarded", "replication-failed"]);
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

/// Bad bodies get 400/413/415 with a JSON reason and nothing is forwarded.
#[tokio::test]
async fn bad_requests_are_rejected_with_reasons() {
    let (oscar, gw) = oscar_and_gateway(|cfg| cfg.http.body_limit = 4096).await;
    let post = |ct: Option<&'static str>, body: Vec<u8>| {
        let mut req = gw
            .client
            .post(gw.url("/job/svc"))
            .header("authorization", GOOD_TOKEN)
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
    let resp = webhook(&gw.client, &gw.url("/job/svc"), None)
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
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let body = fixture("put-versioned.json");
    gw.post_as("%73vc", Some(GOOD_TOKEN), body.clone())
        .await
        .assert(200, &["forwarded"]);
    gw.post_as("svc", Some(GOOD_TOKEN), body.clone())
        .await
        .assert(200, &["duplicate"]);
    let received = oscar.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].service, "svc");
    for bad in ["a%20b", "a~b"] {
        let p = gw.post_as(bad, Some(GOOD_TOKEN), body.clone()).await;
        assert_eq!(p.status, 400, "{bad}: {}", p.answer);
        assert!(p.answer["error"].is_string(), "{bad}: {}", p.answer);
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

/// A record whose wrongly typed field holds a long non-ASCII string is `invalid` with a reason,
/// answered like any broken record (200, final: issue 13 item 9): not a panic that drops the
/// connection unanswered (which MinIO, with `queue_dir`, would resend forever at the head of its
/// queue).
#[tokio::test]
async fn a_non_ascii_shape_error_is_answered_not_a_dropped_connection() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let long = format!("a{}", "é".repeat(150));
    let body = format!(r#"{{"Records":[{{"eventName":"s3:ObjectCreated:Put","s3":"{long}"}}]}}"#);
    let resp = webhook(&gw.client, &gw.url("/job/svc"), None)
        .body(body)
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("a JSON answer");
    assert_eq!(verdicts(&answer), ["invalid"], "{answer}");
    assert!(oscar.received().is_empty());
    gw.stop().await;
}
