//! The JSON answer to MinIO, written by hand: `{"results":[{"verdict":…,"reason":…,"key":…}]}`.
//!
//! Why not `axum::Json`: the answer has one fixed shape, a verdict from a closed set, a reason
//! that is nearly always a static kebab-case word and a 32-character hex key, yet serde's
//! serializer walks it field by field through a growing `BytesMut` writer. Here the bytes are
//! appended into one buffer sized up front. A reason that would need escaping (an owned error
//! text) goes through `serde_json`, so the output is byte-for-byte what serde wrote (a test
//! compares both on every verdict and on reasons that need escaping).

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header::CONTENT_TYPE},
    response::Response,
};
use bytes::Bytes;

use crate::pipeline::Answer;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The whole answer (its [`encode`]d bytes) with `status` and `Content-Type: application/json`,
/// as `(status, Json)` gave.
pub fn response(status: StatusCode, body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, APPLICATION_JSON);
    resp
}

/// The answer's JSON bytes (the same as `serde_json::to_vec(answer)`).
pub fn encode(answer: &Answer) -> Bytes {
    // Sized exactly when no reason needs escaping: `Bytes::from` a full `Vec` takes it over as
    // it is, where a `Vec` with spare capacity would cost one more allocation.
    let exact: usize = answer.results.iter().map(record_len).sum();
    let mut out = Vec::with_capacity(14 + exact + answer.results.len().saturating_sub(1));
    out.extend_from_slice(b"{\"results\":[");
    for (i, r) in answer.results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"verdict\":\"");
        out.extend_from_slice(r.verdict.as_str().as_bytes());
        out.extend_from_slice(b"\",\"reason\":");
        push_str(&mut out, &r.reason);
        out.extend_from_slice(b",\"key\":");
        match &r.key {
            Some(k) => {
                out.push(b'"');
                out.extend_from_slice(&k.hex_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// A record's bytes when its reason needs no escaping: `{"verdict":"…","reason":"…","key":…}`.
fn record_len(r: &crate::verdict::RecordResult) -> usize {
    let key = if r.key.is_some() { 34 } else { 4 };
    33 + key + r.verdict.as_str().len() + r.reason.len()
}

/// A JSON string: copied as it is when nothing in it needs escaping (what `serde_json` escapes:
/// `"`, `\` and control characters), else written by `serde_json`.
fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing a `&str` into a `Vec` cannot fail; keep the JSON well-formed regardless.
        out.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::{
        identity::DedupKey,
        verdict::{RecordResult, Verdict},
    };

    fn answer(results: Vec<RecordResult>) -> Answer {
        Answer {
            results,
            status: 200,
        }
    }

    #[test]
    fn the_bytes_are_what_serde_writes() {
        let mut all: Vec<RecordResult> = Verdict::ALL
            .into_iter()
            .enumerate()
            .map(|(i, v)| RecordResult::keyed(v, "already-delivered", DedupKey([i as u8 * 17; 16])))
            .collect();
        for reason in [
            "",
            "quote \" backslash \\ newline \n tab \t nul \0 del \x7f",
            "non-ascii: é ü ☃ \u{1F600}",
            "upstream-503",
        ] {
            all.push(RecordResult {
                verdict: Verdict::Invalid,
                reason: Cow::Owned(reason.to_owned()),
                key: None,
            });
        }
        for n in [0, 1, 2, all.len()] {
            let a = answer(all[..n].to_vec());
            let want = serde_json::to_vec(&a).expect("serializable");
            if n <= 2 {
                // Sized exactly (no reason to escape): the buffer is taken over, not copied.
                let exact: usize = a.results.iter().map(record_len).sum();
                assert_eq!(14 + exact + n.saturating_sub(1), want.len());
            }
            assert_eq!(
                encode(&a).as_ref(),
                want.as_slice(),
                "{}",
                String::from_utf8_lossy(&want)
            );
        }
    }

    #[test]
    fn the_response_carries_status_and_json_type() {
        let a = answer(vec![RecordResult::keyed(
            Verdict::Failed,
            "upstream-503",
            DedupKey([1; 16]),
        )]);
        let resp = response(StatusCode::SERVICE_UNAVAILABLE, encode(&a));
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
    }
}
