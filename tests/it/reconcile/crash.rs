//! kill -9 of the real binary in the middle of a pass (spool mode): after the restart and a
//! second pass, every version reached OSCAR, and at most the one delivery the contract allows
//! per kill (OSCAR took it, the commit was not yet on disk) came twice.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{moto::Moto, *};
use crate::{
    crash::{free_port, wait_up},
    helpers::*,
};

const VERSIONS: usize = 300;

fn spawn(config: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dedup-gateway"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gateway")
}

async fn admin(client: &reqwest::Client, port: u16, post: bool) -> Value {
    let url = format!("http://127.0.0.1:{port}/admin/reconcile");
    let req = if post {
        client.post(format!("{url}/{SVC}"))
    } else {
        client.get(url)
    };
    match req.bearer_auth(ADMIN).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_pass_loses_and_doubles_nothing() {
    let (s3, oscar, tmp) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    oscar.set_delay(Duration::from_millis(5));
    let bucket = s3.client("crash");
    bucket.create_bucket(true).await.unwrap();
    for i in 0..VERSIONS {
        bucket
            .put_object(&format!("c{i:03}"), b"v".to_vec())
            .await
            .unwrap();
    }
    let mut rc = reconcile_cfg(&s3.url(), "crash", tmp.path());
    rc.max_requests_per_second = 5.0; // 6 pages: the pass takes over a second
    let mut cfg = gateway_cfg(&oscar, rc);
    cfg.mode = dedup_gateway::config::Mode::Spool;
    cfg.data_dir = tmp.path().join("data");
    cfg.delivery.concurrency = 1;
    let config = tmp.path().join("gateway.toml");
    std::fs::write(
        &config,
        cfg.masked_toml()
            .replace("\"***\"", &format!("\"{ADMIN}\"")),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let port = free_port();
    let mut child = spawn(&config, port);
    assert!(wait_up(&client, port).await, "gateway up");
    let c = client.clone();
    let pass = tokio::spawn(async move { admin(&c, port, true).await });
    // Kill once the pass has handed at least one page to the spool, before it ends.
    let mut mid = Value::Null;
    for _ in 0..500 {
        mid = admin(&client, port, false).await["services"][SVC].clone();
        if mid["outcome"] == "running" && mid["triggered"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let _ = pass.await;
    assert_eq!(mid["outcome"], "running", "killed mid-pass: {mid}");
    let before = oscar.accepted().len();
    assert!(
        before < VERSIONS,
        "the kill came before everything was delivered"
    );
    let mut child = spawn(&config, port);
    assert!(wait_up(&client, port).await, "gateway up again");
    let report = admin(&client, port, true).await;
    assert_eq!(report["outcome"], "ok", "{report}");
    let done = eventually(Duration::from_secs(60), || {
        triggers(&oscar).len() == VERSIONS
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();
    let seen = triggers(&oscar);
    assert!(
        done,
        "every version reached OSCAR: {} of {VERSIONS}",
        seen.len()
    );
    let doubled: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        doubled <= 1,
        "at most the one in-flight delivery of the kill twice: {doubled}"
    );
    eprintln!(
        "kill mid-pass: {before} delivered before the kill, {} triggered by the second pass, {doubled} doubled",
        report["triggered"]
    );
}
