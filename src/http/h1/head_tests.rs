use proptest::prelude::*;

use super::*;

const LIMIT: usize = 1024;

fn take(raw: &str) -> Request {
    match parse(raw.as_bytes(), LIMIT) {
        Parsed::Take(r) => r,
        other => panic!("{raw:?} was {other:?}"),
    }
}

fn text(raw: &str, r: &Option<Range<usize>>) -> Option<String> {
    r.clone().map(|r| raw[r].to_owned())
}

#[test]
fn minio_s_post_is_taken_with_its_parts() {
    let raw = "POST /job/plants HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
               Authorization: Bearer tok\r\nauthorization: second\r\nContent-Length: 5\r\n\
               User-Agent: MinIO\r\n\r\nhello";
    let r = take(raw);
    assert_eq!(&raw[r.service.clone()], "plants");
    assert_eq!(r.body_len, 5);
    assert_eq!(&raw[r.head_len..], "hello");
    assert_eq!(
        text(raw, &r.content_type).as_deref(),
        Some("application/json")
    );
    assert_eq!(text(raw, &r.authorization).as_deref(), Some("Bearer tok"));
    assert_eq!(r.content_encoding, None);
    assert!(!r.close);
    let close = take("POST /job/a HTTP/1.1\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n");
    assert!(close.close);
    let ka = take("POST /job/a HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
    assert!(!ka.close);
}

#[test]
fn a_head_cut_short_is_partial() {
    let raw = "POST /job/plants HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
    for cut in 0..raw.len() {
        assert_eq!(
            parse(&raw.as_bytes()[..cut], LIMIT),
            Parsed::Partial,
            "{cut}"
        );
    }
    assert!(matches!(parse(raw.as_bytes(), LIMIT), Parsed::Take(_)));
}

#[test]
fn everything_unusual_goes_to_hyper() {
    for raw in [
        "GET /job/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "HEAD /job/a HTTP/1.1\r\n\r\n",
        "POST /job/a HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        "POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "POST /job/%61 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "POST /job/a/b HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "POST /job/a?x=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "POST /job/a HTTP/1.1\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nContent-Length: 1\r\nUpgrade: h2c\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nContent-Length: 1\r\nConnection: upgrade\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nContent-Length: 1\r\nConnection: keep-alive, close\r\n\r\n",
        "POST /job/a HTTP/1.1\r\nBad Header: x\r\nContent-Length: 1\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        assert_eq!(parse(raw.as_bytes(), LIMIT), Parsed::Decline, "{raw:?}");
    }
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("x-{i}: v\r\n"))
        .collect();
    let raw = format!("POST /job/a HTTP/1.1\r\n{many}Content-Length: 0\r\n\r\n");
    assert_eq!(parse(raw.as_bytes(), LIMIT), Parsed::Decline);
}

#[test]
fn the_length_limit_is_inclusive() {
    let raw = format!("POST /job/a HTTP/1.1\r\nContent-Length: {LIMIT}\r\n\r\n");
    assert_eq!(take(&raw).body_len, LIMIT);
    assert_eq!(
        take("POST /job/a HTTP/1.1\r\nContent-Length:  7 \r\n\r\n").body_len,
        7
    );
}

proptest! {
    /// Any bytes: never a panic, and a taken head is a POST to a plain service with exactly one
    /// digits-only length within the limit, whose ranges lie inside the head.
    #[test]
    fn whatever_is_taken_is_well_formed(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        check(&bytes);
    }

    /// Heads built from the parts that matter, in any order and case.
    #[test]
    fn built_heads_are_judged_by_their_parts(
        parts in proptest::collection::vec(prop_oneof![
            Just("Content-Length: 3"), Just("content-length: 2000"), Just("Content-Length: x"),
            Just("Transfer-Encoding: chunked"), Just("Expect: 100-continue"),
            Just("Connection: close"), Just("Connection: Upgrade"), Just("Host: a"),
            Just("Authorization: Bearer t"), Just("Content-Type: text/plain"),
        ], 0..6),
        path in prop_oneof![Just("/job/a"), Just("/job/a%20"), Just("/x"), Just("/job/a.b_c-d")],
    ) {
        let head = format!("POST {path} HTTP/1.1\r\n{}\r\n\r\n", parts.join("\r\n"));
        let lengths = parts.iter().filter(|p| p.to_ascii_lowercase().starts_with("content-length")).count();
        let refused = parts.iter().any(|p| {
            p.starts_with("Transfer") || p.starts_with("Expect") || *p == "Connection: Upgrade"
        });
        let good = lengths == 1 && parts.contains(&"Content-Length: 3") && !refused
            && !path.contains('%') && path.starts_with("/job/");
        let got = parse(head.as_bytes(), LIMIT);
        prop_assert_eq!(matches!(got, Parsed::Take(_)), good, "{:?} → {:?}", head, got);
        check(head.as_bytes());
    }
}

fn check(bytes: &[u8]) {
    if let Parsed::Take(r) = parse(bytes, LIMIT) {
        assert!(bytes.starts_with(b"POST /job/"));
        assert!(r.head_len <= bytes.len());
        assert!(r.body_len <= LIMIT);
        let service = &bytes[r.service.clone()];
        assert!(!service.is_empty() && !service.contains(&b'/') && !service.contains(&b'%'));
        for range in [&r.content_type, &r.content_encoding, &r.authorization]
            .into_iter()
            .flatten()
        {
            assert!(range.end <= r.head_len);
        }
    }
}
