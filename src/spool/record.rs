//! The on-disk form of one spooled event (and of a dead-lettered one): a small versioned binary
//! record, hand-encoded so that the body is stored byte-for-byte, no field needs escaping, and
//! decoding a damaged record is an error, never a panic.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! u8 version (1) | u8 flags (1 held, 2 has-authorization, 4 dead, 8 has-owner)
//! u64 accepted_ms | u64 not_before_ms | [16] dedup key
//! u16 len, service | (u32 len, authorization)? | u32 len, body
//! u32 attempts made | u16 n, n × (u64 at_ms | u16 status, 0 = none | u16 len, outcome)
//! (u64 dead_ms | u16 len, reason)? | (u64 owner)?
//! ```
//!
//! The owner comes last, so a record written without it (older versions) still decodes, and
//! a reader that does not know the flag ignores it.
//!
//! Times are Unix milliseconds (wall clock), because they must mean the same after a restart.
//! The attempt list keeps the last [`MAX_ATTEMPTS_KEPT`] attempts, so a record stays small even with a
//! large `delivery.max_attempts`.

use bytes::Bytes;

use crate::identity::DedupKey;

const VERSION: u8 = 1;
const HELD: u8 = 1;
const HAS_AUTH: u8 = 2;
const DEAD: u8 = 4;
const HAS_OWNER: u8 = 8;

/// Attempts kept per record; older ones are dropped from the front.
pub const MAX_ATTEMPTS_KEPT: usize = 100;

/// One delivery attempt and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub at_ms: u64,
    /// OSCAR's status, when it answered at all.
    pub status: Option<u16>,
    /// `upstream-503`, `upstream-connect-error`, ...
    pub outcome: String,
}

/// Why and when an event went to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    pub at_ms: u64,
    pub reason: String,
}

/// A spooled event: everything needed to deliver it after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: DedupKey,
    pub service: String,
    /// The original `Authorization` header bytes (kept for delivery and replay, never listed).
    pub authorization: Option<Vec<u8>>,
    pub body: Bytes,
    pub accepted_ms: u64,
    /// Not delivered before this time (held PENDING records: accepted + grace); 0 = at once.
    pub not_before_ms: u64,
    /// A PENDING-marked record that must claim its identity before delivery.
    pub held: bool,
    /// Every attempt made so far (the list below keeps only the latest ones).
    pub attempts_made: u32,
    pub attempts: Vec<Attempt>,
    pub dead: Option<Dead>,
    /// The dedup-store owner token under which the identity is reserved (or held) for this
    /// event; 0 when unknown (records written by older versions). A shared store (Redis)
    /// outlives the process: the restore removes this token's entry before reserving again, so
    /// it does not take its own reservation for another copy.
    pub owner: u64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("spool record is truncated")]
    Truncated,
    #[error("spool record has unknown version {0}")]
    Version(u8),
    #[error("spool record has a field that is not UTF-8")]
    Utf8,
}

impl Entry {
    /// Records an attempt, keeping at most [`MAX_ATTEMPTS_KEPT`].
    pub fn push_attempt(&mut self, a: Attempt) {
        self.attempts_made = self.attempts_made.saturating_add(1);
        if self.attempts.len() >= MAX_ATTEMPTS_KEPT {
            self.attempts.remove(0);
        }
        self.attempts.push(a);
    }

    /// The accepted time of an encoded record, without decoding the rest.
    pub fn accepted_ms_of(buf: &[u8]) -> Option<u64> {
        let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }

    pub fn encode(&self) -> Vec<u8> {
        let auth_len = self.authorization.as_ref().map_or(0, |a| 4 + a.len());
        let mut out = Vec::with_capacity(
            64 + self.service.len() + auth_len + self.body.len() + 32 * self.attempts.len(),
        );
        let mut flags = 0;
        if self.held {
            flags |= HELD;
        }
        if self.authorization.is_some() {
            flags |= HAS_AUTH;
        }
        if self.dead.is_some() {
            flags |= DEAD;
        }
        if self.owner != 0 {
            flags |= HAS_OWNER;
        }
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&self.accepted_ms.to_be_bytes());
        out.extend_from_slice(&self.not_before_ms.to_be_bytes());
        out.extend_from_slice(&self.key.0);
        put_short(&mut out, self.service.as_bytes());
        if let Some(a) = &self.authorization {
            put_long(&mut out, a);
        }
        put_long(&mut out, &self.body);
        out.extend_from_slice(&self.attempts_made.to_be_bytes());
        let n = self.attempts.len().min(MAX_ATTEMPTS_KEPT);
        out.extend_from_slice(&(n as u16).to_be_bytes());
        for a in &self.attempts[self.attempts.len() - n..] {
            out.extend_from_slice(&a.at_ms.to_be_bytes());
            out.extend_from_slice(&a.status.unwrap_or(0).to_be_bytes());
            put_short(&mut out, a.outcome.as_bytes());
        }
        if let Some(d) = &self.dead {
            out.extend_from_slice(&d.at_ms.to_be_bytes());
            put_short(&mut out, d.reason.as_bytes());
        }
        if self.owner != 0 {
            out.extend_from_slice(&self.owner.to_be_bytes());
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor { buf };
        let version = c.u8()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let flags = c.u8()?;
        let accepted_ms = c.u64()?;
        let not_before_ms = c.u64()?;
        let mut key = [0u8; 16];
        key.copy_from_slice(c.take(16)?);
        let service = c.string_short()?;
        let authorization = if flags & HAS_AUTH != 0 {
            let n = c.u32()? as usize;
            Some(c.take(n)?.to_vec())
        } else {
            None
        };
        let n = c.u32()? as usize;
        let body = Bytes::copy_from_slice(c.take(n)?);
        let attempts_made = c.u32()?;
        let count = c.u16()? as usize;
        let mut attempts = Vec::with_capacity(count.min(MAX_ATTEMPTS_KEPT));
        for _ in 0..count {
            let at_ms = c.u64()?;
            let status = Some(c.u16()?).filter(|s| *s != 0);
            let outcome = c.string_short()?;
            attempts.push(Attempt {
                at_ms,
                status,
                outcome,
            });
        }
        let dead = if flags & DEAD != 0 {
            let at_ms = c.u64()?;
            let reason = c.string_short()?;
            Some(Dead { at_ms, reason })
        } else {
            None
        };
        let owner = if flags & HAS_OWNER != 0 { c.u64()? } else { 0 };
        Ok(Self {
            key: DedupKey(key),
            service,
            authorization,
            body,
            accepted_ms,
            not_before_ms,
            held: flags & HELD != 0,
            attempts_made,
            attempts,
            dead,
            owner,
        })
    }
}

/// A u16-length-prefixed field; longer input is cut (services and reasons are short by construction).
fn put_short(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&b[..n]);
}

/// A u32-length-prefixed field; bodies are bounded by `http.body_limit`, far below 4 GiB.
fn put_long(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u32::MAX as usize);
    out.extend_from_slice(&(n as u32).to_be_bytes());
    out.extend_from_slice(&b[..n]);
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn string_short(&mut self) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| DecodeError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            key: DedupKey([7; 16]),
            service: "svc".into(),
            authorization: Some(b"Bearer secret".to_vec()),
            body: Bytes::from_static(b"{\"Records\":[]}\xff"),
            accepted_ms: 1_700_000_000_000,
            not_before_ms: 1_700_000_030_000,
            held: true,
            attempts_made: 2,
            attempts: vec![
                Attempt {
                    at_ms: 1,
                    status: Some(503),
                    outcome: "upstream-503".into(),
                },
                Attempt {
                    at_ms: 2,
                    status: None,
                    outcome: "upstream-connect-error".into(),
                },
            ],
            dead: Some(Dead {
                at_ms: 3,
                reason: "upstream-401".into(),
            }),
            owner: 0x1234_5678_9abc_def1,
        }
    }

    #[test]
    fn round_trips() {
        let e = sample();
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        assert_eq!(Entry::accepted_ms_of(&e.encode()), Some(e.accepted_ms));
        let plain = Entry {
            authorization: None,
            held: false,
            attempts_made: 0,
            attempts: vec![],
            dead: None,
            owner: 0,
            ..sample()
        };
        assert_eq!(Entry::decode(&plain.encode()).unwrap(), plain);
    }

    #[test]
    fn damaged_records_are_errors() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut v = bytes.clone();
        v[0] = 9;
        assert_eq!(Entry::decode(&v), Err(DecodeError::Version(9)));
    }

    #[test]
    fn attempt_list_is_bounded() {
        let mut e = sample();
        for i in 0..(MAX_ATTEMPTS_KEPT as u64 + 10) {
            e.push_attempt(Attempt {
                at_ms: i,
                status: Some(500),
                outcome: "upstream-500".into(),
            });
        }
        assert_eq!(e.attempts.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(e.attempts_made, MAX_ATTEMPTS_KEPT as u32 + 12);
        assert_eq!(
            e.attempts.last().unwrap().at_ms,
            MAX_ATTEMPTS_KEPT as u64 + 9
        );
    }
}
