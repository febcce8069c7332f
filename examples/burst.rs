//! A burst: `EVENTS` MinIO events sent at once over `CONNS` connections, half of them duplicates,
//! then a check at the sink that every distinct version was forwarded exactly once.
//!
//! Why: a MinIO queue that comes back after an outage replays its whole backlog at once, with
//! repeats. The gateway may shed with `503 + Retry-After` (contract §5) but must neither fail
//! otherwise nor deliver twice. `EVENTS / 2` versions are each sent twice, the order shuffled with
//! a fixed seed (splitmix64, Fisher–Yates) so every run sends the same sequence. A 503 is retried
//! after its `Retry-After` (at most 20 times per event); any other non-2xx or a transport error is
//! a failure. Then `GET /count` on the counting sink (`SINK_COUNT=1 examples/sink`) is polled until
//! it has every distinct version (spool mode delivers after answering) or `--drain-timeout` passes.
//!
//! Run: `burst GATEWAY SINK [--events 50000] [--conns 256] [--run-id ID] [--drain-timeout 120]`.
//! Prints one line of `key=value` pairs; exits 1 unless there were no failures and the sink got
//! each distinct version exactly once.

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

#[path = "support/client.rs"]
mod client;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use client::{Conn, Error, Payload, flag, resolve};

const MAX_RETRIES: u32 = 20;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    shed: AtomicU64,
    failed: AtomicU64,
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let (gw, sink) = match (args.get(1), args.get(2)) {
        (Some(g), Some(s)) => (resolve(g)?, resolve(s)?),
        _ => return Err("usage: burst GATEWAY SINK [--events N] [--conns C] [--run-id ID]".into()),
    };
    let events: usize = flag(&args, "--events").map_or(Ok(50_000), |v| v.parse())?;
    let conns: usize = flag(&args, "--conns").map_or(Ok(256), |v| v.parse())?;
    let drain_timeout: u64 = flag(&args, "--drain-timeout").map_or(Ok(120), |v| v.parse())?;
    let run_id = flag(&args, "--run-id").unwrap_or_else(|| std::process::id().to_string());
    let payload = Payload::load("tests/fixtures/minio-events/put-versioned.json")?;
    let distinct = events / 2;
    let order = Arc::new(shuffled(distinct, 0x5eed_0015));
    let bodies: Arc<Vec<_>> = Arc::new(
        (0..distinct)
            .map(|v| payload.with_version(&format!("burst-{run_id}-{v}")))
            .collect(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let send_secs = rt.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..conns.max(1))
            .map(|_| {
                let (order, bodies, next, counts) =
                    (order.clone(), bodies.clone(), next.clone(), counts.clone());
                tokio::spawn(async move {
                    let mut conn = Conn::new(gw, "/job/bench");
                    while let Some(&v) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                        send_one(&mut conn, &bodies[v], &counts).await;
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
        start.elapsed().as_secs_f64()
    });
    let (sink_line, drained) = rt.block_on(drain(sink, distinct, drain_timeout));
    let drain_secs = start.elapsed().as_secs_f64();
    let (ok, shed, failed) = (
        counts.ok.load(Ordering::Relaxed),
        counts.shed.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
    );
    let good = failed == 0 && drained && exactly_once(&sink_line, distinct);
    println!(
        "events={} distinct={distinct} conns={conns} ok={ok} shed_503={shed} failed={failed} \
         send_secs={send_secs:.2} drain_secs={drain_secs:.2} sink: {sink_line} forwarded_once={}",
        order.len(),
        if good { "yes" } else { "no" }
    );
    if !good {
        std::process::exit(1);
    }
    Ok(())
}

/// Every version twice, in a fixed pseudo-random order.
fn shuffled(distinct: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..distinct).chain(0..distinct).collect();
    let mut s = seed;
    for i in (1..order.len()).rev() {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let j = (z % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

async fn send_one(conn: &mut Conn, body: &bytes::Bytes, counts: &Counts) {
    for _ in 0..=MAX_RETRIES {
        match conn.post(body.clone()).await {
            Ok(a) if (200..300).contains(&a.status) => {
                counts.ok.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(a) if a.status == 503 => {
                counts.shed.fetch_add(1, Ordering::Relaxed);
                let wait = a.retry_after.unwrap_or(1).clamp(1, 10);
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            _ => break,
        }
    }
    counts.failed.fetch_add(1, Ordering::Relaxed);
}

/// Polls the sink's `GET /count` until it reports `distinct` keys or `timeout_secs` pass;
/// returns its last answer and whether it got there.
async fn drain(sink: std::net::SocketAddr, distinct: usize, timeout_secs: u64) -> (String, bool) {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Ok(line) = get_count(sink).await {
            let done = field(&line, "distinct") >= distinct as u64;
            last = line;
            if done {
                return (last, true);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (last, false)
}

async fn get_count(sink: std::net::SocketAddr) -> Result<String, Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(sink).await?;
    s.write_all(b"GET /count HTTP/1.1\r\nHost: sink\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await??;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok(body.trim().to_string())
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn exactly_once(sink_line: &str, distinct: usize) -> bool {
    field(sink_line, "distinct") == distinct as u64
        && field(sink_line, "received") == distinct as u64
        && field(sink_line, "max_per_key") == 1
}
