//! One pass: take the lease, list page by page, judge each version in the window, report.
//!
//! Every version in the window is handed to [`Gateway::handle`] as a MinIO-shaped body with the
//! configured Authorization: the pipeline derives the identity, claims it in the store and
//! delivers by the mode's path, exactly as for a webhook POST. Its verdict says what happened:
//! `forwarded`/`accepted`/`held` (triggered now), `duplicate` (an event or an earlier pass got
//! there first), `failed` (store or spool refused: the identity is released and the next pass
//! tries again). A dry run computes the same identity and only peeks at the store.
//!
//! A page is used only once it is complete (see [`super::s3`]); a page that keeps failing after
//! `page_attempts` ends the pass, and the next pass starts from the beginning. Memory stays
//! bounded by one page plus `concurrency` bodies in flight.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    Reconciler,
    body::{DELETE_MARKER, PUT, REPLICATED},
    claim::Handled,
    report::{PassReport, VersionLine, now_rfc3339},
    s3::S3Error,
    xml::{Cursor, Listed, Page},
};
use crate::{
    config::AvailableOn,
    identity::new_owner,
    pipeline::Verdict,
    store::{Claim, DedupStore, Existing},
};

/// Options of one pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassOptions {
    pub dry_run: bool,
    /// Background passes skip when another replica finished one within the interval.
    pub skip_if_recent: bool,
}

/// Where a pass stands on one listed entry.
enum Judged {
    Skip(&'static str),
    Candidate(&'static str),
}

/// Clears the running flag however the pass ends.
struct Running<'a>(&'a AtomicBool);
impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Reconciler {
    /// Runs one pass; `line` gets each version triggered (or, dry, that would be).
    pub async fn run_pass(
        &self,
        opts: PassOptions,
        cancel: &CancellationToken,
        line: &mut (dyn FnMut(&VersionLine<'_>) + Send),
    ) -> PassReport {
        let mut report = PassReport {
            service: self.service.clone(),
            bucket: self.cfg.bucket.clone(),
            dry_run: opts.dry_run,
            started: now_rfc3339(),
            outcome: "running".into(),
            ..PassReport::default()
        };
        if self.running.swap(true, Ordering::SeqCst) {
            report.outcome = "busy".into();
            return report;
        }
        let _running = Running(&self.running);
        let labels = super::metrics::service_label(&self.service);
        self.metrics.running.get_or_create(&labels).set(1);
        self.remember(&report);
        let outcome = self.leased_pass(opts, cancel, line, &mut report).await;
        report.outcome = outcome.into();
        report.finished = Some(now_rfc3339());
        self.metrics.running.get_or_create(&labels).set(0);
        self.metrics.pass(&self.service, outcome);
        if outcome == "ok" && !opts.dry_run {
            let now = jiff::Timestamp::now().as_second();
            self.metrics.last_success.get_or_create(&labels).set(now);
        }
        tracing::info!(service = %self.service, bucket = %report.bucket, outcome, dry_run = opts.dry_run,
            listed = report.listed, in_window = report.in_window, already_seen = report.already_seen,
            triggered = report.triggered, errors = report.errors, "reconciliation pass finished");
        self.remember(&report);
        report
    }

    /// The lease around the listing: one replica lists at a time (dry runs take none).
    async fn leased_pass(
        &self,
        opts: PassOptions,
        cancel: &CancellationToken,
        line: &mut (dyn FnMut(&VersionLine<'_>) + Send),
        report: &mut PassReport,
    ) -> &'static str {
        let store = self.gateway.store();
        if opts.skip_if_recent
            && let Ok(Some(Existing::Delivered)) = store.peek(&self.recent_key).await
        {
            return "skipped-recent";
        }
        if opts.dry_run {
            return self.list_all(opts, cancel, line, report).await;
        }
        let owner = new_owner();
        match store.reserve(&self.lease_key, owner, self.cfg.lease).await {
            Ok(Claim::Acquired | Claim::Preempted) => {}
            Ok(Claim::Duplicate(_)) => return "leased-elsewhere",
            Err(e) => {
                report.error = Some(format!("cannot take the listing lease: {e}"));
                return "failed";
            }
        }
        let outcome = self.list_all(opts, cancel, line, report).await;
        if outcome == "ok" {
            // Other replicas' background loops skip until about one interval has passed.
            let recent = self.cfg.interval.mul_f64(0.9).max(Duration::from_millis(1));
            if let Err(e) = store.insert_committed(&self.recent_key, recent).await {
                tracing::warn!(service = %self.service, error = %e, "cannot record the finished pass in the store");
            }
        }
        if let Err(e) = store.release(&self.lease_key, owner).await {
            tracing::warn!(service = %self.service, error = %e, "cannot release the listing lease; it expires on its own");
        }
        outcome
    }

    async fn list_all(
        &self,
        opts: PassOptions,
        cancel: &CancellationToken,
        line: &mut (dyn FnMut(&VersionLine<'_>) + Send),
        report: &mut PassReport,
    ) -> &'static str {
        let mut cursor: Option<Cursor> = None;
        loop {
            if cancel.is_cancelled() {
                report.error = Some("stopped by shutdown".into());
                return "failed";
            }
            let page = match self.page(cursor.as_ref(), report).await {
                Ok(p) => p,
                Err(e) => {
                    report.error = Some(e.to_string());
                    return "failed";
                }
            };
            report.pages += 1;
            cursor = page.next.clone();
            self.judge_page(page, opts, cancel, line, report).await;
            // `GET /admin/reconcile` shows a long pass's progress page by page.
            self.remember(report);
            if cursor.is_none() {
                return "ok";
            }
        }
    }

    /// One page, retried up to `page_attempts` times with a doubling pause.
    async fn page(
        &self,
        cursor: Option<&Cursor>,
        report: &mut PassReport,
    ) -> Result<Page, S3Error> {
        let mut pause = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            attempt += 1;
            report.s3_requests += 1;
            self.metrics
                .s3_requests
                .get_or_create(&super::metrics::service_label(&self.service))
                .inc();
            let (prefix, size) = (self.cfg.prefix.as_str(), self.cfg.page_size);
            let res = if self.cfg.versioned {
                self.client.list_versions(prefix, size, cursor).await
            } else {
                self.client.list_objects(prefix, size, cursor).await
            };
            match res {
                Ok(p) => return Ok(p),
                Err(e) => {
                    report.errors += 1;
                    self.metrics.s3_error(&self.service, e.kind());
                    tracing::warn!(service = %self.service, bucket = %self.cfg.bucket, kind = e.kind(), error = %e, attempt, "reconciliation listing failed; nothing of this page is used");
                    if attempt >= self.cfg.page_attempts {
                        return Err(e);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Window, class and suffix: is this entry a candidate, and as which event?
    fn judge(&self, e: &Listed, now: jiff::Timestamp) -> Judged {
        if !e.key.ends_with(self.cfg.suffix.as_str()) {
            return Judged::Skip("filtered");
        }
        let class = if e.delete_marker {
            super::config::ReconcileClass::Removed
        } else {
            super::config::ReconcileClass::Available
        };
        if !self.cfg.classes.contains(&class) {
            return Judged::Skip("filtered");
        }
        let age = now.duration_since(e.last_modified);
        let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
        if age <= self.cfg.settle {
            return Judged::Skip("too-young");
        }
        if age >= self.window_end {
            return Judged::Skip("too-old");
        }
        if e.delete_marker {
            Judged::Candidate(DELETE_MARKER)
        } else if self.gateway.config().service(&self.service).available_on
            == AvailableOn::Replicated
        {
            Judged::Candidate(REPLICATED)
        } else {
            Judged::Candidate(PUT)
        }
    }

    async fn judge_page(
        &self,
        page: Page,
        opts: PassOptions,
        cancel: &CancellationToken,
        line: &mut (dyn FnMut(&VersionLine<'_>) + Send),
        report: &mut PassReport,
    ) {
        let now = jiff::Timestamp::now();
        report.listed += page.entries.len() as u64;
        self.metrics
            .version(&self.service, "listed", page.entries.len() as u64);
        let mut tasks = JoinSet::new();
        for entry in page.entries {
            // Shutdown: what is not handed over yet waits for the next pass.
            if cancel.is_cancelled() {
                break;
            }
            let event = match self.judge(&entry, now) {
                Judged::Skip(why) => {
                    self.count_skip(why, report);
                    continue;
                }
                Judged::Candidate(ev) => ev,
            };
            report.in_window += 1;
            while tasks.len() >= self.cfg.concurrency {
                if let Some(done) = tasks.join_next().await {
                    self.tally(done, opts, line, report);
                }
            }
            let this = self.clone_parts();
            tasks.spawn(async move { this.handle(entry, event, opts.dry_run, now).await });
        }
        while let Some(done) = tasks.join_next().await {
            self.tally(done, opts, line, report);
        }
    }

    fn count_skip(&self, why: &'static str, report: &mut PassReport) {
        match why {
            "too-young" => report.too_young += 1,
            "too-old" => report.too_old += 1,
            _ => return,
        }
        self.metrics.version(&self.service, why, 1);
    }

    fn tally(
        &self,
        done: Result<Handled, tokio::task::JoinError>,
        opts: PassOptions,
        line: &mut (dyn FnMut(&VersionLine<'_>) + Send),
        report: &mut PassReport,
    ) {
        let Ok(h) = done else {
            report.errors += 1;
            self.metrics.version(&self.service, "error", 1);
            return;
        };
        let (verdict, dedup_key) = match h.verdict {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(service = %self.service, key = %h.entry.key, error = %e, "reconciliation could not judge a version");
                report.errors += 1;
                self.metrics.version(&self.service, "error", 1);
                return;
            }
        };
        let result = match verdict {
            Verdict::Forwarded | Verdict::Accepted | Verdict::Held => "triggered",
            Verdict::Duplicate => "already-seen",
            Verdict::Ignored | Verdict::Pending | Verdict::ReplicationFailed => "ignored",
            Verdict::Invalid | Verdict::Failed | Verdict::DeadLettered => "error",
        };
        // A dry run reports `forwarded` for "nobody claimed it yet".
        let shown = if opts.dry_run {
            "would-trigger"
        } else {
            verdict.as_str()
        };
        match result {
            "triggered" => report.triggered += 1,
            "already-seen" => report.already_seen += 1,
            "ignored" => report.ignored += 1,
            _ => report.errors += 1,
        }
        self.metrics.version(&self.service, result, 1);
        if result == "triggered" {
            line(&VersionLine {
                service: &self.service,
                bucket: &self.cfg.bucket,
                key: &h.entry.key,
                version_id: h.entry.version_id.as_deref(),
                class: if h.event == DELETE_MARKER {
                    "removed"
                } else {
                    "available"
                },
                last_modified: h.entry.last_modified.to_string(),
                verdict: shown,
                dedup_key,
            });
        }
    }
}
