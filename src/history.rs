//! Verdict history: the last `admin.verdict_history` decisions, for `GET /admin/verdicts`.
//!
//! Operators ask "what happened to this object version?" long after the log line scrolled away.
//! The answer lives in a fixed-capacity ring of decisions, written on the hot path, so recording
//! is kept to one allocation and one short critical section:
//! - the strings of a decision (service, event, bucket, object, version) are packed into one
//!   boxed `str` built *before* the lock is taken;
//! - the lock is a std `Mutex` around a slot swap (never held across an `.await`, never while
//!   allocating or freeing: the evicted entry is dropped after the guard);
//! - lookups (admin only, rare) scan the ring under the same lock and clone what matches.
//!
//! The history is disabled (capacity 0, recording is a no-op) when `admin.verdict_history` is 0
//! or no admin token is configured, because nobody could read it then.
//!
//! A held copy delivered after its grace is recorded by [`crate::pipeline::held`] with its dedup key
//! only; a lookup by bucket/object/version first collects the keys of the matching decisions and
//! then returns every decision with one of those keys, so the late delivery shows up too.

use std::{
    borrow::Cow,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::Serialize;

use crate::{identity::DedupKey, verdict::Verdict};

/// The object version a decision was about (as parsed from the record).
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub service: &'a str,
    pub event: &'a str,
    pub bucket: &'a str,
    pub object: &'a str,
    /// The version that entered the identity (`versionId`, else `sequencer`, else `eTag`).
    pub version: &'a str,
    /// `versionId` as sent, when it differs from `version`.
    pub version_id: Option<&'a str>,
}

/// A [`Subject`] owned, its strings packed into one boxed `str`: one allocation for what a
/// decision keeps, and for what a settle future that may outlive the request body keeps of its
/// record for the report (`pipeline/report.rs`).
#[derive(Debug, Clone)]
pub struct OwnedSubject {
    /// service, event, bucket, object, version, version_id; `ends` marks field ends.
    text: Box<str>,
    ends: [u32; 6],
}

impl OwnedSubject {
    pub fn new(subject: Subject<'_>) -> Self {
        let fields = [
            subject.service,
            subject.event,
            subject.bucket,
            subject.object,
            subject.version,
            subject.version_id.unwrap_or(""),
        ];
        let mut text = String::with_capacity(fields.iter().map(|f| f.len()).sum());
        let mut ends = [0u32; 6];
        for (i, f) in fields.iter().enumerate() {
            text.push_str(f);
            ends[i] = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        Self {
            text: text.into_boxed_str(),
            ends,
        }
    }

    fn field(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize).unwrap_or("")
    }

    /// The subject back; an empty `version_id` reads as absent (a decision stores both alike).
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            service: self.field(0),
            event: self.field(1),
            bucket: self.field(2),
            object: self.field(3),
            version: self.field(4),
            version_id: Some(self.field(5)).filter(|v| !v.is_empty()),
        }
    }
}

/// One recorded decision.
#[derive(Debug, Clone)]
pub struct Decision {
    pub key: Option<DedupKey>,
    pub verdict: Verdict,
    pub reason: Cow<'static, str>,
    /// When the gateway received the record.
    pub seen: SystemTime,
    /// When OSCAR accepted it, for a delivered record.
    pub delivered: Option<SystemTime>,
    /// Delivery attempts this decision made (0 when nothing was sent).
    pub attempts: u32,
    subject: OwnedSubject,
}

impl Decision {
    /// A decision about `subject`.
    pub fn new(
        subject: Subject<'_>,
        key: Option<DedupKey>,
        verdict: Verdict,
        reason: Cow<'static, str>,
    ) -> Self {
        Self {
            key,
            verdict,
            reason,
            seen: SystemTime::now(),
            delivered: None,
            attempts: 0,
            subject: OwnedSubject::new(subject),
        }
    }

    /// A decision known only by its dedup key (a held copy delivered later).
    pub fn keyed(service: &str, key: DedupKey, verdict: Verdict, reason: &'static str) -> Self {
        let subject = Subject {
            service,
            event: "",
            bucket: "",
            object: "",
            version: "",
            version_id: None,
        };
        Self::new(subject, Some(key), verdict, Cow::Borrowed(reason))
    }

    pub fn seen_at(mut self, t: SystemTime) -> Self {
        self.seen = t;
        self
    }

    pub fn delivered_at(mut self, t: Option<SystemTime>, attempts: u32) -> Self {
        self.delivered = t;
        self.attempts = attempts;
        self
    }

    fn field(&self, i: usize) -> &str {
        self.subject.field(i)
    }

    pub fn service(&self) -> &str {
        self.field(0)
    }
    pub fn event(&self) -> &str {
        self.field(1)
    }
    pub fn bucket(&self) -> &str {
        self.field(2)
    }
    pub fn object(&self) -> &str {
        self.field(3)
    }
    pub fn version(&self) -> &str {
        self.field(4)
    }
    pub fn version_id(&self) -> &str {
        self.field(5)
    }

    fn is_about(&self, q: &ObjectQuery<'_>) -> bool {
        !self.bucket().is_empty()
            && self.bucket() == q.bucket
            && self.object() == q.object
            && q.version
                .is_none_or(|v| self.version() == v || self.version_id() == v)
    }
}

/// A lookup by object version; `version` absent means every version of the object.
#[derive(Debug, Clone, Copy)]
pub struct ObjectQuery<'a> {
    pub bucket: &'a str,
    pub object: &'a str,
    pub version: Option<&'a str>,
}

/// The ring of recent decisions; cheap to clone.
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Fixed at start; 0 disables recording. Outside the lock so callers can skip building a
    /// [`Decision`] at all.
    capacity: usize,
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    slots: Vec<Option<Decision>>,
    /// Next slot to write; the oldest entry once the ring is full.
    next: usize,
}

impl History {
    /// A ring of `capacity` decisions; 0 disables recording.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Shared {
                capacity,
                ring: Mutex::new(Ring {
                    // Allocated once here, so a push under the lock never reallocates.
                    slots: Vec::with_capacity(capacity),
                    next: 0,
                }),
            }),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.capacity > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding this lock cannot leave the ring inconsistent (slot swaps only).
        self.inner.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one decision, evicting the oldest when full.
    pub fn record(&self, d: Decision) {
        let capacity = self.inner.capacity;
        if capacity == 0 {
            return;
        }
        let evicted = {
            let mut ring = self.lock();
            if ring.slots.len() < capacity {
                ring.slots.push(Some(d));
                None
            } else {
                let i = ring.next;
                ring.next = (i + 1) % capacity;
                ring.slots.get_mut(i).and_then(|s| s.replace(d))
            }
        };
        // Freed after the guard is gone.
        drop(evicted);
    }

    /// Records the late delivery of an event that was answered earlier (`accepted`, `held`):
    /// `forwarded` for `reason`, first seen at `seen`, delivered now after `attempts`. The one
    /// record for held copies and spooled events alike; a no-op when the history is disabled.
    pub fn record_delivery(
        &self,
        service: &str,
        key: DedupKey,
        reason: &'static str,
        seen: SystemTime,
        attempts: u32,
    ) {
        if !self.is_enabled() {
            return;
        }
        let d = Decision::keyed(service, key, Verdict::Forwarded, reason)
            .seen_at(seen)
            .delivered_at(Some(SystemTime::now()), attempts);
        self.record(d);
    }

    /// Every decision with dedup key `key`, oldest first.
    pub fn by_key(&self, key: &DedupKey) -> Vec<Decision> {
        self.collect(|d| d.key.as_ref() == Some(key))
    }

    /// Every decision about the object version, plus every decision sharing a dedup key with one
    /// of them; oldest first.
    pub fn by_object(&self, q: &ObjectQuery<'_>) -> Vec<Decision> {
        let ring = self.lock();
        let mut keys: Vec<DedupKey> = Vec::new();
        for d in ring.iter() {
            if d.is_about(q)
                && let Some(k) = d.key
                && !keys.contains(&k)
            {
                keys.push(k);
            }
        }
        ring.iter()
            .filter(|d| d.is_about(q) || d.key.is_some_and(|k| keys.contains(&k)))
            .cloned()
            .collect()
    }

    fn collect(&self, f: impl Fn(&Decision) -> bool) -> Vec<Decision> {
        self.lock().iter().filter(|d| f(d)).cloned().collect()
    }
}

impl Ring {
    /// Oldest first.
    fn iter(&self) -> impl Iterator<Item = &Decision> {
        let (newer, older) = self.slots.split_at(self.next.min(self.slots.len()));
        older.iter().chain(newer.iter()).flatten()
    }
}

/// A decision as `/admin/verdicts` shows it.
#[derive(Debug, Serialize)]
pub struct DecisionView {
    pub verdict: &'static str,
    pub reason: String,
    pub service: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub event: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bucket: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub object: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    pub key: Option<String>,
    pub seen_at: String,
    pub delivered_at: Option<String>,
    pub attempts: u32,
}

impl From<&Decision> for DecisionView {
    fn from(d: &Decision) -> Self {
        Self {
            verdict: d.verdict.as_str(),
            reason: d.reason.to_string(),
            service: d.service().to_owned(),
            event: d.event().to_owned(),
            bucket: d.bucket().to_owned(),
            object: d.object().to_owned(),
            version: d.version().to_owned(),
            key: d.key.map(|k| k.to_hex()),
            seen_at: rfc3339(d.seen),
            delivered_at: d.delivered.map(rfc3339),
            attempts: d.attempts,
        }
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests;
