//! Socket helpers shared by the client and server sides.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Writes all of `bytes`. Tries once without the async machinery first: a
/// request or an answer almost always fits the socket's send buffer, and
/// `try_write` skips the write future and tokio's cooperative budget (a
/// short or refused write falls back to the awaited path, which waits for
/// room as usual).
pub async fn write_all(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    match s.try_write(bytes) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(n) => s.write_all(&bytes[n..]).await,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => s.write_all(bytes).await,
        Err(e) => Err(e),
    }
}
