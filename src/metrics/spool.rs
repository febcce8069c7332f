//! The spool's metrics, registered into the gateway's one registry by [`super::Metrics`].
//!
//! They live with the other metrics, not in `spool/`, so that the metrics module imports nothing
//! from the stages it counts; the spool reaches them through [`super::Metrics::spool`].
//!
//! Gauges (depth, bytes, DLQ size, oldest age) are set by the writer after each commit and at
//! scrape time, so they always describe what is on disk, not what was merely requested.

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::{counter, gauge, histogram};

/// Handles to every spool metric; cheap to clone.
#[derive(Debug, Clone)]
pub struct SpoolMetrics {
    pub depth: Gauge,
    pub bytes: Gauge,
    pub oldest_age_seconds: Gauge,
    pub dlq_entries: Gauge,
    pub dead_lettered: Counter,
    pub rejected_full: Counter,
    pub write_errors: Counter,
    pub fsync_batch_size: Histogram,
    pub fsync_seconds: Histogram,
    /// `spool.backend = "jetstream"`: the consumer's view of the stream.
    pub jetstream_pending: Gauge,
    pub jetstream_ack_pending: Gauge,
    pub jetstream_redelivered: Gauge,
    pub jetstream_redeliveries: Counter,
}

impl SpoolMetrics {
    /// Creates the metrics and registers them under the registry's prefix (`dedup_gateway_`).
    pub fn register(r: &mut Registry) -> Self {
        Self {
            depth: gauge(
                r,
                "spool_depth",
                "Undelivered events in the spool (held ones included)",
            ),
            bytes: gauge(r, "spool_bytes", "Bytes of undelivered events in the spool"),
            oldest_age_seconds: gauge(
                r,
                "spool_oldest_age_seconds",
                "Age of the oldest undelivered event in the spool",
            ),
            dlq_entries: gauge(r, "dlq_entries", "Events in the dead-letter queue"),
            dead_lettered: counter(r, "dead_lettered", "Events moved to the dead-letter queue"),
            rejected_full: counter(
                r,
                "spool_rejected_full",
                "Events refused with 503 because the spool was full",
            ),
            write_errors: counter(
                r,
                "spool_write_errors",
                "Spool commits that failed (disk errors); their events were refused with 503",
            ),
            // Powers of two up to the writer's batch cap.
            fsync_batch_size: histogram(
                r,
                "spool_fsync_batch_size",
                "Spool operations made durable by one commit (one fsync): the group-commit factor",
                [
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                ],
            ),
            fsync_seconds: histogram(
                r,
                "spool_fsync_duration_seconds",
                "Time of one spool commit, fsync included",
                [
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    1.0,
                ],
            ),
            jetstream_pending: gauge(
                r,
                "jetstream_consumer_pending",
                "JetStream spool: events not yet handed to any replica (the consumer's lag)",
            ),
            jetstream_ack_pending: gauge(
                r,
                "jetstream_consumer_ack_pending",
                "JetStream spool: events handed out and not yet acknowledged",
            ),
            jetstream_redelivered: gauge(
                r,
                "jetstream_consumer_redelivered",
                "JetStream spool: events currently redelivered at least once (server count)",
            ),
            jetstream_redeliveries: counter(
                r,
                "jetstream_redeliveries",
                "JetStream spool: messages this replica received again (NAK retry, AckWait expiry)",
            ),
        }
    }
}
