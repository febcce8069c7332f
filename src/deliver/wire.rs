//! The bytes of one exchange with an `http://` OSCAR: the request head written straight from the
//! delivery, and the response head read with `httparse`.
//!
//! Why by hand: the request is always the same shape (one method, one target, seven headers), so
//! building a header map for hyper to serialise again, and running hyper's client dispatcher in a
//! task of its own, cost more than the exchange itself (BENCHMARKS.md). Every byte written comes
//! from a value that was already validated: the target from a parsed [`hyper::Uri`], the
//! `Authorization` from a [`HeaderValue`] (no CR, LF or NUL), the key as hex; so a service name or
//! a token cannot inject a header.
//!
//! What a response may look like, and what the gateway does with it: the status decides the
//! outcome (contract §7) as soon as the head is complete. The connection carries another request
//! only when the answer ended cleanly where its `Content-Length` says (at most [`super::RESPONSE_CAP`]
//! bytes of body), over HTTP/1.1, without `Connection: close`. Chunked, unbounded or oversized
//! bodies are not drained; the connection is closed instead, which is always safe. Interim 1xx
//! heads are skipped.

use std::time::Duration;

use hyper::{Uri, header::HeaderValue};

use crate::identity::DedupKey;

/// A response head larger than this is refused (hyper's default limit is about the same).
pub const MAX_HEAD: usize = 64 * 1024;

/// Response headers read at most (hyper's default limit too); more is a malformed answer.
const MAX_HEADERS: usize = 100;

/// Appends the request head for `target` to `out`; the body follows it on the wire.
pub fn request_head(
    out: &mut Vec<u8>,
    target: &Uri,
    host: &HeaderValue,
    key: &DedupKey,
    authorization: Option<&HeaderValue>,
    body_len: usize,
) {
    let path = target.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\nx-dedup-key: ");
    out.extend_from_slice(&key.hex_bytes());
    if let Some(auth) = authorization {
        out.extend_from_slice(b"\r\nauthorization: ");
        out.extend_from_slice(auth.as_bytes());
    }
    out.extend_from_slice(
        concat!(
            "\r\nuser-agent: dedup-gateway/",
            env!("CARGO_PKG_VERSION"),
            "\r\naccept: */*\r\ncontent-length: "
        )
        .as_bytes(),
    );
    out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// What a complete response head said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// Bytes of head, interim 1xx heads included, at the start of the buffer.
    pub len: usize,
    /// The body's length when the connection may be kept: `Content-Length` given (or no body by
    /// the status), HTTP/1.1, no `Connection: close`, no `Transfer-Encoding`.
    pub keep: Option<usize>,
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed response head")]
    Malformed,
    #[error("response head over {MAX_HEAD} bytes")]
    TooLarge,
}

/// Parses the response head at the start of `buf`: `Ok(None)` while more bytes are needed.
pub fn response_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut start = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(&buf[start..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(HeadError::TooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(HeadError::Malformed),
        };
        let status = resp.code.ok_or(HeadError::Malformed)?;
        if (100..200).contains(&status) && status != 101 {
            start += n;
            continue;
        }
        return Ok(Some(head(&resp, status, start + n)));
    }
}

fn head(resp: &httparse::Response<'_, '_>, status: u16, len: usize) -> Head {
    let mut retry_after = None;
    let mut length: Option<usize> = None;
    let mut keep = resp.version == Some(1);
    let mut lengths = 0;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            keep = false;
        } else if name.eq_ignore_ascii_case("connection") {
            if h.value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                keep = false;
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = std::str::from_utf8(h.value)
                .ok()
                .and_then(super::parse_retry_after);
        }
    }
    let bodyless = status == 204 || status == 304 || status == 101;
    let body = if bodyless {
        Some(0)
    } else if lengths == 1 {
        length
    } else {
        None
    };
    Head {
        status,
        retry_after,
        len,
        keep: body.filter(|&n| keep && status != 101 && n <= super::RESPONSE_CAP),
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
