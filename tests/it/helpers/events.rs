//! MinIO events: the shared fixtures, and builders for events with an identity of their own
//! (so tests in one gateway never meet each other's events).

use std::path::PathBuf;

/// The shared MinIO fixtures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minio-events")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `body` with every `from` replaced by its `to`, in order.
pub fn replaced(body: &[u8], pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut text = String::from_utf8(body.to_vec()).unwrap();
    for (from, to) in pairs {
        text = text.replace(from, to);
    }
    text.into_bytes()
}

/// The put fixture with its own version: one identity per `version`.
pub fn put_event(version: &str) -> Vec<u8> {
    let text = String::from_utf8(fixture("put-versioned.json")).unwrap();
    let out = text.replace("3f1c9a2e-6b7d-4e8f-9a0b-1c2d3e4f5a6b", version);
    assert_ne!(out, text);
    out.into_bytes()
}

/// A PENDING-marked put (held), and its clean copy (same identity, status COMPLETED).
pub fn pending_event(version: &str, clean: bool) -> Vec<u8> {
    let text = String::from_utf8(fixture("put-replication-pending.json")).unwrap();
    let mut out = text.replace("6a1d8f4b-0c3e-4b72-9d5a-e8f1b2c3d4a5", version);
    if clean {
        out = out.replace("\"PENDING\"", "\"COMPLETED\"");
    }
    out.into_bytes()
}

/// A minimal valid MinIO record for object `key` at `version`.
pub fn record(key: &str, version: &str) -> String {
    format!(
        r#"{{"eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"in"}},"object":{{"key":"{key}","size":1,"eTag":"e","versionId":"{version}","sequencer":"1"}}}}}}"#
    )
}

/// A body with the given records.
pub fn body(records: &[String]) -> String {
    format!(
        r#"{{"EventName":"s3:ObjectCreated:Put","Key":"in/x","Records":[{}]}}"#,
        records.join(",")
    )
}

/// A body with the one record [`record`] builds.
pub fn one_record(key: &str, version: &str) -> String {
    body(&[record(key, version)])
}
