use serde_json::value::RawValue;

use super::*;

#[test]
fn internal_status_wins_over_public() {
    let rec = |meta: &str| {
        let body = format!(
            r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"k","sequencer":"1","userMetadata":{meta}}}}}}}"#
        );
        let raw: Box<RawValue> = serde_json::from_str(&body).unwrap();
        record(&raw).unwrap().marking
    };
    assert_eq!(
        rec(r#"{"X-Amz-Replication-Status":"PENDING"}"#),
        Marking::Pending
    );
    assert_eq!(
        rec(r#"{"x-amz-replication-status":"pending"}"#),
        Marking::Pending
    );
    assert_eq!(
        rec(r#"{"X-Amz-Replication-Status":"COMPLETED"}"#),
        Marking::Clean
    );
    assert_eq!(
        rec(
            r#"{"X-Amz-Replication-Status":"PENDING","x-minio-internal-replication-status":"arn:a=COMPLETED;"}"#
        ),
        Marking::Clean
    );
    assert_eq!(
        rec(r#"{"x-rustfs-internal-replication-status":"arn:a=COMPLETED;arn:b=PENDING;"}"#),
        Marking::Pending
    );
    assert_eq!(rec(r#"{}"#), Marking::Clean);
}

#[test]
fn version_falls_back_from_version_id_to_sequencer_to_etag() {
    let v = |obj: &str| {
        let body = format!(
            r#"{{"eventName":"e","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"k",{obj}}}}}}}"#
        );
        let raw: Box<RawValue> = serde_json::from_str(&body).unwrap();
        record(&raw).map(|r| (r.version.into_owned(), r.version_source))
    };
    assert_eq!(
        v(r#""versionId":"u1","sequencer":"S""#).unwrap(),
        ("u1".into(), VersionSource::VersionId)
    );
    assert_eq!(
        v(r#""versionId":"null","sequencer":"S""#).unwrap(),
        ("S".into(), VersionSource::Sequencer)
    );
    assert_eq!(
        v(r#""eTag":"E""#).unwrap(),
        ("E".into(), VersionSource::ETag)
    );
    assert_eq!(v(r#""size":1"#).unwrap_err(), RecordError::NoVersion);
}

#[test]
fn arrays_never_stand_in_for_objects() {
    for body in [
        r#"["s3:ObjectCreated:Put",{"bucket":{"name":"b"},"object":{"key":"k","versionId":"v"}}]"#,
        r#"{"eventName":"e","s3":[{"name":"b"},{"key":"k","versionId":"v"}]}"#,
        r#"{"eventName":"e","s3":{"bucket":["b"],"object":{"key":"k","versionId":"v"}}}"#,
        r#"{"eventName":"e","s3":{"bucket":{"name":"b"},"object":["k","v"]}}"#,
    ] {
        let raw: Box<RawValue> = serde_json::from_str(body).unwrap();
        assert!(matches!(record(&raw), Err(RecordError::Shape(_))), "{body}");
    }
}

#[test]
fn envelope_errors() {
    assert!(matches!(envelope(b"nope"), Err(EnvelopeError::NotJson(_))));
    assert_eq!(envelope(b"[1]").unwrap_err(), EnvelopeError::NoRecords);
    assert_eq!(envelope(b"{}").unwrap_err(), EnvelopeError::NoRecords);
    assert_eq!(
        envelope(br#"{"Records":{}}"#).unwrap_err(),
        EnvelopeError::NoRecords
    );
    assert_eq!(
        envelope(br#"{"Records":[]}"#).unwrap_err(),
        EnvelopeError::EmptyRecords
    );
    assert_eq!(envelope(br#"{"Records":[1,2]}"#).unwrap().records.len(), 2);
    assert_eq!(
        envelope(br#"{"Records":[1],"Records":[2]}"#).unwrap_err(),
        EnvelopeError::DuplicateRecords
    );
    assert_eq!(
        envelope(br#"{"Rec\u006frds":[1],"Records":[2]}"#).unwrap_err(),
        EnvelopeError::DuplicateRecords
    );
    assert_eq!(
        envelope(br#"{"records":[1]}"#).unwrap_err(),
        EnvelopeError::NoRecords
    );
    let deep = |n: usize| {
        format!(
            r#"{{"Records":[{{"x":{}{}}}]}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    assert!(envelope(deep(MAX_DEPTH - 3).as_bytes()).is_ok());
    assert_eq!(
        envelope(deep(MAX_DEPTH - 2).as_bytes()).unwrap_err(),
        EnvelopeError::TooDeep(MAX_DEPTH)
    );
    // Brackets inside strings, escaped quotes included, do not count.
    let quoted = format!(r#"{{"Records":[{{"x":"\"{}"}}]}}"#, "[".repeat(1000));
    assert!(envelope(quoted.as_bytes()).is_ok());
}

/// A serde error quotes the offending string, which may be any UTF-8: cutting the reason to
/// its length limit must not split a character (`String::truncate` panics there, which
/// killed the request's connection instead of answering `invalid`).
#[test]
fn a_long_non_ascii_reason_is_cut_on_a_char_boundary() {
    for shift in ["", "a"] {
        let long = format!("{shift}{}", "é".repeat(150));
        for body in [
            format!(r#"{{"Records":[{{"eventName":"s3:ObjectCreated:Put","s3":"{long}"}}]}}"#),
            format!(r#"{{"Records":[{{"eventName":{{}},"s3":"{long}"}},{{"s3":"{long}"}}]}}"#),
        ] {
            let recs = records(body.as_bytes()).expect("a valid envelope");
            let errors: Vec<RecordError> = match recs {
                Records::Single(r) => vec![r.expect_err("a string for s3")],
                Records::Many(m) => m.into_iter().map(|(_, r)| r.expect_err("bad")).collect(),
            };
            for e in errors {
                let RecordError::Shape(reason) = e else {
                    panic!("{e:?}")
                };
                assert!(
                    reason.len() <= 120 && reason.starts_with("invalid type"),
                    "{reason}"
                );
            }
        }
        let not_json = format!(r#"{{"Records":[{{"s3":"{long}"}}], "#);
        assert!(matches!(
            records(not_json.as_bytes()),
            Err(EnvelopeError::NotJson(_))
        ));
    }
}
