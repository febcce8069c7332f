//! Measures the Redis Cluster memory one delivered identity costs, masters and replicas, for
//! sizing `dedup.redis.cluster_urls` (docs/operations.md "Redis Cluster").
//!
//! Inserts N committed identities through the real backend in cluster mode ([`RedisStore`] with
//! `cluster_urls`: the reserve script, then the commit script and its replica confirmation, with
//! the default key prefix and a 24 h TTL, exactly as the gateway does), waits for the replicas to
//! catch up, and prints the growth of `used_memory` summed over the masters and over the
//! replicas, divided by N. Run it through `scripts/redis-cluster-sizing`, which starts a private
//! 6-node cluster for it; every URL given must be a node of the cluster (all of them, so that
//! the sums are complete), and the cluster must have no other writers during the run.

use std::time::Duration;

use dedup_gateway::{
    config::Config,
    metrics::Metrics,
    pipeline::key::DedupKey,
    store::{Claim, DedupStore, RedisStore},
};
use futures_util::{StreamExt, stream};

/// `(is master, used_memory)` of one node.
async fn node_memory(url: &str) -> Result<(bool, u64), Box<dyn std::error::Error>> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").query_async(&mut conn).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let used = field("used_memory:").ok_or("INFO has no used_memory")?;
    Ok((field("role:").as_deref() == Some("master"), used.parse()?))
}

/// Sums of `used_memory` over the masters and over the replicas.
async fn memory(urls: &[String]) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let (mut masters, mut replicas) = (0, 0);
    for u in urls {
        match node_memory(u).await? {
            (true, m) => masters += m,
            (false, m) => replicas += m,
        }
    }
    Ok((masters, replicas))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .ok_or("usage: redis_cluster_bytes_per_key N URL...")?
        .parse()?;
    let urls: Vec<String> = args.collect();
    if urls.is_empty() {
        return Err("usage: redis_cluster_bytes_per_key N URL...".into());
    }
    let defaults = Config::default();
    let mut cfg = defaults.dedup.redis.clone();
    cfg.cluster_urls = urls.clone();
    cfg.command_timeout = Duration::from_secs(5);
    let store = RedisStore::new(&cfg, Metrics::new())?;
    store.ping().await?;
    let (ttl, lease) = (defaults.dedup.ttl, defaults.dedup.lease);

    let before = memory(&urls).await?;
    let results: Vec<Result<(), String>> = stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                let digest = *blake3::hash(&i.to_le_bytes()).as_bytes();
                let mut k = [0u8; 16];
                k.copy_from_slice(&digest[..16]);
                let key = DedupKey(k);
                let owner = i | 1 << 63;
                match store.reserve(&key, owner, lease).await {
                    Ok(Claim::Acquired) => {}
                    other => return Err(format!("reserve #{i}: {other:?}")),
                }
                match store.commit(&key, owner, ttl).await {
                    Ok(true) => Ok(()),
                    other => Err(format!("commit #{i}: {other:?}")),
                }
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e.into());
    }
    // Replication and the confirmations settle (they read every commit back from a replica).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = memory(&urls).await?;
    let dm = after.0.saturating_sub(before.0);
    let dr = after.1.saturating_sub(before.1);
    println!("identities              {n}");
    println!(
        "key                     {}{{<32 hex digits>}}  value \"C\"  PX {}",
        cfg.key_prefix,
        ttl.as_millis()
    );
    println!(
        "masters used_memory     {} -> {} (delta {dm})",
        before.0, after.0
    );
    println!(
        "replicas used_memory    {} -> {} (delta {dr})",
        before.1, after.1
    );
    println!("bytes per key, masters  {:.1}", dm as f64 / n as f64);
    println!("bytes per key, replicas {:.1}", dr as f64 / n as f64);
    Ok(())
}
