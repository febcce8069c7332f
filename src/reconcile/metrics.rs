//! Reconciliation metrics, registered into the gateway's one registry by [`crate::metrics::Metrics`].
//!
//! Labels are bounded: `service` takes only the names configured with a `reconcile` section,
//! `result`, `outcome` and `kind` only the constants below.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    pub service: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub service: String,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    pub service: String,
    pub kind: &'static str,
}

/// Per-version results of a pass (`result` label).
pub const RESULTS: [&str; 7] = [
    "listed",
    "too-young",
    "too-old",
    "already-seen",
    "triggered",
    "ignored",
    "error",
];

/// Pass outcomes (`outcome` label).
pub const OUTCOMES: [&str; 4] = ["ok", "failed", "leased-elsewhere", "skipped-recent"];

/// Handles to every reconciliation metric; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ReconcileMetrics {
    pub versions: Family<ResultLabel, Counter>,
    pub passes: Family<OutcomeLabel, Counter>,
    pub s3_errors: Family<KindLabel, Counter>,
    pub s3_requests: Family<ServiceLabel, Counter>,
    pub last_success: Family<ServiceLabel, Gauge>,
    pub running: Family<ServiceLabel, Gauge>,
    pub replication_failed: Family<ServiceLabel, Gauge>,
    pub replication_missing: Family<ServiceLabel, Gauge>,
}

impl ReconcileMetrics {
    /// Creates the metrics and registers them under the registry's prefix (`dedup_gateway_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "reconcile_versions",
            "Object versions seen by reconciliation passes, by result",
            m.versions.clone(),
        );
        registry.register(
            "reconcile_passes",
            "Reconciliation passes, by outcome",
            m.passes.clone(),
        );
        registry.register(
            "reconcile_s3_errors",
            "Failed S3 listing requests, by kind (unreachable, timeout, forbidden, status, garbled)",
            m.s3_errors.clone(),
        );
        registry.register(
            "reconcile_s3_requests",
            "S3 requests made by reconciliation",
            m.s3_requests.clone(),
        );
        registry.register(
            "reconcile_last_success_timestamp_seconds",
            "Unix time the last successful pass finished",
            m.last_success.clone(),
        );
        registry.register(
            "reconcile_running",
            "1 while a pass of the service runs in this process",
            m.running.clone(),
        );
        registry.register(
            "reconcile_replication_failed",
            "Source versions whose replication status is FAILED (last pass)",
            m.replication_failed.clone(),
        );
        registry.register(
            "reconcile_replication_missing",
            "Source versions past settle that are missing on the replica (last pass)",
            m.replication_missing.clone(),
        );
        m
    }

    /// Creates every series of `service` at zero, so dashboards see it before the first pass.
    pub fn init_service(&self, service: &str) {
        for r in RESULTS {
            drop(self.versions.get_or_create(&result(service, r)));
        }
        for o in OUTCOMES {
            drop(self.passes.get_or_create(&OutcomeLabel {
                service: service.into(),
                outcome: o,
            }));
        }
        let s = svc(service);
        drop(self.s3_requests.get_or_create(&s));
        drop(self.last_success.get_or_create(&s));
        drop(self.running.get_or_create(&s));
    }

    pub fn version(&self, service: &str, r: &'static str, n: u64) {
        if n > 0 {
            self.versions.get_or_create(&result(service, r)).inc_by(n);
        }
    }

    pub fn pass(&self, service: &str, outcome: &'static str) {
        self.passes
            .get_or_create(&OutcomeLabel {
                service: service.into(),
                outcome,
            })
            .inc();
    }

    pub fn s3_error(&self, service: &str, kind: &'static str) {
        self.s3_errors
            .get_or_create(&KindLabel {
                service: service.into(),
                kind,
            })
            .inc();
    }
}

fn svc(service: &str) -> ServiceLabel {
    ServiceLabel {
        service: service.into(),
    }
}

fn result(service: &str, result: &'static str) -> ResultLabel {
    ResultLabel {
        service: service.into(),
        result,
    }
}

pub fn service_label(service: &str) -> ServiceLabel {
    svc(service)
}
