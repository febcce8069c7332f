//! The attempt history of a JetStream message, so a dead-letter entry lists every attempt (when,
//! OSCAR's status, the outcome) as a local one does, not only the last.
//!
//! A message in the events stream cannot be changed: a retry is a NAK with a delay, and the
//! redelivery carries the payload as published. Republishing an updated copy per retry would lose
//! the delay (NAK is what delays) and double the events-stream traffic. So each failed attempt is
//! published instead, as one small message, to a stream of its own (`<dlq_stream>_ATTEMPTS`,
//! subject `<dlq_subject>.attempts.<events-stream sequence>`):
//! - **bounded by the server**: at most [`MAX_ATTEMPTS_KEPT`] messages per subject (discard old),
//!   the bound of a local record; and a `max_age` of the retry horizon plus the grace, so the
//!   history of a message whose replica died between its last attempt and its ack ages out;
//! - **append-only**: two replicas that both try one message (a redelivery after `AckWait`) each
//!   add their attempt; no read-modify-write;
//! - **read once**, when the message is dead-lettered, then purged; a delivered message that had
//!   failed before purges its history too. Recording is best effort: a history lost to a NATS
//!   outage only shortens the list (the attempt count comes from JetStream's delivery count).
//!
//! Only the failure path pays: a message delivered at its first attempt never touches the stream.

use std::time::Duration;

use async_nats::jetstream::stream::{self, DirectGetErrorKind};

use super::{Inner, JetStreamConfig};
use crate::spool::{
    SpoolSettings,
    record::{Attempt, MAX_ATTEMPTS_KEPT},
};

fn subject(cfg: &JetStreamConfig, seq: u64) -> String {
    format!("{}.attempts.{seq}", cfg.dlq_subject)
}

pub(super) fn config(cfg: &JetStreamConfig, s: &SpoolSettings) -> stream::Config {
    stream::Config {
        name: format!("{}_ATTEMPTS", cfg.dlq_stream),
        subjects: vec![format!("{}.attempts.*", cfg.dlq_subject)],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        max_messages_per_subject: i64::try_from(MAX_ATTEMPTS_KEPT).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::Old,
        max_age: s.horizon() + s.grace + Duration::from_secs(3600),
        duplicate_window: cfg.duplicate_window.min(Duration::from_secs(120)),
        allow_direct: true,
        ..Default::default()
    }
}

/// `u64 at_ms | u16 status (0 = none) | outcome (UTF-8, the rest)`.
fn encode(a: &Attempt) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + a.outcome.len());
    out.extend_from_slice(&a.at_ms.to_be_bytes());
    out.extend_from_slice(&a.status.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(a.outcome.as_bytes());
    out
}

fn decode(buf: &[u8]) -> Option<Attempt> {
    let at_ms = u64::from_be_bytes(buf.get(0..8)?.try_into().ok()?);
    let status = u16::from_be_bytes(buf.get(8..10)?.try_into().ok()?);
    let outcome = std::str::from_utf8(buf.get(10..)?).ok()?.to_string();
    Some(Attempt {
        at_ms,
        status: Some(status).filter(|s| *s != 0),
        outcome,
    })
}

impl Inner {
    /// Adds `attempt` to the history of events-stream message `seq`; `delivered` (JetStream's
    /// delivery count) makes the message id, so a publish repeated after a lost PubAck is
    /// stored once. Best effort (see the module doc).
    pub(super) async fn record_attempt(&self, seq: u64, delivered: u32, attempt: &Attempt) {
        if seq == 0 {
            return;
        }
        let id = format!("{seq}:{delivered}");
        if let Err(e) = self
            .send(&subject(&self.cfg, seq), encode(attempt), id)
            .await
        {
            tracing::warn!(stream_seq = seq, error = %e, "could not record a failed attempt; the dead-letter entry will list fewer");
        }
    }

    /// The attempts recorded for message `seq`, oldest first (at most [`MAX_ATTEMPTS_KEPT`]).
    pub(super) async fn attempts_of(&self, seq: u64) -> Vec<Attempt> {
        let mut out = Vec::new();
        if seq == 0 {
            return out;
        }
        let subject = subject(&self.cfg, seq);
        let mut from = 1;
        // The server keeps at most MAX_ATTEMPTS_KEPT per subject; one more read finds the end.
        for _ in 0..=MAX_ATTEMPTS_KEPT {
            match self
                .attempts
                .direct_get_next_for_subject(subject.clone(), Some(from))
                .await
            {
                Ok(m) => {
                    from = m.sequence.saturating_add(1);
                    out.extend(decode(&m.payload));
                }
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
                Err(e) => {
                    tracing::warn!(stream_seq = seq, error = %e, "could not read the attempt history; listing what was read");
                    break;
                }
            }
        }
        out
    }

    /// Drops the history of message `seq` (delivered or dead-lettered). Best effort: what is
    /// left ages out with the stream's `max_age`.
    pub(super) async fn forget_attempts(&self, seq: u64) {
        if seq == 0 {
            return;
        }
        if let Err(e) = self.attempts.purge().filter(subject(&self.cfg, seq)).await {
            tracing::debug!(stream_seq = seq, error = %e, "could not purge an attempt history; it ages out");
        }
    }
}

/// The full list for a dead-letter entry: the recorded history, then `current` (this delivery's
/// own attempt, if it made one), the oldest dropped beyond [`MAX_ATTEMPTS_KEPT`].
pub(super) fn merged(mut history: Vec<Attempt>, current: Vec<Attempt>) -> Vec<Attempt> {
    history.extend(current);
    let excess = history.len().saturating_sub(MAX_ATTEMPTS_KEPT);
    history.drain(..excess);
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_survives_encoding() {
        for status in [Some(503), None] {
            let a = Attempt {
                at_ms: 1_700_000_000_123,
                status,
                outcome: "upstream-503".into(),
            };
            assert_eq!(decode(&encode(&a)), Some(a));
        }
        assert_eq!(decode(&[1, 2, 3]), None, "truncated");
    }

    #[test]
    fn the_merged_list_keeps_the_latest() {
        let a = |n: u64| Attempt {
            at_ms: n,
            status: Some(503),
            outcome: "upstream-503".into(),
        };
        let history: Vec<_> = (0..MAX_ATTEMPTS_KEPT as u64).map(a).collect();
        let all = merged(history, vec![a(1000)]);
        assert_eq!(all.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(all[0].at_ms, 1);
        assert_eq!(all.last().map(|x| x.at_ms), Some(1000));
    }
}
