//! Check: the pure half of the pipeline (parse → policy → key) run on arbitrary bytes, with the
//! invariants that must hold for every input.
//!
//! This is the body of the fuzz targets in `fuzz/` and of the regression test that replays the
//! fuzz corpus and every crash reproducer in the normal test suite, so a finding stays fixed
//! without a nightly toolchain. It does no I/O and needs no runtime. It panics when an invariant
//! is broken, which is exactly what a fuzzer looks for; nothing on the serving path calls it.
//!
//! The invariants:
//! - parsing never panics, and a parsed record has a non-empty event name, bucket, key and version;
//! - a decoded object key survives a form-encoding round trip (the decoder is strict, not lossy);
//! - the policy is total and consistent: failed replication is always final, a record is held
//!   only when it is marked PENDING under `hold`, `forward` never drops a record as `pending`;
//! - the identity class does not depend on the pending policy, and the key is deterministic;
//! - the one-pass parse the gateway serves with ([`parse::records`]) gives exactly what the
//!   two-pass one gives ([`parse::envelope`], then [`parse::record`] per record): the same
//!   envelope error, or the same records (and the same raw slices for a multi-record body);
//! - the single-record body built for one record of a multi-record request parses back to the
//!   same fields and the same dedup key, so splitting a request can never change an identity.

use serde_json::value::RawValue;

use super::{
    key::KeyDeriver,
    parse::{self, Marking, Record},
    policy::{Class, FinalVerdict, Policy, Ruling},
};
use crate::config::{AvailableOn, DEFAULT_FORWARD, PendingPolicy};

/// What one input came to; for corpus statistics in tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The body was rejected as a whole (400).
    pub rejected: bool,
    /// Records that parsed.
    pub parsed: usize,
    /// Records that were `invalid`.
    pub invalid: usize,
    /// Records that reached key derivation under the default policy.
    pub keyed: usize,
}

const PENDING: [PendingPolicy; 3] = [
    PendingPolicy::Hold,
    PendingPolicy::Drop,
    PendingPolicy::Forward,
];
const AVAILABLE_ON: [AvailableOn; 3] = [
    AvailableOn::Any,
    AvailableOn::Created,
    AvailableOn::Replicated,
];

/// Runs `body` through parse → policy → key under every pending policy and `available_on`,
/// asserting the invariants of this module.
///
/// # Panics
/// When an invariant is broken.
pub fn check_body(body: &[u8]) -> Summary {
    let forward: Vec<String> = DEFAULT_FORWARD.iter().map(|s| s.to_string()).collect();
    let policies: Vec<Policy> = PENDING
        .iter()
        .map(|p| Policy::new(&forward, *p).expect("the default patterns are valid"))
        .collect();
    // A second, catch-all policy reaches the `Class::Other` path.
    let everything =
        Policy::new(&["*".to_string()], PendingPolicy::Hold).expect("`*` is a valid pattern");
    let keys = KeyDeriver::new(b"fuzz-secret-0123456789");
    let scope = keys.scope("svc", Some(b"Bearer token"));

    let mut summary = Summary::default();
    check_one_pass(body);
    let env = match parse::envelope(body) {
        Ok(env) => env,
        Err(_) => {
            summary.rejected = true;
            return summary;
        }
    };
    assert!(!env.records.is_empty(), "an accepted envelope has records");
    for raw in &env.records {
        let rec = match parse::record(raw) {
            Ok(rec) => rec,
            Err(_) => {
                summary.invalid += 1;
                continue;
            }
        };
        summary.parsed += 1;
        check_fields(&rec);
        let mut class_seen: Option<String> = None;
        for policy in policies.iter().chain(std::iter::once(&everything)) {
            for on in AVAILABLE_ON {
                let decision = policy.decide(&rec, on);
                check_decision(&rec, policy.pending, decision);
                if let Ruling::Forward(class) | Ruling::Hold(class) = decision {
                    let a = keys.key(&scope, &rec, class);
                    assert_eq!(a, keys.key(&scope, &rec, class), "keys are deterministic");
                    match &class_seen {
                        Some(c) => assert_eq!(
                            c,
                            class.as_str(),
                            "the class depends on the event name only"
                        ),
                        None => class_seen = Some(class.as_str().to_owned()),
                    }
                }
            }
        }
        if let Ruling::Forward(class) | Ruling::Hold(class) =
            policies[0].decide(&rec, AvailableOn::Any)
        {
            summary.keyed += 1;
            check_split(&keys, &rec, raw, class);
        }
    }
    summary
}

/// [`parse::records`] agrees with [`parse::envelope`] + [`parse::record`].
fn check_one_pass(body: &[u8]) {
    let two_pass = parse::envelope(body).map(|env| {
        env.records
            .iter()
            .map(|raw| (raw.get(), parse::record(raw)))
            .collect::<Vec<_>>()
    });
    let one_pass = parse::records(body).map(|recs| match recs {
        parse::Records::Single(rec) => vec![(None, rec)],
        parse::Records::Many(many) => many
            .into_iter()
            .map(|(raw, rec)| (Some(raw.get()), rec))
            .collect(),
    });
    match (two_pass, one_pass) {
        (Err(a), Err(b)) => assert_eq!(a, b, "the same envelope error on both paths"),
        (Ok(a), Ok(b)) => {
            assert_eq!(a.len(), b.len(), "the same number of records on both paths");
            assert!(b.len() == 1 || b.iter().all(|(raw, _)| raw.is_some()));
            for ((raw_a, rec_a), (raw_b, rec_b)) in a.iter().zip(&b) {
                assert_eq!(rec_a, rec_b, "the same record on both paths");
                if let Some(raw_b) = raw_b {
                    assert_eq!(raw_a, raw_b, "the same raw slice on both paths");
                }
            }
        }
        (a, b) => panic!("the paths disagree: {a:?} vs {b:?}"),
    }
}

fn check_fields(rec: &Record<'_>) {
    assert!(!rec.event_name.is_empty(), "event name");
    assert!(!rec.bucket.is_empty(), "bucket");
    assert!(!rec.key.is_empty(), "object key");
    assert!(!rec.version.is_empty(), "version");
    let again = parse::decode_form_component(&form_encode(&rec.key));
    assert_eq!(again.as_deref(), Ok(rec.key.as_str()), "form round trip");
}

fn check_decision(rec: &Record<'_>, pending: PendingPolicy, d: Ruling<'_>) {
    let failed = matches!(
        rec.event_name.as_ref(),
        "s3:Replication:OperationFailedReplication" | "s3:Replication:OperationNotTracked"
    );
    if failed {
        assert_eq!(
            d,
            Ruling::Final(FinalVerdict::ReplicationFailed, "replication-not-complete")
        );
    }
    if let Ruling::Hold(_) = d {
        assert_eq!(
            rec.marking,
            Marking::Pending,
            "only a marked record is held"
        );
        assert_eq!(pending, PendingPolicy::Hold, "held only under `hold`");
    }
    if let Ruling::Final(FinalVerdict::Pending, _) = d {
        assert_eq!(
            pending,
            PendingPolicy::Drop,
            "dropped as pending only under `drop`"
        );
    }
}

/// The body forwarded for one record of a multi-record request must carry the same identity.
fn check_split(keys: &KeyDeriver, rec: &Record<'_>, raw: &RawValue, class: Class<'_>) {
    let scope = keys.scope("svc", Some(b"Bearer token"));
    let body = parse::single_record_body(rec, raw);
    let env = parse::envelope(&body).expect("a split body is a valid envelope");
    assert_eq!(env.records.len(), 1, "a split body has one record");
    let again = parse::record(env.records[0]).expect("a split record parses again");
    assert_eq!(again.event_name, rec.event_name);
    assert_eq!(again.bucket, rec.bucket);
    assert_eq!(again.key, rec.key);
    assert_eq!(again.version, rec.version);
    assert_eq!(again.version_source, rec.version_source);
    assert_eq!(again.marking, rec.marking);
    assert_eq!(
        keys.key(&scope, &again, class),
        keys.key(&scope, rec, class),
        "same identity after the split"
    );
}

/// `url.QueryEscape`-style encoding, the inverse of [`parse::decode_form_component`].
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_accepts_a_plain_record_and_rejects_garbage() {
        let body = br#"{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"a+b%2Bc","versionId":"v1"}}},{}]}"#;
        let s = check_body(body);
        assert_eq!((s.rejected, s.parsed, s.invalid, s.keyed), (false, 1, 1, 1));
        assert!(check_body(b"\xff").rejected);
    }
}
