//! pgrouter: a PostgreSQL transaction-mode pooler and read/write router.
//!
//! Layout, one module per concept (dependencies point downwards):
//! - [`protocol`]: sans-IO wire codec (framing, the few messages the router reads, encoders, SQLSTATEs).
//! - [`auth`]: server-side SCRAM-SHA-256 / md5 verification of clients.
//! - [`frontend`]: the client side: listener, handshake, per-client session loop, cancel.
//! - [`backend`]: connections to PostgreSQL servers: login, response tracking, reset.
//! - [`router`]: read/write classification of statements (sqlparser), with caches.
//! - [`prepared`]: named prepared statements that follow clients across pooled connections.
//! - [`pool`]: bounded pools of server connections with FIFO wait, idle/lifetime expiry and a circuit breaker per server.
//! - [`lag`]: the health and lag monitor: replica eviction with hysteresis, which server takes writes.
//! - [`config`]: `router.toml` model, duration parsing, validation.
//! - [`admin`]: the admin console (`psql ... pgrouter`): SHOW, PAUSE/RESUME, RELOAD, SHUTDOWN.
//! - [`app`]: wiring of listeners, background tasks and graceful drain.
//! - [`http`]: health endpoints, `/status`, `/metrics`.
//! - [`metrics`]: Prometheus metrics (hot-path series and scrape-time state).
//! - [`reload`]: hot reload of router.toml (SIGHUP, RELOAD).
//! - [`demo`]: throwaway primary + replicas from the machine's PostgreSQL (used by `pgrouter demo` and the tests).
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::todo)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod config;
pub mod demo;
pub mod frontend;
pub mod http;
pub mod lag;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod prepared;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod shutdown;
pub mod spares;
pub mod tenant;
pub mod tls;
