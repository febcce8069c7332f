//! A throwaway S3-compatible server per test: moto's standalone server (PyPI `moto[server]`,
//! installed by `scripts/test`), on a free loopback port, killed on drop.
//!
//! Why moto: it implements versioning, ListObjectVersions (with delete markers) and
//! ListObjectsV2, runs from the package registry without a container, and starts in a few
//! seconds. It does not check signatures and ignores `encoding-type` on ListObjectVersions, so
//! the gateway's signing and key decoding are also covered by unit tests against AWS's format.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use dedup_gateway::reconcile::s3::S3Client;

pub struct Moto {
    pub port: u16,
    child: Option<Child>,
}

use crate::helpers::free_port;

impl Moto {
    /// Starts a fresh server and waits until it answers (up to 30 s per try, 3 tries).
    pub async fn start() -> Self {
        for _ in 0..3 {
            let mut m = Self {
                port: free_port(),
                child: None,
            };
            if m.spawn_and_wait().await {
                return m;
            }
        }
        panic!("moto_server did not start on any of 3 ephemeral ports");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn_and_wait(&mut self) -> bool {
        let port = self.port.to_string();
        let spawn = |mut c: Command| {
            c.args(["-H", "127.0.0.1", "-p", &port])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        // A `pip install --user` may leave the script off PATH; the module always runs.
        let child = spawn(Command::new(&bin))
            .or_else(|_| {
                let mut c = Command::new("python3");
                c.args(["-m", "moto.server"]);
                spawn(c)
            })
            .unwrap_or_else(|e| {
                panic!("cannot run {bin} ({e}); install it (scripts/test does: pip install 'moto[server]')")
            });
        self.child = Some(child);
        let client = reqwest::Client::new();
        // Up to 30 s: 300 tries, 100 ms apart (a cold Python start on a loaded machine).
        for _ in 0..300 {
            if let Some(c) = self.child.as_mut()
                && matches!(c.try_wait(), Ok(Some(_)))
            {
                return false;
            }
            let probe = client
                .get(self.url())
                .timeout(Duration::from_millis(500))
                .send();
            if let Ok(r) = probe.await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop();
        false
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client for `bucket` (moto accepts any key pair).
    pub fn client(&self, bucket: &str) -> S3Client {
        client_at(&self.url(), bucket)
    }
}

pub fn client_at(endpoint: &str, bucket: &str) -> S3Client {
    S3Client::new(
        endpoint,
        "us-east-1",
        bucket,
        ("testing".into(), "testing-secret".into()),
        10_000.0,
        Duration::from_secs(10),
    )
    .expect("s3 client")
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes the credential and token files a reconcile section names.
pub fn write_secrets(dir: &Path, token: &str) {
    std::fs::write(dir.join("access"), "testing\n").unwrap();
    std::fs::write(dir.join("secret"), "testing-secret\n").unwrap();
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
}
