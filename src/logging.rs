//! Log output: lines are gathered in memory and written to stderr in batches by one thread.
//!
//! Why: the gateway logs one line per decision, so at tens of thousands of requests per second
//! a `write(2)` per line on the runtime threads was a measurable share of each request's CPU, and
//! handing each line to a writer thread over a channel was worse still (a thread wake-up and a
//! write per line whenever the writer had caught up). See BENCHMARKS.md for the figures. Here a
//! line costs one short critical section and a copy; the writer thread wakes every
//! [`FLUSH_EVERY`] and writes whatever accumulated in one call.
//!
//! Guarantees: a line reaches stderr at most [`FLUSH_EVERY`] late (plus the write itself); lines
//! keep their order; nothing is dropped — past [`MAX_PENDING`] bytes the logging thread writes the
//! backlog itself, which slows it down instead of growing memory. Dropping the [`FlushGuard`]
//! (at exit) stops the writer thread and flushes the rest.

use std::{
    io::{self, Write},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

pub mod direct;
mod plain;
pub mod text;

/// How long a line may wait in memory before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Bytes buffered before a logging thread writes through (backpressure instead of loss).
pub const MAX_PENDING: usize = 4 * 1024 * 1024;

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Vec<u8>>,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock leaves at worst a partial line: keep logging.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes out everything pending; the lock is held only to swap the buffer.
    fn drain(&self, spare: &mut Vec<u8>) {
        std::mem::swap(&mut *self.lock(), spare);
        if !spare.is_empty() {
            // Nowhere to report a failing stderr; the line is lost either way.
            let _ = io::stderr().lock().write_all(spare);
            spare.clear();
        }
    }

    /// Appends one line; past [`MAX_PENDING`] writes the backlog and the line itself, in order.
    fn append(&self, line: &[u8]) -> io::Result<()> {
        let mut pending = self.lock();
        if pending.len() + line.len() > MAX_PENDING {
            // The writer thread is behind: write the backlog here, in order, under the lock.
            let mut err = io::stderr().lock();
            let _ = err.write_all(&pending);
            pending.clear();
            err.write_all(line)
        } else {
            pending.extend_from_slice(line);
            Ok(())
        }
    }
}

/// A [`MakeWriter`] for `tracing_subscriber::fmt` that batches lines (see the module doc).
#[derive(Debug, Clone)]
pub struct BatchedStderr {
    shared: Arc<Shared>,
}

/// Stops the writer thread and writes what is left when dropped.
#[derive(Debug)]
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread; keep the guard alive for as long as the process logs.
pub fn batched_stderr() -> io::Result<(BatchedStderr, FlushGuard)> {
    let shared = Arc::new(Shared::default());
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("dedup-gateway-log".into())
        .spawn(move || {
            let mut spare = Vec::new();
            while !worker.stop.load(Ordering::Acquire) {
                std::thread::park_timeout(FLUSH_EVERY);
                worker.drain(&mut spare);
            }
            worker.drain(&mut spare);
        })?;
    Ok((
        BatchedStderr {
            shared: shared.clone(),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// One event's writer: `tracing_subscriber::fmt` writes each formatted line in one call.
#[derive(Debug)]
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.shared.append(line)?;
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sets up logging to stderr as the binary runs: `RUST_LOG` filter (default `info`), text or JSON
/// lines, written in batches by a background thread; the returned guard flushes the rest when
/// dropped at exit. Without that thread (it could not start), lines go straight to stderr.
pub fn init(format: crate::config::LogFormat) -> Option<FlushGuard> {
    use crate::config::LogFormat;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = io::IsTerminal::is_terminal(&io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match (batched_stderr(), format) {
        (Ok((w, guard)), LogFormat::Json) => {
            builder.with_writer(w).json().flatten_event(true).init();
            Some(guard)
        }
        (Ok((w, guard)), LogFormat::Text) => {
            let rust_log = std::env::var("RUST_LOG").ok();
            if !ansi && direct::filter_allows(rust_log.as_deref()) {
                direct::install(w.shared.clone());
            }
            builder
                .with_writer(w)
                .event_format(text::TextLine::default())
                .init();
            Some(guard)
        }
        (Err(_), LogFormat::Json) => {
            builder
                .with_writer(io::stderr)
                .json()
                .flatten_event(true)
                .init();
            None
        }
        (Err(_), LogFormat::Text) => {
            builder
                .with_writer(io::stderr)
                .event_format(text::TextLine::default())
                .init();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_buffered_then_drained_in_order() {
        let shared = Shared::default();
        let mut w = LineWriter { shared: &shared };
        w.write_all(b"one\n").unwrap();
        w.write_all(b"two\n").unwrap();
        assert_eq!(&*shared.lock(), b"one\ntwo\n");
        let mut spare = Vec::new();
        shared.drain(&mut spare);
        assert!(shared.lock().is_empty());
    }

    #[test]
    fn guard_stops_the_writer_thread() {
        let (w, guard) = batched_stderr().unwrap();
        w.make_writer().write_all(b"").unwrap();
        drop(guard);
        assert!(w.shared.stop.load(Ordering::Acquire));
    }
}
