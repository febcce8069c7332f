//! The `http://` upstream pool (`src/deliver/pool.rs`) seen from a raw TCP OSCAR: connections
//! are reused, one that OSCAR closes while idle costs nothing but a new connection (each event is
//! still forwarded exactly once), requests go out in origin form with the `Host` header, and
//! `pool_max_idle = 0` means a connection per event.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{io::AsyncWriteExt, net::TcpListener};

use crate::helpers::*;

/// What the raw OSCAR saw: per request, the connection it came on and its head, lower-cased.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(usize, String)>>>);

impl Seen {
    fn heads(&self) -> Vec<(usize, String)> {
        self.0.lock().unwrap().clone()
    }
    fn connections(&self) -> usize {
        let mut c: Vec<usize> = self.heads().iter().map(|(c, _)| *c).collect();
        c.dedup();
        c.len()
    }
}

/// An OSCAR that answers 201 with keep-alive and closes each connection after `per_conn`
/// answers (without `Connection: close`: the close comes while the gateway holds it idle).
async fn raw_oscar(per_conn: usize) -> (std::net::SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            let (seen, conn) = (s2.clone(), n);
            n += 1;
            tokio::spawn(async move {
                for _ in 0..per_conn {
                    let Some(head) = read_request_head(&mut s).await else {
                        return;
                    };
                    seen.0.lock().unwrap().push((conn, head));
                    let ok = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
                    if s.write_all(ok).await.is_err() {
                        return;
                    }
                }
                // Late enough that the gateway has put the connection back in its pool.
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn sequential_events_share_one_connection_in_origin_form_with_host() {
    let (addr, seen) = raw_oscar(usize::MAX).await;
    let gw = TestGateway::start(test_config(&format!("http://{addr}/prefix/"))).await;
    for i in 0..5 {
        let e = one_record(&format!("reuse-{i}.txt"), "v1");
        gw.post_event(e).await.assert(200, &["forwarded"]);
    }
    let heads = seen.heads();
    assert_eq!(heads.len(), 5, "{heads:?}");
    assert_eq!(seen.connections(), 1, "{heads:?}");
    for (_, h) in &heads {
        assert!(h.starts_with("post /prefix/job/"), "{h}");
        assert!(h.contains(&format!("\r\nhost: {addr}\r\n")), "{h}");
        assert!(h.contains("\r\nx-dedup-key: "), "{h}");
    }
    gw.stop().await;
}

/// OSCAR closes every connection 10 ms after its one answer, while the gateway holds it idle:
/// each next event finds its pooled connection dead (at checkout, or hyper hands the unwritten
/// request back) and goes on a new one. Every event is forwarded, once, with no 503.
#[tokio::test]
async fn a_connection_closed_while_idle_is_replaced_without_an_error() {
    let (addr, seen) = raw_oscar(1).await;
    let gw = TestGateway::start(test_config(&format!("http://{addr}"))).await;
    for i in 0..8 {
        let e = one_record(&format!("closed-{i}.txt"), "v1");
        gw.post_event(e).await.assert(200, &["forwarded"]);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let heads = seen.heads();
    assert_eq!(heads.len(), 8, "each event once: {heads:?}");
    assert_eq!(seen.connections(), 8, "{heads:?}");
    gw.stop().await;
}

#[tokio::test]
async fn pool_max_idle_zero_opens_a_connection_per_event() {
    let (addr, seen) = raw_oscar(usize::MAX).await;
    let mut cfg = test_config(&format!("http://{addr}"));
    cfg.delivery.pool_max_idle = 0;
    let gw = TestGateway::start(cfg).await;
    for i in 0..3 {
        let e = one_record(&format!("noidle-{i}.txt"), "v1");
        gw.post_event(e).await.assert(200, &["forwarded"]);
    }
    assert_eq!(seen.heads().len(), 3);
    assert_eq!(seen.connections(), 3);
    gw.stop().await;
}

/// Nothing listens: a connect error, retryable for MinIO (503) with a reason that says so.
#[tokio::test]
async fn a_refused_connect_is_retryable() {
    let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let gw = TestGateway::start(test_config(&format!("http://{addr}"))).await;
    let e = one_record("refused.txt", "v1");
    let r = gw.post_event(e).await;
    r.assert(503, &["failed"]);
    assert!(r.reason().contains("connect"), "{}", r.answer);
    gw.stop().await;
}
