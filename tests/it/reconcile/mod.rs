//! Issue 11: reconciliation against a real S3-compatible server (moto, [`moto`]), the real gateway
//! and the fake OSCAR. Objects are uploaded through the gateway's own signed S3 client.

mod cli;
mod crash;
mod faults;
mod health;
mod moto;
mod proxy;
mod scenarios;
mod surfaces;
mod unversioned;

use std::{collections::HashMap, path::Path, time::Duration};

use dedup_gateway::{
    config::Config,
    reconcile::{ReconcileClass, ReconcileConfig},
};
use serde_json::Value;

use crate::helpers::*;

pub const SVC: &str = "plants";

/// The OSCAR service token (the part after `Bearer ` of [`GOOD_TOKEN`]).
pub fn token() -> &'static str {
    GOOD_TOKEN.trim_start_matches("Bearer ")
}

/// A reconcile section for `bucket` at `endpoint`, secrets in files under `dir`, no settle.
pub fn reconcile_cfg(endpoint: &str, bucket: &str, dir: &Path) -> ReconcileConfig {
    moto::write_secrets(dir, token());
    let text = format!(
        r#"
        endpoint = "{endpoint}"
        bucket = "{bucket}"
        access_key_file = "{d}/access"
        secret_key_file = "{d}/secret"
        token_file = "{d}/token"
        settle = "0s"
        interval = "1h"
        request_timeout = "2s"
        page_attempts = 1
        page_size = 50
        "#,
        d = dir.display()
    );
    toml::from_str(&text).expect("reconcile section parses")
}

/// The test configuration with the admin routes on and `rc` for [`SVC`].
pub fn gateway_cfg(oscar: &FakeOscar, rc: ReconcileConfig) -> Config {
    let mut cfg = test_config(&oscar.url());
    cfg.admin.token = ADMIN.into();
    cfg.services.insert(
        SVC.into(),
        dedup_gateway::config::ServiceConfig {
            reconcile: Some(rc),
            ..Default::default()
        },
    );
    cfg
}

/// `POST /admin/reconcile/{SVC}`: status and report.
pub async fn run_now(gw: &TestGateway) -> (u16, Value) {
    let resp = gw
        .client
        .post(gw.url(&format!("/admin/reconcile/{SVC}")))
        .bearer_auth(ADMIN)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("POST /admin/reconcile");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

/// A MinIO `s3:ObjectCreated:Put` event (the shared fixture) for one version, `encoded_key` as
/// MinIO encodes it.
pub fn minio_put(bucket: &str, encoded_key: &str, version_id: Option<&str>) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture("put-versioned.json")).unwrap();
    let obj = &mut v["Records"][0]["s3"]["object"];
    obj["key"] = Value::String(encoded_key.into());
    match version_id {
        Some(id) => obj["versionId"] = Value::String(id.into()),
        None => {
            obj.as_object_mut().unwrap().remove("versionId");
        }
    }
    v["Records"][0]["s3"]["bucket"]["name"] = Value::String(bucket.into());
    serde_json::to_vec(&v).unwrap()
}

/// What OSCAR accepted, per (decoded key, versionId or eTag, event name): how many times.
pub fn triggers(oscar: &FakeOscar) -> HashMap<(String, String, String), usize> {
    let mut out = HashMap::new();
    for r in oscar.accepted() {
        let v: Value = serde_json::from_slice(&r.body).expect("json body");
        let rec = &v["Records"][0];
        let obj = &rec["s3"]["object"];
        let key = dedup_gateway::pipeline::parse::decode_form_component(
            obj["key"].as_str().unwrap_or_default(),
        )
        .expect("decodable key");
        let version = obj["versionId"]
            .as_str()
            .or(obj["eTag"].as_str())
            .unwrap_or_default()
            .to_string();
        let name = rec["eventName"].as_str().unwrap_or_default().to_string();
        *out.entry((key, version, name)).or_insert(0) += 1;
    }
    out
}

pub fn with_removed(mut rc: ReconcileConfig) -> ReconcileConfig {
    rc.classes = vec![ReconcileClass::Available, ReconcileClass::Removed];
    rc
}
