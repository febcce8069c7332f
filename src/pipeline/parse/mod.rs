//! Parse: MinIO webhook bytes → the few borrowed fields a decision needs.
//!
//! Only the fields that the policy and the dedup identity read are deserialised, as borrowed
//! strings where the JSON has no escapes; everything else is skipped by serde without being
//! built. The envelope keeps each record as a raw JSON slice, so that a single-record body is
//! forwarded as the original bytes and a multi-record body can be split without re-encoding the
//! records. One broken record never spoils the others: each record is parsed on its own, and an
//! error becomes that record's `invalid` verdict, while an envelope error rejects the body (400).
//!
//! Layout: this file is the API (the errors, [`Record`], the parse paths and the checks they
//! share); `scan` the hand-written single-pass reader that takes the plain bodies MinIO sends
//! before serde sees them, `wire` the serde shapes of the MinIO body, `form` the key's form
//! decoding, and `guard` the depth limit every body passes before serde sees it.

mod form;
mod guard;
mod scan;
mod wire;

#[cfg(test)]
mod scan_tests;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde_json::value::RawValue;

pub use form::decode_form_component;
pub use guard::MAX_DEPTH;
use guard::nested_deeper_than;
use wire::{EnvelopeOf, Obj, RawRecord};

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
/// usually in one pass.
///
/// A plain MinIO body (no escapes, the expected shapes: `scan`'s module doc) is read by the
/// hand-written scanner, which gives exactly what serde gives and costs a fraction of it; any
/// other body goes to serde ([`records_serde`]), so every error reads as before.
/// `check::check_body` asserts that this agrees with the two-pass path.
pub fn records(body: &[u8]) -> Result<Records<'_>, EnvelopeError> {
    match scanned(body) {
        Some(records) => Ok(records),
        None => records_serde(body),
    }
}

/// The body read by the scanner (a plain MinIO notification), or `None` for serde to decide.
/// A multi-record body's raw slices become [`RawValue`]s through serde, which checks each again.
fn scanned(body: &[u8]) -> Option<Records<'_>> {
    let scan::Scanned { first, rest } = scan::scan(body)?;
    if rest.is_empty() {
        return Some(Records::Single(validate(first.1)));
    }
    let mut many = Vec::with_capacity(1 + rest.len());
    for (raw, r) in std::iter::once(first).chain(rest) {
        let raw: &RawValue = serde_json::from_str(raw).ok()?;
        many.push((raw, validate(r)));
    }
    Some(Records::Many(many))
}

/// [`records`] by serde alone: for the bodies the scanner leaves (escapes, errors, odd shapes).
///
/// Fast path: when the body is UTF-8 and every record has the expected shape, `Records` is
/// deserialised straight into the typed records (one pass). A single-record body is done then;
/// a multi-record body takes a second, raw pass for the slices its split bodies are built from,
/// and reuses the typed records. Anything else — not UTF-8, not JSON, a record of the wrong shape —
/// falls back to the two-pass path, so a broken record still makes only itself `invalid` and every
/// error reads as before. UTF-8 is checked first because the raw pass validates it inside
/// `Records` while skipped strings are not validated: without the check a body the two-pass path
/// refuses could pass the fast one.
fn records_serde(body: &[u8]) -> Result<Records<'_>, EnvelopeError> {
    if nested_deeper_than(body, MAX_DEPTH) {
        return Err(EnvelopeError::TooDeep(MAX_DEPTH));
    }
    if let Ok(text) = simdutf8::basic::from_utf8(body)
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
    /// `eTag`, kept only for a sequencer-keyed record: with its sequencer it gives the alias
    /// identity reconciliation shares (`pipeline/key.rs`, [`crate::pipeline::key::KeyDeriver::alias`]).
    pub etag: Option<Cow<'a, str>>,
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
            etag: self.etag.map(|e| Cow::Owned(e.into_owned())),
            marking: self.marking,
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
    let (version, version_source, etag) = match (
        &version_id,
        object.sequencer.map(|s| s.0),
        object.etag.map(|e| e.0),
    ) {
        (Some(v), _, _) if !v.is_empty() && v != "null" => {
            (v.clone(), VersionSource::VersionId, None)
        }
        (_, Some(s), e) if !s.is_empty() => (s, VersionSource::Sequencer, e),
        (_, _, Some(e)) if !e.is_empty() => (e, VersionSource::ETag, None),
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
        etag,
        marking,
    })
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
