//! Whether a log field's text can be written between quotes as it is, eight bytes at a time.
//!
//! Why: every decision line writes seven string fields, and `Debug` quoting needs an escape
//! only for `"`, `\`, control bytes and non-ASCII text. Asking that of each byte in turn cost
//! about six instructions a byte, 0.9 k per line (BENCHMARKS.md, session 6); the word-at-a-time
//! test below costs about one. It may answer "not plain" for a plain text (then the caller
//! takes `Debug`'s slower, always-correct path); it never answers "plain" for a text that
//! needs an escape.

use crate::swar::{ONES, stops};

/// A high bit set in every byte of `w` that is zero (and possibly in bytes above one that is).
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & (ONES << 7)
}

/// Non-zero when some byte of `w` is below 0x20, is 0x7f or above, or is `"` or `\`: the
/// string-run stops plus DEL, which `Debug` also escapes.
fn needs_escape(w: u64) -> u64 {
    stops(w) | zero_bytes(w ^ (ONES * 0x7f))
}

/// True only if every byte of `s` is printable ASCII other than `"` and `\`.
pub(super) fn is_plain(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        if needs_escape(u64::from_le_bytes(w)) != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::is_plain;

    fn naive(s: &str) -> bool {
        s.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    }

    #[test]
    fn every_byte_value_in_every_position() {
        for b in 0u8..=0x7f {
            for at in 0..17 {
                let mut v = vec![b'a'; 17];
                v[at] = b;
                let s = std::str::from_utf8(&v).expect("ascii");
                assert_eq!(is_plain(s), naive(s), "byte {b:#x} at {at}");
            }
        }
        assert!(!is_plain("aaaaaaaé"));
        assert!(is_plain(""));
    }

    proptest! {
        #[test]
        fn agrees_with_the_byte_by_byte_test(s in "[ -~\\t\\n\"\\\\é\u{7f}]{0,40}") {
            prop_assert_eq!(is_plain(&s), naive(&s));
        }
    }
}
