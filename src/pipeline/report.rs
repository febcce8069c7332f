//! Report: what a judged record leaves behind — the one decision line, the history entry and
//! the verdict count.
//!
//! Every path that decides a record ends here, once: a final policy verdict and a duplicate
//! found in the request's task ([`super::Gateway::judge`]), a settled claim in its task
//! (`dedup/`), shadow mode's would-be verdicts (`shadow.rs`). The log line carries the dedup key,
//! never a token.

use std::time::SystemTime;

use super::{Gateway, parse::Record};
use crate::{
    history,
    identity::DedupKey,
    logging,
    verdict::{RecordResult, Verdict},
};

impl Gateway {
    /// The one decision line, the history entry and the verdict count of a judged record.
    pub(super) fn finish(
        &self,
        seen: SystemTime,
        rec: history::Subject<'_>,
        result: &RecordResult,
    ) {
        log_decision(result.verdict, &result.reason, rec, result.key.as_ref());
        self.remember(seen, rec, result);
        self.inner.metrics.verdict(result.verdict);
    }

    /// Records a decision in the verdict history (a no-op when it is disabled).
    fn remember(&self, seen: SystemTime, rec: history::Subject<'_>, r: &RecordResult) {
        if !self.inner.history.is_enabled() {
            return;
        }
        let delivered = (r.verdict == Verdict::Forwarded).then(SystemTime::now);
        let d = history::Decision::new(rec, r.key, r.verdict, r.reason.clone())
            .seen_at(seen)
            .delivered_at(delivered, u32::from(delivered.is_some()));
        self.inner.history.record(d);
    }
}

/// The history's view of a record: what its decision line and history entry say of it.
pub(super) fn subject<'a>(service: &'a str, rec: &'a Record<'_>) -> history::Subject<'a> {
    history::Subject {
        service,
        event: &rec.event_name,
        bucket: &rec.bucket,
        object: &rec.key,
        version: &rec.version,
        version_id: rec.version_id.as_deref(),
    }
}

/// The one log line per decision: verdict, reason, where, and the dedup key (never a token).
/// Written straight into the log buffer where the text format allows it
/// ([`crate::logging::direct`]), through `tracing` otherwise; the same line either way.
fn log_decision(verdict: Verdict, reason: &str, rec: history::Subject<'_>, key: Option<&DedupKey>) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    if logging::direct::enabled() {
        use logging::direct::Value::{Absent, Display, Str};
        let hex = key.map(DedupKey::hex_bytes);
        let hex = hex.as_ref().and_then(|h| std::str::from_utf8(h).ok());
        logging::direct::info(
            module_path!(),
            "decision",
            &[
                ("verdict", Str(verdict.as_str())),
                ("reason", Str(reason)),
                ("service", Str(rec.service)),
                ("event", Str(rec.event)),
                ("bucket", Str(rec.bucket)),
                ("object", Str(rec.object)),
                ("version", Str(rec.version)),
                ("dedup_key", hex.map_or(Absent, Display)),
            ],
        );
        return;
    }
    tracing::info!(
        verdict = verdict.as_str(),
        reason,
        service = rec.service,
        // As `&str`, not `%`: the text format then quotes and escapes them, so an object key
        // with a newline (`%0A`) cannot forge a log line; the JSON format escapes either way.
        event = rec.event,
        bucket = rec.bucket,
        object = rec.object,
        version = rec.version,
        dedup_key = key.map(tracing::field::display),
        "decision"
    );
}
