//! Issue 3: crash safety of spool mode with the real binary and `kill -9`.
//!
//! A client sends a few thousand events (every one twice) like MinIO with `queue_dir` does: it
//! retries until it gets a 2xx. Meanwhile the test SIGKILLs the gateway at random moments, at
//! least 20 times, and restarts it on the same data directory. In the end every acknowledged event
//! must have reached the fake OSCAR (0 lost), and each identity at most once — except the one
//! window the contract allows: OSCAR took the event but the kill came before the record of it was
//! fsync'd. With `delivery.concurrency = 1` at most one delivery is in that window per kill, so
//! extra deliveries ≤ kills; the test prints how many there were.

use std::{
    collections::{HashMap, HashSet},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, seq::SliceRandom};

use crate::{helpers::*, spool::put_event};

const EVENTS: usize = 1500;
const KILLS: usize = 22;
const CLIENTS: usize = 16;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_gateway(dir: &std::path::Path, upstream: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dedup-gateway"))
        .arg("serve")
        .env("DEDUP_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("DEDUP_GATEWAY_UPSTREAM", upstream)
        .env("DEDUP_GATEWAY_MODE", "spool")
        .env("DEDUP_GATEWAY_DATA_DIR", dir)
        .env("DEDUP_GATEWAY_DELIVERY__CONCURRENCY", "1")
        .env("DEDUP_GATEWAY_DELIVERY__RETRY_INITIAL", "20ms")
        .env("DEDUP_GATEWAY_DELIVERY__RETRY_MAX", "200ms")
        .env("DEDUP_GATEWAY_DELIVERY__MAX_ATTEMPTS", "1000")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway")
}

/// Waits (bounded) until the gateway on `port` answers `/healthz`.
pub(crate) async fn wait_up(client: &reqwest::Client, port: u16) -> bool {
    for _ in 0..400 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// kill -9, at least 20 times, while a client sends thousands of events: nothing acknowledged is
/// lost, and duplicates stay within one per kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_event() {
    let started = Instant::now();
    let oscar = FakeOscar::start().await;
    let tmp = tempfile::tempdir().unwrap();
    // Not created beforehand: the gateway creates its data directory.
    let dir = tmp.path().join("data");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let port = Arc::new(AtomicU16::new(free_port()));
    let mut child = spawn_gateway(&dir, &oscar.url(), port.load(Ordering::SeqCst));
    assert!(
        wait_up(&client, port.load(Ordering::SeqCst)).await,
        "gateway did not come up"
    );

    // Every event twice, in random order.
    let mut sends: Vec<usize> = (0..EVENTS).chain(0..EVENTS).collect();
    sends.shuffle(&mut rand::rng());
    let sends = Arc::new(Mutex::new(sends));
    // Identity (dedup key) of every acknowledged event.
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (sends, acked, port, client) =
            (sends.clone(), acked.clone(), port.clone(), client.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let Some(i) = sends.lock().unwrap().pop() else {
                    break;
                };
                let body = put_event(&format!("crash-{i}"));
                // Like MinIO with queue_dir: retry until a 2xx, bounded by the deadline.
                loop {
                    assert!(Instant::now() < deadline, "event {i} never acknowledged");
                    let url = format!("http://127.0.0.1:{}/job/svc", port.load(Ordering::SeqCst));
                    let resp = client
                        .post(url)
                        .header("content-type", "application/json")
                        .header("authorization", GOOD_TOKEN)
                        .body(body.clone())
                        .send()
                        .await;
                    if let Ok(r) = resp
                        && r.status().is_success()
                        && let Ok(v) = r.json::<serde_json::Value>().await
                    {
                        let verdict = v["results"][0]["verdict"]
                            .as_str()
                            .unwrap_or("?")
                            .to_string();
                        assert!(verdict == "accepted" || verdict == "duplicate", "{v}");
                        acked
                            .lock()
                            .unwrap()
                            .insert(v["results"][0]["key"].as_str().unwrap().to_string());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }

    // The killer: SIGKILL at random moments, restart on the same data dir and a fresh port.
    let mut kills = 0;
    while kills < KILLS {
        let pause = rand::rng().random_range(50..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        kills += 1;
        let p = free_port();
        child = spawn_gateway(&dir, &oscar.url(), p);
        assert!(
            wait_up(&client, p).await,
            "gateway did not come back after kill {kills}"
        );
        port.store(p, Ordering::SeqCst);
    }
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        EVENTS,
        "every event was acknowledged in the end"
    );

    // Every acknowledged identity reaches OSCAR (bounded wait).
    let delivered = |o: &FakeOscar| {
        let mut m: HashMap<String, usize> = HashMap::new();
        for r in o.accepted() {
            *m.entry(r.headers["x-dedup-key"].to_str().unwrap().to_string())
                .or_default() += 1;
        }
        m
    };
    let all_there = eventually(Duration::from_secs(60), || {
        let d = delivered(&oscar);
        acked.iter().all(|k| d.contains_key(k))
    })
    .await;
    let d = delivered(&oscar);
    let lost: Vec<_> = acked.iter().filter(|k| !d.contains_key(*k)).collect();
    let extra: usize = d.values().map(|n| n - 1).sum();
    println!(
        "crash test: {} events acknowledged, {} kills, {} lost, {} extra deliveries (identities delivered twice: {}), {:.1}s",
        acked.len(),
        kills,
        lost.len(),
        extra,
        d.values().filter(|n| **n > 1).count(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        all_there && lost.is_empty(),
        "acknowledged but never delivered: {lost:?}"
    );
    assert!(
        extra <= kills,
        "at most one extra delivery per kill: {extra} extra for {kills} kills"
    );
    assert_eq!(d.len(), EVENTS, "nothing unknown was delivered");

    // Every acknowledged event is now a duplicate, also after one more kill.
    child.kill().unwrap();
    child.wait().unwrap();
    let p = free_port();
    let mut child = spawn_gateway(&dir, &oscar.url(), p);
    assert!(wait_up(&client, p).await);
    for i in [0, EVENTS / 2, EVENTS - 1] {
        let r = client
            .post(format!("http://127.0.0.1:{p}/job/svc"))
            .header("content-type", "application/json")
            .header("authorization", GOOD_TOKEN)
            .body(put_event(&format!("crash-{i}")))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["results"][0]["verdict"], "duplicate", "{v}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
