//! Metrics: every counted outcome in one place, Prometheus text format on `/metrics`.
//!
//! Labels are closed sets (verdicts, status classes, store outcomes): a label taken from request
//! data (service names, buckets, keys) would let any client grow the series without bound, so
//! those go to the logs instead. Counters for the closed sets are created once at start and kept as
//! handles, so the hot path increments an atomic and never looks up a label map.
//!
//! Just over 400 lines on purpose: `Metrics::new` is one declarative list of every series (the
//! order of `/metrics`), and the increment methods stand beside the fields they touch.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

pub mod spool;

pub use spool::SpoolMetrics;

use crate::verdict::Verdict;

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
    store_evicted_live: Counter,
    /// Spool mode: depth, bytes, DLQ, fsync batch size and latency (see [`spool`]).
    spool: SpoolMetrics,
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
    /// Registers every series once, in the order `/metrics` lists them, and keeps the handles.
    ///
    /// Longer than 60 lines on purpose: it is one declarative list, a field per series, and kept
    /// whole so that the registration order (the order of `/metrics`) reads in one place.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("dedup_gateway");
        let inner = Inner {
            verdicts: labelled(
                &mut r,
                "records",
                "Records decided, by verdict",
                &Verdict::ALL,
                |v| VerdictLabel {
                    verdict: v.as_str(),
                },
            ),
            upstream: labelled(
                &mut r,
                "upstream_responses",
                "Answers from OSCAR (or transport failures), by class",
                &UpstreamClass::ALL,
                |c| ClassLabel { class: c.as_str() },
            ),
            responses: labelled(
                &mut r,
                "http_responses",
                "Answers to webhook POSTs, by status code",
                &STATUSES,
                |status| StatusLabel { status },
            ),
            upstream_seconds: histogram(
                &mut r,
                "upstream_request_duration_seconds",
                "Time from sending an event to OSCAR until its answer",
                latency_buckets(),
            ),
            request_seconds: histogram(
                &mut r,
                "request_duration_seconds",
                "Time to answer a webhook POST, body read included",
                latency_buckets(),
            ),
            store_errors: counter(&mut r, "store_errors", "Dedup store operations that failed"),
            fail_open: counter(
                &mut r,
                "fail_open_forwards",
                "Records forwarded unchecked because the dedup store failed (fail-open)",
            ),
            held_waiting: gauge(
                &mut r,
                "held_waiting",
                "PENDING-marked records waiting out their grace",
            ),
            held_superseded: counter(
                &mut r,
                "held_superseded",
                "Held records dropped because a clean copy was forwarded instead",
            ),
            retries: counter(
                &mut r,
                "delivery_retries",
                "Delivery attempts after a failed one",
            ),
            shed: counter(
                &mut r,
                "connections_shed",
                "Connections refused at the connection limit",
            ),
            requests_shed: counter(
                &mut r,
                "requests_shed",
                "Webhook POSTs answered 503 at http.max_inflight",
            ),
            store_entries: gauge(
                &mut r,
                "store_entries",
                "Identities in the memory dedup store",
            ),
            store_evicted_live: counter(
                &mut r,
                "store_evicted_live",
                "Delivered identities evicted from the memory dedup store inside their TTL (dedup.max_entries too small): their repeats are forwarded again",
            ),
            spool: SpoolMetrics::register(&mut r),
            reconcile: crate::reconcile::metrics::ReconcileMetrics::register(&mut r),
            shadow_verdicts: labelled(
                &mut r,
                "shadow_verdicts",
                "Shadow mode: records by the verdict sync mode would have given; would_drop=true were forwarded only because of shadow mode",
                &Verdict::ALL,
                |v| ShadowLabel {
                    verdict: v.as_str(),
                    would_drop: if v.would_drop() { "true" } else { "false" },
                },
            ),
            shadow_superseded: counter(
                &mut r,
                "shadow_held_superseded",
                "Shadow mode: held copies sync mode would have dropped because a clean copy was forwarded first",
            ),
            store_healthy: gauge(
                &mut r,
                "store_healthy",
                "1 while the dedup store answers (always for memory), 0 while it does not (Redis down)",
            ),
            registry: r,
        };
        Self {
            inner: Arc::new(inner),
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

    /// Brings `dedup_gateway_store_evicted_live_total` up to the store's own count (scrape time).
    pub fn store_evicted_live(&self, total: u64) {
        let c = &self.inner.store_evicted_live;
        let seen = c.get();
        if total > seen {
            c.inc_by(total - seen);
        }
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
    pub fn spool(&self) -> &SpoolMetrics {
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

/// A counter per label value, every one created at start (zero until counted), so the hot path
/// finds its handle without a label map.
fn labelled<T: Copy, L>(
    r: &mut Registry,
    name: &str,
    help: &str,
    values: &[T],
    label: impl Fn(T) -> L,
) -> Vec<(T, Counter)>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Counter>::default();
    r.register(name, help, family.clone());
    values
        .iter()
        .map(|v| (*v, family.get_or_create(&label(*v)).clone()))
        .collect()
}

pub(crate) fn counter(r: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    r.register(name, help, c.clone());
    c
}

pub(crate) fn gauge(r: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    r.register(name, help, g.clone());
    g
}

/// A histogram with `buckets`; the request and upstream latencies use [`latency_buckets`].
pub(crate) fn histogram(
    r: &mut Registry,
    name: &str,
    help: &str,
    buckets: impl IntoIterator<Item = f64>,
) -> Histogram {
    let h = Histogram::new(buckets);
    r.register(name, help, h.clone());
    h
}

fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]
}
