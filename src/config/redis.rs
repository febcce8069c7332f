//! Redis Cluster settings: checked and masked here, beside the rest of the configuration, so the
//! store (which reads `RedisConfig`) stays below the config in the import graph.

use super::RedisConfig;

/// Config validation of cluster mode (called from `Config::validate`): the key that is wrong and
/// why.
pub(crate) fn validate_cluster(cfg: &RedisConfig) -> Result<(), (&'static str, String)> {
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
pub(crate) fn mask_cluster_urls(urls: &mut [String]) {
    for u in urls {
        if let Ok(mut url) = reqwest::Url::parse(u)
            && url.password().is_some()
        {
            let _ = url.set_password(Some("***"));
            *u = url.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, StoreBackend};

    fn cluster_config(urls: &[&str]) -> Config {
        let mut c = Config::default();
        c.dedup.backend = StoreBackend::Redis;
        c.dedup.hash_secret = "a-secret-of-at-least-16".into();
        c.dedup.redis.cluster_urls = urls.iter().map(|u| u.to_string()).collect();
        c
    }

    fn bad_key(c: &Config) -> Option<&'static str> {
        match c.validate() {
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn cluster_urls_are_validated_under_their_own_key() {
        assert_eq!(
            bad_key(&cluster_config(&[
                "redis://127.0.0.1:7000",
                "rediss://h:7001"
            ])),
            None
        );
        assert_eq!(
            bad_key(&cluster_config(&["redis://h:7000", "not a url"])),
            Some("dedup.redis.cluster_urls")
        );
        assert_eq!(
            bad_key(&cluster_config(&["http://h:7000"])),
            Some("dedup.redis.cluster_urls")
        );
        let mut c = cluster_config(&["redis://h:7000"]);
        c.dedup.redis.key_prefix = "gw{x}:".into();
        assert_eq!(
            bad_key(&c),
            Some("dedup.redis.key_prefix"),
            "braces would move the hash tag"
        );
        // Without cluster URLs the prefix is free as before.
        let mut c = cluster_config(&[]);
        c.dedup.redis.key_prefix = "gw{x}:".into();
        assert_eq!(bad_key(&c), None);
    }

    #[test]
    fn check_config_masks_every_cluster_password() {
        let c = cluster_config(&[
            "redis://:s3cret@h1:7000",
            "redis://user:s3cret@h2:7001",
            "redis://h3:7002",
        ]);
        let shown = c.masked_toml();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://:***@h1:7000"), "{shown}");
        assert!(shown.contains("redis://user:***@h2:7001"), "{shown}");
        assert!(shown.contains("redis://h3:7002"), "{shown}");
    }
}
