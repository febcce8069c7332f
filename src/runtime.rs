//! Threads: one single-threaded tokio runtime per core, each connection pinned to one of them.
//!
//! Why not tokio's work-stealing runtime: a forwarded event crosses three tasks (the inbound
//! connection, the settle task that owns the claim, the upstream client's connection), and on the
//! multi-threaded scheduler each hand-off may land on the other worker and wake it through a
//! futex. On a busy machine those wake-ups were a large share of the forward path's CPU and most
//! of its tail latency (BENCHMARKS.md). Here the acceptor hands each new connection to one
//! worker, round-robin; the request, everything it spawns, and the upstream connection it uses
//! ([`crate::deliver::Forwarder`] keeps one connection pool per worker) stay on that thread, as in
//! nginx's one event loop per worker process. Connections are long-lived (MinIO keeps them
//! alive), so round-robin at accept time balances the load.
//!
//! The thread that calls [`crate::run`] is worker 0: it also runs the accept loop and the
//! background tasks (sweeper, spool workers, held copies' timers). Without [`Workers`] (the tests,
//! embedders) connections are served on the caller's runtime, whatever its flavour.

use std::{cell::Cell, io, num::NonZeroUsize, thread::JoinHandle, time::Duration};

use tokio::runtime::{Builder, Handle, Runtime};
use tokio_util::sync::CancellationToken;

thread_local! {
    static WORKER_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker thread running the caller (0 outside the extra worker threads).
pub fn worker_index() -> usize {
    WORKER_INDEX.with(Cell::get)
}

/// How many workers `configured` means: itself, or one per core when 0.
pub fn worker_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// A single-threaded runtime with I/O and timers, as every worker uses.
pub fn current_thread() -> io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

/// How far ahead each worker always has a timer due (see [`timer_anchor`]).
const ANCHOR_EVERY: Duration = Duration::from_secs(1);

/// A timer that fires every [`ANCHOR_EVERY`] on its worker and does nothing else.
///
/// Why: tokio's timer wheel wakes its driver (a `write(2)` to the runtime's eventfd) whenever a
/// timer is registered that is due before every timer the driver parked with, and always when it
/// parked with none. The thread registering is the runtime's own, so that wake-up is wasted, and it
/// happened for ≈ 0.47 of forwarded requests: hyper arms a header-read timer each time a keep-alive
/// connection waits for its next request, often just after the last timer of that worker was
/// dropped. With a timer always due within a second, the 10–30 s timers a request arms are never
/// the earliest, and registering one costs no syscall (`scripts/syscalls-per-request`;
/// BENCHMARKS.md, session 8). The price is one wake-up a second per idle worker.
async fn timer_anchor(stop: CancellationToken) {
    let mut tick = tokio::time::interval(ANCHOR_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
    }
}

/// Workers 1..n, each a thread blocked in its own runtime until [`Workers::stop`].
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `count - 1` worker threads; `main` is the caller's runtime, worker 0.
    pub fn start(main: Handle, count: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut workers = Self {
            handles: vec![main],
            threads: Vec::with_capacity(count.saturating_sub(1)),
            stop: stop.clone(),
        };
        workers.handles[0].spawn(timer_anchor(stop.clone()));
        for index in 1..count.max(1) {
            let rt = current_thread()?;
            rt.spawn(timer_anchor(stop.clone()));
            workers.handles.push(rt.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("dedup-worker-{index}"))
                .spawn(move || {
                    WORKER_INDEX.with(|w| w.set(index));
                    // A current-thread runtime runs its tasks only inside `block_on`.
                    rt.block_on(stop.cancelled());
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// One handle per worker, worker 0 first.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stops the worker threads (tasks still on them are dropped) and waits for them.
    pub fn stop(mut self) {
        self.stop.cancel();
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_spawned_on_a_worker_run_on_its_thread() {
        let main = current_thread().expect("runtime");
        let workers = Workers::start(main.handle().clone(), 3).expect("workers");
        assert_eq!(workers.handles().len(), 3);
        let seen: Vec<usize> = main.block_on(async {
            let mut seen = Vec::new();
            for h in workers.handles() {
                seen.push(h.spawn(async { worker_index() }).await.expect("task"));
            }
            seen
        });
        assert_eq!(seen, vec![0, 1, 2]);
        workers.stop();
    }

    #[test]
    fn zero_means_one_per_core() {
        assert!(worker_count(0) >= 1);
        assert_eq!(worker_count(3), 3);
    }
}
