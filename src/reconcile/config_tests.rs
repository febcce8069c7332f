//! Unit tests of the reconcile section: defaults, the window rule, credentials, and the
//! documented example in `config/gateway.toml`.

use super::*;

fn base() -> ReconcileConfig {
    toml::from_str(
        r#"
        endpoint = "http://127.0.0.1:9000"
        bucket = "b"
        access_key_env = "A"
        secret_key_env = "S"
        token_env = "T"
        "#,
    )
    .expect("parses")
}

fn key_of(r: Result<(), ConfigError>) -> &'static str {
    match r {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn defaults_validate_against_the_default_ttl() {
    let c = base();
    assert_eq!(c.settle, Duration::from_secs(300));
    assert_eq!(c.classes, vec![ReconcileClass::Available]);
    c.validate(Duration::from_secs(24 * 3600)).expect("valid");
}

#[test]
fn a_window_that_cannot_work_is_refused_by_name() {
    let ttl = Duration::from_secs(3600);
    let mut c = base();
    c.margin = Duration::from_secs(3600);
    assert_eq!(key_of(c.validate(ttl)), "services.reconcile.margin");
    let mut c = base();
    c.settle = Duration::from_secs(3000);
    c.margin = Duration::from_secs(600);
    assert_eq!(key_of(c.validate(ttl)), "services.reconcile.settle");
    let mut c = base();
    c.margin = Duration::from_secs(600);
    c.interval = Duration::from_secs(3000);
    assert_eq!(key_of(c.validate(ttl)), "services.reconcile.interval");
}

#[test]
fn shadow_mode_refuses_reconciliation() {
    let mut cfg = crate::config::Config {
        mode: crate::config::Mode::Shadow,
        ..Default::default()
    };
    assert_eq!(key_of(base().check(&cfg)), "services.reconcile");
    cfg.mode = crate::config::Mode::Spool;
    base().check(&cfg).expect("valid in spool mode");
}

#[test]
fn credentials_and_limits_are_checked() {
    let ttl = Duration::from_secs(24 * 3600);
    let mut c = base();
    c.access_key_file = Some("/x".into());
    assert_eq!(key_of(c.validate(ttl)), "services.reconcile.endpoint");
    let mut c = base();
    c.endpoint = "http://user:secret@127.0.0.1:9000".into();
    assert_eq!(key_of(c.validate(ttl)), "services.reconcile.endpoint");
    let mut c = base();
    c.token_env = None;
    assert_eq!(key_of(c.validate(ttl)), "services.reconcile.token_env");
    let mut c = base();
    c.versioned = false;
    c.classes.push(ReconcileClass::Removed);
    assert_eq!(key_of(c.validate(ttl)), "services.reconcile.classes");
    let mut c = base();
    c.page_size = 5000;
    assert_eq!(key_of(c.validate(ttl)), "services.reconcile.page_size");
}

#[test]
fn authorization_follows_minio_auth_token_rules() {
    assert_eq!(authorization_from_token(" abc \n"), "Bearer abc");
    assert_eq!(authorization_from_token("Splunk abc"), "Splunk abc");
}

/// The commented `[services.my-service.reconcile]` example of `config/gateway.toml`, with its
/// settings uncommented, is a valid configuration whose values are the defaults.
#[test]
fn the_documented_example_parses_with_the_defaults() {
    let text = include_str!("../../config/gateway.toml");
    let start = text
        .find("# [services.my-service.reconcile]")
        .expect("example present");
    let toml_text: String = text[start..]
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let cfg = crate::config::Config::from_toml(&toml_text).expect("the example is valid");
    let rc = cfg.services["my-service"]
        .reconcile
        .clone()
        .expect("section");
    assert_eq!(rc.interval, Duration::from_secs(600));
    assert_eq!(rc.settle, Duration::from_secs(300));
    assert_eq!(rc.margin, Duration::from_secs(3600));
    assert_eq!(
        (rc.page_size, rc.page_attempts, rc.concurrency),
        (1000, 3, 16)
    );
    assert!(rc.versioned && rc.source.is_some());
    assert_eq!(rc.token_env.as_deref(), Some("OSCAR_SERVICE_TOKEN"));
    // Nothing secret is in the file, so check-config has nothing to reveal.
    assert!(
        cfg.masked_toml()
            .contains("token_env = \"OSCAR_SERVICE_TOKEN\"")
    );
}
