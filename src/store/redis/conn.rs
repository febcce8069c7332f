//! The connection under [`super::RedisStore`]: one Redis (or Valkey), or a Redis Cluster.
//!
//! # Why the cluster client never retries by itself
//! The `redis` crate's cluster client retries a command after a dropped connection. That is
//! wrong for the store's scripts: a `reserve` that ran but whose answer was lost would run again,
//! find its own reservation and answer `in-flight` — the copy would be told `duplicate` while
//! nobody delivers it (a lost event). So the cluster client is built with `retries(0)` and this
//! module retries only the answers that prove the command did **not** run: `MOVED`, `ASK` (sent
//! on to the importing node with `ASKING`, so a slot being migrated keeps working), `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`, `LOADING`, no connection to the slot's
//! node, or a refused connection. The client still refreshes its slot map on `MOVED`, so the
//! retry after a short sleep reaches the new owner of the slot. Any other failure (a connection
//! dropped mid-command, a timeout) may have run the command: it is returned as an error, and the
//! store's background repair settles it exactly as with one Redis. Every call stays bounded by
//! `dedup.redis.command_timeout` (the caller's timeout cuts the retry loop short).
//!
//! # Commits are confirmed on a replica
//! Redis Cluster replicates asynchronously: a master that acknowledged a commit and died before
//! its replica received it loses that commit in the failover, and a later copy of the event would
//! be forwarded again. `WAIT` after each commit would close that gap but blocks the connection it
//! runs on — the one multiplexed connection every request to that node shares — for a replica
//! round trip, and for its whole timeout while a shard has no live replica. So instead, with
//! `dedup.redis.confirm_commits` (default on), the store reads every commit back from a replica
//! through a second cluster connection that routes reads to replicas, a little later and off the
//! request path, and re-applies it on the master until a replica has it (`Repair::Confirm` in
//! [`super`]). After a failover that lost the commit, the replica now master gets it again.
//!
//! # Hash tags
//! Each identity is one key, and each script touches only that key; on a cluster the key is
//! `<key_prefix>{<hex>}`, whose braces make the digest the hash tag. The tag is per identity, so keys
//! spread evenly over all slots, and any later script that adds a companion key of the identity
//! (`<key_prefix>{<hex>}:x`) stays in the same slot. A prefix with braces would move the tag into the
//! prefix and put every identity in one slot: config validation refuses it.

use std::time::Duration;

use ::redis::{
    Client, Cmd, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    cluster_read_routing::RandomReplicaStrategy,
    cluster_routing::SingleNodeRoutingInfo,
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
    /// Reads routed to replicas (for commit confirmation); `None` when `confirm_commits` is off.
    replicas: Option<ClusterConnection>,
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
        let builder = || {
            ClusterClientBuilder::new(cfg.cluster_urls.iter().map(String::as_str))
                .retries(0)
                .connection_timeout(cfg.connect_timeout)
                .response_timeout(cfg.command_timeout)
        };
        let conn = builder()
            .build()
            .map_err(setup)?
            .get_pending_async_connection_with_config(Default::default());
        let replicas = if cfg.confirm_commits {
            let client = builder()
                .read_routing_strategy(RandomReplicaStrategy)
                .build()
                .map_err(setup)?;
            Some(client.get_pending_async_connection_with_config(Default::default()))
        } else {
            None
        };
        Ok(Self::Cluster(Box::new(Cluster { conn, replicas })))
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs one command; on a cluster, retried while its answer proves that it did not run.
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Self::Single(c) => cmd.query_async(&mut c.clone()).await,
            Self::Cluster(c) => c.send(cmd).await,
        }
    }

    /// Whether commits are read back from a replica (cluster with `confirm_commits`).
    pub(super) fn confirms(&self) -> bool {
        matches!(self, Self::Cluster(c) if c.replicas.is_some())
    }

    /// `GET key` on a replica of the key's slot (its master when it has none); `None` when
    /// commits are not confirmed.
    pub(super) async fn get_on_replica(&self, key: &[u8]) -> RedisResult<Option<Vec<u8>>> {
        let Self::Cluster(c) = self else {
            return Ok(None);
        };
        let Some(replicas) = &c.replicas else {
            return Ok(None);
        };
        let cmd = ::redis::cmd("GET").arg(key).to_owned();
        cmd.query_async(&mut replicas.clone()).await
    }
}

impl Cluster {
    /// Sends `cmd` by its key's slot until it runs or fails in a way that may have run it: an
    /// answer proving it did not run is retried (after `MOVED` the client has refreshed its slot
    /// map), and an `ASK` (the slot is being migrated and the key is on the importing node) is
    /// followed at once with `ASKING` + the command on that node.
    async fn send<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        let mut delay = RETRY_MIN;
        let mut ask: Option<(String, u16)> = None;
        for _ in 0..RETRY_LIMIT {
            let mut conn = self.conn.clone();
            let r = match ask.take() {
                None => cmd.query_async::<T>(&mut conn).await,
                Some((host, port)) => {
                    let mut p = ::redis::pipe();
                    p.cmd("ASKING").add_command(cmd.clone());
                    let route = SingleNodeRoutingInfo::ByAddress { host, port };
                    let mut replies = conn.route_pipeline(p, 1, 1, route).await?;
                    let v = replies.pop().unwrap_or(::redis::Value::Nil);
                    ::redis::from_redis_value(v).map_err(::redis::RedisError::from)
                }
            };
            match r {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::Ask) => {
                    ask = e
                        .redirect_node()
                        .and_then(|(addr, _slot)| addr.rsplit_once(':'))
                        .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)));
                    tracing::debug!(store = "redis", "cluster: ASK redirect");
                }
                Err(e) if did_not_run(&e) => {
                    tracing::debug!(store = "redis", error = %e, "cluster: command did not run; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
                r => return r,
            }
        }
        Err((ErrorKind::Client, "cluster: no node took the command").into())
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
