//! The alias identity of an unversioned write, shared by its event and by reconciliation.
//!
//! Why: contract §6 keys a record without a `versionId` (an unversioned bucket, or a `"null"`
//! version) by its `sequencer`. MinIO's sequencer is the object's modification time in
//! nanoseconds, in hex (`fmt.Sprintf("%X", ModTime.UnixNano())`). A listing has no sequencer,
//! only `LastModified` at millisecond precision and the ETag, so a reconciled object could not
//! have its event's identity and an object both announced and reconciled was triggered twice.
//!
//! The rule (only for a service with `[services.NAME.reconcile]`; other services are untouched):
//! - Every sequencer-keyed `available`/`removed` record with an `eTag` and a sequencer that reads
//!   as a plausible time also has an **alias**: the keyed digest of (scope, bucket, key, ETag,
//!   sequencer in whole milliseconds, class). Reconciliation's body for an unversioned listing
//!   entry carries a sequencer made from `LastModified` (its milliseconds; the part below, which
//!   a listing cannot show, from the ETag: [`sequencer_of_listing`]), so both sides derive the
//!   same alias for the same write.
//! - Before its claim, such a record looks the alias up (`peek`): present means this write was
//!   already triggered under its other identity, and the record is a `duplicate`.
//! - Once such a record is `forwarded` (sync) or `accepted` (durably spooled), the alias is
//!   committed for `dedup.ttl` in the same store. A failed, refused or dead-lettered record commits
//!   nothing, so reconciliation still finds it (as it would a released versioned identity).
//! - An overwrite with identical content has a later modification time, so a different alias: it
//!   runs. Two writes of identical content to one key within the same millisecond share an alias
//!   and run once; a listing cannot tell them apart either.
//! - A sequencer that is not a time (not MinIO), or a listing with coarser times (AWS lists whole
//!   seconds), gives aliases that never match: the old behaviour, a second trigger, never a loss.

use super::{Fields, KeyDeriver, RequestScope};
use crate::{
    identity::DedupKey,
    pipeline::{
        parse::{Record, VersionSource},
        policy::Class,
    },
};

/// 2000-01-01 and 2200-01-01 in Unix nanoseconds: a sequencer outside is not a MinIO time.
const PLAUSIBLE_NS: std::ops::Range<u64> = 946_684_800_000_000_000..7_258_118_400_000_000_000;

/// The whole milliseconds of a MinIO sequencer (hex Unix nanoseconds), if it reads as a time.
pub fn sequencer_millis(sequencer: &str) -> Option<u64> {
    if sequencer.is_empty() || sequencer.len() > 16 {
        return None;
    }
    let ns = u64::from_str_radix(sequencer, 16).ok()?;
    PLAUSIBLE_NS.contains(&ns).then_some(ns / 1_000_000)
}

/// The sequencer a listing entry gets: its `LastModified` milliseconds as MinIO writes the
/// nanoseconds (upper-case hex). The sub-millisecond part, which no listing shows, is taken from
/// the ETag (a digest, mod 10^6): the sequencer is the entry's own identity (contract §6), and two
/// writes of different content within one listed millisecond (or second, on servers that list
/// whole seconds) must not share it. The alias drops that part, so it still matches the event.
pub fn sequencer_of_listing(ms: u64, etag: &str) -> String {
    let digest = blake3::hash(etag.trim_matches('"').as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    let sub_ms = u64::from_le_bytes(first) % 1_000_000;
    format!("{:X}", ms.saturating_mul(1_000_000).saturating_add(sub_ms))
}

impl KeyDeriver {
    /// The alias of `record` (module doc), or `None` when it has none: not sequencer-keyed, no
    /// `eTag`, or a sequencer that is not a time. The ETag's quotes are not part of it (events
    /// send it bare, listings quoted).
    pub fn alias(
        &self,
        scope: &RequestScope,
        record: &Record<'_>,
        class: Class<'_>,
    ) -> Option<DedupKey> {
        if record.version_source != VersionSource::Sequencer {
            return None;
        }
        let etag = record.etag.as_deref()?.trim_matches('"');
        if etag.is_empty() {
            return None;
        }
        let ms = sequencer_millis(&record.version)?;
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        let mut w = Fields::new(&mut h);
        w.put(&scope.scope);
        w.field(b"alias-bucket", record.bucket.as_bytes());
        w.field(b"key", record.key.as_bytes());
        w.field(b"etag", etag.as_bytes());
        w.field(b"ms", &ms.to_le_bytes());
        w.field(b"class", class.as_str().as_bytes());
        w.flush();
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Some(DedupKey(out))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::parse::Marking;

    fn rec(key: &str, sequencer: &str, etag: Option<&str>) -> Record<'static> {
        Record {
            event_name: Cow::Borrowed("s3:ObjectCreated:Put"),
            bucket: "b".into(),
            key: key.into(),
            version: Cow::Owned(sequencer.into()),
            version_source: VersionSource::Sequencer,
            version_id: None,
            etag: etag.map(|e| Cow::Owned(e.into())),
            marking: Marking::Clean,
        }
    }

    fn alias(d: &KeyDeriver, r: &Record<'_>) -> Option<DedupKey> {
        d.alias(&d.scope("svc", Some(b"Bearer t")), r, Class::Available)
    }

    #[test]
    fn sequencers_that_are_not_times_have_no_alias() {
        let d = KeyDeriver::new(b"0123456789abcdef");
        for seq in ["", "1", "zz", "0055AED6DCD90281E5", "FFFFFFFFFFFFFFFF"] {
            assert_eq!(alias(&d, &rec("k", seq, Some("e"))), None, "{seq}");
        }
        let good = sequencer_of_listing(1_764_646_000_123, "e");
        assert!(alias(&d, &rec("k", &good, Some("e"))).is_some());
        assert_eq!(alias(&d, &rec("k", &good, None)), None);
        assert_eq!(alias(&d, &rec("k", &good, Some("\"\""))), None);
        let mut versioned = rec("k", &good, Some("e"));
        versioned.version_source = VersionSource::VersionId;
        assert_eq!(alias(&d, &versioned), None);
    }

    proptest! {
        /// The event (any nanoseconds within a millisecond, bare ETag) and the listing (that
        /// millisecond, quoted ETag) of one write share the alias; another millisecond, ETag,
        /// key or class never does.
        #[test]
        fn one_write_one_alias(
            ms in 946_684_800_000u64..7_258_118_399_999,
            sub in 0u64..1_000_000,
            etag in "[0-9a-f]{32}",
            other_ms in 1u64..10_000,
            other_etag in "[0-9a-f]{32}",
        ) {
            let d = KeyDeriver::new(b"0123456789abcdef");
            let event_seq = format!("{:X}", ms * 1_000_000 + sub);
            let event = alias(&d, &rec("in/a b", &event_seq, Some(&etag))).expect("alias");
            let quoted = format!("\"{etag}\"");
            let listed_seq = sequencer_of_listing(ms, &quoted);
            prop_assert_eq!(sequencer_millis(&listed_seq), Some(ms));
            prop_assert_eq!(&listed_seq, &sequencer_of_listing(ms, &etag));
            let listed = rec("in/a b", &listed_seq, Some(&quoted));
            prop_assert_eq!(Some(event), alias(&d, &listed));
            let later = rec("in/a b", &sequencer_of_listing(ms + other_ms, &etag), Some(&etag));
            prop_assert_ne!(Some(event), alias(&d, &later));
            if other_etag != etag {
                let content = rec("in/a b", &event_seq, Some(&other_etag));
                prop_assert_ne!(Some(event), alias(&d, &content));
            }
            prop_assert_ne!(Some(event), alias(&d, &rec("in/a c", &event_seq, Some(&etag))));
            let scope = d.scope("svc", Some(b"Bearer t"));
            let removed = d.alias(&scope, &rec("in/a b", &event_seq, Some(&etag)), Class::Removed);
            prop_assert_ne!(Some(event), removed);
            // Never the record's own identity.
            prop_assert_ne!(event, d.key(&scope, &rec("in/a b", &event_seq, Some(&etag)), Class::Available));
        }
    }
}
