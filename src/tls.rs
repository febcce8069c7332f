//! TLS for the webhook listener: PEM certificate chain and private key → a rustls acceptor.
//!
//! MinIO can deliver to an `https://` webhook endpoint, and the service token travels in every
//! request's `Authorization` header, so the listener can serve HTTPS whenever it is reachable
//! from outside a trusted network (`tls_cert` and `tls_key`, or `serve --tls-cert/--tls-key`).
//! rustls with the ring provider, the one reqwest already links: no OpenSSL, and the provider is
//! chosen explicitly so that no process-wide default has to be installed. Only HTTP/1.1 is
//! offered over ALPN because that is all the accept loop speaks (and all MinIO speaks). The
//! handshake itself runs under `http.header_timeout` in [`crate::server`], so a client that opens
//! a TLS connection and stalls is cut like one that stalls in its headers.
//!
//! Errors name the file but never echo its contents: a key file's bytes are a secret.

use std::{path::Path, sync::Arc};

use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};

/// Why the listener's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid `tls_cert`: {0}")]
    Cert(String),
    #[error("invalid `tls_key`: {0}")]
    Key(String),
    #[error("invalid `tls_key`: it does not match `tls_cert` or is not usable: {0}")]
    Mismatch(String),
}

/// Loads the certificate chain (leaf first) and the private key (PKCS#8, PKCS#1 or SEC1) from
/// PEM files and builds the acceptor.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Cert(format!("{shown}: {}", pem_reason(&e))))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(format!("{shown}: {}", pem_reason(&e))))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(format!("{shown}: no PEM certificate found")));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::Key(format!("{}: {}", path.display(), pem_reason(&e))))
}

/// A PEM error without any of the file's bytes.
fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM item of the expected kind found".into(),
        _ => "not valid PEM".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let missing = dir.path().join("missing.pem");
        let Err(err) = acceptor(&missing, &empty) else {
            panic!("a missing file")
        };
        assert!(err.to_string().contains("tls_cert"), "{err}");
        let Err(err) = acceptor(&empty, &empty) else {
            panic!("an empty file")
        };
        assert!(err.to_string().contains("tls_cert"), "{err}");
    }

    #[test]
    fn a_generated_pair_builds_and_a_bad_key_is_named_without_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        assert!(acceptor(&cert, &key).is_ok());

        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz!!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let Err(err) = acceptor(&cert, &bad) else {
            panic!("a bad key")
        };
        let err = err.to_string();
        assert!(err.contains("tls_key"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }
}
