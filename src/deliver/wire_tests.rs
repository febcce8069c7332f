use proptest::prelude::*;

use super::*;

fn parse(s: &str) -> Result<Option<Head>, HeadError> {
    response_head(s.as_bytes())
}

#[test]
fn the_request_head_is_what_hyper_sent() {
    let mut out = Vec::new();
    let key = DedupKey([0xab; 16]);
    let target: Uri = "/p/job/svc".parse().unwrap();
    let host = HeaderValue::from_static("oscar:8080");
    let auth = HeaderValue::from_static("Bearer t");
    request_head(&mut out, &target, &host, &key, Some(&auth), 12);
    let want = format!(
        "POST /p/job/svc HTTP/1.1\r\nhost: oscar:8080\r\ncontent-type: application/json\r\n\
         x-dedup-key: {}\r\nauthorization: Bearer t\r\nuser-agent: dedup-gateway/{}\r\n\
         accept: */*\r\ncontent-length: 12\r\n\r\n",
        "ab".repeat(16),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(String::from_utf8(out).unwrap(), want);
}

#[test]
fn a_plain_answer_keeps_the_connection() {
    let h = parse("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap()
        .unwrap();
    assert_eq!((h.status, h.keep, h.len), (201, Some(2), 43));
    let h = parse("HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.keep, Some(0));
    let h = parse("HTTP/1.1 503 x\r\nRetry-After: 7\r\ncontent-length: 0\r\n\r\n").unwrap();
    assert_eq!(h.unwrap().retry_after, Some(Duration::from_secs(7)));
}

#[test]
fn anything_unclear_closes_the_connection() {
    for s in [
        "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 201 Created\r\n\r\n",
        "HTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 201 Created\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 201 Created\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 201 Created\r\nContent-Length: 99999999\r\n\r\n",
    ] {
        let h = parse(s).unwrap().unwrap();
        assert_eq!((h.status, h.keep), (201, None), "{s}");
    }
}

#[test]
fn interim_heads_are_skipped_and_garbage_is_refused() {
    let s = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    let h = parse(s).unwrap().unwrap();
    assert_eq!((h.status, h.len, h.keep), (201, s.len(), Some(0)));
    assert_eq!(parse("HTTP/1.1 201 Cre"), Ok(None));
    assert_eq!(parse("SSH-2.0-OpenSSH\r\n\r\n"), Err(HeadError::Malformed));
    let big = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
    assert_eq!(parse(&big), Err(HeadError::TooLarge));
}

proptest! {
    /// Read in any two pieces, a head parses the same as whole, and no prefix of it is complete.
    #[test]
    fn a_head_split_anywhere_parses_the_same(
        status in 200u16..600,
        len in proptest::option::of(0usize..70_000),
        close in any::<bool>(),
        cut in 0usize..200,
    ) {
        let mut s = format!("HTTP/1.1 {status} X\r\n");
        if let Some(n) = len { s.push_str(&format!("Content-Length: {n}\r\n")); }
        if close { s.push_str("Connection: close\r\n"); }
        s.push_str("\r\n");
        let whole = parse(&s).unwrap().unwrap();
        prop_assert_eq!(whole.len, s.len());
        let keep = len.filter(|&n| !close && n <= crate::deliver::RESPONSE_CAP);
        let keep = if status == 204 || status == 304 { (!close).then_some(0) } else { keep };
        prop_assert_eq!(whole.keep, keep);
        let cut = cut.min(s.len() - 1);
        prop_assert_eq!(response_head(&s.as_bytes()[..cut]), Ok(None));
    }
}
