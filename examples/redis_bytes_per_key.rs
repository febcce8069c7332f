//! Measures how much Redis memory one delivered identity costs, for sizing the Redis backend.
//!
//! Inserts N committed identities through the real backend ([`RedisStore`]: the reserve script,
//! then the commit script, with the default key prefix and a 24 h TTL, exactly as the gateway
//! does) and prints the growth of `used_memory` from `INFO memory` divided by N. Run it through
//! `scripts/redis-bytes-per-key`, which starts a private `redis-server` for it:
//!
//! ```sh
//! scripts/redis-bytes-per-key            # N = 100000
//! cargo run --example redis_bytes_per_key -- redis://127.0.0.1:6379/0 100000   # your own Redis
//! ```
//!
//! The database must be empty of other writers during the run (the delta would count them).

// Test and measurement code: a panic on unexpected data is the failure it reports.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dedup_gateway::{
    config::Config,
    metrics::Metrics,
    pipeline::key::DedupKey,
    store::{Claim, DedupStore, RedisStore},
};
use futures_util::{StreamExt, stream};

async fn used_memory(url: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await?;
    let v = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .ok_or("INFO memory has no used_memory")?;
    Ok(v.trim().parse()?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: redis_bytes_per_key URL [N]")?;
    let n: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);

    let defaults = Config::default();
    let mut cfg = defaults.dedup.redis.clone();
    cfg.url = url.clone();
    cfg.command_timeout = Duration::from_secs(5);
    let store = RedisStore::new(&cfg, Metrics::new())?;
    store.ping().await?;
    let ttl = defaults.dedup.ttl;
    let lease = defaults.dedup.lease;

    let before = used_memory(&url).await?;
    let results: Vec<Result<(), String>> = stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                // Keys look like real digests: spread over all 16 bytes.
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
    let after = used_memory(&url).await?;
    let delta = after.saturating_sub(before);
    println!("identities        {n}");
    println!(
        "key               {}<32 hex digits>  value \"C\"  PX {}",
        cfg.key_prefix,
        ttl.as_millis()
    );
    println!("used_memory       {before} -> {after} bytes (delta {delta})");
    println!("bytes per key     {:.1}", delta as f64 / n as f64);
    Ok(())
}
