//! The issue's scenarios on a healthy S3: announced vs lost events, keys, classes, the window and
//! unversioned buckets.

use std::time::Duration;

use super::{moto::Moto, *};
use crate::helpers::*;

/// 200 versions, 50 announced by webhook: a pass triggers exactly the other 150, and OSCAR sees
/// every version exactly once. A second pass triggers nothing; an event after it is `duplicate`.
#[tokio::test]
async fn two_hundred_versions_fifty_announced_exactly_150_triggered() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("versioned");
    bucket.create_bucket(true).await.unwrap();
    let mut versions = Vec::new();
    for i in 0..100 {
        for round in 0..2 {
            let key = format!("in/obj-{i:03}.csv");
            let v = bucket
                .put_object(&key, format!("{i}-{round}").into_bytes())
                .await
                .unwrap();
            versions.push((key, v.expect("versioned bucket gives a version id")));
        }
    }
    let gw = TestGateway::start(gateway_cfg(
        &oscar,
        reconcile_cfg(&s3.url(), "versioned", dir.path()),
    ))
    .await;
    for (key, v) in versions.iter().step_by(4) {
        let enc = key.replace('/', "%2F");
        let (status, answer) = gw
            .post(SVC, Some(GOOD_TOKEN), minio_put("versioned", &enc, Some(v)))
            .await;
        assert_eq!(
            (status, verdicts(&answer)),
            (200, vec!["forwarded".to_string()])
        );
    }
    let (status, report) = run_now(&gw).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["outcome"], "ok", "{report}");
    assert_eq!(count(&report, "listed"), 200);
    assert_eq!(count(&report, "triggered"), 150, "{report}");
    assert_eq!(count(&report, "already_seen"), 50, "{report}");
    let seen = triggers(&oscar);
    assert_eq!(seen.len(), 200, "every version reached OSCAR");
    assert!(seen.values().all(|n| *n == 1), "no version twice: {seen:?}");
    let from_pass = oscar
        .accepted()
        .iter()
        .filter(|r| {
            String::from_utf8_lossy(&r.body).contains(dedup_gateway::reconcile::body::MARKER)
        })
        .count();
    assert_eq!(from_pass, 150, "the reconciled bodies carry the marker");
    // Again: nothing new.
    let (_, again) = run_now(&gw).await;
    assert_eq!(
        (count(&again, "triggered"), count(&again, "already_seen")),
        (0, 200),
        "{again}"
    );
    // A real event for a reconciled version arrives late: duplicate.
    let (key, v) = &versions[1];
    let (status, answer) = gw
        .post(
            SVC,
            Some(GOOD_TOKEN),
            minio_put("versioned", &key.replace('/', "%2F"), Some(v)),
        )
        .await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["duplicate".to_string()])
    );
    assert_eq!(oscar.accepted().len(), 200);
    let m = gw.metrics().await;
    assert!(
        m.contains(
            r#"dedup_gateway_reconcile_versions_total{service="plants",result="triggered"} 150"#
        ),
        "{m}"
    );
    gw.stop().await;
}

/// Keys with spaces, `+`, unicode and `%`: the listing's decoded name, re-encoded, gives the
/// identity MinIO's own encoding gives (the fixture's key is a real MinIO encoding).
#[tokio::test]
async fn special_keys_have_the_identity_of_their_minio_event() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("keys");
    bucket.create_bucket(true).await.unwrap();
    // (name, MinIO's url.QueryEscape of it)
    let names = [
        (
            "input/my photos/señal ü+ß 2025.jpg",
            "input%2Fmy+photos%2Fse%C3%B1al+%C3%BC%2B%C3%9F+2025.jpg",
        ),
        ("100% sure+ok.txt", "100%25+sure%2Bok.txt"),
        (
            "日本 語/a%2Fb.bin",
            "%E6%97%A5%E6%9C%AC+%E8%AA%9E%2Fa%252Fb.bin",
        ),
    ];
    let gw = TestGateway::start(gateway_cfg(
        &oscar,
        reconcile_cfg(&s3.url(), "keys", dir.path()),
    ))
    .await;
    for (name, encoded) in names {
        let v = bucket
            .put_object(name, b"x".to_vec())
            .await
            .unwrap()
            .unwrap();
        let (_, a) = gw
            .post(SVC, Some(GOOD_TOKEN), minio_put("keys", encoded, Some(&v)))
            .await;
        assert_eq!(verdicts(&a), vec!["forwarded".to_string()], "{name}");
        // A second, unannounced version of the same name.
        bucket.put_object(name, b"y".to_vec()).await.unwrap();
    }
    let (_, report) = run_now(&gw).await;
    assert_eq!(
        (count(&report, "triggered"), count(&report, "already_seen")),
        (3, 3),
        "{report}"
    );
    let seen = triggers(&oscar);
    assert_eq!(seen.len(), 6);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    for (name, _) in names {
        assert_eq!(
            seen.keys().filter(|(k, _, _)| k == name).count(),
            2,
            "{name}"
        );
    }
    gw.stop().await;
}

/// Unversioned bucket: ListObjectsV2, the ETag as the version; an overwrite is a new version.
#[tokio::test]
async fn unversioned_bucket_uses_the_etag_as_version() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("plain");
    bucket.create_bucket(false).await.unwrap();
    for i in 0..3 {
        assert_eq!(
            bucket
                .put_object(&format!("f{i}"), vec![b'a' + i])
                .await
                .unwrap(),
            None
        );
    }
    let mut rc = reconcile_cfg(&s3.url(), "plain", dir.path());
    rc.versioned = false;
    rc.page_size = 2; // pagination by continuation token
    let gw = TestGateway::start(gateway_cfg(&oscar, rc)).await;
    let (_, report) = run_now(&gw).await;
    assert_eq!(
        (count(&report, "triggered"), count(&report, "pages")),
        (3, 2),
        "{report}"
    );
    for r in oscar.accepted() {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let obj = &v["Records"][0]["s3"]["object"];
        assert!(
            obj.get("versionId").is_none() && obj["eTag"].is_string(),
            "{obj}"
        );
    }
    bucket.put_object("f1", b"changed".to_vec()).await.unwrap();
    let (_, again) = run_now(&gw).await;
    assert_eq!(
        (count(&again, "triggered"), count(&again, "already_seen")),
        (1, 2),
        "{again}"
    );
    assert!(triggers(&oscar).values().all(|n| *n == 1));
    gw.stop().await;
}

/// Delete markers become `s3:ObjectRemoved:DeleteMarkerCreated` triggers only with `removed`;
/// the real event of that marker is then a duplicate.
#[tokio::test]
async fn delete_markers_are_triggered_when_removed_is_enabled() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("deletes");
    bucket.create_bucket(true).await.unwrap();
    bucket.put_object("gone.txt", b"1".to_vec()).await.unwrap();
    let marker = bucket
        .delete_object("gone.txt")
        .await
        .unwrap()
        .expect("marker version");
    let only_available = reconcile_cfg(&s3.url(), "deletes", dir.path());
    let gw = TestGateway::start(gateway_cfg(&oscar, only_available.clone())).await;
    let (_, report) = run_now(&gw).await;
    assert_eq!(
        (count(&report, "listed"), count(&report, "triggered")),
        (2, 1),
        "{report}"
    );
    gw.stop().await;
    let oscar2 = FakeOscar::start().await;
    let gw = TestGateway::start(gateway_cfg(&oscar2, with_removed(only_available))).await;
    let (_, report) = run_now(&gw).await;
    assert_eq!(count(&report, "triggered"), 2, "{report}");
    let names: Vec<String> = triggers(&oscar2).into_keys().map(|(_, _, n)| n).collect();
    assert!(
        names.contains(&"s3:ObjectRemoved:DeleteMarkerCreated".to_string()),
        "{names:?}"
    );
    let mut ev: serde_json::Value =
        serde_json::from_slice(&fixture("delete-marker-created.json")).unwrap();
    ev["Records"][0]["s3"]["bucket"]["name"] = "deletes".into();
    ev["Records"][0]["s3"]["object"]["key"] = "gone.txt".into();
    ev["Records"][0]["s3"]["object"]["versionId"] = marker.into();
    let (_, a) = gw
        .post(SVC, Some(GOOD_TOKEN), serde_json::to_vec(&ev).unwrap())
        .await;
    assert_eq!(verdicts(&a), vec!["duplicate".to_string()]);
    gw.stop().await;
}

/// The window: a version younger than `settle` is left to the event path, and one older than
/// `dedup.ttl - margin` is never triggered (its identity may have expired).
#[tokio::test]
async fn versions_outside_the_window_are_never_triggered() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("window");
    bucket.create_bucket(true).await.unwrap();
    bucket.put_object("old.txt", b"old".to_vec()).await.unwrap();
    let mut rc = reconcile_cfg(&s3.url(), "window", dir.path());
    rc.margin = Duration::from_secs(2);
    rc.interval = Duration::from_secs(1);
    let mut cfg = gateway_cfg(&oscar, rc.clone());
    cfg.dedup.ttl = Duration::from_secs(5);
    // LastModified has whole seconds: after 4.5 s "old" is surely past ttl - margin = 3 s.
    // (The gateway starts only now: its background loop, every second, would have triggered
    // "old" while it was still inside the window.)
    tokio::time::sleep(Duration::from_millis(4500)).await;
    bucket.put_object("new.txt", b"new".to_vec()).await.unwrap();
    let gw = TestGateway::start(cfg).await;
    let (_, report) = run_now(&gw).await;
    assert_eq!(
        (count(&report, "too_old"), count(&report, "triggered")),
        (1, 1),
        "{report}"
    );
    assert!(triggers(&oscar).keys().all(|(k, _, _)| k == "new.txt"));
    gw.stop().await;
    // A long settle: the fresh versions are left to the event path.
    let oscar2 = FakeOscar::start().await;
    rc.settle = Duration::from_secs(600);
    rc.interval = Duration::from_secs(600);
    rc.margin = Duration::from_secs(3600);
    let gw = TestGateway::start(gateway_cfg(&oscar2, rc)).await;
    let (_, report) = run_now(&gw).await;
    assert_eq!(
        (count(&report, "too_young"), count(&report, "triggered")),
        (2, 0),
        "{report}"
    );
    assert!(oscar2.received().is_empty());
    gw.stop().await;
}
