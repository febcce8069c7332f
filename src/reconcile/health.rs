//! Replication health: which source versions never reached the replica.
//!
//! The source bucket (cluster A) and the replica (the bucket the service reads) are listed side
//! by side. Both listings come sorted by key, so they are merged key by key and memory stays at
//! one page of each plus the versions of one key. A source version past `settle` that the replica
//! lacks (same key and versionId — MinIO replication keeps version ids; unversioned: same key and
//! ETag) is asked for its `x-amz-replication-status`: FAILED counts as failed, anything else as
//! missing. Nothing here triggers: a version that is not on the replica cannot run there, and
//! what the operator needs is a resync (docs/operations.md, "After a disconnection").

use std::{collections::HashSet, time::Duration};

use tokio_util::sync::CancellationToken;

use super::{
    Reconciler,
    report::{HealthReport, HealthSample},
    s3::{S3Client, S3Error},
    xml::{Cursor, Listed},
};

/// Affected versions named in a report, at most.
const MAX_SAMPLES: usize = 20;

/// A listing read entry by entry, one page in memory.
struct Stream<'a> {
    client: &'a S3Client,
    prefix: &'a str,
    versioned: bool,
    page: std::vec::IntoIter<Listed>,
    next: Option<Cursor>,
    done: bool,
    peeked: Option<Listed>,
}

impl<'a> Stream<'a> {
    fn new(client: &'a S3Client, prefix: &'a str, versioned: bool) -> Self {
        Self {
            client,
            prefix,
            versioned,
            page: Vec::new().into_iter(),
            next: None,
            done: false,
            peeked: None,
        }
    }

    async fn peek(&mut self) -> Result<Option<&Listed>, S3Error> {
        if self.peeked.is_none() {
            self.peeked = self.pull().await?;
        }
        Ok(self.peeked.as_ref())
    }

    async fn next(&mut self) -> Result<Option<Listed>, S3Error> {
        match self.peeked.take() {
            Some(e) => Ok(Some(e)),
            None => self.pull().await,
        }
    }

    async fn pull(&mut self) -> Result<Option<Listed>, S3Error> {
        loop {
            if let Some(e) = self.page.next() {
                return Ok(Some(e));
            }
            if self.done {
                return Ok(None);
            }
            let page = if self.versioned {
                self.client
                    .list_versions(self.prefix, 1000, self.next.as_ref())
                    .await?
            } else {
                self.client
                    .list_objects(self.prefix, 1000, self.next.as_ref())
                    .await?
            };
            self.done = page.next.is_none();
            self.next = page.next;
            self.page = page.entries.into_iter();
        }
    }

    /// Every entry of the next key (`None` at the end).
    async fn next_key(&mut self) -> Result<Option<(String, Vec<Listed>)>, S3Error> {
        let Some(first) = self.next().await? else {
            return Ok(None);
        };
        let key = first.key.clone();
        let mut all = vec![first];
        while let Some(e) = self.peek().await? {
            if e.key != key {
                break;
            }
            if let Some(e) = self.next().await? {
                all.push(e);
            }
        }
        Ok(Some((key, all)))
    }

    /// The identities present on the replica for `key` (skipping smaller keys).
    async fn versions_of(&mut self, key: &str) -> Result<HashSet<String>, S3Error> {
        let mut out = HashSet::new();
        while let Some(e) = self.peek().await? {
            if e.key.as_str() > key {
                break;
            }
            let matches = e.key == key;
            if let Some(e) = self.next().await?
                && matches
            {
                out.insert(identity(&e));
            }
        }
        Ok(out)
    }
}

fn identity(e: &Listed) -> String {
    match &e.version_id {
        Some(v) if v != "null" => v.clone(),
        _ => format!("etag:{}", e.etag),
    }
}

impl Reconciler {
    /// Lists the source next to the replica and reports what did not replicate.
    pub(super) async fn health(&self, cancel: &CancellationToken) -> HealthReport {
        let mut report = HealthReport::default();
        let Some(source) = &self.source else {
            return report;
        };
        report.source_bucket = source.bucket().to_string();
        if let Err(e) = self.compare(source, cancel, &mut report).await {
            self.metrics.s3_error(&self.service, e.kind());
            tracing::warn!(service = %self.service, source = %report.source_bucket, kind = e.kind(), error = %e, "replication health check failed");
            report.samples.truncate(MAX_SAMPLES);
            return report;
        }
        let label = super::metrics::service_label(&self.service);
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics
            .replication_failed
            .get_or_create(&label)
            .set(gauge(report.failed));
        self.metrics
            .replication_missing
            .get_or_create(&label)
            .set(gauge(report.missing));
        if report.failed + report.missing > 0 {
            tracing::warn!(service = %self.service, source = %report.source_bucket, failed = report.failed, missing = report.missing, "versions missing on the replica; a resync is needed (mc replicate resync)");
        }
        report
    }

    async fn compare(
        &self,
        source: &S3Client,
        cancel: &CancellationToken,
        report: &mut HealthReport,
    ) -> Result<(), S3Error> {
        let prefix = self.cfg.prefix.as_str();
        let mut src = Stream::new(source, prefix, self.cfg.versioned);
        let mut replica = Stream::new(&self.client, prefix, self.cfg.versioned);
        let now = jiff::Timestamp::now();
        while let Some((key, versions)) = src.next_key().await? {
            if cancel.is_cancelled() {
                return Ok(());
            }
            if !key.ends_with(self.cfg.suffix.as_str()) {
                continue;
            }
            let present = replica.versions_of(&key).await?;
            for v in versions.iter().filter(|v| !v.delete_marker) {
                let age =
                    Duration::try_from(now.duration_since(v.last_modified)).unwrap_or_default();
                if age <= self.cfg.settle {
                    continue;
                }
                report.checked += 1;
                if present.contains(&identity(v)) {
                    continue;
                }
                let status = source
                    .replication_status(&key, v.version_id.as_deref())
                    .await?;
                let failed = status.as_deref() == Some("FAILED");
                if failed {
                    report.failed += 1;
                } else {
                    report.missing += 1;
                }
                if report.samples.len() < MAX_SAMPLES {
                    report.samples.push(HealthSample {
                        key: key.clone(),
                        version_id: v.version_id.clone(),
                        status: status.unwrap_or_else(|| "missing".into()),
                    });
                }
            }
        }
        Ok(())
    }
}
