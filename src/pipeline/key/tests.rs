//! Tests of the keyed identity: every tuple field counts, gathered hashing equals separate
//! updates, remembered scopes match fresh hashes, and the secret file is created once.

use std::borrow::Cow;

use super::*;
use crate::pipeline::parse::Marking;

fn rec(key: &str, version: &str) -> Record<'static> {
    Record {
        event_name: Cow::Borrowed("s3:ObjectCreated:Put"),
        bucket: "b".into(),
        key: key.into(),
        version: Cow::Owned(version.into()),
        version_source: VersionSource::VersionId,
        version_id: None,
        etag: None,
        marking: Marking::Clean,
    }
}

#[test]
fn every_tuple_field_changes_the_key() {
    let d = KeyDeriver::new(b"0123456789abcdef");
    let other = KeyDeriver::new(b"fedcba9876543210");
    // (deriver, service, Authorization, object key, version, class)
    let key = |d: &KeyDeriver, svc, auth: Option<&[u8]>, k, v, class| {
        d.key(&d.scope(svc, auth), &rec(k, v), class)
    };
    let base = key(&d, "svc", Some(b"Bearer a"), "k", "v", Class::Available);
    assert_eq!(
        base,
        key(&d, "svc", Some(b"Bearer a"), "k", "v", Class::Available)
    );
    let changed = [
        key(&d, "svc2", Some(b"Bearer a"), "k", "v", Class::Available),
        key(&d, "svc", Some(b"Bearer b"), "k", "v", Class::Available),
        key(&d, "svc", None, "k", "v", Class::Available),
        key(&d, "svc", Some(b"Bearer a"), "k2", "v", Class::Available),
        key(&d, "svc", Some(b"Bearer a"), "k", "v2", Class::Available),
        key(&d, "svc", Some(b"Bearer a"), "k", "v", Class::Removed),
        // A different secret gives unrelated keys.
        key(&other, "svc", Some(b"Bearer a"), "k", "v", Class::Available),
    ];
    for (i, k) in changed.iter().enumerate() {
        assert_ne!(base, *k, "change {i}");
    }
    // Field boundaries cannot be shifted.
    assert_ne!(
        key(&d, "svc", Some(b"Bearer a"), "ab", "c", Class::Available),
        key(&d, "svc", Some(b"Bearer a"), "a", "bc", Class::Available)
    );
}

/// The digests of the per-piece `update`s the gathered input replaced.
fn key_reference(
    d: &KeyDeriver,
    scope: &RequestScope,
    r: &Record<'_>,
    class: Class<'_>,
) -> DedupKey {
    fn field(h: &mut blake3::Hasher, name: &[u8], value: &[u8]) {
        h.update(&(name.len() as u32).to_le_bytes());
        h.update(name);
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value);
    }
    let mut h = blake3::Hasher::new_keyed(&d.secret);
    h.update(&scope.scope);
    field(&mut h, b"bucket", r.bucket.as_bytes());
    field(&mut h, b"key", r.key.as_bytes());
    let tag: &[u8] = match r.version_source {
        VersionSource::VersionId => b"vid",
        VersionSource::Sequencer => b"seq",
        VersionSource::ETag => b"etag",
    };
    field(&mut h, tag, r.version.as_bytes());
    field(&mut h, b"class", class.as_str().as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    DedupKey(out)
}

#[test]
fn gathered_input_hashes_like_separate_updates() {
    let d = KeyDeriver::new(b"0123456789abcdef");
    let s = d.scope("svc", Some(b"Bearer a"));
    // Short, buffer-sized and longer-than-buffer fields, around the 256-byte boundary.
    for n in [0, 1, 100, 150, 200, 255, 256, 257, 300, 1000, 5000] {
        let key = "k".repeat(n);
        let version = "v".repeat(n / 2 + 1);
        for class in [Class::Available, Class::Other(&key)] {
            let r = rec(&key, &version);
            assert_eq!(
                d.key(&s, &r, class),
                key_reference(&d, &s, &r, class),
                "{n}"
            );
        }
    }
    // The scope digest of the memo-less path, too.
    let mut h = blake3::Hasher::new_keyed(&d.secret);
    for piece in [
        &3u32.to_le_bytes()[..],
        b"svc",
        &3u64.to_le_bytes(),
        b"svc",
        &4u32.to_le_bytes(),
        b"auth",
        &8u64.to_le_bytes(),
        b"Bearer a",
    ] {
        h.update(piece);
    }
    assert_eq!(
        d.hash_scope("svc", Some(b"Bearer a")),
        *h.finalize().as_bytes()
    );
}

#[test]
fn word_compare_is_equality() {
    let cases: [(&[u8], &[u8]); 7] = [
        (b"", b""),
        (b"a", b"a"),
        (b"a", b"b"),
        (b"abcdefgh", b"abcdefgh"),
        (b"abcdefghi", b"abcdefghj"),
        (b"abcdefghi", b"abcdefgh"),
        (
            b"Bearer bench-0123456789abcdef",
            b"Bearer bench-0123456789abcdeF",
        ),
    ];
    for (a, b) in cases {
        assert_eq!(ct_eq_words(a, b), a == b, "{a:?} {b:?}");
    }
}

#[test]
fn remembered_scopes_match_fresh_hashes() {
    let a = KeyDeriver::new(b"0123456789abcdef");
    let b = KeyDeriver::new(b"fedcba9876543210");
    let cases: [(&KeyDeriver, &str, Option<&[u8]>); 6] = [
        (&a, "svc", Some(b"Bearer a")),
        (&a, "svc", Some(b"Bearer a")),
        (&b, "svc", Some(b"Bearer a")),
        (&a, "svc", None),
        (&a, "svc", Some(b"")),
        (&a, "svd", Some(b"Bearer a")),
    ];
    for _ in 0..2 {
        for (d, svc, auth) in cases {
            assert_eq!(d.scope(svc, auth).scope, d.hash_scope(svc, auth));
        }
    }
}

#[test]
fn secret_file_is_created_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let a = KeyDeriver::load_or_create(dir.path()).unwrap();
    let b = KeyDeriver::load_or_create(dir.path()).unwrap();
    assert_eq!(a.secret, b.secret);
    let hex = DedupKey([7; 16]).to_hex();
    assert_eq!(DedupKey::from_hex(&hex), Some(DedupKey([7; 16])));
    assert_eq!(DedupKey([7; 16]).to_string(), hex);
    assert_eq!(&DedupKey([7; 16]).hex_bytes()[..], hex.as_bytes());
}
