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
//!
//! A sequencer-keyed record (unversioned bucket) also has an alias identity that
//! reconciliation can derive from a listing: see [`alias`].

mod alias;

use std::{cell::RefCell, fmt, io::Write, path::Path};

use subtle::ConstantTimeEq;

use super::{parse::Record, policy::Class};
pub use alias::{sequencer_millis, sequencer_of_listing};

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
mod tests;
