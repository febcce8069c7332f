//! The real binary as a child process, and raw TCP for what a well-behaved HTTP client never
//! sends.

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Output},
    thread::JoinHandle,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The gateway binary Cargo built for this test run.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dedup-gateway"))
}

/// A loopback port free right now, to hand to a child process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A command's stderr, as text.
pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that a command succeeded, showing its stderr if not.
#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(out.status.success(), "{}", stderr_of(out));
}

/// Collects a child's output stream line by line on a thread, until it closes.
pub fn collect_lines(stream: impl Read + Send + 'static) -> JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
            .collect()
    })
}

/// Sends SIGTERM to `child` and waits for it to exit.
pub fn terminate(child: &mut Child) -> ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().expect("wait for the child")
}

/// Polls `GET {base}/healthz` up to `tries` times, `pause` apart, until it answers 200.
pub async fn healthz_up(
    client: &reqwest::Client,
    base: &str,
    tries: usize,
    pause: Duration,
) -> bool {
    for _ in 0..tries {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            return true;
        }
        tokio::time::sleep(pause).await;
    }
    false
}

/// Sends raw bytes on a fresh connection and returns everything the server sent until it closed
/// (or `limit` passed; then what was read so far).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    read_until_close(&mut s, limit).await
}

/// Reads until EOF, a reset or `limit`.
pub async fn read_until_close(s: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}
