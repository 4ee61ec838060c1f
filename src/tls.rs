//! Where TLS trust comes from, for every client ledgertail runs (the
//! PostgreSQL shipper, the witness client): a PEM CA file an operator
//! names, or the system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR`
//! first, as OpenSSL reads them). Both edges use rustls with the ring
//! provider, built here once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Why no TLS client could be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("CA file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {}: not PEM certificates: {why}", path.display())]
    NotPem { path: PathBuf, why: String },
    #[error("CA file {}: a certificate was refused: {why}", path.display())]
    Refused { path: PathBuf, why: String },
    #[error("CA file {}: holds no certificate", path.display())]
    Empty { path: PathBuf },
    #[error("the system's trust store holds no usable certificate ({0})")]
    NoSystemRoots(String),
    #[error("TLS set-up: {0}")]
    Setup(String),
}

/// The crypto provider of every TLS client.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let path_buf = || path.to_path_buf();
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path_buf(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| TlsError::NotPem {
            path: path_buf(),
            why: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::Refused {
            path: path_buf(),
            why: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty { path: path_buf() });
    }
    Ok(roots)
}

/// The system's trust store. A store with some unreadable certificates is
/// used for the ones that could be read; one with none is an error.
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no certificate found".into());
        return Err(TlsError::NoSystemRoots(why));
    }
    Ok(roots)
}

/// A client configuration that checks the server's chain against `roots`
/// and its name, speaking HTTP/1.1 when ALPN is offered.
pub fn http_client(roots: RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
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
        let empty = load_roots(&path).unwrap_err();
        assert!(matches!(empty, TlsError::Empty { .. }), "{empty}");
        assert_eq!(
            empty.to_string(),
            format!("CA file {}: holds no certificate", path.display())
        );
        let missing = load_roots(&dir.path().join("absent.pem")).unwrap_err();
        assert!(missing.to_string().contains("No such file"), "{missing}");
    }
}
