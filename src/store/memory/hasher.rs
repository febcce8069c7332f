//! The map's hasher: the digest's own bits, not SipHash over them.
//!
//! Why it is safe: a map key here is a keyed BLAKE3 digest (`identity.rs`, keyed by
//! `dedup.hash_secret`), so its bits are already uniform, and an attacker who can choose object
//! names still cannot choose digests without the secret — the flooding SipHash's random key
//! defends against needs chosen hashes, which a keyed digest does not give. Hashing the digest
//! again is wasted work on every lookup (two per forwarded record, one per duplicate).
//!
//! `[u8; 16]` hashes as a length prefix (`write_usize(16)`, ignored: every key has that length)
//! and then its bytes; the two 8-byte halves are folded into one `u64`. dashmap picks the shard
//! from the bits below the top seven and hashbrown the bucket from the low bits and the tag
//! from the top seven: all of them digest bits.

use std::hash::{BuildHasherDefault, Hasher};

/// The map's `BuildHasher`.
pub(super) type DigestState = BuildHasherDefault<DigestHasher>;

/// Folds the bytes written into one `u64` (see the module doc).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut halves = bytes.chunks_exact(8);
        for h in &mut halves {
            let mut b = [0u8; 8];
            b.copy_from_slice(h);
            self.0 ^= u64::from_le_bytes(b);
        }
        for &b in halves.remainder() {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    /// The slice length prefix: the same for every key.
    fn write_usize(&mut self, _len: usize) {}
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn a_digest_hashes_to_its_folded_halves() {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&0x0123_4567_89ab_cdef_u64.to_le_bytes());
        d[8..].copy_from_slice(&0xff00_ff00_ff00_ff00_u64.to_le_bytes());
        let h = DigestState::default().hash_one(d);
        assert_eq!(h, 0x0123_4567_89ab_cdef ^ 0xff00_ff00_ff00_ff00);
    }

    #[test]
    fn distinct_digests_spread() {
        let hashes: std::collections::HashSet<u64> = (0..10_000u64)
            .map(|i| DigestState::default().hash_one(crate::identity::DedupKey::synthetic(i).0))
            .collect();
        assert_eq!(hashes.len(), 10_000);
    }
}
