//! The gateway in process: [`TestGateway`] on a fresh temp dir (sync mode unless the test sets
//! another), and the request helpers both it and [`super::SpoolGw`] post through.

use std::{net::SocketAddr, time::Duration};

use dedup_gateway::{
    Hooks,
    config::{Config, Mode},
    runtime::Workers,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{FakeOscar, GOOD_TOKEN, GateOscar, Posted};

/// A gateway task on a free loopback port, and a client for it: what [`TestGateway`] and
/// [`super::SpoolGw`] both are underneath (their fields and probes are reached through `Deref`).
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
    pub client: reqwest::Client,
}

impl Running {
    /// Validates `cfg`, binds a free loopback port and runs the gateway on it in a task.
    pub async fn spawn(cfg: Config, hooks: Hooks) -> Self {
        let (addr, shutdown, task) = spawn_gateway(cfg, hooks).await;
        Self {
            addr,
            shutdown,
            task,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The gateway's `/metrics` text.
    pub async fn metrics(&self) -> String {
        scrape_metrics(&self.client, &self.url("")).await
    }

    /// The status of `GET path`.
    pub async fn status_of(&self, path: &str) -> u16 {
        get_status(&self.client, &self.url(path)).await
    }
}

/// A running gateway on a temp dir of its own (removed when it drops).
#[derive(Debug)]
pub struct TestGateway {
    run: Running,
    _dir: tempfile::TempDir,
    /// Extra worker threads, when started with [`TestGateway::start_on_workers`].
    _workers: Option<Workers>,
}

impl std::ops::Deref for TestGateway {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.run
    }
}

/// A configuration for tests: sync mode, the fake as upstream, short timeouts, data in a temp dir.
pub fn test_config(upstream: &str) -> Config {
    // Spool mode is the default; these tests exercise sync mode (spool tests set it themselves).
    let mut cfg = Config {
        mode: Mode::Sync,
        upstream: upstream.to_string(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    cfg.delivery.request_timeout = Duration::from_secs(5);
    cfg.delivery.connect_timeout = Duration::from_secs(1);
    cfg.delivery.retry_initial = Duration::from_millis(50);
    cfg.delivery.retry_max = Duration::from_millis(500);
    cfg.dedup.lease = Duration::from_secs(10);
    cfg.policy.pending_grace = Duration::from_secs(30);
    cfg.http.shutdown_grace = Duration::from_secs(5);
    cfg
}

/// Makes service `svc` accept only [`GOOD_TOKEN`] (`inbound_tokens`).
pub fn guard_svc(cfg: &mut Config) {
    let guarded = dedup_gateway::config::ServiceConfig {
        inbound_tokens: vec![GOOD_TOKEN.into()],
        ..Default::default()
    };
    cfg.services.insert("svc".into(), guarded);
}

/// [`test_config`] with `admin.token` set to `token`.
pub fn admin_config(upstream: &str, token: &str) -> Config {
    let mut cfg = test_config(upstream);
    cfg.admin.token = token.into();
    cfg
}

impl TestGateway {
    /// Starts the gateway with `cfg` (its `data_dir` is replaced by a fresh temp dir).
    pub async fn start(cfg: Config) -> Self {
        Self::start_with(cfg, None).await
    }

    /// Starts the gateway as the binary does: connections spread over `count` single-threaded
    /// runtimes, this test's runtime first.
    pub async fn start_on_workers(cfg: Config, count: usize) -> Self {
        let workers =
            Workers::start(tokio::runtime::Handle::current(), count).expect("worker threads");
        Self::start_with(cfg, Some(workers)).await
    }

    async fn start_with(mut cfg: Config, workers: Option<Workers>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        cfg.data_dir = dir.path().to_path_buf();
        let hooks = Hooks {
            workers: workers
                .as_ref()
                .map(|w| w.handles().to_vec())
                .unwrap_or_default(),
            ..Default::default()
        };
        Self {
            run: Running::spawn(cfg, hooks).await,
            _dir: dir,
            _workers: workers,
        }
    }

    /// POSTs `body` to `/job/{service}` as MinIO does; returns status and parsed JSON answer.
    pub async fn post(
        &self,
        service: &str,
        auth: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> (u16, serde_json::Value) {
        let p = self.post_as(service, auth, body).await;
        (p.status, p.answer)
    }

    /// POSTs `body` to `/job/{service}` as MinIO does, with `auth` as its Authorization.
    pub async fn post_as(
        &self,
        service: &str,
        auth: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Posted {
        let url = self.url(&format!("/job/{service}"));
        post_webhook(&self.client, &url, auth, body).await
    }

    /// POSTs `body` to `/job/svc` with [`GOOD_TOKEN`]: the common case.
    pub async fn post_event(&self, body: impl Into<Vec<u8>>) -> Posted {
        self.post_as("svc", Some(GOOD_TOKEN), body).await
    }

    pub async fn stop(self) {
        self.run.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.run.task).await;
    }
}

/// Validates `cfg`, binds a free loopback port and runs the gateway on it in a task; returns its
/// address, the token that stops it and the task.
pub async fn spawn_gateway(
    cfg: Config,
    hooks: Hooks,
) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    cfg.validate().expect("test config must be valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        dedup_gateway::run_with_hooks(cfg, listener, s, hooks)
            .await
            .expect("gateway run");
    });
    (addr, shutdown, task)
}

/// A webhook request as MinIO sends it: JSON, with `auth` as its Authorization when given.
pub fn webhook(client: &reqwest::Client, url: &str, auth: Option<&str>) -> reqwest::RequestBuilder {
    let req = client.post(url).header("content-type", "application/json");
    match auth {
        Some(a) => req.header("authorization", a),
        None => req,
    }
}

/// POSTs `body` to `url` as MinIO does and reads the answer.
pub async fn post_webhook(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    body: impl Into<Vec<u8>>,
) -> Posted {
    let resp = webhook(client, url, auth)
        .body(body.into())
        .send()
        .await
        .expect("post to gateway");
    Posted::read(resp).await
}

/// The status of `GET url`.
pub async fn get_status(client: &reqwest::Client, url: &str) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

/// The text of `GET {base}/metrics`.
pub async fn scrape_metrics(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// A fresh [`FakeOscar`] and a [`TestGateway`] in front of it, on [`test_config`] as `tune`
/// changes it: the start of most sync-mode tests.
pub async fn oscar_and_gateway(tune: impl FnOnce(&mut Config)) -> (FakeOscar, TestGateway) {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    tune(&mut cfg);
    let gw = TestGateway::start(cfg).await;
    (oscar, gw)
}

/// A fresh [`GateOscar`] (holding every request until the test opens it) and a [`TestGateway`]
/// in front of it, on [`test_config`] as `tune` changes it.
pub async fn gate_and_gateway(tune: impl FnOnce(&mut Config)) -> (GateOscar, TestGateway) {
    let oscar = GateOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    tune(&mut cfg);
    let gw = TestGateway::start(cfg).await;
    (oscar, gw)
}
