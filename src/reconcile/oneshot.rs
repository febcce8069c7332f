//! `dedup-gateway reconcile --service NAME [--dry-run]`: one pass from the command line.
//!
//! The command builds the same pipeline `serve` runs (store, forwarder, spool in spool mode) and
//! runs one pass through it, printing one JSON line per version triggered (or, dry, that would
//! be) and the summary last. It must see the identities the running gateway knows, so it refuses
//! a configuration where it could not: the memory store outside spool mode is private to the
//! serving process (use `POST /admin/reconcile/{service}` there). In spool mode the spool under
//! `data_dir` restores the delivered identities; it is locked while `serve` runs, so the command
//! then fails to open it and says so. After the pass the command waits (up to
//! `http.shutdown_grace`) for the spool to deliver what it accepted; whatever is left stays
//! durable on disk and the next `serve` delivers it.

use std::{io::Write, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{PassOptions, Reconcilers};
use crate::{
    config::{Config, Mode, StoreBackend},
    deliver::{
        Forwarder,
        backoff::Backoff,
        held::{HeldQueue, HeldSettings},
    },
    metrics::Metrics,
    pipeline::Gateway,
    store::{MemoryStore, RedisStore, Store},
};

/// Why the command could not run; `usage` errors exit 2, the rest 1.
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(String),
}

/// Runs one pass of `service` and writes the lines to `out`; returns the pass outcome.
pub async fn run(
    cfg: Config,
    service: &str,
    dry_run: bool,
    out: &mut (dyn Write + Send),
) -> Result<super::PassReport, OneShotError> {
    let usage = OneShotError::Usage;
    let runtime = OneShotError::Runtime;
    if cfg
        .services
        .get(service)
        .and_then(|s| s.reconcile.as_ref())
        .is_none()
    {
        return Err(usage(format!(
            "invalid `services.{service}.reconcile`: service {service} has no reconcile section"
        )));
    }
    if cfg.dedup.backend == StoreBackend::Memory && cfg.mode != Mode::Spool {
        return Err(usage(
            "invalid `dedup.backend`: the reconcile command needs the identities the gateway knows: \
             use the redis backend or spool mode, or POST /admin/reconcile/{service} on the running gateway"
                .into(),
        ));
    }
    if cfg.mode == Mode::Shadow {
        return Err(usage("invalid `mode`: shadow mode forwards everything; reconciling it would trigger every version".into()));
    }
    let (gateway, spool) = build(cfg).await.map_err(runtime)?;
    let reconcilers = Reconcilers::new(&gateway).map_err(|e| usage(e.to_string()))?;
    let Some(r) = reconcilers.get(service) else {
        return Err(usage(format!("service {service} has no reconcile section")));
    };
    let opts = PassOptions {
        dry_run,
        skip_if_recent: false,
    };
    let cancel = CancellationToken::new();
    let mut write_err = None;
    let report = r
        .run(opts, &cancel, &mut |l| {
            if let Ok(s) = serde_json::to_string(l)
                && let Err(e) = writeln!(out, "{s}")
            {
                write_err.get_or_insert(e);
            }
        })
        .await;
    let summary = serde_json::json!({ "summary": &report });
    let _ = writeln!(out, "{summary}");
    let _ = out.flush();
    if let Some(s) = spool {
        let grace = gateway.config().http.shutdown_grace;
        wait_for_drain(&s, grace).await;
        s.shutdown(grace).await;
    }
    match write_err {
        Some(e) => Err(runtime(format!("cannot write the output: {e}"))),
        None => Ok(report),
    }
}

async fn wait_for_drain(spool: &crate::spool::Spool, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while spool.depth() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Built = (Gateway, Option<crate::spool::Spool>);

/// The pipeline `serve` builds (see `crate::run_with_hooks`), without the listener.
async fn build(cfg: Config) -> Result<Built, String> {
    let cfg = Arc::new(cfg);
    let metrics = Metrics::new();
    let store = match cfg.dedup.backend {
        StoreBackend::Memory => Store::Memory(MemoryStore::new(cfg.dedup.max_entries)),
        StoreBackend::Redis => Store::Redis(
            RedisStore::new(&cfg.dedup.redis, metrics.clone())
                .map_err(|e| format!("invalid `dedup.redis.url`: {e}"))?,
        ),
    };
    let forwarder = Forwarder::new(
        &cfg.upstream,
        &cfg.delivery,
        cfg.delivery.ca_file.as_deref(),
        1,
        metrics.clone(),
    )
    .map_err(|e| e.to_string())?;
    let backoff = Backoff::try_new(cfg.delivery.retry_initial, cfg.delivery.retry_max)
        .map_err(|e| format!("invalid `delivery.retry_initial`: {e}"))?;
    let held = HeldQueue::new(
        HeldSettings {
            grace: cfg.policy.pending_grace,
            lease: cfg.dedup.lease,
            ttl: cfg.dedup.ttl,
            backoff,
            max_attempts: cfg.delivery.max_attempts,
            max_age: cfg.delivery.max_age,
            concurrency: cfg.delivery.concurrency,
        },
        store.clone(),
        forwarder.clone(),
        metrics.clone(),
    );
    let spool = if cfg.mode == Mode::Spool {
        let settings = crate::spool::SpoolSettings::from_config(&cfg, backoff, Default::default());
        let s = crate::spool::Spool::open(settings, store.clone(), forwarder.clone(), metrics.clone())
            .await
            .map_err(|e| format!("cannot open the spool under data_dir (is `serve` running? then use POST /admin/reconcile/{{service}}): {e}"))?;
        Some(s)
    } else {
        None
    };
    let keys = crate::key_deriver(&cfg);
    let gateway = Gateway::new(cfg, keys, store, forwarder, held, metrics)?;
    if let Some(s) = &spool {
        gateway.attach_spool(s.clone());
    }
    Ok((gateway, spool))
}
