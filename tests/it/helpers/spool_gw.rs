//! The gateway in spool mode on a data directory the test keeps, so it can be stopped and
//! started again on the same spool, with injected disk faults when the test asks.

use std::{path::Path, time::Duration};

use dedup_gateway::{
    Hooks,
    config::{Config, Mode},
    spool::FaultSwitch,
};
use serde_json::Value;

use super::{GOOD_TOKEN, Posted, Running, metric_value, post_webhook, test_config};

/// The admin token of [`spool_config`] (and of the admin tests).
pub const ADMIN: &str = "admin-token-0123456789abcdef";

/// Spool mode with short retries, an admin token, and the fake as upstream.
pub fn spool_config(upstream: &str) -> Config {
    let mut cfg = test_config(upstream);
    cfg.mode = Mode::Spool;
    cfg.admin.token = ADMIN.into();
    cfg.delivery.retry_initial = Duration::from_millis(20);
    cfg.delivery.retry_max = Duration::from_millis(200);
    cfg.delivery.max_attempts = 1000;
    cfg
}

/// A gateway in spool mode on a data directory the test keeps, so it can be restarted on it.
pub struct SpoolGw {
    run: Running,
}

impl std::ops::Deref for SpoolGw {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.run
    }
}

impl SpoolGw {
    pub async fn start(dir: &Path, mut cfg: Config, faults: Option<FaultSwitch>) -> Self {
        cfg.data_dir = dir.to_path_buf();
        let hooks = Hooks {
            spool_faults: faults,
            ..Default::default()
        };
        Self {
            run: Running::spawn(cfg, hooks).await,
        }
    }

    /// POSTs a body to `/job/svc` as MinIO does; status, `Retry-After`, JSON answer.
    pub async fn post(&self, body: Vec<u8>) -> (u16, Option<String>, Value) {
        let p = self.post_event(body).await;
        (p.status, p.retry_after, p.answer)
    }

    /// POSTs a body to `/job/svc` with [`GOOD_TOKEN`].
    pub async fn post_event(&self, body: Vec<u8>) -> Posted {
        self.post_as(GOOD_TOKEN, body).await
    }

    /// POSTs a body to `/job/svc` with `auth` as its Authorization.
    pub async fn post_as(&self, auth: &str, body: Vec<u8>) -> Posted {
        post_webhook(&self.client, &self.url("/job/svc"), Some(auth), body).await
    }

    /// `method path` with the admin token; status and body text.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, String) {
        let resp = self
            .client
            .request(method, self.url(path))
            .header("authorization", format!("Bearer {ADMIN}"))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// `GET path` with the admin token, answered 200 with JSON.
    pub async fn admin_get(&self, path: &str) -> Value {
        let (status, text) = self.admin(reqwest::Method::GET, path).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The value of the unlabelled metric `name` now (-1 when it is not exposed).
    pub async fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics().await, name)
    }

    /// Polls `/readyz` (at most 100 times, 50 ms apart) until it answers 200.
    pub async fn ready_within_5s(&self) -> bool {
        for _ in 0..100 {
            if self.status_of("/readyz").await == 200 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Waits (bounded, see `metric_until`) until the spool holds no undelivered event.
    pub async fn assert_drained(&self) {
        assert!(
            self.metric_until("dedup_gateway_spool_depth", |v| v == 0.0)
                .await,
            "spool drained"
        );
    }

    /// Polls `/metrics` (at most 150 times, 50 ms apart) until `name` satisfies `f`.
    pub async fn metric_until(&self, name: &str, f: impl Fn(f64) -> bool) -> bool {
        for _ in 0..150 {
            if f(self.metric(name).await) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub async fn stop(self) {
        self.run.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.run.task)
            .await
            .expect("gateway stops in time")
            .expect("gateway task");
    }
}

/// The value of an unlabelled metric line (-1 when it is not exposed).
pub fn metric(text: &str, name: &str) -> f64 {
    metric_value(text, name).unwrap_or(-1.0)
}
