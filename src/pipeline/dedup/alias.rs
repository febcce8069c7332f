//! The dedup step's part for the unversioned alias (rule in `pipeline/key/alias.rs`): which
//! records have one, the lookup before the claim, and the commit once the record is forwarded or
//! durably accepted. Apart from `dedup/mod.rs` so the claim and settlement read without it.

use crate::{
    identity::DedupKey,
    pipeline::{
        Gateway,
        key::RequestScope,
        parse::{Record, VersionSource},
        policy::Class,
    },
    store::DedupStore,
    verdict::{RecordResult, Verdict},
};

impl Gateway {
    /// The alias identity of `rec` when its service reconciles (see the module doc), else `None`.
    pub(in crate::pipeline) fn alias_of(
        &self,
        service: &str,
        scope: &RequestScope,
        rec: &Record<'_>,
        class: Class<'_>,
    ) -> Option<DedupKey> {
        // The version source first: a versioned record pays one comparison, not a lookup.
        if rec.version_source != VersionSource::Sequencer {
            return None;
        }
        self.inner.cfg.service(service).reconcile.as_ref()?;
        self.inner.keys.alias(scope, rec, class)
    }

    /// The `duplicate` answer when the write behind `alias` was already triggered under its other
    /// identity. A store error here decides nothing: the claim that follows has its own handling.
    pub(in crate::pipeline) async fn alias_duplicate(
        &self,
        alias: &DedupKey,
        key: DedupKey,
    ) -> Option<RecordResult> {
        // Boxed: the store's peek future (a Redis command's) would otherwise sit inline in every
        // request's future, aliased or not, and be copied with it (BENCHMARKS.md, session 6).
        match Box::pin(self.inner.store.peek(alias)).await {
            Ok(Some(_)) => Some(RecordResult::keyed(
                Verdict::Duplicate,
                "delivered-unversioned-alias",
                key,
            )),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(dedup_key = %key, error = %e, "alias lookup failed; the claim decides");
                None
            }
        }
    }

    /// Commits `alias` for the TTL once its record was forwarded or durably accepted.
    pub(super) async fn commit_alias(&self, alias: &DedupKey, result: &RecordResult) {
        if !matches!(result.verdict, Verdict::Forwarded | Verdict::Accepted) {
            return;
        }
        let ttl = self.inner.cfg.dedup.ttl;
        if let Err(e) = self.inner.store.insert_committed(alias, ttl).await {
            // The write ran; a reconcile pass may trigger it once more (the pre-alias behaviour).
            self.inner.metrics.store_error();
            tracing::warn!(dedup_key = ?result.key, error = %e, "delivered but its unversioned alias could not be committed");
        }
    }
}
