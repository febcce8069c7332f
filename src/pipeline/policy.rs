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

use super::parse::{Marking, Record};

/// A wildcard event-name pattern (`*` matches any run of characters, including none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// No `*`: matching is plain equality. Every default pattern is literal, and the glob's
    /// byte-by-byte walk over nine of them was most of the policy's time (BENCHMARKS.md).
    literal: bool,
}

impl Pattern {
    pub fn new(p: &str) -> Result<Self, String> {
        if p.is_empty() {
            return Err("an event pattern must not be empty".into());
        }
        if !p.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("event pattern `{p}` has non-printable characters"));
        }
        Ok(Self {
            text: p.to_owned(),
            literal: !p.contains('*'),
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        if self.literal {
            return self.text == name;
        }
        glob(self.text.as_bytes(), name.as_bytes())
    }
}

/// Iterative wildcard match with one backtrack point: linear in practice, no recursion.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

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
pub enum Decision<'a> {
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

    pub fn decide<'r>(&self, record: &'r Record<'_>, available_on: AvailableOn) -> Decision<'r> {
        let name: &'r str = &record.event_name;
        let kind = kind(name);
        if kind == Kind::ReplicationFailed {
            return Decision::Final(FinalVerdict::ReplicationFailed, "replication-not-complete");
        }
        if !self.forward.iter().any(|p| p.matches(name)) {
            return Decision::Final(FinalVerdict::Ignored, "event-not-forwarded");
        }
        let class = match kind {
            Kind::Created | Kind::Replicated => Class::Available,
            Kind::Removed => Class::Removed,
            Kind::ReplicationFailed | Kind::Other => Class::Other(name),
        };
        match (available_on, kind) {
            (AvailableOn::Replicated, Kind::Created) => {
                return Decision::Final(FinalVerdict::Ignored, "awaiting-replication");
            }
            (AvailableOn::Created, Kind::Replicated) => {
                return Decision::Final(FinalVerdict::Ignored, "awaiting-creation");
            }
            _ => {}
        }
        match (record.marking, self.pending) {
            (Marking::Pending, PendingPolicy::Hold) => Decision::Hold(class),
            (Marking::Pending, PendingPolicy::Drop) => {
                Decision::Final(FinalVerdict::Pending, "replication-pending")
            }
            _ => Decision::Forward(class),
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
            marking,
        }
    }

    fn default_policy(pending: PendingPolicy) -> Policy {
        let p: Vec<String> = DEFAULT_FORWARD.iter().map(|s| s.to_string()).collect();
        Policy::new(&p, pending).unwrap()
    }

    #[test]
    fn glob_matches_minio_wildcards() {
        let p = Pattern::new("s3:ObjectCreated:*").unwrap();
        assert!(p.matches("s3:ObjectCreated:Put"));
        assert!(p.matches("s3:ObjectCreated:"));
        assert!(!p.matches("s3:ObjectRemoved:Delete"));
        assert!(Pattern::new("*").unwrap().matches("anything"));
        assert!(
            Pattern::new("s3:*:Put")
                .unwrap()
                .matches("s3:ObjectCreated:Put")
        );
        assert!(
            !Pattern::new("s3:*:Put")
                .unwrap()
                .matches("s3:ObjectCreated:Post")
        );
        assert!(Pattern::new("a*b*c").unwrap().matches("aXXbYYbZc"));
        // A pattern without `*` takes the equality shortcut; it answers as the glob does.
        let lit = Pattern::new("s3:ObjectCreated:Put").unwrap();
        for name in [
            "s3:ObjectCreated:Put",
            "s3:ObjectCreated:Pu",
            "s3:ObjectCreated:Putt",
            "S3:ObjectCreated:Put",
            "",
        ] {
            assert_eq!(
                lit.matches(name),
                glob(lit.text.as_bytes(), name.as_bytes())
            );
        }
        assert!(lit.matches("s3:ObjectCreated:Put"));
    }

    #[test]
    fn default_policy_verdicts() {
        let p = default_policy(PendingPolicy::Hold);
        let d = |n: &str, m| p.decide(Box::leak(Box::new(rec(n, m))), AvailableOn::Any);
        assert_eq!(
            d("s3:ObjectCreated:Put", Marking::Clean),
            Decision::Forward(Class::Available)
        );
        assert_eq!(
            d(
                "s3:Replication:OperationCompletedReplication",
                Marking::Clean
            ),
            Decision::Forward(Class::Available)
        );
        assert_eq!(
            d("s3:ObjectRemoved:Delete", Marking::Clean),
            Decision::Forward(Class::Removed)
        );
        assert_eq!(
            d("s3:ObjectCreated:Put", Marking::Pending),
            Decision::Hold(Class::Available)
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
                Decision::Final(FinalVerdict::Ignored, "event-not-forwarded"),
                "{ignored}"
            );
        }
        for failed in [
            "s3:Replication:OperationFailedReplication",
            "s3:Replication:OperationNotTracked",
        ] {
            assert!(matches!(
                d(failed, Marking::Pending),
                Decision::Final(FinalVerdict::ReplicationFailed, _)
            ));
        }
    }

    #[test]
    fn pending_policies() {
        let r = rec("s3:ObjectCreated:Put", Marking::Pending);
        assert_eq!(
            default_policy(PendingPolicy::Drop).decide(&r, AvailableOn::Any),
            Decision::Final(FinalVerdict::Pending, "replication-pending")
        );
        assert_eq!(
            default_policy(PendingPolicy::Forward).decide(&r, AvailableOn::Any),
            Decision::Forward(Class::Available)
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
            Decision::Final(FinalVerdict::Ignored, "awaiting-replication")
        );
        assert_eq!(
            p.decide(&repl, AvailableOn::Replicated),
            Decision::Forward(Class::Available)
        );
        assert_eq!(
            p.decide(&repl, AvailableOn::Created),
            Decision::Final(FinalVerdict::Ignored, "awaiting-creation")
        );
        assert_eq!(
            p.decide(&del, AvailableOn::Replicated),
            Decision::Forward(Class::Removed)
        );
    }

    #[test]
    fn operator_patterns_form_their_own_class() {
        let p = Policy::new(&["s3:ObjectCreated:*".into()], PendingPolicy::Hold).unwrap();
        let r = rec("s3:ObjectCreated:PutTagging", Marking::Clean);
        assert_eq!(
            p.decide(&r, AvailableOn::Any),
            Decision::Forward(Class::Other("s3:ObjectCreated:PutTagging"))
        );
    }
}
