//! The client side of the router.
//!
//! - [`listener`]: accepts connections, enforces `max_client_conn`.
//! - [`stream`]: the client socket, exposing whole messages only.
//! - [`handshake`]: startup packet, SSL/GSS refusal, authentication, login.
//! - [`params`]: which session parameters a client asked for.
//! - [`session_set`]: SET/RESET/DISCARD a client sends, carried across loans.
//! - `route`: where a session's next transaction runs, read-your-writes.
//! - [`session`]: the per-client loop that lends server connections one
//!   transaction (or one session) at a time.
//! - [`workers`]: thread-per-core runtimes the sessions run on.
//! - [`cancel`]: router-issued cancel keys mapped to the server running the query.
//! - [`error`]: client-side errors and what the client is told.

pub mod cancel;
pub mod error;
pub mod handshake;
pub mod listener;
pub mod params;
mod route;
pub mod session;
pub mod session_set;
pub mod stream;
pub mod workers;

pub use error::ClientError;
