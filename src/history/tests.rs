//! Tests of the verdict history: packed fields, the ring order, object lookups, zero capacity.

use super::*;

fn subject<'a>(object: &'a str, version: &'a str) -> Subject<'a> {
    Subject {
        service: "svc",
        event: "s3:ObjectCreated:Put",
        bucket: "b",
        object,
        version,
        version_id: Some(version),
    }
}

#[test]
fn fields_round_trip_through_the_packed_text() {
    let d = Decision::new(
        subject("dir/ä x", "v1"),
        None,
        Verdict::Ignored,
        Cow::Borrowed("r"),
    );
    assert_eq!(
        (
            d.service(),
            d.event(),
            d.bucket(),
            d.object(),
            d.version(),
            d.version_id()
        ),
        ("svc", "s3:ObjectCreated:Put", "b", "dir/ä x", "v1", "v1")
    );
}

#[test]
fn an_owned_subject_gives_back_what_it_packed() {
    for version_id in [Some("v1"), None] {
        let s = Subject {
            version_id,
            ..subject("dir/ä x", "seq-7")
        };
        let owned = OwnedSubject::new(s);
        let back = owned.subject();
        assert_eq!(
            (
                back.service,
                back.event,
                back.bucket,
                back.object,
                back.version,
                back.version_id
            ),
            (
                s.service,
                s.event,
                s.bucket,
                s.object,
                s.version,
                s.version_id
            )
        );
    }
}

#[test]
fn ring_keeps_the_newest_in_order() {
    let h = History::new(3);
    for i in 0..5u8 {
        let key = DedupKey([i; 16]);
        h.record(Decision::new(
            subject("o", "v"),
            Some(key),
            Verdict::Duplicate,
            Cow::Borrowed("r"),
        ));
    }
    let all = h.by_object(&ObjectQuery {
        bucket: "b",
        object: "o",
        version: None,
    });
    let firsts: Vec<u8> = all
        .iter()
        .map(|d| d.key.map(|k| k.0[0]).unwrap_or(255))
        .collect();
    assert_eq!(firsts, [2, 3, 4]);
}

#[test]
fn object_lookup_includes_later_decisions_by_key() {
    let h = History::new(10);
    let key = DedupKey([7; 16]);
    h.record(Decision::new(
        subject("o", "v1"),
        Some(key),
        Verdict::Held,
        Cow::Borrowed("replication-pending"),
    ));
    h.record(Decision::new(
        subject("o", "v2"),
        Some(DedupKey([8; 16])),
        Verdict::Forwarded,
        Cow::Borrowed("x"),
    ));
    h.record(Decision::keyed(
        "svc",
        key,
        Verdict::Forwarded,
        "held-grace-elapsed",
    ));
    let q = ObjectQuery {
        bucket: "b",
        object: "o",
        version: Some("v1"),
    };
    let found: Vec<&str> = h.by_object(&q).iter().map(|d| d.verdict.as_str()).collect();
    assert_eq!(found, ["held", "forwarded"]);
    assert_eq!(h.by_key(&key).len(), 2);
}

#[test]
fn zero_capacity_records_nothing() {
    let h = History::new(0);
    h.record(Decision::keyed(
        "s",
        DedupKey([1; 16]),
        Verdict::Forwarded,
        "x",
    ));
    assert!(!h.is_enabled());
    assert!(h.by_key(&DedupKey([1; 16])).is_empty());
}

#[test]
fn a_late_delivery_is_recorded_as_forwarded_with_its_attempts() {
    let h = History::new(4);
    let key = DedupKey([3; 16]);
    let seen = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
    h.record_delivery("svc", key, "held-grace-elapsed", seen, 3);
    let found = h.by_key(&key);
    assert_eq!(found.len(), 1);
    let view = DecisionView::from(&found[0]);
    assert_eq!(
        (view.verdict, view.reason.as_str(), view.service.as_str()),
        ("forwarded", "held-grace-elapsed", "svc")
    );
    assert_eq!(view.seen_at, rfc3339(seen));
    assert!(view.delivered_at.is_some());
    assert_eq!(view.attempts, 3);
}

#[test]
fn a_disabled_history_records_no_late_delivery() {
    let h = History::new(0);
    let key = DedupKey([4; 16]);
    h.record_delivery("svc", key, "spooled-delivered", SystemTime::now(), 1);
    assert!(h.by_key(&key).is_empty());
}
