//! A fault injector between the gateway and the real S3 server: one request per connection,
//! passed through, refused, delayed, answered 403, cut off half way, garbled, or a HEAD marked as
//! FAILED replication. It is not an S3 implementation: every listing the gateway parses comes from
//! moto, only damaged in transit.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    None = 0,
    /// Close the connection at once (S3 down).
    Refuse = 1,
    /// Answer 403 with an S3 error document.
    Forbidden = 2,
    /// Forward, then send only the first half of the answer's body.
    Truncate = 3,
    /// Forward, then flip bytes in the middle of the body.
    Garble = 4,
    /// Wait 5 s before answering.
    Slow = 5,
    /// Forward; a HEAD's answer also gets `x-amz-replication-status: FAILED`, the header MinIO
    /// sends for a version whose replication failed (moto has no replication to fail).
    ReplicationFailed = 6,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: Arc<AtomicU8>,
    /// Requests before the fault starts applying.
    after: Arc<AtomicU64>,
    seen: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl FaultProxy {
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, after, seen) = (
            Arc::new(AtomicU8::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let stop = CancellationToken::new();
        let (f, a, s, st) = (fault.clone(), after.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = st.cancelled() => return,
                    c = listener.accept() => c,
                };
                let Ok((sock, _)) = conn else { continue };
                let n = s.fetch_add(1, Ordering::SeqCst);
                let fault = if n >= a.load(Ordering::SeqCst) {
                    f.load(Ordering::SeqCst)
                } else {
                    0
                };
                tokio::spawn(serve(sock, upstream, fault));
            }
        });
        Self {
            addr,
            fault,
            after,
            seen,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to every request from the `after`-th one on (counted from now).
    pub fn set(&self, fault: Fault, after: u64) {
        let now = self.seen.load(Ordering::SeqCst);
        self.after.store(now + after, Ordering::SeqCst);
        self.fault.store(fault as u8, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Reads one request head (GET/HEAD/DELETE: no body needed; PUT bodies are passed when given
/// by Content-Length).
async fn read_request(sock: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

async fn serve(mut sock: TcpStream, upstream: u16, fault: u8) {
    if fault == Fault::Refuse as u8 {
        return; // dropped: connection closed without an answer
    }
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    if fault == Fault::Forbidden as u8 {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        let resp = format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        return;
    }
    if fault == Fault::Slow as u8 {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let is_head = req.starts_with(b"HEAD ");
    // One request per connection: ask the server to close after answering.
    let req = String::from_utf8_lossy(&req).replacen("\r\n", "\r\nconnection: close\r\n", 1);
    if up.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), up.read_to_end(&mut resp)).await;
    let Some(head_end) = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
    else {
        return;
    };
    let body_len = resp.len() - head_end;
    match fault {
        f if f == Fault::Truncate as u8 => {
            // The head still announces the full length; the body stops half way.
            let _ = sock.write_all(&resp[..head_end + body_len / 2]).await;
        }
        f if f == Fault::Garble as u8 => {
            let mid = head_end + body_len / 2;
            for b in resp.iter_mut().skip(mid).take(64) {
                *b = b'<';
            }
            let _ = sock.write_all(&resp).await;
        }
        f if f == Fault::ReplicationFailed as u8 && is_head => {
            let line_end = resp.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
            let mut marked = resp[..line_end].to_vec();
            marked.extend_from_slice(b"x-amz-replication-status: FAILED\r\n");
            marked.extend_from_slice(&resp[line_end..]);
            let _ = sock.write_all(&marked).await;
        }
        _ => {
            let _ = sock.write_all(&resp).await;
        }
    }
}
