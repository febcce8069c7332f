//! Three real gateway processes on one JetStream stream and one Redis: 500 distinct events, each
//! sent 3 times to random replicas while replicas are killed with SIGKILL and restarted; then a
//! replica killed for good with events in flight. Every acknowledged event must reach OSCAR; the
//! duplicates (the one-ack window: OSCAR had it, the commit had not happened) are counted and
//! bounded by one per kill (`delivery.concurrency = 1`).

use std::{
    collections::HashSet,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rand::Rng;

use super::NatsServer;
use crate::{
    helpers::*,
    redis::server::RedisServer,
    spool::{deliveries, put_event},
};

struct Replica {
    port: u16,
    config: std::path::PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn new(dir: &Path, n: usize, oscar: &str, nats: &str, redis: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join(format!("replica-{n}.toml"));
        let text = format!(
            r#"listen = "127.0.0.1:{port}"
upstream = "{oscar}"
data_dir = "{data}"
mode = "spool"
[delivery]
concurrency = 1
request_timeout = "1s"
retry_initial = "20ms"
retry_max = "200ms"
[dedup]
backend = "redis"
hash_secret = "replicas-test-secret-0123456789"
lease = "2s"
[dedup.redis]
url = "{redis}"
[spool]
backend = "jetstream"
[spool.jetstream]
urls = ["{nats}"]
ack_wait = "2s"
publish_timeout = "10s"
"#,
            data = dir.join(format!("data-{n}")).display(),
        );
        std::fs::write(&config, text).unwrap();
        Self {
            port,
            config,
            child: None,
        }
    }

    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_dedup-gateway"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the gateway binary");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no ack, no commit that was not already made.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls a replica's `/readyz` (at most 200 times, 50 ms apart).
async fn ready(client: &reqwest::Client, port: u16) -> bool {
    for _ in 0..200 {
        let url = format!("http://127.0.0.1:{port}/readyz");
        if let Ok(r) = client.get(url).send().await
            && r.status() == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `body` to random replicas until one answers 2xx (bounded: 200 tries, 25 ms apart);
/// returns the dedup key of the answer.
async fn send(client: &reqwest::Client, ports: &[u16], body: Vec<u8>) -> String {
    for _ in 0..200 {
        let port = ports[rand::rng().random_range(0..ports.len())];
        let r = client
            .post(format!("http://127.0.0.1:{port}/job/svc"))
            .header("content-type", "application/json")
            .header("authorization", GOOD_TOKEN)
            .timeout(Duration::from_secs(15))
            .body(body.clone())
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
        {
            let v: serde_json::Value = r.json().await.unwrap();
            let verdict = v["results"][0]["verdict"].as_str().unwrap_or("");
            assert!(matches!(verdict, "accepted" | "duplicate"), "{v}");
            return v["results"][0]["key"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no replica acknowledged an event within 200 tries");
}

type Replicas = Arc<Mutex<Vec<Replica>>>;

/// Kills random replicas with SIGKILL and restarts them, at least 20 times and for as long as
/// `sending` is set (bounded: 90 s); returns the number of kills.
async fn kill_and_restart(
    replicas: Replicas,
    sending: Arc<AtomicBool>,
    client: reqwest::Client,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut kills = 0;
    while (sending.load(Ordering::SeqCst) || kills < 20) && Instant::now() < deadline {
        let n = rand::rng().random_range(0..3);
        let wait_ms = rand::rng().random_range(50..250);
        replicas.lock().unwrap()[n].kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        replicas.lock().unwrap()[n].start();
        let port = replicas.lock().unwrap()[n].port;
        let _ = ready(&client, port).await;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    }
    kills
}

/// 500 events × 3 copies in random order, 8 senders at once, each copy retried on random
/// replicas until acknowledged; returns the acknowledged dedup keys.
async fn send_all(client: &reqwest::Client, ports: &[u16]) -> HashSet<String> {
    let mut copies: Vec<usize> = (0..500).flat_map(|i| [i, i, i]).collect();
    for i in (1..copies.len()).rev() {
        copies.swap(i, rand::rng().random_range(0..=i));
    }
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let queue = Arc::new(Mutex::new(copies));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (queue, acked, client, ports) =
            (queue.clone(), acked.clone(), client.clone(), ports.to_vec());
        senders.push(tokio::spawn(async move {
            loop {
                let Some(i) = queue.lock().unwrap().pop() else {
                    break;
                };
                let key = send(&client, &ports, put_event(&format!("rep-{i}"))).await;
                acked.lock().unwrap().insert(key);
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    acked.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_three_replicas_survive_kill_9_and_a_replica_lost_for_good() {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let oscar = FakeOscar::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let replicas: Vec<_> = (0..3)
        .map(|n| Replica::new(dir.path(), n, &oscar.url(), &nats.url(), &redis.url()))
        .collect();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let replicas = Arc::new(Mutex::new(replicas));
    for r in replicas.lock().unwrap().iter_mut() {
        r.start();
    }
    for port in &ports {
        assert!(ready(&client, *port).await, "replica on {port} ready");
    }
    let sending = Arc::new(AtomicBool::new(true));
    let killer = tokio::spawn(kill_and_restart(
        replicas.clone(),
        sending.clone(),
        client.clone(),
    ));
    let acked = send_all(&client, &ports).await;
    sending.store(false, Ordering::SeqCst);
    let kills = killer.await.unwrap();
    assert_eq!(acked.len(), 500, "every event acknowledged");
    let all_in = eventually(Duration::from_secs(60), || {
        let d = deliveries(&oscar);
        acked.iter().all(|k| d.contains_key(k))
    })
    .await;
    let d = deliveries(&oscar);
    let missing = acked.iter().filter(|k| !d.contains_key(*k)).count();
    assert!(all_in, "{missing} acknowledged events never reached OSCAR");
    let duplicates: usize = d.values().map(|n| n - 1).sum();
    println!("jetstream replicas: {kills} kills, {duplicates} duplicate deliveries of 500 events");
    assert!(kills >= 20);
    assert!(
        duplicates <= kills,
        "duplicates ({duplicates}) bounded by one per kill ({kills})"
    );
    lost_for_good(&replicas, &oscar, &client, &ports).await;
}

/// Replica 0 alone pulls 10 events from a slow OSCAR and is killed for good in the middle of a
/// delivery; replicas 1 and 2 then deliver every one of them (the in-flight one after AckWait).
async fn lost_for_good(
    replicas: &Replicas,
    oscar: &FakeOscar,
    client: &reqwest::Client,
    ports: &[u16],
) {
    replicas.lock().unwrap()[1].kill();
    replicas.lock().unwrap()[2].kill();
    oscar.set_delay(Duration::from_millis(500));
    let before = oscar.received().len();
    let mut lost = HashSet::new();
    for i in 0..10 {
        lost.insert(send(client, &ports[..1], put_event(&format!("lost-{i}"))).await);
    }
    // Killed 250 ms into its next POST: OSCAR (delayed 500 ms) drops that request unrecorded
    // when the connection closes, so the event is delivered only if another replica redelivers it.
    wait_for(|| oscar.received().len() > before).await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    replicas.lock().unwrap()[0].kill();
    for n in [1, 2] {
        replicas.lock().unwrap()[n].start();
    }
    let delivered = eventually(Duration::from_secs(30), || {
        let d = deliveries(oscar);
        lost.iter().all(|k| d.contains_key(k))
    })
    .await;
    assert!(
        delivered,
        "the lost replica's events delivered by the others"
    );
}

async fn wait_for(f: impl FnMut() -> bool) {
    assert!(eventually(Duration::from_secs(10), f).await, "timed out");
}
