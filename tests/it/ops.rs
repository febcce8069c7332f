//! Issue 7: operating the gateway — `mc-setup`, shadow mode, `/admin/verdicts`, the deployment
//! files under `deploy/` and the Grafana dashboard's metric names.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use dedup_gateway::{
    config::{Config, Mode},
    mcsetup::{self, McSetup, Scenario},
};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::helpers::*;

const ADMIN: &str = "admin-token-for-ops-tests-0123";
const SECRET: &str = "tok-SECRET-value-that-must-never-be-printed";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dedup-gateway"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// === mc-setup ===

/// The seed scenario: the exact `mc` lines, the binary's output equal to the library's, and the
/// token value absent even though the variable is set in the binary's environment.
#[test]
fn mc_setup_replicated_scenario_prints_the_commands_and_never_the_token() {
    let out = bin()
        .args([
            "mc-setup",
            "--service",
            "svc-y",
            "--bucket",
            "intermediate",
            "--gateway-url",
            "http://dedup-gateway.oscar:8080",
            "--scenario",
            "replicated",
            "--alias",
            "origin",
            "--prefix",
            "in/",
        ])
        .env("OSCAR_SERVICE_TOKEN", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        r#"mc admin config set origin notify_webhook:svc-y endpoint="http://dedup-gateway.oscar:8080/job/svc-y" auth_token="${OSCAR_SERVICE_TOKEN}" queue_dir="/data/minio-events" queue_limit="100000""#,
        "mc admin service restart origin",
        "mc event rm origin/intermediate arn:minio:sqs::svc-y:webhook --event put --prefix in/ || true",
        "mc event add origin/intermediate arn:minio:sqs::svc-y:webhook --event replica --prefix in/",
    ] {
        assert!(lines.contains(&expected), "missing line {expected}\n{text}");
    }
    assert!(!text.contains(SECRET) && !String::from_utf8_lossy(&out.stderr).contains(SECRET));
    let mut o = McSetup::new("svc-y", "intermediate", "http://dedup-gateway.oscar:8080");
    o.scenario = Scenario::Replicated;
    o.alias = "origin".into();
    o.prefix = "in/".into();
    assert_eq!(
        text,
        mcsetup::render(&o).unwrap(),
        "binary and library disagree"
    );
}

/// The plain case subscribes to `put`, removes nothing, and uses the named variable.
#[test]
fn mc_setup_plain_scenario_uses_put_and_the_named_variable() {
    let out = bin()
        .args([
            "mc-setup",
            "--service",
            "grayify",
            "--bucket",
            "images",
            "--gateway-url",
            "http://gw:8080",
        ])
        .args(["--token-env", "MY_TOKEN", "--scenario", "plain"])
        .env("MY_TOKEN", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(r#"auth_token="${MY_TOKEN}""#), "{text}");
    assert!(
        text.contains(
            "\nmc event add minio/images arn:minio:sqs::grayify:webhook --event put || true\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("mc event rm") && !text.contains("replica"),
        "{text}"
    );
    assert!(!text.contains(SECRET));

    let out = bin()
        .args([
            "mc-setup",
            "--service",
            "s",
            "--bucket",
            "No_Such",
            "--gateway-url",
            "http://gw",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bucket"));
}

/// The output is a working script: run by `sh` against a stand-in `mc` that logs its arguments,
/// the token reaches `mc` (expanded by the shell), and an unset variable stops the script.
#[cfg(unix)]
#[test]
fn mc_setup_output_runs_as_a_script() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mc.log");
    let fake = dir.path().join("mc");
    std::fs::write(&fake, "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$MC_LOG\"\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut o = McSetup::new("svc", "bucket-a", "http://gw:8080");
    o.scenario = Scenario::Replicated;
    let script = mcsetup::render(&o).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |token: Option<&str>| {
        let mut c = Command::new("sh");
        c.args(["-c", &script])
            .env("PATH", &path)
            .env("MC_LOG", &log);
        c.env_remove("OSCAR_SERVICE_TOKEN");
        if let Some(t) = token {
            c.env("OSCAR_SERVICE_TOKEN", t);
        }
        c.output().unwrap()
    };
    let out = run(None);
    assert!(
        !out.status.success(),
        "an unset token variable must stop the script"
    );
    assert!(!log.exists(), "no mc command may run without the token");
    let out = run(Some(SECRET));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let first = calls.lines().next().unwrap_or_default();
    assert!(first.contains(&format!("auth_token={SECRET}")), "{calls}");
    assert!(
        calls
            .lines()
            .any(|l| l == "event add minio/bucket-a arn:minio:sqs::svc:webhook --event replica"),
        "{calls}"
    );
}

// === metrics scraping ===

/// The value of the sample `name{labels...}` (labels matched as a subset); 0 when absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const VERDICTS: [&str; 9] = [
    "forwarded",
    "accepted",
    "duplicate",
    "held",
    "pending",
    "replication-failed",
    "ignored",
    "invalid",
    "failed",
];

// === shadow mode ===

/// The input sequence both modes see: repeats, PENDING copies, a preempting clean copy,
/// ignored, failed-replication, multi-record and invalid records.
fn sequence() -> Vec<Vec<u8>> {
    let invalid = br#"{"Records":[{"eventName":"s3:ObjectCreated:Put"}]}"#.to_vec();
    [
        "put-versioned.json",
        "put-versioned.json",
        "replication-completed.json",
        "replication-completed.json",
        "delete-noop.json",
        "replication-failed.json",
        "rustfs-put-replicated-bucket.json",
        "rustfs-put-replicated-bucket.json",
        "rustfs-replication-completed-stale-pending.json",
        "synthetic-multi-record.json",
        "synthetic-multi-record.json",
        "put-replication-pending.json",
        "put-versioned.json",
    ]
    .iter()
    .map(|n| fixture(n))
    .chain([invalid])
    .collect()
}

/// Shadow mode forwards every POST, answers with OSCAR's status, and its would-be verdicts are
/// exactly sync mode's verdicts on the same input — per request and in the counters.
#[tokio::test]
async fn shadow_forwards_everything_and_counts_what_sync_would_drop() {
    let oscar_sync = FakeOscar::start().await;
    let oscar_shadow = FakeOscar::start().await;
    let sync = TestGateway::start(test_config(&oscar_sync.url())).await;
    let mut cfg = test_config(&oscar_shadow.url());
    cfg.mode = Mode::Shadow;
    let shadow = TestGateway::start(cfg).await;
    let seq = sequence();
    for (i, body) in seq.iter().enumerate() {
        let (_, normal) = sync.post("svc", Some(GOOD_TOKEN), body.clone()).await;
        let (status, would) = shadow.post("svc", Some(GOOD_TOKEN), body.clone()).await;
        assert_eq!(
            status, 201,
            "step {i}: shadow answers with OSCAR's status: {would}"
        );
        assert_eq!(verdicts(&would), verdicts(&normal), "step {i}");
    }
    let received = oscar_shadow.received();
    assert_eq!(
        received.len(),
        seq.len(),
        "shadow mode must forward every POST"
    );
    for (r, body) in received.iter().zip(&seq) {
        assert_eq!(&r.body[..], &body[..], "forwarded byte-for-byte, in order");
        assert_eq!(r.headers.get("authorization").unwrap(), GOOD_TOKEN);
    }
    let m_sync = sync.metrics().await;
    let m_shadow = shadow.metrics().await;
    let mut dropped = 0.0;
    for v in VERDICTS {
        let normal = sample(&m_sync, "dedup_gateway_records_total", &[("verdict", v)]);
        let would = sample(
            &m_shadow,
            "dedup_gateway_shadow_verdicts_total",
            &[("verdict", v)],
        );
        assert_eq!(would, normal, "verdict {v}");
        if dedup_gateway::pipeline::shadow::would_drop(dedup_verdict(v)) {
            dropped += normal;
        }
    }
    assert!(
        dropped >= 8.0,
        "the sequence must exercise drops: {dropped}"
    );
    let would_drop = sample(
        &m_shadow,
        "dedup_gateway_shadow_verdicts_total",
        &[("would_drop", "true")],
    );
    assert_eq!(would_drop, dropped);
    assert_eq!(
        sample(&m_sync, "dedup_gateway_shadow_verdicts_total", &[]),
        0.0
    );
    sync.stop().await;
    shadow.stop().await;
}

fn dedup_verdict(name: &str) -> dedup_gateway::pipeline::Verdict {
    use dedup_gateway::pipeline::Verdict;
    *Verdict::ALL
        .iter()
        .find(|v| v.as_str() == name)
        .expect(name)
}

/// OSCAR's failure is passed through and releases the reservation, so MinIO's retry is judged
/// afresh; a body that is not a MinIO envelope is forwarded too, counted once as `invalid`.
#[tokio::test]
async fn shadow_passes_oscar_failures_through_and_releases() {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.mode = Mode::Shadow;
    let gw = TestGateway::start(cfg).await;
    let body = fixture("put-versioned.json");
    oscar.set_status(500);
    let (status, answer) = gw.post("svc", Some(GOOD_TOKEN), body.clone()).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (500, vec!["failed".to_string()])
    );
    oscar.set_status(201);
    let (status, answer) = gw.post("svc", Some(GOOD_TOKEN), body.clone()).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (201, vec!["forwarded".to_string()])
    );
    let (status, answer) = gw.post("svc", Some(GOOD_TOKEN), body).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (201, vec!["duplicate".to_string()])
    );
    let (status, answer) = gw
        .post("svc", Some(GOOD_TOKEN), b"not json at all".to_vec())
        .await;
    assert_eq!(
        (status, verdicts(&answer)),
        (201, vec!["invalid".to_string()])
    );
    assert_eq!(oscar.received().len(), 4);
    oscar.stop();
    let (status, _) = gw
        .post("svc", Some(GOOD_TOKEN), fixture("put-unversioned.json"))
        .await;
    assert_eq!(status, 503, "no answer from OSCAR: 503 so MinIO retries");
    gw.stop().await;
}

/// A held copy becomes "delivered" in the store when its grace ends, as sync mode's delayed
/// delivery would make it: a later copy is then `already-delivered`, not `held-copy-exists`.
#[tokio::test]
async fn shadow_held_copy_counts_as_delivered_after_the_grace() {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.mode = Mode::Shadow;
    cfg.policy.pending_grace = Duration::from_millis(150);
    let gw = TestGateway::start(cfg).await;
    let body = fixture("complete-multipart-upload.json");
    assert_eq!(
        verdicts(&gw.post("svc", Some(GOOD_TOKEN), body.clone()).await.1),
        ["held"]
    );
    let mut reason = String::new();
    for _ in 0..100 {
        let (_, a) = gw.post("svc", Some(GOOD_TOKEN), body.clone()).await;
        assert_eq!(verdicts(&a), ["duplicate"]);
        reason = a["results"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if reason == "already-delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reason, "already-delivered");
    gw.stop().await;
}

// === /admin/verdicts ===

async fn lookup(gw: &TestGateway, token: Option<&str>, query: &[(&str, &str)]) -> (u16, Value) {
    let mut req = gw.client.get(gw.url("/admin/verdicts")).query(query);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn admin_config(upstream: &str) -> Config {
    let mut cfg = test_config(upstream);
    cfg.admin.token = ADMIN.into();
    cfg
}

/// Decisions are found by dedup key and by bucket/object/version, with times and attempts;
/// the endpoint needs the admin token and validates its query.
#[tokio::test]
async fn verdict_lookup_by_key_and_by_object_version() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(admin_config(&oscar.url())).await;
    let body = fixture("put-versioned.json");
    let (_, first) = gw.post("svc", Some(GOOD_TOKEN), body.clone()).await;
    gw.post("svc", Some(GOOD_TOKEN), body).await;
    gw.post("svc", Some(GOOD_TOKEN), fixture("delete-noop.json"))
        .await;
    let key = first["results"][0]["key"].as_str().unwrap().to_string();

    let (status, v) = lookup(&gw, Some(ADMIN), &[("key", &key)]).await;
    assert_eq!(status, 200, "{v}");
    let d = v["decisions"].as_array().unwrap();
    let got: Vec<&str> = d.iter().map(|d| d["verdict"].as_str().unwrap()).collect();
    assert_eq!(got, ["forwarded", "duplicate"], "{v}");
    assert_eq!(d[0]["reason"], "delivered");
    assert_eq!(d[0]["service"], "svc");
    assert_eq!(d[0]["event"], "s3:ObjectCreated:Put");
    assert_eq!(d[0]["attempts"], 1);
    assert!(
        d[0]["delivered_at"].is_string() && d[1]["delivered_at"].is_null(),
        "{v}"
    );
    assert_eq!(d[1]["reason"], "already-delivered");
    assert!(
        v["first_seen"].is_string() && v["delivered_at"].is_string(),
        "{v}"
    );

    let bucket = d[0]["bucket"].as_str().unwrap().to_string();
    let object = d[0]["object"].as_str().unwrap().to_string();
    let version = d[0]["version"].as_str().unwrap().to_string();
    assert_eq!(
        object, "input/batch-0042/sample-001.csv",
        "the decoded object key"
    );
    let (status, v) = lookup(
        &gw,
        Some(ADMIN),
        &[
            ("bucket", &bucket),
            ("object", &object),
            ("version", &version),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["decisions"].as_array().unwrap().len(), 2, "{v}");
    let (_, v) = lookup(
        &gw,
        Some(ADMIN),
        &[
            ("bucket", &bucket),
            ("object", &object),
            ("version", "other"),
        ],
    )
    .await;
    assert!(v["decisions"].as_array().unwrap().is_empty(), "{v}");

    assert_eq!(lookup(&gw, None, &[("key", &key)]).await.0, 401);
    assert_eq!(
        lookup(&gw, Some("wrong-token-wrong-token"), &[("key", &key)])
            .await
            .0,
        401
    );
    assert_eq!(lookup(&gw, Some(ADMIN), &[("key", "xyz")]).await.0, 400);
    assert_eq!(
        lookup(&gw, Some(ADMIN), &[("bucket", &bucket)]).await.0,
        400
    );
    assert_eq!(lookup(&gw, Some(ADMIN), &[]).await.0, 400);
    let (status, v) = lookup(&gw, Some(ADMIN), &[("key", &"0".repeat(32))]).await;
    assert_eq!(status, 200);
    assert!(v["decisions"].as_array().unwrap().is_empty());
    gw.stop().await;

    let plain = TestGateway::start(test_config(&oscar.url())).await;
    assert_eq!(
        lookup(&plain, Some(ADMIN), &[("key", &key)]).await.0,
        404,
        "admin disabled"
    );
    plain.stop().await;
}

/// A held PENDING copy delivered after its grace shows both decisions: `held`, then `forwarded`
/// with its delivery time, found by key and by object.
#[tokio::test]
async fn verdict_lookup_shows_a_held_copy_delivered_later() {
    let oscar = FakeOscar::start().await;
    let mut cfg = admin_config(&oscar.url());
    cfg.policy.pending_grace = Duration::from_millis(150);
    let gw = TestGateway::start(cfg).await;
    let (_, a) = gw
        .post(
            "svc",
            Some(GOOD_TOKEN),
            fixture("complete-multipart-upload.json"),
        )
        .await;
    assert_eq!(verdicts(&a), ["held"]);
    let key = a["results"][0]["key"].as_str().unwrap().to_string();
    assert!(eventually(Duration::from_secs(5), || oscar.received().len() == 1).await);
    let mut found = Value::Null;
    for _ in 0..100 {
        let (_, v) = lookup(&gw, Some(ADMIN), &[("key", &key)]).await;
        if v["decisions"].as_array().is_some_and(|d| d.len() == 2) {
            found = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = found["decisions"].as_array().expect("two decisions");
    assert_eq!(
        (d[0]["verdict"].as_str(), d[1]["verdict"].as_str()),
        (Some("held"), Some("forwarded"))
    );
    assert_eq!(d[1]["reason"], "held-grace-elapsed");
    assert_eq!(d[1]["attempts"], 1);
    assert!(d[1]["delivered_at"].is_string() && found["delivered_at"].is_string());
    let (_, v) = lookup(
        &gw,
        Some(ADMIN),
        &[
            ("bucket", "intermediate"),
            ("object", "input/run-20/big-archive.tar.gz"),
        ],
    )
    .await;
    assert_eq!(v["decisions"].as_array().unwrap().len(), 2, "{v}");
    gw.stop().await;
}

// === deployment files ===

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn docs(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn find_kind<'a>(all: &'a [Yaml], kind: &str) -> &'a Yaml {
    all.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// Every manifest parses and names its kind; the base has the pieces the issue asks for, wired
/// to each other; both `gateway.toml`s are valid configuration; kustomize references exist.
#[test]
fn deploy_manifests_parse_and_fit_together() {
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy"), &mut files);
    assert!(files.len() >= 8, "{files:?}");
    for f in &files {
        for d in docs(f) {
            assert!(
                d["apiVersion"].as_str().is_some() && d["kind"].as_str().is_some(),
                "{}",
                f.display()
            );
        }
        let name = f.file_name().unwrap().to_string_lossy();
        if name == "kustomization.yaml" {
            let k = &docs(f)[0];
            let dir = f.parent().unwrap();
            let refs = k["resources"].as_vec().into_iter().flatten();
            let patches = k["patches"]
                .as_vec()
                .into_iter()
                .flatten()
                .map(|p| &p["path"]);
            for r in refs.chain(patches) {
                let r = r.as_str().unwrap();
                assert!(dir.join(r).exists(), "{}: {r} missing", f.display());
            }
        }
    }
    let base: Vec<Yaml> = [
        "statefulset.yaml",
        "service.yaml",
        "configmap.yaml",
        "servicemonitor.yaml",
    ]
    .iter()
    .flat_map(|f| docs(&repo().join("deploy/kubernetes").join(f)))
    .collect();
    let sts = find_kind(&base, "StatefulSet");
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert!(c["resources"]["requests"]["memory"].as_str().is_some());
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str(),
        Some("data")
    );
    let data_mount = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str() == Some("data"))
        .and_then(|m| m["mountPath"].as_str())
        .expect("data volume mounted");
    let toml = find_kind(&base, "ConfigMap")["data"]["gateway.toml"]
        .as_str()
        .unwrap();
    let cfg = Config::from_toml(toml).unwrap_or_else(|e| panic!("ConfigMap gateway.toml: {e}"));
    assert_eq!(
        cfg.data_dir,
        Path::new(data_mount),
        "the spool lives on the volume"
    );
    assert_eq!(cfg.listen.port(), 8080);
    if c["resources"]["limits"]["cpu"].is_badvalue() {
        assert!(
            cfg.http.workers > 0,
            "without a CPU limit, `workers = 0` would start one thread per core of the node"
        );
    }
    let svc = find_kind(&base, "Service");
    assert_eq!(svc["spec"]["ports"][0]["port"].as_i64(), Some(8080));
    assert_eq!(
        find_kind(&base, "ServiceMonitor")["spec"]["endpoints"][0]["path"].as_str(),
        Some("/metrics")
    );
    assert!(
        pod["terminationGracePeriodSeconds"].as_i64().unwrap()
            > cfg.http.shutdown_grace.as_secs() as i64,
        "the kubelet must wait out the graceful shutdown"
    );

    // The shared-store variant: valid once the secret (from the environment) is present.
    let patch = docs(&repo().join("deploy/redis/configmap-patch.yaml"));
    let text = patch[0]["data"]["gateway.toml"].as_str().unwrap();
    let mut value: toml::Table = text.parse().unwrap();
    value["dedup"]
        .as_table_mut()
        .unwrap()
        .insert("hash_secret".into(), "x".repeat(32).into());
    let cfg = Config::from_toml(&toml::to_string(&value).unwrap()).unwrap();
    assert_eq!(
        cfg.dedup.backend,
        dedup_gateway::config::StoreBackend::Redis
    );
    let replicas =
        docs(&repo().join("deploy/redis/statefulset-patch.yaml"))[0]["spec"]["replicas"].as_i64();
    assert!(replicas.unwrap() > 1);

    let docker = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for needle in [
        "FROM rust:1.95",
        "cargo build --release --locked",
        "USER 65532",
    ] {
        assert!(docker.contains(needle), "Dockerfile lacks {needle}");
    }
}

// === dashboard ===

/// Metric names the dashboard may use although no mode available here exports them yet.
/// Keep empty when possible; report any entry to the lead.
const DASHBOARD_NOT_EXPORTED_YET: &[&str] = &[];

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("dedup_gateway_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn exported(text: &str, into: &mut BTreeSet<String>) {
    for l in text.lines() {
        let name = l.strip_prefix("# TYPE ").unwrap_or(l);
        if l.starts_with('#') && !l.starts_with("# TYPE ") {
            continue;
        }
        if let Some(n) = name.split(['{', ' ']).next() {
            into.insert(n.to_string());
            // A declared counter family is exported as `<name>_total`, even before its first
            // labelled series exists (the reconcile families are per configured service).
            if l.starts_with("# TYPE ") && l.ends_with(" counter") {
                into.insert(format!("{n}_total"));
            }
        }
    }
}

/// The dashboard parses, and every metric it queries is exported by a running gateway after
/// some traffic (sync mode, and spool mode for the spool and dead-letter series).
#[tokio::test]
async fn dashboard_parses_and_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(repo().join("deploy/grafana-dashboard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.len() >= 15, "{used:?}");

    let oscar = FakeOscar::start().await;
    let mut names = BTreeSet::new();
    for mode in [Mode::Sync, Mode::Spool] {
        let mut cfg = admin_config(&oscar.url());
        cfg.mode = mode;
        let gw = TestGateway::start(cfg).await;
        for body in [
            fixture("put-versioned.json"),
            fixture("put-versioned.json"),
            fixture("put-replication-pending.json"),
        ] {
            gw.post("svc", Some(GOOD_TOKEN), body).await;
        }
        exported(&gw.metrics().await, &mut names);
        gw.stop().await;
    }
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !names.contains(*n) && !DASHBOARD_NOT_EXPORTED_YET.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard queries metrics nobody exports: {missing:?}"
    );
    for n in DASHBOARD_NOT_EXPORTED_YET {
        if names.contains(*n) {
            eprintln!("note: {n} is exported now; drop it from DASHBOARD_NOT_EXPORTED_YET");
        }
    }
}

/// In spool mode (the default) the lookup shows the `accepted` decision and, once a worker has
/// delivered the event, when OSCAR took it and after how many attempts.
#[tokio::test]
async fn verdict_lookup_in_spool_mode_shows_the_delivery() {
    let oscar = FakeOscar::start().await;
    let mut cfg = admin_config(&oscar.url());
    cfg.mode = Mode::Spool;
    let gw = TestGateway::start(cfg).await;
    let (status, first) = gw
        .post("svc", Some(GOOD_TOKEN), fixture("put-versioned.json"))
        .await;
    assert_eq!(status, 202, "{first}");
    let key = first["results"][0]["key"].as_str().unwrap().to_string();
    assert!(eventually(Duration::from_secs(10), || oscar.accepted().len() == 1).await);
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, v) = lookup(&gw, Some(ADMIN), &[("key", &key)]).await;
        assert_eq!(status, 200, "{v}");
        if v["decisions"].as_array().is_some_and(|d| d.len() == 2) {
            last = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = last["decisions"]
        .as_array()
        .expect("two decisions recorded");
    let got: Vec<&str> = d.iter().map(|d| d["verdict"].as_str().unwrap()).collect();
    assert_eq!(got, ["accepted", "forwarded"], "{last}");
    assert_eq!(d[1]["reason"], "spooled-delivered");
    assert_eq!(d[1]["attempts"], 1);
    assert!(d[1]["delivered_at"].is_string(), "{last}");
    assert!(last["delivered_at"].is_string(), "{last}");
    gw.stop().await;
}
