//! The fuzz corpus and every reproducer, replayed in the normal suite.
//!
//! `cargo fuzz` needs libFuzzer and runs outside CI (see fuzz/README.md); what it found must stay
//! fixed without it. So every file under `fuzz/corpus/*/`, `fuzz/artifacts/*/` (crash, timeout
//! and leak reproducers, when any are kept) and `tests/fixtures/fuzz-regressions/` goes through
//! the same checker the fuzz targets call: parse → policy → key with their invariants.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use crate::helpers::internals::check_body;

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// No input of the corpus, the reproducers or the hand-written regressions panics or breaks an
/// invariant of `pipeline::check`.
#[test]
fn every_corpus_file_and_reproducer_passes_the_checker() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "fuzz/corpus",
        "fuzz/artifacts",
        "tests/fixtures/fuzz-regressions",
        "tests/fixtures/minio-events",
    ] {
        files_under(&root.join(dir), &mut files);
    }
    files.sort();
    assert!(
        files.len() >= 40,
        "the committed corpus is missing ({} files)",
        files.len()
    );
    let mut failed = Vec::new();
    let mut keyed = 0;
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        match catch_unwind(AssertUnwindSafe(|| check_body(&data))) {
            Ok(summary) => keyed += summary.keyed,
            Err(_) => failed.push(f.strip_prefix(&root).unwrap_or(f).display().to_string()),
        }
    }
    assert!(
        failed.is_empty(),
        "inputs that break the pipeline: {failed:?}"
    );
    assert!(keyed > 0, "the corpus reaches key derivation");
}
