//! Sans-IO PostgreSQL wire protocol (v3) pieces the router needs.
//! See <https://www.postgresql.org/docs/current/protocol-message-formats.html>.
//!
//! - [`framing`]: whole-message framing with length limits (client side).
//! - [`scan`]: a streaming scanner that finds message boundaries in server
//!   bytes without buffering whole messages, so rows are forwarded as bytes.
//! - [`messages`]: encoders for the messages the router itself writes.
//! - [`parse`]: decoders for the few messages the router must read.
//! - [`sqlstate`]: SQLSTATE codes the router reports.
//!
//! Nothing here knows about sockets, config, or tokio.

pub mod framing;
pub mod messages;
pub mod parse;
pub mod scan;
pub mod sqlstate;

pub use framing::ProtocolError;

/// One backend/frontend message `tag | len | body`, for unit tests.
#[cfg(test)]
pub(crate) fn test_frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}
