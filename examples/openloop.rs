//! An open-loop load generator: requests leave on a fixed schedule whatever the server does, and
//! each latency counts the time a request waited for its turn (coordinated-omission correction).
//!
//! Why not `oha -q RATE --latency-correction`: oha sends one fixed body, and the dedup identity is
//! in the body (contract §6), so every request after the first would be a `duplicate` and the
//! forward path could not be measured. Varying the URL (`--rand-regex-url`) would vary the service,
//! a different workload. Why no HDR histogram crate: a run keeps at most a few hundred thousand
//! samples, so they are kept whole and sorted — exact percentiles, no new dependency.
//!
//! Schedule: request `i` is due at `start + i / RATE`. `CONNS` workers, one keep-alive connection
//! each, take the next due request from a shared counter. A worker that takes it late — every
//! connection was busy, the server fell behind — measures from the due time, the wait included.
//! `queued=` says how many requests were taken late.
//!
//! A worker that takes request `i` early waits for its due time (`--pace`):
//! - `spin` (default): it sleeps on tokio's timer until 2 ms before, then yields to the runtime
//!   until the due time and measures from it. Requests leave evenly spaced (to a few µs), which
//!   is what a fixed arrival rate means. The generator's core is busy while a request is near its
//!   due time; it is pinned apart from the servers.
//! - `timer`: it sleeps until the due time and measures from its real send time. Tokio's timer
//!   fires on 1 ms ticks, so every request due within one tick leaves at once: at 14 k req/s a
//!   clump of 14 every millisecond, which queue behind each other at the server. Sessions 5–11 of
//!   BENCHMARKS.md measured this way; kept to compare.
//!
//! Run: `openloop ADDR RATE SECONDS [--conns 64] [--pace spin|timer] [--fixture F] [--run-id ID]
//! [--dup POOL]`.
//! `--dup POOL` repeats POOL versions (the drop path, after their first delivery); without it every
//! request carries a new version. Prints one line of `key=value` pairs; exits 1 if any request
//! failed or the run overran its bound (SECONDS + 30 s).

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

#[path = "support/client.rs"]
mod client;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use client::{Conn, Error, Payload, flag, resolve};

struct Plan {
    addr: std::net::SocketAddr,
    rate: f64,
    total: u64,
    payload: Payload,
    run_id: String,
    dup_pool: Option<u64>,
    spin: bool,
    start: Instant,
    next: AtomicU64,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    non_2xx: u64,
    queued: u64,
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: openloop ADDR RATE SECONDS [--conns N] [--pace spin|timer] [--fixture F] \
                 [--run-id ID] [--dup POOL]";
    let (addr, rate, secs) = match (args.get(1), args.get(2), args.get(3)) {
        (Some(a), Some(r), Some(s)) => (resolve(a)?, r.parse::<f64>()?, s.parse::<f64>()?),
        _ => return Err(usage.into()),
    };
    if !(rate > 0.0 && secs > 0.0) {
        return Err(usage.into());
    }
    let conns: usize = flag(&args, "--conns").map_or(Ok(64), |v| v.parse())?;
    let spin = match flag(&args, "--pace").as_deref() {
        None | Some("spin") => true,
        Some("timer") => false,
        Some(_) => return Err(usage.into()),
    };
    let fixture = flag(&args, "--fixture")
        .unwrap_or_else(|| "tests/fixtures/minio-events/put-versioned.json".into());
    let plan = Arc::new(Plan {
        addr,
        rate,
        total: (rate * secs).ceil() as u64,
        payload: Payload::load(&fixture)?,
        run_id: flag(&args, "--run-id").unwrap_or_else(|| std::process::id().to_string()),
        dup_pool: flag(&args, "--dup").map(|v| v.parse()).transpose()?,
        spin,
        // Head start for the workers to connect (see `worker`).
        start: Instant::now() + Duration::from_millis(500),
        next: AtomicU64::new(0),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let bound = Duration::from_secs_f64(secs + 30.0);
    let (tally, overran) = rt.block_on(async {
        let workers: Vec<_> = (0..conns.max(1))
            .map(|_| tokio::spawn(worker(plan.clone())))
            .collect();
        let mut all = Tally::default();
        let deadline = tokio::time::Instant::now() + bound;
        let mut overran = false;
        for w in workers {
            match tokio::time::timeout_at(deadline, w).await {
                Ok(Ok(t)) => merge(&mut all, t),
                _ => overran = true,
            }
        }
        (all, overran)
    });
    let elapsed = plan.start.elapsed().as_secs_f64();
    report(&plan, tally, elapsed, overran)
}

async fn worker(plan: Arc<Plan>) -> Tally {
    let mut conn = Conn::new(plan.addr, "/job/bench");
    let mut t = Tally::default();
    // Connected before the schedule starts: a connect is not part of any request's latency
    // (a failure here shows up as the first request's error).
    let _ = conn.warm().await;
    loop {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.total {
            return t;
        }
        let due = plan.start + Duration::from_secs_f64(i as f64 / plan.rate);
        let from = if Instant::now() >= due {
            t.queued += 1;
            due
        } else if plan.spin {
            wait_spinning(due).await;
            due
        } else {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        };
        let version = match plan.dup_pool {
            Some(pool) => format!("dup-{}-{}", plan.run_id, i % pool.max(1)),
            None => format!("ol-{}-{i}", plan.run_id),
        };
        match conn.post(plan.payload.with_version(&version)).await {
            Ok(a) if (200..300).contains(&a.status) => {}
            Ok(_) => t.non_2xx += 1,
            Err(_) => t.errors += 1,
        }
        let us = from.elapsed().as_micros();
        t.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
    }
}

/// Sleeps on the timer until 2 ms before `due` (its ticks are 1 ms, and it rounds up), then yields
/// until `due`. A `yield_now` is woken after the runtime has polled its sockets, so the other
/// workers' responses are read while this one waits.
async fn wait_spinning(due: Instant) {
    let early = Duration::from_millis(2);
    if let Some(at) = due.checked_sub(early).filter(|at| Instant::now() < *at) {
        tokio::time::sleep_until(at.into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

fn merge(all: &mut Tally, t: Tally) {
    all.latencies_us.extend(t.latencies_us);
    all.errors += t.errors;
    all.non_2xx += t.non_2xx;
    all.queued += t.queued;
}

fn report(plan: &Plan, mut t: Tally, elapsed: f64, overran: bool) -> Result<(), Error> {
    t.latencies_us.sort_unstable();
    let n = t.latencies_us.len();
    let pct = |q: f64| -> f64 {
        if n == 0 {
            return f64::NAN;
        }
        let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        f64::from(t.latencies_us[idx]) / 1000.0
    };
    println!(
        "requests={n} errors={} non_2xx={} queued={} pace={} offered_rps={:.0} achieved_rps={:.0} \
         p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} overran={overran}",
        t.errors,
        t.non_2xx,
        t.queued,
        if plan.spin { "spin" } else { "timer" },
        plan.rate,
        n as f64 / elapsed.max(1e-9),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0),
    );
    if overran || t.errors > 0 || t.non_2xx > 0 {
        std::process::exit(1);
    }
    Ok(())
}
