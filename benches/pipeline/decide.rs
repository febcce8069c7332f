//! Parse + policy + key derivation per record: everything the gateway does to a body before it
//! asks the dedup store, for one payload of each kind the seed scenario sends.
//!
//! Throughput is in records (`Throughput::Elements`), so the multi-record fixture is comparable
//! with the single-record ones; the target is ≤ 2 µs per record (BENCHMARKS.md).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use dedup_gateway::{
    config::{AvailableOn, DEFAULT_FORWARD, PendingPolicy},
    pipeline::{
        key::{DedupKey, KeyDeriver},
        parse,
        policy::{Policy, Ruling},
    },
};

use crate::common::fixture;

/// One bench case: a fixture and why it is in the table.
struct Param {
    slug: &'static str,
    fixture: &'static str,
}

const PARAMS: &[Param] = &[
    // The common case: a versioned put, plain ASCII key (decoded key borrowed, no allocation).
    Param {
        slug: "put-versioned",
        fixture: "put-versioned.json",
    },
    // Percent-escapes and UTF-8 in the key: the form decoder allocates.
    Param {
        slug: "put-special-chars",
        fixture: "put-key-special-chars.json",
    },
    // The seed scenario's trigger: a completed replication event.
    Param {
        slug: "replication-completed",
        fixture: "replication-completed.json",
    },
    // Larger RustFS body with internal per-target status in userMetadata.
    Param {
        slug: "rustfs-stale-pending",
        fixture: "rustfs-replication-completed-stale-pending.json",
    },
    // Ignored by policy: no key derived.
    Param {
        slug: "delete-noop",
        fixture: "delete-noop.json",
    },
    // Several records in one body.
    Param {
        slug: "multi-record",
        fixture: "synthetic-multi-record.json",
    },
];

/// The gateway's per-request work up to the store: envelope and records (`parse::records`, one
/// pass for well-formed bodies), then per record policy and key.
fn decide_all(policy: &Policy, keys: &KeyDeriver, body: &[u8]) -> usize {
    let Ok(recs) = parse::records(body) else {
        return 0;
    };
    let scope = keys.scope("bench", Some(b"Bearer bench-0123456789abcdef"));
    let mut derived: Option<DedupKey> = None;
    let mut decide = |rec: &parse::Record<'_>| {
        match policy.decide(rec, AvailableOn::Any) {
            Ruling::Forward(class) | Ruling::Hold(class) => {
                derived = Some(keys.key(&scope, rec, class));
            }
            Ruling::Final(..) => {}
        }
        black_box(&derived);
    };
    match &recs {
        parse::Records::Single(rec) => rec.iter().for_each(&mut decide),
        parse::Records::Many(many) => many
            .iter()
            .filter_map(|(_, rec)| rec.as_ref().ok())
            .for_each(&mut decide),
    }
    recs.len()
}

fn bench(c: &mut Criterion) {
    let forward: Vec<String> = DEFAULT_FORWARD.iter().map(|s| s.to_string()).collect();
    let policy = match Policy::new(&forward, PendingPolicy::Hold) {
        Ok(p) => p,
        Err(e) => panic!("default policy: {e}"),
    };
    let keys = KeyDeriver::new(b"bench-secret-0123456789");
    let mut group = c.benchmark_group("parse_policy_key");
    // Short runs: the script runs these on a shared machine; 2 s per case is enough for a
    // sub-microsecond operation to settle (criterion reports the spread).
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(2));
    for p in PARAMS {
        let body = fixture(p.fixture);
        let records = decide_all(&policy, &keys, &body);
        assert!(records > 0, "{} has no records", p.fixture);
        group.throughput(Throughput::Elements(records as u64));
        group.bench_with_input(BenchmarkId::from_parameter(p.slug), &body, |b, body| {
            // The body arrives as `Bytes`; cloning it is the refcount bump the handler pays,
            // kept out of the timing.
            b.iter_batched_ref(
                || Bytes::clone(body),
                |body| decide_all(&policy, &keys, body),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
