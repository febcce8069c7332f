//! Identity: the vocabulary every stage shares about *which* event and *whose* claim.
//!
//! [`DedupKey`] is the 16-byte keyed digest of a record's identity tuple (derived in
//! [`crate::pipeline::key`], which knows records and classes); [`Owner`] is the token of one claim
//! on it. They sit in a leaf module, importing nothing from the crate, so the store, the spool,
//! the delivery and the history can name them without importing the pipeline that derives them:
//! the imports then run one way only, from the pipeline down to the stages it drives.

use std::fmt;

/// A dedup identity digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey(pub [u8; 16]);

impl DedupKey {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The lowercase hex form in a stack buffer (the `X-Dedup-Key` header needs no `String`).
    pub fn hex_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // Cannot fail: the buffer is exactly twice the key's length.
        let _ = hex::encode_to_slice(self.0, &mut out);
        out
    }

    /// The `i`-th of a sequence of distinct, uniformly spread keys (splitmix64), standing in for
    /// digests where only their bytes matter: store benchmarks and memory sizing.
    pub fn synthetic(i: u64) -> Self {
        let mix = |mut z: u64| {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&mix(i).to_le_bytes());
        out[8..].copy_from_slice(&mix(i ^ 0xA5A5_A5A5_A5A5_A5A5).to_le_bytes());
        Self(out)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DedupKey({})", self.to_hex())
    }
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        // Encoding 16 bytes into 32 always fits.
        let _ = hex::encode_to_slice(self.0, &mut buf);
        f.write_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

/// Identifies one reservation; generated per accepted copy.
pub type Owner = u64;

/// A fresh owner token (odd, so never 0, which the spool's records read as "no token yet").
pub fn new_owner() -> Owner {
    rand::random::<u64>() | 1
}
