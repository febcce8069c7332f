//! The bad-input matrix: every malformed body gets a 4xx with a short JSON reason, nothing of it
//! reaches OSCAR, and the gateway goes on serving. A mixed body loses only its broken record.

use std::time::Duration;

use futures_util::stream;

use crate::helpers::*;

/// Where a case's reason is found: an envelope error (`error`) or the record results.
enum Expect {
    /// The body as a whole is refused: status and a fragment of `error`.
    Body(u16, &'static str),
    /// Every record is `invalid` (200 with results: final, issue 13 item 9): a fragment of the
    /// first reason.
    Records(&'static str),
}

fn deep(open: &str, close: &str, depth: usize) -> String {
    format!("{}{}", open.repeat(depth), close.repeat(depth))
}

/// Hostile bodies, each sent alone to a fresh service name (so no case shadows another). A
/// table, one case a line (so longer than a function should be).
fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let good = record("ok.txt", "v1");
    let good_body = body(std::slice::from_ref(&good));
    let with_object = |object: &str| {
        body(&[format!(
            r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"in"}},"object":{object}}}}}"#
        )])
        .into_bytes()
    };
    let mut invalid_utf8 = body(&[record("k-\u{00e9}", "v1")]).into_bytes();
    let at = invalid_utf8
        .iter()
        .position(|&b| b == 0xc3)
        .expect("é is in the body");
    invalid_utf8[at] = 0xff;
    vec![
        ("not JSON", b"this is not json".to_vec(), Expect::Body(400, "not valid JSON")),
        ("truncated JSON", good_body.as_bytes()[..40].to_vec(), Expect::Body(400, "not valid JSON")),
        ("empty body", Vec::new(), Expect::Body(400, "not valid JSON")),
        ("JSON array", b"[1,2,3]".to_vec(), Expect::Body(400, "Records")),
        ("JSON string", br#""Records""#.to_vec(), Expect::Body(400, "Records")),
        ("JSON number", b"42".to_vec(), Expect::Body(400, "Records")),
        ("JSON null", b"null".to_vec(), Expect::Body(400, "Records")),
        ("Records missing", br#"{"EventName":"s3:ObjectCreated:Put"}"#.to_vec(), Expect::Body(400, "Records")),
        ("Records empty", br#"{"Records":[]}"#.to_vec(), Expect::Body(400, "empty")),
        ("Records an object", br#"{"Records":{"0":{}}}"#.to_vec(), Expect::Body(400, "Records")),
        ("Records a string", br#"{"Records":"[]"}"#.to_vec(), Expect::Body(400, "Records")),
        ("Records null", br#"{"Records":null}"#.to_vec(), Expect::Body(400, "Records")),
        ("records lower-case", good_body.replace("Records", "records").into_bytes(), Expect::Body(400, "Records")),
        (
            "duplicate Records",
            format!(r#"{{"Records":[{good}],"Records":[{}]}}"#, record("other.txt", "v1")).into_bytes(),
            Expect::Body(400, "more than one"),
        ),
        ("invalid UTF-8", invalid_utf8, Expect::Body(400, "not valid JSON")),
        ("lone surrogate escape", body(&[record(r"k\ud800", "v1")]).into_bytes(), Expect::Records("not a valid event")),
        ("10,000-deep arrays", deep("[", "]", 10_000).into_bytes(), Expect::Body(400, "nested deeper")),
        ("10,000-deep objects", deep(r#"{"a":"#, "}", 10_000).into_bytes(), Expect::Body(400, "nested deeper")),
        ("10,000-deep record", format!(r#"{{"Records":[{}]}}"#, deep("[", "]", 10_000)).into_bytes(), Expect::Body(400, "nested deeper")),
        (
            "10,000-deep ignored field",
            body(&[record("k", "v1").replacen('{', &format!(r#"{{"x":{},"#, deep("[", "]", 10_000)), 1)]).into_bytes(),
            Expect::Body(400, "nested deeper"),
        ),
        (
            "10,000-deep userMetadata",
            body(&[record("k", "v1").replace(r#""sequencer":"1""#, &format!(r#""sequencer":"1","userMetadata":{{"a":{}}}"#, deep("[", "]", 10_000)))])
                .into_bytes(),
            Expect::Body(400, "nested deeper"),
        ),
        ("record a number", br#"{"Records":[1]}"#.to_vec(), Expect::Records("not a valid event")),
        ("record null", br#"{"Records":[null]}"#.to_vec(), Expect::Records("not a valid event")),
        ("record empty object", br#"{"Records":[{}]}"#.to_vec(), Expect::Records("eventName")),
        ("s3 missing", body(&[r#"{"eventName":"s3:ObjectCreated:Put"}"#.into()]).into_bytes(), Expect::Records("bucket")),
        (
            "bucket missing",
            body(&[r#"{"eventName":"s3:ObjectCreated:Put","s3":{"object":{"key":"k","versionId":"v"}}}"#.into()]).into_bytes(),
            Expect::Records("bucket"),
        ),
        (
            "bucket name empty",
            body(&[r#"{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":""},"object":{"key":"k","versionId":"v"}}}"#.into()])
                .into_bytes(),
            Expect::Records("bucket"),
        ),
        ("object missing", with_object("null"), Expect::Records("object.key")),
        ("key missing", with_object(r#"{"versionId":"v"}"#), Expect::Records("object.key")),
        ("key empty", with_object(r#"{"key":"","versionId":"v"}"#), Expect::Records("object.key")),
        ("no version at all", with_object(r#"{"key":"k"}"#), Expect::Records("versionId")),
        ("eventName a number", body(&[record("k", "v1").replace(r#""s3:ObjectCreated:Put""#, "5")]).into_bytes(), Expect::Records("invalid type")),
        ("s3 an array", body(&[r#"{"eventName":"s3:ObjectCreated:Put","s3":[]}"#.into()]).into_bytes(), Expect::Records("invalid type")),
        (
            "bucket an array",
            body(&[r#"{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":["in"],"object":{"key":"k","versionId":"v"}}}"#.into()])
                .into_bytes(),
            Expect::Records("invalid type"),
        ),
        ("key a number", with_object(r#"{"key":7,"versionId":"v"}"#), Expect::Records("invalid type")),
        ("versionId an object", with_object(r#"{"key":"k","versionId":{}}"#), Expect::Records("invalid type")),
        ("userMetadata an array", with_object(r#"{"key":"k","versionId":"v","userMetadata":[]}"#), Expect::Records("invalid type")),
        ("bad escape %zz", with_object(r#"{"key":"a%zz","versionId":"v"}"#), Expect::Records("bad escape")),
        ("truncated escape", with_object(r#"{"key":"a%2","versionId":"v"}"#), Expect::Records("bad escape")),
        ("escape to invalid UTF-8", with_object(r#"{"key":"a%FF%FE","versionId":"v"}"#), Expect::Records("UTF-8")),
        ("duplicate key field", with_object(r#"{"key":"a","key":"b","versionId":"v"}"#), Expect::Records("duplicate field")),
        ("duplicate s3 field", body(&[record("k", "v1").replacen(r#""s3":"#, r#""s3":{},"s3":"#, 1)]).into_bytes(), Expect::Records("duplicate field")),
    ]
}

/// Every hostile body answers with its status and a short reason, and OSCAR receives nothing.
#[tokio::test]
async fn each_bad_body_gets_a_clear_error_and_forwards_nothing() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let mut wrong = Vec::new();
    for (i, (name, bytes, expect)) in cases().into_iter().enumerate() {
        let (status, answer) = gw.post(&format!("bad-{i}"), Some(GOOD_TOKEN), bytes).await;
        let (want, reason, fragment) = match expect {
            Expect::Body(want, fragment) => (want, answer["error"].as_str(), fragment),
            Expect::Records(fragment) if verdicts(&answer) == ["invalid"] => {
                (200, answer["results"][0]["reason"].as_str(), fragment)
            }
            Expect::Records(fragment) => (200, None, fragment),
        };
        let reason = reason.unwrap_or_default();
        let short = !reason.is_empty() && reason.len() < 200;
        if status != want || !short || !reason.contains(fragment) {
            wrong.push(format!(
                "{name}: {status} {answer} (want {want} with `{fragment}`)"
            ));
        }
        assert!(
            oscar.received().is_empty(),
            "{name}: something reached OSCAR"
        );
    }
    assert!(
        wrong.is_empty(),
        "cases answered wrongly:\n{}",
        wrong.join("\n")
    );
    // Still serving, and a good event still goes through.
    gw.post_event(one_record("after.txt", "v1"))
        .await
        .assert(200, &["forwarded"]);
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}

/// A body with one good and one broken record forwards the good one and reports the other.
#[tokio::test]
async fn a_mixed_body_forwards_the_good_record_and_reports_the_broken_one() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let broken = r#"{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"in"},"object":{"key":"bad%zz","versionId":"v"}}}"#;
    let p = gw
        .post_event(body(&[record("good.txt", "v1"), broken.into()]))
        .await;
    p.assert_status(200)
        .assert_verdicts(&["forwarded", "invalid"]);
    assert!(
        p.answer["results"][1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("bad escape")
    );
    let got = oscar.received();
    assert_eq!(got.len(), 1);
    let sent: serde_json::Value =
        serde_json::from_slice(&got[0].body).expect("forwarded body is JSON");
    assert_eq!(sent["Records"].as_array().map(Vec::len), Some(1));
    assert_eq!(sent["Records"][0]["s3"]["object"]["key"], "good.txt");
    gw.stop().await;
}

/// 100,000 records in one body (under a raised body limit) are refused whole, quickly and
/// without a result per record; nothing is forwarded, valid-looking or not.
#[tokio::test]
async fn a_hundred_thousand_records_are_refused_whole() {
    let (oscar, gw) = oscar_and_gateway(|cfg| cfg.http.body_limit = 32 * 1024 * 1024).await;
    let tiny = format!(r#"{{"Records":[{}]}}"#, vec!["{}"; 100_000].join(","));
    let valid = body(&vec![record("same.txt", "v1"); 100_000]);
    for (name, b) in [("tiny", tiny), ("valid", valid)] {
        let Posted { status, answer, .. } = gw.post_event(b).await;
        assert_eq!(status, 413, "{name}: {answer}");
        let reason = error_reason(&answer);
        assert!(
            reason.contains("100000 records") && reason.contains("1000"),
            "{name}: {reason}"
        );
        assert!(
            answer.get("results").is_none(),
            "{name}: no per-record answer"
        );
    }
    assert!(oscar.received().is_empty());
    gw.stop().await;
}

/// Over the body limit: declared (Content-Length) or streamed (chunked), 413 either way.
#[tokio::test]
async fn bodies_over_the_limit_get_413_declared_or_chunked() {
    let (oscar, gw) = oscar_and_gateway(|cfg| cfg.http.body_limit = 4096).await;
    let big = body(&[record(&"x".repeat(8000), "v1")]);

    let p = gw.post_event(big.clone()).await;
    p.assert_status(413);
    assert!(error_reason(&p.answer).contains("4096"));

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = webhook(&gw.client, &gw.url("/job/svc"), Some(GOOD_TOKEN))
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .expect("chunked post");
    assert_eq!(resp.status(), 413);
    let answer: serde_json::Value = resp.json().await.expect("json");
    assert!(error_reason(&answer).contains("limit"));
    assert!(oscar.received().is_empty());
    gw.stop().await;
}

/// A Content-Type that is not JSON gets 415, and so does a compressed body.
#[tokio::test]
async fn wrong_content_type_and_encoding_get_415() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let good = one_record("k", "v1");
    for (header, value, fragment) in [
        ("content-type", "text/plain", "content type"),
        (
            "content-type",
            "application/x-www-form-urlencoded",
            "content type",
        ),
        (
            "content-type",
            "multipart/form-data; boundary=x",
            "content type",
        ),
        ("content-encoding", "gzip", "content encoding"),
        ("content-encoding", "deflate, gzip", "content encoding"),
    ] {
        let mut req = gw
            .client
            .post(gw.url("/job/svc"))
            .header("authorization", GOOD_TOKEN)
            .body(good.clone());
        if header == "content-encoding" {
            req = req.header("content-type", "application/json");
        }
        let resp = req.header(header, value).send().await.expect("post");
        assert_eq!(resp.status(), 415, "{header}: {value}");
        let answer: serde_json::Value = resp.json().await.expect("json");
        assert!(
            error_reason(&answer).contains(fragment),
            "{value}: {answer}"
        );
    }
    assert!(oscar.received().is_empty());
    // No Content-Type at all is accepted (MinIO always sends JSON).
    let resp = gw
        .client
        .post(gw.url("/job/svc"))
        .header("authorization", GOOD_TOKEN)
        .body(good)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    assert!(eventually(Duration::from_secs(5), || oscar.received().len() == 1).await);
    gw.stop().await;
}

/// A request head with more headers than hyper's limit (100) is refused with 431 before any
/// handler runs.
#[tokio::test]
async fn oversized_headers_are_refused() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let b = one_record("head.txt", "v1");
    let many: String = (0..500).map(|i| format!("X-Filler-{i}: x\r\n")).collect();
    let req = format!(
        "POST /job/svc HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{many}\r\n{b}",
        b.len()
    );
    let answer = raw_exchange(gw.addr, req.as_bytes(), Duration::from_secs(20)).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(oscar.received().is_empty());
    gw.stop().await;
}
