//! The MinIO-shaped single-record body a listed version becomes.
//!
//! It goes through [`crate::pipeline::Gateway::handle`] like a webhook POST, so the identity
//! (contract §6) must come out as a real event's: bucket, the key as MinIO encodes it (Go's
//! `url.QueryEscape`, decoded by the pipeline with form rules), `versionId`, `eTag`. A listing
//! cannot know an unversioned object's real sequencer (its modification time in nanoseconds), so
//! an unversioned (or `"null"`-version) entry gets a `sequencer` made of its `LastModified`
//! milliseconds and its ETag: its own identity then differs from the event's, but both share the alias
//! identity of `pipeline/key/alias.rs`, which is what makes an object announced and reconciled
//! run once. The event name only picks the class, so `s3:ObjectCreated:Put` and the replication
//! event of the same version are one identity; with `available_on = "replicated"` the body is a
//! completed-replication event, which that setting lets through. The reconciliation marker sits
//! where the identity never looks:
//! `source.userAgent`, `userIdentity.principalId` and a `responseElements` entry.

use serde_json::{Value, json};

use super::xml::Listed;
use crate::pipeline::key::sequencer_of_listing;

/// The `userAgent` (and principal) that marks a body as synthesised by reconciliation.
pub const MARKER: &str = "dedup-gateway-reconcile";

pub const PUT: &str = "s3:ObjectCreated:Put";
pub const REPLICATED: &str = "s3:Replication:OperationCompletedReplication";
pub const DELETE_MARKER: &str = "s3:ObjectRemoved:DeleteMarkerCreated";

/// Go's `url.QueryEscape`: unreserved bytes stay, a space is `+`, every other byte `%XX`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
    out
}

/// The sequencer of an unversioned (or `"null"`-version) object that has an ETag: its
/// `LastModified` as MinIO's hex nanoseconds, at the listing's millisecond precision (the rest
/// from the ETag, see [`sequencer_of_listing`]). With the
/// ETag it gives the alias identity the object's real event also has (`pipeline/key/alias.rs`),
/// so an object both announced and reconciled runs once.
fn listed_sequencer(entry: &Listed) -> Option<String> {
    let unversioned = entry.version_id.as_deref().is_none_or(|v| v == "null");
    if !unversioned || entry.delete_marker || entry.etag.is_empty() {
        return None;
    }
    let ms = u64::try_from(entry.last_modified.as_millisecond()).ok()?;
    Some(sequencer_of_listing(ms, &entry.etag))
}

/// `eventTime` in MinIO's format (millisecond UTC).
fn event_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The body for `entry` of `bucket` with `event_name` (one of the constants above).
pub fn body(bucket: &str, entry: &Listed, event_name: &str, now: jiff::Timestamp) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    object.insert("key".into(), Value::String(query_escape(&entry.key)));
    if !entry.delete_marker {
        object.insert("size".into(), json!(entry.size));
        if !entry.etag.is_empty() {
            object.insert("eTag".into(), Value::String(entry.etag.clone()));
        }
    }
    if let Some(v) = &entry.version_id {
        object.insert("versionId".into(), Value::String(v.clone()));
    }
    if let Some(seq) = listed_sequencer(entry) {
        object.insert("sequencer".into(), Value::String(seq));
    }
    let record = json!({
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": event_time(now),
        "eventName": event_name,
        "userIdentity": {"principalId": MARKER},
        "requestParameters": null,
        "responseElements": {"x-dedup-gateway-reconcile": "true"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": ""},
                "arn": format!("arn:aws:s3:::{bucket}"),
            },
            "object": object,
        },
        "source": {"host": "", "port": "", "userAgent": MARKER},
    });
    let doc = json!({
        "EventName": event_name,
        "Key": format!("{bucket}/{}", entry.key),
        "Records": [record],
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::{Records, VersionSource, decode_form_component, records};

    fn listed(key: &str, version: Option<&str>) -> Listed {
        Listed {
            key: key.into(),
            version_id: version.map(str::to_string),
            etag: "9b2cf535f27731c974343645a3985328".into(),
            size: 5,
            last_modified: jiff::Timestamp::UNIX_EPOCH,
            delete_marker: false,
        }
    }

    #[test]
    fn keys_are_escaped_like_minio_and_decode_back() {
        // The fixture put-key-special-chars.json: MinIO's own encoding of this name.
        let name = "input/my photos/señal ü+ß 2025.jpg";
        assert_eq!(
            query_escape(name),
            "input%2Fmy+photos%2Fse%C3%B1al+%C3%BC%2B%C3%9F+2025.jpg"
        );
        for k in [name, "a%b", "100% +1", "x~y_z-.", "日本/語"] {
            assert_eq!(decode_form_component(&query_escape(k)).unwrap(), k);
        }
    }

    #[test]
    fn the_pipeline_reads_the_identity_a_real_event_has() {
        let b = body(
            "bkt",
            &listed("a b+c", Some("v-1")),
            PUT,
            jiff::Timestamp::now(),
        );
        let Records::Single(Ok(rec)) = records(&b).expect("envelope") else {
            panic!("one good record")
        };
        assert_eq!(rec.bucket, "bkt");
        assert_eq!(rec.key, "a b+c");
        assert_eq!(rec.version, "v-1");
        assert_eq!(rec.version_source, VersionSource::VersionId);
        // Unversioned: a sequencer of LastModified's milliseconds, and the eTag for the alias.
        let mut entry = listed("k", None);
        entry.last_modified = jiff::Timestamp::from_millisecond(1_764_646_000_123).unwrap();
        let b = body("bkt", &entry, PUT, jiff::Timestamp::now());
        let Records::Single(Ok(rec)) = records(&b).expect("envelope") else {
            panic!("one good record")
        };
        assert_eq!(rec.version_source, VersionSource::Sequencer);
        assert_eq!(
            crate::pipeline::key::sequencer_millis(&rec.version),
            Some(1_764_646_000_123)
        );
        assert_eq!(
            rec.etag.as_deref(),
            Some("9b2cf535f27731c974343645a3985328")
        );
    }
}
