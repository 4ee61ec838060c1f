//! Where TLS trust comes from, for every client ledgertail runs (the
//! PostgreSQL shipper, the witness client): a PEM CA file an operator
//! names, or the system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR`
//! first, as OpenSSL reads them). Both edges use rustls with the ring
//! provider, built here once.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The crypto provider of every TLS client.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file. `Err`: why, without the path (the
/// caller names the file in its own terms).
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| format!("not PEM certificates: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a certificate was refused: {e}"))?;
    }
    if roots.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(roots)
}

/// The system's trust store. A store with some unreadable certificates is
/// used for the ones that could be read; one with none is an error.
pub fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no certificate found".into());
        return Err(format!(
            "the system's trust store holds no usable certificate ({why})"
        ));
    }
    Ok(roots)
}

/// A client configuration that checks the server's chain against `roots`
/// and its name, speaking HTTP/1.1 when ALPN is offered.
pub fn http_client(roots: RootCertStore) -> Result<rustls::ClientConfig, String> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        assert_eq!(load_roots(&path).unwrap_err(), "holds no certificate");
        let missing = load_roots(&dir.path().join("absent.pem")).unwrap_err();
        assert!(missing.contains("No such file"), "{missing}");
    }
}
