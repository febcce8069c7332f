//! Which request heads the gateway's own HTTP/1.1 reader takes, read with `httparse`.
//!
//! It takes only the plain case, which is every request MinIO sends: `POST /job/{service}` over
//! HTTP/1.1 with one `Content-Length` within the body limit, no `Transfer-Encoding`, no `Expect`,
//! no `Upgrade`, and a `Connection` header that is absent, `keep-alive` or `close`. Anything
//! else, and any head `httparse` refuses, is [`Parsed::Decline`]: hyper then serves the
//! connection from that request on, so every unusual request is answered exactly as before
//! (hyper's 400 for a malformed head, its chunked decoder, the router's 413 for a declared
//! length over the limit, `100 Continue`). Declining is always safe; taking is what must be
//! exact, and the tests here hold it to that.

use std::ops::Range;

/// Headers read at most; a head with more is declined (hyper allows 100).
const MAX_HEADERS: usize = 48;

/// What the bytes at the start of the read buffer hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A plain webhook POST this reader serves.
    Take(Request),
    /// Anything else: hyper serves the connection from here.
    Decline,
}

/// A taken request: byte ranges into the head, so nothing is copied out of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes of head, the blank line included; the body follows.
    pub head_len: usize,
    pub service: Range<usize>,
    pub body_len: usize,
    pub content_type: Option<Range<usize>>,
    pub content_encoding: Option<Range<usize>>,
    pub authorization: Option<Range<usize>>,
    /// `Connection: close`: answer, then close.
    pub close: bool,
}

/// Reads the head at the start of `buf`; `body_limit` is `http.body_limit`.
pub fn parse(buf: &[u8], body_limit: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Decline,
    };
    if req.method != Some("POST") || req.version != Some(1) {
        return Parsed::Decline;
    }
    let Some(service) = req.path.and_then(super::super::plain_webhook_service) else {
        return Parsed::Decline;
    };
    if service.contains('?') {
        return Parsed::Decline;
    }
    let mut taken = Request {
        head_len,
        service: range_of(buf, service.as_bytes()),
        body_len: 0,
        content_type: None,
        content_encoding: None,
        authorization: None,
        close: false,
    };
    let mut length = None;
    for h in req.headers.iter() {
        match header_role(h.name) {
            Role::ContentLength => {
                if length.is_some() {
                    return Parsed::Decline;
                }
                length = Some(digits(h.value));
            }
            Role::ContentType => first(&mut taken.content_type, buf, h.value),
            Role::ContentEncoding => first(&mut taken.content_encoding, buf, h.value),
            Role::Authorization => first(&mut taken.authorization, buf, h.value),
            Role::Connection => {
                let v = h.value.trim_ascii();
                if v.eq_ignore_ascii_case(b"close") {
                    taken.close = true;
                } else if !v.eq_ignore_ascii_case(b"keep-alive") {
                    return Parsed::Decline;
                }
            }
            Role::Refused => return Parsed::Decline,
            Role::Other => {}
        }
    }
    match length {
        Some(Some(n)) if n <= body_limit => taken.body_len = n,
        _ => return Parsed::Decline,
    }
    Parsed::Take(taken)
}

enum Role {
    ContentLength,
    ContentType,
    ContentEncoding,
    Authorization,
    Connection,
    /// What this reader leaves to hyper: `Transfer-Encoding`, `Expect`, `Upgrade`.
    Refused,
    Other,
}

fn header_role(name: &str) -> Role {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    match name.len() {
        14 if is("content-length") => Role::ContentLength,
        12 if is("content-type") => Role::ContentType,
        16 if is("content-encoding") => Role::ContentEncoding,
        13 if is("authorization") => Role::Authorization,
        10 if is("connection") => Role::Connection,
        17 if is("transfer-encoding") => Role::Refused,
        6 if is("expect") => Role::Refused,
        7 if is("upgrade") => Role::Refused,
        _ => Role::Other,
    }
}

/// The first of a repeated header counts, as `HeaderMap::get` gives it.
fn first(slot: &mut Option<Range<usize>>, buf: &[u8], value: &[u8]) {
    if slot.is_none() {
        *slot = Some(range_of(buf, value));
    }
}

/// A `Content-Length` of digits only (optional spaces around), as hyper accepts it.
fn digits(v: &[u8]) -> Option<usize> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0usize, |n, d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

/// Where `part`, a slice `httparse` took from `buf`, lies in it.
fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
