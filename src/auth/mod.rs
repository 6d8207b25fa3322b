//! Verifying clients' passwords, sans-IO: [`scram`] (SCRAM-SHA-256, RFC 5802 /
//! RFC 7677 as PostgreSQL uses it) and [`md5`]. The frontend handshake drives
//! these with the bytes it reads; they never touch a socket. [`allow`]
//! holds the network rules, [`throttle`] the per-address failed-login
//! limit, [`lookup`] `[auth] query` and [`passthrough`] the server login
//! with a client's SCRAM keys.
//!
//! Unknown users go through the same exchange against a made-up verifier and
//! fail the same way, so a client cannot tell "no such user" from "wrong password".

pub mod allow;
pub mod lookup;
pub mod md5;
pub mod passthrough;
pub mod scram;
pub mod throttle;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The client's message did not follow the SASL/SCRAM grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    /// Valid exchange, wrong credentials (or unknown user).
    #[error("password authentication failed")]
    Failed,
}

/// Constant-time equality for secrets (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
