//! `https://` upstreams: hyper-util's pooled client over rustls, one per worker.
//!
//! TLS keeps the general client because its pool, idle reaper and connector already carry the
//! handshake, ALPN and certificate checks; a home-made pool would have to rebuild all of it to
//! save a few thousand instructions per request that the TLS record layer dwarfs anyway. Plain
//! `http://`, the common in-cluster case, takes the lean pool in [`super::pool`].

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tokio_rustls::rustls::{
    self, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};

use super::ClientError;
use crate::{config::DeliveryConfig, metrics::UpstreamClass};

pub(super) type TlsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One client per worker: a pooled connection's task lives on the runtime that opened it.
pub(super) fn clients(
    cfg: &DeliveryConfig,
    ca_file: Option<&std::path::Path>,
    workers: usize,
) -> Result<Arc<[TlsClient]>, ClientError> {
    let roots = trust_roots(ca_file)?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok((0..workers.max(1))
        .map(|_| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(super::pool::IDLE_TIMEOUT)
                .pool_max_idle_per_host(cfg.pool_max_idle)
                .build(https.clone())
        })
        .collect())
}

/// The roots an upstream certificate may chain to: the bundled Mozilla roots, the system's roots
/// and `delivery.ca_file`.
fn trust_roots(ca_file: Option<&std::path::Path>) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            // An empty trust list would silently fall back to the default roots only.
            return Err(ClientError(format!(
                "{}: no PEM certificate found",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(roots)
}

/// Timeout, connect error or anything else: a connect that timed out counts as a timeout.
pub(super) fn error_class(e: &hyper_util::client::legacy::Error) -> UpstreamClass {
    if timed_out(e) {
        UpstreamClass::Timeout
    } else if e.is_connect() {
        UpstreamClass::Connect
    } else {
        UpstreamClass::Other
    }
}

/// Whether an I/O timeout is anywhere in `e`'s chain of causes.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        source = err.source();
    }
    false
}
