//! Fixtures shared by the benches: real MinIO and RustFS payloads from tests/fixtures, and
//! identity keys for the store benches.

use bytes::Bytes;
use dedup_gateway::pipeline::key::DedupKey;

/// A captured webhook body from `tests/fixtures/minio-events/`.
pub fn fixture(name: &str) -> Bytes {
    let path = format!(
        "{}/tests/fixtures/minio-events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    match std::fs::read(&path) {
        Ok(b) => Bytes::from(b),
        Err(e) => panic!("fixture {path}: {e}"),
    }
}

/// A stream of `n` keys where a share `dup_ratio` repeats one of `pool` hot keys (so the store
/// answers `Duplicate` once they are committed) and the rest are fresh; `stream` keeps streams of
/// different threads disjoint. Like vector's `cycle_size`, the ratio sets the repeat rate.
pub fn key_stream(stream: u64, n: u64, dup_ratio: f64, pool: u64) -> Vec<DedupKey> {
    let every = if dup_ratio <= 0.0 {
        u64::MAX
    } else {
        (1.0 / (1.0 - dup_ratio.min(0.999_999))).round() as u64
    };
    (0..n)
        .map(|i| {
            let repeat = dup_ratio >= 1.0 || (every != u64::MAX && i % every != 0);
            if repeat {
                DedupKey::synthetic(u64::MAX - (i % pool))
            } else {
                DedupKey::synthetic((stream << 40) | i)
            }
        })
        .collect()
}
