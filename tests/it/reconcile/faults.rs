//! Faults: S3 down, 403, slow, truncated or garbled listings (through [`FaultProxy`]), and two
//! replicas sharing Redis reconciling at once.

use std::time::Duration;

use super::{
    moto::Moto,
    proxy::{Fault, FaultProxy},
    *,
};
use crate::{helpers::*, redis::server::RedisServer};

/// moto with `n` versions in a versioned bucket `b`, a proxy in front, and a gateway listing
/// through the proxy 10 versions per page.
async fn setup(n: usize) -> (Moto, FaultProxy, FakeOscar, TestGateway, tempfile::TempDir) {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("broken");
    bucket.create_bucket(true).await.unwrap();
    for i in 0..n {
        bucket
            .put_object(&format!("k{i:03}"), b"v".to_vec())
            .await
            .unwrap();
    }
    let proxy = FaultProxy::start(s3.port).await;
    let mut rc = reconcile_cfg(&proxy.url(), "broken", dir.path());
    rc.page_size = 10;
    let gw = TestGateway::start(gateway_cfg(&oscar, rc)).await;
    (s3, proxy, oscar, gw, dir)
}

fn s3_errors(metrics: &str, kind: &str) -> f64 {
    let name =
        format!(r#"dedup_gateway_reconcile_s3_errors_total{{service="plants",kind="{kind}"}}"#);
    metric_value(metrics, &name).unwrap_or(0.0)
}

/// S3 unreachable: the pass fails with a metric, the webhook path is untouched, and once S3 is
/// back the next pass triggers everything.
#[tokio::test]
async fn s3_down_then_back() {
    let (_s3, proxy, oscar, gw, _dir) = setup(15).await;
    proxy.set(Fault::Refuse, 0);
    let (status, report) = run_now(&gw).await;
    assert_eq!(
        (status, report["outcome"].as_str()),
        (200, Some("failed")),
        "{report}"
    );
    assert_eq!(count(&report, "triggered"), 0);
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unreachable"),
        "{report}"
    );
    // The presigned URL (its signature is a credential) never reaches a report or a log line.
    assert!(!report.to_string().contains("X-Amz-"), "{report}");
    assert!(s3_errors(&gw.metrics().await, "unreachable") >= 1.0);
    let (status, a) = gw
        .post(
            SVC,
            Some(GOOD_TOKEN),
            minio_put("broken", "elsewhere", Some("v-1")),
        )
        .await;
    assert_eq!(
        (status, verdicts(&a)),
        (200, vec!["forwarded".to_string()]),
        "the webhook path does not care"
    );
    proxy.set(Fault::None, 0);
    let (_, report) = run_now(&gw).await;
    assert_eq!(
        (report["outcome"].as_str(), count(&report, "triggered")),
        (Some("ok"), 15),
        "{report}"
    );
    assert!(triggers(&oscar).values().all(|n| *n == 1));
    gw.stop().await;
}

/// A listing that fails on its second page — 403, slow, cut off, garbled — triggers the
/// complete first page and nothing of the broken one; the next pass finishes the rest.
#[tokio::test]
async fn a_broken_page_triggers_nothing_of_itself() {
    let (_s3, proxy, oscar, gw, _dir) = setup(30).await;
    let mut expected_total = 0;
    for (fault, kind) in [
        (Fault::Forbidden, "forbidden"),
        (Fault::Slow, "timeout"),
        (Fault::Truncate, "garbled"),
        (Fault::Garble, "garbled"),
    ] {
        let before = s3_errors(&gw.metrics().await, kind);
        proxy.set(fault, 1);
        let (_, report) = run_now(&gw).await;
        assert_eq!(report["outcome"], "failed", "{fault:?}: {report}");
        // Page 1 was complete; page 2 broke. Only page 1's new versions were triggered.
        let triggered = count(&report, "triggered");
        assert!(triggered <= 10, "{fault:?}: {report}");
        expected_total += triggered;
        assert_eq!(oscar.accepted().len() as u64, expected_total, "{fault:?}");
        assert_eq!(
            s3_errors(&gw.metrics().await, kind),
            before + 1.0,
            "{fault:?}"
        );
    }
    assert_eq!(expected_total, 10, "the first page once, never again");
    proxy.set(Fault::None, 0);
    let (_, report) = run_now(&gw).await;
    assert_eq!(
        (count(&report, "triggered"), count(&report, "already_seen")),
        (20, 10),
        "{report}"
    );
    let seen = triggers(&oscar);
    assert_eq!(seen.len(), 30);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    gw.stop().await;
}

/// Two replicas on one Redis reconcile at the same time: with the lease only one lists; with a
/// lease too short to matter both list, and the store's claims still trigger each version once.
#[tokio::test]
async fn two_replicas_on_redis_trigger_each_version_once() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let redis = RedisServer::start().await;
    let bucket = s3.client("shared");
    bucket.create_bucket(true).await.unwrap();
    for i in 0..60 {
        bucket
            .put_object(&format!("s{i:02}"), b"v".to_vec())
            .await
            .unwrap();
    }
    let replica = |lease: Duration| {
        let mut rc = reconcile_cfg(&s3.url(), "shared", dir.path());
        rc.lease = lease;
        rc.page_size = 7;
        let mut cfg = gateway_cfg(&oscar, rc);
        cfg.dedup.backend = dedup_gateway::config::StoreBackend::Redis;
        cfg.dedup.hash_secret = "replicas-share-this-secret-0123456789".into();
        cfg.dedup.redis.url = redis.url();
        cfg
    };
    let a = TestGateway::start(replica(Duration::from_secs(60))).await;
    let b = TestGateway::start(replica(Duration::from_secs(60))).await;
    let ((sa, ra), (sb, rb)) = tokio::join!(run_now(&a), run_now(&b));
    let triggered = count(&ra, "triggered") + count(&rb, "triggered");
    assert_eq!(triggered, 60, "{ra} {rb}");
    assert!(
        sa == 409 || sb == 409 || count(&ra, "already_seen") + count(&rb, "already_seen") == 60,
        "{ra} {rb}"
    );
    a.stop().await;
    b.stop().await;
    for i in 0..60 {
        bucket
            .put_object(&format!("s{i:02}"), b"w".to_vec())
            .await
            .unwrap();
    }
    let a = TestGateway::start(replica(Duration::from_millis(1))).await;
    let b = TestGateway::start(replica(Duration::from_millis(1))).await;
    let ((_, ra), (_, rb)) = tokio::join!(run_now(&a), run_now(&b));
    assert_eq!(
        count(&ra, "triggered") + count(&rb, "triggered"),
        60,
        "{ra} {rb}"
    );
    let seen = triggers(&oscar);
    assert_eq!(seen.len(), 120);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    a.stop().await;
    b.stop().await;
}
