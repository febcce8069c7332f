//! Criterion benches of the gateway's hot path, one file per component (vector's
//! benches/transform layout): fixtures in `common`, the per-event decision in `decide`, the dedup
//! store under contention in `store`. Run: `cargo bench --bench pipeline`.

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

mod common;
mod decide;
mod store;

criterion::criterion_main!(decide::benches, store::benches);
