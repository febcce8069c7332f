//! `http://` upstreams: per worker, a stack of idle keep-alive connections, each used by one
//! exchange at a time and driven by that exchange's own future.
//!
//! Why not a client library for plain HTTP (`https://` keeps hyper-util, [`super::https`]):
//! hyper-util's general client, per request, boxes the response future, hashes scheme +
//! authority into its pool key a byte at a time and checks a connection out through a oneshot;
//! and hyper's connection API underneath still runs a dispatcher task per connection, so every
//! forwarded event crossed from the request's task to the connection's and back. The gateway
//! talks to one authority with one request shape, so here the request's own future writes the
//! head and body ([`super::wire`]) and reads the answer on the socket it popped, as nginx's
//! upstream module does: no task, no channel, no wake-up of another task. A worker only touches
//! its own stack, so its lock is never contended, and it is never held across an `.await`.
//!
//! What a general client did that this keeps, because leaving it out loses or delays events:
//! - A pooled connection that OSCAR closed while it sat idle is not an error. At checkout the
//!   socket's readiness (what epoll last said, no syscall) tells whether anything arrived; if
//!   something did, or the connection was idle for [`PROBE_AFTER`] or more (epoll may not have
//!   been asked since), one non-blocking `MSG_PEEK` tells the end of stream (dropped) from
//!   stray bytes (dropped too) and from nothing (kept). A connection reused sooner skips that
//!   syscall: servers close idle connections after seconds, and one closed in the gap (a server
//!   that dies right after answering) costs one retryable attempt, never an event.
//! - A request is resent on another connection only when not one byte of it was written (the
//!   socket refused the first write). Once any byte left, OSCAR may have started the job even if
//!   no answer comes, so the attempt fails as retryable instead: the caller's own retry (MinIO's
//!   after a 503, the spool's backoff) delivers it, and a POST is never doubled here
//!   (`pool_tests.rs` shows the race). Resends are bounded by the stack's size.
//! - Idle expiry: a connection idle longer than [`IDLE_TIMEOUT`] is dropped when next popped, not
//!   by a reaper task; the stack holds at most `delivery.pool_max_idle` per worker.
//! - The connect timeout, `TCP_NODELAY`, and every address the host name resolves to, in turn.
//! - Cancel safety: the connection is owned by the exchange's future. When the deadline or a
//!   client hang-up drops that future mid-way, the connection is closed with it, never pooled
//!   half-read.

use std::{
    io::IoSlice,
    mem::MaybeUninit,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use hyper::{Uri, header::HeaderValue};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant as Deadline, timeout_at},
};

use super::{ClientError, Delivery, wire};
use crate::metrics::UpstreamClass;

/// How long an idle keep-alive connection may be reused (hyper-util's default for `https://`
/// too): below the usual keep-alive timeouts of the proxies in front of OSCAR.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle at least this long, a connection is probed with a syscall at checkout.
const PROBE_AFTER: Duration = Duration::from_secs(1);

/// A connection's read buffer starts at this and is cut back to it when pooled.
const BUF: usize = 4096;

/// What OSCAR answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    since: Instant,
}

/// The idle connections of every worker towards one `http://` authority.
pub(super) struct PlainPool {
    stacks: Arc<[Mutex<Vec<Conn>>]>,
    /// `host:port`, as `TcpStream::connect` resolves it.
    addr: Arc<str>,
    /// The `Host` header every request carries.
    host: HeaderValue,
    max_idle: usize,
    connect_timeout: Duration,
    /// [`PROBE_AFTER`]; tests set it to zero.
    probe_after: Duration,
}

impl std::fmt::Debug for PlainPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainPool")
            .field("addr", &self.addr)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

/// How a write ended short.
enum WriteError {
    /// Not a byte left: the request can go on another connection.
    Unsent(std::io::Error),
    /// Part of the request may have reached OSCAR.
    Sent(std::io::Error),
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
            probe_after: PROBE_AFTER,
        })
    }

    /// POSTs `d` to `target` (origin form) and reads OSCAR's answer, all before `deadline`;
    /// the body of the answer is drained, up to the cap, only to keep the connection.
    pub(super) async fn exchange(
        &self,
        target: &Uri,
        d: &Delivery,
        deadline: Deadline,
    ) -> Result<Answer, UpstreamClass> {
        let worker = crate::runtime::worker_index() % self.stacks.len();
        let mut reuse_left = self.max_idle;
        let (mut conn, head) = loop {
            let (mut conn, reused) = self.checkout(worker, &mut reuse_left, deadline).await?;
            conn.buf.clear();
            let auth = d.authorization.as_ref();
            wire::request_head(
                &mut conn.buf,
                target,
                &self.host,
                &d.key,
                auth,
                d.body.len(),
            );
            match timeout_at(deadline, conn.send(&d.body)).await {
                Err(_) => return Err(UpstreamClass::Timeout),
                Ok(Err(WriteError::Unsent(_))) if reused => continue,
                Ok(Err(WriteError::Unsent(e) | WriteError::Sent(e))) => return Err(io_class(&e)),
                Ok(Ok(())) => {}
            }
            match timeout_at(deadline, conn.read_head()).await {
                Err(_) => return Err(UpstreamClass::Timeout),
                Ok(r) => break (conn, r?),
            }
        };
        let answer = Answer {
            status: head.status,
            retry_after: head.retry_after,
        };
        if let Some(body) = head.keep
            && matches!(
                timeout_at(deadline, conn.drain(head.len + body)).await,
                Ok(true)
            )
        {
            self.put_back(worker, conn);
        }
        Ok(answer)
    }

    /// A pooled connection while `reuse_left` allows one (`true` beside it), else a new one.
    async fn checkout(
        &self,
        worker: usize,
        reuse_left: &mut usize,
        deadline: Deadline,
    ) -> Result<(Conn, bool), UpstreamClass> {
        if *reuse_left > 0
            && let Some(conn) = self.pop(worker)
        {
            *reuse_left -= 1;
            return Ok((conn, true));
        }
        let conn = timeout_at(deadline, self.connect())
            .await
            .map_err(|_| UpstreamClass::Timeout)??;
        Ok((conn, false))
    }

    /// Keeps a connection whose answer ended cleanly, up to `max_idle` per worker.
    fn put_back(&self, worker: usize, mut conn: Conn) {
        conn.buf.clear();
        conn.buf.shrink_to(BUF);
        conn.since = Instant::now();
        let mut stack = self.stacks[worker]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if stack.len() < self.max_idle {
            stack.push(conn);
        }
    }

    /// The most recently used live connection; closed and expired ones are dropped on the way.
    fn pop(&self, worker: usize) -> Option<Conn> {
        let mut stack = self.stacks[worker]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = stack.pop() {
            let idle = conn.since.elapsed();
            if idle < IDLE_TIMEOUT && conn.idle_and_open(idle >= self.probe_after) {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, UpstreamClass> {
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
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(BUF),
            since: Instant::now(),
        })
    }
}

impl Conn {
    /// Whether nothing (no end of stream, no stray byte) arrived since the last answer; asks
    /// the kernel when `probe` or when epoll saw something, else trusts epoll.
    fn idle_and_open(&self, probe: bool) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending if !probe => true,
            Poll::Ready(Err(_)) => false,
            Poll::Pending | Poll::Ready(Ok(())) => {
                let mut byte = [MaybeUninit::uninit()];
                matches!(socket2::SockRef::from(&self.stream).peek(&mut byte),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes the head in `buf`, then `body`, in as few `writev`s as the socket takes.
    async fn send(&mut self, body: &[u8]) -> Result<(), WriteError> {
        let head = std::mem::take(&mut self.buf);
        let result = {
            let mut bufs = [IoSlice::new(&head), IoSlice::new(body)];
            let mut slices = &mut bufs[..];
            let mut written = 0usize;
            loop {
                if slices.is_empty() {
                    break Ok(());
                }
                match self.stream.write_vectored(slices).await {
                    Ok(0) => break Err(WriteError::Sent(std::io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        written += n;
                        IoSlice::advance_slices(&mut slices, n);
                    }
                    Err(e) if written == 0 => break Err(WriteError::Unsent(e)),
                    Err(e) => break Err(WriteError::Sent(e)),
                }
            }
        };
        self.buf = head;
        result
    }

    /// Reads until a whole response head is in `buf`.
    async fn read_head(&mut self) -> Result<wire::Head, UpstreamClass> {
        self.buf.clear();
        loop {
            match wire::response_head(&self.buf) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(_) => return Err(UpstreamClass::Other),
            }
            match self.fill().await {
                Ok(0) => return Err(UpstreamClass::Other),
                Ok(_) => {}
                Err(e) => return Err(io_class(&e)),
            }
        }
    }

    /// Reads the rest of a body that ends at `end` bytes into `buf`; true when it ended there
    /// exactly (nothing stray after it), the one case the connection may be reused.
    async fn drain(&mut self, end: usize) -> bool {
        while self.buf.len() < end {
            if !matches!(self.fill().await, Ok(n) if n > 0) {
                return false;
            }
        }
        self.buf.len() == end
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < BUF / 4 {
            self.buf.reserve(BUF);
        }
        self.stream.read_buf(&mut self.buf).await
    }
}

fn io_class(e: &std::io::Error) -> UpstreamClass {
    if e.kind() == std::io::ErrorKind::TimedOut {
        UpstreamClass::Timeout
    } else {
        UpstreamClass::Other
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
