//! Replication health: the source bucket is listed next to the replica; what never arrived is
//! reported (metrics, `GET /admin/reconcile`), not triggered.

use super::{
    moto::Moto,
    proxy::{Fault, FaultProxy},
    *,
};
use crate::helpers::*;

/// moto does not replicate, so the "replica" is filled by hand with part of the source: the
/// versions it lacks are reported missing, the ones it has are triggered as usual. Unversioned
/// buckets, matched by key and ETag (moto cannot give two buckets the same version ids, which
/// MinIO replication does).
#[tokio::test]
async fn versions_missing_on_the_replica_are_reported_not_triggered() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let (src, dst) = (s3.client("source"), s3.client("replica"));
    src.create_bucket(false).await.unwrap();
    dst.create_bucket(false).await.unwrap();
    for i in 0..5 {
        src.put_object(&format!("r{i}"), vec![b'0' + i])
            .await
            .unwrap();
        if i < 3 {
            dst.put_object(&format!("r{i}"), vec![b'0' + i])
                .await
                .unwrap();
        }
    }
    let mut rc = reconcile_cfg(&s3.url(), "replica", dir.path());
    rc.versioned = false;
    let mut source = rc.s3();
    source.bucket = "source".into();
    rc.source = Some(source);
    let gw = TestGateway::start(gateway_cfg(&oscar, rc)).await;
    let (_, report) = run_now(&gw).await;
    assert_eq!(count(&report, "triggered"), 3, "{report}");
    let health = &report["replication"];
    assert_eq!(
        (
            count(health, "checked"),
            count(health, "missing"),
            count(health, "failed")
        ),
        (5, 2, 0),
        "{report}"
    );
    let missing: Vec<&str> = health["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["r3", "r4"]);
    assert!(
        triggers(&oscar)
            .keys()
            .all(|(k, _, _)| k != "r3" && k != "r4"),
        "missing versions are not triggered"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"dedup_gateway_reconcile_replication_missing{service="plants"} 2"#),
        "{m}"
    );
    let last = gw
        .client
        .get(gw.url("/admin/reconcile"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let last: Value = last.json().await.unwrap();
    assert_eq!(last["services"][SVC]["replication"]["missing"], 2);
    gw.stop().await;
}

/// A FAILED replication status: moto cannot produce one (it stores a replication configuration
/// but never replicates, and `x-amz-replication-status` is not a header a PUT can set there), so
/// the source is read through the fault proxy, which adds the header MinIO sends on a HEAD of a
/// version whose replication failed. Listings and objects are moto's. The versions are counted
/// as failed, not missing, and still not triggered.
#[tokio::test]
async fn a_failed_replication_status_is_counted_as_failed() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let (src, dst) = (s3.client("source"), s3.client("replica"));
    src.create_bucket(false).await.unwrap();
    dst.create_bucket(false).await.unwrap();
    for i in 0..4 {
        src.put_object(&format!("f{i}"), vec![b'0' + i])
            .await
            .unwrap();
        if i < 2 {
            dst.put_object(&format!("f{i}"), vec![b'0' + i])
                .await
                .unwrap();
        }
    }
    let proxy = FaultProxy::start(s3.port).await;
    proxy.set(Fault::ReplicationFailed, 0);
    let mut rc = reconcile_cfg(&s3.url(), "replica", dir.path());
    rc.versioned = false;
    let mut source = rc.s3();
    source.bucket = "source".into();
    source.endpoint = proxy.url();
    rc.source = Some(source);
    let gw = TestGateway::start(gateway_cfg(&oscar, rc)).await;
    let (_, report) = run_now(&gw).await;
    let health = &report["replication"];
    assert_eq!(
        (
            count(health, "checked"),
            count(health, "missing"),
            count(health, "failed")
        ),
        (4, 0, 2),
        "{report}"
    );
    assert_eq!(count(&report, "triggered"), 2, "{report}");
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"dedup_gateway_reconcile_replication_failed{service="plants"} 2"#),
        "{m}"
    );
    gw.stop().await;
}
