//! Defaults: the lowest configuration layer, one `Default` per section so each value reads next to
//! its neighbours. `config/gateway.toml` states the same values; a test loads it and checks a few.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use super::{
    AdminConfig, Config, DedupConfig, DeliveryConfig, HttpConfig, LogFormat, Mode, OnStoreError,
    PendingPolicy, PolicyConfig, RedisConfig, SpoolConfig, StoreBackend,
};

/// The forwarding patterns used when none are configured: creations, removals and completed replications.
pub const DEFAULT_FORWARD: &[&str] = &[
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:ObjectRemoved:DeleteAllVersions",
    "s3:Replication:OperationCompletedReplication",
    "s3:Replication:OperationReplicatedAfterThreshold",
];

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            upstream: "http://oscar.oscar:8080".into(),
            mode: Mode::Spool,
            data_dir: PathBuf::from("./data"),
            tls_cert: None,
            tls_key: None,
            log_format: LogFormat::Text,
            http: HttpConfig::default(),
            delivery: DeliveryConfig::default(),
            dedup: DedupConfig::default(),
            policy: PolicyConfig::default(),
            spool: SpoolConfig::default(),
            admin: AdminConfig::default(),
            services: BTreeMap::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_inflight: 1024,
            max_records: 1000,
            shutdown_grace: Duration::from_secs(30),
            workers: 0,
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            ca_file: None,
            pool_max_idle: 64,
            concurrency: 32,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(300),
            max_attempts: 20,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            ttl: Duration::from_secs(24 * 3600),
            max_entries: 1_000_000,
            sweep_interval: Duration::from_secs(60),
            lease: Duration::from_secs(120),
            on_store_error: OnStoreError::FailClosed,
            hash_secret: String::new(),
            redis: RedisConfig::default(),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            key_prefix: "dedup-gateway:".into(),
            command_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            cluster_urls: Vec::new(),
            confirm_commits: true,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            forward: DEFAULT_FORWARD.iter().map(|s| s.to_string()).collect(),
            pending: PendingPolicy::Hold,
            pending_grace: Duration::from_secs(30),
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024 * 1024,
            max_entries: 1_000_000,
            group_commit_delay: Duration::from_millis(0),
            segment_bytes: crate::spool::SEGMENT_BYTES,
            backend: Default::default(),
            jetstream: Default::default(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token: String::new(),
            verdict_history: 10_000,
        }
    }
}
