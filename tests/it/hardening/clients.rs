//! Slow and abusive clients: slow headers and bodies are cut by their timeouts, a flood of
//! webhooks is shed with 503 + Retry-After while `/healthz` keeps answering, and connections
//! beyond the cap are closed at accept until the slow ones time out.

use std::time::Duration;

use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::helpers::*;

/// A client that starts its headers and stops is disconnected after `http.header_timeout`, and
/// one that sends headers but only part of its body gets 408 after `http.body_timeout`.
#[tokio::test]
async fn slow_headers_are_cut_and_slow_bodies_get_408() {
    let (oscar, gw) = oscar_and_gateway(|cfg| {
        cfg.http.header_timeout = Duration::from_millis(500);
        cfg.http.body_timeout = Duration::from_millis(500);
    })
    .await;

    // Slow headers: the connection is closed with no request handled (bounded wait, not a timing claim).
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"POST /job/svc HTTP/1.1\r\nHost: gw\r\nContent-Type: appl")
        .await
        .expect("write");
    let answer = read_until_close(&mut s, Duration::from_secs(20)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // Slow body, declared length: 408 with a JSON reason.
    let b = one_record("slow.txt", "v1");
    let head = format!(
        "POST /job/svc HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nAuthorization: {GOOD_TOKEN}\r\nContent-Length: {}\r\n\r\n",
        b.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(&b.as_bytes()[..20]);
    let answer = raw_exchange(gw.addr, &req, Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("not received in time"), "{answer}");

    // A body trickled in chunks still has to arrive within the body timeout as a whole.
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST /job/svc HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nAuthorization: {GOOD_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut answered = String::new();
    for piece in b.as_bytes().chunks(4).take(40) {
        let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
        if s.write_all(&chunk).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if gw_answered(&mut s, &mut answered).await {
            break;
        }
    }
    answered.push_str(&read_until_close(&mut s, Duration::from_secs(20)).await);
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered}");

    assert!(oscar.received().is_empty());
    // The server is fine afterwards.
    gw.post_event(one_record("fast.txt", "v1"))
        .await
        .assert_status(200);
    gw.stop().await;
}

/// Reads what the server sent so far without waiting; true once something arrived.
async fn gw_answered(s: &mut TcpStream, into: &mut String) -> bool {
    let mut buf = [0u8; 4096];
    match s.try_read(&mut buf) {
        Ok(0) => true,
        Ok(n) => {
            into.push_str(&String::from_utf8_lossy(&buf[..n]));
            true
        }
        Err(_) => false,
    }
}

/// POSTs the event `held-{i}.txt` in a task of its own; the task yields the status (0 when no
/// answer came).
fn post_in_background(gw: &TestGateway, i: usize) -> tokio::task::JoinHandle<u16> {
    let client = gw.client.clone();
    let url = gw.url("/job/svc");
    let b = one_record(&format!("held-{i}.txt"), "v1");
    tokio::spawn(async move {
        let r = webhook(&client, &url, Some(GOOD_TOKEN))
            .body(b)
            .send()
            .await;
        r.map(|r| r.status().as_u16()).unwrap_or(0)
    })
}

/// With OSCAR stuck, webhooks beyond `http.max_inflight` are answered 503 + Retry-After at once;
/// `/healthz` and `/metrics` keep answering; a shed event stored nothing, so its retry is
/// forwarded once OSCAR recovers.
#[tokio::test]
async fn a_webhook_flood_is_shed_while_healthz_answers() {
    let (oscar, gw) = gate_and_gateway(|cfg| {
        cfg.http.max_inflight = 2;
        cfg.http.max_connections = 64;
        cfg.delivery.request_timeout = Duration::from_secs(30);
        cfg.dedup.lease = Duration::from_secs(60);
    })
    .await;

    // Two requests occupy both slots: OSCAR holds them.
    let held: Vec<_> = (0..2).map(|i| post_in_background(&gw, i)).collect();
    assert!(
        eventually(Duration::from_secs(10), || oscar.arrived() == 2).await,
        "both reach OSCAR"
    );

    // Everything beyond is shed at once.
    for i in 0..5 {
        let p = gw
            .post_event(one_record(&format!("shed-{i}.txt"), "v1"))
            .await;
        p.assert_status(503);
        assert!(p.retry_after.is_some());
        assert!(
            error_reason(&p.answer).contains("overloaded"),
            "{}",
            p.answer
        );
        assert_eq!(gw.status_of("/healthz").await, 200);
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dedup_gateway_requests_shed_total 5")),
        "{metrics}"
    );
    assert_eq!(
        oscar.arrived(),
        2,
        "nothing of a shed request was forwarded"
    );

    // OSCAR recovers: the held ones complete, and a shed event's retry is forwarded (not duplicate).
    oscar.open();
    for h in held {
        assert_eq!(h.await.expect("join"), 200);
    }
    gw.post_event(one_record("shed-0.txt", "v1"))
        .await
        .assert(200, &["forwarded"]);
    gw.stop().await;
}

/// Connections beyond `http.max_connections` are closed at accept; idle connections holding the
/// slots are cut by the header timeout, after which `/healthz` answers again.
#[tokio::test]
async fn idle_connections_beyond_the_cap_are_shed_and_then_expire() {
    let (_oscar, gw) = oscar_and_gateway(|cfg| {
        cfg.http.max_connections = 3;
        cfg.http.max_inflight = 2;
        cfg.http.header_timeout = Duration::from_secs(1);
    })
    .await;

    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(gw.addr).await.expect("connect");
        s.write_all(b"GET /hea").await.expect("write");
        idle.push(s);
    }
    // The fourth is accepted after the three (one accept loop) and closed at once, unanswered.
    let shed = raw_exchange(
        gw.addr,
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        shed.is_empty(),
        "a connection over the cap gets no answer: {shed}"
    );

    // The idle ones are cut by the header timeout; then the server answers again.
    for s in &mut idle {
        read_until_close(s, Duration::from_secs(20)).await;
    }
    assert!(
        healthz_up(&gw.client, &gw.url(""), 100, Duration::from_millis(100)).await,
        "healthz answers once the slow connections are gone"
    );
    let metrics = gw.metrics().await;
    let shed_count = metric_value(&metrics, "dedup_gateway_connections_shed_total").unwrap_or(0.0);
    assert!(shed_count >= 1.0, "{metrics}");
    gw.stop().await;
}

/// A client that hangs up while its event is being delivered does not cancel the delivery (the
/// part from the reservation to its commit runs in its own task): the identity is committed once
/// OSCAR answers, so the sender's retry is a duplicate of a *delivered* event, not of one stuck
/// in flight until its lease ends, and OSCAR sees the event once.
#[tokio::test]
async fn a_client_hang_up_does_not_cancel_a_delivery() {
    let (oscar, gw) = gate_and_gateway(|cfg| {
        cfg.delivery.request_timeout = Duration::from_secs(30);
        cfg.dedup.lease = Duration::from_secs(60);
    })
    .await;

    let b = one_record("hang-up.txt", "v1");
    let req = format!(
        "POST /job/svc HTTP/1.1\r\nhost: gw\r\nauthorization: {GOOD_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
        b.len()
    );
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(req.as_bytes()).await.expect("write");
    assert!(
        eventually(Duration::from_secs(10), || oscar.arrived() == 1).await,
        "the event reaches OSCAR"
    );
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    oscar.open();

    let last = retry(
        50,
        Duration::from_millis(100),
        async || {
            let p = gw.post_event(one_record("hang-up.txt", "v1")).await;
            p.assert_status(200);
            p
        },
        |p| p.reason() == "already-delivered",
    )
    .await;
    last.assert_verdicts(&["duplicate"])
        .assert_reason("already-delivered");
    assert_eq!(oscar.arrived(), 1, "OSCAR saw the event once");
    gw.stop().await;
}
