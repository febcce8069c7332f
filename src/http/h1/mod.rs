//! The gateway's own HTTP/1.1 reader for plain webhook POSTs, tried before hyper on every
//! plain-HTTP connection ([`crate::server::FastPath`]).
//!
//! Why: after the upstream exchange left hyper's client (`deliver/wire.rs`), hyper's server side
//! was the largest part of a forwarded request's user-space cost that was not the gateway's own
//! work: a `HeaderMap` and a `Request` built per request, a body channel between the connection
//! task and the handler, the boxed response future, a header-read timer allocated and registered
//! per keep-alive wait, and the response head serialised from a map (BENCHMARKS.md, session 9).
//! Here a request is parsed in place with `httparse` ([`head`]), its body is a slice of the
//! read buffer, and the answer is written in one `write(2)` ([`write`]).
//!
//! What it takes and what it declines: [`head`] takes only the plain case; the first request it
//! declines, and everything after it on that connection, is served by hyper and the router from
//! the bytes already read, so every unusual request keeps hyper's answer. A taken request runs
//! the same steps as the hyper path (`receive`): the in-flight permit, the head checks, the body
//! within `http.body_timeout`, the pipeline, the metrics. Nothing of a request is answered
//! before the pipeline has decided it, and a client that hangs up mid-request does not cancel
//! it (the socket is not read until the answer is written).
//!
//! Timeouts as hyper keeps them: a connection waiting for a head (idle keep-alive included) is
//! closed after `http.header_timeout`, one sending its body after `http.body_timeout`. The
//! header timer is one per connection, armed once and moved only when it fires early, so a
//! request costs no timer work. On shutdown an idle connection closes at once and a busy one
//! after its answer, which then says `connection: close`. A request answered before its body
//! was read (401, 415, shed) closes the connection after a lingering read of what is still on
//! its way ([`After::Linger`]): closing with unread input would reset the connection and could
//! destroy the answer before the client reads it (a test shows it).

pub mod head;
mod write;

use std::{future::poll_fn, pin::Pin, task::Poll};

use axum::{
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::{Buf, Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, Sleep},
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{
    App, AppState, overload,
    receive::{self, Head, Reply},
};
use crate::{error::AppError, pipeline::Inbound, server::Handoff};

/// Read buffer per connection; a MinIO event with its head is ≈ 1.5 KB.
const READ_CAP: usize = 8 * 1024;
/// A head not complete within this many bytes is left to hyper (which refuses it or reads on).
const MAX_HEAD: usize = 16 * 1024;

impl crate::server::FastPath for App {
    async fn serve(&self, io: TcpStream, drain: CancellationToken) -> Handoff {
        serve(&self.state, io, drain).await
    }
}

/// Serves `io` until it closes, a request is declined (hyper takes over) or `drain` is cancelled.
pub async fn serve(state: &AppState, mut io: TcpStream, drain: CancellationToken) -> Handoff {
    let http = &state.gateway.config().http;
    let mut conn = Conn {
        buf: BytesMut::with_capacity(READ_CAP),
        out: Vec::with_capacity(512),
        timer: Box::pin(tokio::time::sleep(http.header_timeout)),
        drain: Box::pin(drain.clone().cancelled_owned()),
    };
    loop {
        let req = match conn.next_head(&mut io, state).await {
            Next::Take(req) => req,
            Next::Decline => return Handoff::Hyper(io, conn.buf),
            Next::Closed => return Handoff::Done,
        };
        match conn.serve_one(state, &mut io, req, &drain).await {
            After::Keep if !drain.is_cancelled() => {}
            After::Keep | After::Close => {
                let _ = io.shutdown().await;
                return Handoff::Done;
            }
            After::Linger => {
                linger(&mut io).await;
                return Handoff::Done;
            }
            After::Gone => return Handoff::Done,
        }
    }
}

/// What a connection does after an answer.
enum After {
    Keep,
    /// The answer said `connection: close`.
    Close,
    /// As `Close`, with part of the request unread: closing a socket with unread input resets
    /// it, which can destroy the answer before the client reads it, so the rest is read and
    /// dropped first (at most [`LINGER_BYTES`] within [`LINGER_FOR`]).
    Linger,
    /// The answer could not be written.
    Gone,
}

const LINGER_BYTES: usize = 1 << 20;
const LINGER_FOR: std::time::Duration = std::time::Duration::from_secs(2);

async fn linger(io: &mut TcpStream) {
    if io.shutdown().await.is_err() {
        return;
    }
    let mut sink = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER_FOR, async {
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

struct Conn {
    buf: BytesMut,
    out: Vec<u8>,
    /// The header timer (see the module doc).
    timer: Pin<Box<Sleep>>,
    drain: Pin<Box<WaitForCancellationFutureOwned>>,
}

/// A taken request's answer: the pipeline's, or an error or shed response.
enum Answer {
    Reply(Reply),
    Other(Response),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Answer::Reply(r) => r.status,
            Answer::Other(resp) => resp.status(),
        }
    }
}

enum Next {
    Take(head::Request),
    Decline,
    Closed,
}

impl Conn {
    /// The next request's head: read until it is whole, declined, or the wait ends.
    async fn next_head(&mut self, io: &mut TcpStream, state: &AppState) -> Next {
        let http = &state.gateway.config().http;
        let mut since = None;
        // Bytes already parsed as a partial head: a head ends with a line feed, so bytes that
        // bring none cannot complete it, and a client trickling its head a byte at a time does
        // not make every byte re-parse all before it (the first bytes are always parsed, so a
        // stream that is not HTTP at all goes to hyper's 400 at once).
        let mut seen = 0;
        loop {
            let fresh = self.buf.get(seen..).unwrap_or_default();
            if !self.buf.is_empty() && (seen == 0 || memchr::memchr(b'\n', fresh).is_some()) {
                seen = self.buf.len();
                match head::parse(&self.buf, http.body_limit) {
                    head::Parsed::Take(req) => return Next::Take(req),
                    head::Parsed::Decline => return Next::Decline,
                    head::Parsed::Partial if self.buf.len() > MAX_HEAD => return Next::Decline,
                    head::Parsed::Partial => {}
                }
            } else if self.buf.len() > MAX_HEAD {
                return Next::Decline;
            }
            let since = *since.get_or_insert_with(Instant::now);
            if !self.read(io, since + http.header_timeout, true).await {
                return Next::Closed;
            }
        }
    }

    /// Reads more into the buffer; `false` on end of stream, error, `deadline`, or drain while
    /// `idle` (waiting for a head with nothing of it read).
    async fn read(&mut self, io: &mut TcpStream, deadline: Instant, idle: bool) -> bool {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CAP);
        }
        poll_fn(|cx| {
            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut self.buf) {
                Poll::Ready(Ok(n)) => return Poll::Ready(n > 0),
                Poll::Ready(Err(_)) => return Poll::Ready(false),
                Poll::Pending => {}
            }
            if idle && self.buf.is_empty() && self.drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            // Armed once per connection: when it fires before this wait's deadline, move it.
            while self.timer.as_mut().poll(cx).is_ready() {
                if deadline <= Instant::now() {
                    return Poll::Ready(false);
                }
                self.timer.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await
    }

    /// One taken request, answered: the hyper path's steps (`receive::handle`).
    async fn serve_one(
        &mut self,
        state: &AppState,
        io: &mut TcpStream,
        req: head::Request,
        drain: &CancellationToken,
    ) -> After {
        let whole = self.buf.len() >= req.head_len + req.body_len;
        let (answer, keep) = match state.inflight.try_enter() {
            None => {
                // Shed before anything of the request is judged (see `overload`).
                if whole {
                    self.buf.advance(req.head_len + req.body_len);
                }
                let shed = overload::shed(state.gateway.metrics());
                (Answer::Other(shed), whole)
            }
            Some(_permit) => {
                let started = std::time::Instant::now();
                let (answer, keep) = match self.run(state, io, &req, whole).await {
                    Ok(reply) => (Answer::Reply(reply), true),
                    Err((e, keep)) => (Answer::Other(e.into_response()), keep),
                };
                let status = answer.status().as_u16();
                state.gateway.metrics().response(status, started.elapsed());
                (answer, keep)
            }
        };
        let close = req.close || !keep || drain.is_cancelled();
        self.out.clear();
        match answer {
            Answer::Reply(r) => {
                write::json(&mut self.out, r.status, &r.body, r.retry_after(), close)
            }
            Answer::Other(resp) => write::response(&mut self.out, resp, close),
        }
        match io.write_all(&self.out).await {
            Err(_) => After::Gone,
            Ok(()) if !keep => After::Linger,
            Ok(()) if close => After::Close,
            Ok(()) => After::Keep,
        }
    }

    async fn run(
        &mut self,
        state: &AppState,
        io: &mut TcpStream,
        req: &head::Request,
        whole: bool,
    ) -> Result<Reply, (AppError, bool)> {
        let head_bytes = self.buf.split_to(req.head_len).freeze();
        let part = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &head_bytes[r]);
        let head = Head {
            content_type: part(&req.content_type),
            content_encoding: part(&req.content_encoding),
            content_length: Some(req.body_len as u64),
        };
        let service = std::str::from_utf8(&head_bytes[req.service.clone()])
            .unwrap_or_default()
            .to_owned();
        let authorization = req
            .authorization
            .clone()
            .and_then(|r| HeaderValue::from_maybe_shared(head_bytes.slice(r)).ok());
        let authorization = match receive::precheck(state, &service, &head, authorization) {
            Ok(a) => a,
            Err(e) => {
                if whole {
                    self.buf.advance(req.body_len);
                }
                return Err((e, whole));
            }
        };
        let body = self.body(state, io, req.body_len).await?;
        let inbound = Inbound {
            service,
            authorization,
            body,
        };
        receive::judge(state, inbound).await.map_err(|e| (e, true))
    }

    /// The body: a slice of the buffer when it is all there (nearly always), else read on
    /// within `http.body_timeout`.
    async fn body(
        &mut self,
        state: &AppState,
        io: &mut TcpStream,
        len: usize,
    ) -> Result<Bytes, (AppError, bool)> {
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            let deadline = Instant::now() + state.gateway.config().http.body_timeout;
            while self.buf.len() < len {
                if !self.read(io, deadline, false).await {
                    let e = if Instant::now() >= deadline {
                        AppError::BodyTimeout
                    } else {
                        AppError::BodyRead
                    };
                    return Err((e, false));
                }
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }
}
