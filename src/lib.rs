//! dedup-gateway: MinIO webhook events in, each object version's trigger to OSCAR exactly once.
//!
//! # Layout: the pipeline, stage by stage
//! | stage | module | job |
//! |---|---|---|
//! | receive | [`server`], [`http::receive`] | accept connections, check headers, read the body under a limit and a timeout |
//! | parse | [`pipeline::parse`] | split `Records`, borrow the few fields a decision needs |
//! | policy | [`pipeline::policy`] | event name, `available_on`, PENDING marking → verdict or forward/hold |
//! | key | [`pipeline::key`] | the identity tuple → 16-byte keyed digest ([`identity::DedupKey`]) |
//! | dedup | `pipeline::dedup`, [`store`] | claim, then settle, per mode; reserve / hold / commit / release with a TTL ([`store::memory`], shared: [`store::redis`]) |
//! | held | [`pipeline::held`] | sync mode's PENDING-marked copies: grace, claim, deliver, re-hold |
//! | spool | [`spool`] | spool mode: admission, group-committed durable store, delivery workers, retries, dead-letter queue |
//! | deliver | [`deliver`] | POST to OSCAR, classify the answer; [`deliver::settle`] is the one settle path (commit / release, retry budget) |
//!
//! [`pipeline`] strings the stages together and documents the delivery semantics
//! ([`pipeline::shadow`] is the count-only variant). The vocabulary every stage shares sits in
//! leaf modules, so no stage imports one above it: [`identity`] (dedup keys, owner tokens) and
//! [`verdict`] (verdicts, per-record results). [`config`] holds every setting; [`metrics`]
//! every counter; [`error`] maps failures to HTTP answers; [`http::dlq`] and [`http::verdicts`]
//! are the admin routes, fed by [`history`]; [`tls`] the HTTPS listener; [`logging`] the batched
//! decision-log writer; [`replay`] runs captured payloads through the same stages offline;
//! [`mcsetup`] prints the `mc` wiring. The module graph and one event's path through the files:
//! `docs/architecture.md`.

#![forbid(unsafe_code)]

pub mod config;
pub mod deliver;
pub mod error;
pub mod history;
pub mod http;
pub mod identity;
pub mod logging;
pub mod mcsetup;
pub mod metrics;
pub mod pipeline;
pub mod reconcile;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod spool;
pub mod store;
mod swar;
pub mod tls;
pub mod verdict;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, Mode, StoreBackend},
    deliver::{Forwarder, backoff::Backoff},
    metrics::Metrics,
    pipeline::{
        Gateway,
        held::{HeldQueue, HeldSettings},
        key::KeyDeriver,
    },
    store::{MemoryStore, RedisStore, Store},
};

/// A failure that stops the gateway at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot open the spool: {0}")]
    Spool(#[from] spool::SpoolError),
}

/// Test seams and threading of [`run_with_hooks`].
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Lets a test make every spool write fail (a dying disk) and recover.
    pub spool_faults: Option<spool::FaultSwitch>,
    /// Runtimes connections are spread over, the caller's first ([`runtime::Workers`]); empty:
    /// everything runs on the caller's runtime.
    pub workers: Vec<tokio::runtime::Handle>,
    /// With the memory backend: this store instead of a new empty one, so a benchmark can start
    /// the real gateway over millions of identities filled in-process (`examples/prefilled_gateway.rs`).
    pub memory_store: Option<MemoryStore>,
}

/// The dedup secret: configured, or kept in `data_dir` so identities survive restarts.
pub fn key_deriver(cfg: &Config) -> KeyDeriver {
    if !cfg.dedup.hash_secret.is_empty() {
        return KeyDeriver::new(cfg.dedup.hash_secret.as_bytes());
    }
    match KeyDeriver::load_or_create(&cfg.data_dir) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, data_dir = %cfg.data_dir.display(), "cannot keep the dedup secret on disk; using a random one (identities will not survive a restart)");
            KeyDeriver::random()
        }
    }
}

/// The configured dedup store, with its background task (sweeper or health probe) started.
fn open_store(
    cfg: &Config,
    hooks: &Hooks,
    metrics: &Metrics,
    background: &CancellationToken,
) -> Result<Store, StartError> {
    Ok(match cfg.dedup.backend {
        StoreBackend::Memory => {
            let m = hooks
                .memory_store
                .clone()
                .unwrap_or_else(|| MemoryStore::new(cfg.dedup.max_entries));
            m.spawn_sweeper(cfg.dedup.sweep_interval, background.clone());
            metrics.store_healthy(true);
            Store::Memory(m)
        }
        StoreBackend::Redis => {
            let r = RedisStore::new(&cfg.dedup.redis, metrics.clone())
                .map_err(|e| StartError::Config(format!("invalid `dedup.redis.url`: {e}")))?;
            r.spawn_health_probe(background.clone());
            tracing::info!(key_prefix = %cfg.dedup.redis.key_prefix, on_store_error = ?cfg.dedup.on_store_error, "dedup store: redis");
            Store::Redis(r)
        }
    })
}

/// The HTTP client towards OSCAR, one connection pool per worker thread.
fn forwarder(cfg: &Config, workers: usize, metrics: &Metrics) -> Result<Forwarder, StartError> {
    Forwarder::new(
        &cfg.upstream,
        &cfg.delivery,
        cfg.delivery.ca_file.as_deref(),
        workers,
        metrics.clone(),
    )
    .map_err(|e| match cfg.delivery.ca_file {
        Some(_) => StartError::Config(format!("invalid `delivery.ca_file`: {e}")),
        None => StartError::Config(e.to_string()),
    })
}

/// Spool and sync mode: opens the spool, restores delivered identities and reservations, starts
/// delivering. `None` in shadow mode. In sync mode only its dead-letter queue takes new entries.
async fn open_spool(
    cfg: &Config,
    hooks: &Hooks,
    backoff: Backoff,
    store: &Store,
    forwarder: &Forwarder,
    metrics: &Metrics,
) -> Result<Option<spool::SpoolBackend>, StartError> {
    // Sync mode opens the local spool file for its dead-letter queue (and the replays' delivery)
    // only: see `spool/dlq_direct.rs`. Shadow mode delivers nothing it could dead-letter.
    if cfg.mode == Mode::Shadow {
        return Ok(None);
    }
    let faults = hooks.spool_faults.clone().unwrap_or_default();
    let settings = spool::SpoolSettings::from_config(cfg, backoff, faults);
    let (store, fwd, m) = (store.clone(), forwarder.clone(), metrics.clone());
    let backend = match cfg.mode {
        Mode::Spool => cfg.spool.backend,
        _ => spool::jetstream::SpoolBackendKind::Local,
    };
    Ok(Some(match backend {
        spool::jetstream::SpoolBackendKind::Local => {
            spool::SpoolBackend::Local(spool::Spool::open(settings, store, fwd, m).await?)
        }
        spool::jetstream::SpoolBackendKind::Jetstream => {
            let js = cfg.spool.jetstream.clone();
            let s = spool::jetstream::JetSpool::open(settings, js, store, fwd, m).await?;
            spool::SpoolBackend::JetStream(s)
        }
    }))
}

/// What sync mode's held copies need from the configuration.
fn held_settings(cfg: &Config, backoff: Backoff) -> HeldSettings {
    HeldSettings {
        grace: cfg.policy.pending_grace,
        lease: cfg.dedup.lease,
        ttl: cfg.dedup.ttl,
        backoff,
        max_attempts: cfg.delivery.max_attempts,
        max_age: cfg.delivery.max_age,
        concurrency: cfg.delivery.concurrency,
    }
}

/// Everything `serve` runs behind the listener: the gateway with its store, forwarder, held
/// queue and (spool mode) spool. The one-shot `reconcile` command builds the same, so a pass run
/// from the command line takes exactly the path of a pass run by `serve`.
pub(crate) struct Pipeline {
    pub gateway: Gateway,
    pub spool: Option<spool::SpoolBackend>,
    pub held: HeldQueue,
    pub metrics: Metrics,
    /// Stops the store's background task (sweeper or health probe).
    pub background: CancellationToken,
}

impl Pipeline {
    pub(crate) async fn build(cfg: Arc<Config>, hooks: &Hooks) -> Result<Self, StartError> {
        let metrics = Metrics::new();
        let background = CancellationToken::new();
        let store = open_store(&cfg, hooks, &metrics, &background)?;
        let forwarder = forwarder(&cfg, hooks.workers.len().max(1), &metrics)?;
        let backoff = Backoff::try_new(cfg.delivery.retry_initial, cfg.delivery.retry_max)
            .map_err(|e| StartError::Config(format!("invalid `delivery.retry_initial`: {e}")))?;
        let held = HeldQueue::new(
            held_settings(&cfg, backoff),
            store.clone(),
            forwarder.clone(),
            metrics.clone(),
        );
        let spool = open_spool(&cfg, hooks, backoff, &store, &forwarder, &metrics).await?;
        let gateway = Gateway::new(
            cfg.clone(),
            key_deriver(&cfg),
            store,
            forwarder,
            held.clone(),
            metrics.clone(),
        )
        .map_err(StartError::Config)?;
        if let Some(s) = &spool {
            s.set_history(gateway.history().clone());
            match (cfg.mode, s) {
                (Mode::Spool, _) => gateway.attach_spool(s.clone()),
                (_, spool::SpoolBackend::Local(local)) => {
                    gateway.attach_dlq(s.clone());
                    held.set_dlq(local.clone());
                }
                // open_spool opens only the local spool outside spool mode.
                (_, spool::SpoolBackend::JetStream(_)) => {}
            }
        }
        held.set_history(gateway.history().clone());
        Ok(Self {
            gateway,
            spool,
            held,
            metrics,
            background,
        })
    }
}

/// Runs the gateway on `listener` until `shutdown` is cancelled, then drains and returns.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    run_with_hooks(cfg, listener, shutdown, Hooks::default()).await
}

/// [`run`] with test seams.
pub async fn run_with_hooks(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    hooks: Hooks,
) -> Result<(), StartError> {
    let cfg = Arc::new(cfg);
    // Before anything opens: a bad certificate or key stops the start with exit code 2.
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            Some(tls::acceptor(cert, key).map_err(|e| StartError::Config(e.to_string()))?)
        }
        _ => None,
    };
    let Pipeline {
        gateway,
        spool,
        held,
        metrics,
        background,
    } = Pipeline::build(cfg.clone(), &hooks).await?;
    let reconcilers =
        reconcile::Reconcilers::new(&gateway).map_err(|e| StartError::Config(e.to_string()))?;
    let reconcile_loops = reconcilers.spawn_loops(shutdown.clone());
    let app = http::App::new(http::AppState::new(gateway).with_reconcilers(reconcilers));
    let opts = server::ServeOptions {
        header_timeout: cfg.http.header_timeout,
        max_connections: cfg.http.max_connections,
        shutdown_grace: cfg.http.shutdown_grace,
        tls,
        workers: hooks.workers.clone(),
    };
    tracing::info!(listen = %listener.local_addr()?, tls = opts.tls.is_some(), workers = opts.workers.len().max(1), upstream = %cfg.upstream, mode = ?cfg.mode, "gateway serving");
    let fast = Some(app.clone());
    server::serve_fast(listener, app, fast, opts, metrics, shutdown).await;
    reconcile_loops.join().await;
    held.flush_and_wait(cfg.http.shutdown_grace).await;
    if let Some(s) = &spool {
        // In-flight deliveries record their outcome; undelivered events stay on disk.
        s.shutdown(cfg.http.shutdown_grace).await;
    }
    background.cancel();
    tracing::info!("gateway stopped");
    Ok(())
}
