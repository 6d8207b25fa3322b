//! Errors on the server side of the router, each with the SQLSTATE and
//! message a client is shown.

use super::Target;
use crate::protocol::parse::ErrorFields;
use crate::protocol::{sqlstate, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to server {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to server {target} after {ms} ms")]
    ConnectTimeout { target: String, ms: u128 },
    /// The server refused the login with an ErrorResponse (bad database, auth, too many connections...).
    #[error("server {target} refused the login: {} ({})", fields.message, fields.code)]
    Refused { target: String, fields: ErrorFields },
    #[error("cannot log into server {target}: {reason}")]
    Login { target: String, reason: String },
    #[error("protocol error from server {target}: {source}")]
    Protocol {
        target: String,
        source: ProtocolError,
    },
    #[error("lost connection to server {target}: {source}")]
    Io {
        target: String,
        source: std::io::Error,
    },
    #[error("server {target} closed the connection")]
    Closed { target: String },
    #[error("server {target} stopped answering: the lag monitor cannot reach it and nothing arrived on this connection for {ms} ms")]
    Stalled { target: String, ms: u128 },
    #[error("server {target} is unavailable: {failures} connection attempts failed in a row (last: {last_error}); next attempt in {retry_ms} ms")]
    CircuitOpen {
        target: String,
        failures: u32,
        last_error: String,
        retry_ms: u128,
    },
}

impl BackendError {
    pub fn connect(target: &Target, source: std::io::Error) -> Self {
        Self::Connect {
            target: target.to_string(),
            source,
        }
    }
    pub fn io(target: &Target, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            return Self::Closed {
                target: target.to_string(),
            };
        }
        Self::Io {
            target: target.to_string(),
            source,
        }
    }
    pub fn protocol(target: &Target, source: ProtocolError) -> Self {
        Self::Protocol {
            target: target.to_string(),
            source,
        }
    }
    pub fn login(target: &Target, reason: impl Into<String>) -> Self {
        Self::Login {
            target: target.to_string(),
            reason: reason.into(),
        }
    }

    /// Whether this says the server itself is unavailable (what opens its
    /// circuit), as opposed to this login being refused.
    pub fn server_unavailable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::Io { .. }
            | Self::Closed { .. }
            | Self::Stalled { .. }
            | Self::CircuitOpen { .. } => true,
            // 57P01-57P03: shutting down, crashed, starting up.
            Self::Refused { fields, .. } => fields.code.starts_with("57P"),
            _ => false,
        }
    }

    /// The SQLSTATE a client sees for this failure.
    pub fn sqlstate(&self) -> &str {
        match self {
            // A server's own refusal keeps its code (3D000, 28P01, 53300, 57P03...).
            Self::Refused { fields, .. } if !fields.code.is_empty() => &fields.code,
            _ => sqlstate::CONNECTION_FAILURE,
        }
    }

    /// The message a client sees: names the server, never internal detail.
    pub fn client_message(&self) -> String {
        match self {
            Self::Refused { fields, .. } if fields.code == sqlstate::INVALID_CATALOG_NAME => {
                fields.message.clone()
            }
            other => format!("pgrouter: {other}"),
        }
    }
}
