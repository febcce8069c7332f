//! Dead-lettering an event that was never spooled: sync mode's DLQ (contract §7).
//!
//! Sync mode keeps no events on disk, but an event it cannot deliver for good — a clean copy that
//! OSCAR refused permanently (400/401/403/404), a held copy (already acknowledged with 200 `held`)
//! that was refused, ran out of retries or was cut off by shutdown — must end somewhere an
//! operator can see and replay. Rather than a second queue, sync mode opens the same spool file
//! under `data_dir` and uses only its dead-letter side: [`Spool::dead_letter_new`] writes the
//! entry straight into the `dlq` table (fsync'd, one group commit) and answers its id. Listing,
//! replay and delete are then the `/admin/dlq` routes of spool mode, unchanged; a replayed entry
//! goes into the spool's `events` and the spool's workers deliver it, as in spool mode.
//!
//! The entry is written before the caller releases the identity (the worker's order, so that a
//! crash in between leaves a DLQ entry and at worst a reservation that expires with its lease,
//! never a released identity with nothing behind it).

use std::time::SystemTime;

use super::{
    Spool, SpoolError,
    record::{Attempt, Dead, Entry},
    unix_ms,
    writer::Op,
};
use crate::deliver::Delivery;

/// A sync-mode event given up: what its dead-letter entry records.
#[derive(Debug)]
pub struct Undeliverable<'a> {
    pub delivery: &'a Delivery,
    /// A PENDING-marked copy (sync mode's held queue).
    pub held: bool,
    /// When the gateway received it.
    pub accepted: SystemTime,
    /// Every attempt made, oldest first (the record keeps the latest ones).
    pub attempts: Vec<Attempt>,
    /// Why it was given up (`upstream-404`, `retries-exhausted`, `cut-off-by-shutdown`, ...).
    pub reason: String,
}

impl Spool {
    /// Writes `event` into the dead-letter queue and answers its DLQ id once it is on disk. A
    /// failed write is retried (backing off) until the spool is abandoned at shutdown when
    /// `persist` is set; otherwise the first failure is returned (a request answers 503).
    pub async fn dead_letter_new(
        &self,
        event: Undeliverable<'_>,
        persist: bool,
    ) -> Result<u64, SpoolError> {
        let d = event.delivery;
        let now = unix_ms();
        let accepted_ms = event
            .accepted
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(now))
            .unwrap_or(now);
        let mut entry = Entry {
            key: d.key,
            service: d.service.clone(),
            authorization: d.authorization.as_ref().map(|a| a.as_bytes().to_vec()),
            body: d.body.clone(),
            accepted_ms,
            not_before_ms: 0,
            held: event.held,
            attempts_made: 0,
            attempts: Vec::new(),
            dead: Some(Dead {
                at_ms: now,
                reason: event.reason.clone(),
            }),
            owner: 0,
        };
        for a in event.attempts {
            entry.push_attempt(a);
        }
        let bytes = entry.encode();
        let i = &self.inner;
        let written = if persist {
            i.write_until_ok(|| Op::DeadNew(bytes.clone())).await
        } else {
            i.submit(Op::DeadNew(bytes)).await
        };
        match written {
            Ok(id) => {
                i.spool_metrics.dead_lettered.inc();
                tracing::error!(verdict = "dead-lettered", dedup_key = %d.key, service = %d.service, reason = %event.reason, attempts = entry.attempts_made, dlq_id = id, "event moved to the dead-letter queue");
                Ok(id)
            }
            Err(e) => {
                tracing::error!(dedup_key = %d.key, service = %d.service, reason = %event.reason, error = %e, "could not write the event to the dead-letter queue");
                Err(e)
            }
        }
    }
}
