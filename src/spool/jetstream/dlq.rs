//! The dead-letter stream behind `/admin/dlq`: the same listing, replay and delete as the local
//! spool's DLQ, with the stream sequence as the entry id.
//!
//! Replay reserves the identity (a duplicate if it was delivered or is being delivered
//! meanwhile: the entry then stays), publishes a fresh copy to the events stream (new budget and
//! age, never held again), then deletes the DLQ message. A crash between the two leaves the entry
//! listed; replaying it again finds the identity reserved or delivered, so nothing is sent twice.

use async_nats::jetstream::stream::DirectGetErrorKind;

use super::{JetSpool, js_err};
use crate::{
    identity::new_owner,
    spool::{DlqPage, Replayed, SpoolError, record::Entry, unix_ms},
    store::{Claim, DedupStore},
};

fn read_err(e: impl std::fmt::Display) -> SpoolError {
    SpoolError::Read(format!("jetstream: {e}"))
}

impl JetSpool {
    /// Up to `limit` entries with ids above `after`.
    pub async fn dlq_page(&self, after: Option<u64>, limit: usize) -> Result<DlqPage, SpoolError> {
        let i = &self.inner;
        let limit = limit.clamp(1, 1000);
        let total = i.dlq.get_info().await.map_err(read_err)?.state.messages;
        let mut entries = Vec::new();
        let mut seq = after.map_or(1, |a| a.saturating_add(1));
        while entries.len() < limit {
            let msg = match i
                .dlq
                .direct_get_next_for_subject(i.cfg.dlq_subject.clone(), Some(seq))
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(read_err(e)),
            };
            seq = msg.sequence.saturating_add(1);
            match Entry::decode(&msg.payload) {
                Ok(entry) => entries.push((msg.sequence, entry)),
                Err(e) => {
                    tracing::warn!(dlq_id = msg.sequence, error = %e, "undecodable dead-letter entry skipped")
                }
            }
        }
        let next = (entries.len() == limit).then(|| seq - 1);
        Ok(DlqPage {
            entries,
            next,
            total,
        })
    }

    async fn dlq_entry(&self, id: u64) -> Result<Entry, SpoolError> {
        match self.inner.dlq.direct_get(id).await {
            Ok(m) => Ok(Entry::decode(&m.payload)?),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Err(SpoolError::NotFound),
            Err(e) => Err(read_err(e)),
        }
    }

    /// Moves entry `id` back for delivery, unless its identity was delivered or is in flight.
    pub async fn replay_dlq(&self, id: u64) -> Result<Replayed, SpoolError> {
        let i = &self.inner;
        let mut entry = self.dlq_entry(id).await?;
        let owner = new_owner();
        match i
            .store
            .reserve(&entry.key, owner, i.settings.horizon())
            .await
        {
            Ok(Claim::Acquired | Claim::Preempted) => {}
            Ok(Claim::Duplicate(existing)) => return Ok(Replayed::Duplicate(existing)),
            Err(e) => {
                i.metrics.store_error();
                return Err(SpoolError::Write(e.to_string()));
            }
        }
        entry.accepted_ms = unix_ms();
        entry.not_before_ms = 0;
        entry.held = false;
        entry.attempts_made = 0;
        entry.attempts.clear();
        entry.dead = None;
        entry.owner = owner;
        let msg_id = format!("{}:replay:{id}", entry.key.to_hex());
        if let Err(e) = i.send(&i.cfg.subject, entry.encode(), msg_id).await {
            i.settler
                .release(&entry.key, owner, "replay-not-published")
                .await;
            return Err(e);
        }
        if let Err(e) = i.dlq.delete_message(id).await {
            tracing::warn!(dlq_id = id, error = %e, "replayed, but the dead-letter entry could not be deleted");
        }
        tracing::info!(dlq_id = id, dedup_key = %entry.key, service = %entry.service, "dead-letter entry replayed");
        Ok(Replayed::Accepted)
    }

    /// Deletes entry `id`.
    pub async fn delete_dlq(&self, id: u64) -> Result<(), SpoolError> {
        self.dlq_entry(id).await?;
        match self.inner.dlq.delete_message(id).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(SpoolError::NotFound),
            Err(e) => Err(js_err(e)),
        }
    }
}
