//! Word-at-a-time byte tests ("SIMD within a register"), shared by the two places that scan
//! text on every request: the parse scanner skipping JSON strings (`pipeline::parse::scan`)
//! and the decision log line deciding whether a field needs `Debug` quoting
//! (`logging::plain`). Both ask the same question — where is the first `"`, `\`, control or
//! non-ASCII byte — and asking it of eight bytes at once costs about one instruction a byte
//! instead of six (BENCHMARKS.md, session 6).

/// 0x01 in every byte.
pub(crate) const ONES: u64 = u64::MAX / 255;

/// The bytes of `w` (read little-endian) that end a plain run inside a string — `"`, `\`, the
/// control bytes, and any non-ASCII byte — as a mask whose lowest set bit marks the first of
/// them. Each byte below the first stop is ASCII and at least 0x20, so none of the three
/// subtractions borrows across it, and the first stop is found exactly (higher bits may be
/// false positives; a caller that needs more than the first reads the bytes itself). Zero
/// exactly when the word has none.
pub(crate) fn stops(w: u64) -> u64 {
    let ctrl = w.wrapping_sub(ONES * 0x20);
    let quote = (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
    let backslash = (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
    (w | ctrl | quote | backslash) & (ONES << 7)
}

#[cfg(test)]
mod tests {
    use super::stops;

    proptest::proptest! {
        /// The mask's lowest bit is the first byte that is `"`, `\`, a control byte or
        /// non-ASCII, whatever the other bytes are.
        #[test]
        fn the_stop_mask_finds_the_first_stop(
            w in proptest::collection::vec(
                proptest::prop_oneof![proptest::sample::select(b"\"\\\x00\x1f\x20\x21\x7f\x80\xff".to_vec()), proptest::num::u8::ANY],
                8,
            ),
        ) {
            let naive = w
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b));
            let m = stops(u64::from_le_bytes(w[..].try_into().unwrap()));
            let swar = (m != 0).then(|| (m.trailing_zeros() / 8) as usize);
            proptest::prop_assert_eq!(swar, naive);
        }
    }
}
