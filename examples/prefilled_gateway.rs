//! The real gateway (`dedup-gateway serve`, memory backend) over a dedup store pre-filled with `N`
//! synthetic identities, for the scale and sweep figures of `scripts/bench`.
//!
//! Why in-process: filling 10 M identities over HTTP would take longer than the whole benchmark.
//! The identities go in through [`MemoryStore::insert_committed_at`] — the same map, packing and
//! growth as the live path — and [`Hooks::memory_store`] hands the filled store to
//! [`dedup_gateway::run_with_hooks`], which then runs exactly as `serve` does (one single-threaded
//! runtime per worker, logging as configured). Synthetic digests never equal a real event's, so
//! the requests sent afterwards find what a large production map gives them: cache misses in a
//! big table.
//!
//! Run: `prefilled_gateway CONFIG N [EXPIRE_SECS]`. Every identity expires `EXPIRE_SECS` (default:
//! one day) after the store was created, all at the same instant; the fill must end before then
//! (else it stops). The sweeper ticks when the gateway starts and every `dedup.sweep_interval`
//! after: with `sweep_interval = EXPIRE_SECS` its first tick finds nothing expired and its second
//! removes all `N` at once, at a time the caller knows. Set `dedup.max_entries` above `N` in
//! CONFIG, or the bound evicts. Prints `prefilled identities=N secs=S` on stdout before it
//! listens; stops on SIGTERM or Ctrl-C.

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dedup_gateway::{
    Hooks,
    config::{Config, Overrides},
    pipeline::key::DedupKey,
    runtime::{Workers, current_thread, worker_count},
    store::MemoryStore,
};
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: prefilled_gateway CONFIG N [EXPIRE_SECS]";
    let (path, n) = match (args.get(1), args.get(2)) {
        (Some(p), Some(n)) => (std::path::PathBuf::from(p), n.parse::<u64>()?),
        _ => return Err(usage.into()),
    };
    let expire = Duration::from_secs(match args.get(3) {
        Some(s) => s.parse()?,
        None => 24 * 3600,
    });
    let cfg = Config::load(Some(&path), &Overrides::default())?;
    if (cfg.dedup.max_entries as u64) <= n {
        return Err(format!(
            "dedup.max_entries {} must exceed N = {n}",
            cfg.dedup.max_entries
        )
        .into());
    }
    let _log_flush = dedup_gateway::logging::init(cfg.log_format);
    let store = MemoryStore::new(cfg.dedup.max_entries);
    let t0 = Instant::now();
    for i in 0..n {
        store.insert_committed_at(&DedupKey::synthetic(i), expire, 0)?;
    }
    if u128::from(store.now()) >= expire.as_millis() {
        return Err(format!("the fill took {:?}, longer than EXPIRE_SECS", t0.elapsed()).into());
    }
    println!(
        "prefilled identities={} secs={:.1}",
        store.len(),
        t0.elapsed().as_secs_f64()
    );
    serve(cfg, store)
}

/// `dedup-gateway serve`'s runtime set-up, with the filled store in the hooks.
fn serve(cfg: Config, store: MemoryStore) -> Result<(), Error> {
    let rt = current_thread()?;
    let workers = Workers::start(rt.handle().clone(), worker_count(cfg.http.workers))?;
    let hooks = Hooks {
        workers: workers.handles().to_vec(),
        memory_store: Some(store),
        ..Default::default()
    };
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            dedup_gateway::server::shutdown_signal().await;
            trigger.cancel();
        });
        dedup_gateway::run_with_hooks(cfg, listener, shutdown, hooks).await?;
        Ok::<_, Error>(())
    });
    workers.stop();
    result
}
