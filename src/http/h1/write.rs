//! The bytes of an answer on the gateway's own HTTP/1.1 path: status line, headers and body in
//! one buffer, written with one `write(2)`.
//!
//! The headers are the ones hyper wrote for the same answer (`content-type`, `content-length`,
//! `retry-after` on a 503, `date`), plus `connection: close` when the connection ends after it.
//! Rare answers (errors built as an axum [`Response`]) are copied from the response as it is, so
//! they cannot drift from what the router path sends.

use std::{cell::RefCell, time::SystemTime};

use axum::{
    http::{StatusCode, header::CONTENT_LENGTH},
    response::Response,
};
use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;

/// Appends an answer with a JSON body; `retry_after` in seconds.
pub fn json(
    out: &mut Vec<u8>,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<&str>,
    close: bool,
) {
    status_line(out, status);
    out.extend_from_slice(b"content-type: application/json\r\n");
    if let Some(secs) = retry_after {
        out.extend_from_slice(b"retry-after: ");
        out.extend_from_slice(secs.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    finish(out, body, close);
}

/// Appends `resp` whole. Its body must be complete already (the gateway's error answers and
/// [`super::super::answer::response`] are a single `Bytes`); one that is not is answered 500.
pub fn response(out: &mut Vec<u8>, resp: Response, close: bool) {
    let (parts, body) = resp.into_parts();
    let Some(Ok(collected)) = body.collect().now_or_never() else {
        return json(
            out,
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":"internal error"}"#,
            None,
            close,
        );
    };
    let body: Bytes = collected.to_bytes();
    status_line(out, parts.status);
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH || name == "connection" {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    finish(out, &body, close);
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn finish(out: &mut Vec<u8>, body: &[u8], close: bool) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\ndate: ");
    DATE.with(|d| out.extend_from_slice(d.borrow_mut().now()));
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

thread_local! {
    /// The `Date` value, formatted once a second per thread (as hyper caches it).
    static DATE: RefCell<CachedDate> = const { RefCell::new(CachedDate { secs: u64::MAX, text: [0; 29] }) };
}

struct CachedDate {
    secs: u64,
    text: [u8; 29],
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if secs != self.secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == self.text.len() {
                self.text.copy_from_slice(text.as_bytes());
                self.secs = secs;
            }
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;
    use crate::error::AppError;

    fn text(out: &[u8]) -> String {
        String::from_utf8(out.to_vec()).expect("utf-8")
    }

    #[test]
    fn a_json_answer_has_hyper_s_headers() {
        let mut out = Vec::new();
        json(
            &mut out,
            StatusCode::SERVICE_UNAVAILABLE,
            b"{}",
            Some("3"),
            false,
        );
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{t}");
        assert!(t.contains("\r\ncontent-type: application/json\r\n"));
        assert!(t.contains("\r\nretry-after: 3\r\n"));
        assert!(t.contains("\r\ncontent-length: 2\r\n"));
        assert!(!t.contains("connection"));
        assert!(t.ends_with(" GMT\r\n\r\n{}"), "{t}");
        let date = t
            .split("date: ")
            .nth(1)
            .and_then(|d| d.split("\r\n").next());
        assert!(httpdate::parse_http_date(date.expect("date")).is_ok());
    }

    #[test]
    fn an_error_response_is_copied_as_it_is() {
        let mut out = Vec::new();
        response(
            &mut out,
            AppError::Unavailable("busy".into()).into_response(),
            true,
        );
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{t}");
        assert!(t.contains("\r\nretry-after: 5\r\n"));
        assert!(t.contains("\r\nconnection: close\r\n"));
        assert!(t.ends_with("\r\n\r\n{\"error\":\"busy\"}"), "{t}");
        assert_eq!(t.matches("content-length: 16\r\n").count(), 1, "{t}");
    }
}
