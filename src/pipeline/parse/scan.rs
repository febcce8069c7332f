//! Scan: a single-pass reader for the plain body MinIO sends, tried before serde.
//!
//! Why: serde_json read the drop path's one-record body (1.2 KB) in ≈ 18.7 k instructions
//! (callgrind, BENCHMARKS.md "Session 5 levers"), most of it the generic visitor machinery
//! around each of the ≈ 60 keys it skips (identifier deserialisers, `IgnoredAny`, the derive's
//! field matching, the `Option`/`Obj` wrappers), plus the depth pre-pass and a UTF-8 pass. This
//! reader walks the bytes once, compares keys as plain `&str`, and builds the same
//! [`RawRecord`] serde builds, which the parent's `validate` then checks, so the checks are
//! shared and not copied.
//!
//! Equivalence: the scanner either returns exactly what the serde fast path returns, or `None`,
//! and then serde reads the body as before (the depth guard, the one-pass serde path, the
//! two-pass path), so every error and every unusual body reads as it did. It accepts only a
//! subset of what serde accepts, checked here byte by byte:
//! - the whole body is UTF-8 (the serde fast path's own precondition);
//! - JSON as serde_json reads it: whitespace is space, tab, LF, CR; numbers
//!   `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; `true`, `false`, `null`; no trailing
//!   comma, no trailing bytes after the top-level object;
//! - no string (key or value, read or skipped) holds a backslash or a control byte: escapes and
//!   their edge cases (surrogates, escaped key names such as `Rec\u006frds`) are left to serde;
//! - nesting at most [`MAX_DEPTH`] (so the guard would have passed the body);
//! - the top level is an object with exactly one `Records` key, whose value is a non-empty array
//!   of objects; in a record, `eventName`, `s3` and the fields under it are each `null` or of the
//!   expected type and appear at most once (serde's derive refuses a repeated field); a
//!   replication status key in `userMetadata` has a string value.
//!
//! Strings are skipped 8 bytes at a time ([`crate::swar`], the test serde_json uses). The
//! property tests in `scan_tests.rs` and the fuzz target (`pipeline::check`, which compares `records` with the
//! two-pass path) hold the scanner to serde.

use std::borrow::Cow;

use crate::swar::stops;

use super::{
    MAX_DEPTH,
    wire::{Obj, RawBucket, RawObject, RawRecord, RawS3, StatusFields, Str, status_key},
};

/// The records of a body the scanner read, each with its raw slice (`first` kept apart so that
/// the one-record body allocates no list).
pub(super) struct Scanned<'a> {
    pub(super) first: (&'a str, RawRecord<'a>),
    pub(super) rest: Vec<(&'a str, RawRecord<'a>)>,
}

/// Reads `body` if it is a plain MinIO notification (see the module doc); `None` otherwise.
pub(super) fn scan(body: &[u8]) -> Option<Scanned<'_>> {
    let text = simdutf8::basic::from_utf8(body).ok()?;
    let mut s = Scanner {
        text,
        bytes: body,
        at: 0,
    };
    if s.ws()? != b'{' {
        return None;
    }
    let mut records = None;
    s.object(1, |s, key| {
        if key == b"Records" {
            put(&mut records, s.records()?)
        } else {
            s.skip(1)
        }
    })?;
    match s.ws() {
        None => records,
        Some(_) => None,
    }
}

/// Stores a field's value, refusing a second one (serde's derive errs on a repeated field).
fn put<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// A cursor over the body; every method returns `None` where serde might read differently.
struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    /// Skips whitespace and peeks at the next byte.
    #[inline]
    fn ws(&mut self) -> Option<u8> {
        // MinIO sends compact JSON: most calls find no whitespace at all.
        let b = *self.bytes.get(self.at)?;
        if b > b' ' {
            return Some(b);
        }
        self.ws_slow()
    }

    fn ws_slow(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes.get(self.at) {
            match b {
                b' ' | b'\n' | b'\t' | b'\r' => self.at += 1,
                _ => return Some(b),
            }
        }
        None
    }

    /// Consumes `want` after whitespace.
    fn eat(&mut self, want: u8) -> Option<()> {
        (self.ws()? == want).then(|| self.at += 1)
    }

    /// At an opening quote: the string's contents as raw bytes; `None` at an escape, a control
    /// byte or the end of the body. (Bytes, not `&str`: most strings are only skipped or
    /// compared, and [`Self::text`] makes a `&str` of the few that are kept.)
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.at + 1;
        let end = self.string_end(start)?;
        self.at = end + 1;
        self.bytes.get(start..end)
    }

    /// The index of the closing quote of the string whose contents start at `i`.
    fn string_end(&self, mut i: usize) -> Option<usize> {
        loop {
            while let Some(chunk) = self.bytes.get(i..i + 8) {
                let m = stops(u64::from_le_bytes(chunk.try_into().ok()?));
                if m != 0 {
                    i += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            match *self.bytes.get(i)? {
                b'"' => return Some(i),
                b'\\' | 0..0x20 => return None,
                // A non-ASCII byte (part of a character: the body is UTF-8), or a plain byte in
                // the last 7 of the body.
                _ => i += 1,
            }
        }
    }

    /// A string value that is kept, as `&str`.
    fn text(&mut self) -> Option<&'a str> {
        let start = self.at + 1;
        let end = self.string_end(start)?;
        self.at = end + 1;
        // Both ends sit next to an ASCII quote, so they are character boundaries.
        self.text.get(start..end)
    }

    /// Consumes the literal `word` (`true`, `false`, `null`).
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// Consumes a number in JSON's grammar (serde_json's `ignore_integer` and what follows it).
    fn number(&mut self) -> Option<()> {
        let b = self.bytes;
        let mut i = self.at;
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match *b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = digits(i + 1),
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            if !b.get(i + 1)?.is_ascii_digit() {
                return None;
            }
            i = digits(i + 1);
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !b.get(i)?.is_ascii_digit() {
                return None;
            }
            i = digits(i);
        }
        self.at = i;
        Some(())
    }

    /// Skips one value inside a container at nesting `depth`. Inline for the common value, a
    /// string; the rest behind a call.
    #[inline]
    fn skip(&mut self, depth: usize) -> Option<()> {
        if self.ws()? == b'"' {
            self.at = self.string_end(self.at + 1)? + 1;
            return Some(());
        }
        self.skip_other(depth)
    }

    #[inline(never)]
    fn skip_other(&mut self, depth: usize) -> Option<()> {
        match self.ws()? {
            b'{' => self.object(depth + 1, |s, _| s.skip(depth + 1)),
            b'[' => self.array(depth + 1, |s| s.skip(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// At `{`: an object at nesting `depth`; `field` consumes the value of each key.
    fn object(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        self.container(depth, b'}', |s| {
            if s.ws()? != b'"' {
                return None;
            }
            let key = s.string()?;
            s.eat(b':')?;
            field(s, key)
        })
    }

    /// At `[`: an array at nesting `depth`; `item` consumes each element.
    fn array(&mut self, depth: usize, item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.container(depth, b']', item)
    }

    /// At the opening byte of a container at nesting `depth`: `element` consumes each element,
    /// separated by commas, up to `close` (no trailing comma).
    fn container(
        &mut self,
        depth: usize,
        close: u8,
        mut element: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        if self.ws()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            element(self)?;
            match self.ws()? {
                b',' => self.at += 1,
                c if c == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A read string field: `null` or a string (serde's `Option<Str>`).
    fn opt_str(&mut self) -> Option<Option<Str<'a>>> {
        match self.ws()? {
            b'"' => Some(Some(Str(Cow::Borrowed(self.text()?)))),
            b'n' => self.literal(b"null").map(|()| None),
            _ => None,
        }
    }

    /// A read object field at nesting `depth`: `null` or an object read by `read` (serde's
    /// `Option<Obj<T>>`).
    fn opt_obj<T>(
        &mut self,
        depth: usize,
        read: fn(&mut Self, usize) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.ws()? {
            b'{' => read(self, depth).map(Some),
            b'n' => self.literal(b"null").map(|()| None),
            _ => None,
        }
    }

    /// `Records`: a non-empty array of record objects, each with its raw slice.
    fn records(&mut self) -> Option<Scanned<'a>> {
        if self.ws()? != b'[' {
            return None;
        }
        let mut first = None;
        let mut rest = Vec::new();
        self.array(2, |s| {
            if s.ws()? != b'{' {
                return None;
            }
            let start = s.at;
            let record = s.record(3)?;
            let raw = s.text.get(start..s.at)?;
            match first {
                None => first = Some((raw, record)),
                Some(_) => rest.push((raw, record)),
            }
            Some(())
        })?;
        Some(Scanned {
            first: first?,
            rest,
        })
    }

    fn record(&mut self, depth: usize) -> Option<RawRecord<'a>> {
        let (mut event_name, mut s3) = (None, None);
        self.object(depth, |s, key| match key {
            b"eventName" => put(&mut event_name, s.opt_str()?),
            b"s3" => put(&mut s3, s.opt_obj(depth + 1, Self::s3)?),
            _ => s.skip(depth),
        })?;
        Some(RawRecord {
            event_name: event_name.flatten(),
            s3: s3.flatten().map(Obj),
        })
    }

    fn s3(&mut self, depth: usize) -> Option<RawS3<'a>> {
        let (mut bucket, mut object) = (None, None);
        self.object(depth, |s, key| match key {
            b"bucket" => put(&mut bucket, s.opt_obj(depth + 1, Self::bucket)?),
            b"object" => put(&mut object, s.opt_obj(depth + 1, Self::object_fields)?),
            _ => s.skip(depth),
        })?;
        Some(RawS3 {
            bucket: bucket.flatten().map(Obj),
            object: object.flatten().map(Obj),
        })
    }

    fn bucket(&mut self, depth: usize) -> Option<RawBucket<'a>> {
        let mut name = None;
        self.object(depth, |s, key| match key {
            b"name" => put(&mut name, s.opt_str()?),
            _ => s.skip(depth),
        })?;
        Some(RawBucket {
            name: name.flatten(),
        })
    }

    fn object_fields(&mut self, depth: usize) -> Option<RawObject<'a>> {
        let (mut key_, mut version_id, mut sequencer, mut etag, mut meta) =
            (None, None, None, None, None);
        self.object(depth, |s, key| match key {
            b"key" => put(&mut key_, s.opt_str()?),
            b"versionId" => put(&mut version_id, s.opt_str()?),
            b"sequencer" => put(&mut sequencer, s.opt_str()?),
            b"eTag" => put(&mut etag, s.opt_str()?),
            b"userMetadata" => put(&mut meta, s.opt_obj(depth + 1, Self::metadata)?),
            _ => s.skip(depth),
        })?;
        Some(RawObject {
            key: key_.flatten(),
            version_id: version_id.flatten(),
            sequencer: sequencer.flatten(),
            etag: etag.flatten(),
            user_metadata: meta.flatten(),
        })
    }

    /// `userMetadata`: only the replication status keys are read (`wire::StatusFields`).
    fn metadata(&mut self, depth: usize) -> Option<StatusFields> {
        let mut out = StatusFields::default();
        self.object(depth, |s, key| match status_key(key) {
            Some(which) => {
                if s.ws()? != b'"' {
                    return None;
                }
                out.note(which, s.text()?);
                Some(())
            }
            None => s.skip(depth),
        })?;
        Some(out)
    }
}
