//! Heap allocations per request on the gateway's runtime thread, counted, not guessed.
//!
//! Why a count: allocation is a cost that machine noise cannot blur, so it shows whether a change
//! to the hot path really removed work. The gateway runs in this process on one single-threaded
//! runtime whose thread alone is counted (a counting global allocator with a per-thread switch);
//! the upstream sink and the client are plain blocking threads, not counted. The batched log
//! writer's thread is not counted either; formatting a decision line happens on the runtime
//! thread and is.
//!
//! Two scenarios over one keep-alive connection, after a warm-up: `drop` (the same event again
//! and again: parse, key, store lookup, answer) and `forward` (a new version each time: the
//! above plus the upstream POST). Run: `cargo run --release --example allocs_per_request [N]`.
//! Prints one line per scenario: `scenario=… requests=… allocs_per_request=… bytes_per_request=…`.

// The counting global allocator is the one unsafe code in the tree (SAFETY note below).
#![allow(unsafe_code)]
// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::atomic::{AtomicU64, Ordering},
};

use dedup_gateway::config::{Config, Mode};
use tokio_util::sync::CancellationToken;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; counting touches only atomics and a
// const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 20_000,
    };
    // Decision lines are formatted as in production (info level unless RUST_LOG says otherwise);
    // send stderr to /dev/null.
    let _log_flush = dedup_gateway::logging::init(dedup_gateway::config::LogFormat::Text);
    let sink = TcpListener::bind("127.0.0.1:0")?;
    let upstream = format!("http://{}", sink.local_addr()?);
    std::thread::spawn(move || {
        for conn in sink.incoming().flatten() {
            std::thread::spawn(move || sink_connection(conn));
        }
    });

    let gateway = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = gateway.local_addr()?;
    gateway.set_nonblocking(true)?;
    let dir = std::env::temp_dir().join(format!("allocs-per-request-{}", std::process::id()));
    let mut cfg = Config {
        mode: Mode::Sync,
        upstream,
        data_dir: dir.clone(),
        ..Config::default()
    };
    cfg.dedup.hash_secret = "bench-secret-0123456789abcdef".into();
    cfg.validate()?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = std::thread::spawn(move || -> Result<(), Error> {
        let rt = dedup_gateway::runtime::current_thread()?;
        COUNTED.with(|c| c.set(true));
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(gateway)?;
            dedup_gateway::run(cfg, listener, stop).await?;
            Ok(())
        })
    });

    let body = std::fs::read("tests/fixtures/minio-events/put-versioned.json")?;
    let body = String::from_utf8(body)?;
    let mut client = Client::connect(addr)?;
    for (scenario, unique) in [("drop", false), ("forward", true)] {
        let make = |i: u64| {
            let v = if unique { i } else { 0 };
            body.replacen(
                "\"versionId\":\"",
                &format!("\"versionId\":\"{scenario}-{v}-"),
                1,
            )
        };
        for i in 0..1_000 {
            client.post(make(i).as_bytes())?;
        }
        let bodies: Vec<String> = (1_000..1_000 + n).map(make).collect();
        let (a0, b0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
        for b in &bodies {
            client.post(b.as_bytes())?;
        }
        let (a1, b1) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
        println!(
            "scenario={scenario} requests={n} allocs_per_request={:.1} bytes_per_request={:.0}",
            (a1 - a0) as f64 / n as f64,
            (b1 - b0) as f64 / n as f64
        );
    }
    shutdown.cancel();
    drop(client);
    server.join().map_err(|_| "gateway thread panicked")??;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// A blocking keep-alive HTTP/1.1 client for `POST /job/bench`.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: std::net::SocketAddr) -> Result<Self, Error> {
        let writer = TcpStream::connect(addr)?;
        writer.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    /// POSTs `body` and reads the answer; an answer other than 200 is an error.
    fn post(&mut self, body: &[u8]) -> Result<(), Error> {
        write!(
            self.writer,
            "POST /job/bench HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
             Authorization: Bearer bench-0123456789abcdef\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        self.writer.write_all(body)?;
        let status = read_message(&mut self.reader)?;
        if !status.contains(" 200 ") {
            return Err(format!("gateway answered {status:?}").into());
        }
        Ok(())
    }
}

/// Reads one HTTP/1.1 message (start line, headers, `Content-Length` body); returns the start line.
fn read_message(r: &mut BufReader<TcpStream>) -> Result<String, Error> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Err("connection closed".into());
    }
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            len = value.trim().parse()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(start)
}

/// The upstream: reads each request and answers OSCAR's `201 Created`, empty body.
fn sink_connection(conn: TcpStream) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while read_message(&mut reader).is_ok() {
        if writer
            .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
