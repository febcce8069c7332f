//! dedup-gateway: MinIO webhook events in, each object version's trigger to OSCAR exactly once.
//!
//! # Layout: the pipeline, stage by stage
//! | stage | module | job |
//! |---|---|---|
//! | receive | [`server`], [`http::receive`] | accept connections, check headers, read the body under a limit and a timeout |
//! | parse | [`pipeline::parse`] | split `Records`, borrow the few fields a decision needs |
//! | policy | [`pipeline::policy`] | event name, `available_on`, PENDING marking → verdict or forward/hold |
//! | key | [`pipeline::key`] | the identity tuple → 16-byte keyed digest |
//! | dedup | [`store`] | reserve / hold / commit / release with a TTL ([`store::memory`]) |
//! | deliver | [`deliver`] | POST to OSCAR, classify the answer, backoff; held copies in [`deliver::held`] |
//!
//! [`pipeline`] strings the stages together and documents the delivery semantics; [`config`]
//! holds every setting; [`metrics`] every counter; [`error`] maps failures to HTTP answers;
//! [`replay`] runs captured payloads through the same stages offline.

pub mod config;
pub mod deliver;
pub mod error;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod server;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, StoreBackend},
    deliver::{Forwarder, backoff::Backoff, held::{HeldQueue, HeldSettings}},
    metrics::Metrics,
    pipeline::{Gateway, key::KeyDeriver},
    store::{MemoryStore, Store},
};

/// A failure that stops the gateway at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
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

/// Runs the gateway on `listener` until `shutdown` is cancelled, then drains and returns.
pub async fn run(cfg: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), StartError> {
    let cfg = Arc::new(cfg);
    let metrics = Metrics::new();
    let background = CancellationToken::new();
    let store = match cfg.dedup.backend {
        StoreBackend::Memory => {
            let m = MemoryStore::new(cfg.dedup.max_entries);
            m.spawn_sweeper(cfg.dedup.sweep_interval, background.clone());
            Store::Memory(m)
        }
        StoreBackend::Redis => {
            return Err(StartError::Config("invalid `dedup.backend`: redis is not built into this version".into()));
        }
    };
    let forwarder = Forwarder::new(&cfg.upstream, &cfg.delivery, None, metrics.clone())
        .map_err(|e| StartError::Config(e.to_string()))?;
    let backoff = Backoff::try_new(cfg.delivery.retry_initial, cfg.delivery.retry_max)
        .map_err(|e| StartError::Config(format!("invalid `delivery.retry_initial`: {e}")))?;
    let held = HeldQueue::new(
        HeldSettings {
            grace: cfg.policy.pending_grace,
            lease: cfg.dedup.lease,
            ttl: cfg.dedup.ttl,
            backoff,
            max_attempts: cfg.delivery.max_attempts,
            max_age: cfg.delivery.max_age,
        },
        store.clone(),
        forwarder.clone(),
        metrics.clone(),
    );
    let gateway = Gateway::new(cfg.clone(), key_deriver(&cfg), store, forwarder, held.clone(), metrics.clone())
        .map_err(StartError::Config)?;
    let app = http::router(http::AppState { gateway });
    let opts = server::ServeOptions {
        header_timeout: cfg.http.header_timeout,
        max_connections: cfg.http.max_connections,
        shutdown_grace: cfg.http.shutdown_grace,
    };
    tracing::info!(listen = %listener.local_addr()?, upstream = %cfg.upstream, mode = ?cfg.mode, "gateway serving");
    server::serve(listener, app, opts, metrics, shutdown).await;
    held.flush_and_wait(cfg.http.shutdown_grace).await;
    background.cancel();
    tracing::info!("gateway stopped");
    Ok(())
}
