//! Secrets: the inbound token allowlist, the admin token, the keyed credential digest, and a
//! full run of the real binary whose every output (debug logs, metrics, admin listings,
//! `check-config`) is searched for the tokens it handled.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use crate::helpers::{
    internals::{Class, KeyDeriver, put_record},
    *,
};

const WRONG_TOKEN: &str = "Bearer wrong-token-4f1e2d3c4b5a69788796a5b4c3d2e1f0";
const ADMIN_TOKEN: &str = "admin-token-7c6b5a4938271605f4e3d2c1";
const HASH_SECRET: &str = "hash-secret-0a1b2c3d4e5f60718293a4b5";

/// With inbound tokens configured, a request without one of them is refused with 401 before
/// anything is stored: the later request with the right token is forwarded, not a duplicate.
#[tokio::test]
async fn the_inbound_allowlist_refuses_before_anything_is_stored() {
    let (oscar, gw) = oscar_and_gateway(guard_svc).await;
    let event = one_record("guarded.txt", "v1");
    let prefix = &GOOD_TOKEN[..GOOD_TOKEN.len() - 1];
    let longer = format!("{GOOD_TOKEN}0");
    for auth in [
        None,
        Some(WRONG_TOKEN),
        Some(prefix),
        Some(longer.as_str()),
        Some("Bearer "),
    ] {
        let p = gw.post_as("svc", auth, event.clone()).await;
        assert_eq!(p.status, 401, "{auth:?}: {}", p.answer);
        assert!(error_reason(&p.answer).contains("token"));
    }
    assert!(oscar.received().is_empty());
    // Other services are not guarded.
    gw.post_as("open", None, event.clone())
        .await
        .assert_status(200);
    gw.post_event(event).await.assert(200, &["forwarded"]);
    assert_eq!(oscar.received().len(), 2);
    gw.stop().await;
}

/// Admin routes: 404 while no admin token is configured; 401 for a missing, wrong, truncated or
/// extended token; 200 for the right one.
#[tokio::test]
async fn the_admin_token_guards_the_admin_routes() {
    let (oscar, gw) = oscar_and_gateway(|_| {}).await;
    let r = gw
        .client
        .get(gw.url("/admin/verdicts?bucket=b&object=o"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    gw.stop().await;

    let mut cfg = test_config(&oscar.url());
    cfg.admin.token = ADMIN_TOKEN.into();
    let gw = TestGateway::start(cfg).await;
    let url = gw.url("/admin/verdicts?bucket=b&object=o");
    let longer = format!("{ADMIN_TOKEN}x");
    for bad in [
        None,
        Some(ADMIN_TOKEN),
        Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
        Some(longer.as_str()),
    ] {
        let mut req = gw.client.get(&url);
        if let Some(t) = bad {
            // The bare token without `Bearer ` is also refused.
            req = req.header("authorization", t);
        }
        assert_eq!(req.send().await.expect("get").status(), 401, "{bad:?}");
    }
    for bad in [&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1], longer.as_str()] {
        let r = gw
            .client
            .get(&url)
            .bearer_auth(bad)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 401, "{bad}");
    }
    let r = gw
        .client
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    gw.stop().await;
}

/// The credential digest is keyed: the same token under two secrets gives unrelated keys, and a
/// key equals no unkeyed hash of the token, so a stored or logged key cannot be confirmed by
/// hashing guessed tokens without the secret kept in `data_dir`.
#[test]
fn the_credential_digest_is_keyed() {
    let token = "Bearer abc";
    let one = KeyDeriver::new(b"first-secret-0123456789");
    let two = KeyDeriver::new(b"second-secret-012345678");
    let k1 = one.key(
        &one.scope("svc", Some(token.as_bytes())),
        &put_record(),
        Class::Available,
    );
    let k2 = two.key(
        &two.scope("svc", Some(token.as_bytes())),
        &put_record(),
        Class::Available,
    );
    assert_ne!(k1, k2);
    for d in [&one, &two] {
        let k = d.key(
            &d.scope("svc", Some(token.as_bytes())),
            &put_record(),
            Class::Available,
        );
        for guess in ["abc", "Bearer abc", "svcBearer abc", "svc", ""] {
            let unkeyed = blake3::hash(guess.as_bytes());
            assert_ne!(&k.0[..], &unkeyed.as_bytes()[..16], "{guess}");
            assert!(!unkeyed.to_hex().starts_with(&k.to_hex()), "{guess}");
        }
    }
    // An attacker who knows every field but the secret, trying every short token under a
    // guessed (empty) secret, never reproduces the key.
    let guessed = KeyDeriver::new(b"");
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for a in alphabet {
        for b in alphabet {
            for c in alphabet.iter().take(6) {
                let t = format!("Bearer {}{}{}", *a as char, *b as char, *c as char);
                let k = guessed.key(
                    &guessed.scope("svc", Some(t.as_bytes())),
                    &put_record(),
                    Class::Available,
                );
                assert_ne!(k, k1);
            }
        }
    }
}

/// The secret kept in `data_dir` is created private (0600) with 256 bits, and reused.
#[cfg(unix)]
#[test]
fn the_dedup_secret_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = KeyDeriver::load_or_create(dir.path()).expect("create");
    let path = dir.path().join("dedup-secret");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read(&path).expect("read").len(), 64);
    let b = KeyDeriver::load_or_create(dir.path()).expect("reuse");
    let s = a.scope("svc", None);
    assert_eq!(
        a.key(&s, &put_record(), Class::Available),
        b.key(&b.scope("svc", None), &put_record(), Class::Available)
    );
}

fn secrets() -> [&'static str; 4] {
    // The distinctive part of each (a log line might drop the `Bearer ` prefix).
    [
        &GOOD_TOKEN[7..],
        &WRONG_TOKEN[7..],
        ADMIN_TOKEN,
        HASH_SECRET,
    ]
}

fn assert_clean(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(s), "{what} contains a secret ({}…)", &s[..6]);
    }
}

/// A full run of the real binary at `RUST_LOG=debug` in spool mode: a delivered event, a refused
/// token, an event OSCAR refuses for good (dead-lettered), metrics, the DLQ listing, the
/// verdicts and `check-config`. No token or secret appears in any of it.
#[tokio::test]
async fn no_secret_reaches_logs_metrics_listings_or_check_config() {
    let oscar = FakeOscar::start().await;
    oscar.require_token(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port, &oscar.url());

    let out = bin()
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("check-config");
    assert_success(&out);
    assert_clean("check-config stdout", &String::from_utf8_lossy(&out.stdout));
    assert_clean("check-config stderr", &stderr_of(&out));

    let mut child = bin()
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let logs = collect_lines(child.stderr.take().expect("stderr"));
    let printed = collect_lines(child.stdout.take().expect("stdout"));
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    if !healthz_up(&client, &base, 200, Duration::from_millis(50)).await {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "gateway did not come up: {}",
            logs.join().expect("logs").join("\n")
        );
    }
    traffic_and_clean_answers(&client, &base, &oscar).await;

    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
    let logs = logs.join().expect("logs").join("\n");
    let printed = printed.join().expect("stdout").join("\n");
    assert!(
        logs.contains("dedup_key") && logs.contains("DEBUG"),
        "debug logs were captured: {logs}"
    );
    assert_clean("logs", &logs);
    assert_clean("stdout", &printed);
    assert!(
        !logs.lines().any(|l| l.starts_with("forged")),
        "a forged log line: {logs}"
    );
    assert!(
        logs.contains(r#"object="x\nforged verdict=forwarded""#),
        "{logs}"
    );
    assert!(
        !logs.contains("other-token-for-svc-0001"),
        "the logs show a token"
    );
}

/// A spool-mode configuration for the binary on `port`, holding every secret of [`secrets`];
/// written to `dir/gateway.toml` (data in `dir/data`).
fn write_config(dir: &Path, port: u16, upstream: &str) -> PathBuf {
    let config = dir.join("gateway.toml");
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstream = \"{upstream}\"\nmode = \"spool\"\ndata_dir = \"{}\"\n\
             [delivery]\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\nmax_attempts = 2\n\
             [dedup]\nhash_secret = \"{HASH_SECRET}\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\
             [services.svc]\ninbound_tokens = [\"{GOOD_TOKEN}\", \"Bearer other-token-for-svc-0001\"]\n",
            dir.join("data").display()
        ),
    )
    .expect("write config");
    config
}

/// Drives the binary at `base` through a delivery, a log-forging object key, a refused token
/// and a dead letter; the DLQ listing, the metrics and the verdicts show no secret.
async fn traffic_and_clean_answers(client: &reqwest::Client, base: &str, oscar: &FakeOscar) {
    let job = format!("{base}/job/svc");
    let post = |auth: &'static str, b: String| post_webhook(client, &job, Some(auth), b);
    post(GOOD_TOKEN, one_record("delivered.txt", "v1"))
        .await
        .assert_status(202);
    assert!(eventually(Duration::from_secs(20), || oscar.accepted().len() == 1).await);
    // An object key with an encoded newline must not forge a log line.
    post(
        GOOD_TOKEN,
        one_record("x%0Aforged+verdict%3Dforwarded", "v1"),
    )
    .await
    .assert_status(202);
    post(WRONG_TOKEN, one_record("refused.txt", "v1"))
        .await
        .assert_status(401);
    // OSCAR refuses this token for good (401): dead-lettered with its headers kept for replay.
    post(
        "Bearer other-token-for-svc-0001",
        one_record("dead.txt", "v1"),
    )
    .await
    .assert_status(202);
    let dlq_url = format!("{base}/admin/dlq");
    let listing = retry(
        200,
        Duration::from_millis(50),
        async || {
            let resp = client.get(&dlq_url).bearer_auth(ADMIN_TOKEN).send();
            resp.await.expect("dlq").text().await.expect("text")
        },
        |l| l.contains("dead.txt"),
    )
    .await;
    assert!(listing.contains("dead.txt"), "{listing}");
    assert!(
        !listing.contains("other-token-for-svc-0001"),
        "the DLQ listing shows a token"
    );
    assert_clean("DLQ listing", &listing);
    let metrics = scrape_metrics(client, base).await;
    assert_clean("metrics", &metrics);
    assert!(!metrics.contains("other-token-for-svc-0001"));
    let verdicts = client
        .get(format!(
            "{base}/admin/verdicts?bucket=in&object=delivered.txt"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("v");
    assert_eq!(verdicts.status(), 200);
    assert_clean("verdicts", &verdicts.text().await.expect("text"));
}
