//! Key: the dedup identity of a record as a fixed-size digest.
//!
//! The identity is the tuple (service, credential, bucket, decoded object key, version, class) of
//! contract §6. It is hashed with keyed BLAKE3 under a secret the gateway keeps
//! (`dedup.hash_secret` or `{data_dir}/dedup-secret`), for three reasons:
//! - the store holds 16 bytes per identity instead of the strings, which bounds memory per key;
//! - the `Authorization` header enters only through the keyed hash, so a stored key or a logged
//!   dedup key can neither reveal the token nor be confirmed by guessing short tokens offline;
//! - a request with a wrong token gets a different identity and can never shadow the real event.
//!
//! Fields are length-prefixed so that no two different tuples feed the same byte stream. 128 bits
//! keep the chance of any collision among 10^12 identities below 10^-14.

use std::{cell::RefCell, fmt, io::Write, path::Path};

use subtle::ConstantTimeEq;

use super::{parse::Record, policy::Class};
pub use crate::identity::DedupKey;
use crate::pipeline::parse::VersionSource;

/// Derives dedup keys under one secret.
#[derive(Clone)]
pub struct KeyDeriver {
    secret: [u8; 32],
}

impl fmt::Debug for KeyDeriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDeriver { secret: *** }")
    }
}

/// The part of the identity shared by every record of one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestScope {
    /// Keyed digest of (service, Authorization header).
    scope: [u8; 32],
}

impl KeyDeriver {
    /// A deriver keyed by an arbitrary-length secret (stretched with BLAKE3's KDF mode).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: blake3::derive_key("dedup-gateway 2026 identity key", secret),
        }
    }

    /// A deriver with a fresh random secret (identities do not survive a restart).
    pub fn random() -> Self {
        Self::new(&rand::random::<[u8; 32]>())
    }

    /// The secret kept in `dir` by [`Self::load_or_create`], if there is one; creates nothing.
    pub fn load(dir: &Path) -> Option<Self> {
        std::fs::read(dir.join("dedup-secret"))
            .ok()
            .filter(|bytes| bytes.len() >= 16)
            .map(|bytes| Self::new(&bytes))
    }

    /// Reads `{dir}/dedup-secret`, creating it with a random secret (mode 0600) when missing.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("dedup-secret");
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() >= 16 => return Ok(Self::new(&bytes)),
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is shorter than 16 bytes", path.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(dir)?;
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let tmp = dir.join("dedup-secret.tmp");
        {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(secret.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(Self::new(secret.as_bytes()))
    }

    /// Hashes the request-wide part of the identity once per request.
    ///
    /// The last (secret, service, `Authorization`) a runtime thread hashed is remembered with its
    /// digest: MinIO posts every event of a target with the same service and header, so most
    /// requests skip one of the two keyed hashes per record (≈ 0.2 µs, BENCHMARKS.md). The header
    /// and secret are compared in constant time; a hit or miss only tells whether the whole
    /// header equals the previous one on that thread, never how much of it matched.
    pub fn scope(&self, service: &str, authorization: Option<&[u8]>) -> RequestScope {
        let remembered = LAST_SCOPE.with(|memo| {
            let memo = memo.try_borrow().ok()?;
            let m = memo.as_ref()?;
            m.matches(&self.secret, service, authorization)
                .then_some(m.scope)
        });
        if let Some(scope) = remembered {
            return RequestScope { scope };
        }
        let scope = self.hash_scope(service, authorization);
        LAST_SCOPE.with(|memo| {
            if let Ok(mut memo) = memo.try_borrow_mut() {
                let m = memo.get_or_insert_with(ScopeMemo::default);
                m.secret = self.secret;
                m.service.clear();
                m.service.push_str(service);
                m.has_auth = authorization.is_some();
                m.auth.clear();
                m.auth.extend_from_slice(authorization.unwrap_or_default());
                m.scope = scope;
            }
        });
        RequestScope { scope }
    }

    fn hash_scope(&self, service: &str, authorization: Option<&[u8]>) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        let mut w = Fields::new(&mut h);
        w.field(b"svc", service.as_bytes());
        match authorization {
            Some(a) => w.field(b"auth", a),
            None => w.field(b"noauth", b""),
        };
        w.flush();
        *h.finalize().as_bytes()
    }

    /// The identity digest of one record in a request scope.
    pub fn key(&self, scope: &RequestScope, record: &Record<'_>, class: Class<'_>) -> DedupKey {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        let mut w = Fields::new(&mut h);
        w.put(&scope.scope);
        w.field(b"bucket", record.bucket.as_bytes());
        w.field(b"key", record.key.as_bytes());
        let tag: &[u8] = match record.version_source {
            VersionSource::VersionId => b"vid",
            VersionSource::Sequencer => b"seq",
            VersionSource::ETag => b"etag",
        };
        w.field(tag, record.version.as_bytes());
        w.field(b"class", class.as_str().as_bytes());
        w.flush();
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        DedupKey(out)
    }
}

/// The last request scope a thread derived (see [`KeyDeriver::scope`]); buffers are reused.
#[derive(Default)]
struct ScopeMemo {
    secret: [u8; 32],
    service: String,
    has_auth: bool,
    auth: Vec<u8>,
    scope: [u8; 32],
}

impl ScopeMemo {
    fn matches(&self, secret: &[u8; 32], service: &str, authorization: Option<&[u8]>) -> bool {
        let auth = match authorization {
            Some(a) => self.has_auth && ct_eq_words(&self.auth, a),
            None => !self.has_auth,
        };
        ct_eq_words(&self.secret, secret) && self.service == service && auth
    }
}

/// Constant-time equality (the length is not secret): the XOR of all bytes, 8 at a time, is
/// OR-ed together without a branch and tested once with `subtle`. `subtle`'s slice `ct_eq` puts
/// every byte through its optimisation barrier, which was 4 % of the per-event time for a 32-byte
/// secret and a 30-byte header (BENCHMARKS.md).
fn ct_eq_words(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_rest) = a.as_chunks::<8>();
    let (b_words, b_rest) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        diff |= u64::from(x ^ y);
    }
    bool::from(diff.ct_eq(&0))
}

thread_local! {
    static LAST_SCOPE: RefCell<Option<ScopeMemo>> = const { RefCell::new(None) };
}

/// The hash input, gathered on the stack and handed to BLAKE3 in one `update` per 256 bytes:
/// an identity is a dozen short pieces, and BLAKE3's per-call bookkeeping on each of them cost
/// more than hashing the bytes (BENCHMARKS.md). The byte stream, and so every digest, is the same
/// as one `update` per piece.
struct Fields<'h> {
    h: &'h mut blake3::Hasher,
    buf: [u8; 256],
    len: usize,
}

impl<'h> Fields<'h> {
    fn new(h: &'h mut blake3::Hasher) -> Self {
        Self {
            h,
            buf: [0; 256],
            len: 0,
        }
    }

    /// One length-prefixed field: name length (u32 LE), name, value length (u64 LE), value.
    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.put(&(name.len() as u32).to_le_bytes());
        self.put(name);
        self.put(&(value.len() as u64).to_le_bytes());
        self.put(value);
    }

    fn put(&mut self, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            self.flush();
            self.h.update(bytes);
        }
    }

    /// Hands the gathered bytes to the hasher; call before `finalize`.
    fn flush(&mut self) {
        self.h.update(&self.buf[..self.len]);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
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
}
