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
use crate::config::{Config, Mode, StoreBackend};

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
    let crate::Pipeline {
        gateway,
        spool,
        background,
        ..
    } = build(cfg).await.map_err(runtime)?;
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
        // The local spool is this process's own: deliver what the pass spooled before exiting.
        // A JetStream spool is shared and durable, so the serving replicas deliver it.
        if let crate::spool::SpoolBackend::Local(local) = &s {
            wait_for_drain(local, grace).await;
        }
        s.shutdown(grace).await;
    }
    background.cancel();
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

/// The pipeline `serve` builds ([`crate::Pipeline`]), without the listener.
async fn build(cfg: Config) -> Result<crate::Pipeline, String> {
    crate::Pipeline::build(Arc::new(cfg), &crate::Hooks::default())
        .await
        .map_err(|e| match e {
            crate::StartError::Spool(e) => format!(
                "cannot open the spool under data_dir (is `serve` running? then use POST /admin/reconcile/{{service}}): {e}"
            ),
            e => e.to_string(),
        })
}
