//! TLS (RFC 3261 §26.3.1) with rustls and the ring provider; PEM files read
//! with `rustls-pki-types`.

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Certificate, key, and trust anchors for outgoing connections.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM bundle of CAs trusted for outgoing TLS; `None`: the system store.
    pub ca: Option<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl TlsSettings {
    pub(super) fn server_config(&self) -> io::Result<TlsAcceptor> {
        let certs = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| invalid(format!("{}: {e}", self.cert.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("{}: {e}", self.cert.display())))?;
        if certs.is_empty() {
            return Err(invalid(format!("{}: no certificate", self.cert.display())));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| invalid(format!("{}: {e}", self.key.display())))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(invalid)?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    pub(super) fn client_config(&self) -> io::Result<TlsConnector> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for c in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| invalid(format!("{}: {e}", ca.display())))?
                {
                    roots.add(c.map_err(invalid)?).map_err(invalid)?;
                }
            }
            None => add_native_roots(&mut roots),
        }
        connector(roots)
    }

    pub(super) fn default_client_config() -> io::Result<TlsConnector> {
        let mut roots = RootCertStore::empty();
        add_native_roots(&mut roots);
        connector(roots)
    }
}

fn add_native_roots(roots: &mut RootCertStore) {
    let found = rustls_native_certs::load_native_certs();
    for c in found.certs {
        let _ = roots.add(c);
    }
}

fn connector(roots: RootCertStore) -> io::Result<TlsConnector> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
