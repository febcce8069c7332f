//! Spool mode's delivery: an accepted (202) event is delivered exactly once however long OSCAR
//! fails, with growing backoff; a full spool or a failing disk answers 503 + Retry-After and
//! loses nothing; concurrent requests share their fsyncs. (Dead letters are in `dlq`, restarts
//! in `restart`.)

use std::{sync::Arc, time::Duration};

use dedup_gateway::spool::FaultSwitch;
use tempfile::TempDir;
use tokio::net::TcpListener;

// Kept for `crash` and `redis::spool`, which import the spool harness from here.
use crate::helpers::*;
pub(crate) use crate::helpers::{SpoolGw, deliveries, pending_event, put_event, spool_config};

/// OSCAR refuses connections, then answers 503, then 201: every accepted event arrives exactly
/// once, a copy sent meanwhile is a duplicate, and the spacing between attempts grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oscar_down_then_failing_then_up_delivers_each_once_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    // A port with nothing listening: connection refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = spool_config(&format!("http://{addr}"));
    cfg.delivery.retry_max = Duration::from_secs(5);
    let gw = SpoolGw::start(dir.path(), cfg, None).await;
    let mut keys = Vec::new();
    for i in 0..5 {
        let p = gw.post_event(put_event(&format!("down-{i}"))).await;
        p.assert(202, &["accepted"]);
        keys.push(p.key());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let oscar = FakeOscar::start_on(TcpListener::bind(addr).await.unwrap()).await;
    oscar.set_status(503);
    // A copy arriving during the retries is a duplicate: the original is durable.
    gw.post_event(put_event("down-0"))
        .await
        .assert(200, &["duplicate"]);
    let first = keys[0].clone();
    wait_for(
        "four 503 attempts of one event",
        Duration::from_secs(20),
        || received_for(&oscar, &first).len() >= 4,
    )
    .await;
    let times: Vec<_> = received_for(&oscar, &first).iter().map(|r| r.at).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Equal jitter keeps retry n+2 above retry n: delays grow while the upstream keeps failing.
    assert!(gaps[2] > gaps[0], "backoff must grow: {gaps:?}");
    oscar.set_status(201);
    wait_for("all five delivered", Duration::from_secs(20), || {
        deliveries(&oscar).len() == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_each_delivered_once(&oscar, &keys);
    let m = gw.metrics().await;
    assert!(
        metric(&m, "dedup_gateway_delivery_retries_total") >= 4.0,
        "{m}"
    );
    assert!(
        m.contains("dedup_gateway_spool_fsync_batch_size_bucket"),
        "{m}"
    );
    gw.assert_drained().await;
    gw.stop().await;
}

/// Every one of `keys` reached OSCAR exactly once.
#[track_caller]
fn assert_each_delivered_once(oscar: &FakeOscar, keys: &[String]) {
    let d = deliveries(oscar);
    for k in keys {
        assert_eq!(d.get(k), Some(&1), "{k} delivered exactly once: {d:?}");
    }
}

/// A full spool answers 503 with Retry-After (and /readyz turns 503); once deliveries drain it,
/// events are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_answers_503_until_drained() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let mut cfg = spool_config(&oscar.url());
    cfg.spool.max_entries = 2;
    let gw = SpoolGw::start(dir.path(), cfg, None).await;
    for i in 0..2 {
        gw.post_event(put_event(&format!("full-{i}")))
            .await
            .assert_status(202);
    }
    let p = gw.post_event(put_event("full-2")).await;
    p.assert_status(503);
    assert!(p.retry_after.is_some(), "503 carries Retry-After");
    p.assert_reason("spool-full");
    assert_eq!(gw.status_of("/readyz").await, 503);
    // The refused event's identity was released: it is not a duplicate later.
    oscar.set_status(201);
    wait_for("drained", Duration::from_secs(10), || {
        oscar.accepted().len() == 2
    })
    .await;
    let again = retry(
        100,
        Duration::from_millis(50),
        async || gw.post_event(put_event("full-2")).await,
        |p| p.status == 202,
    )
    .await;
    assert_eq!(again.status, 202, "accepted again once drained");
    again.assert_verdicts(&["accepted"]);
    wait_for("third delivered", Duration::from_secs(10), || {
        oscar.accepted().len() == 3
    })
    .await;
    assert_eq!(gw.status_of("/readyz").await, 200);
    assert!(gw.metric("dedup_gateway_spool_rejected_full_total").await >= 1.0);
    gw.stop().await;
}

/// A spool-mode gateway on a kept temp dir with a disk-fault switch (off), in front of an OSCAR
/// answering 503.
async fn failing_oscar_and_disk_faults() -> (TempDir, FakeOscar, FaultSwitch, SpoolGw) {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    oscar.set_status(503);
    let faults = FaultSwitch::new();
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), Some(faults.clone())).await;
    (dir, oscar, faults, gw)
}

/// Injected disk failures: writes fail → 503 + Retry-After and /readyz 503; nothing acknowledged
/// is lost, and once the disk recovers everything is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_write_failure_answers_503_and_loses_nothing() {
    let (dir, oscar, faults, gw) = failing_oscar_and_disk_faults().await;
    let mut keys = Vec::new();
    for i in 0..3 {
        let p = gw.post_event(put_event(&format!("disk-{i}"))).await;
        p.assert_status(202);
        keys.push(p.key());
    }
    faults.fail_writes(true);
    let p = gw.post_event(put_event("disk-3")).await;
    p.assert_status(503).assert_reason("spool-write-failed");
    assert!(p.retry_after.is_some());
    assert_eq!(gw.status_of("/readyz").await, 503);
    // Deliveries succeed meanwhile, but their outcome cannot be written yet.
    oscar.set_status(201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    faults.fail_writes(false);
    assert!(
        gw.ready_within_5s().await,
        "ready again once the disk recovers"
    );
    // MinIO's retry of the refused event is accepted.
    let p = gw.post_event(put_event("disk-3")).await;
    p.assert_status(202);
    keys.push(p.key());
    wait_for("all four delivered", Duration::from_secs(10), || {
        deliveries(&oscar).len() == 4
    })
    .await;
    assert_each_delivered_once(&oscar, &keys);
    assert!(gw.metric("dedup_gateway_spool_write_errors_total").await >= 1.0);
    gw.stop().await;
    // After a restart nothing is delivered again: every outcome reached the disk.
    let gw = SpoolGw::start(dir.path(), spool_config(&oscar.url()), None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(oscar.accepted().len(), 4);
    gw.stop().await;
}

/// After a disk error only the writer reopens the database. Once the disk recovers, an event
/// already spooled must still be delivered when nothing else writes: no new request, no
/// `/readyz` probe (which would reopen it as a side effect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_event_is_delivered_after_a_disk_error_without_new_traffic() {
    let (_dir, oscar, faults, gw) = failing_oscar_and_disk_faults().await;
    gw.post_event(put_event("quiet-1")).await.assert_status(202);
    faults.fail_writes(true);
    gw.post_event(put_event("quiet-2")).await.assert_status(503);
    faults.fail_writes(false);
    oscar.set_status(201);
    wait_for(
        "the spooled event delivered once the disk recovered",
        Duration::from_secs(10),
        || oscar.accepted().len() == 1,
    )
    .await;
    gw.assert_drained().await;
    gw.stop().await;
}

/// Concurrent requests share fsyncs: with many in flight at once, some commits carry several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let oscar = FakeOscar::start().await;
    let gw = Arc::new(SpoolGw::start(dir.path(), spool_config(&oscar.url()), None).await);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            gw.post_event(put_event(&format!("gc-{i}"))).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 202);
    }
    wait_for("all delivered", Duration::from_secs(20), || {
        oscar.accepted().len() == 200
    })
    .await;
    let m = gw.metrics().await;
    let commits = metric(&m, "dedup_gateway_spool_fsync_batch_size_count");
    let ops = metric(&m, "dedup_gateway_spool_fsync_batch_size_sum");
    let fsync_s = metric(&m, "dedup_gateway_spool_fsync_duration_seconds_sum");
    println!(
        "group commit: {ops} ops in {commits} commits, mean commit {:.2} ms",
        fsync_s * 1000.0 / commits
    );
    assert!(commits > 0.0 && ops >= 200.0, "{m}");
    assert!(commits < ops, "some commits carried several operations");
    Arc::try_unwrap(gw).ok().expect("sole owner").stop().await;
}
