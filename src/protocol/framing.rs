//! Message framing: `tag (1 byte) | length (4 bytes, includes itself) | body`.
//! Startup-phase packets have no tag: `length | code | body`.
//!
//! Every length is checked against the minimum (4) and a maximum *before* any
//! buffer is sized from it, so a peer that declares 2 GiB gets an error, not an
//! allocation. `Ok(None)` means "need more bytes".

use bytes::BytesMut;

/// PostgreSQL's own upper bound for a message (MaxAllocSize, 1 GiB - 1).
pub const PG_MAX_MESSAGE_LEN: usize = (1 << 30) - 1;
/// PostgreSQL rejects startup packets over 10,000 bytes (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Tag byte plus the 4-byte length.
pub const HEADER_LEN: usize = 5;

/// Whether `tag` is a message a client may send once logged in (Query,
/// the extended protocol, FunctionCall, COPY, Terminate). Anything else
/// (including a password message) is a protocol violation the router
/// answers itself: PostgreSQL would end the server session for it.
pub fn is_session_message(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'S' | b'H' | b'F' | b'd' | b'c' | b'f' | b'X'
    )
}

/// A client message type the router does not accept after login.
pub fn unexpected_message(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!(
            "pgrouter: invalid frontend message type {tag} ('{}')",
            tag as char
        )
    } else {
        format!("pgrouter: invalid frontend message type {tag}")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("invalid message length {len} for message type {tag:?} (minimum is 4)")]
    LengthTooSmall { tag: char, len: u32 },
    #[error("message type {tag:?} declares {len} bytes, over the limit of {max} bytes")]
    TooLarge { tag: char, len: usize, max: usize },
    #[error("invalid startup packet length {0}")]
    BadStartupLength(u32),
    #[error("malformed {what} message: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("unexpected message type {tag:?} {during}")]
    Unexpected { tag: char, during: &'static str },
}

pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed {
        what,
        detail: detail.into(),
    }
}

/// Reads a tagged header at the start of `buf`: `(tag, body_len)`.
pub fn header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtocolError::LengthTooSmall {
            tag: tag as char,
            len,
        });
    }
    let body = len as usize - 4;
    if body > max {
        return Err(ProtocolError::TooLarge {
            tag: tag as char,
            len: len as usize,
            max,
        });
    }
    Ok(Some((tag, body)))
}

/// Total length (header + body) of the complete tagged message at the start
/// of `buf`, or `None` if it has not fully arrived yet.
pub fn complete_len(buf: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    match header(buf, max)? {
        Some((_, body)) if buf.len() >= HEADER_LEN + body => Ok(Some(HEADER_LEN + body)),
        _ => Ok(None),
    }
}

/// Splits one complete tagged message off the front of `buf`.
pub fn split_message(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, ProtocolError> {
    Ok(complete_len(buf, max)?.map(|n| buf.split_to(n)))
}

/// Splits one complete startup-phase packet (no tag) off the front of `buf`;
/// the returned bytes exclude the length word.
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<BytesMut>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP_LEN as u32).contains(&len) {
        return Err(ProtocolError::BadStartupLength(len));
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    let mut packet = buf.split_to(len as usize);
    let _ = packet.split_to(4);
    Ok(Some(packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_more_bytes() {
        assert_eq!(complete_len(b"Q\0\0", 100), Ok(None));
        assert_eq!(complete_len(b"Q\0\0\0\x09SEL", 100), Ok(None));
        assert_eq!(complete_len(b"Q\0\0\0\x09SELE", 100), Ok(None));
        assert_eq!(complete_len(b"Q\0\0\0\x09SELECT", 100), Ok(Some(10)));
    }

    #[test]
    fn rejects_short_and_huge_lengths_before_allocating() {
        assert!(matches!(
            complete_len(b"Q\0\0\0\x03", 100),
            Err(ProtocolError::LengthTooSmall { .. })
        ));
        // 0x7fffffff declared: an error straight from the header, nothing buffered.
        assert!(matches!(
            complete_len(b"Q\x7f\xff\xff\xff", PG_MAX_MESSAGE_LEN),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn startup_bounds() {
        let mut b = BytesMut::from(&b"\0\0\0\x04"[..]);
        assert!(split_startup(&mut b).is_err());
        let mut b = BytesMut::from(&b"\0\x01\0\0"[..]);
        assert!(split_startup(&mut b).is_err());
        let mut b = BytesMut::from(&b"\0\0\0\x08\x04\xd2\x16\x2f"[..]);
        assert_eq!(
            split_startup(&mut b).ok().flatten().map(|p| p.to_vec()),
            Some(vec![4, 0xd2, 0x16, 0x2f])
        );
    }
}
