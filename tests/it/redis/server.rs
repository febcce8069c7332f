//! A throwaway `redis-server` per test: ephemeral loopback port, no persistence, killed on drop.
//!
//! Each test starts its own server so tests share no state and a test may stop or restart "its"
//! Redis. The port is found by binding 127.0.0.1:0 and releasing it; another process could take it
//! in between, so a start that does not come up is retried on a fresh port (a bounded number of
//! times). A restart reuses the same port, as a Redis pod behind a Service would.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

use crate::helpers::free_port;

impl RedisServer {
    /// Starts a fresh server and waits until it answers PING.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let mut s = Self {
                port: free_port(),
                child: None,
                dir: tempfile::tempdir().expect("temp dir for redis"),
            };
            if s.spawn_and_wait().await {
                return s;
            }
            // Dropping `s` kills whatever started.
        }
        panic!("redis-server did not start on any of 5 ephemeral ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would: SIGKILL, nothing saved).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.stop();
        for _ in 0..3 {
            if self.spawn_and_wait().await {
                return;
            }
            self.stop();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    async fn spawn_and_wait(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); install it (scripts/test does: apt-get install redis-server)"));
        self.child = Some(child);
        // Up to 5 s: 100 tries, 50 ms apart.
        for _ in 0..100 {
            if let Some(c) = self.child.as_mut()
                && matches!(c.try_wait(), Ok(Some(_)))
            {
                return false; // exited: port taken, most likely
            }
            if self.answers_ping().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// One raw `PING` over TCP, bounded by a short timeout.
    pub async fn answers_ping(&self) -> bool {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .ok()?;
            s.write_all(b"PING\r\n").await.ok()?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"+PONG\r\n").then_some(())
        };
        matches!(
            tokio::time::timeout(Duration::from_millis(500), attempt).await,
            Ok(Some(()))
        )
    }

    /// Runs one command through `redis-cli` (test inspection only); returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
