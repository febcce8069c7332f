//! A count-bounded load client for `scripts/instr-per-request`: sends exactly N webhook POSTs and
//! exits.
//!
//! Why not wrk: wrk runs for a duration, so the number of requests a server handled under
//! `valgrind --tool=callgrind` would depend on how fast the emulated server ran. An instruction
//! count per request needs an exact request count, so this client sends exactly N, split over a
//! fixed number of keep-alive connections (one blocking thread each), and fails on any answer
//! that is not 2xx.
//!
//! The body is the real `tests/fixtures/minio-events/put-versioned.json` with its `versionId`
//! rewritten per request, as `bench/post.lua` does: `unique` gives every request a new version
//! (the forward path), `dup` cycles through 64 versions (after the first 64, the drop path).
//!
//! Run: `instr_client ADDR N unique|dup [CONNECTIONS] [RUN_ID]` (defaults: 4 connections, run id
//! from the clock). Prints `requests=N seconds=S` on success. Every socket has a 120 s timeout,
//! so a stalled server ends the run with an error instead of hanging it.

// Measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

type Error = Box<dyn std::error::Error + Send + Sync>;

const FIXTURE: &str = "tests/fixtures/minio-events/put-versioned.json";
const POOL: u64 = 64;
const TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: instr_client ADDR N unique|dup [CONNECTIONS] [RUN_ID]";
    let addr = args.next().ok_or(usage)?;
    let n: u64 = args.next().ok_or(usage)?.parse()?;
    let unique = match args.next().as_deref() {
        Some("unique") => true,
        Some("dup") => false,
        _ => return Err(usage.into()),
    };
    let conns: u64 = args.next().map_or(Ok(4), |c| c.parse())?.max(1);
    let run_id = match args.next() {
        Some(r) => r,
        None => format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        ),
    };
    let body = std::fs::read_to_string(FIXTURE)?;
    let marker = "\"versionId\":\"";
    let at = body.find(marker).ok_or("the fixture has no versionId")? + marker.len();
    let end = at + body[at..].find('"').ok_or("unterminated versionId")?;
    let (prefix, suffix) = (body[..at].to_owned(), body[end..].to_owned());

    let started = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            // Connection c sends requests c, c + conns, c + 2 * conns, ... below n.
            let (addr, prefix, suffix, run_id) =
                (addr.clone(), prefix.clone(), suffix.clone(), run_id.clone());
            std::thread::spawn(move || -> Result<(), Error> {
                let mut client = Client::connect(&addr)?;
                for i in (c..n).step_by(conns as usize) {
                    let version = if unique {
                        format!("u-{run_id}-{i}")
                    } else {
                        format!("dup-{run_id}-{}", i % POOL)
                    };
                    client.post(format!("{prefix}{version}{suffix}").as_bytes())?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "client thread panicked")??;
    }
    println!(
        "requests={n} seconds={:.2}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A blocking keep-alive HTTP/1.1 client for `POST /job/bench`.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: &str) -> Result<Self, Error> {
        let writer = TcpStream::connect(addr)?;
        writer.set_nodelay(true)?;
        writer.set_read_timeout(Some(TIMEOUT))?;
        writer.set_write_timeout(Some(TIMEOUT))?;
        Ok(Self {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    /// POSTs `body` and reads the whole answer; a status other than 2xx is an error.
    fn post(&mut self, body: &[u8]) -> Result<(), Error> {
        let mut req = format!(
            "POST /job/bench HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
             Authorization: Bearer bench-0123456789abcdef\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.writer.write_all(&req)?;
        let status = read_message(&mut self.reader)?;
        if status.split(' ').nth(1).is_none_or(|s| !s.starts_with('2')) {
            return Err(format!("server answered {status:?}").into());
        }
        Ok(())
    }
}

/// Reads one HTTP/1.1 response (status line, headers, `Content-Length` body); returns the status
/// line. A chunked answer is an error: none of the measured servers sends one.
fn read_message(r: &mut BufReader<TcpStream>) -> Result<String, Error> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Err("connection closed".into());
    }
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err("connection closed in the headers".into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                len = value.trim().parse()?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked answers are not supported".into());
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(start.trim_end().to_owned())
}
