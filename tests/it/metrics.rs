//! Probes and metrics: `HEAD /job/...`, `/healthz`, `/readyz`, the counters a delivery moves, and
//! the Grafana dashboard querying only metrics a running gateway exports.

use std::collections::BTreeSet;

use dedup_gateway::config::Mode;
use serde_json::Value;

use crate::helpers::*;

/// HEAD probes, health, readiness and metrics.
#[tokio::test]
async fn probes_answer_and_metrics_count_verdicts_and_upstream_answers() {
    let (_oscar, gw) = oscar_and_gateway(|_| {}).await;
    let head = gw.client.head(gw.url("/job/svc")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(gw.status_of("/healthz").await, 200);
    assert_eq!(gw.status_of("/readyz").await, 200);
    gw.post_event(fixture("put-versioned.json")).await;
    gw.post_event(fixture("put-versioned.json")).await;
    let text = gw.metrics().await;
    for line in [
        "dedup_gateway_records_total{verdict=\"forwarded\"} 1",
        "dedup_gateway_records_total{verdict=\"duplicate\"} 1",
        "dedup_gateway_upstream_responses_total{class=\"2xx\"} 1",
        "dedup_gateway_upstream_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(line), "{text}");
    }
    assert!(!text.contains(GOOD_TOKEN));
    gw.stop().await;
}

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
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana-dashboard.json");
    let text = std::fs::read_to_string(path).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.len() >= 15, "{used:?}");

    let oscar = FakeOscar::start().await;
    let mut names = BTreeSet::new();
    for mode in [Mode::Sync, Mode::Spool] {
        let mut cfg = admin_config(&oscar.url(), ADMIN);
        cfg.mode = mode;
        let gw = TestGateway::start(cfg).await;
        for name in [
            "put-versioned.json",
            "put-versioned.json",
            "put-replication-pending.json",
        ] {
            gw.post_event(fixture(name)).await;
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
