//! Unversioned buckets: an object's event (keyed by its sequencer) and its listing entry (no
//! sequencer) share the alias identity of `pipeline/key/alias.rs`, so each write runs once
//! whichever comes first, and an overwrite with identical content still runs.
//!
//! MinIO's sequencer is the object's modification time in hex nanoseconds and MinIO lists
//! `LastModified` in milliseconds of that same time. moto lists whole seconds, so the events here
//! are made the way MinIO would make them for the listed time: that second's milliseconds plus a
//! sub-millisecond part the listing cannot show.

use super::{moto::Moto, *};
use crate::helpers::*;
use dedup_gateway::reconcile::xml::Listed;
use serde_json::Value;

/// The listing entry of `key` (one page is enough for these few objects).
async fn listed(bucket: &dedup_gateway::reconcile::s3::S3Client, key: &str) -> Listed {
    let page = bucket.list_objects("", 1000, None).await.expect("list");
    page.entries
        .into_iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("{key} listed"))
}

/// MinIO's `s3:ObjectCreated:Put` for the unversioned write `entry`: no versionId, its ETag, and
/// a sequencer of its modification time (`sub_ms` nanoseconds past the listed millisecond).
fn event_for(bucket: &str, entry: &Listed, sub_ms: u64) -> Vec<u8> {
    let key = dedup_gateway::reconcile::body::query_escape(&entry.key);
    let mut v: Value = serde_json::from_slice(&minio_put(bucket, &key, None)).unwrap();
    let obj = &mut v["Records"][0]["s3"]["object"];
    let ns = u64::try_from(entry.last_modified.as_millisecond()).unwrap() * 1_000_000 + sub_ms;
    obj["sequencer"] = Value::String(format!("{ns:X}"));
    obj["eTag"] = Value::String(entry.etag.clone());
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn unversioned_writes_run_once_whether_announced_or_reconciled_first() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("plain");
    bucket.create_bucket(false).await.unwrap();
    bucket.put_object("announced", b"a".to_vec()).await.unwrap();
    let mut rc = reconcile_cfg(&s3.url(), "plain", dir.path());
    rc.versioned = false;
    let gw = TestGateway::start(gateway_cfg(&oscar, rc)).await;

    // Announced, then reconciled: the pass triggers nothing new.
    let a = listed(&bucket, "announced").await;
    let (status, answer) = gw
        .post(SVC, Some(GOOD_TOKEN), event_for("plain", &a, 456_789))
        .await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["forwarded".to_string()]),
        "{answer}"
    );
    let (_, report) = run_now(&gw).await;
    assert_eq!(
        (count(&report, "triggered"), count(&report, "already_seen")),
        (0, 1),
        "{report}"
    );

    // Reconciled, then announced: the late event is a duplicate.
    bucket.put_object("lost", b"b".to_vec()).await.unwrap();
    let (_, report) = run_now(&gw).await;
    assert_eq!(count(&report, "triggered"), 1, "{report}");
    let b = listed(&bucket, "lost").await;
    let (_, answer) = gw
        .post(SVC, Some(GOOD_TOKEN), event_for("plain", &b, 999_999))
        .await;
    assert_eq!(verdicts(&answer), vec!["duplicate".to_string()], "{answer}");
    assert_eq!(
        answer["results"][0]["reason"], "delivered-unversioned-alias",
        "{answer}"
    );
    assert_eq!(oscar.accepted().len(), 2, "each write once so far");

    // Overwritten with identical content (a later modification time; moto lists whole
    // seconds): a new write, so its event runs, and the pass after it triggers nothing.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    bucket.put_object("announced", b"a".to_vec()).await.unwrap();
    let a2 = listed(&bucket, "announced").await;
    assert_eq!(a2.etag, a.etag, "identical content");
    assert!(a2.last_modified > a.last_modified, "{a2:?}");
    let (_, answer) = gw
        .post(SVC, Some(GOOD_TOKEN), event_for("plain", &a2, 1))
        .await;
    assert_eq!(verdicts(&answer), vec!["forwarded".to_string()], "{answer}");
    let (_, report) = run_now(&gw).await;
    assert_eq!(
        (count(&report, "triggered"), count(&report, "already_seen")),
        (0, 2),
        "{report}"
    );
    assert_eq!(oscar.accepted().len(), 3, "three writes, three triggers");
    gw.stop().await;
}

/// Spool mode: the alias is committed once the event is durably accepted, so a pass right after
/// (whether or not the spool has delivered it yet) does not trigger the object again.
#[tokio::test]
async fn spooled_unversioned_event_is_not_reconciled_again() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("plain");
    bucket.create_bucket(false).await.unwrap();
    bucket
        .put_object("in/x y+z.csv", b"x".to_vec())
        .await
        .unwrap();
    let mut rc = reconcile_cfg(&s3.url(), "plain", dir.path());
    rc.versioned = false;
    let mut cfg = gateway_cfg(&oscar, rc);
    cfg.mode = dedup_gateway::config::Mode::Spool;
    cfg.data_dir = dir.path().join("data");
    let gw = TestGateway::start(cfg).await;
    let x = listed(&bucket, "in/x y+z.csv").await;
    let (status, answer) = gw
        .post(SVC, Some(GOOD_TOKEN), event_for("plain", &x, 7))
        .await;
    assert_eq!(
        (status, verdicts(&answer)),
        (202, vec!["accepted".to_string()]),
        "{answer}"
    );
    let (_, report) = run_now(&gw).await;
    assert_eq!(
        (count(&report, "triggered"), count(&report, "already_seen")),
        (0, 1),
        "{report}"
    );
    // Bounded: 100 × 50 ms for the spool's one delivery.
    for _ in 0..100 {
        if !oscar.accepted().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    gw.stop().await;
    assert_eq!(oscar.accepted().len(), 1, "{:?}", triggers(&oscar));
}
