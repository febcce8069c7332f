//! A reconciliation pass over many versions (scripts/bench-reconcile runs it against moto or
//! s3rver).
//!
//! Uploads `--versions` objects (skipped with `--skip-upload`; `--upload-only` stops there) to a
//! versioned bucket, or an unversioned one with `--unversioned` (ListObjectsV2; s3rver has no
//! versioning), with `--access-key`/`--secret-key` (any pair for moto), then runs the `reconcile`
//! command's code path twice in spool mode against an in-process sink that answers 201: the first
//! pass triggers every version (spool writes), the second finds every one already seen. Prints
//! one JSON line per pass: pass time (from the report's timestamps), versions, S3 requests and
//! requests per second, and the process's peak RSS during the run (VmHWM, reset before each run
//! through /proc/self/clear_refs).

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use dedup_gateway::{
    config::{Config, Mode, ServiceConfig},
    reconcile::{ReconcileConfig, oneshot, s3::S3Client},
};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What the run is pointed at.
struct Target {
    endpoint: String,
    bucket: String,
    versioned: bool,
    access_key: String,
    secret_key: String,
}

async fn upload(t: &Target, n: usize) -> Duration {
    let client = std::sync::Arc::new(
        S3Client::new(
            &t.endpoint,
            "us-east-1",
            &t.bucket,
            (t.access_key.clone(), t.secret_key.clone()),
            1e6,
            Duration::from_secs(30),
        )
        .expect("client"),
    );
    client
        .create_bucket(t.versioned)
        .await
        .expect("create bucket");
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        while tasks.len() >= 32 {
            tasks.join_next().await;
        }
        let c = client.clone();
        tasks.spawn(async move {
            c.put_object(&format!("in/obj-{i:07}.csv"), b"x".to_vec())
                .await
                .expect("put")
        });
    }
    while tasks.join_next().await.is_some() {}
    t.elapsed()
}

async fn sink() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/job/{service}",
        axum::routing::post(|| async { axum::http::StatusCode::CREATED }),
    );
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

fn config(t: &Target, upstream: &str, dir: &std::path::Path) -> Config {
    std::fs::write(dir.join("k"), format!("{}\n", t.access_key)).unwrap();
    std::fs::write(dir.join("s"), format!("{}\n", t.secret_key)).unwrap();
    std::fs::write(dir.join("t"), "bench-token\n").unwrap();
    let rc: ReconcileConfig = toml::from_str(&format!(
        r#"
        endpoint = "{endpoint}"
        bucket = "{bucket}"
        versioned = {versioned}
        prefix = "in/"
        access_key_file = "{d}/k"
        secret_key_file = "{d}/s"
        token_file = "{d}/t"
        settle = "0s"
        max_requests_per_second = 1000.0
        concurrency = 64
        "#,
        d = dir.display(),
        endpoint = t.endpoint,
        bucket = t.bucket,
        versioned = t.versioned,
    ))
    .expect("reconcile section");
    let mut cfg = Config {
        mode: Mode::Spool,
        upstream: upstream.into(),
        data_dir: dir.join("data"),
        ..Config::default()
    };
    cfg.http.shutdown_grace = Duration::from_secs(120);
    cfg.services.insert(
        "bench".into(),
        ServiceConfig {
            reconcile: Some(rc),
            ..Default::default()
        },
    );
    cfg.validate().expect("valid");
    cfg
}

fn seconds(report: &dedup_gateway::reconcile::PassReport) -> f64 {
    let parse = |s: &str| s.parse::<jiff::Timestamp>().ok();
    match (
        parse(&report.started),
        report.finished.as_deref().and_then(parse),
    ) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let target = Target {
        endpoint: arg("--endpoint").expect("--endpoint URL"),
        bucket: arg("--bucket").unwrap_or_else(|| "bench".into()),
        versioned: !std::env::args().any(|a| a == "--unversioned"),
        access_key: arg("--access-key").unwrap_or_else(|| "bench".into()),
        secret_key: arg("--secret-key").unwrap_or_else(|| "bench-secret".into()),
    };
    let n: usize = arg("--versions")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    if !std::env::args().any(|a| a == "--skip-upload") {
        let t = upload(&target, n).await;
        eprintln!("uploaded {n} versions in {:.1} s", t.as_secs_f64());
    }
    if std::env::args().any(|a| a == "--upload-only") {
        return;
    }
    let upstream = sink().await;
    let dir = tempfile::tempdir().expect("temp dir");
    for name in [
        "first pass (all triggered)",
        "second pass (all already seen)",
    ] {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let cfg = config(&target, &upstream, dir.path());
        let report = oneshot::run(cfg, "bench", false, &mut std::io::sink())
            .await
            .expect("pass");
        let secs = seconds(&report);
        let line = serde_json::json!({
            "pass": name,
            "outcome": report.outcome,
            "listed": report.listed,
            "triggered": report.triggered,
            "already_seen": report.already_seen,
            "seconds": secs,
            "versions_per_second": report.listed as f64 / secs,
            "s3_requests": report.s3_requests,
            "s3_requests_per_second": report.s3_requests as f64 / secs,
            "peak_rss_mib": vm_hwm_kib() as f64 / 1024.0,
        });
        println!("{line}");
    }
}
