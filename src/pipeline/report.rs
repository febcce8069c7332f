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
        service: &str,
        rec: Told<'_>,
        result: &RecordResult,
    ) {
        log_decision(
            result.verdict,
            &result.reason,
            service,
            rec,
            result.key.as_ref(),
        );
        self.remember(seen, service, rec, result);
        self.inner.metrics.verdict(result.verdict);
    }

    /// Records a decision in the verdict history (a no-op when it is disabled).
    fn remember(&self, seen: SystemTime, service: &str, rec: Told<'_>, r: &RecordResult) {
        if !self.inner.history.is_enabled() {
            return;
        }
        let delivered = (r.verdict == Verdict::Forwarded).then(SystemTime::now);
        let d = history::Decision::new(subject(service, rec), r.key, r.verdict, r.reason.clone())
            .seen_at(seen)
            .delivered_at(delivered, u32::from(delivered.is_some()));
        self.inner.history.record(d);
    }
}

/// What a decision's line and history entry say of its record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Told<'a> {
    event: &'a str,
    bucket: &'a str,
    object: &'a str,
    version: &'a str,
    version_id: Option<&'a str>,
}

impl<'a> From<&'a Record<'_>> for Told<'a> {
    fn from(rec: &'a Record<'_>) -> Self {
        Self {
            event: &rec.event_name,
            bucket: &rec.bucket,
            object: &rec.key,
            version: &rec.version,
            version_id: rec.version_id.as_deref(),
        }
    }
}

/// [`Told`] owned, in one buffer: what a settle future that may outlive the request body keeps
/// of its record for the report. One allocation where owned copies of the record's strings took
/// five (BENCHMARKS.md, session 9).
#[derive(Debug)]
pub(super) struct OwnedTold {
    text: String,
    /// Where the event name, bucket, object and version end in `text`; the version id follows.
    ends: [usize; 4],
    has_version_id: bool,
}

impl OwnedTold {
    pub(super) fn new(t: Told<'_>) -> Self {
        let parts = [
            t.event,
            t.bucket,
            t.object,
            t.version,
            t.version_id.unwrap_or(""),
        ];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; 4];
        for (i, part) in parts.iter().enumerate() {
            text.push_str(part);
            if let Some(end) = ends.get_mut(i) {
                *end = text.len();
            }
        }
        Self {
            text,
            ends,
            has_version_id: t.version_id.is_some(),
        }
    }

    pub(super) fn told(&self) -> Told<'_> {
        let [a, b, c, d] = self.ends;
        let part = |from: usize, to: usize| self.text.get(from..to).unwrap_or_default();
        Told {
            event: part(0, a),
            bucket: part(a, b),
            object: part(b, c),
            version: part(c, d),
            version_id: self.has_version_id.then(|| part(d, self.text.len())),
        }
    }
}

/// The history's view of a record.
pub(super) fn subject<'a>(service: &'a str, rec: Told<'a>) -> history::Subject<'a> {
    history::Subject {
        service,
        event: rec.event,
        bucket: rec.bucket,
        object: rec.object,
        version: rec.version,
        version_id: rec.version_id,
    }
}

/// The one log line per decision: verdict, reason, where, and the dedup key (never a token).
/// Written straight into the log buffer where the text format allows it
/// ([`crate::logging::direct`]), through `tracing` otherwise; the same line either way.
fn log_decision(
    verdict: Verdict,
    reason: &str,
    service: &str,
    rec: Told<'_>,
    key: Option<&DedupKey>,
) {
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
                ("service", Str(service)),
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
        service,
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The packed copy gives back exactly the parts it was made from.
        #[test]
        fn the_owned_copy_gives_back_its_parts(
            parts in proptest::collection::vec(".{0,12}", 4),
            version_id in proptest::option::of(".{0,12}"),
        ) {
            let t = Told {
                event: &parts[0],
                bucket: &parts[1],
                object: &parts[2],
                version: &parts[3],
                version_id: version_id.as_deref(),
            };
            let owned = OwnedTold::new(t);
            let back = owned.told();
            prop_assert_eq!(
                (back.event, back.bucket, back.object, back.version, back.version_id),
                (t.event, t.bucket, t.object, t.version, t.version_id)
            );
        }
    }
}
