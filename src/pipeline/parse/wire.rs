//! Wire types: the serde shapes of a MinIO notification, reduced to the keys a decision reads.
//!
//! They are hand-written where serde's derive reads more than MinIO sends or OSCAR accepts (an
//! array standing in for an object, a repeated `Records` key) or allocates where a borrow would
//! do; each type says which. The checks on the values are the parent module's.

use std::{borrow::Cow, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, Visitor},
};

use super::Marking;

/// The top-level object: `Records` as a list of `T`, every other key skipped, a repeated
/// `Records` noted. `T` is `&RawValue` for the two-pass path and the typed record for the fast
/// path ([`records`]); both read the same keys in the same way.
pub(super) struct EnvelopeOf<T> {
    pub(super) records: Option<Vec<T>>,
    pub(super) duplicate: bool,
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

/// Only a JSON object for `T`. serde's derive also accepts an array and fills the fields by
/// position, so `"bucket":["b"]` would name bucket `b`; MinIO never sends that and OSCAR (Go's
/// `encoding/json`) refuses it, and the gateway must not derive an identity from a body that
/// its receiver reads differently.
pub(super) struct Obj<T>(pub(super) T);

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
pub(super) struct Str<'a>(pub(super) Cow<'a, str>);

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
pub(super) struct RawRecord<'a> {
    #[serde(rename = "eventName", borrow, default)]
    pub(super) event_name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub(super) s3: Option<Obj<RawS3<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct RawS3<'a> {
    #[serde(borrow, default)]
    pub(super) bucket: Option<Obj<RawBucket<'a>>>,
    #[serde(borrow, default)]
    pub(super) object: Option<Obj<RawObject<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct RawBucket<'a> {
    #[serde(borrow, default)]
    pub(super) name: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(super) struct RawObject<'a> {
    #[serde(borrow, default)]
    pub(super) key: Option<Str<'a>>,
    #[serde(rename = "versionId", borrow, default)]
    pub(super) version_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub(super) sequencer: Option<Str<'a>>,
    #[serde(rename = "eTag", borrow, default)]
    pub(super) etag: Option<Str<'a>>,
    #[serde(rename = "userMetadata", default)]
    pub(super) user_metadata: Option<StatusFields>,
}

/// The replication-status entries of `userMetadata`, found without building the map.
#[derive(Debug, Default)]
pub(super) struct StatusFields {
    /// Some internal status key was present.
    pub(super) internal_seen: bool,
    /// Some internal status lists a PENDING target.
    pub(super) internal_pending: bool,
    /// The public `X-Amz-Replication-Status` (any case) is PENDING.
    pub(super) public_pending: bool,
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
                    match status_key(k.as_bytes()) {
                        Some(which) => {
                            let Str(v) = map.next_value()?;
                            out.note(which, &v);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// Which replication status a `userMetadata` key names (any case), if any. Its value must then
/// be a string; any other key's value is skipped.
pub(super) fn status_key(key: &[u8]) -> Option<StatusKey> {
    if key.eq_ignore_ascii_case(PUBLIC_STATUS.as_bytes()) {
        Some(StatusKey::Public)
    } else if INTERNAL_STATUS
        .iter()
        .any(|i| key.eq_ignore_ascii_case(i.as_bytes()))
    {
        Some(StatusKey::Internal)
    } else {
        None
    }
}

/// The two kinds of replication status key in `userMetadata`.
#[derive(Debug, Clone, Copy)]
pub(super) enum StatusKey {
    /// `X-Amz-Replication-Status`.
    Public,
    /// A per-target internal status (MinIO's or RustFS's).
    Internal,
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
    /// Takes in the value of one status key; a repeated key adds to what the earlier ones said.
    pub(super) fn note(&mut self, which: StatusKey, value: &str) {
        match which {
            StatusKey::Public => {
                self.public_pending |= value.trim().eq_ignore_ascii_case("PENDING");
            }
            StatusKey::Internal => {
                self.internal_seen = true;
                self.internal_pending |= internal_lists_pending(value);
            }
        }
    }

    pub(super) fn marking(&self) -> Marking {
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
