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

/// What the handshake needs for TLS clients: the acceptor, and the
/// certificate's hash for SCRAM channel binding.
pub struct ClientTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `tls-server-end-point` channel-binding data (RFC 5929): the hash of
    /// our leaf certificate.
    pub end_point: Arc<[u8]>,
}

/// Builds the acceptor for `[tls]` (None when TLS is disabled).
pub fn acceptor(cfg: &TlsConfig) -> Result<Option<ClientTls>, TlsError> {
    let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
        return Ok(None);
    };
    if cfg.mode == crate::config::TlsMode::Disable {
        return Ok(None);
    }
    let chain = load_certs(cert)?;
    let end_point = chain
        .first()
        .map(|leaf| server_end_point(leaf.as_ref()))
        .unwrap_or_default()
        .into();
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
    Ok(Some(ClientTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        end_point,
    }))
}

/// The `tls-server-end-point` hash of a DER certificate: its signature
/// algorithm's hash, SHA-256 for MD5 and SHA-1 (RFC 5929 section 4.1), and
/// SHA-256 for algorithms without one of their own (Ed25519), where
/// PostgreSQL itself would refuse channel binding.
pub fn server_end_point(der: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    const SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    const SHA384_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const SHA512_ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    match signature_algorithm(der) {
        Some(SHA384_RSA | SHA384_ECDSA) => sha2::Sha384::digest(der).to_vec(),
        Some(SHA512_RSA | SHA512_ECDSA) => sha2::Sha512::digest(der).to_vec(),
        _ => sha2::Sha256::digest(der).to_vec(),
    }
}

/// The OID (content bytes) of a certificate's outer signatureAlgorithm:
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm
/// SEQUENCE { algorithm OID, ... }, signature BIT STRING }.
fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    let (0x30, cert, _) = der_tlv(der)? else {
        return None;
    };
    let (0x30, _tbs, rest) = der_tlv(cert)? else {
        return None;
    };
    let (0x30, alg, _) = der_tlv(rest)? else {
        return None;
    };
    match der_tlv(alg)? {
        (0x06, oid, _) => Some(oid),
        _ => None,
    }
}

/// One DER tag-length-value: (tag, content, what follows).
fn der_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *buf.first()?;
    let first = *buf.get(1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let len = buf
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, 2 + n)
    };
    let end = start.checked_add(len)?;
    Some((tag, buf.get(start..end)?, buf.get(end..)?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap_or_else(|e| panic!("{e}"));
        let params = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap_or_else(|e| panic!("{e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        cert.der().to_vec()
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            server_end_point(&p256),
            sha2::Sha256::digest(&p256).to_vec()
        );
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            server_end_point(&p384),
            sha2::Sha384::digest(&p384).to_vec()
        );
        // Not a certificate: no algorithm found, SHA-256 of the bytes.
        assert_eq!(signature_algorithm(b"\x30\x85"), None);
        assert_eq!(signature_algorithm(b""), None);
    }
}
