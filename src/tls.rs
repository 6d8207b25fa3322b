//! TLS for clients (rustls, TLS 1.2 and 1.3 only): loading the certificate
//! and key named in `[tls]`, and the acceptor the handshake uses.
//!
//! Clients get TLS either the classic way (SSLRequest answered 'S', then the
//! handshake) or directly (PostgreSQL 17 `sslnegotiation=direct`: the first
//! bytes are a TLS ClientHello, and ALPN must say "postgresql").
//! docs/security.md has the settings and what each mode does.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The ALPN protocol name PostgreSQL clients offer.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert {path}: {detail}")]
    Cert { path: PathBuf, detail: String },
    #[error("tls.key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("tls: the certificate and key do not make a server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds the acceptor for `[tls]` (None when TLS is disabled).
pub fn acceptor(cfg: &TlsConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
        return Ok(None);
    };
    if cfg.mode == crate::config::TlsMode::Disable {
        return Ok(None);
    }
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // Offered by clients that negotiate directly (required then) and by
    // newer libpq after SSLRequest too; a client offering something else is
    // refused by rustls.
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |detail: String| TlsError::Cert {
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}
