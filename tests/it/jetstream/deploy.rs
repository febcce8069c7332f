//! The no-volume deployment of the JetStream variant (`deploy/jetstream/`): its gateway.toml is
//! valid and selects the JetStream spool on the NATS cluster it deploys, and the gateway pods
//! have no persistent volume.

use std::path::{Path, PathBuf};

use dedup_gateway::{config::Config, spool::jetstream::SpoolBackendKind};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(file: &str) -> Vec<Yaml> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/jetstream")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", Path::new(file).display()))
}

#[test]
fn jetstream_deploy_files_have_no_volume_and_a_valid_config() {
    let patch = deploy("configmap-patch.yaml");
    let text = patch[0]["data"]["gateway.toml"].as_str().unwrap();
    let mut value: toml::Table = text.parse().unwrap();
    value["dedup"]
        .as_table_mut()
        .unwrap()
        .insert("hash_secret".into(), "x".repeat(32).into());
    let cfg = Config::from_toml(&toml::to_string(&value).unwrap()).unwrap();
    assert_eq!(cfg.spool.backend, SpoolBackendKind::Jetstream);
    assert_eq!(cfg.spool.jetstream.replicas, 3);
    assert!(cfg.dedup.lease > cfg.delivery.request_timeout);

    let gw = &deploy("deployment.yaml")[0];
    assert_eq!(gw["kind"].as_str(), Some("Deployment"));
    assert!(gw["spec"]["volumeClaimTemplates"].is_badvalue());
    let volumes = gw["spec"]["template"]["spec"]["volumes"].as_vec().unwrap();
    assert!(
        volumes
            .iter()
            .all(|v| v["persistentVolumeClaim"].is_badvalue()),
        "no persistent volume for the gateway pods"
    );

    // The NATS cluster has as many nodes as the stream has replicas.
    let nats = deploy("nats.yaml");
    let sts = nats
        .iter()
        .find(|d| d["kind"].as_str() == Some("StatefulSet"))
        .unwrap();
    assert_eq!(sts["spec"]["replicas"].as_i64(), Some(3));
    assert_eq!(cfg.spool.jetstream.urls.len(), 3);

    let k = &deploy("kustomization.yaml")[0];
    let patches: Vec<_> = k["patches"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert!(patches.contains(&"delete-statefulset.yaml"));
}
