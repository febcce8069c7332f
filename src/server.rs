//! The accept loop: HTTP/1.1 connections with a header timeout, a connection cap and graceful
//! shutdown.
//!
//! `axum::serve` offers none of the three knobs a webhook receiver facing a network needs, so
//! connections are served with hyper directly: `header_read_timeout` cuts slow-header clients, a
//! semaphore caps open connections (beyond it a connection is closed at once, counted as shed, so
//! a flood cannot exhaust memory or file descriptors), and on shutdown the listener stops
//! accepting, idle keep-alive connections close, and in-flight requests finish within
//! `http.shutdown_grace`.
//!
//! Each connection is served on one of [`ServeOptions::workers`], dealt round-robin, and stays
//! there for its life ([`crate::runtime`] says why).
//!
//! With TLS configured ([`crate::tls`]) the handshake runs in the connection's own task, never in
//! the accept loop, and under the same `header_timeout`: a client that connects and stalls in
//! the handshake holds one permit for at most that long, like one that stalls in its headers.
//!
//! A plain-HTTP connection is offered to a [`FastPath`] first when one is given ([`serve_fast`];
//! the gateway's is [`crate::http::h1`]); hyper serves what it hands back, from the bytes it
//! already read ([`rewind`]). The fast path holds its connection's graceful-shutdown watcher
//! too, so shutdown waits for it like for a hyper connection, and it sees shutdown begin through
//! a drain token.

pub mod rewind;

use std::{sync::Arc, time::Duration};

use hyper::{
    Request, Response,
    body::{Body, Incoming},
    service::Service,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use tokio::{
    net::{TcpListener, TcpStream},
    runtime::Handle,
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Connection-level limits.
#[derive(Clone)]
pub struct ServeOptions {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this acceptor; plain HTTP when `None`.
    pub tls: Option<TlsAcceptor>,
    /// Runtimes connections are spread over, round-robin; the first must be the caller's.
    /// Empty: every connection is served on the caller's runtime ([`crate::runtime`]).
    pub workers: Vec<Handle>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("header_timeout", &self.header_timeout)
            .field("max_connections", &self.max_connections)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("tls", &self.tls.is_some())
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// A server for plain-HTTP connections tried before hyper: it serves the requests it takes and
/// hands the connection back at the first one it declines, with every byte it read and did not
/// consume.
pub trait FastPath: Clone + Send + Sync + 'static {
    /// Serves `io`; `drain` is cancelled when shutdown begins (close when idle).
    fn serve(
        &self,
        io: TcpStream,
        drain: CancellationToken,
    ) -> impl std::future::Future<Output = Handoff> + Send;
}

/// How a [`FastPath`] left a connection.
#[derive(Debug)]
pub enum Handoff {
    /// Closed, or to be closed.
    Done,
    /// For hyper, with the bytes read ahead (the declined request's head first).
    Hyper(TcpStream, bytes::BytesMut),
}

/// No fast path: every connection goes to hyper as it is.
#[derive(Debug, Clone, Copy)]
pub struct HyperOnly;

impl FastPath for HyperOnly {
    async fn serve(&self, io: TcpStream, _drain: CancellationToken) -> Handoff {
        Handoff::Hyper(io, bytes::BytesMut::new())
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve<S, B>(
    listener: TcpListener,
    app: S,
    opts: ServeOptions,
    metrics: Metrics,
    shutdown: CancellationToken,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_fast(listener, app, None::<HyperOnly>, opts, metrics, shutdown).await;
}

/// [`serve`], offering each plain-HTTP connection to `fast` first.
pub async fn serve_fast<S, B, F>(
    listener: TcpListener,
    app: S,
    fast: Option<F>,
    opts: ServeOptions,
    metrics: Metrics,
    shutdown: CancellationToken,
) where
    F: FastPath,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let graceful = GracefulShutdown::new();
    let drain = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .keep_alive(true);
    let mut next = 0usize;
    while let Some(stream) = accept(&listener, &shutdown).await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.shed();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            builder: builder.clone(),
            watcher: graceful.watcher(),
            app: app.clone(),
            fast: fast.clone(),
            drain: drain.clone(),
            tls: opts.tls.clone(),
            handshake_timeout: opts.header_timeout,
            permit,
        };
        // Round-robin over the workers; worker 0 is this runtime.
        next = (next + 1) % opts.workers.len().max(1);
        match opts.workers.get(next) {
            Some(worker) if next > 0 => conn.hand_over(worker, stream),
            _ => {
                tokio::spawn(conn.serve(stream));
            }
        }
    }
    drop(listener);
    drain.cancel();
    if tokio::time::timeout(opts.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed with connections still open");
    }
}

/// The next accepted connection, or `None` once `shutdown` is cancelled.
async fn accept(listener: &TcpListener, shutdown: &CancellationToken) -> Option<TcpStream> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => return Some(stream),
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One accepted connection and what serving it needs; runs on whichever worker it was given to.
struct Connection<S, F> {
    builder: hyper::server::conn::http1::Builder,
    watcher: Watcher,
    app: S,
    fast: Option<F>,
    drain: CancellationToken,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    permit: OwnedSemaphorePermit,
}

impl<S, B, F> Connection<S, F>
where
    F: FastPath,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Serves the connection on another worker's runtime: the socket leaves this runtime's
    /// reactor and is registered with the worker's, on the worker's thread.
    fn hand_over(self, worker: &Handle, stream: TcpStream) {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "cannot hand a connection to a worker"),
        };
        worker.spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => self.serve(stream).await,
                Err(e) => tracing::warn!(error = %e, "cannot hand a connection to a worker"),
            }
        });
    }

    async fn serve(self, stream: TcpStream) {
        let Self {
            builder,
            watcher,
            app,
            fast,
            drain,
            tls,
            handshake_timeout,
            permit,
        } = self;
        match (tls, fast) {
            (None, Some(fast)) => {
                if let Handoff::Hyper(stream, read) = fast.serve(stream, drain).await {
                    let io = TokioIo::new(rewind::Rewind::new(read, stream));
                    let _ = watcher.watch(builder.serve_connection(io, app)).await;
                }
            }
            (None, None) => {
                let conn = builder.serve_connection(TokioIo::new(stream), app);
                let _ = watcher.watch(conn).await;
            }
            (Some(tls), _) => {
                match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let conn = builder.serve_connection(TokioIo::new(stream), app);
                        let _ = watcher.watch(conn).await;
                    }
                    // Scanners and stalled clients: not worth more than a debug line.
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }
        }
        drop(permit);
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
