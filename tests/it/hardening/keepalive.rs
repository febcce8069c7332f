//! One connection, many requests: the gateway's own HTTP/1.1 reader (`http/h1`) and its hand-off
//! to hyper. Pipelined POSTs are answered in order, a request it declines mid-connection (a
//! probe, a chunked body) is served by hyper from the bytes already read and the connection
//! goes on, a body sent in pieces is read whole, an idle keep-alive connection closes after
//! `http.header_timeout`, and shutdown does not wait for idle keep-alive connections.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::*;

fn post(body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST /job/svc HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nAuthorization: {GOOD_TOKEN}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn chunked(body: &str) -> Vec<u8> {
    format!(
        "POST /job/svc HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nAuthorization: {GOOD_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
    .into_bytes()
}

/// Reads until `n` whole answers (each a head with `content-length` and its body) arrived, or
/// 10 s; returns their status lines and bodies.
async fn answers(s: &mut TcpStream, n: usize) -> Vec<(String, String)> {
    let mut raw = Vec::new();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while out.len() < n {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => raw.extend_from_slice(&buf[..k]),
            }
            while let Some((answer, used)) = split_answer(&raw) {
                out.push(answer);
                raw.drain(..used);
            }
        }
    })
    .await;
    out
}

fn split_answer(raw: &[u8]) -> Option<((String, String), usize)> {
    let text = std::str::from_utf8(raw).ok()?;
    let end = text.find("\r\n\r\n")? + 4;
    let head = &text[..end];
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))?
        .trim()
        .parse()
        .ok()?;
    let body = text.get(end..end + len)?;
    let status = head.lines().next()?.to_owned();
    Some(((status, body.to_owned()), end + len))
}

#[tokio::test]
async fn pipelined_and_declined_requests_share_one_connection() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    // Two POSTs in one write, a probe hyper answers, a chunked POST, then a plain POST again.
    let mut wire = post(&one_record("p-1.txt", "v1"), "");
    wire.extend(post(&one_record("p-2.txt", "v1"), ""));
    wire.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n");
    wire.extend(chunked(&one_record("p-3.txt", "v1")));
    wire.extend(post(&one_record("p-4.txt", "v1"), ""));
    s.write_all(&wire).await.expect("write");
    let got = answers(&mut s, 5).await;
    let statuses: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, vec!["HTTP/1.1 200 OK"; 5], "{got:?}");
    for (i, (_, body)) in got.iter().enumerate() {
        let want = if i == 2 { "\"ok\"" } else { "\"forwarded\"" };
        assert!(body.contains(want), "answer {i}: {body}");
    }
    assert_eq!(oscar.received().len(), 4);
    // A repeat on the same connection is a duplicate, not a second forward.
    s.write_all(&post(&one_record("p-1.txt", "v1"), ""))
        .await
        .expect("write");
    let again = answers(&mut s, 1).await;
    assert!(again[0].1.contains("\"duplicate\""), "{again:?}");
    assert_eq!(oscar.received().len(), 4);
    gw.stop().await;
}

#[tokio::test]
async fn a_body_in_pieces_is_read_whole_and_close_is_honoured() {
    let (oscar, gw) =
        oscar_and_gateway(|cfg| cfg.http.body_timeout = Duration::from_secs(10)).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let wire = post(&one_record("pieces.txt", "v1"), "Connection: close\r\n");
    for piece in wire.chunks(wire.len() / 3 + 1) {
        s.write_all(piece).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rest = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.contains("\r\nconnection: close\r\n"), "{rest}");
    assert!(rest.contains("\"forwarded\""), "{rest}");
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_closes_after_the_header_timeout() {
    let (_oscar, gw) =
        oscar_and_gateway(|cfg| cfg.http.header_timeout = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(&post(&one_record("idle.txt", "v1"), ""))
        .await
        .expect("write");
    assert_eq!(answers(&mut s, 1).await.len(), 1);
    // Then nothing: the gateway closes it (bounded wait, not a timing claim).
    let t0 = std::time::Instant::now();
    let rest = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(rest.is_empty(), "{rest}");
    assert!(t0.elapsed() < Duration::from_secs(9), "not closed");
    gw.stop().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_keep_alive_connections() {
    let (_oscar, gw) = oscar_and_gateway(|cfg| {
        cfg.http.header_timeout = Duration::from_secs(60);
        cfg.http.shutdown_grace = Duration::from_secs(30);
    })
    .await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(&post(&one_record("shut.txt", "v1"), ""))
        .await
        .expect("write");
    assert_eq!(answers(&mut s, 1).await.len(), 1);
    gw.shutdown.cancel();
    let rest = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(rest.is_empty(), "{rest}");
    // The grace is 30 s: a gateway waiting for the idle connection would not end within 10 s.
    for _ in 0..100 {
        if gw.task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gw.task.is_finished(),
        "shutdown waited for an idle connection"
    );
    gw.stop().await;
}

/// A request refused before its body was read (a wrong token, the body still on its way) is
/// answered, and the connection then closes cleanly: the client reads the whole answer, then
/// end of stream, even while it goes on sending the body.
#[tokio::test]
async fn a_refused_request_with_its_body_in_flight_still_gets_its_answer() {
    let (oscar, gw) = oscar_and_gateway(guard_svc).await;
    let body = "x".repeat(256 * 1024);
    let head = format!(
        "POST /job/svc HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nAuthorization: Bearer not-the-token\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(&body.as_bytes()[..1024]).await.expect("write");
    let (mut rd, mut wr) = s.into_split();
    let rest = body.as_bytes()[1024..].to_vec();
    let sender = tokio::spawn(async move {
        for piece in rest.chunks(16 * 1024) {
            if wr.write_all(piece).await.is_err() {
                break;
            }
        }
        wr
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(matches!(read, Ok(Ok(_))), "{read:?} after {text}");
    assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with('}'), "{text}");
    let _ = sender.await;
    assert!(oscar.received().is_empty());
    gw.stop().await;
}

/// The same requests answered by the gateway's own reader and by hyper (a chunked body is
/// declined to hyper) get the same status, headers and body: forwarded, duplicate, a wrong
/// token, a type that is not JSON, a body that is not JSON.
#[tokio::test]
async fn both_ways_in_answer_alike() {
    let (_oscar, gw) = oscar_and_gateway(guard_svc).await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("forwarded", one_record("alike.txt", "v1"), ""),
        ("duplicate", one_record("alike.txt", "v1"), ""),
        ("token", one_record("t.txt", "v1"), "wrong"),
        ("type", one_record("c.txt", "v1"), "text/plain"),
        ("json", "{not json".to_owned(), ""),
    ];
    for (name, body, tweak) in cases {
        let mut by = Vec::new();
        for way in ["fast", "hyper"] {
            // The first forward must be of an object the other way has not seen.
            let body = if name == "forwarded" && way == "hyper" {
                body.replace("alike.txt", "alike-2.txt")
            } else {
                body.clone()
            };
            let token = if tweak == "wrong" {
                "Bearer nope"
            } else {
                GOOD_TOKEN
            };
            let ctype = if tweak.contains('/') {
                tweak
            } else {
                "application/json"
            };
            let head = format!(
                "POST /job/svc HTTP/1.1\r\nHost: gw\r\nContent-Type: {ctype}\r\nAuthorization: {token}\r\n"
            );
            let wire = match way {
                "fast" => format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()),
                _ => format!(
                    "{head}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                ),
            };
            let mut s = TcpStream::connect(gw.addr).await.expect("connect");
            s.write_all(wire.as_bytes()).await.expect("write");
            by.push(normalise(&one_answer(&mut s).await));
        }
        assert_eq!(by[0], by[1], "{name}");
        assert!(!by[0].0.is_empty(), "{name}: no answer");
    }
    gw.stop().await;
}

/// The first whole answer on `s` as it came, or what came within 10 s.
async fn one_answer(s: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        while split_answer(&raw).is_none() {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => raw.extend_from_slice(&buf[..k]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&raw).into_owned()
}

/// Status line, headers but `date` (sorted), body with any dedup key masked.
fn normalise(raw: &str) -> (String, Vec<String>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    let mut headers: Vec<String> = lines
        .filter(|l| !l.starts_with("date:") && !l.starts_with("connection:"))
        .map(|l| l.to_ascii_lowercase())
        .filter(|l| !l.starts_with("content-length:"))
        .collect();
    headers.sort();
    let mut body = body.to_owned();
    while let Some(at) = body.find("\"key\":\"") {
        let start = at + 7;
        let end = body[start..].find('"').map_or(body.len(), |e| start + e);
        body.replace_range(at..end + 1, "\"key\":K");
    }
    (status, headers, body)
}

/// A head trickled in a byte at a time is read whole and answered (the reader parses again only
/// when a line ends).
#[tokio::test]
async fn a_head_trickled_byte_by_byte_is_taken() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let wire = post(&one_record("trickle.txt", "v1"), "");
    let head_len = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    for (i, b) in wire[..head_len].iter().enumerate() {
        s.write_all(&[*b]).await.expect("write");
        if i % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    s.write_all(&wire[head_len..]).await.expect("write");
    let got = answers(&mut s, 1).await;
    assert_eq!(got.len(), 1, "no answer");
    assert!(got[0].1.contains("\"forwarded\""), "{got:?}");
    assert_eq!(oscar.received().len(), 1);
    gw.stop().await;
}
