//! The connection under [`super::RedisStore`]: one Redis (or Valkey), or a Redis Cluster.
//!
//! # Why the cluster client never retries by itself
//! The `redis` crate's cluster client retries a command after a dropped connection. That is
//! wrong for the store's scripts: a `reserve` that ran but whose answer was lost would run again,
//! find its own reservation and answer `in-flight` — the copy would be told `duplicate` while
//! nobody delivers it (a lost event). So the cluster client is built with `retries(0)` and this
//! module retries only the answers that prove the command did **not** run: `MOVED`, `ASK`,
//! `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`, `LOADING`, no connection to the slot's
//! node, or a refused connection. The client still refreshes its slot map on `MOVED`, so the
//! retry after a short sleep reaches the new owner of the slot. Any other failure (a connection
//! dropped mid-command, a timeout) may have run the command: it is returned as an error, and the
//! store's background repair settles it exactly as with one Redis. Every call stays bounded by
//! `dedup.redis.command_timeout` (the caller's timeout cuts the retry loop short).
//!
//! # Commits wait for a replica
//! Redis Cluster replicates asynchronously: a master that acknowledged a commit and died before
//! its replica received it loses that commit in the failover, and a later copy of the event would
//! be forwarded again. So on a cluster a commit is pipelined with `WAIT commit_replicas t` on the
//! same connection (same node); `t` is a quarter of the command timeout. When fewer replicas
//! acknowledge in time the commit still counts (OSCAR has the event), and the store re-applies it
//! in the background until a replica confirms it (see `Repair::Confirm` in [`super`]).
//!
//! # Hash tags
//! Each identity is one key, and each script touches only that key; on a cluster the key is
//! `{prefix}{<hex>}`, whose braces make the digest the hash tag. The tag is per identity, so keys
//! spread evenly over all slots, and any later script that adds a companion key of the identity
//! (`{prefix}{<hex>}:x`) stays in the same slot. A prefix with braces would move the tag into the
//! prefix and put every identity in one slot: config validation refuses it.

use std::time::Duration;

use ::redis::{
    Client, Cmd, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};

use super::RedisSetupError;
use crate::config::RedisConfig;

/// Bounds of the sleep between retries of a command that did not run, and their number (the
/// command timeout usually ends the loop first).
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(200);
const RETRY_LIMIT: u32 = 64;

/// One Redis behind a reconnecting multiplexed connection, or a cluster.
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(Box<Cluster>),
}

pub(super) struct Cluster {
    conn: ClusterConnection,
    /// `WAIT` arguments after a commit: replicas and milliseconds (0 replicas: no `WAIT`).
    replicas: u32,
    wait_ms: u64,
}

/// A script's reply and, on a cluster with `commit_replicas` > 0, how many replicas acknowledged.
pub(super) struct Waited {
    pub reply: i64,
    /// `None`: no replica was asked for.
    pub acked: Option<i64>,
    pub wanted: u32,
}

impl Waited {
    /// Whether the write is known to be on as many replicas as configured.
    pub fn confirmed(&self) -> bool {
        self.acked.is_none_or(|n| n >= i64::from(self.wanted))
    }
}

impl Conn {
    /// Prepares the connection without connecting (the first command connects).
    pub(super) fn open(cfg: &RedisConfig) -> Result<Self, RedisSetupError> {
        let setup = |e: ::redis::RedisError| RedisSetupError(e.to_string());
        if cfg.cluster_urls.is_empty() {
            // The redis error names the problem, never the password.
            let client = Client::open(cfg.url.as_str()).map_err(setup)?;
            let conn_cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.connect_timeout))
                .set_response_timeout(Some(cfg.command_timeout))
                .set_min_delay(Duration::from_millis(100))
                .set_max_delay(Duration::from_secs(2))
                .set_exponent_base(2.0)
                .set_number_of_retries(4);
            let conn = ConnectionManager::new_lazy_with_config(client, conn_cfg).map_err(setup)?;
            return Ok(Self::Single(conn));
        }
        let client = ClusterClientBuilder::new(cfg.cluster_urls.iter().map(String::as_str))
            .retries(0)
            .connection_timeout(cfg.connect_timeout)
            .response_timeout(cfg.command_timeout)
            .build()
            .map_err(setup)?;
        let conn = client.get_pending_async_connection_with_config(Default::default());
        let wait_ms = u64::try_from((cfg.command_timeout / 4).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        Ok(Self::Cluster(Box::new(Cluster {
            conn,
            replicas: cfg.commit_replicas,
            wait_ms,
        })))
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs one command; on a cluster, retried while its answer proves that it did not run.
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Self::Single(c) => cmd.query_async(&mut c.clone()).await,
            Self::Cluster(c) => {
                c.retrying(|mut conn| async move { cmd.query_async::<T>(&mut conn).await })
                    .await
            }
        }
    }

    /// Runs a write script and, on a cluster asking for replicas, `WAIT`s for them on the same
    /// node. One Redis: the script alone (`acked` is `None`).
    pub(super) async fn query_waited(&self, cmd: &Cmd) -> RedisResult<Waited> {
        let c = match self {
            Self::Cluster(c) if c.replicas > 0 => c,
            _ => {
                let reply = self.query::<i64>(cmd).await?;
                return Ok(Waited {
                    reply,
                    acked: None,
                    wanted: 0,
                });
            }
        };
        let mut pipe = ::redis::pipe();
        pipe.add_command(cmd.clone())
            .cmd("WAIT")
            .arg(c.replicas)
            .arg(c.wait_ms);
        let pipe = &pipe;
        let (reply, acked): (i64, i64) = c
            .retrying(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await?;
        Ok(Waited {
            reply,
            acked: Some(acked),
            wanted: c.replicas,
        })
    }
}

impl Cluster {
    async fn retrying<T, F, Fut>(&self, mut op: F) -> RedisResult<T>
    where
        F: FnMut(ClusterConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut delay = RETRY_MIN;
        let mut tries = 0;
        loop {
            match op(self.conn.clone()).await {
                Err(e) if did_not_run(&e) && tries < RETRY_LIMIT => {
                    tries += 1;
                    tracing::debug!(store = "redis", error = %e, "cluster: command did not run; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
                r => return r,
            }
        }
    }
}

/// Whether a failed command certainly did not run on any node, so that sending it again cannot
/// apply it twice.
fn did_not_run(e: &::redis::RedisError) -> bool {
    match e.kind() {
        ErrorKind::Server(k) => matches!(
            k,
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::BusyLoading
        ),
        ErrorKind::ClusterConnectionNotFound => true,
        _ => e.is_connection_refusal(),
    }
}

/// Config validation of cluster mode (called from `Config::validate`): the key that is wrong and
/// why.
pub fn validate_cluster(cfg: &RedisConfig) -> Result<(), (&'static str, String)> {
    if cfg.cluster_urls.is_empty() {
        return Ok(());
    }
    for u in &cfg.cluster_urls {
        let url =
            reqwest::Url::parse(u).map_err(|e| ("dedup.redis.cluster_urls", e.to_string()))?;
        if !matches!(url.scheme(), "redis" | "rediss" | "valkey" | "valkeys") {
            return Err((
                "dedup.redis.cluster_urls",
                "every URL must be redis:// or rediss://".into(),
            ));
        }
    }
    if cfg.key_prefix.contains(['{', '}']) {
        return Err((
            "dedup.redis.key_prefix",
            "must not contain braces with cluster_urls: the braces around each identity are its hash tag".into(),
        ));
    }
    Ok(())
}

/// Replaces the password of every cluster URL by `***` (for `check-config`).
pub fn mask_cluster_urls(urls: &mut [String]) {
    for u in urls {
        if let Ok(mut url) = reqwest::Url::parse(u)
            && url.password().is_some()
        {
            let _ = url.set_password(Some("***"));
            *u = url.to_string();
        }
    }
}
