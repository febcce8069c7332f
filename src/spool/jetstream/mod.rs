//! `spool.backend = "jetstream"`: the spool as one NATS JetStream stream shared by every replica
//! (issue 12 A), so an event accepted by a replica whose node dies is delivered by the others, and
//! the gateway needs no volume.
//!
//! # Shape
//! - **Events stream** (`spool.jetstream.stream`, subject `spool.jetstream.subject`): file
//!   storage, `replicas` copies, **work-queue retention**, discard-new at `spool.max_entries` /
//!   `spool.max_bytes`. Work-queue, not limits: an event is consumed once by one consumer and is
//!   gone once acknowledged, so the stream holds exactly the undelivered events (its message count
//!   is the spool depth), and nothing ever *expires* out of it — a limits stream bounded by
//!   `max_age` would silently drop an acknowledged event that is still retrying. Retries, the
//!   retry horizon and dead-lettering are decided by the gateway, which knows OSCAR's answers.
//! - **Dead-letter stream** (`dlq_stream`): limits retention without limits, direct get allowed
//!   (listed by sequence; the sequence is the DLQ id of `/admin/dlq`).
//! - One **durable pull consumer** (`consumer`) with explicit acks, which every replica pulls.
//!
//! A message is a spool [`Entry`](super::record::Entry) (the same encoding as a redb record):
//! service, `Authorization`, body, acceptance time, not-before time (held copies), and the owner
//! token of the reservation made at acceptance. `Nats-Msg-Id` is the dedup digest in hex (held
//! copies: `…:held`, so a clean copy is not swallowed as a duplicate of its held one), so a second
//! publish within `duplicate_window` is answered "duplicate" by JetStream itself ([`admit`]).
//!
//! # Accept ([`admit`])
//! The same orders as the local spool: memory store → claim, publish; shared store → peek,
//! publish, claim. 202 only after the PubAck, i.e. once the stream has stored it (on `replicas`
//! servers). No PubAck within `publish_timeout` (NATS down, stream full) → 503 + `Retry-After`
//! and the claim released. Publishes are pipelined: every request publishes on the one
//! connection without waiting for the others, up to `max_inflight_publishes` at once.
//!
//! # Deliver ([`worker`])
//! POST to OSCAR through the settle path, then commit in the dedup store, then ack. Every POST is
//! made under a reservation with a fresh token and the short `dedup.lease`, so two replicas never
//! send the same identity at once (a redelivery after `AckWait` meets the first replica's
//! reservation and waits); a replica killed mid-delivery frees it within the lease. Where the
//! first delivery had committed, the redelivery finds the identity delivered and only acks.
//! In-progress acks extend `AckWait` while OSCAR is slow; retries are NAKs with the backoff as
//! delay; a held copy waits out its grace as a NAK delayed to its not-before time.
//!
//! # Differences from the local spool (documented in docs/operations.md)
//! - Attempts are counted by JetStream's delivery count (a redelivery after a crash counts). A DLQ
//!   entry lists every failed attempt, as a local one does: they are kept in a stream of their
//!   own while the message retries ([`attempts`]).
//! - The dedup store decides across replicas only when it is shared (Redis); with the memory
//!   store, only the duplicate window guards across replicas.
//! - `on_store_error` is followed at acceptance exactly as by the local spool (the pipeline
//!   forwards unchecked, fail-open, or answers 503). A worker that cannot own a message's identity
//!   because the store is down waits for it (fail-closed), or delivers it unchecked (fail-open,
//!   counted in `fail_open_forwards_total`), and marks it delivered once the store answers
//!   ([`worker`]).

mod admit;
mod attempts;
mod config;
mod dlq;
mod own;
mod worker;

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::{
    connection::State,
    jetstream::{self, consumer::PullConsumer, stream},
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use self::config::{JetStreamConfig, SpoolBackendKind};
use super::{SpoolError, SpoolSettings};
use crate::{
    deliver::{Forwarder, settle::Settler},
    metrics::{Metrics, SpoolMetrics},
    store::Store,
};

/// How often the stream and consumer gauges are refreshed from the server.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// The least time a JetStream API request (stream, consumer, DLQ) may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle to the JetStream spool; cheap to clone.
#[derive(Debug, Clone)]
pub struct JetSpool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    cfg: JetStreamConfig,
    settings: SpoolSettings,
    client: async_nats::Client,
    js: jetstream::Context,
    events: stream::Stream,
    dlq: stream::Stream,
    /// Failed attempts per message, for the dead-letter entries ([`attempts`]).
    attempts: stream::Stream,
    consumer: PullConsumer,
    store: Store,
    settler: Settler,
    metrics: Metrics,
    spool_metrics: SpoolMetrics,
    /// Bounds the publishes in flight (the pipelining depth).
    publishes: Arc<Semaphore>,
    /// Undelivered events as last seen on the server (for `/readyz`).
    depth: AtomicU64,
    bytes: AtomicU64,
    stop: CancellationToken,
    tasks: TaskTracker,
    history: OnceLock<crate::history::History>,
}

fn js_err(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Write(format!("jetstream: {e}"))
}

impl JetSpool {
    /// Connects to NATS, creates or updates the streams and the consumer, and starts pulling.
    pub async fn open(
        settings: SpoolSettings,
        cfg: JetStreamConfig,
        store: Store,
        forwarder: Forwarder,
        metrics: Metrics,
    ) -> Result<Self, SpoolError> {
        let client = connect(&cfg).await?;
        let js = jetstream::ContextBuilder::new()
            // Stream and consumer requests (at start, DLQ admin) may wait longer than an accept.
            .timeout(cfg.publish_timeout.max(API_TIMEOUT))
            .ack_timeout(cfg.publish_timeout)
            .max_ack_inflight(cfg.max_inflight_publishes)
            .build(client.clone());
        let events = ensure_stream(&js, events_config(&cfg, &settings)).await?;
        let dlq = ensure_stream(&js, dlq_config(&cfg)).await?;
        let attempts = ensure_stream(&js, attempts::config(&cfg, &settings)).await?;
        let consumer = ensure_consumer(&events, &cfg).await?;
        let settler = Settler::new(forwarder, store.clone(), metrics.clone(), settings.ttl);
        let inner = Arc::new(Inner {
            publishes: Arc::new(Semaphore::new(cfg.max_inflight_publishes)),
            cfg,
            settings,
            client,
            js,
            events,
            dlq,
            attempts,
            consumer,
            store,
            settler,
            spool_metrics: metrics.spool().clone(),
            metrics,
            depth: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            history: OnceLock::new(),
        });
        inner.refresh_stats().await;
        inner.tasks.spawn(worker::pull(inner.clone()));
        inner.tasks.spawn(stats_loop(inner.clone()));
        tracing::info!(servers = ?inner.cfg.urls.iter().map(|u| server_name(u)).collect::<Vec<_>>(), stream = %inner.cfg.stream, consumer = %inner.cfg.consumer, "jetstream spool open");
        Ok(Self { inner })
    }

    /// Records each delivery in `history` (first call wins).
    pub fn set_history(&self, history: crate::history::History) {
        let _ = self.inner.history.set(history);
    }

    /// `Ok` while connected to NATS and the stream has room; the reason otherwise.
    pub async fn ready(&self) -> Result<(), String> {
        let i = &self.inner;
        let state = i.client.connection_state();
        if state != State::Connected {
            return Err(format!("nats not connected ({state})"));
        }
        let depth = i.depth.load(Ordering::Relaxed);
        let bytes = i.bytes.load(Ordering::Relaxed);
        if depth >= i.settings.max_entries || bytes >= i.settings.max_bytes {
            return Err(format!("spool full: {depth} events, {bytes} bytes"));
        }
        Ok(())
    }

    /// The gauges are refreshed in the background ([`STATS_EVERY`]); nothing to do per scrape.
    pub fn refresh_metrics(&self) {}

    /// Stops pulling, lets running deliveries finish (up to `grace`) and flushes the connection.
    /// Messages not acknowledged are redelivered to another replica after `AckWait`.
    pub async fn shutdown(&self, grace: Duration) {
        let i = &self.inner;
        i.stop.cancel();
        i.tasks.close();
        if tokio::time::timeout(grace, i.tasks.wait()).await.is_err() {
            tracing::warn!("deliveries still running at shutdown; JetStream redelivers them");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), i.client.flush()).await;
        tracing::info!("jetstream spool closed");
    }
}

/// A server URL without credentials, for logs.
fn server_name(u: &str) -> String {
    match reqwest::Url::parse(u) {
        Ok(url) => format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or("?"),
            url.port().unwrap_or(4222)
        ),
        Err(_) => "?".into(),
    }
}

async fn connect(cfg: &JetStreamConfig) -> Result<async_nats::Client, SpoolError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("dedup-gateway")
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .require_tls(cfg.require_tls);
    if !cfg.token.is_empty() {
        opts = opts.token(cfg.token.clone());
    }
    if let Some(path) = &cfg.credentials_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| js_err(format!("spool.jetstream.credentials_file: {e}")))?;
    }
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    let addrs: Vec<async_nats::ServerAddr> = cfg
        .urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| js_err(format!("spool.jetstream.urls: {e}")))?;
    opts.connect(addrs)
        .await
        .map_err(|e| js_err(format!("cannot connect to NATS: {e}")))
}

fn events_config(cfg: &JetStreamConfig, s: &SpoolSettings) -> stream::Config {
    stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![cfg.subject.clone()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        duplicate_window: cfg.duplicate_window,
        max_messages: i64::try_from(s.max_entries).unwrap_or(i64::MAX),
        max_bytes: i64::try_from(s.max_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

fn dlq_config(cfg: &JetStreamConfig) -> stream::Config {
    stream::Config {
        name: cfg.dlq_stream.clone(),
        subjects: vec![cfg.dlq_subject.clone()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        duplicate_window: cfg.duplicate_window,
        allow_direct: true,
        ..Default::default()
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, SpoolError> {
    let name = config.name.clone();
    js.create_or_update_stream(config)
        .await
        .map_err(|e| js_err(format!("stream {name}: {e}")))?;
    js.get_stream(&name)
        .await
        .map_err(|e| js_err(format!("stream {name}: {e}")))
}

async fn ensure_consumer(
    events: &stream::Stream,
    cfg: &JetStreamConfig,
) -> Result<PullConsumer, SpoolError> {
    let config = jetstream::consumer::pull::Config {
        durable_name: Some(cfg.consumer.clone()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: cfg.ack_wait,
        // Unlimited: the gateway's retry budget decides when an event is dead-lettered.
        max_deliver: -1,
        max_ack_pending: 65_536,
        ..Default::default()
    };
    match events.create_consumer(config.clone()).await {
        Ok(c) => Ok(c),
        // Exists with another configuration (say, a changed ack_wait): update it.
        Err(_) => events
            .update_consumer(config)
            .await
            .map_err(|e| js_err(format!("consumer {}: {e}", cfg.consumer))),
    }
}

async fn stats_loop(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(STATS_EVERY) => inner.refresh_stats().await,
        }
    }
}

impl Inner {
    /// Reads the stream and consumer state into the gauges; a failure keeps the last values.
    async fn refresh_stats(&self) {
        let m = &self.spool_metrics;
        match self.events.get_info().await {
            Ok(info) => {
                self.depth.store(info.state.messages, Ordering::Relaxed);
                self.bytes.store(info.state.bytes, Ordering::Relaxed);
                m.depth.set(gauge(info.state.messages));
                m.bytes.set(gauge(info.state.bytes));
            }
            Err(e) if self.client.connection_state() == State::Connected => {
                self.recreate(e).await;
            }
            Err(_) => {}
        }
        if let Ok(info) = self.dlq.get_info().await {
            m.dlq_entries.set(gauge(info.state.messages));
        }
        if let Ok(mut c) = self
            .events
            .get_consumer::<jetstream::consumer::pull::Config>(&self.cfg.consumer)
            .await
            && let Ok(info) = c.info().await
        {
            m.jetstream_pending.set(gauge(info.num_pending));
            m.jetstream_ack_pending
                .set(gauge(info.num_ack_pending as u64));
            m.jetstream_redelivered
                .set(gauge(info.num_redelivered as u64));
        }
    }
}

impl Inner {
    /// Connected, yet the stream does not answer: a NATS that came back without its store (or
    /// a stream deleted by hand). Create the streams and the consumer again (idempotent when they
    /// exist), so accepting and delivering resume without a restart of every replica.
    async fn recreate(&self, why: impl std::fmt::Display) {
        tracing::warn!(stream = %self.cfg.stream, error = %why, "events stream unavailable while connected; creating it again");
        let result = async {
            ensure_stream(&self.js, events_config(&self.cfg, &self.settings)).await?;
            ensure_stream(&self.js, dlq_config(&self.cfg)).await?;
            ensure_stream(&self.js, attempts::config(&self.cfg, &self.settings)).await?;
            ensure_consumer(&self.events, &self.cfg).await
        };
        if let Err(e) = result.await {
            tracing::warn!(error = %e, "cannot create the jetstream stream or consumer yet");
        }
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
