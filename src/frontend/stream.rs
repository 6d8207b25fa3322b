//! The client socket. It exposes whole messages and raw writes of
//! router-encoded or server-forwarded bytes, never unframed client bytes.

use super::ClientError;
use crate::protocol::framing;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct ClientStream {
    stream: TcpStream,
    /// Bytes read from the client, not yet handled.
    pub buf: BytesMut,
    pub max_message: usize,
}

impl ClientStream {
    pub fn new(stream: TcpStream, max_message: usize) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            max_message,
        }
    }

    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.stream.peer_addr().ok()
    }

    /// Reads more bytes. EOF is `ClientError::Gone`. Cancel-safe.
    pub async fn read_more(&mut self) -> Result<usize, ClientError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8 * 1024);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err(ClientError::Gone(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => Ok(n),
            Err(e) => Err(ClientError::Gone(e)),
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(ClientError::Gone)
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
