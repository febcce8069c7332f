//! Resident memory per cached identity in the memory dedup store, measured, not estimated.
//!
//! Inserts `N` (default 1,000,000) committed identities through [`MemoryStore::insert_committed_at`]
//! — the same map, packing and growth as the live path — and reports the change of the process's
//! resident set (`/proc/self/statm`) divided by `N`. The figure therefore includes the map's
//! spare capacity after its last doubling and whatever the allocator keeps from earlier tables,
//! which is what an operator pays; a `size_of` sum would miss both.
//!
//! Run: `cargo run --release --example mem_per_key [N]`. Prints one line of `key=value` pairs.

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dedup_gateway::{pipeline::key::DedupKey, store::MemoryStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 1_000_000,
    };
    let page = page_size()?;
    // Bound above N so no eviction scan runs; the bound itself allocates nothing.
    let store = MemoryStore::new(n.saturating_mul(2));
    let ttl = Duration::from_secs(24 * 3600);
    let before = resident_pages()? * page;
    for i in 0..n as u64 {
        store.insert_committed_at(&DedupKey::synthetic(i), ttl, 0)?;
    }
    let after = resident_pages()? * page;
    if store.len() != n {
        return Err(format!("store holds {} keys, expected {n}", store.len()).into());
    }
    let delta = after.saturating_sub(before);
    println!(
        "keys={n} rss_before_bytes={before} rss_after_bytes={after} bytes_per_key={:.1}",
        delta as f64 / n as f64
    );
    Ok(())
}

/// Second field of `/proc/self/statm`: resident pages.
fn resident_pages() -> Result<u64, Box<dyn std::error::Error>> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let field = statm
        .split_whitespace()
        .nth(1)
        .ok_or("short /proc/self/statm")?;
    Ok(field.parse()?)
}

/// The page size, derived from `VmRSS` (kB) over statm's resident pages, rounded to a power of two,
/// so the example needs no libc call.
fn page_size() -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or("no VmRSS in /proc/self/status")?
        .parse()?;
    let pages = resident_pages()?.max(1);
    Ok((kb * 1024 / pages).next_power_of_two().max(4096))
}
