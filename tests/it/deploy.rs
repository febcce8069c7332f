//! The deployment files under `deploy/` and the Dockerfile: every manifest parses, the pieces
//! are wired to each other, and the embedded `gateway.toml`s are valid configuration.

use std::path::{Path, PathBuf};

use dedup_gateway::config::{Config, StoreBackend};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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
        check_manifest(f);
    }
    check_base();
    check_redis_variant();
    check_redis_cluster_variant();
    let docker = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for needle in [
        "FROM rust:1.95",
        "cargo build --release --locked",
        "USER 65532",
    ] {
        assert!(docker.contains(needle), "Dockerfile lacks {needle}");
    }
}

/// Every document of `f` names its apiVersion and kind; a kustomization's resources and
/// patches exist.
fn check_manifest(f: &Path) {
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

/// The base: probes on `/healthz` and `/readyz`, the spool on the data volume, the port the
/// Service and ServiceMonitor use, and a termination grace longer than the shutdown grace.
fn check_base() {
    let base: Vec<Yaml> = [
        "statefulset.yaml",
        "service.yaml",
        "configmap.yaml",
        "servicemonitor.yaml",
        "prometheusrule.yaml",
    ]
    .iter()
    .flat_map(|f| docs(&repo().join("deploy/kubernetes").join(f)))
    .collect();
    let sts = find_kind(&base, "StatefulSet");
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let data_mount = check_container(sts, c);
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
    // Issue 13 item 8: an eviction of a live delivered identity alerts (a metric the binary has).
    let rule = &find_kind(&base, "PrometheusRule")["spec"]["groups"][0]["rules"][0];
    assert!(
        rule["expr"]
            .as_str()
            .is_some_and(|e| e.contains("dedup_gateway_store_evicted_live_total")),
        "the eviction alert watches the eviction counter"
    );
    // The HTTP drain, then a spool delivery already started finishing and committing.
    let d = &cfg.delivery;
    let stop = cfg.http.shutdown_grace + d.connect_timeout + d.request_timeout;
    assert!(
        pod["terminationGracePeriodSeconds"].as_i64().unwrap() > stop.as_secs() as i64 + 2,
        "the kubelet must wait out the graceful shutdown"
    );
}

/// The gateway container of StatefulSet `sts`: probed on `/healthz` and `/readyz`, with a
/// memory request and the `data` volume claimed and mounted; returns where it is mounted.
fn check_container<'a>(sts: &Yaml, c: &'a Yaml) -> &'a str {
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
    c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str() == Some("data"))
        .and_then(|m| m["mountPath"].as_str())
        .expect("data volume mounted")
}

/// The `gateway.toml` of an overlay's ConfigMap patch, with the hash secret that the Secret
/// provides in a real deployment.
fn overlay_config(dir: &str) -> Config {
    let patch = docs(&repo().join(dir).join("configmap-patch.yaml"));
    let text = patch[0]["data"]["gateway.toml"].as_str().unwrap();
    let mut value: toml::Table = text.parse().unwrap();
    value["dedup"]
        .as_table_mut()
        .unwrap()
        .insert("hash_secret".into(), "x".repeat(32).into());
    Config::from_toml(&toml::to_string(&value).unwrap()).unwrap_or_else(|e| panic!("{dir}: {e}"))
}

/// The Redis Cluster variant: the gateway is configured on `cluster_urls` naming nodes of the
/// cluster it deploys (3 masters + 3 replicas, cluster mode, AOF, noeviction), the Job creates
/// the cluster with one replica per master, and several gateway replicas share it.
fn check_redis_cluster_variant() {
    let cfg = overlay_config("deploy/redis-cluster");
    assert_eq!(cfg.dedup.backend, StoreBackend::Redis);
    let urls = &cfg.dedup.redis.cluster_urls;
    assert!(!urls.is_empty(), "the gateway runs on cluster_urls");
    assert!(cfg.dedup.redis.confirm_commits);
    let all = docs(&repo().join("deploy/redis-cluster/redis-cluster.yaml"));
    let sts = find_kind(&all, "StatefulSet");
    let name = sts["metadata"]["name"].as_str().unwrap();
    assert_eq!(sts["spec"]["replicas"].as_i64(), Some(6));
    assert_eq!(
        find_kind(&all, "Service")["metadata"]["name"].as_str(),
        Some(name)
    );
    for u in urls {
        let host = reqwest::Url::parse(u)
            .unwrap()
            .host_str()
            .unwrap()
            .to_string();
        assert!(
            host.starts_with(&format!("{name}-")) && host.ends_with(&format!(".{name}")),
            "{u} is a node of the deployed cluster"
        );
    }
    let conf = find_kind(&all, "ConfigMap")["data"]["redis.conf"]
        .as_str()
        .unwrap();
    for needle in [
        "cluster-enabled yes",
        "appendonly yes",
        "maxmemory-policy noeviction",
    ] {
        assert!(conf.contains(needle), "redis.conf lacks {needle}");
    }
    let job = find_kind(&all, "Job");
    let script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
        .as_str()
        .unwrap();
    assert!(script.contains("--cluster create") && script.contains("--cluster-replicas 1"));
    let replicas =
        docs(&repo().join("deploy/redis-cluster/statefulset-patch.yaml"))[0]["spec"]["replicas"]
            .as_i64();
    assert!(replicas.unwrap() > 1);
}

/// The shared-store variant: valid once the secret (from the environment) is present, on the
/// Redis backend, with more than one replica.
fn check_redis_variant() {
    let patch = docs(&repo().join("deploy/redis/configmap-patch.yaml"));
    let text = patch[0]["data"]["gateway.toml"].as_str().unwrap();
    let mut value: toml::Table = text.parse().unwrap();
    value["dedup"]
        .as_table_mut()
        .unwrap()
        .insert("hash_secret".into(), "x".repeat(32).into());
    let cfg = Config::from_toml(&toml::to_string(&value).unwrap()).unwrap();
    assert_eq!(cfg.dedup.backend, StoreBackend::Redis);
    let replicas =
        docs(&repo().join("deploy/redis/statefulset-patch.yaml"))[0]["spec"]["replicas"].as_i64();
    assert!(replicas.unwrap() > 1);
}
