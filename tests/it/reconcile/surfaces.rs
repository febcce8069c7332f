//! The surfaces around a pass: the command's code path (dry run, then for real), the background
//! loop and the admin routes.

use std::time::Duration;

use super::{moto::Moto, *};
use crate::helpers::*;

/// `reconcile --dry-run` (the command's code path, in process): lines for what would be
/// triggered, nothing claimed or sent; the real run then triggers exactly those, and a dry run
/// after it finds nothing (the spool restored the delivered identities).
#[tokio::test]
async fn dry_run_triggers_nothing_and_the_command_triggers_once() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("dry");
    bucket.create_bucket(true).await.unwrap();
    for i in 0..5 {
        bucket
            .put_object(&format!("d{i}"), b"z".to_vec())
            .await
            .unwrap();
    }
    let mut cfg = gateway_cfg(&oscar, reconcile_cfg(&s3.url(), "dry", dir.path()));
    cfg.mode = dedup_gateway::config::Mode::Spool;
    cfg.data_dir = dir.path().join("data");
    let run = |dry: bool| {
        let cfg = cfg.clone();
        async move {
            let mut out = Vec::new();
            let r = dedup_gateway::reconcile::oneshot::run(cfg, SVC, dry, &mut out)
                .await
                .expect("pass runs");
            let lines: Vec<serde_json::Value> = String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (r, lines)
        }
    };
    let (r, lines) = run(true).await;
    assert_eq!((r.outcome.as_str(), r.triggered), ("ok", 5));
    assert_eq!(lines.len(), 6, "5 versions and the summary");
    assert!(
        lines[..5].iter().all(|l| l["verdict"] == "would-trigger"),
        "{lines:?}"
    );
    assert_eq!(lines[5]["summary"]["triggered"], 5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(oscar.received().is_empty(), "a dry run sends nothing");
    let (r, lines) = run(false).await;
    assert_eq!(r.triggered, 5);
    assert!(
        lines[..5].iter().all(|l| l["verdict"] == "accepted"),
        "{lines:?}"
    );
    assert!(eventually(Duration::from_secs(10), || oscar.accepted().len() == 5).await);
    let (r, lines) = run(true).await;
    assert_eq!((r.triggered, r.already_seen, lines.len()), (0, 5, 1));
    assert_eq!(oscar.accepted().len(), 5);
}

/// The background loop runs passes on its own; `GET /admin/reconcile` shows the last one, and
/// the admin token rule of the DLQ routes applies.
#[tokio::test]
async fn background_loop_and_admin_routes() {
    let (s3, oscar, dir) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("loop");
    bucket.create_bucket(true).await.unwrap();
    bucket.put_object("a", b"1".to_vec()).await.unwrap();
    let mut rc = reconcile_cfg(&s3.url(), "loop", dir.path());
    rc.interval = Duration::from_secs(1);
    let gw = TestGateway::start(gateway_cfg(&oscar, rc)).await;
    assert!(
        eventually(Duration::from_secs(20), || oscar.accepted().len() == 1).await,
        "the loop triggered the lost version"
    );
    let last = || async {
        let r = gw
            .client
            .get(gw.url("/admin/reconcile"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        r.json::<serde_json::Value>().await.unwrap()
    };
    let mut report = serde_json::Value::Null;
    for _ in 0..100 {
        report = last().await["services"][SVC].clone();
        if report["outcome"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(report["outcome"], "ok", "{report}");
    assert!(
        report["started"].is_string() && report["finished"].is_string(),
        "{report}"
    );
    for field in ["listed", "already_seen", "triggered", "errors"] {
        assert!(report[field].is_u64(), "{field}: {report}");
    }
    let unauth = gw
        .client
        .get(gw.url("/admin/reconcile"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    let unknown = gw
        .client
        .post(gw.url("/admin/reconcile/nope"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"dedup_gateway_reconcile_passes_total{service="plants",outcome="ok"}"#),
        "{m}"
    );
    assert_eq!(
        oscar.accepted().len(),
        1,
        "later passes found it already seen"
    );
    gw.stop().await;
}
