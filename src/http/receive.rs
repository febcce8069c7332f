//! The webhook handler: check the request, read the body, run the pipeline, answer MinIO.

use std::time::Instant;

use axum::{
    extract::{Path, Request, State},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER},
    },
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use subtle::ConstantTimeEq;

use super::{AppState, overload};
use crate::{
    config::{Mode, valid_service_name},
    error::AppError,
    pipeline::Inbound,
};

/// `HEAD` on a webhook path: old MinIO versions probe liveness this way.
pub async fn probe() -> StatusCode {
    StatusCode::OK
}

/// `POST /job/{service}` through the router (what [`super::App`]'s fast path declines).
///
/// Takes the request whole rather than a `HeaderMap` extractor, which would clone every header.
pub async fn webhook(
    State(state): State<AppState>,
    Path(service): Path<String>,
    request: Request,
) -> Response {
    handle(state, service, request).await
}

/// A webhook POST for `service` through hyper: in-flight permit, checks, body, pipeline, answer.
/// The gateway's own HTTP/1.1 reader (`super::h1`) runs the same steps on its own bytes.
pub async fn handle<B>(
    state: AppState,
    service: String,
    request: axum::http::Request<B>,
) -> Response
where
    B: hyper::body::Body<Data = Bytes>,
{
    let Some(_permit) = state.inflight.try_enter() else {
        // Shed before anything of the request is read (see `overload`).
        return overload::shed(state.gateway.metrics());
    };
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let resp = match accept(&state, service, &parts.headers, body).await {
        Ok(reply) => reply.into_response(),
        Err(e) => e.into_response(),
    };
    state
        .gateway
        .metrics()
        .response(resp.status().as_u16(), started.elapsed());
    resp
}

async fn accept<B>(
    state: &AppState,
    service: String,
    headers: &HeaderMap,
    body: B,
) -> Result<Reply, AppError>
where
    B: hyper::body::Body<Data = Bytes>,
{
    let head = Head::of(headers);
    let authorization = precheck(state, &service, &head, headers.get(AUTHORIZATION).cloned())?;
    let cfg = state.gateway.config();
    let limit = cfg.http.body_limit;
    let body = tokio::time::timeout(
        cfg.http.body_timeout,
        read_body(body, limit, head.content_length),
    )
    .await
    .map_err(|_| AppError::BodyTimeout)??;
    judge(
        state,
        Inbound {
            service,
            authorization,
            body,
        },
    )
    .await
}

/// What the checks before the body read of a webhook request's head, whichever reader parsed it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Head<'a> {
    pub content_type: Option<&'a [u8]>,
    pub content_encoding: Option<&'a [u8]>,
    pub content_length: Option<u64>,
}

impl<'a> Head<'a> {
    pub fn of(headers: &'a HeaderMap) -> Self {
        Self {
            content_type: headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes),
            content_encoding: headers.get(CONTENT_ENCODING).map(HeaderValue::as_bytes),
            content_length: declared_length(headers),
        }
    }
}

/// The checks that need only the head: service name, content headers, token, declared length.
/// Returns the `Authorization` to forward, marked sensitive: its Debug output (in any derived
/// Debug of Inbound, Delivery or a DLQ entry, and in hyper logs) prints `Sensitive`, never the
/// token.
pub fn precheck(
    state: &AppState,
    service: &str,
    head: &Head<'_>,
    authorization: Option<HeaderValue>,
) -> Result<Option<HeaderValue>, AppError> {
    let cfg = state.gateway.config();
    if !valid_service_name(service) {
        return Err(AppError::BadService);
    }
    check_content_headers(head.content_type, head.content_encoding)?;
    let authorization = authorization.map(|mut v| {
        v.set_sensitive(true);
        v
    });
    check_inbound_token(&cfg.service(service).inbound_tokens, authorization.as_ref())?;
    let limit = cfg.http.body_limit;
    if head.content_length.is_some_and(|n| n > limit as u64) {
        return Err(AppError::TooLarge(limit));
    }
    Ok(authorization)
}

/// A webhook's answer: its status and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Reply {
    /// The `Retry-After` seconds of the answer: a 503 has one (MinIO retries it from its queue).
    pub fn retry_after(&self) -> Option<&'static str> {
        (self.status == StatusCode::SERVICE_UNAVAILABLE).then_some("3")
    }

    pub fn into_response(self) -> Response {
        let retry = self.retry_after();
        let mut resp = super::answer::response(self.status, self.body);
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(secs));
        }
        resp
    }
}

/// The pipeline on a whole body, and the answer to it.
pub async fn judge(state: &AppState, inbound: Inbound) -> Result<Reply, AppError> {
    // Sync and spool mode run here: the pipeline detaches the part a client hang-up must not
    // cancel (from a claim to its commit, release or spool write; see `pipeline`), so a record
    // costs no task unless its client hangs up mid-delivery. Shadow mode claims and forwards in
    // one pass and keeps a task of its own.
    let answer = if state.gateway.config().mode == Mode::Shadow {
        let gateway = state.gateway.clone();
        tokio::spawn(async move { gateway.handle(inbound).await })
            .await
            .map_err(|_| AppError::Internal)??
    } else {
        state.gateway.handle(inbound).await?
    };
    Ok(Reply {
        status: StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body: super::answer::encode(&answer),
    })
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// 415 for a Content-Type that is present and not JSON, or a Content-Encoding other than identity.
fn check_content_headers(
    content_type: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
) -> Result<(), AppError> {
    if let Some(ct) = content_type {
        let text = visible(ct).unwrap_or("");
        let mime = text.split(';').next().unwrap_or("").trim();
        let json = mime.eq_ignore_ascii_case("application/json")
            || mime.eq_ignore_ascii_case("text/json")
            || mime
                .len()
                .checked_sub(5)
                .and_then(|at| mime.get(at..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case("+json"));
        if !json {
            let mut shown = text.to_owned();
            shown.truncate(64);
            return Err(AppError::UnsupportedType(shown));
        }
    }
    if let Some(ce) = content_encoding {
        let text = visible(ce).unwrap_or("?");
        if !text.trim().eq_ignore_ascii_case("identity") {
            let mut shown = text.to_owned();
            shown.truncate(32);
            return Err(AppError::UnsupportedEncoding(shown));
        }
    }
    Ok(())
}

/// A header value as text when it is visible ASCII (and tabs), as `HeaderValue::to_str` gives it.
fn visible(v: &[u8]) -> Option<&str> {
    v.iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(v).ok())
        .flatten()
}

/// When a service lists inbound tokens, the request's `Authorization` must be one of them.
/// Compared in constant time so response timing does not reveal a token prefix.
fn check_inbound_token(allowed: &[String], got: Option<&HeaderValue>) -> Result<(), AppError> {
    if allowed.is_empty() {
        return Ok(());
    }
    let got = got.map(HeaderValue::as_bytes).unwrap_or_default();
    let bare = got.strip_prefix(b"Bearer ").unwrap_or(got);
    let mut ok = subtle::Choice::from(0);
    for t in allowed {
        let t = t.as_bytes();
        let t_bare = t.strip_prefix(b"Bearer ").unwrap_or(t);
        ok |= t_bare.ct_eq(bare);
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(AppError::Unauthorized)
    }
}

/// The body, at most `limit` bytes (else 413). A body that arrives in one frame — a MinIO event
/// nearly always does — is kept as that frame, without a copy; more frames are joined into one
/// buffer sized from `Content-Length` when it was declared.
async fn read_body<B>(body: B, limit: usize, declared: Option<u64>) -> Result<Bytes, AppError>
where
    B: hyper::body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| AppError::BodyRead)?.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(AppError::TooLarge(limit));
        }
        if let Some(f) = first.take() {
            let hint = declared.map_or(0, |n| n.min(limit as u64) as usize);
            joined.reserve(hint.max(f.len() + data.len()));
            joined.extend_from_slice(&f);
        }
        if joined.is_empty() {
            first = Some(data);
        } else {
            joined.extend_from_slice(&data);
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_rules() {
        let h = |ct: &str| {
            let mut m = HeaderMap::new();
            m.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            let head = Head::of(&m);
            check_content_headers(head.content_type, head.content_encoding)
        };
        assert!(h("application/json").is_ok());
        assert!(h("application/json; charset=utf-8").is_ok());
        assert!(h("Application/JSON").is_ok());
        assert!(h("application/cloudevents+json").is_ok());
        assert!(matches!(h("text/plain"), Err(AppError::UnsupportedType(_))));
        assert!(check_content_headers(None, None).is_ok());
        assert!(matches!(
            check_content_headers(None, Some(b"gzip")),
            Err(AppError::UnsupportedEncoding(_))
        ));
    }

    #[test]
    fn inbound_tokens() {
        let allowed = vec!["Bearer abc".to_string(), "def".to_string()];
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(check_inbound_token(&[], None).is_ok());
        assert!(check_inbound_token(&allowed, Some(&hv("Bearer abc"))).is_ok());
        assert!(check_inbound_token(&allowed, Some(&hv("Bearer def"))).is_ok());
        assert!(check_inbound_token(&allowed, Some(&hv("Bearer abd"))).is_err());
        assert!(check_inbound_token(&allowed, None).is_err());
    }
}
