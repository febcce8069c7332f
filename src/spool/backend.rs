//! The seam between the spool backends (`spool.backend`): the embedded redb [`Spool`] (default)
//! or the shared NATS JetStream one ([`JetSpool`]). The pipeline, `/admin/dlq`, `/readyz` and
//! `/metrics` hold this enum and call the same operations on either; an enum rather than a trait
//! object, like the dedup [`crate::store::Store`], so the accept path is static dispatch.

use std::time::Duration;

use super::{Admission, DlqPage, Replayed, Spool, SpoolError, jetstream::JetSpool};
use crate::{
    deliver::Delivery,
    identity::{DedupKey, Owner},
    store::{Claim, StoreError},
};

/// The configured spool; cheap to clone.
#[derive(Debug, Clone)]
pub enum SpoolBackend {
    Local(Spool),
    JetStream(JetSpool),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            SpoolBackend::Local($s) => $e,
            SpoolBackend::JetStream($s) => $e,
        }
    };
}

impl SpoolBackend {
    pub async fn admit(
        &self,
        delivery: &Delivery,
        owner: Owner,
        hold: bool,
        claim: Option<Result<Claim, StoreError>>,
    ) -> Admission {
        each!(self, s => s.admit(delivery, owner, hold, claim).await)
    }

    pub async fn claim(
        &self,
        key: &DedupKey,
        owner: Owner,
        hold: bool,
    ) -> Result<Claim, StoreError> {
        each!(self, s => s.claim(key, owner, hold).await)
    }

    /// Whether a copy that met `existing` must wait for the original's write to be durable before
    /// it is a `duplicate` (contract §7). The local spool tracks its writes in flight with the
    /// memory store ([`Spool::must_wait`]); a JetStream publish is not tracked: with several
    /// replicas the memory store is not supported there anyway (docs/operations.md §10), and
    /// with Redis the record is published before it is claimed.
    pub fn must_wait(&self, key: &DedupKey, existing: crate::store::Existing) -> bool {
        match self {
            SpoolBackend::Local(s) => s.must_wait(key, existing),
            SpoolBackend::JetStream(_) => false,
        }
    }

    pub async fn ready(&self) -> Result<(), String> {
        each!(self, s => s.ready().await)
    }

    pub fn refresh_metrics(&self) {
        each!(self, s => s.refresh_metrics())
    }

    pub async fn dlq_page(&self, after: Option<u64>, limit: usize) -> Result<DlqPage, SpoolError> {
        each!(self, s => s.dlq_page(after, limit).await)
    }

    pub async fn replay_dlq(&self, id: u64) -> Result<Replayed, SpoolError> {
        each!(self, s => s.replay_dlq(id).await)
    }

    pub async fn delete_dlq(&self, id: u64) -> Result<(), SpoolError> {
        each!(self, s => s.delete_dlq(id).await)
    }

    pub fn set_history(&self, history: crate::history::History) {
        each!(self, s => s.set_history(history))
    }

    pub async fn shutdown(&self, grace: Duration) {
        each!(self, s => s.shutdown(grace).await)
    }
}
