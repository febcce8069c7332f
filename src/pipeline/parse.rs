//! Parse: MinIO webhook bytes → the few borrowed fields a decision needs.
//!
//! Only the fields that the policy and the dedup identity read are deserialised, as borrowed
//! strings where the JSON has no escapes; everything else is skipped by serde without being
//! built. The envelope keeps each record as a raw JSON slice, so that a single-record body is
//! forwarded as the original bytes and a multi-record body can be split without re-encoding the
//! records. One broken record never spoils the others: each record is parsed on its own, and an
//! error becomes that record's `invalid` verdict, while an envelope error rejects the body (400).

use std::{borrow::Cow, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, Visitor},
};
use serde_json::value::RawValue;

/// Why a body was rejected as a whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body has no `Records` array")]
    NoRecords,
    #[error("`Records` is empty")]
    EmptyRecords,
}

/// Why one record could not be understood (verdict `invalid`).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum RecordError {
    #[error("record is not a valid event: {0}")]
    Shape(String),
    #[error("record has no eventName")]
    NoEventName,
    #[error("record has no s3.bucket.name")]
    NoBucket,
    #[error("record has no s3.object.key")]
    NoKey,
    #[error("s3.object.key has a bad escape")]
    BadEscape,
    #[error("s3.object.key does not decode to UTF-8")]
    NotUtf8,
    #[error("record has no versionId, sequencer or eTag")]
    NoVersion,
}

/// A webhook body split into raw records.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub records: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(rename = "Records", borrow, default)]
    records: Option<Vec<&'a RawValue>>,
}

/// Splits a body into records; only the envelope is checked here.
pub fn envelope(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    // A body that is JSON but not an object is "no Records", not "not JSON".
    let value: RawEnvelope<'_> = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) if e.is_data() => {
            // Valid JSON of the wrong shape (an array, or `Records` not an array).
            return match serde_json::from_slice::<IgnoredAny>(body) {
                Ok(_) => Err(EnvelopeError::NoRecords),
                Err(e) => Err(EnvelopeError::NotJson(short(&e))),
            };
        }
        Err(e) => return Err(EnvelopeError::NotJson(short(&e))),
    };
    match value.records {
        None => Err(EnvelopeError::NoRecords),
        Some(r) if r.is_empty() => Err(EnvelopeError::EmptyRecords),
        Some(records) => Ok(Envelope { records }),
    }
}

fn short(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    s.truncate(120);
    s
}

/// Where an event's version came from (contract §6: versionId, else sequencer, else eTag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    VersionId,
    Sequencer,
    ETag,
}

/// The replication marking of a record (contract §6a).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marking {
    /// No status, or a status other than PENDING.
    Clean,
    /// The internal per-target status lists a PENDING target, or (no internal status) the public one is PENDING.
    Pending,
}

/// The fields of one record that decisions read.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub event_name: Cow<'a, str>,
    pub bucket: Cow<'a, str>,
    /// `s3.object.key` decoded with form-urlencoded rules.
    pub key: String,
    pub version: Cow<'a, str>,
    pub version_source: VersionSource,
    /// `versionId` as sent (absent, `"null"` or a UUID), for logs and lookups.
    pub version_id: Option<Cow<'a, str>>,
    pub marking: Marking,
}

#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(rename = "eventName", borrow, default)]
    event_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    s3: Option<RawS3<'a>>,
}

#[derive(Deserialize)]
struct RawS3<'a> {
    #[serde(borrow, default)]
    bucket: Option<RawBucket<'a>>,
    #[serde(borrow, default)]
    object: Option<RawObject<'a>>,
}

#[derive(Deserialize)]
struct RawBucket<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawObject<'a> {
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(rename = "versionId", borrow, default)]
    version_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sequencer: Option<Cow<'a, str>>,
    #[serde(rename = "eTag", borrow, default)]
    etag: Option<Cow<'a, str>>,
    #[serde(rename = "userMetadata", default)]
    user_metadata: Option<StatusFields>,
}

/// The replication-status entries of `userMetadata`, found without building the map.
#[derive(Debug, Default)]
struct StatusFields {
    /// Some internal status key was present.
    internal_seen: bool,
    /// Some internal status lists a PENDING target.
    internal_pending: bool,
    /// The public `X-Amz-Replication-Status` (any case) is PENDING.
    public_pending: bool,
}

const PUBLIC_STATUS: &str = "x-amz-replication-status";
const INTERNAL_STATUS: [&str; 2] = [
    "x-minio-internal-replication-status",
    "x-rustfs-internal-replication-status",
];

impl<'de> Deserialize<'de> for StatusFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StatusFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a userMetadata object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StatusFields, A::Error> {
                let mut out = StatusFields::default();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    if k.eq_ignore_ascii_case(PUBLIC_STATUS) {
                        let v: Cow<'de, str> = map.next_value()?;
                        out.public_pending |= v.trim().eq_ignore_ascii_case("PENDING");
                    } else if INTERNAL_STATUS.iter().any(|i| k.eq_ignore_ascii_case(i)) {
                        let v: Cow<'de, str> = map.next_value()?;
                        out.internal_seen = true;
                        out.internal_pending |= internal_lists_pending(&v);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// `arn:...:target=STATUS;arn:...=STATUS;` → is any target PENDING?
fn internal_lists_pending(v: &str) -> bool {
    v.split(';').any(|entry| {
        entry
            .rsplit_once('=')
            .is_some_and(|(_, status)| status.trim().eq_ignore_ascii_case("PENDING"))
    })
}

impl StatusFields {
    fn marking(&self) -> Marking {
        // The internal per-target status wins: the public key can be stale (contract §6a).
        let pending = if self.internal_seen {
            self.internal_pending
        } else {
            self.public_pending
        };
        if pending {
            Marking::Pending
        } else {
            Marking::Clean
        }
    }
}

/// Parses one raw record.
pub fn record(raw: &RawValue) -> Result<Record<'_>, RecordError> {
    let r: RawRecord<'_> =
        serde_json::from_str(raw.get()).map_err(|e| RecordError::Shape(short(&e)))?;
    let event_name = r
        .event_name
        .filter(|n| !n.is_empty())
        .ok_or(RecordError::NoEventName)?;
    let s3 = r.s3.ok_or(RecordError::NoBucket)?;
    let bucket = s3
        .bucket
        .and_then(|b| b.name)
        .filter(|n| !n.is_empty())
        .ok_or(RecordError::NoBucket)?;
    let object = s3.object.ok_or(RecordError::NoKey)?;
    let raw_key = object
        .key
        .filter(|k| !k.is_empty())
        .ok_or(RecordError::NoKey)?;
    let key = decode_form_component(&raw_key)?;
    let version_id = object.version_id;
    let (version, version_source) = match (&version_id, object.sequencer, object.etag) {
        (Some(v), _, _) if !v.is_empty() && v != "null" => (v.clone(), VersionSource::VersionId),
        (_, Some(s), _) if !s.is_empty() => (s, VersionSource::Sequencer),
        (_, _, Some(e)) if !e.is_empty() => (e, VersionSource::ETag),
        _ => return Err(RecordError::NoVersion),
    };
    let marking = object
        .user_metadata
        .map_or(Marking::Clean, |m| m.marking());
    Ok(Record {
        event_name,
        bucket,
        key,
        version,
        version_source,
        version_id,
        marking,
    })
}

/// Decodes one form-urlencoded component strictly: `+` is a space, `%XX` a byte, anything else
/// after `%` is an error (MinIO's `url.QueryEscape` never produces one), and the result must be UTF-8.
pub fn decode_form_component(s: &str) -> Result<String, RecordError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex_val(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex_val(*b));
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(RecordError::BadEscape),
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| RecordError::NotUtf8)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Builds the body forwarded for one record of a multi-record request: MinIO's own top-level
/// shape (`EventName`, `Key` = bucket/decoded key, `Records` = that one record, as sent).
pub fn single_record_body(record: &Record<'_>, raw: &RawValue) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Single<'a> {
        #[serde(rename = "EventName")]
        event_name: &'a str,
        #[serde(rename = "Key")]
        key: String,
        #[serde(rename = "Records")]
        records: [&'a RawValue; 1],
    }
    let body = Single {
        event_name: &record.event_name,
        key: format!("{}/{}", record.bucket, record.key),
        records: [raw],
    };
    // Serialising borrowed strings and a raw value cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_follows_query_escape() {
        assert_eq!(
            decode_form_component("input%2Fmy+photos%2Fse%C3%B1al+%C3%BC%2B%C3%9F+2025.jpg").unwrap(),
            "input/my photos/señal ü+ß 2025.jpg"
        );
        assert_eq!(decode_form_component("a%2bb").unwrap(), "a+b");
        assert_eq!(decode_form_component("plain").unwrap(), "plain");
        assert_eq!(decode_form_component("bad%2").unwrap_err(), RecordError::BadEscape);
        assert_eq!(decode_form_component("bad%zz").unwrap_err(), RecordError::BadEscape);
        assert_eq!(decode_form_component("%FF").unwrap_err(), RecordError::NotUtf8);
    }

    #[test]
    fn internal_status_wins_over_public() {
        let rec = |meta: &str| {
            let body = format!(
                r#"{{"eventName":"s3:ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"k","sequencer":"1","userMetadata":{meta}}}}}}}"#
            );
            let raw: Box<RawValue> = serde_json::from_str(&body).unwrap();
            record(&raw).unwrap().marking
        };
        assert_eq!(rec(r#"{"X-Amz-Replication-Status":"PENDING"}"#), Marking::Pending);
        assert_eq!(rec(r#"{"x-amz-replication-status":"pending"}"#), Marking::Pending);
        assert_eq!(rec(r#"{"X-Amz-Replication-Status":"COMPLETED"}"#), Marking::Clean);
        assert_eq!(
            rec(r#"{"X-Amz-Replication-Status":"PENDING","x-minio-internal-replication-status":"arn:a=COMPLETED;"}"#),
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
        assert_eq!(v(r#""eTag":"E""#).unwrap(), ("E".into(), VersionSource::ETag));
        assert_eq!(v(r#""size":1"#).unwrap_err(), RecordError::NoVersion);
    }

    #[test]
    fn envelope_errors() {
        assert!(matches!(envelope(b"nope"), Err(EnvelopeError::NotJson(_))));
        assert_eq!(envelope(b"[1]").unwrap_err(), EnvelopeError::NoRecords);
        assert_eq!(envelope(b"{}").unwrap_err(), EnvelopeError::NoRecords);
        assert_eq!(envelope(br#"{"Records":{}}"#).unwrap_err(), EnvelopeError::NoRecords);
        assert_eq!(envelope(br#"{"Records":[]}"#).unwrap_err(), EnvelopeError::EmptyRecords);
        assert_eq!(envelope(br#"{"Records":[1,2]}"#).unwrap().records.len(), 2);
    }
}
