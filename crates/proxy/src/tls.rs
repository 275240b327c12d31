//! TLS for the data-plane listener (`[proxy] tls_cert_file`, `tls_key_file`): rustls on
//! ring behind tokio-rustls. With it the listener speaks TLS only — a plain-http client's
//! first bytes fail the handshake and the connection is closed.
//!
//! Clients that refuse to send a bearer token over plain http need it (botocore sends a
//! Bedrock API key — a byok workload token — only to an `https` endpoint).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the listener's certificate or key cannot be used. Each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain file cannot be read or holds no PEM certificate.
    #[error("cannot read a PEM certificate chain from {}", path.display())]
    Certificates {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate chain file holds no `CERTIFICATE` block.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file cannot be read or holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[error("cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1) from {}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair: a key of an unsupported kind, or one that does not match
    /// the chain's first certificate.
    #[error("the private key in {} does not fit the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
}

impl TlsError {
    /// Whether the fault is in the certificate chain file (else in the key file or the pair).
    pub fn is_certificate_file(&self) -> bool {
        matches!(self, TlsError::Certificates { .. } | TlsError::NoCertificate { .. })
    }
}

/// The data-plane listener's TLS server configuration, loaded once at start.
#[derive(Clone)]
pub struct ListenerTls {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The acceptor holds the private key: never print it.
        f.debug_struct("ListenerTls").finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Load a PEM certificate chain (leaf first) and its PEM private key. TLS 1.2 and
    /// 1.3 on ring; HTTP/1.1 only (the listener's protocol), advertised by ALPN.
    pub fn from_pem_files(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| TlsError::Certificates { path: cert_file.to_owned(), source })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate { path: cert_file.to_owned() });
        }
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|source| TlsError::Key { path: key_file.to_owned(), source })?;
        let mismatch = |source| TlsError::Mismatch { cert: cert_file.to_owned(), key: key_file.to_owned(), source };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(mismatch)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(mismatch)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }

    pub(crate) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, b"not a pem file\n").unwrap();
        let err = ListenerTls::from_pem_files(&missing, &missing).err();
        assert!(matches!(&err, Some(TlsError::Certificates { path, .. }) if path == &missing), "{err:?}");
        let err = ListenerTls::from_pem_files(&empty, &missing).err();
        assert!(matches!(&err, Some(TlsError::NoCertificate { path }) if path == &empty), "{err:?}");
        assert!(err.is_some_and(|e| e.is_certificate_file() && e.to_string().contains("empty.pem")));
    }
}
