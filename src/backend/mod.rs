//! Connections to PostgreSQL servers.
//!
//! - [`connect`]: TCP connect and login (SCRAM-SHA-256, md5, cleartext, trust).
//! - [`conn`]: a logged-in server connection and its read/write helpers.
//! - [`tracker`]: the sans-IO response tracker that knows when a server
//!   connection is idle and clean (ReadyForQuery accounting, COPY state).
//! - [`tls`]: TLS to servers (SSLRequest, libpq's sslmode meanings).
//! - [`reset`]: cleaning up after a client vanished mid-transaction (cancel,
//!   Sync, ROLLBACK) so a dirty connection is never handed to anyone else.
//! - [`keepalive`]: TCP keepalive / user timeout on client and server sockets.
//! - [`error`]: the backend error type, with the SQLSTATE shown to clients.

pub mod conn;
pub mod connect;
pub mod error;
pub mod keepalive;
pub mod reset;
pub mod tls;
pub mod tracker;

pub use conn::ServerConn;
pub use error::BackendError;

use std::fmt;

/// The role a server plays for the router.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// A server the router can connect to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// "primary" or the replica's configured name.
    pub name: String,
    pub role: Role,
    pub host: String,
    pub port: u16,
    /// TLS to this server (`tls`, `ca`).
    pub tls: tls::ServerTls,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.host, self.port)
    }
}
