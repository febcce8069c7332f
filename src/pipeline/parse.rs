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
    /// Two `Records` keys: readers disagree on which one counts (first or last), so a body
    /// whose meaning depends on the reader is refused rather than guessed at.
    #[error("body has more than one `Records` key")]
    DuplicateRecords,
    #[error("body has {count} records; at most {limit} are accepted")]
    TooManyRecords { count: usize, limit: usize },
    #[error("body is nested deeper than {0} levels")]
    TooDeep(usize),
}

/// Deepest nesting of arrays and objects a body may have. A MinIO event needs 6; serde_json stops
/// at 128 only where it builds values, while skipped values (unknown fields) may nest without
/// bound, and OSCAR's Go decoder stops at 10,000: one limit for the whole body keeps all three
/// readers in agreement and the work per byte constant.
pub const MAX_DEPTH: usize = 64;

/// True when `body` nests arrays/objects deeper than `max` (strings and escapes are skipped; the
/// JSON need not be valid, the parser judges that afterwards).
///
/// Runs on every body before the parser, so string contents — most of a MinIO event — are skipped
/// with `memchr2` to the next quote or backslash instead of byte by byte: the byte-by-byte loop
/// was a quarter of the per-event decision time (BENCHMARKS.md). Before that, the depth is bounded
/// by the number of `[` and `{` bytes anywhere in the body (inside strings too): only an opening
/// bracket outside a string deepens, so a body with at most `max` of them cannot nest deeper, and
/// the string-aware scan runs only on the rest. A MinIO event has about a dozen; counting them is
/// a branch-free loop the compiler vectorises, several times cheaper than the scan's per-string
/// `memchr2` calls on short strings.
fn nested_deeper_than(body: &[u8], max: usize) -> bool {
    if openers_at_most(body, max) {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        i += 1;
        match b {
            b'"' => loop {
                let Some(rest) = body.get(i..) else {
                    return false;
                };
                match memchr::memchr2(b'"', b'\\', rest) {
                    // Unterminated string: nothing after it can nest.
                    None => return false,
                    Some(n) if rest[n] == b'\\' => i += n + 2,
                    Some(n) => {
                        i += n + 1;
                        break;
                    }
                }
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// True when `body` holds at most `max` bytes `[` or `{`.
fn openers_at_most(body: &[u8], max: usize) -> bool {
    let mut n = 0usize;
    // `[` (0x5B) and `{` (0x7B) are the only bytes with `b | 0x20 == b'{'`. Per-chunk `u8` sums
    // cannot overflow in 255 bytes and keep the vector lanes narrow.
    for chunk in body.chunks(255) {
        let in_chunk = chunk
            .iter()
            .fold(0u8, |acc, &b| acc.wrapping_add(u8::from(b | 0x20 == b'{')));
        n += usize::from(in_chunk);
        if n > max {
            return false;
        }
    }
    true
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

/// The top-level object: `Records` as a list of `T`, every other key skipped, a repeated
/// `Records` noted. `T` is `&RawValue` for the two-pass path and the typed record for the fast
/// path ([`records`]); both read the same keys in the same way.
struct EnvelopeOf<T> {
    records: Option<Vec<T>>,
    duplicate: bool,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for EnvelopeOf<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = EnvelopeOf<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MinIO notification object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EnvelopeOf<T>, A::Error> {
                let mut out = EnvelopeOf {
                    records: None,
                    duplicate: false,
                };
                while let Some(k) = map.next_key::<Str<'de>>()? {
                    if *k != *"Records" {
                        map.next_value::<IgnoredAny>()?;
                    } else if out.records.is_some() {
                        out.duplicate = true;
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        out.records = Some(map.next_value()?);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Splits a body into records; only the envelope is checked here.
pub fn envelope(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    if nested_deeper_than(body, MAX_DEPTH) {
        return Err(EnvelopeError::TooDeep(MAX_DEPTH));
    }
    raw_envelope(body)
}

/// [`envelope`] without the depth scan (for callers that ran it already).
fn raw_envelope(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    // A body that is JSON but not an object is "no Records", not "not JSON".
    let value: EnvelopeOf<&RawValue> = match serde_json::from_slice(body) {
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
    if value.duplicate {
        return Err(EnvelopeError::DuplicateRecords);
    }
    match value.records {
        None => Err(EnvelopeError::NoRecords),
        Some(r) if r.is_empty() => Err(EnvelopeError::EmptyRecords),
        Some(records) => Ok(Envelope { records }),
    }
}

/// The records of a body, each parsed (or `invalid` on its own).
#[derive(Debug)]
pub enum Records<'a> {
    /// One record: forwarded as the original body, so no raw slice is kept.
    Single(Result<Record<'a>, RecordError>),
    /// Several records, each with its raw slice to build its own single-record body from.
    Many(Vec<(&'a RawValue, Result<Record<'a>, RecordError>)>),
}

impl Records<'_> {
    pub fn len(&self) -> usize {
        match self {
            Records::Single(_) => 1,
            Records::Many(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses a body: the same answer as [`envelope`] followed by [`record`] on each raw record,
/// usually in one serde pass.
///
/// Fast path: when the body is UTF-8 and every record has the expected shape, `Records` is
/// deserialised straight into the typed records (one pass). A single-record body is done then;
/// a multi-record body takes a second, raw pass for the slices its split bodies are built from,
/// and reuses the typed records. Anything else — not UTF-8, not JSON, a record of the wrong shape —
/// falls back to the two-pass path, so a broken record still makes only itself `invalid` and every
/// error reads as before. UTF-8 is checked first because the raw pass validates it inside
/// `Records` while skipped strings are not validated: without the check a body the two-pass path
/// refuses could pass the fast one. `check::check_body` asserts that both paths agree.
pub fn records(body: &[u8]) -> Result<Records<'_>, EnvelopeError> {
    if nested_deeper_than(body, MAX_DEPTH) {
        return Err(EnvelopeError::TooDeep(MAX_DEPTH));
    }
    if let Ok(text) = std::str::from_utf8(body)
        && let Ok(env) = serde_json::from_str::<EnvelopeOf<Obj<RawRecord<'_>>>>(text)
    {
        if env.duplicate {
            return Err(EnvelopeError::DuplicateRecords);
        }
        let mut typed = env.records.ok_or(EnvelopeError::NoRecords)?;
        match typed.len() {
            0 => return Err(EnvelopeError::EmptyRecords),
            1 => {
                if let Some(Obj(r)) = typed.pop() {
                    return Ok(Records::Single(validate(r)));
                }
            }
            n => {
                // The same `Records` array, read raw: the counts agree unless serde disagrees
                // with itself, in which case the two-pass path below decides.
                // (`from_str`: the body was checked for UTF-8 above.)
                if let Ok(EnvelopeOf {
                    records: Some(raws),
                    duplicate: false,
                }) = serde_json::from_str::<EnvelopeOf<&RawValue>>(text)
                    && raws.len() == n
                {
                    let many = raws
                        .into_iter()
                        .zip(typed)
                        .map(|(raw, Obj(r))| (raw, validate(r)))
                        .collect();
                    return Ok(Records::Many(many));
                }
            }
        }
    }
    let env = raw_envelope(body)?;
    if let [raw] = env.records[..] {
        return Ok(Records::Single(record(raw)));
    }
    Ok(Records::Many(
        env.records.into_iter().map(|r| (r, record(r))).collect(),
    ))
}

/// A parse error's text cut to at most 120 bytes. It may quote the offending input, so the cut
/// backs off to a character boundary (`String::truncate` panics inside a character).
fn short(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl Record<'_> {
    /// The same record, owning its strings (for work that outlives the request body).
    pub fn into_owned(self) -> Record<'static> {
        Record {
            event_name: Cow::Owned(self.event_name.into_owned()),
            bucket: Cow::Owned(self.bucket.into_owned()),
            key: self.key,
            version: Cow::Owned(self.version.into_owned()),
            version_source: self.version_source,
            version_id: self.version_id.map(|v| Cow::Owned(v.into_owned())),
            marking: self.marking,
        }
    }
}

/// Only a JSON object for `T`. serde's derive also accepts an array and fills the fields by
/// position, so `"bucket":["b"]` would name bucket `b`; MinIO never sends that and OSCAR (Go's
/// `encoding/json`) refuses it, and the gateway must not derive an identity from a body that
/// its receiver reads differently.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(Obj)
    }
}

/// A JSON string borrowed from the body when it has no escapes, owned (unescaped) otherwise.
///
/// serde's own `Cow<str>` always allocates: the derive borrows only a bare `Cow<str>` field, not
/// an `Option<Cow<str>>`, and a `next_key::<Cow<str>>` never borrows. Allocating every field and
/// every map key cost 5–9 % of the per-event time (BENCHMARKS.md). Its errors read as
/// `String`'s do ("expected a string").
struct Str<'a>(Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(rename = "eventName", borrow, default)]
    event_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    s3: Option<Obj<RawS3<'a>>>,
}

#[derive(Deserialize)]
struct RawS3<'a> {
    #[serde(borrow, default)]
    bucket: Option<Obj<RawBucket<'a>>>,
    #[serde(borrow, default)]
    object: Option<Obj<RawObject<'a>>>,
}

#[derive(Deserialize)]
struct RawBucket<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct RawObject<'a> {
    #[serde(borrow, default)]
    key: Option<Str<'a>>,
    #[serde(rename = "versionId", borrow, default)]
    version_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    sequencer: Option<Str<'a>>,
    #[serde(rename = "eTag", borrow, default)]
    etag: Option<Str<'a>>,
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
                while let Some(k) = map.next_key::<Str<'de>>()? {
                    if k.eq_ignore_ascii_case(PUBLIC_STATUS) {
                        let Str(v) = map.next_value()?;
                        out.public_pending |= v.trim().eq_ignore_ascii_case("PENDING");
                    } else if INTERNAL_STATUS.iter().any(|i| k.eq_ignore_ascii_case(i)) {
                        let Str(v) = map.next_value()?;
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
    let Obj(r): Obj<RawRecord<'_>> =
        serde_json::from_str(raw.get()).map_err(|e| RecordError::Shape(short(&e)))?;
    validate(r)
}

/// The checks on a record of the right shape, shared by both parse paths.
fn validate(r: RawRecord<'_>) -> Result<Record<'_>, RecordError> {
    let event_name = r
        .event_name
        .map(|n| n.0)
        .filter(|n| !n.is_empty())
        .ok_or(RecordError::NoEventName)?;
    let Obj(s3) = r.s3.ok_or(RecordError::NoBucket)?;
    let bucket = s3
        .bucket
        .and_then(|b| b.0.name)
        .map(|n| n.0)
        .filter(|n| !n.is_empty())
        .ok_or(RecordError::NoBucket)?;
    let Obj(object) = s3.object.ok_or(RecordError::NoKey)?;
    let raw_key = object
        .key
        .map(|k| k.0)
        .filter(|k| !k.is_empty())
        .ok_or(RecordError::NoKey)?;
    let key = decode_form_component(&raw_key)?;
    let version_id = object.version_id.map(|v| v.0);
    let (version, version_source) = match (
        &version_id,
        object.sequencer.map(|s| s.0),
        object.etag.map(|e| e.0),
    ) {
        (Some(v), _, _) if !v.is_empty() && v != "null" => (v.clone(), VersionSource::VersionId),
        (_, Some(s), _) if !s.is_empty() => (s, VersionSource::Sequencer),
        (_, _, Some(e)) if !e.is_empty() => (e, VersionSource::ETag),
        _ => return Err(RecordError::NoVersion),
    };
    let marking = object.user_metadata.map_or(Marking::Clean, |m| m.marking());
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

    /// The byte-by-byte scan `nested_deeper_than` replaced, kept as its reference.
    fn nested_deeper_than_reference(body: &[u8], max: usize) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in body {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }

    proptest::proptest! {
        /// The memchr scan agrees with the byte-by-byte one on any mix of quotes, escapes and
        /// brackets, including unterminated strings and a trailing backslash.
        #[test]
        fn depth_scan_matches_reference(
            body in proptest::collection::vec(proptest::sample::select(b"\"\\[]{}a,:".to_vec()), 0..64),
            max in 0usize..24,
        ) {
            proptest::prop_assert_eq!(nested_deeper_than(&body, max), nested_deeper_than_reference(&body, max));
        }

        /// The bracket count behind the scan's shortcut, across its 255-byte chunks.
        #[test]
        fn opener_count_matches_naive(
            body in proptest::collection::vec(proptest::sample::select(b"[{]}a\"\x5b\x7b\xdb\xfb".to_vec()), 0..1200),
            max in 0usize..400,
        ) {
            let naive = body.iter().filter(|&&b| b == b'[' || b == b'{').count();
            proptest::prop_assert_eq!(openers_at_most(&body, max), naive <= max);
        }
    }

    #[test]
    fn form_decoding_follows_query_escape() {
        assert_eq!(
            decode_form_component("input%2Fmy+photos%2Fse%C3%B1al+%C3%BC%2B%C3%9F+2025.jpg")
                .unwrap(),
            "input/my photos/señal ü+ß 2025.jpg"
        );
        assert_eq!(decode_form_component("a%2bb").unwrap(), "a+b");
        assert_eq!(decode_form_component("plain").unwrap(), "plain");
        assert_eq!(
            decode_form_component("bad%2").unwrap_err(),
            RecordError::BadEscape
        );
        assert_eq!(
            decode_form_component("bad%zz").unwrap_err(),
            RecordError::BadEscape
        );
        assert_eq!(
            decode_form_component("%FF").unwrap_err(),
            RecordError::NotUtf8
        );
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
}
