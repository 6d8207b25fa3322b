//! TLS from the router to PostgreSQL servers (`[primary] tls`, `[[replicas]]
//! tls`), with libpq's sslmode meanings: `prefer` and `require` encrypt
//! without checking the certificate, `verify-full` checks it against `ca`
//! and the configured host name (or IP address).
//!
//! [`open`] makes the connection (SSLRequest, then the handshake) for the
//! pool's sessions and for cancel requests; [`SideTls`] lets the lag
//! monitor's and the auth query's tokio-postgres connections use the same
//! settings.

use super::{BackendError, Target};
use crate::config::ServerTlsMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    #[error("{key}.ca {path}: {detail}")]
    Ca {
        key: String,
        path: PathBuf,
        detail: String,
    },
    #[error("{key}: TLS client configuration: {0}", key = .0)]
    Config(String, #[source] rustls::Error),
}

/// How the router encrypts its connections to one server.
#[derive(Clone)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    pub ca: Option<PathBuf>,
    connector: Option<TlsConnector>,
}

impl ServerTls {
    pub fn disabled() -> Self {
        Self {
            mode: ServerTlsMode::Disable,
            ca: None,
            connector: None,
        }
    }

    /// Builds the client configuration; `key` names the server's config
    /// section in errors ("primary", "replicas[0]").
    pub fn new(mode: ServerTlsMode, ca: Option<&Path>, key: &str) -> Result<Self, ServerTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ServerTlsError::Config(key.into(), e))?;
        let mut config = match (mode, ca) {
            (ServerTlsMode::Disable, _) => return Ok(Self::disabled()),
            (ServerTlsMode::VerifyFull, Some(ca)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in load_ca(ca, key)? {
                    roots.add(cert).map_err(|e| ServerTlsError::Ca {
                        key: key.into(),
                        path: ca.to_path_buf(),
                        detail: e.to_string(),
                    })?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            // verify-full without a CA is refused by config validation;
            // prefer/require encrypt without checking, as libpq does.
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                .with_no_client_auth(),
        };
        // PostgreSQL 17 checks it when offered; older servers ignore it.
        config.alpn_protocols = vec![crate::tls::ALPN_POSTGRESQL.to_vec()];
        Ok(Self {
            mode,
            ca: ca.map(Path::to_path_buf),
            connector: Some(TlsConnector::from(Arc::new(config))),
        })
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode && self.ca == other.ca
    }
}

impl Eq for ServerTls {}

impl Hash for ServerTls {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.mode.hash(state);
        self.ca.hash(state);
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .field("ca", &self.ca)
            .finish()
    }
}

fn load_ca(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, ServerTlsError> {
    let err = |detail: String| ServerTlsError::Ca {
        key: key.into(),
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

/// prefer/require: encrypted, certificate not checked (libpq's meaning).
/// The handshake signatures are still verified, so the session key is
/// bound to the certificate the server showed.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A server socket, plaintext or TLS.
pub enum ServerStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ServerStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => s.get_ref().0,
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            ServerStream::Plain(s) => crate::net::write_all(s, bytes).await,
            // rustls buffers records: flush so the bytes leave now.
            ServerStream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    pub async fn read_buf(&mut self, buf: &mut bytes::BytesMut) -> std::io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.read_buf(buf).await,
            ServerStream::Tls(s) => s.read_buf(buf).await,
        }
    }

    /// Whether the socket has bytes waiting or is at EOF, without reading
    /// them (an idle server sends nothing; a TLS record arriving on an idle
    /// session means the same as plaintext bytes would).
    ///
    /// The reactor is asked first: every short read clears its readiness
    /// flag, so an idle connection that heard nothing since its last answer
    /// costs no system call. Only a flagged socket is peeked, and a peek
    /// that finds nothing clears the flag (`try_io`).
    pub fn has_input(&self) -> bool {
        let tcp = self.tcp();
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        !matches!(
            tcp.try_io(tokio::io::Interest::READABLE, || {
                socket2::SockRef::from(tcp).peek(&mut probe)
            }),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }
}

/// Connects to `target` and negotiates TLS as its `tls` mode says.
pub async fn open(
    target: &Target,
    tcp_settings: &super::keepalive::TcpSettings,
) -> Result<ServerStream, BackendError> {
    let mut tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| BackendError::connect(target, e))?;
    // Small messages must not wait for Nagle: latency is the product.
    tcp.set_nodelay(true)
        .map_err(|e| BackendError::connect(target, e))?;
    tcp_settings.apply(socket2::SockRef::from(&tcp));
    let Some(connector) = &target.tls.connector else {
        return Ok(ServerStream::Plain(tcp));
    };
    let mut request = bytes::BytesMut::new();
    crate::protocol::messages::ssl_request(&mut request);
    tcp.write_all(&request)
        .await
        .map_err(|e| BackendError::io(target, e))?;
    // Exactly one byte: anything the server sent after it would be
    // unencrypted data injected before the handshake (CVE-2021-23214).
    let answer = tcp
        .read_u8()
        .await
        .map_err(|e| BackendError::io(target, e))?;
    match answer {
        b'S' => {}
        b'N' if target.tls.mode == ServerTlsMode::Prefer => return Ok(ServerStream::Plain(tcp)),
        b'N' => {
            return Err(BackendError::login(
                target,
                format!(
                    "the server does not accept TLS connections (tls = \"{}\"; ssl = on in postgresql.conf, or tls = \"prefer\")",
                    target.tls.mode.as_str()
                ),
            ))
        }
        other => {
            return Err(BackendError::login(
                target,
                format!("unexpected answer {:?} to SSLRequest", other as char),
            ))
        }
    }
    let name = ServerName::try_from(target.host.clone()).map_err(|e| {
        BackendError::login(
            target,
            format!("host {:?} is not a valid TLS server name: {e}", target.host),
        )
    })?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| BackendError::login(target, format!("TLS handshake failed: {e}")))?;
    Ok(ServerStream::Tls(Box::new(tls)))
}

/// The router's side connections through tokio-postgres (the lag monitor,
/// `[auth] query`) with the server's TLS settings.
#[derive(Clone)]
pub struct SideTls(pub ServerTls);

impl SideTls {
    /// The tokio-postgres sslmode matching the server's `tls`.
    pub fn ssl_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode;
        match self.0.mode {
            ServerTlsMode::Disable => SslMode::Disable,
            ServerTlsMode::Prefer => SslMode::Prefer,
            ServerTlsMode::Require | ServerTlsMode::VerifyFull => SslMode::Require,
        }
    }
}

impl tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> for SideTls {
    type Stream = SideStream;
    type TlsConnect = SideConnect;
    type Error = std::io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> std::io::Result<SideConnect> {
        let connector = self
            .0
            .connector
            .clone()
            .ok_or_else(|| std::io::Error::other("TLS is disabled for this server"))?;
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(SideConnect { connector, name })
    }
}

pub struct SideConnect {
    connector: TlsConnector,
    name: ServerName<'static>,
}

type ConnectFuture = Pin<Box<dyn std::future::Future<Output = std::io::Result<SideStream>> + Send>>;

impl tokio_postgres::tls::TlsConnect<tokio_postgres::Socket> for SideConnect {
    type Stream = SideStream;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn connect(self, stream: tokio_postgres::Socket) -> ConnectFuture {
        Box::pin(async move {
            let tls = self.connector.connect(self.name, stream).await?;
            Ok(SideStream(Box::new(tls)))
        })
    }
}

pub struct SideStream(Box<TlsStream<tokio_postgres::Socket>>);

impl tokio_postgres::tls::TlsStream for SideStream {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

impl AsyncRead for SideStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SideStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}
