//! The real binary: CLI exit codes, check-config, replay, and serve on embedded defaults.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use crate::helpers::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dedup-gateway"))
}

#[test]
fn check_config_validates_and_masks() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[admin]\ntoken = \"admin-token-0123456789\"\n").unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("***") && !text.contains("admin-token-0123456789"),
        "{text}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[dedup]\nmax_entries = 1\n").unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dedup.max_entries"));

    let out = bin()
        .args(["check-config"])
        .env("DEDUP_GATEWAY_DEDUP__TTL", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dedup.ttl"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = bin()
        .args(["serve", "--mode", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mode"));
    assert_eq!(
        bin().arg("frobnicate").output().unwrap().status.code(),
        Some(2)
    );
}

/// Replay derives keys with the gateway's own secret: the same configured secret gives the key a
/// running gateway logs and answers (checked against a gateway in-process), run after run.
#[tokio::test]
async fn replay_keys_match_the_gateway_keys() {
    let secret = "replay-shares-this-secret-0123456789";
    let fixture = fixtures_dir().join("put-versioned.json");
    let replay_key = || {
        let out = bin()
            .args(["replay", "--service", "svc"])
            .env("DEDUP_GATEWAY_DEDUP__HASH_SECRET", secret)
            .arg(&fixture)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: serde_json::Value =
            serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
        line["key"].as_str().unwrap().to_string()
    };
    let first = replay_key();
    assert_eq!(first, replay_key(), "the same key run after run");
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.dedup.hash_secret = secret.into();
    let gw = TestGateway::start(cfg).await;
    let (_, answer) = gw.post("svc", None, std::fs::read(&fixture).unwrap()).await;
    assert_eq!(answer["results"][0]["key"], first.as_str(), "{answer}");
    gw.stop().await;
}

#[test]
fn replay_prints_one_verdict_per_record() {
    let f = fixtures_dir();
    let out = bin()
        .args(["replay", "--service", "svc"])
        .arg(f.join("rustfs-put-replicated-bucket.json"))
        .arg(f.join("rustfs-replication-completed-stale-pending.json"))
        .arg(f.join("rustfs-replication-completed-stale-pending.json"))
        .arg(f.join("synthetic-multi-record.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let v: Vec<&str> = lines
        .iter()
        .map(|l| l["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        v,
        [
            "held",
            "forwarded",
            "duplicate",
            "forwarded",
            "replication-failed"
        ]
    );
    assert_eq!(lines[0]["object"], "plain/my photos/señal ü+ß 2025.jpg");
}

/// The README's run command: `serve` with no configuration (spool mode, memory store, `./data`),
/// pointed at a fake OSCAR through the environment; a fixture POSTed twice reaches OSCAR once.
#[tokio::test]
async fn serve_on_embedded_defaults_forwards_once() {
    serve_binary_forwards_once(None, "accepted").await;
}

/// The same in sync mode.
#[tokio::test]
async fn serve_in_sync_mode_forwards_once() {
    serve_binary_forwards_once(Some("sync"), "forwarded").await;
}

async fn serve_binary_forwards_once(mode: Option<&str>, first_verdict: &str) {
    let oscar = FakeOscar::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Pick a free port, then hand it to the child.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = bin();
    cmd.arg("serve")
        .current_dir(dir.path())
        .env("DEDUP_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("DEDUP_GATEWAY_UPSTREAM", oscar.url())
        .stderr(Stdio::piped());
    if let Some(mode) = mode {
        cmd.env("DEDUP_GATEWAY_MODE", mode);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/job/svc");
    let mut up = false;
    for _ in 0..100 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "gateway did not come up");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let r = client
            .post(&url)
            .header("authorization", GOOD_TOKEN)
            .header("content-type", "application/json")
            .body(fixture("put-versioned.json"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        seen.push(verdicts(&r.json().await.unwrap()).concat());
    }
    assert_eq!(seen, [first_verdict, "duplicate"]);
    assert!(eventually(Duration::from_secs(10), || oscar.received().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(oscar.received().len(), 1);
    // SIGTERM: graceful exit with status 0.
    unsafe_kill_term(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let logs = logs.join().unwrap().join("\n");
    assert!(
        logs.contains(&format!("verdict=\"{first_verdict}\"")),
        "{logs}"
    );
    assert!(
        !logs.contains(&GOOD_TOKEN[7..]),
        "the token must never be logged"
    );
    assert!(dir.path().join("data/dedup-secret").exists());
}

fn unsafe_kill_term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}
