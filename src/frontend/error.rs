//! Errors on the client side, each knowing the SQLSTATE and the message the
//! client is shown before the router closes the connection.

use crate::protocol::{sqlstate, ProtocolError};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client went away (EOF, reset): nothing to tell it.
    #[error("client disconnected: {0}")]
    Gone(std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("password authentication failed for user \"{user}\"")]
    AuthFailed { user: String },
    #[error("{0}")]
    Refused(String),
    #[error("{message}")]
    Fatal { code: String, message: String },
    #[error("client did not complete login within {0} ms")]
    LoginTimeout(u128),
    /// The TLS handshake failed: nothing can be said in plaintext.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
}

impl ClientError {
    /// The (SQLSTATE, message) to send as a FATAL ErrorResponse, if any.
    pub fn response(&self) -> Option<(&str, String)> {
        match self {
            ClientError::Gone(_) | ClientError::Tls(_) => None,
            ClientError::Protocol(e) => {
                Some((sqlstate::PROTOCOL_VIOLATION, format!("pgrouter: {e}")))
            }
            ClientError::AuthFailed { .. } => Some((sqlstate::INVALID_PASSWORD, self.to_string())),
            ClientError::Refused(m) => Some((sqlstate::INVALID_AUTHORIZATION, m.clone())),
            ClientError::Fatal { code, message } => Some((code.as_str(), message.clone())),
            ClientError::LoginTimeout(_) => {
                Some((sqlstate::PROTOCOL_VIOLATION, format!("pgrouter: {self}")))
            }
        }
    }

    /// Which side failed, for logs: the client (left, misbehaved, failed to
    /// log in), a server (connection lost) or the router (a limit, shutdown).
    pub fn side(&self) -> &'static str {
        match self {
            ClientError::Fatal { code, .. }
                if code == sqlstate::CONNECTION_FAILURE || code.starts_with("08") =>
            {
                "server"
            }
            ClientError::Fatal { .. } => "router",
            _ => "client",
        }
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        ClientError::Fatal {
            code: code.to_string(),
            message: message.into(),
        }
    }
}
