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

const STATUSES: [&str; 9] = ["200", "202", "400", "401", "408", "413", "415", "503", "other"];

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
    store_entries: Gauge,
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
            .map(|v| (*v, verdict_family.get_or_create(&VerdictLabel { verdict: v.as_str() }).clone()))
            .collect();

        let upstream_family = Family::<ClassLabel, Counter>::default();
        registry.register(
            "upstream_responses",
            "Answers from OSCAR (or transport failures), by class",
            upstream_family.clone(),
        );
        let upstream = UpstreamClass::ALL
            .iter()
            .map(|c| (*c, upstream_family.get_or_create(&ClassLabel { class: c.as_str() }).clone()))
            .collect();

        let response_family = Family::<StatusLabel, Counter>::default();
        registry.register(
            "http_responses",
            "Answers to webhook POSTs, by status code",
            response_family.clone(),
        );
        let responses = STATUSES
            .iter()
            .map(|s| (*s, response_family.get_or_create(&StatusLabel { status: s }).clone()))
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
        registry.register("store_errors", "Dedup store operations that failed", store_errors.clone());
        let fail_open = Counter::default();
        registry.register(
            "fail_open_forwards",
            "Records forwarded unchecked because the dedup store failed (fail-open)",
            fail_open.clone(),
        );
        let held_waiting = Gauge::default();
        registry.register("held_waiting", "PENDING-marked records waiting out their grace", held_waiting.clone());
        let held_superseded = Counter::default();
        registry.register(
            "held_superseded",
            "Held records dropped because a clean copy was forwarded instead",
            held_superseded.clone(),
        );
        let retries = Counter::default();
        registry.register("delivery_retries", "Delivery attempts after a failed one", retries.clone());
        let shed = Counter::default();
        registry.register("connections_shed", "Connections refused at the connection limit", shed.clone());
        let store_entries = Gauge::default();
        registry.register("store_entries", "Identities in the memory dedup store", store_entries.clone());

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
                store_entries,
            }),
        }
    }

    /// Gives extensions (spool, Redis) the registry to add their own metrics at start.
    pub fn registry_note(&self) -> &'static str {
        "dedup_gateway"
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
        let mut buf = itoa_status(status);
        let label = std::str::from_utf8(&mut buf).unwrap_or("other");
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

    pub fn store_entries(&self, n: usize) {
        self.inner.store_entries.set(n as i64);
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

fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [b'0' + (s / 100) as u8, b'0' + (s / 10 % 10) as u8, b'0' + (s % 10) as u8]
}
