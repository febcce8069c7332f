//! The one race a pool cannot close, made deterministic: OSCAR closes a pooled connection while
//! the runtime thread is busy, so the connection's task has not seen the close when the next
//! request is handed to it. hyper writes the request, then reads the end of stream. Whether OSCAR
//! read it is unknown (a server may take a POST and die before answering), so the pool must not
//! resend it: the attempt fails as retryable and the caller's own retry (MinIO's after a 503, the
//! spool's backoff) delivers it. Resending here could start OSCAR's job twice.

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::mpsc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Uri};

use super::PlainPool;

const OK: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";

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

/// Connection 0 answers once, then closes when told; later ones answer every request. Sends the
/// count of requests each connection carried when it ends.
fn oscar(close: mpsc::Receiver<()>, counts: mpsc::Sender<(usize, usize)>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut close = Some(close);
        for (i, conn) in listener.incoming().take(3).enumerate() {
            let Ok(mut s) = conn else { return };
            let counts = counts.clone();
            if let Some(close) = close.take() {
                let served = usize::from(read_request(&mut s) && s.write_all(OK).is_ok());
                let _ = close.recv_timeout(Duration::from_secs(10));
                drop(s);
                let _ = counts.send((i, served));
                continue;
            }
            std::thread::spawn(move || {
                let mut served = 0;
                while read_request(&mut s) && s.write_all(OK).is_ok() {
                    served += 1;
                }
                let _ = counts.send((i, served));
            });
        }
    });
    addr
}

fn request(addr: std::net::SocketAddr) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = Uri::from_static("/job/svc");
    let host = hyper::header::HeaderValue::from_str(&addr.to_string()).expect("host");
    req.headers_mut().insert(hyper::header::HOST, host);
    req
}

#[tokio::test]
async fn a_request_written_to_a_connection_closed_under_it_is_not_resent() {
    let (close_tx, close_rx) = mpsc::channel();
    let (count_tx, count_rx) = mpsc::channel();
    let addr = oscar(close_rx, count_tx);
    let authority = addr.to_string().parse().expect("authority");
    let pool = PlainPool::new(&authority, 1, 4, Duration::from_secs(5)).expect("pool");

    let (resp, lease) = pool.send(request(addr)).await.expect("first send");
    resp.into_body().collect().await.expect("first body");
    pool.put_back(lease);
    // Let the connection settle into idle and want its next request.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    close_tx.send(()).expect("close");
    assert_eq!(count_rx.recv_timeout(Duration::from_secs(5)), Ok((0, 1)));
    // Block this (the only) runtime thread: the connection's task cannot see the close yet.
    std::thread::sleep(Duration::from_millis(50));

    let second = pool.send(request(addr)).await;
    assert_eq!(
        second.err(),
        Some(crate::metrics::UpstreamClass::Other),
        "a possibly written request fails as retryable instead of being resent"
    );
    assert_eq!(
        count_rx.recv_timeout(Duration::from_millis(200)),
        Err(mpsc::RecvTimeoutError::Timeout),
        "no second connection was opened for it"
    );

    // The caller's retry goes on a new connection.
    let (resp, lease) = pool.send(request(addr)).await.expect("third send");
    assert_eq!(resp.status(), 201);
    resp.into_body().collect().await.expect("third body");
    drop(lease);
    // The connection's task must run to close it, so wait without blocking the runtime.
    let mut last = None;
    for _ in 0..250 {
        if let Ok(c) = count_rx.try_recv() {
            last = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last, Some((1, 1)));
}
