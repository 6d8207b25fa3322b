//! The client socket, plaintext or TLS. It exposes whole messages and raw
//! writes of router-encoded or server-forwarded bytes, never unframed
//! client bytes.

use super::ClientError;
use crate::protocol::framing;
use crate::spares::Spares;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsClient>),
    /// Between the two, during a handshake (or after it failed).
    Closed,
}

/// A client on TLS. (Boxed in [`Transport`]: what only TLS clients need
/// adds nothing to every plaintext session.)
struct TlsClient {
    stream: TlsStream<TcpStream>,
    /// `tls-server-end-point` data of the certificate this client's TLS
    /// session was made with (SCRAM channel binding).
    end_point: std::sync::Arc<[u8]>,
}

/// One per connected client, kept in its session: small on purpose (the
/// peer address, needed only at login, is asked of the socket).
pub struct ClientStream {
    transport: Transport,
    /// Bytes read from the client, not yet handled.
    pub buf: BytesMut,
    pub max_message: usize,
}

/// A TLS record of type handshake: what a ClientHello starts with.
const TLS_HANDSHAKE: u8 = 0x16;

/// A client's read buffer while it is talking.
const READ_BUFFER: usize = 8 * 1024;
/// Spare read buffers one worker thread keeps (512 KiB at most).
const SPARES_PER_THREAD: usize = 64;

thread_local! {
    /// Read buffers of clients that went idle, for the next client on this
    /// thread that speaks (as PgBouncer keeps its packet buffers in a cache).
    static SPARES: Spares<BytesMut> = const { Spares::new(SPARES_PER_THREAD) };
}

fn spare_buffer() -> BytesMut {
    SPARES
        .with(Spares::take)
        .unwrap_or_else(|| BytesMut::with_capacity(READ_BUFFER))
}

/// Keeps an emptied buffer for reuse, if nothing else still points into
/// it (a message split off it and still alive).
fn return_buffer(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() < READ_BUFFER && !buf.try_reclaim(READ_BUFFER) {
        return;
    }
    if buf.capacity() > 4 * READ_BUFFER {
        return; // grown for one big message: let it go
    }
    SPARES.with(|s| s.put(buf));
}

impl ClientStream {
    pub fn new(stream: TcpStream, max_message: usize) -> Self {
        Self {
            transport: Transport::Plain(stream),
            buf: BytesMut::with_capacity(READ_BUFFER),
            max_message,
        }
    }

    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        match &self.transport {
            Transport::Plain(s) => s.peer_addr().ok(),
            Transport::Tls(t) => t.stream.get_ref().0.peer_addr().ok(),
            Transport::Closed => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    /// Channel-binding data, when the client is on TLS.
    pub fn end_point(&self) -> Option<&[u8]> {
        match &self.transport {
            Transport::Tls(t) => Some(&t.end_point),
            _ => None,
        }
    }

    /// Whether the client opened with a TLS ClientHello (direct TLS) rather
    /// than a startup packet. Looks without consuming.
    pub async fn starts_with_tls(&mut self) -> Result<bool, ClientError> {
        let Transport::Plain(tcp) = &self.transport else {
            return Ok(false);
        };
        if !self.buf.is_empty() {
            return Ok(self.buf[0] == TLS_HANDSHAKE);
        }
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) => Err(ClientError::Gone(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(first[0] == TLS_HANDSHAKE),
            Err(e) => Err(ClientError::Gone(e)),
        }
    }

    /// Runs the TLS handshake on the plaintext socket. `direct`: the client
    /// skipped SSLRequest, so it must have negotiated ALPN "postgresql"
    /// (as PostgreSQL 17 requires, against cross-protocol attacks).
    pub async fn start_tls(
        &mut self,
        tls: &crate::tls::ClientTls,
        direct: bool,
    ) -> Result<(), ClientError> {
        let tcp = match std::mem::replace(&mut self.transport, Transport::Closed) {
            Transport::Plain(tcp) => tcp,
            other => {
                self.transport = other;
                return Err(ClientError::fatal(
                    crate::protocol::sqlstate::PROTOCOL_VIOLATION,
                    "pgrouter: TLS requested twice",
                ));
            }
        };
        let end_point = tls.end_point.clone();
        let tls = tls.acceptor.accept(tcp).await.map_err(ClientError::Tls)?;
        if direct && tls.get_ref().1.alpn_protocol() != Some(crate::tls::ALPN_POSTGRESQL) {
            return Err(ClientError::Tls(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "direct TLS without ALPN \"postgresql\"",
            )));
        }
        self.transport = Transport::Tls(Box::new(TlsClient {
            stream: tls,
            end_point,
        }));
        Ok(())
    }

    /// Waits until the client sends something, holding no read buffer while
    /// it is idle (with thousands of idle clients connected, their 8 KiB
    /// buffers would be most of the router's memory). Cancel-safe.
    pub async fn wait_unbuffered(&mut self) -> Result<(), ClientError> {
        if !self.buf.is_empty() {
            return Ok(());
        }
        if let Transport::Plain(tcp) = &self.transport {
            return_buffer(std::mem::take(&mut self.buf));
            // poll_read_ready, not readable(): it uses the socket's own
            // reader slot, where readable() keeps a waiter node in every
            // idle session's future.
            std::future::poll_fn(|cx| tcp.poll_read_ready(cx))
                .await
                .map_err(ClientError::Gone)?;
        }
        Ok(())
    }

    /// Reads more bytes. EOF is `ClientError::Gone`. Cancel-safe.
    pub async fn read_more(&mut self) -> Result<usize, ClientError> {
        if self.buf.capacity() == 0 {
            self.buf = spare_buffer();
        } else if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(READ_BUFFER);
        }
        let r = match &mut self.transport {
            Transport::Plain(s) => s.read_buf(&mut self.buf).await,
            Transport::Tls(t) => t.stream.read_buf(&mut self.buf).await,
            Transport::Closed => Ok(0),
        };
        match r {
            Ok(0) => Err(ClientError::Gone(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => Ok(n),
            Err(e) => Err(ClientError::Gone(e)),
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let r = match &mut self.transport {
            Transport::Plain(s) => crate::net::write_all(s, bytes).await,
            // rustls buffers records: flush so the bytes leave now.
            Transport::Tls(t) => match t.stream.write_all(bytes).await {
                Ok(()) => t.stream.flush().await,
                Err(e) => Err(e),
            },
            Transport::Closed => Err(std::io::ErrorKind::NotConnected.into()),
        };
        r.map_err(ClientError::Gone)
    }

    /// Length of the complete message at the front of the buffer, if any.
    pub fn complete_len(&self) -> Result<Option<usize>, ClientError> {
        Ok(framing::complete_len(&self.buf, self.max_message)?)
    }

    /// Waits until a whole message is buffered; returns its length.
    pub async fn fill_message(&mut self) -> Result<usize, ClientError> {
        loop {
            if let Some(n) = self.complete_len()? {
                return Ok(n);
            }
            self.read_more().await?;
        }
    }

    /// Reads one whole startup-phase packet (no tag), without its length word.
    pub async fn read_startup(&mut self) -> Result<BytesMut, ClientError> {
        loop {
            if let Some(p) = framing::split_startup(&mut self.buf)? {
                return Ok(p);
            }
            self.read_more().await?;
        }
    }

    /// Reads one whole tagged message.
    pub async fn read_message(&mut self) -> Result<BytesMut, ClientError> {
        let n = self.fill_message().await?;
        Ok(self.buf.split_to(n))
    }
}
