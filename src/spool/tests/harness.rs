//! A writer thread on a real file, driven op by op the way the spool drives it.

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::{
    identity::DedupKey,
    metrics::SpoolMetrics,
    spool::{
        SpoolError,
        io::FaultSwitch,
        record::Entry,
        unix_ms,
        writer::{self, Job, Limits, Op, Writer},
    },
};

pub(super) fn entry(i: u8) -> Vec<u8> {
    Entry {
        key: DedupKey([i; 16]),
        service: "svc".into(),
        authorization: Some(b"Bearer t".to_vec()),
        body: Bytes::from_static(b"{\"Records\":[{}]}"),
        accepted_ms: unix_ms(),
        not_before_ms: 0,
        held: false,
        attempts_made: 0,
        attempts: Vec::new(),
        dead: None,
        owner: 0,
    }
    .encode()
}

pub(super) struct Harness {
    pub tx: mpsc::Sender<Job>,
    pub shared: Arc<writer::Shared>,
    pub registry: prometheus_client::registry::Registry,
    pub thread: std::thread::JoinHandle<()>,
    pub faults: FaultSwitch,
}

impl Harness {
    pub fn start(path: &Path, faults: &FaultSwitch, max_entries: u64) -> (Self, writer::Opened) {
        let opened = writer::open(path, faults).unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = SpoolMetrics::register(&mut registry);
        let (tx, rx) = mpsc::channel(writer::CHANNEL);
        let w = Writer {
            path: path.to_path_buf(),
            faults: faults.clone(),
            shared: opened.shared.clone(),
            next_id: opened.next_id,
            limits: Limits {
                max_bytes: u64::MAX,
                max_entries,
            },
            delay: Duration::ZERO,
            metrics: metrics.clone(),
            last_sweep: std::time::Instant::now(),
        };
        let thread = std::thread::spawn(move || w.run(rx));
        let shared = opened.shared.clone();
        (
            Self {
                tx,
                shared,
                registry,
                thread,
                faults: faults.clone(),
            },
            opened,
        )
    }

    pub async fn submit(&self, op: Op) -> Result<u64, SpoolError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { op, reply }).await.unwrap();
        rx.await.unwrap()
    }

    pub fn metric(&self, name: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(-1.0)
    }

    pub async fn stop(self) {
        let _ = self.submit(Op::Stop).await;
        self.thread.join().unwrap();
    }
}
