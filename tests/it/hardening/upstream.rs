//! A failing or misbehaving OSCAR in sync mode: one that refuses the token, answers 503, is
//! down, hangs, streams an endless body, redirects, or resets the connection mid-response. Each
//! failure is retryable for MinIO (503), the identity is released so the retry is forwarded, and
//! nothing is sent anywhere but OSCAR.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{StatusCode, header::LOCATION},
    response::Response,
    routing::post,
};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use tokio::{io::AsyncWriteExt, net::TcpListener};

use crate::helpers::*;

/// A wrong token (OSCAR 401) never shadows the real event: the right token is then forwarded once.
/// The refused one is dead-lettered with a 2xx (contract §7, sync mode), so MinIO does not stall.
#[tokio::test]
async fn wrong_token_then_right_token_forwards_once() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    oscar.require_token(true);
    let body = fixture("put-versioned.json");
    gw.post_as("svc", Some("Bearer wrong"), body.clone())
        .await
        .assert(200, &["dead-lettered"]);
    gw.post_event(body.clone())
        .await
        .assert(200, &["forwarded"]);
    gw.post_event(body).await.assert_verdicts(&["duplicate"]);
    assert_eq!(oscar.accepted().len(), 1);
    gw.stop().await;
}

/// OSCAR 503 → MinIO 503 with Retry-After, the key released, the retry forwarded.
#[tokio::test]
async fn upstream_failure_releases_the_key() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    oscar.set_status(503);
    let body = fixture("put-versioned.json");
    let p = gw.post_event(body.clone()).await;
    p.assert_status(503);
    assert!(p.retry_after.is_some());
    oscar.set_status(201);
    gw.post_event(body).await.assert(200, &["forwarded"]);
    assert_eq!(oscar.accepted().len(), 1);
    assert_eq!(oscar.received().len(), 2);
    gw.stop().await;
}

/// OSCAR unreachable (connection refused) → 503, nothing committed.
#[tokio::test]
async fn upstream_down_answers_503() {
    let oscar = FakeOscar::start().await;
    let url = oscar.url();
    oscar.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gw = TestGateway::start(test_config(&url)).await;
    gw.post_event(fixture("put-versioned.json"))
        .await
        .assert_status(503);
    gw.stop().await;
}

/// OSCAR never answers: the request times out (503 + Retry-After, verdict `failed`), the
/// reservation is released, and once OSCAR answers again the retry is forwarded.
#[tokio::test]
async fn a_hanging_oscar_times_out_and_releases_the_key() {
    let (oscar, gw) =
        gate_and_gateway(|cfg| cfg.delivery.request_timeout = Duration::from_millis(500)).await;
    let event = one_record("hang.txt", "v1");

    let p = gw.post_event(event.clone()).await;
    p.assert(503, &["failed"]);
    assert!(p.retry_after.is_some());
    assert!(p.reason().contains("timeout"), "{}", p.answer);

    oscar.open();
    gw.post_event(event).await.assert(200, &["forwarded"]);
    gw.stop().await;
}

/// OSCAR answers 201 with a body that never ends: the gateway reads at most a small cap of it,
/// so the delivery completes as `forwarded` and the fake only ever produced a bounded amount.
#[tokio::test]
async fn an_endless_response_body_is_not_read_past_the_cap() {
    let produced = Arc::new(AtomicU64::new(0));
    let p = produced.clone();
    let app = Router::new().route(
        "/job/{service}",
        post(move || {
            let p = p.clone();
            async move {
                let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
                let endless = stream::repeat(chunk).map(move |c| {
                    p.fetch_add(c.len() as u64, Ordering::Relaxed);
                    Ok::<_, std::io::Error>(c)
                });
                Response::builder()
                    .status(StatusCode::CREATED)
                    .body(Body::from_stream(endless))
                    .expect("response")
            }
        }),
    );
    let addr = serve(app).await;
    let mut cfg = test_config(&format!("http://{addr}"));
    cfg.delivery.request_timeout = Duration::from_secs(60);
    cfg.dedup.lease = Duration::from_secs(120);
    let gw = TestGateway::start(cfg).await;

    gw.post_event(one_record("endless.txt", "v1"))
        .await
        .assert(200, &["forwarded"]);
    // Had the body been read to the timeout, loopback would have carried gigabytes.
    let total = produced.load(Ordering::Relaxed);
    assert!(total < 64 * 1024 * 1024, "the fake produced {total} bytes");
    gw.stop().await;
}

/// OSCAR redirects (every 3xx flavour) to a second server: the gateway never follows, so the
/// second server — and the token — see nothing. A redirect is permanent (a retry cannot change
/// it), so the event is dead-lettered and MinIO gets 200 `dead-lettered`, as in spool mode.
#[tokio::test]
async fn redirects_are_never_followed() {
    let elsewhere = FakeOscar::start().await;
    let target = format!("{}/job/svc", elsewhere.url());
    let hits = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(AtomicUsize::new(301));
    let (h, s) = (hits.clone(), status.clone());
    let app = Router::new().route(
        "/job/{service}",
        post(move || {
            let (h, s, target) = (h.clone(), s.clone(), target.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let code = StatusCode::from_u16(s.load(Ordering::SeqCst) as u16).expect("status");
                Response::builder()
                    .status(code)
                    .header(LOCATION, target)
                    .body(Body::empty())
                    .expect("response")
            }
        }),
    );
    let addr = serve(app).await;
    let gw = TestGateway::start(test_config(&format!("http://{addr}"))).await;
    for (i, code) in [301, 302, 303, 307, 308].into_iter().enumerate() {
        status.store(code, Ordering::SeqCst);
        let p = gw.post_event(one_record(&format!("r{i}.txt"), "v1")).await;
        assert_eq!(p.status, 200, "{code}: {}", p.answer);
        assert_eq!(p.verdicts(), ["dead-lettered"], "{code}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 5);
    assert!(elsewhere.received().is_empty(), "a redirect was followed");
    gw.stop().await;
}

/// An HTTP/1.1 server that closes the connection after partial response headers: a retryable
/// failure (503), the key is released, and the retry on a healthy connection is forwarded.
#[tokio::test]
async fn a_reset_mid_response_is_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let first = c.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                while read_request_head(&mut s).await.is_some() {
                    if first {
                        let _ = s.write_all(b"HTTP/1.1 201 Cre").await;
                        let _ = s.shutdown().await;
                        return;
                    }
                    let ok = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
                    if s.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gw = TestGateway::start(test_config(&format!("http://{addr}"))).await;
    let event = one_record("reset.txt", "v1");
    gw.post_event(event.clone()).await.assert(503, &["failed"]);
    gw.post_event(event).await.assert(200, &["forwarded"]);
    assert!(connections.load(Ordering::SeqCst) >= 2);
    gw.stop().await;
}
