//! The memory dedup store under contention: two threads (the machine's cores, and the gateway's
//! runtime workers) each running reserve → commit, as the forward path does per record.
//!
//! Timed with `iter_custom`: the key streams are built before the clock starts, the two threads
//! run their halves at once, and the wall time of both is what is reported, so
//! `Throughput::Elements` gives store operations per second across both threads. Spawning the two
//! threads is inside the timing; criterion grows `iters` until that is noise.

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use dedup_gateway::store::{Claim, MemoryStore};

use crate::common::key_stream;

/// One bench case: how many of the records repeat an identity.
struct Param {
    slug: &'static str,
    dup_ratio: f64,
    /// Distinct repeated identities; 1 makes both threads fight over one key (one shard lock).
    pool: u64,
}

const PARAMS: &[Param] = &[
    // All fresh identities: reserve inserts, commit updates.
    Param {
        slug: "unique",
        dup_ratio: 0.0,
        pool: 64,
    },
    // The seed scenario's ratio: most events are repeats of a few recent versions.
    Param {
        slug: "dup-90",
        dup_ratio: 0.9,
        pool: 64,
    },
    // Worst case for locks: every record is the same identity.
    Param {
        slug: "one-hot-key",
        dup_ratio: 1.0,
        pool: 1,
    },
];

const THREADS: u64 = 2;
const LEASE: Duration = Duration::from_secs(120);
const TTL: Duration = Duration::from_secs(24 * 3600);

fn run(store: &MemoryStore, keys: &[dedup_gateway::pipeline::key::DedupKey], owner: u64) {
    for k in keys {
        if let Ok(Claim::Acquired | Claim::Preempted) = store.reserve_at(k, owner, LEASE, 1) {
            black_box(store.commit_at(k, owner, TTL, 1));
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_reserve_commit_2_threads");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    for p in PARAMS {
        group.bench_function(BenchmarkId::from_parameter(p.slug), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(THREADS);
                // A fresh store per sample; the bound is far above any sample so nothing is evicted.
                let store = MemoryStore::new(1 << 28);
                let streams: Vec<_> = (0..THREADS)
                    .map(|t| key_stream(t + 1, per_thread, p.dup_ratio, p.pool))
                    .collect();
                let started = Instant::now();
                std::thread::scope(|s| {
                    for (t, keys) in streams.iter().enumerate() {
                        let store = &store;
                        s.spawn(move || run(store, keys, t as u64 * 2 + 1));
                    }
                });
                started.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
