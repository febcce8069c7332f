//! Issue 13, spool mode on the memory store: items 1 (held copy dropped when the clean copy's
//! write is refused), 2 (a duplicate answered before the original is durable), 3 (a reservation
//! that lapses while its event is queued), 6 (a full memory store taken for "store down" at
//! restore) and 12 (a delivery cut off by a graceful shutdown).

use std::time::Duration;

use super::{delivered, key_of, metric_of, quiet};
use crate::{
    crash::Bin,
    hardening::GateOscar,
    helpers::*,
    spool::{pending_event, put_event, spool_config},
};

/// Item 1 (spool): a held record's grace ends while a clean copy that preempted it waits for its
/// spool write, which is then refused (spool full). The held worker's claim finds the clean
/// copy's reservation still standing, takes it for a delivery and removes the held record; the
/// clean copy is answered 503 and released. A race between the clean copy's release and the
/// held copy's reserve, so the test tries it up to five times (each on a fresh gateway; a
/// group-commit delay lines both writes up in one commit). Shows: in some tries the acknowledged
/// held copy is never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item1_spool_held_copy_survives_a_refused_clean_copy() {
    let mut lost = 0;
    for round in 0..5 {
        let oscar = FakeOscar::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let env = [
            ("DEDUP_GATEWAY_SPOOL__MAX_ENTRIES", "1"),
            ("DEDUP_GATEWAY_SPOOL__GROUP_COMMIT_DELAY", "400ms"),
            ("DEDUP_GATEWAY_POLICY__PENDING_GRACE", "200ms"),
        ];
        let gw = Bin::start(tmp.path(), &oscar.url(), &env).await;
        let v = format!("i1-spool-{round}");
        let (status, a) = gw.post(GOOD_TOKEN, pending_event(&v, false)).await;
        assert_eq!(
            (status, verdicts(&a)),
            (202, vec!["held".to_string()]),
            "{a}"
        );
        let k = key_of(&a);
        // The clean copy preempts at once and waits 400 ms for its (refused) write; the held
        // copy's grace ends meanwhile and its owner update joins the same commit.
        let (status, a) = gw.post(GOOD_TOKEN, pending_event(&v, true)).await;
        assert_eq!(status, 503, "refused by the full spool: {a}");
        let ok = eventually(Duration::from_secs(4), || delivered(&oscar, &k) == 1).await;
        println!("item 1 spool, round {round}: held copy delivered: {ok}");
        lost += usize::from(!ok);
    }
    assert_eq!(
        lost, 0,
        "acknowledged held copies lost in {lost} of 5 rounds"
    );
}

/// Item 2: with the memory store a copy that meets a reservation whose spool write has not been
/// fsync'd yet is answered 200 `duplicate` at once. Contract §7: the original is already durable
/// when a duplicate is answered. A group-commit delay of 2 s keeps the original's write pending; a
/// kill -9 in that time leaves nothing on disk. Shows: the copy was acknowledged, and after the
/// restart the event is never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item2_duplicate_is_answered_only_once_the_original_is_durable() {
    let oscar = FakeOscar::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = [("DEDUP_GATEWAY_SPOOL__GROUP_COMMIT_DELAY", "2s")];
    let mut gw = Bin::start(tmp.path(), &oscar.url(), &env).await;
    let port = gw.port;
    let post = |client: reqwest::Client| async move {
        crate::crash::post_to(&client, port, GOOD_TOKEN, put_event("i2")).await
    };
    let original = tokio::spawn(post(gw.client.clone()));
    quiet(Duration::from_millis(300)).await;
    let copy = tokio::spawn(post(gw.client.clone()));
    quiet(Duration::from_millis(500)).await;
    assert!(
        !original.is_finished(),
        "the original still waits for its fsync"
    );
    gw.kill9();
    let copy = copy.await.unwrap();
    assert!(
        original.await.unwrap().is_err(),
        "the original got no answer"
    );
    let copy_acked = matches!(&copy, Ok((s, _)) if (200..300).contains(s));
    println!("item 2: the copy was answered {copy:?} before the original was durable");
    gw.set_env("DEDUP_GATEWAY_SPOOL__GROUP_COMMIT_DELAY", "0s");
    gw.restart().await;
    let delivered = eventually(Duration::from_secs(3), || !oscar.accepted().is_empty()).await;
    assert!(
        !copy_acked || delivered,
        "the copy was acknowledged ({copy:?}) but the event was never delivered"
    );
}

/// Item 3: in spool mode the reservation lease counts from acceptance and is never renewed. With
/// a short horizon (`delivery.max_age` 300 ms, `dedup.lease` 600 ms) and a slow OSCAR (400 ms per
/// event, one at a time) the last of six queued events outlives its reservation; a copy of it
/// arriving then is accepted again and both are delivered. Shows: the last identity reaches OSCAR
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item3_a_queued_event_keeps_its_reservation() {
    let oscar = FakeOscar::start().await;
    oscar.set_delay(Duration::from_millis(400));
    let mut cfg = spool_config(&oscar.url());
    cfg.delivery.concurrency = 1;
    cfg.delivery.connect_timeout = Duration::from_millis(200);
    cfg.delivery.request_timeout = Duration::from_millis(500);
    cfg.delivery.max_age = Duration::from_millis(300);
    cfg.delivery.retry_initial = Duration::from_millis(10);
    cfg.delivery.retry_max = Duration::from_millis(50);
    cfg.dedup.lease = Duration::from_millis(600);
    let gw = TestGateway::start(cfg).await;
    let mut last = String::new();
    for i in 0..6 {
        let (status, a) = gw
            .post("svc", Some(GOOD_TOKEN), put_event(&format!("i3-{i}")))
            .await;
        assert_eq!(status, 202, "{a}");
        last = key_of(&a);
    }
    // About 1 s later: the last one is still queued behind the slow deliveries.
    quiet(Duration::from_millis(1100)).await;
    assert_eq!(delivered(&oscar, &last), 0, "still queued");
    let (_, copy) = gw.post("svc", Some(GOOD_TOKEN), put_event("i3-5")).await;
    let all = eventually(Duration::from_secs(10), || oscar.accepted().len() >= 6).await;
    quiet(Duration::from_millis(1000)).await;
    gw.stop().await;
    assert!(all, "all six delivered");
    assert_eq!(
        delivered(&oscar, &last),
        1,
        "the copy ({copy}) met a lapsed reservation and was delivered again"
    );
}

/// Item 6: at restore, a memory store that is full of reservations (`StoreError::Full`) is taken
/// for "store down": with fail-open the remaining restored events are delivered unchecked, without
/// a reservation, while the request path fails open only on `Unavailable`. Twenty events are
/// spooled with room, then restored into a store bounded at 16: the last four go unchecked, and a
/// copy of one of them, arriving once a delivery freed room, is accepted again. Shows: that
/// identity reaches OSCAR twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item6_a_full_store_at_restore_is_not_store_down() {
    let tmp = tempfile::tempdir().unwrap();
    let down = FakeOscar::start().await;
    down.set_status(503);
    let mut cfg = spool_config(&down.url());
    cfg.dedup.on_store_error = dedup_gateway::config::OnStoreError::FailOpen;
    cfg.data_dir = tmp.path().to_path_buf();
    let (addr, stop, task) = spawn_gateway(cfg.clone(), Default::default()).await;
    let client = reqwest::Client::new();
    let mut last = String::new();
    for i in 0..20 {
        let (s, a) = crate::crash::post_to(
            &client,
            addr.port(),
            GOOD_TOKEN,
            put_event(&format!("i6-{i}")),
        )
        .await
        .unwrap();
        assert_eq!(s, 202, "{a}");
        last = key_of(&a);
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;

    let gate = GateOscar::start().await;
    cfg.upstream = gate.url();
    cfg.dedup.max_entries = 16;
    cfg.delivery.concurrency = 1;
    let (addr, stop, task) = spawn_gateway(cfg, Default::default()).await;
    assert!(eventually(Duration::from_secs(5), || gate.arrived() == 1).await);
    gate.open_one();
    assert!(eventually(Duration::from_secs(5), || gate.answered().len() == 1).await);
    quiet(Duration::from_millis(100)).await;
    let (_, copy) = crate::crash::post_to(&client, addr.port(), GOOD_TOKEN, put_event("i6-19"))
        .await
        .unwrap();
    gate.open();
    assert!(eventually(Duration::from_secs(10), || gate.answered().len() >= 20).await);
    quiet(Duration::from_millis(500)).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    // Twenty events, one delivery each; a 21st is the copy delivered next to its restored original.
    assert_eq!(
        gate.arrived(),
        20,
        "the restored event {last} and its copy ({copy}) were both delivered"
    );
}

/// Item 12: a graceful stop waits `http.shutdown_grace` for running deliveries, however long
/// `delivery.request_timeout` allows one to take; a delivery cut off then has reached OSCAR, but
/// its outcome is never written, so it is delivered again after the restart — a repeat outside
/// the one-fsync window, without any crash. Here the grace is 1 s, OSCAR answers after 2.5 s
/// (within the 5 s request timeout). Shows: OSCAR receives the event twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item12_a_graceful_stop_does_not_cut_off_a_delivery() {
    let gate = GateOscar::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("DEDUP_GATEWAY_HTTP__SHUTDOWN_GRACE", "1s"),
        ("DEDUP_GATEWAY_DELIVERY__REQUEST_TIMEOUT", "5s"),
    ];
    let mut gw = Bin::start(tmp.path(), &gate.url(), &env).await;
    let (status, a) = gw.post(GOOD_TOKEN, put_event("i12")).await;
    assert_eq!(status, 202, "{a}");
    assert!(eventually(Duration::from_secs(5), || gate.arrived() == 1).await);
    let opener = {
        let gate = gate.clone();
        tokio::spawn(async move {
            quiet(Duration::from_millis(2500)).await;
            gate.open();
        })
    };
    assert!(
        gw.terminate(Duration::from_secs(15)).await,
        "the gateway stops"
    );
    opener.await.unwrap();
    gw.restart().await;
    quiet(Duration::from_millis(1500)).await;
    assert_eq!(metric_of(&gw, "dedup_gateway_spool_depth").await, 0.0);
    assert_eq!(
        gate.arrived(),
        1,
        "the cut-off delivery was sent again after the restart"
    );
}
