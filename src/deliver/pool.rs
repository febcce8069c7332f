//! `http://` upstreams: per worker, a stack of idle HTTP/1 connections over hyper's
//! `client::conn::http1`.
//!
//! Why not hyper-util's general client, which `https://` keeps ([`super::https`]): per request
//! it boxes the response future, hashes scheme + authority into its pool key a byte at a time,
//! checks a connection out through a oneshot and inserts `Host` and connection extensions. The
//! gateway talks to one authority, so a pool is a stack of ready senders per worker: pop one
//! before a send, push it back once its response was read to the end (BENCHMARKS.md has what it
//! saved). A worker only ever touches its own stack, so its lock is never contended, and it is
//! never held across an `.await`.
//!
//! What the general client did that this keeps, because leaving it out loses or delays events:
//! - A pooled connection that OSCAR closed while it sat idle is not an error: hyper hands the
//!   request back when it never wrote any of it ([`hyper::client::conn::TrySendError`]), and it
//!   goes on the next connection. Only an unwritten request is retried, so OSCAR cannot see a
//!   POST twice from here. The retries are bounded by the stack's size plus one fresh connection.
//! - Idle expiry: a connection idle longer than [`IDLE_TIMEOUT`] is dropped when next popped, not
//!   by a reaper task; the stack holds at most `delivery.pool_max_idle` per worker, and the task
//!   of a connection OSCAR closed ends by itself.
//! - The connect timeout, `TCP_NODELAY`, and every address the host name resolves to, in turn.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response,
    body::Incoming,
    client::conn::http1::{self, SendRequest},
    header::HeaderValue,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ClientError;
use crate::metrics::UpstreamClass;

/// How long an idle keep-alive connection may be reused (hyper-util's default for `https://`
/// too): below the usual keep-alive timeouts of the proxies in front of OSCAR.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type Sender = SendRequest<Full<Bytes>>;

struct Idle {
    tx: Sender,
    since: Instant,
}

/// The idle connections of every worker towards one `http://` authority.
pub(super) struct PlainPool {
    stacks: Arc<[Mutex<Vec<Idle>>]>,
    /// `host:port`, as `TcpStream::connect` resolves it.
    addr: Arc<str>,
    /// The `Host` header every request carries (hyper's connection API adds none).
    host: HeaderValue,
    max_idle: usize,
    connect_timeout: Duration,
}

impl std::fmt::Debug for PlainPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainPool")
            .field("addr", &self.addr)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

/// A connection out of the pool while its request runs; [`PlainPool::put_back`] returns it.
pub(super) struct Lease {
    tx: Sender,
    worker: usize,
}

impl PlainPool {
    pub(super) fn new(
        authority: &hyper::http::uri::Authority,
        workers: usize,
        max_idle: usize,
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let port = authority.port_u16().unwrap_or(80);
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| ClientError(format!("upstream host: {e}")))?;
        Ok(Self {
            stacks: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
            addr: format!("{}:{port}", authority.host()).into(),
            host,
            max_idle,
            connect_timeout,
        })
    }

    pub(super) fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection of this worker, or a new
    /// one. The caller bounds the whole exchange with the request deadline.
    pub(super) async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamClass> {
        let worker = crate::runtime::worker_index() % self.stacks.len();
        let mut reuse_left = self.max_idle;
        loop {
            let pooled = if reuse_left > 0 {
                self.pop(worker)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut tx = match pooled {
                Some(tx) => {
                    reuse_left -= 1;
                    tx
                }
                None => self.connect().await?,
            };
            // A connection whose last response was just read may still be settling into idle.
            if reused && !tx.is_ready() && tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease { tx, worker })),
                Err(mut e) => match e.take_message() {
                    // Never written: OSCAR closed the idle connection first. Safe to resend.
                    Some(back) if reused => req = back,
                    _ => return Err(hyper_class(e.error())),
                },
            }
        }
    }

    /// Keeps a connection whose response was read to its end, up to `max_idle` per worker.
    pub(super) fn put_back(&self, lease: Lease) {
        if lease.tx.is_closed() {
            return;
        }
        let mut stack = self.stacks[lease.worker]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if stack.len() < self.max_idle {
            stack.push(Idle {
                tx: lease.tx,
                since: Instant::now(),
            });
        }
    }

    /// The most recently used live connection; closed and expired ones are dropped on the way.
    fn pop(&self, worker: usize) -> Option<Sender> {
        let mut stack = self.stacks[worker]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while let Some(idle) = stack.pop() {
            if !idle.tx.is_closed() && idle.since.elapsed() < IDLE_TIMEOUT {
                return Some(idle.tx);
            }
        }
        None
    }

    /// A new connection; its task runs on the caller's runtime (this worker's).
    async fn connect(&self) -> Result<Sender, UpstreamClass> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&*self.addr)).await
            {
                Err(_) => return Err(UpstreamClass::Timeout),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(UpstreamClass::Timeout);
                }
                Ok(Err(_)) => return Err(UpstreamClass::Connect),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamClass::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(tx)
    }
}

/// An error on an established connection: a timed-out socket counts as a timeout.
fn hyper_class(e: &hyper::Error) -> UpstreamClass {
    if timed_out(e) {
        UpstreamClass::Timeout
    } else {
        UpstreamClass::Other
    }
}

/// Whether an I/O timeout is anywhere in `e`'s chain of causes.
pub(super) fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
