//! TLS on both sides, with certificates the test generates (rcgen): MinIO → gateway over HTTPS
//! (`tls_cert`/`tls_key`), and gateway → OSCAR over HTTPS trusting `delivery.ca_file`.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use dedup_gateway::{metrics::Metrics, server, tls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::{io::AsyncReadExt, net::TcpListener};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// A test CA and a server certificate it signed for 127.0.0.1 and localhost, as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "dedup-gateway test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key"))
            .expect("ca");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        let ca_path = write("ca.pem", ca.pem());
        let cert = write("cert.pem", leaf.pem());
        let key = write("key.pem", leaf_key.serialize_pem());
        Self {
            _dir: dir,
            ca: ca_path,
            cert,
            key,
        }
    }

    fn client(&self) -> reqwest::Client {
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(&self.ca).expect("ca")).expect("ca pem");
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .expect("client")
    }

    /// POSTs an event for `object` to `url` with a client trusting the test CA until the server
    /// answers (at most `tries` times, 50 ms apart); the status, or `None` if it never did.
    async fn post_until_answered(&self, url: &str, tries: usize, object: &str) -> Option<u16> {
        let client = self.client();
        retry(
            tries,
            Duration::from_millis(50),
            async || {
                let req = webhook(&client, url, Some(GOOD_TOKEN)).body(one_record(object, "v1"));
                req.send().await.ok().map(|r| r.status().as_u16())
            },
            Option::is_some,
        )
        .await
    }
}

/// MinIO with an `https://` endpoint: a client trusting the test CA posts over HTTPS and the
/// event is forwarded; a client without the CA is refused by the handshake; plain HTTP to the
/// TLS port gets no answer.
#[tokio::test]
async fn the_listener_serves_https() {
    let pki = Pki::new();
    let oscar = FakeOscar::start().await;
    let mut cfg = test_config(&oscar.url());
    cfg.tls_cert = Some(pki.cert.clone());
    cfg.tls_key = Some(pki.key.clone());
    cfg.http.header_timeout = Duration::from_secs(1);
    // Handshakes run on whichever worker a connection is dealt to, as in the binary.
    let gw = TestGateway::start_on_workers(cfg, 2).await;
    let url = format!("https://127.0.0.1:{}/job/svc", gw.addr.port());

    let status = pki.post_until_answered(&url, 100, "tls.txt").await;
    assert_eq!(status.expect("HTTPS post"), 200);
    assert_eq!(oscar.received().len(), 1);

    let untrusted = reqwest::Client::new()
        .get(format!("https://127.0.0.1:{}/healthz", gw.addr.port()))
        .send()
        .await;
    assert!(
        untrusted.is_err(),
        "a client without the CA must fail the handshake"
    );
    let plain = reqwest::Client::new().get(gw.url("/healthz")).send().await;
    assert!(
        !plain.map(|r| r.status().is_success()).unwrap_or(false),
        "no plain HTTP on the TLS port"
    );
    // A client that connects and never starts the handshake is cut by the header timeout.
    let mut stalled = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a stalled handshake is closed: {closed:?}"
    );
    gw.stop().await;
}

/// A bad certificate path stops the start with a configuration error naming the setting.
#[tokio::test]
async fn a_missing_certificate_is_a_configuration_error() {
    let mut cfg = test_config("http://127.0.0.1:9");
    cfg.tls_cert = Some("/nonexistent/cert.pem".into());
    cfg.tls_key = Some("/nonexistent/key.pem".into());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = dedup_gateway::run(cfg, listener, CancellationToken::new())
        .await
        .expect_err("must not start");
    assert!(err.to_string().contains("tls_cert"), "{err}");
    // Setting only one of the two is refused by validation.
    let mut cfg = test_config("http://127.0.0.1:9");
    cfg.tls_cert = Some("/x.pem".into());
    assert!(cfg.validate().unwrap_err().to_string().contains("tls_key"));
}

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

async fn job(
    State(seen): State<Seen>,
    UrlPath(_service): UrlPath<String>,
    headers: HeaderMap,
    _body: Bytes,
) -> StatusCode {
    seen.lock().expect("lock").push(headers);
    StatusCode::CREATED
}

/// An HTTPS fake OSCAR, served by the gateway's own TLS accept loop.
async fn https_oscar(cert: &Path, key: &Path) -> (u16, Seen, CancellationToken) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/job/{service}", post(job))
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let opts = server::ServeOptions {
        header_timeout: Duration::from_secs(5),
        max_connections: 64,
        shutdown_grace: Duration::from_secs(1),
        tls: Some(tls::acceptor(cert, key).expect("acceptor")),
        workers: Vec::new(),
    };
    let stop = CancellationToken::new();
    tokio::spawn(server::serve(
        listener,
        hyper_util::service::TowerToHyperService::new(app),
        opts,
        Metrics::new(),
        stop.clone(),
    ));
    (port, seen, stop)
}

/// The gateway forwards to an `https://` OSCAR whose CA it trusts through `delivery.ca_file`,
/// and refuses to deliver (503) to the same OSCAR without it.
#[tokio::test]
async fn the_forwarder_speaks_https_with_a_configured_ca() {
    let pki = Pki::new();
    let (port, seen, stop) = https_oscar(&pki.cert, &pki.key).await;
    let upstream = format!("https://127.0.0.1:{port}");

    let gw = TestGateway::start(test_config(&upstream)).await;
    let p = gw.post_event(one_record("untrusted.txt", "v1")).await;
    assert_eq!(
        p.status, 503,
        "an unknown CA must not be trusted: {}",
        p.answer
    );
    gw.stop().await;
    assert!(seen.lock().expect("lock").is_empty());

    let mut cfg = test_config(&upstream);
    cfg.delivery.ca_file = Some(pki.ca.clone());
    // Each worker has its own upstream client; every one must carry the CA.
    let gw = TestGateway::start_on_workers(cfg, 2).await;
    gw.post_event(one_record("trusted.txt", "v1"))
        .await
        .assert(200, &["forwarded"]);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].get("authorization").map(|v| v.as_bytes()),
        Some(GOOD_TOKEN.as_bytes())
    );
    gw.stop().await;
    stop.cancel();
}

/// A CA file that is not PEM stops the start with an error naming `delivery.ca_file`.
#[tokio::test]
async fn a_bad_ca_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").expect("write");
    let mut cfg = test_config("https://127.0.0.1:9");
    cfg.delivery.ca_file = Some(bad);
    cfg.data_dir = dir.path().join("data");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = dedup_gateway::run(cfg, listener, CancellationToken::new())
        .await
        .expect_err("must not start");
    assert!(err.to_string().contains("delivery.ca_file"), "{err}");
}

/// The real binary: `serve --tls-cert/--tls-key` serves HTTPS; the same settings come from
/// `DEDUP_GATEWAY_TLS_CERT`/`_KEY`; one without the other is a usage or configuration error (2).
#[tokio::test]
async fn the_binary_takes_tls_from_flags_and_environment() {
    let pki = Pki::new();
    let out = bin()
        .arg("check-config")
        .env("DEDUP_GATEWAY_TLS_CERT", &pki.cert)
        .env("DEDUP_GATEWAY_TLS_KEY", &pki.key)
        .output()
        .expect("check-config");
    assert_success(&out);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&pki.cert.display().to_string()), "{shown}");
    let out = bin()
        .arg("check-config")
        .env("DEDUP_GATEWAY_TLS_CERT", &pki.cert)
        .output()
        .expect("check-config");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("tls_key"));
    let out = bin()
        .args(["serve", "--tls-cert"])
        .arg(&pki.cert)
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(2));

    let oscar = FakeOscar::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut child = bin()
        .args([
            "serve",
            "--mode",
            "sync",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &oscar.url(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let url = format!("https://127.0.0.1:{port}/job/svc");
    let status = pki.post_until_answered(&url, 200, "bin-tls.txt").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, Some(200));
    assert_eq!(oscar.received().len(), 1);
}
