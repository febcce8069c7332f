//! The pool against a scripted OSCAR on a plain thread, so that what the runtime thread sees can
//! be arranged: a connection closed while the worker was busy (noticed at checkout by the probe
//! of a connection idle for `PROBE_AFTER`, the request goes on a new connection), and a request OSCAR read but never answered (not resent: OSCAR
//! may have started the job).

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::mpsc,
    time::Duration,
};

use bytes::Bytes;
use hyper::Uri;

use super::{Answer, PlainPool};
use crate::{deliver::Delivery, identity::DedupKey, metrics::UpstreamClass};

const OK: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";

#[derive(Clone, Copy)]
enum Step {
    /// Read a request, answer 201.
    Answer,
    /// Wait to be told, then close (the connection sits idle in the pool meanwhile).
    CloseWhenTold,
    /// Read a request, close without an answer.
    ReadThenClose,
}

/// Reads one request head and its Content-Length body; false on EOF.
fn read_request(s: &mut std::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serves connection `i` by `scripts[i]`; when a connection ends, sends `(i, requests read)`.
fn oscar(
    scripts: Vec<Vec<Step>>,
    told: mpsc::Receiver<()>,
    counts: mpsc::Sender<(usize, usize)>,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for (i, script) in scripts.into_iter().enumerate() {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut read = 0;
            for step in script {
                match step {
                    Step::Answer if read_request(&mut s) && s.write_all(OK).is_ok() => read += 1,
                    Step::Answer => break,
                    Step::CloseWhenTold => {
                        let _ = told.recv_timeout(Duration::from_secs(10));
                        break;
                    }
                    Step::ReadThenClose => {
                        read += usize::from(read_request(&mut s));
                        break;
                    }
                }
            }
            drop(s);
            let _ = counts.send((i, read));
        }
    });
    addr
}

fn delivery() -> Delivery {
    Delivery {
        service: "svc".into(),
        authorization: None,
        body: Bytes::from_static(b"{}"),
        key: DedupKey([7; 16]),
    }
}

fn pool(addr: std::net::SocketAddr) -> PlainPool {
    let authority = addr.to_string().parse().expect("authority");
    let mut pool = PlainPool::new(&authority, 1, 4, Duration::from_secs(5)).expect("pool");
    // Probe every checkout, as after a second of idleness, without waiting a second.
    pool.probe_after = Duration::ZERO;
    pool
}

async fn exchange(pool: &PlainPool) -> Result<Answer, UpstreamClass> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    pool.exchange(&Uri::from_static("/job/svc"), &delivery(), deadline)
        .await
}

/// Waits for the next connection's report without blocking the runtime thread.
async fn next_count(counts: &mpsc::Receiver<(usize, usize)>) -> Option<(usize, usize)> {
    for _ in 0..250 {
        if let Ok(c) = counts.try_recv() {
            return Some(c);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn a_connection_closed_while_the_worker_was_busy_is_noticed_at_checkout() {
    let (tell, told) = mpsc::channel();
    let (count_tx, counts) = mpsc::channel();
    let scripts = vec![vec![Step::Answer, Step::CloseWhenTold], vec![Step::Answer]];
    let pool = pool(oscar(scripts, told, count_tx));

    assert_eq!(exchange(&pool).await.map(|a| a.status), Ok(201));
    tell.send(()).expect("tell");
    assert_eq!(counts.recv_timeout(Duration::from_secs(5)), Ok((0, 1)));
    // Block this (the only) runtime thread: no epoll round has seen the close.
    std::thread::sleep(Duration::from_millis(50));

    assert_eq!(exchange(&pool).await.map(|a| a.status), Ok(201));
    drop(pool);
    assert_eq!(
        next_count(&counts).await,
        Some((1, 1)),
        "once, on a new connection"
    );
}

#[tokio::test]
async fn a_request_oscar_read_but_never_answered_is_not_resent() {
    let (_tell, told) = mpsc::channel();
    let (count_tx, counts) = mpsc::channel();
    let scripts = vec![vec![Step::Answer, Step::ReadThenClose], vec![Step::Answer]];
    let pool = pool(oscar(scripts, told, count_tx));

    assert_eq!(exchange(&pool).await.map(|a| a.status), Ok(201));
    assert_eq!(exchange(&pool).await, Err(UpstreamClass::Other));
    assert_eq!(next_count(&counts).await, Some((0, 2)));
    assert_eq!(
        counts.recv_timeout(Duration::from_millis(200)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "no second connection was opened to resend it"
    );
    // The caller's retry goes on a new connection.
    assert_eq!(exchange(&pool).await.map(|a| a.status), Ok(201));
    drop(pool);
    assert_eq!(next_count(&counts).await, Some((1, 1)));
}
