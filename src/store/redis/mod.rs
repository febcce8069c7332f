//! The shared dedup store on Redis (or Valkey): every gateway replica sees the same identities.
//!
//! # Why this shape
//! Each identity is one Redis string key, `{key_prefix}{32 hex digits of the digest}`, whose value
//! is its state and owner — `H:<owner>` (held), `R:<owner>` (reserved), `D:<owner>` (a held copy
//! being delivered after its grace), `C` (committed) — and whose
//! expiry is the lease or the TTL, set with `PX` so that Redis itself forgets expired entries: there
//! is no sweeper, and a reservation whose owner died (crash, network partition) simply expires
//! after its lease. Every operation of the semantics table in [`super`] is one Lua script, so the
//! check ("is it held? do I own it?") and the change happen atomically on the server; a plain
//! `SET NX PX` could not express "a clean copy preempts a held one" nor "commit only if I own it".
//! The scripts compare the full 64-bit owner token (the memory store compares 22 bits; the
//! conformance suite uses tokens that differ in those bits too).
//!
//! # Connection and failure handling
//! One Redis: one multiplexed connection (`ConnectionManager`) per process, shared by all requests. It
//! reconnects by itself, with exponential backoff and jitter, when the connection drops; commands
//! issued meanwhile wait for the reconnect. Every command is additionally bounded by
//! `dedup.redis.command_timeout`, so a dead Redis costs one timeout, never a hung request; the
//! pipeline then follows `dedup.on_store_error`.
//!
//! A timed-out or dropped command may still have run on the server. For `reserve` and `hold`
//! that would leave an identity reserved by an owner who was told "error" and answered MinIO 503:
//! MinIO's retry would then find it `in-flight` and be answered `duplicate` — a lost event. So
//! after a failed `reserve`, `hold`, `release` or `commit`, a bounded background *repair* retries
//! the owner-checked `release` (or `commit`) until it gets an answer. That is safe because an owner
//! token is never reused after such an error (see [`super::DedupStore`]). Repairs are capped in
//! number; beyond the cap the lease alone bounds the damage.
//!
//! # Redis Cluster (`dedup.redis.cluster_urls`)
//! The same scripts and repairs over the `redis` crate's cluster client (`conn.rs`): the key is
//! `<key_prefix>{<hex>}` (the braces make each identity its own hash tag, so keys spread over all
//! slots), the client follows MOVED/ASK and failovers but never re-sends a command that may have
//! run, and every commit is read back from a replica and re-applied until one has it
//! (`Repair::Confirm`), so a failover does not forget a delivered identity. What asynchronous
//! replication can still lose is a *reservation* acknowledged by a master that died within its
//! replication lag: a copy arriving at the promoted replica may then be forwarded too (a
//! duplicate, never a loss; docs/operations.md "Redis Cluster").
//!
//! Health: every answer (or failure) updates one flag; each switch between healthy and unhealthy
//! is logged once and sets the `dedup_gateway_store_healthy` gauge. A background probe PINGs on an
//! interval (backing off while Redis is down) so the flag recovers, and the connection is rebuilt,
//! even when no traffic arrives; on a cluster the PING goes to every master, so the store is ready
//! only when every slot's owner answers. No log line ever contains a URL (it may carry a password).
//!
//! Just over 400 lines on purpose: one `DedupStore` method per script, each with the reason it
//! does or does not repair; the connection is in `conn`, the scripts in `scripts`, repairs in `repair`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ::redis::RedisResult;
use tokio_util::sync::CancellationToken;

use self::{conn::Conn, repair::Repair, scripts::*};
use super::{Claim, DedupStore, Existing, Owner, StoreError};
use crate::{config::RedisConfig, identity::DedupKey, metrics::Metrics};

mod conn;
mod repair;
mod scripts;

/// Health states: the first observation is logged too, so a Redis down at start shows.
const UNKNOWN: u8 = 0;
const HEALTHY: u8 = 1;
const UNHEALTHY: u8 = 2;

/// Health probe interval while healthy, and the bounds of its backoff while not.
const PROBE_HEALTHY: Duration = Duration::from_secs(1);
const PROBE_MIN: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(2);

/// A failure to set up the Redis store (bad URL, TLS not available for `rediss://`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RedisSetupError(pub(crate) String);

/// Cheap to clone: all clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    prefix: Vec<u8>,
    timeout: Duration,
    /// [`UNKNOWN`] until the first answer or failure, then [`HEALTHY`] or [`UNHEALTHY`].
    health: AtomicU8,
    repairs: AtomicUsize,
    repairs_overflowed: AtomicBool,
    metrics: Metrics,
}

impl std::fmt::Debug for RedisStore {
    // The URL may carry a password: show only what is safe.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.inner.conn.is_cluster())
            .field("prefix", &String::from_utf8_lossy(&self.inner.prefix))
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

/// `EVAL script 1 key owner ms`.
fn eval(script: &str, key: &[u8], owner: Owner, ms: u64) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key).arg(owner).arg(ms);
    cmd
}

fn px(d: Duration) -> u64 {
    // PX 0 is an error in Redis; a zero lease means "expires at once", i.e. 1 ms.
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Prepares the store without connecting: the first command (or the health probe) connects,
    /// so a gateway can start while Redis is still coming up (`/readyz` says 503 meanwhile).
    /// A non-empty `cluster_urls` selects Redis Cluster (`conn.rs`), else `url` is one Redis.
    pub fn new(cfg: &RedisConfig, metrics: Metrics) -> Result<Self, RedisSetupError> {
        let conn = Conn::open(cfg)?;
        // Unknown until the first answer; reported unhealthy so `/readyz` does not claim too early.
        metrics.store_healthy(false);
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                prefix: cfg.key_prefix.as_bytes().to_vec(),
                timeout: cfg.command_timeout,
                health: AtomicU8::new(UNKNOWN),
                repairs: AtomicUsize::new(0),
                repairs_overflowed: AtomicBool::new(false),
                metrics,
            }),
        })
    }

    /// The Redis key of an identity: the prefix, then the digest in hex (readable in `redis-cli`,
    /// and the same hex that `/admin/verdicts` and the logs show). On a cluster the hex is in
    /// braces, the identity's own hash tag (`conn.rs`).
    pub fn redis_key(&self, key: &DedupKey) -> Vec<u8> {
        let cluster = self.inner.conn.is_cluster();
        let mut k = Vec::with_capacity(self.inner.prefix.len() + 34);
        k.extend_from_slice(&self.inner.prefix);
        let mut hex = [0u8; 32];
        // 16 bytes always encode into 32 hex digits.
        let _ = hex::encode_to_slice(key.0, &mut hex);
        if cluster {
            k.push(b'{');
        }
        k.extend_from_slice(&hex);
        if cluster {
            k.push(b'}');
        }
        k
    }

    /// Whether the last command (or probe) got an answer.
    pub fn is_healthy(&self) -> bool {
        self.inner.health.load(Ordering::Relaxed) == HEALTHY
    }

    /// PINGs Redis until `stop` is cancelled: every second while healthy, with a growing delay
    /// (100 ms doubling to 2 s) while not, so the health flag and the connection recover without
    /// traffic.
    pub fn spawn_health_probe(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut backoff = PROBE_MIN;
            loop {
                let delay = if store.ping().await.is_ok() {
                    backoff = PROBE_MIN;
                    PROBE_HEALTHY
                } else {
                    let d = backoff;
                    backoff = (backoff * 2).min(PROBE_MAX);
                    d
                };
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        })
    }

    /// Records an answer or a failure; logs and sets the gauge on every switch.
    fn observe<T>(&self, r: &Result<T, StoreError>) {
        let ok = r.is_ok();
        let now = if ok { HEALTHY } else { UNHEALTHY };
        if self.inner.health.swap(now, Ordering::Relaxed) != now {
            self.inner.metrics.store_healthy(ok);
            match r {
                Ok(_) => tracing::info!(store = "redis", "dedup store healthy: Redis answers"),
                Err(e) => {
                    tracing::warn!(store = "redis", error = %e, "dedup store unhealthy: Redis does not answer")
                }
            }
        }
    }

    /// Awaits one command under the command timeout; maps every failure to `Unavailable` and,
    /// with one Redis, records the outcome in the health flag. On a cluster only the health
    /// probe does: with one shard down, commands for the others still succeed, and letting each
    /// answer flip the flag would log a switch per request.
    async fn call<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
        let r = self.bounded(fut).await;
        if !self.inner.conn.is_cluster() {
            self.observe(&r);
        }
        r
    }

    async fn bounded<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.inner.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("redis: {e}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis: no answer within {:?}",
                self.inner.timeout
            ))),
        }
    }

    /// Runs one script: KEYS[1] = `key`, ARGV = owner, milliseconds.
    ///
    /// `EVAL` with the source, not `EVALSHA`: a Redis that lost its script cache (restart) would
    /// answer `NOSCRIPT`, and the client's reload-and-resend would let other commands overtake the
    /// resent one — a repair's release could then land after a retry has already seen the orphan
    /// it was meant to remove. Redis caches the compiled script by its hash either way; the cost is
    /// a few hundred bytes per call.
    async fn run(
        &self,
        script: &'static str,
        key: &[u8],
        owner: Owner,
        ms: u64,
    ) -> Result<i64, StoreError> {
        let cmd = eval(script, key, owner, ms);
        self.call(self.inner.conn.query::<i64>(&cmd)).await
    }

    /// The shared path of reserve and hold: run, decode, and on failure schedule a release.
    async fn acquire(
        &self,
        script: &'static str,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let k = self.redis_key(key);
        match self.run(script, &k, owner, px(lease)).await {
            Ok(ACQUIRED) => Ok(Claim::Acquired),
            Ok(PREEMPTED) => Ok(Claim::Preempted),
            Ok(DUP_IN_FLIGHT) => Ok(Claim::Duplicate(Existing::InFlight)),
            Ok(DUP_DELIVERED) => Ok(Claim::Duplicate(Existing::Delivered)),
            Ok(DUP_HELD) => Ok(Claim::Duplicate(Existing::Held)),
            Ok(DUP_HELD_IN_FLIGHT) => Ok(Claim::Duplicate(Existing::HeldInFlight)),
            Ok(other) => {
                self.repair(k, owner, Repair::Release);
                Err(StoreError::Unavailable(format!(
                    "redis: unexpected script reply {other}"
                )))
            }
            Err(e) => {
                // The script may have run without its answer reaching us: undo it if so.
                self.repair(k, owner, Repair::Release);
                Err(e)
            }
        }
    }

    /// Runs an owner-checked script; on failure schedules `repair`.
    async fn owned(
        &self,
        script: &'static str,
        key: &DedupKey,
        owner: Owner,
        ms: u64,
        repair: Repair,
    ) -> Result<bool, StoreError> {
        let k = self.redis_key(key);
        match self.run(script, &k, owner, ms).await {
            Ok(v) => Ok(v == 1),
            Err(e) => {
                self.repair(k, owner, repair);
                Err(e)
            }
        }
    }
}

impl DedupStore for RedisStore {
    async fn reserve(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.acquire(RESERVE, key, owner, lease).await
    }

    async fn hold(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.acquire(HOLD, key, owner, lease).await
    }

    async fn claim_held(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        // No repair: whether or not an unanswered claim ran, the caller still owns the entry
        // (`H:owner` or `D:owner`) and retries the claim or releases the entry itself.
        let k = self.redis_key(key);
        self.run(CLAIM_HELD, &k, owner, px(lease))
            .await
            .map(|v| v == 1)
    }

    async fn renew(
        &self,
        key: &DedupKey,
        owner: Owner,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        // No repair: an unanswered renewal that ran only lengthened the caller's own entry.
        let k = self.redis_key(key);
        self.run(RENEW, &k, owner, px(lease)).await.map(|v| v == 1)
    }

    async fn commit(
        &self,
        key: &DedupKey,
        owner: Owner,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if !self.inner.conn.confirms() {
            return self
                .owned(COMMIT, key, owner, px(ttl), Repair::Commit(ttl))
                .await;
        }
        let k = self.redis_key(key);
        match self.run(COMMIT, &k, owner, px(ttl)).await {
            Ok(v) => {
                if v == 1 {
                    self.repair(k, owner, Repair::Confirm(ttl));
                }
                Ok(v == 1)
            }
            Err(e) => {
                // Delivered: whether or not the commit ran, the identity must end up committed.
                self.repair(k, owner, Repair::Confirm(ttl));
                Err(e)
            }
        }
    }

    async fn release(&self, key: &DedupKey, owner: Owner) -> Result<bool, StoreError> {
        self.owned(RELEASE, key, owner, 1, Repair::Release).await
    }

    async fn peek(&self, key: &DedupKey) -> Result<Option<Existing>, StoreError> {
        let k = self.redis_key(key);
        let cmd = ::redis::cmd("GET").arg(&k).to_owned();
        let v = self
            .call(self.inner.conn.query::<Option<Vec<u8>>>(&cmd))
            .await?;
        Ok(v.and_then(|v| match v.first() {
            Some(b'H') => Some(Existing::Held),
            Some(b'R') => Some(Existing::InFlight),
            Some(b'D') => Some(Existing::HeldInFlight),
            Some(b'C') => Some(Existing::Delivered),
            // Not a value this gateway writes: let the scripts decide.
            _ => None,
        }))
    }

    async fn insert_committed(&self, key: &DedupKey, ttl: Duration) -> Result<(), StoreError> {
        let k = self.redis_key(key);
        let cmd = ::redis::cmd("SET")
            .arg(&k)
            .arg("C")
            .arg("PX")
            .arg(px(ttl))
            .to_owned();
        self.call(self.inner.conn.query::<()>(&cmd)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // On a cluster PING goes to every master: ready only when every slot's owner answers.
        let cmd = ::redis::cmd("PING");
        let r = self
            .bounded(self.inner.conn.query::<::redis::Value>(&cmd))
            .await
            .map(drop);
        self.observe(&r);
        r
    }
}
