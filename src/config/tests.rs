use std::time::Duration;

use super::*;

#[test]
fn example_file_parses_and_matches_defaults_where_stated() {
    let text = include_str!("../../config/gateway.toml");
    let cfg = Config::from_toml(text).expect("config/gateway.toml must be valid");
    assert_eq!(cfg.dedup.ttl, Duration::from_secs(24 * 3600));
    assert_eq!(cfg.dedup.max_entries, 1_000_000);
    assert_eq!(cfg.http.body_limit, 1024 * 1024);
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail closure signature, test only
fn layers_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.toml");
    std::fs::write(
        &file,
        "upstream = \"http://file:1\"\n[dedup]\nttl = \"2h\"\n",
    )
    .unwrap();
    figment::Jail::expect_with(|jail| {
        jail.set_env("DEDUP_GATEWAY_DEDUP__TTL", "3h");
        jail.set_env("DEDUP_GATEWAY_MODE", "spool");
        let cfg = Config::load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(cfg.upstream, "http://file:1");
        assert_eq!(cfg.dedup.ttl, Duration::from_secs(3 * 3600));
        assert_eq!(cfg.mode, Mode::Spool);
        let o = Overrides {
            dedup: Some(DedupOverrides { ttl: "4h".into() }),
            upstream: Some("http://flag:2".into()),
            ..Default::default()
        };
        let cfg = Config::load(Some(&file), &o).unwrap();
        assert_eq!(cfg.dedup.ttl, Duration::from_secs(4 * 3600));
        assert_eq!(cfg.upstream, "http://flag:2");
        Ok(())
    });
}

#[test]
fn bad_values_name_their_key() {
    let err = Config::from_toml("[dedup]\nttl = \"0s\"").unwrap_err();
    assert!(err.to_string().contains("dedup.ttl"), "{err}");
    let err = Config::from_toml("upstream = \"ftp://x\"").unwrap_err();
    assert!(err.to_string().contains("upstream"), "{err}");
    let err = Config::from_toml("[policy]\npending = \"maybe\"").unwrap_err();
    assert!(err.to_string().contains("pending"), "{err}");
    let err = Config::from_toml("nonsense = 1").unwrap_err();
    assert!(err.to_string().contains("nonsense"), "{err}");
    // Huge durations would overflow `grace + lease` or `now + timeout` later (a panic).
    for (section, key) in [
        ("policy", "pending_grace"),
        ("dedup", "lease"),
        ("delivery", "max_age"),
    ] {
        let err = Config::from_toml(&format!("[{section}]\n{key} = \"100000000y\"")).unwrap_err();
        assert!(err.to_string().contains(key), "{err}");
        assert!(err.to_string().contains("10 years"), "{err}");
    }
}

#[test]
fn masked_output_hides_secrets() {
    let cfg = Config::from_toml(
        "[admin]\ntoken = \"admin-secret-123456\"\n[services.s]\ninbound_tokens = [\"Bearer tok-very-secret\"]",
    )
    .unwrap();
    let out = cfg.masked_toml();
    assert!(!out.contains("admin-secret-123456"));
    assert!(!out.contains("tok-very-secret"));
    assert!(out.contains("***"));
    // The masked output is itself valid configuration (modulo the masks).
    assert!(Config::from_toml(&out.replace("\"***\"", "\"xxxxxxxxxxxxxxxxxxxx\"")).is_ok());
}

/// `validate` runs its steps in a fixed order and names the first bad key, so an operator fixes
/// one key at a time and the message does not change between runs.
#[test]
fn validation_names_the_first_bad_key_in_order() {
    let first_bad = |toml: &str| match Config::from_toml(toml) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("{toml}: {other:?}"),
    };
    assert_eq!(
        first_bad("upstream = \"ftp://x\"\n[dedup]\nttl = \"0s\""),
        "upstream"
    );
    for key in ["max_connections", "max_inflight", "max_records"] {
        assert_eq!(
            first_bad(&format!("[http]\n{key} = 0\n[dedup]\nttl = \"0s\"")),
            format!("http.{key}")
        );
    }
    assert_eq!(
        first_bad("[delivery]\nmax_attempts = 0\n[dedup]\nttl = \"0s\""),
        "delivery.max_attempts"
    );
    assert_eq!(
        first_bad("[dedup]\nttl = \"0s\"\n[policy]\nforward = []"),
        "dedup.ttl"
    );
    assert_eq!(
        first_bad("[dedup]\nbackend = \"redis\"\n[policy]\nforward = []"),
        "dedup.hash_secret"
    );
    assert_eq!(
        first_bad("[policy]\nforward = []\n[admin]\ntoken = \"short\""),
        "policy.forward"
    );
    assert_eq!(
        first_bad("[admin]\ntoken = \"short\"\n[services.\"a b\"]\n"),
        "admin.token"
    );
    assert_eq!(first_bad("[services.\"a b\"]\n"), "services");
}
