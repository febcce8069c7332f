//! The real binary's commands: `check-config` (exit codes, masked secrets), `replay` (one
//! verdict per record, the gateway's own keys), and `serve` on embedded defaults. (`mc-setup` is
//! in `mc_setup`.)

use std::{
    process::{Output, Stdio},
    time::Duration,
};

use crate::helpers::*;

/// `dedup-gateway check-config --config path`, run to its end.
fn check_config(path: &std::path::Path) -> Output {
    bin()
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

/// `check-config` prints a valid configuration with secrets masked; a bad value, a bad
/// environment override, a bad flag and an unknown command exit 2 naming what is wrong.
#[test]
fn check_config_validates_and_masks() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[admin]\ntoken = \"admin-token-0123456789\"\n").unwrap();
    let out = check_config(&good);
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("***") && !text.contains("admin-token-0123456789"),
        "{text}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[dedup]\nmax_entries = 1\n").unwrap();
    let out = check_config(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("dedup.max_entries"));

    let out = bin()
        .args(["check-config"])
        .env("DEDUP_GATEWAY_DEDUP__TTL", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("dedup.ttl"), "{}", stderr_of(&out));

    let out = bin()
        .args(["serve", "--mode", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("mode"));
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
        assert_success(&out);
        let line: serde_json::Value =
            serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
        line["key"].as_str().unwrap().to_string()
    };
    let first = replay_key();
    assert_eq!(first, replay_key(), "the same key run after run");
    let (_oscar, gw) = oscar_and_gateway(|cfg| cfg.dedup.hash_secret = secret.into()).await;
    let p = gw
        .post_as("svc", None, std::fs::read(&fixture).unwrap())
        .await;
    assert_eq!(p.key(), first, "{}", p.answer);
    gw.stop().await;
}

/// `replay` prints one JSON line per record with the verdict the gateway would give, in order.
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
    assert_success(&out);
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
    let port = free_port();
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
    let logs = collect_lines(child.stderr.take().unwrap());
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        healthz_up(&client, &base, 100, Duration::from_millis(50)).await,
        "gateway did not come up"
    );
    let mut seen = Vec::new();
    for _ in 0..2 {
        let p = post_webhook(
            &client,
            &format!("{base}/job/svc"),
            Some(GOOD_TOKEN),
            fixture("put-versioned.json"),
        )
        .await;
        assert!((200..300).contains(&p.status), "{}", p.answer);
        seen.push(p.verdicts().concat());
    }
    assert_eq!(seen, [first_verdict, "duplicate"]);
    assert!(eventually(Duration::from_secs(10), || oscar.received().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(oscar.received().len(), 1);
    // SIGTERM: graceful exit with status 0.
    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
    let logs = logs.join().unwrap().join("\n");
    // The decision line as the text format writes it (written past `tracing`'s dispatch here:
    // stderr is a pipe, so no colours), ending in the dedup key as bare hex.
    let line = logs
        .lines()
        .find(|l| l.contains(&format!("verdict=\"{first_verdict}\"")))
        .unwrap_or_else(|| panic!("no decision line: {logs}"));
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert!(stamp.len() == 27 && stamp.ends_with('Z'), "{line}");
    assert!(
        rest.starts_with(&format!(
            " INFO dedup_gateway::pipeline::report: decision verdict=\"{first_verdict}\" reason="
        )),
        "{line}"
    );
    let key = line.rsplit_once(" dedup_key=").unwrap().1;
    assert!(
        key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
    assert!(
        !logs.contains(&GOOD_TOKEN[7..]),
        "the token must never be logged"
    );
    assert!(dir.path().join("data/dedup-secret").exists());
}
