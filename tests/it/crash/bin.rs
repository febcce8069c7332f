//! The real binary on a data directory that outlives it, for the `kill -9` tests (this module's
//! crash test, `windows`, `redis::spool`): spawn with `DEDUP_GATEWAY_*` settings, SIGKILL,
//! SIGTERM, restart on a fresh port, and the requests a test makes to it.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub(crate) const ADMIN: &str = "admin-token-0123456789abcdef";

pub(crate) use crate::helpers::free_port;

/// Waits (bounded) until the gateway on `port` answers `/healthz`.
pub(crate) async fn wait_up(client: &reqwest::Client, port: u16) -> bool {
    for _ in 0..400 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The real binary on a data directory that outlives it: `kill -9` and restart on a fresh port.
pub(crate) struct Bin {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
    upstream: String,
    env: Vec<(String, String)>,
    pub client: reqwest::Client,
}

impl Bin {
    /// Spool mode by default, concurrency 1, short retries, an admin token; `env` adds or
    /// overrides `DEDUP_GATEWAY_*` settings. Waits until it serves.
    pub(crate) async fn start(dir: &std::path::Path, upstream: &str, env: &[(&str, &str)]) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let port = free_port();
        let child = Self::spawn(dir, upstream, &env, port);
        let me = Self {
            child,
            port,
            dir: dir.to_path_buf(),
            upstream: upstream.to_string(),
            env,
            client,
        };
        assert!(wait_up(&me.client, port).await, "gateway did not come up");
        me
    }

    fn spawn(dir: &std::path::Path, upstream: &str, env: &[(String, String)], port: u16) -> Child {
        Command::new(env!("CARGO_BIN_EXE_dedup-gateway"))
            .arg("serve")
            .env("DEDUP_GATEWAY_MODE", "spool")
            .env("DEDUP_GATEWAY_DELIVERY__CONCURRENCY", "1")
            .env("DEDUP_GATEWAY_DELIVERY__RETRY_INITIAL", "20ms")
            .env("DEDUP_GATEWAY_DELIVERY__RETRY_MAX", "200ms")
            .env("DEDUP_GATEWAY_DELIVERY__MAX_ATTEMPTS", "1000")
            .env("DEDUP_GATEWAY_ADMIN__TOKEN", ADMIN)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("DEDUP_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("DEDUP_GATEWAY_UPSTREAM", upstream)
            .env("DEDUP_GATEWAY_DATA_DIR", dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gateway")
    }

    /// SIGKILL, nothing flushed.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL (a no-op if the process already ended), then start again on the same data
    /// directory and a fresh port.
    pub(crate) async fn restart(&mut self) {
        self.kill9();
        self.port = free_port();
        self.child = Self::spawn(&self.dir, &self.upstream, &self.env, self.port);
        assert!(
            wait_up(&self.client, self.port).await,
            "gateway did not come back"
        );
    }

    /// Sets (or overrides) a `DEDUP_GATEWAY_*` setting for the next start.
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// SIGTERM (a graceful stop) and waits, at most `limit`, for the exit; whether it exited.
    pub(crate) async fn terminate(&mut self, limit: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// POSTs `body` to `/job/svc` with `auth`; status and JSON answer.
    pub(crate) async fn post(&self, auth: &str, body: Vec<u8>) -> (u16, Value) {
        post_to(&self.client, self.port, auth, body)
            .await
            .expect("post to gateway")
    }

    /// An admin request; status and JSON answer.
    pub(crate) async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let r = self
            .client
            .request(method, self.url(path))
            .header("authorization", format!("Bearer {ADMIN}"))
            .send()
            .await
            .expect("admin request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Every dead-letter entry (all pages, bounded).
    pub(crate) async fn dlq(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = String::new();
        for _ in 0..100 {
            let (s, page) = self
                .admin(
                    reqwest::Method::GET,
                    &format!("/admin/dlq?limit=1000{after}"),
                )
                .await;
            assert_eq!(s, 200, "{page}");
            out.extend(page["entries"].as_array().cloned().unwrap_or_default());
            match page["next"].as_u64() {
                Some(n) => after = format!("&after={n}"),
                None => break,
            }
        }
        out
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub(crate) async fn post_to(
    client: &reqwest::Client,
    port: u16,
    auth: &str,
    body: Vec<u8>,
) -> Result<(u16, Value), reqwest::Error> {
    let r = client
        .post(format!("http://127.0.0.1:{port}/job/svc"))
        .header("content-type", "application/json")
        .header("authorization", auth)
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}
