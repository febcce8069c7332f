//! Input guards: limits a body must meet before any parser sees it, so that the work per byte
//! stays bounded and every reader of the body (this gateway, serde_json, OSCAR) agrees on it.

/// Deepest nesting of arrays and objects a body may have. A MinIO event needs 6; serde_json stops
/// at 128 only where it builds values, while skipped values (unknown fields) may nest without
/// bound, and OSCAR's Go decoder stops at 10,000: one limit for the whole body keeps all three
/// readers in agreement and the work per byte constant.
pub const MAX_DEPTH: usize = 64;

/// True when `body` nests arrays/objects deeper than `max` (strings and escapes are skipped; the
/// JSON need not be valid, the parser judges that afterwards).
///
/// Runs on every body before the parser, so string contents — most of a MinIO event — are skipped
/// with `memchr2` to the next quote or backslash instead of byte by byte: the byte-by-byte loop
/// was a quarter of the per-event decision time (BENCHMARKS.md). Before that, the depth is bounded
/// by the number of `[` and `{` bytes anywhere in the body (inside strings too): only an opening
/// bracket outside a string deepens, so a body with at most `max` of them cannot nest deeper, and
/// the string-aware scan runs only on the rest. A MinIO event has about a dozen; counting them is
/// a branch-free loop the compiler vectorises, several times cheaper than the scan's per-string
/// `memchr2` calls on short strings.
pub(super) fn nested_deeper_than(body: &[u8], max: usize) -> bool {
    if openers_at_most(body, max) {
        return false;
    }
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        i += 1;
        match b {
            b'"' => loop {
                let Some(rest) = body.get(i..) else {
                    return false;
                };
                match memchr::memchr2(b'"', b'\\', rest) {
                    // Unterminated string: nothing after it can nest.
                    None => return false,
                    Some(n) if rest[n] == b'\\' => i += n + 2,
                    Some(n) => {
                        i += n + 1;
                        break;
                    }
                }
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// True when `body` holds at most `max` bytes `[` or `{`.
fn openers_at_most(body: &[u8], max: usize) -> bool {
    let mut n = 0usize;
    // `[` (0x5B) and `{` (0x7B) are the only bytes with `b | 0x20 == b'{'`. Per-chunk `u8` sums
    // cannot overflow in 255 bytes and keep the vector lanes narrow.
    for chunk in body.chunks(255) {
        let in_chunk = chunk
            .iter()
            .fold(0u8, |acc, &b| acc.wrapping_add(u8::from(b | 0x20 == b'{')));
        n += usize::from(in_chunk);
        if n > max {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-by-byte scan `nested_deeper_than` replaced, kept as its reference.
    fn nested_deeper_than_reference(body: &[u8], max: usize) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in body {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }

    proptest::proptest! {
        /// The memchr scan agrees with the byte-by-byte one on any mix of quotes, escapes and
        /// brackets, including unterminated strings and a trailing backslash.
        #[test]
        fn depth_scan_matches_reference(
            body in proptest::collection::vec(proptest::sample::select(b"\"\\[]{}a,:".to_vec()), 0..64),
            max in 0usize..24,
        ) {
            proptest::prop_assert_eq!(nested_deeper_than(&body, max), nested_deeper_than_reference(&body, max));
        }

        /// The bracket count behind the scan's shortcut, across its 255-byte chunks.
        #[test]
        fn opener_count_matches_naive(
            body in proptest::collection::vec(proptest::sample::select(b"[{]}a\"\x5b\x7b\xdb\xfb".to_vec()), 0..1200),
            max in 0usize..400,
        ) {
            let naive = body.iter().filter(|&&b| b == b'[' || b == b'{').count();
            proptest::prop_assert_eq!(openers_at_most(&body, max), naive <= max);
        }
    }
}
