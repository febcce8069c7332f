//! Metrics: every counted outcome in one place, Prometheus text format on `/metrics`.
//!
//! Labels are closed sets (verdicts, status classes, store outcomes): a label taken from request
//! data (service names, buckets, keys) would let any client grow the series without bound, so
//! those go to the logs instead. Counters for the closed sets are created once at start and kept as
//! handles, so the hot path increments an atomic and never looks up a label map.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::pipeline::Verdict;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabel {
    verdict: &'static str,
    would_drop: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// Upstream answer classes, the label values of `dedup_gateway_upstream_responses_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamClass {
    Success,
    Redirect,
    ClientError,
    ServerError,
    Timeout,
    Connect,
    Other,
}

impl UpstreamClass {
    const ALL: [UpstreamClass; 7] = [
        UpstreamClass::Success,
        UpstreamClass::Redirect,
        UpstreamClass::ClientError,
        UpstreamClass::ServerError,
        UpstreamClass::Timeout,
        UpstreamClass::Connect,
        UpstreamClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamClass::Success => "2xx",
            UpstreamClass::Redirect => "3xx",
            UpstreamClass::ClientError => "4xx",
            UpstreamClass::ServerError => "5xx",
            UpstreamClass::Timeout => "timeout",
            UpstreamClass::Connect => "connect-error",
            UpstreamClass::Other => "other-error",
        }
    }
}

const STATUSES: [&str; 9] = [
    "200", "202", "400", "401", "408", "413", "415", "503", "other",
];

/// Shared handle to every metric; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    registry: Registry,
    verdicts: Vec<(Verdict, Counter)>,
    upstream: Vec<(UpstreamClass, Counter)>,
    responses: Vec<(&'static str, Counter)>,
    upstream_seconds: Histogram,
    request_seconds: Histogram,
    store_errors: Counter,
    fail_open: Counter,
    held_waiting: Gauge,
    held_superseded: Counter,
    retries: Counter,
    shed: Counter,
    requests_shed: Counter,
    store_entries: Gauge,
    /// Spool mode: depth, bytes, DLQ, fsync batch size and latency (see `spool::metrics`).
    spool: crate::spool::metrics::SpoolMetrics,
    reconcile: crate::reconcile::metrics::ReconcileMetrics,
    shadow_verdicts: Vec<(Verdict, Counter)>,
    shadow_superseded: Counter,
    store_healthy: Gauge,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dedup_gateway");

        let verdict_family = Family::<VerdictLabel, Counter>::default();
        registry.register(
            "records",
            "Records decided, by verdict",
            verdict_family.clone(),
        );
        let verdicts = Verdict::ALL
            .iter()
            .map(|v| {
                (
                    *v,
                    verdict_family
                        .get_or_create(&VerdictLabel {
                            verdict: v.as_str(),
                        })
                        .clone(),
                )
            })
            .collect();

        let upstream_family = Family::<ClassLabel, Counter>::default();
        registry.register(
            "upstream_responses",
            "Answers from OSCAR (or transport failures), by class",
            upstream_family.clone(),
        );
        let upstream = UpstreamClass::ALL
            .iter()
            .map(|c| {
                (
                    *c,
                    upstream_family
                        .get_or_create(&ClassLabel { class: c.as_str() })
                        .clone(),
                )
            })
            .collect();

        let response_family = Family::<StatusLabel, Counter>::default();
        registry.register(
            "http_responses",
            "Answers to webhook POSTs, by status code",
            response_family.clone(),
        );
        let responses = STATUSES
            .iter()
            .map(|s| {
                (
                    *s,
                    response_family
                        .get_or_create(&StatusLabel { status: s })
                        .clone(),
                )
            })
            .collect();

        let upstream_seconds = Histogram::new(latency_buckets());
        registry.register(
            "upstream_request_duration_seconds",
            "Time from sending an event to OSCAR until its answer",
            upstream_seconds.clone(),
        );
        let request_seconds = Histogram::new(latency_buckets());
        registry.register(
            "request_duration_seconds",
            "Time to answer a webhook POST, body read included",
            request_seconds.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Dedup store operations that failed",
            store_errors.clone(),
        );
        let fail_open = Counter::default();
        registry.register(
            "fail_open_forwards",
            "Records forwarded unchecked because the dedup store failed (fail-open)",
            fail_open.clone(),
        );
        let held_waiting = Gauge::default();
        registry.register(
            "held_waiting",
            "PENDING-marked records waiting out their grace",
            held_waiting.clone(),
        );
        let held_superseded = Counter::default();
        registry.register(
            "held_superseded",
            "Held records dropped because a clean copy was forwarded instead",
            held_superseded.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "delivery_retries",
            "Delivery attempts after a failed one",
            retries.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "connections_shed",
            "Connections refused at the connection limit",
            shed.clone(),
        );
        let requests_shed = Counter::default();
        registry.register(
            "requests_shed",
            "Webhook POSTs answered 503 at http.max_inflight",
            requests_shed.clone(),
        );
        let store_entries = Gauge::default();
        registry.register(
            "store_entries",
            "Identities in the memory dedup store",
            store_entries.clone(),
        );
        let spool = crate::spool::metrics::SpoolMetrics::register(&mut registry);
        let reconcile = crate::reconcile::metrics::ReconcileMetrics::register(&mut registry);
        let (shadow_verdicts, shadow_superseded) = register_shadow(&mut registry);
        let store_healthy = Gauge::default();
        registry.register(
            "store_healthy",
            "1 while the dedup store answers (always for memory), 0 while it does not (Redis down)",
            store_healthy.clone(),
        );

        Self {
            inner: Arc::new(Inner {
                registry,
                verdicts,
                upstream,
                responses,
                upstream_seconds,
                request_seconds,
                store_errors,
                fail_open,
                held_waiting,
                held_superseded,
                retries,
                shed,
                requests_shed,
                store_entries,
                spool,
                reconcile,
                shadow_verdicts,
                shadow_superseded,
                store_healthy,
            }),
        }
    }

    pub fn verdict(&self, v: Verdict) {
        if let Some((_, c)) = self.inner.verdicts.iter().find(|(x, _)| *x == v) {
            c.inc();
        }
    }

    pub fn upstream(&self, class: UpstreamClass, elapsed: Duration) {
        if let Some((_, c)) = self.inner.upstream.iter().find(|(x, _)| *x == class) {
            c.inc();
        }
        self.inner.upstream_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn response(&self, status: u16, elapsed: Duration) {
        let buf = itoa_status(status);
        let label = std::str::from_utf8(&buf).unwrap_or("other");
        let c = self
            .inner
            .responses
            .iter()
            .find(|(s, _)| *s == label)
            .or_else(|| self.inner.responses.iter().find(|(s, _)| *s == "other"));
        if let Some((_, c)) = c {
            c.inc();
        }
        self.inner.request_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn store_error(&self) {
        self.inner.store_errors.inc();
    }

    pub fn fail_open(&self) {
        self.inner.fail_open.inc();
    }

    pub fn held_waiting(&self, delta: i64) {
        self.inner.held_waiting.inc_by(delta);
    }

    pub fn held_superseded(&self) {
        self.inner.held_superseded.inc();
    }

    pub fn retry(&self) {
        self.inner.retries.inc();
    }

    pub fn shed(&self) {
        self.inner.shed.inc();
    }

    /// A webhook POST turned away at `http.max_inflight`.
    pub fn request_shed(&self) {
        self.inner.requests_shed.inc();
    }

    pub fn store_entries(&self, n: usize) {
        self.inner.store_entries.set(n as i64);
    }

    /// Sets `dedup_gateway_store_healthy`; the Redis store calls it on every health switch.
    pub fn store_healthy(&self, up: bool) {
        self.inner.store_healthy.set(i64::from(up));
    }

    /// Shadow mode: the verdict sync mode would have given a record (which was forwarded anyway).
    pub fn shadow_verdict(&self, v: Verdict) {
        if let Some((_, c)) = self.inner.shadow_verdicts.iter().find(|(x, _)| *x == v) {
            c.inc();
        }
    }

    /// Shadow mode: a held copy sync mode would have dropped because a clean copy came first.
    pub fn shadow_held_superseded(&self) {
        self.inner.shadow_superseded.inc();
    }

    /// The spool's metrics (registered in every mode; zero outside spool mode).
    pub fn spool(&self) -> &crate::spool::metrics::SpoolMetrics {
        &self.inner.spool
    }

    /// Reconciliation metrics (series exist per service with a `reconcile` section).
    pub fn reconcile(&self) -> &crate::reconcile::metrics::ReconcileMetrics {
        &self.inner.reconcile
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.inner.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Shadow-mode series, created for every verdict at start (zero until shadow mode counts).
fn register_shadow(registry: &mut Registry) -> (Vec<(Verdict, Counter)>, Counter) {
    let family = Family::<ShadowLabel, Counter>::default();
    registry.register(
        "shadow_verdicts",
        "Shadow mode: records by the verdict sync mode would have given; would_drop=true were forwarded only because of shadow mode",
        family.clone(),
    );
    let verdicts = Verdict::ALL
        .iter()
        .map(|v| {
            let would_drop = if crate::pipeline::shadow::would_drop(*v) {
                "true"
            } else {
                "false"
            };
            let label = ShadowLabel {
                verdict: v.as_str(),
                would_drop,
            };
            (*v, family.get_or_create(&label).clone())
        })
        .collect();
    let superseded = Counter::default();
    registry.register(
        "shadow_held_superseded",
        "Shadow mode: held copies sync mode would have dropped because a clean copy was forwarded first",
        superseded.clone(),
    );
    (verdicts, superseded)
}

fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}
