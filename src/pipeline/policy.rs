//! Policy: which records may trigger OSCAR, and in which identity class.
//!
//! Pure functions of the parsed record and the configuration, so every rule is unit-tested without
//! a server. The order of the checks is part of the contract (§4, §6, §6a):
//! 1. failed or untracked replication → `replication-failed` (a completed event will follow);
//! 2. an event name outside the forwarding patterns → `ignored`;
//! 3. the service's `available_on` → `ignored` (`awaiting-replication` / `awaiting-creation`);
//! 4. a PENDING marking → hold, drop (`pending`) or ignore the mark, per `policy.pending`;
//! 5. everything else proceeds to dedup as a forward.

use crate::config::{AvailableOn, PendingPolicy};

use super::{
    parse::{Marking, Record},
    pattern::Pattern,
};

/// The identity class of contract §6: a Put and the replication of the same version are one
/// trigger (`Available`), a delete of it is another (`Removed`). Event names outside both lists
/// that an operator chose to forward form a class of their own, named by the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class<'a> {
    Available,
    Removed,
    Other(&'a str),
}

impl Class<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Class::Available => "available",
            Class::Removed => "removed",
            Class::Other(name) => name,
        }
    }
}

/// What the event name says about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Created,
    Replicated,
    Removed,
    ReplicationFailed,
    Other,
}

fn kind(name: &str) -> Kind {
    match name {
        "s3:ObjectCreated:Put"
        | "s3:ObjectCreated:Post"
        | "s3:ObjectCreated:Copy"
        | "s3:ObjectCreated:CompleteMultipartUpload" => Kind::Created,
        "s3:Replication:OperationCompletedReplication"
        | "s3:Replication:OperationReplicatedAfterThreshold" => Kind::Replicated,
        "s3:ObjectRemoved:Delete"
        | "s3:ObjectRemoved:DeleteMarkerCreated"
        | "s3:ObjectRemoved:DeleteAllVersions" => Kind::Removed,
        "s3:Replication:OperationFailedReplication" | "s3:Replication:OperationNotTracked" => {
            Kind::ReplicationFailed
        }
        _ => Kind::Other,
    }
}

/// The compiled forwarding policy.
#[derive(Debug, Clone)]
pub struct Policy {
    forward: Vec<Pattern>,
    pub pending: PendingPolicy,
}

/// The policy's answer for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ruling<'a> {
    /// Final without dedup: verdict and reason.
    Final(FinalVerdict, &'static str),
    /// Dedup, then forward now.
    Forward(Class<'a>),
    /// Dedup, then hold for the grace period (marked PENDING, `policy.pending = hold`).
    Hold(Class<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalVerdict {
    ReplicationFailed,
    Ignored,
    Pending,
}

impl Policy {
    pub fn new(patterns: &[String], pending: PendingPolicy) -> Result<Self, String> {
        let forward = patterns
            .iter()
            .map(|p| Pattern::new(p))
            .collect::<Result<_, _>>()?;
        Ok(Self { forward, pending })
    }

    pub fn decide<'r>(&self, record: &'r Record<'_>, available_on: AvailableOn) -> Ruling<'r> {
        let name: &'r str = &record.event_name;
        let kind = kind(name);
        if kind == Kind::ReplicationFailed {
            return Ruling::Final(FinalVerdict::ReplicationFailed, "replication-not-complete");
        }
        if !self.forward.iter().any(|p| p.matches(name)) {
            return Ruling::Final(FinalVerdict::Ignored, "event-not-forwarded");
        }
        let class = match kind {
            Kind::Created | Kind::Replicated => Class::Available,
            Kind::Removed => Class::Removed,
            Kind::ReplicationFailed | Kind::Other => Class::Other(name),
        };
        match (available_on, kind) {
            (AvailableOn::Replicated, Kind::Created) => {
                return Ruling::Final(FinalVerdict::Ignored, "awaiting-replication");
            }
            (AvailableOn::Created, Kind::Replicated) => {
                return Ruling::Final(FinalVerdict::Ignored, "awaiting-creation");
            }
            _ => {}
        }
        match (record.marking, self.pending) {
            (Marking::Pending, PendingPolicy::Hold) => Ruling::Hold(class),
            (Marking::Pending, PendingPolicy::Drop) => {
                Ruling::Final(FinalVerdict::Pending, "replication-pending")
            }
            _ => Ruling::Forward(class),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::{config::DEFAULT_FORWARD, pipeline::parse::VersionSource};

    fn rec(name: &str, marking: Marking) -> Record<'static> {
        Record {
            event_name: Cow::Owned(name.into()),
            bucket: "b".into(),
            key: "k".into(),
            version: "v".into(),
            version_source: VersionSource::VersionId,
            version_id: None,
            etag: None,
            marking,
        }
    }

    fn default_policy(pending: PendingPolicy) -> Policy {
        let p: Vec<String> = DEFAULT_FORWARD.iter().map(|s| s.to_string()).collect();
        Policy::new(&p, pending).unwrap()
    }

    #[test]
    fn default_policy_verdicts() {
        let p = default_policy(PendingPolicy::Hold);
        let d = |n: &str, m| p.decide(Box::leak(Box::new(rec(n, m))), AvailableOn::Any);
        assert_eq!(
            d("s3:ObjectCreated:Put", Marking::Clean),
            Ruling::Forward(Class::Available)
        );
        assert_eq!(
            d(
                "s3:Replication:OperationCompletedReplication",
                Marking::Clean
            ),
            Ruling::Forward(Class::Available)
        );
        assert_eq!(
            d("s3:ObjectRemoved:Delete", Marking::Clean),
            Ruling::Forward(Class::Removed)
        );
        assert_eq!(
            d("s3:ObjectCreated:Put", Marking::Pending),
            Ruling::Hold(Class::Available)
        );
        for ignored in [
            "s3:ObjectRemoved:NoOP",
            "s3:ObjectAccessed:Get",
            "s3:ObjectCreated:PutTagging",
            "s3:ObjectCreated:PutRetention",
            "s3:Scanner:ManyVersions",
            "s3:ObjectTransition:Complete",
        ] {
            assert_eq!(
                d(ignored, Marking::Clean),
                Ruling::Final(FinalVerdict::Ignored, "event-not-forwarded"),
                "{ignored}"
            );
        }
        for failed in [
            "s3:Replication:OperationFailedReplication",
            "s3:Replication:OperationNotTracked",
        ] {
            assert!(matches!(
                d(failed, Marking::Pending),
                Ruling::Final(FinalVerdict::ReplicationFailed, _)
            ));
        }
    }

    #[test]
    fn pending_policies() {
        let r = rec("s3:ObjectCreated:Put", Marking::Pending);
        assert_eq!(
            default_policy(PendingPolicy::Drop).decide(&r, AvailableOn::Any),
            Ruling::Final(FinalVerdict::Pending, "replication-pending")
        );
        assert_eq!(
            default_policy(PendingPolicy::Forward).decide(&r, AvailableOn::Any),
            Ruling::Forward(Class::Available)
        );
    }

    #[test]
    fn available_on() {
        let p = default_policy(PendingPolicy::Hold);
        let put = rec("s3:ObjectCreated:Put", Marking::Clean);
        let repl = rec(
            "s3:Replication:OperationCompletedReplication",
            Marking::Clean,
        );
        let del = rec("s3:ObjectRemoved:Delete", Marking::Clean);
        assert_eq!(
            p.decide(&put, AvailableOn::Replicated),
            Ruling::Final(FinalVerdict::Ignored, "awaiting-replication")
        );
        assert_eq!(
            p.decide(&repl, AvailableOn::Replicated),
            Ruling::Forward(Class::Available)
        );
        assert_eq!(
            p.decide(&repl, AvailableOn::Created),
            Ruling::Final(FinalVerdict::Ignored, "awaiting-creation")
        );
        assert_eq!(
            p.decide(&del, AvailableOn::Replicated),
            Ruling::Forward(Class::Removed)
        );
    }

    #[test]
    fn operator_patterns_form_their_own_class() {
        let p = Policy::new(&["s3:ObjectCreated:*".into()], PendingPolicy::Hold).unwrap();
        let r = rec("s3:ObjectCreated:PutTagging", Marking::Clean);
        assert_eq!(
            p.decide(&r, AvailableOn::Any),
            Ruling::Forward(Class::Other("s3:ObjectCreated:PutTagging"))
        );
    }
}
