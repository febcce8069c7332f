//! The journal's byte format: a segment is a magic header followed by frames, each one change to
//! one spool id, checksummed on its own.
//!
//! Why a checksum per frame and a length in front: a crash can leave the end of the last
//! segment half written (the batch after the last fsync), and recovery must tell the last whole
//! frame from garbage without trusting anything after it. A frame is `len u32 LE ‖ crc32 u32 LE ‖
//! body`, where `body = kind u8 ‖ id u64 LE ‖ payload` and `len` is the body's length; the CRC
//! covers the body. The first frame that is short, too long or fails its CRC ends the segment.

use crate::identity::DedupKey;

/// The first bytes of every segment file: what it is and which version of this format.
pub(crate) const MAGIC: &[u8; 8] = b"DGJRNL01";
/// Bytes in front of a frame's body.
pub(crate) const HEAD: usize = 8;
/// A body this long or longer is garbage, not a record (records are far below it).
const MAX_BODY: usize = 256 * 1024 * 1024;

const PUT: u8 = 1;
const DELIVERED: u8 = 2;
const GONE: u8 = 3;

/// One change to one spool id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// The record of `id` is now `entry` (an append, an update, a revive or a relocation).
    Put { id: u64, entry: &'a [u8] },
    /// OSCAR took `id`; its identity is delivered until `expires_ms`.
    Delivered {
        id: u64,
        key: DedupKey,
        expires_ms: u64,
    },
    /// `id` left the spool without a delivery (dead-lettered, or a superseded held copy).
    Gone { id: u64 },
}

impl Frame<'_> {
    pub fn id(&self) -> u64 {
        match *self {
            Frame::Put { id, .. } | Frame::Delivered { id, .. } | Frame::Gone { id } => id,
        }
    }

    /// Appends this frame to `out`; answers the length it added.
    pub fn encode(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0; HEAD]);
        let (kind, id) = match *self {
            Frame::Put { id, .. } => (PUT, id),
            Frame::Delivered { id, .. } => (DELIVERED, id),
            Frame::Gone { id } => (GONE, id),
        };
        out.push(kind);
        out.extend_from_slice(&id.to_le_bytes());
        match *self {
            Frame::Put { entry, .. } => out.extend_from_slice(entry),
            Frame::Delivered {
                key, expires_ms, ..
            } => {
                out.extend_from_slice(&expires_ms.to_le_bytes());
                out.extend_from_slice(&key.0);
            }
            Frame::Gone { .. } => {}
        }
        let body = &out[start + HEAD..];
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(body);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + HEAD].copy_from_slice(&crc.to_le_bytes());
        out.len() - start
    }
}

/// Why reading stopped before the end of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Torn;

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// The frame at the start of `buf` and its whole length; `Ok(None)` when `buf` is empty.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, Torn> {
    if buf.is_empty() {
        return Ok(None);
    }
    let len = u32_at(buf, 0).ok_or(Torn)? as usize;
    let crc = u32_at(buf, 4).ok_or(Torn)?;
    if !(9..MAX_BODY).contains(&len) {
        return Err(Torn);
    }
    let body = buf.get(HEAD..HEAD + len).ok_or(Torn)?;
    if crc32fast::hash(body) != crc {
        return Err(Torn);
    }
    let id = u64_at(body, 1).ok_or(Torn)?;
    let payload = &body[9..];
    let frame = match body[0] {
        PUT => Frame::Put { id, entry: payload },
        DELIVERED if payload.len() == 24 => {
            let mut key = [0u8; 16];
            key.copy_from_slice(&payload[8..]);
            Frame::Delivered {
                id,
                key: DedupKey(key),
                expires_ms: u64_at(payload, 0).ok_or(Torn)?,
            }
        }
        GONE if payload.is_empty() => Frame::Gone { id },
        _ => return Err(Torn),
    };
    Ok(Some((frame, HEAD + len)))
}

/// Where a `Put` frame's entry starts inside the frame.
pub(crate) const PUT_ENTRY_AT: usize = HEAD + 9;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frames() -> impl Strategy<Value = Vec<(u8, u64, Vec<u8>)>> {
        proptest::collection::vec(
            (
                0u8..3,
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            0..8,
        )
    }

    fn build(spec: &[(u8, u64, Vec<u8>)]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (kind, id, bytes) in spec {
            let f = match kind {
                0 => Frame::Put {
                    id: *id,
                    entry: bytes,
                },
                1 => Frame::Delivered {
                    id: *id,
                    key: DedupKey([bytes.len() as u8; 16]),
                    expires_ms: *id ^ 7,
                },
                _ => Frame::Gone { id: *id },
            };
            f.encode(&mut buf);
        }
        buf
    }

    fn read_all(mut buf: &[u8]) -> (Vec<u64>, bool) {
        let mut ids = Vec::new();
        loop {
            match parse(buf) {
                Ok(Some((f, n))) => {
                    ids.push(f.id());
                    buf = &buf[n..];
                }
                Ok(None) => return (ids, false),
                Err(Torn) => return (ids, true),
            }
        }
    }

    proptest! {
        /// Every frame written reads back as itself, in order.
        #[test]
        fn frames_round_trip(spec in frames()) {
            let buf = build(&spec);
            let (ids, torn) = read_all(&buf);
            prop_assert!(!torn);
            prop_assert_eq!(ids, spec.iter().map(|s| s.1).collect::<Vec<_>>());
        }

        /// A tail cut anywhere, or one flipped byte, never yields a frame that was not written:
        /// what reads back is a prefix of what was written.
        #[test]
        fn a_torn_or_damaged_tail_reads_as_a_prefix(
            spec in frames(), cut in any::<prop::sample::Index>(), flip in any::<Option<prop::sample::Index>>()
        ) {
            let mut buf = build(&spec);
            if buf.is_empty() {
                return Ok(());
            }
            let cut = cut.index(buf.len() + 1);
            buf.truncate(cut);
            if let (Some(flip), false) = (flip, buf.is_empty()) {
                let at = flip.index(buf.len());
                buf[at] ^= 0x5a;
            }
            let (ids, _) = read_all(&buf);
            let written: Vec<u64> = spec.iter().map(|s| s.1).collect();
            prop_assert!(ids.len() <= written.len());
            prop_assert_eq!(&ids[..], &written[..ids.len()]);
        }
    }
}
