//! Accept: an event enters the JetStream spool claimed and stored (PubAck), or is refused with
//! nothing left behind — the orders of the local spool's [`crate::spool::Admission`], with a
//! publish in place of the disk write:
//! - **memory store: claim, publish.** A publish that fails releases the claim.
//! - **shared store: peek, publish, claim.** A claim that finds a copy delivered or held deletes
//!   the message just stored. One that finds a reservation in flight keeps it: the consumer may
//!   have handed this very message to a worker before the claim ran (the worker's fresh
//!   reservation is what the claim met), and deleting it would lose the event if that delivery
//!   fails — seen in CI under load. A message that is another copy's leftover meets that copy's
//!   owner at delivery and is acked once it is delivered. A claim that fails on a store error
//!   keeps the message too, whatever `on_store_error` says: the failed claim may have taken effect
//!   unseen. Fail-closed answers 503; fail-open answers `accepted` and the worker delivers it
//!   unchecked while the store is down.
//!
//! A PubAck flagged *duplicate* means a message with this identity (same `Nats-Msg-Id`) was
//! published within the duplicate window. With the memory store (per replica) that is the guard
//! across replicas: the copy is a `duplicate` and its claim is released — so a copy of an event
//! dead-lettered within the window is dropped too (documented). With a shared store the claim
//! decides instead: the copy was found unclaimed, so the earlier message's accept failed after
//! its publish, or it was dead-lettered; this copy is published under an id of its own, and the
//! store keeps the two messages from both being sent.

use async_nats::jetstream::{message::PublishMessage, publish::PublishAck};

use super::{Inner, JetSpool, js_err};
use crate::{
    deliver::Delivery,
    identity::{DedupKey, Owner},
    spool::{
        Admission, SpoolError,
        admit::{after_peek, claim_for, new_entry},
    },
    store::{Claim, DedupStore, Existing, StoreError},
};

impl JetSpool {
    /// Claims `delivery`'s identity for `owner` (held when `hold`) and publishes it (see the
    /// module doc). `claim`: a claim the caller already made (memory store only).
    pub async fn admit(
        &self,
        delivery: &Delivery,
        owner: Owner,
        hold: bool,
        claim: Option<Result<Claim, StoreError>>,
    ) -> Admission {
        if self.inner.store.is_shared() {
            return self.publish_then_claim(delivery, owner, hold).await;
        }
        let claim = match claim {
            Some(c) => c,
            None => self.claim(&delivery.key, owner, hold).await,
        };
        let preempted = match claim {
            Ok(Claim::Duplicate(existing)) => return Admission::Duplicate(existing),
            Err(e) => return Admission::StoreFailed(e),
            Ok(c) => c == Claim::Preempted,
        };
        let admission = match self.publish(delivery, owner, hold, None).await {
            Ok(ack) if ack.duplicate => Admission::Duplicate(Existing::InFlight),
            Ok(_) => return Admission::Spooled { preempted },
            Err(e) => Admission::Refused(e),
        };
        self.inner
            .settler
            .release(&delivery.key, owner, "not-published")
            .await;
        admission
    }

    /// Reserves (or holds) `key` for `owner` for the retry horizon (plus the grace).
    pub async fn claim(
        &self,
        key: &DedupKey,
        owner: Owner,
        hold: bool,
    ) -> Result<Claim, StoreError> {
        claim_for(&self.inner.store, &self.inner.settings, key, owner, hold).await
    }

    async fn publish_then_claim(&self, delivery: &Delivery, owner: Owner, hold: bool) -> Admission {
        let key = delivery.key;
        if let Some(answer) = after_peek(self.inner.store.peek(&key).await, hold) {
            return answer;
        }
        let ack = match self.publish(delivery, owner, hold, None).await {
            // The identity is not claimed, yet a message with its id is in the window: one whose
            // accept failed after the publish (timeout, crash), or one already dead-lettered.
            // Neither may hide this copy, and the shared store keeps two messages from both
            // being sent: publish it under an id of its own.
            Ok(ack) if ack.duplicate => {
                match self.publish(delivery, owner, hold, Some(owner)).await {
                    Ok(ack) => ack,
                    Err(e) => return Admission::Refused(e),
                }
            }
            Ok(ack) => ack,
            Err(e) => return Admission::Refused(e),
        };
        match self.claim(&key, owner, hold).await {
            Ok(c @ (Claim::Acquired | Claim::Preempted)) => Admission::Spooled {
                preempted: c == Claim::Preempted,
            },
            // Perhaps this message's own delivery (see the module doc): kept.
            Ok(Claim::Duplicate(Existing::InFlight)) => Admission::Duplicate(Existing::InFlight),
            Ok(Claim::Duplicate(existing)) => {
                self.discard(ack.sequence).await;
                Admission::Duplicate(existing)
            }
            Err(e) if self.inner.settings.fail_open && matches!(e, StoreError::Unavailable(_)) => {
                Admission::Unclaimed(e)
            }
            Err(e) => Admission::StoreFailed(e),
        }
    }

    /// Publishes the event and waits for the PubAck (at most `publish_timeout`). `unique`: a
    /// message id of this copy's own instead of the identity's.
    async fn publish(
        &self,
        delivery: &Delivery,
        owner: Owner,
        held: bool,
        unique: Option<Owner>,
    ) -> Result<PublishAck, SpoolError> {
        let i = &self.inner;
        let entry = new_entry(delivery, owner, held, i.settings.grace);
        let id = match (unique, held) {
            (Some(token), _) => format!("{}:{token:016x}", delivery.key.to_hex()),
            (None, true) => format!("{}:held", delivery.key.to_hex()),
            (None, false) => delivery.key.to_hex(),
        };
        let ack = i.send(&i.cfg.subject, entry.encode(), id).await;
        if let Err(SpoolError::Full) = ack {
            i.spool_metrics.rejected_full.inc();
        }
        if let Err(e) = &ack {
            tracing::warn!(dedup_key = %delivery.key, error = %e, "event not published; answering 503");
        }
        ack
    }

    /// Deletes a stored message that turned out not to be needed. Best effort: a message left
    /// behind meets the identity's owner at delivery and is dropped once that one is delivered.
    async fn discard(&self, seq: u64) {
        if let Err(e) = self.inner.events.delete_message(seq).await {
            tracing::warn!(stream_seq = seq, error = %e, "could not delete an unneeded message; the worker drops it");
        }
    }
}

impl Inner {
    /// One publish with its PubAck, bounded by `publish_timeout` and the pipelining depth.
    pub(super) async fn send(
        &self,
        subject: &str,
        payload: Vec<u8>,
        msg_id: String,
    ) -> Result<PublishAck, SpoolError> {
        let i = self;
        // Disconnected: refuse at once (503) rather than queue the publish in the client for a
        // reconnect that MinIO's request would wait for until the timeout.
        let state = i.client.connection_state();
        if state != async_nats::connection::State::Connected {
            return Err(SpoolError::Write(format!(
                "jetstream: nats not connected ({state})"
            )));
        }
        let limit = i.cfg.publish_timeout;
        let work = async {
            let _permit = i
                .publishes
                .acquire()
                .await
                .map_err(|_| SpoolError::Closed)?;
            let pending =
                i.js.send_publish(
                    subject.to_string(),
                    PublishMessage::build()
                        .payload(payload.into())
                        .message_id(msg_id),
                )
                .await
                .map_err(publish_error)?;
            pending.await.map_err(publish_error)
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(SpoolError::Write(format!(
                "jetstream: no PubAck within {}",
                humantime::format_duration(limit)
            ))),
        }
    }
}

fn publish_error(e: impl std::fmt::Display) -> SpoolError {
    let text = e.to_string();
    // A stream at `max_messages`/`max_bytes` with discard-new refuses the publish.
    if text.contains("maximum messages") || text.contains("maximum bytes") {
        SpoolError::Full
    } else {
        js_err(text)
    }
}
