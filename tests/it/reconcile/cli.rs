//! `dedup-gateway reconcile` as a process: output lines, exit codes, refusals that name the key.

use std::process::Command;

use super::{moto::Moto, *};
use crate::helpers::*;

fn reconcile(config: &Path, service: &str, dry: bool) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dedup-gateway"));
    c.args(["reconcile", "--config"])
        .arg(config)
        .args(["--service", service]);
    if dry {
        c.arg("--dry-run");
    }
    let out = c.env("RUST_LOG", "error").output().expect("run reconcile");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_command_prints_lines_and_a_summary_and_refuses_what_it_cannot_do() {
    let (s3, oscar, tmp) = (
        Moto::start().await,
        FakeOscar::start().await,
        tempfile::tempdir().unwrap(),
    );
    let bucket = s3.client("cli");
    bucket.create_bucket(true).await.unwrap();
    for i in 0..3 {
        bucket
            .put_object(&format!("x {i}+%.txt"), b"v".to_vec())
            .await
            .unwrap();
    }
    let mut cfg = gateway_cfg(&oscar, reconcile_cfg(&s3.url(), "cli", tmp.path()));
    cfg.mode = dedup_gateway::config::Mode::Spool;
    cfg.data_dir = tmp.path().join("data");
    let config = tmp.path().join("gateway.toml");
    std::fs::write(
        &config,
        cfg.masked_toml()
            .replace("\"***\"", &format!("\"{ADMIN}\"")),
    )
    .unwrap();
    let (code, out, err) = reconcile(&config, SVC, true);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0]["verdict"], "would-trigger");
    assert!(
        lines[0]["key"].as_str().unwrap().starts_with("x "),
        "decoded names: {out}"
    );
    assert_eq!(lines[3]["summary"]["triggered"], 3);
    assert!(oscar.received().is_empty());
    let (code, _, err) = reconcile(&config, "other", false);
    assert_eq!(code, 2);
    assert!(err.contains("services.other.reconcile"), "{err}");
    cfg.mode = dedup_gateway::config::Mode::Sync;
    std::fs::write(
        &config,
        cfg.masked_toml()
            .replace("\"***\"", &format!("\"{ADMIN}\"")),
    )
    .unwrap();
    let (code, _, err) = reconcile(&config, SVC, true);
    assert_eq!(code, 2);
    assert!(err.contains("`dedup.backend`"), "{err}");
}
