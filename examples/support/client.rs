//! What the load generators (`openloop.rs`, `burst.rs`) share: the MinIO payload with a
//! per-request versionId, and one keep-alive HTTP/1.1 connection that reconnects when the server
//! closes it.
//!
//! Why a hand-written client and not `oha`: every request must carry its own object version
//! (contract §6: the identity is in the body), and oha sends one fixed body. hyper's low-level
//! connection is used so each worker owns exactly one connection, as wrk's do.

// Each example that includes this file uses a part of it.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The fixture split around its versionId value, so a request body costs two copies.
#[derive(Clone)]
pub struct Payload {
    prefix: Bytes,
    suffix: Bytes,
}

impl Payload {
    pub fn load(path: &str) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)?;
        let at = text
            .find("\"versionId\":\"")
            .ok_or_else(|| format!("{path} has no versionId to rewrite"))?;
        let start = at + "\"versionId\":\"".len();
        let end = text[start..]
            .find('"')
            .map(|e| start + e)
            .ok_or_else(|| format!("{path}: unterminated versionId"))?;
        Ok(Self {
            prefix: Bytes::copy_from_slice(&text.as_bytes()[..start]),
            suffix: Bytes::copy_from_slice(&text.as_bytes()[end..]),
        })
    }

    /// The payload with `version` as its versionId.
    pub fn with_version(&self, version: &str) -> Bytes {
        let mut b = Vec::with_capacity(self.prefix.len() + version.len() + self.suffix.len());
        b.extend_from_slice(&self.prefix);
        b.extend_from_slice(version.as_bytes());
        b.extend_from_slice(&self.suffix);
        Bytes::from(b)
    }
}

/// The answer to one POST: status and `Retry-After` in seconds when present.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<u64>,
}

/// One keep-alive connection to `addr`, opened on first use and again after a failure.
pub struct Conn {
    addr: SocketAddr,
    path: String,
    send: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(addr: SocketAddr, path: &str) -> Self {
        Self {
            addr,
            path: path.to_string(),
            send: None,
        }
    }

    /// Opens the connection now, so the first request does not pay for it.
    pub async fn warm(&mut self) -> Result<(), Error> {
        self.connect().await.map(|_| ())
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, Error> {
        if self.send.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(self.addr),
            )
            .await??;
            stream.set_nodelay(true)?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            self.send = Some(send);
        }
        self.send.as_mut().ok_or_else(|| "no connection".into())
    }

    /// POSTs `body` as the MinIO webhook would and reads the whole answer. A transport error
    /// drops the connection (the next call reconnects) and is returned.
    pub async fn post(&mut self, body: Bytes) -> Result<Answer, Error> {
        let (addr, path) = (self.addr, self.path.clone());
        let result = async {
            let send = self.connect().await?;
            send.ready().await?;
            let req = Request::post(path)
                .header("host", addr.to_string())
                .header("content-type", "application/json")
                .header("authorization", "Bearer bench-0123456789abcdef")
                .body(Full::new(body))?;
            let resp =
                tokio::time::timeout(Duration::from_secs(30), send.send_request(req)).await??;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            resp.into_body().collect().await?;
            Ok::<_, Error>(Answer {
                status,
                retry_after,
            })
        }
        .await;
        if result.is_err() {
            self.send = None;
        }
        result
    }
}

/// `host:port` → the first socket address it names.
pub fn resolve(addr: &str) -> Result<SocketAddr, Error> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("{addr} names no address").into())
}

/// The value of `--name VALUE` in `args`, if given.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}
