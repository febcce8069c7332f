//! Secrets: the inbound token allowlist, the admin token, the keyed credential digest, and a
//! full run of the real binary whose every output (debug logs, metrics, admin listings,
//! `check-config`) is searched for the tokens it handled.

use std::{
    borrow::Cow,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use dedup_gateway::pipeline::{
    key::KeyDeriver,
    parse::{Marking, Record, VersionSource},
    policy::Class,
};

use crate::helpers::*;

const WRONG_TOKEN: &str = "Bearer wrong-token-4f1e2d3c4b5a69788796a5b4c3d2e1f0";
const ADMIN_TOKEN: &str = "admin-token-7c6b5a4938271605f4e3d2c1";
const HASH_SECRET: &str = "hash-secret-0a1b2c3d4e5f60718293a4b5";

/// With inbound tokens configured, a request without one of them is refused with 401 before
/// anything is stored: the later request with the right token is forwarded, not a duplicate.
#[tokio::test]
async fn the_inbound_allowlist_refuses_before_anything_is_stored() {
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.services.insert(
        "svc".into(),
        dedup_gateway::config::ServiceConfig {
            inbound_tokens: vec![GOOD_TOKEN.into()],
            ..Default::default()
        },
    );
    let gw = TestGateway::start(cfg).await;
    let event = body(&[record("guarded.txt", "v1")]);
    let prefix = &GOOD_TOKEN[..GOOD_TOKEN.len() - 1];
    let longer = format!("{GOOD_TOKEN}0");
    for auth in [
        None,
        Some(WRONG_TOKEN),
        Some(prefix),
        Some(longer.as_str()),
        Some("Bearer "),
    ] {
        let (status, answer) = gw.post("svc", auth, event.clone()).await;
        assert_eq!(status, 401, "{auth:?}: {answer}");
        assert!(error_reason(&answer).contains("token"));
    }
    assert!(oscar.received().is_empty());
    // Other services are not guarded.
    let (status, _) = gw.post("open", None, event.clone()).await;
    assert_eq!(status, 200);
    let (status, answer) = gw.post("svc", Some(GOOD_TOKEN), event).await;
    assert_eq!(
        (status, verdicts(&answer)),
        (200, vec!["forwarded".to_string()]),
        "{answer}"
    );
    assert_eq!(oscar.received().len(), 2);
    gw.stop().await;
}

/// Admin routes: 404 while no admin token is configured; 401 for a missing, wrong, truncated or
/// extended token; 200 for the right one.
#[tokio::test]
async fn the_admin_token_guards_the_admin_routes() {
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(test_config(&oscar.url())).await;
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

fn rec() -> Record<'static> {
    Record {
        event_name: Cow::Borrowed("s3:ObjectCreated:Put"),
        bucket: Cow::Borrowed("in"),
        key: "photo.jpg".into(),
        version: Cow::Borrowed("v1"),
        version_source: VersionSource::VersionId,
        version_id: None,
        marking: Marking::Clean,
    }
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
        &rec(),
        Class::Available,
    );
    let k2 = two.key(
        &two.scope("svc", Some(token.as_bytes())),
        &rec(),
        Class::Available,
    );
    assert_ne!(k1, k2);
    for d in [&one, &two] {
        let k = d.key(
            &d.scope("svc", Some(token.as_bytes())),
            &rec(),
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
                    &rec(),
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
        a.key(&s, &rec(), Class::Available),
        b.key(&b.scope("svc", None), &rec(), Class::Available)
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
    let config = dir.path().join("gateway.toml");
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstream = \"{}\"\nmode = \"spool\"\ndata_dir = \"{}\"\n\
             [delivery]\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\nmax_attempts = 2\n\
             [dedup]\nhash_secret = \"{HASH_SECRET}\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\
             [services.svc]\ninbound_tokens = [\"{GOOD_TOKEN}\", \"Bearer other-token-for-svc-0001\"]\n",
            oscar.url(),
            dir.path().join("data").display()
        ),
    )
    .expect("write config");

    let out = Command::new(env!("CARGO_BIN_EXE_dedup-gateway"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean("check-config stdout", &String::from_utf8_lossy(&out.stdout));
    assert_clean("check-config stderr", &String::from_utf8_lossy(&out.stderr));

    let mut child = Command::new(env!("CARGO_BIN_EXE_dedup-gateway"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let stdout = child.stdout.take().expect("stdout");
    let logs = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let printed = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "gateway did not come up: {}",
            logs.join().expect("logs").join("\n")
        );
    }
    let post = |auth: &'static str, b: String| {
        client
            .post(format!("{base}/job/svc"))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(b)
            .send()
    };
    let r = post(GOOD_TOKEN, body(&[record("delivered.txt", "v1")]))
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    assert!(eventually(Duration::from_secs(20), || oscar.accepted().len() == 1).await);
    // An object key with an encoded newline must not forge a log line.
    let r = post(
        GOOD_TOKEN,
        body(&[record("x%0Aforged+verdict%3Dforwarded", "v1")]),
    )
    .await
    .expect("post");
    assert_eq!(r.status(), 202);
    let r = post(WRONG_TOKEN, body(&[record("refused.txt", "v1")]))
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    // OSCAR refuses this token for good (401): dead-lettered with its headers kept for replay.
    let r = post(
        "Bearer other-token-for-svc-0001",
        body(&[record("dead.txt", "v1")]),
    )
    .await
    .expect("post");
    assert_eq!(r.status(), 202);
    let dlq_url = format!("{base}/admin/dlq");
    let mut listing = String::new();
    for _ in 0..200 {
        listing = client
            .get(&dlq_url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("dlq")
            .text()
            .await
            .expect("text");
        if listing.contains("dead.txt") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listing.contains("dead.txt"), "{listing}");
    assert!(
        !listing.contains("other-token-for-svc-0001"),
        "the DLQ listing shows a token"
    );
    assert_clean("DLQ listing", &listing);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
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

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
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
