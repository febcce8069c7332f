//! Fuzz target: parse → policy → key with the invariants of `pipeline::check`.
//!
//! The same function runs the committed corpus and every reproducer in the normal test suite
//! (`tests/it/hardening/fuzz_corpus.rs`), so a finding fixed here stays fixed.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dedup_gateway::pipeline::check::check_body(data);
});
