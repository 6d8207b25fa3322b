//! The `router.toml` model. Every key has a default that suits a small
//! production deployment; `docs/configuration.md` documents each one.
//! Unknown keys are rejected (`deny_unknown_fields`) so a typo never silently
//! falls back to a default.

use super::duration::HumanDuration;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    pub primary: BackendConfig,
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub lag: LagConfig,
    /// Per-tenant bulkheads (docs/tenants.md), by tenant name. `default`
    /// holds every user no other tenant claims.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, TenantConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    /// The file this was loaded from (RELOAD and SIGHUP read it again).
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
}

/// Login hardening (docs/security.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Failed logins (wrong password, unknown user, login timeout) allowed
    /// from one client address per `failed_login_window`; then the address
    /// is refused for `failed_login_lockout`. 0: no limit.
    pub max_failed_logins: u32,
    pub failed_login_window: HumanDuration,
    pub failed_login_lockout: HumanDuration,
    /// Looks up users not listed in [[users]] on the server taking writes:
    /// `$1` is the user name, the result (name, password) — a
    /// "SCRAM-SHA-256$..." verifier or an "md5..." hash, as in pg_authid.
    /// Unset: only [[users]] may log in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The role that runs `query` (a role allowed to call the lookup function).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_password: Option<String>,
    /// The database `query` runs in.
    pub query_database: String,
    /// How long an answer of `query` (a user, or "no such user") is reused.
    pub cache_ttl: HumanDuration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            max_failed_logins: 20,
            failed_login_window: HumanDuration::from_secs(60),
            failed_login_lockout: HumanDuration::from_secs(60),
            query: None,
            query_user: None,
            query_password: None,
            query_database: "postgres".into(),
            cache_ttl: HumanDuration::from_secs(60),
        }
    }
}

impl AuthConfig {
    pub fn limits(&self) -> crate::auth::throttle::Limits {
        crate::auth::throttle::Limits {
            max_failures: self.max_failed_logins,
            window: self.failed_login_window.get(),
            lockout: self.failed_login_lockout.get(),
        }
    }
}

/// TLS for clients (docs/security.md).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM certificate chain, leaf first.
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// SSLRequest is answered 'N': plaintext only.
    #[default]
    Disable,
    /// TLS for clients that ask for it, plaintext for the others.
    Allow,
    /// Plaintext clients are refused (28000); cancel requests excepted.
    Require,
}

/// The admin console: `psql -U <admin user> pgrouter` (docs/observability.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// [[users]] entries that may use the console (none by default).
    pub users: Vec<String>,
    /// The database name that opens the console instead of a server session.
    pub database: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            database: "pgrouter".into(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The name of the tenant that holds every user no other tenant claims.
pub const DEFAULT_TENANT: &str = "default";

/// One tenant: its members and its limits. Unset limits come from
/// `[pool]` and `[server]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Client users that belong to this tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Databases that belong to this tenant (for users no tenant lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Client addresses admitted for this tenant's users ("10.0.0.0/8");
    /// empty: any. A user's own `allow` must admit the address too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Server connections per backend for this tenant (default: pool.pool_size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<usize>,
    /// Connections kept open per (user, database) and backend (default: pool.min_pool_size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_pool_size: Option<usize>,
    /// Client connections (default: server.max_client_conn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<usize>,
    /// Clients that may wait for a server connection (default: pool.queue_limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_limit: Option<usize>,
    /// Longest wait for a server connection (default: server.query_wait_timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// Sent to the server as the session default of this tenant's connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout: Option<HumanDuration>,
}

/// A token bucket: `transactions_per_second` on average, `burst` at once.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub transactions_per_second: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}

/// The health and lag monitor (docs/lag.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LagConfig {
    /// Probe every server (false: replicas are always considered healthy).
    pub enabled: bool,
    pub probe_interval: HumanDuration,
    /// A probe (or the monitor's connect) slower than this counts as failed.
    pub probe_timeout: HumanDuration,
    /// A replica further behind than this gets no new reads.
    pub max_lag: HumanDuration,
    /// Same, in bytes of WAL (0: no byte threshold).
    pub max_lag_bytes: u64,
    /// An evicted replica returns once its lag stays under this (default: max_lag / 2)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readmit_lag: Option<HumanDuration>,
    /// ...for this many consecutive probes.
    pub readmit_probes: u32,
    /// Longest wait between probes of a server that does not answer.
    pub max_backoff: HumanDuration,
    /// The role the monitor logs in as (default: the first [[users]] entry's server login).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor_password: Option<String>,
    pub monitor_database: String,
    /// Consecutive failed connection attempts that open a server's circuit (0: never).
    pub breaker_failures: u32,
    /// How long an open circuit refuses connections before one trial attempt.
    pub breaker_cooldown: HumanDuration,
}

impl Default for LagConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            probe_interval: HumanDuration::from_millis(250),
            probe_timeout: HumanDuration::from_secs(1),
            max_lag: HumanDuration::from_secs(1),
            max_lag_bytes: 0,
            readmit_lag: None,
            readmit_probes: 3,
            max_backoff: HumanDuration::from_secs(2),
            monitor_user: None,
            monitor_password: None,
            monitor_database: "postgres".into(),
            breaker_failures: 3,
            breaker_cooldown: HumanDuration::from_secs(1),
        }
    }
}

impl LagConfig {
    pub fn readmit_lag(&self) -> std::time::Duration {
        self.readmit_lag
            .map(HumanDuration::get)
            .unwrap_or(self.max_lag.get() / 2)
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalance {
    LeastOutstanding,
    RoundRobin,
    Random,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Reads go to the primary when no replica is usable.
    Primary,
    /// Reads fail with an error when no replica is usable.
    Error,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadYourWrites {
    /// Reads wait for (or avoid) replicas that have not replayed the client's last write.
    Lsn,
    /// Reads go to the primary for `pin_duration` after a write.
    Time,
    Off,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyScope {
    /// Each client connection sees its own writes.
    Client,
    /// Every connection of the same user sees that user's writes.
    User,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Send reads to replicas at all (false: everything to the primary).
    pub enabled: bool,
    pub load_balance: LoadBalance,
    /// The primary also serves reads (as one more candidate).
    pub primary_reads: bool,
    pub fallback: Fallback,
    pub read_your_writes: ReadYourWrites,
    pub consistency_scope: ConsistencyScope,
    /// "time" mode: how long reads stay on the primary after a write.
    pub pin_duration: HumanDuration,
    /// "lsn" mode: how long a read may wait for a replica to catch up before
    /// going to the primary (0: do not wait).
    pub causal_wait: HumanDuration,
    /// Functions whose calls make a statement a write (beyond the built-in list).
    pub write_functions: Vec<String>,
    /// Functions never treated as writes (overrides both lists).
    pub read_only_functions: Vec<String>,
    /// How often the list of user-defined VOLATILE functions is reloaded.
    pub catalog_refresh: HumanDuration,
    /// Take the servers' roles from `pg_is_in_recovery()` instead of the
    /// config: writes follow a promoted replica (failover).
    pub discover_roles: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            load_balance: LoadBalance::LeastOutstanding,
            primary_reads: false,
            fallback: Fallback::Primary,
            read_your_writes: ReadYourWrites::Lsn,
            consistency_scope: ConsistencyScope::Client,
            pin_duration: HumanDuration::from_secs(2),
            causal_wait: HumanDuration::from_secs(0),
            write_functions: Vec::new(),
            read_only_functions: Vec::new(),
            catalog_refresh: HumanDuration::from_secs(60),
            discover_roles: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection is lent from a client's first message to the
    /// ReadyForQuery that reports the transaction is over.
    Transaction,
    /// A server connection is held for the client's whole session.
    Session,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub http_listen: String,
    pub pool_mode: PoolMode,
    pub max_client_conn: usize,
    /// Cap on server connections the router opens to any one server, summed
    /// over tenants (0: no cap). Keep it under the server's max_connections.
    pub max_server_conn_per_backend: usize,
    pub server_connect_timeout: HumanDuration,
    pub query_wait_timeout: HumanDuration,
    pub client_login_timeout: HumanDuration,
    pub server_idle_timeout: HumanDuration,
    pub server_lifetime: HumanDuration,
    pub shutdown_timeout: HumanDuration,
    /// How long the router may spend cancelling/rolling back the work of a
    /// client that vanished mid-transaction before it closes the server connection.
    pub server_reset_timeout: HumanDuration,
    /// Run when a session-mode client leaves, before its server connection is reused.
    pub server_reset_query: String,
    /// Largest protocol message accepted from a client, in bytes (PostgreSQL's own limit is 1 GiB).
    pub max_message_size: usize,
    /// Threads that run client sessions (0: one per core).
    pub worker_threads: usize,
    /// SO_REUSEPORT on `listen`: several pgrouter processes may listen on
    /// the same port, so a new version can start beside the old one before
    /// it drains (docs/scale-out.md). Off by default: a second router
    /// started by mistake fails with "address in use" instead of silently
    /// taking half the connections.
    pub reuse_port: bool,
    /// `error`, `warn`, `info`, `debug` or `trace` (RUST_LOG overrides it).
    pub log_level: String,
    pub log_format: LogFormat,
    /// Log transactions that held their server connection longer than this
    /// ("0s": off).
    pub log_slow_transactions: HumanDuration,
    /// TCP keepalive on client and server sockets: a peer that vanished
    /// without closing (a dead host, a dropped route) is found after
    /// idle + interval x count instead of the OS default of two hours.
    pub tcp_keepalive: bool,
    pub tcp_keepalive_idle: HumanDuration,
    pub tcp_keepalive_interval: HumanDuration,
    pub tcp_keepalive_count: u32,
    /// TCP_USER_TIMEOUT: drop a connection whose sent data stays
    /// unacknowledged this long ("0s": the kernel default).
    pub tcp_user_timeout: HumanDuration,
}

impl ServerConfig {
    pub fn tcp_settings(&self) -> crate::backend::keepalive::TcpSettings {
        crate::backend::keepalive::TcpSettings {
            keepalive: self.tcp_keepalive,
            idle: self.tcp_keepalive_idle.get(),
            interval: self.tcp_keepalive_interval.get(),
            count: self.tcp_keepalive_count,
            user_timeout: self.tcp_user_timeout.get(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".into(),
            http_listen: "127.0.0.1:9930".into(),
            pool_mode: PoolMode::Transaction,
            max_client_conn: 10_000,
            max_server_conn_per_backend: 0,
            server_connect_timeout: HumanDuration::from_secs(3),
            query_wait_timeout: HumanDuration::from_secs(5),
            client_login_timeout: HumanDuration::from_secs(10),
            server_idle_timeout: HumanDuration::from_secs(60),
            server_lifetime: HumanDuration::from_secs(3600),
            shutdown_timeout: HumanDuration::from_secs(30),
            server_reset_timeout: HumanDuration::from_secs(5),
            server_reset_query: "DISCARD ALL".into(),
            max_message_size: crate::protocol::framing::PG_MAX_MESSAGE_LEN,
            worker_threads: 0,
            reuse_port: false,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            log_slow_transactions: HumanDuration::from_secs(0),
            tcp_keepalive: true,
            tcp_keepalive_idle: HumanDuration::from_secs(60),
            tcp_keepalive_interval: HumanDuration::from_secs(10),
            tcp_keepalive_count: 3,
            tcp_user_timeout: HumanDuration::from_secs(0),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
pub enum AuthMethod {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "trust")]
    Trust,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plaintext, a "SCRAM-SHA-256$..." verifier or an "md5..." hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default)]
    pub auth: AuthMethod,
    /// The role the router logs into PostgreSQL as (default: `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_user: Option<String>,
    /// Password for the server login (default: `password` when it is plaintext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_password: Option<String>,
    /// Client addresses admitted ("10.0.0.0/8", "::1"); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// TLS to this server (docs/security.md).
    #[serde(default)]
    pub tls: ServerTlsMode,
    /// PEM CA certificate(s) the server's certificate must chain to
    /// (required by `tls = "verify-full"`).
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
}

/// TLS from the router to a server, as libpq's sslmode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsMode {
    /// Plaintext.
    Disable,
    /// TLS when the server offers it (certificate not checked), else
    /// plaintext: libpq's and PgBouncer's default.
    #[default]
    Prefer,
    /// TLS or no connection (certificate not checked).
    Require,
    /// TLS, the certificate chaining to `ca` and naming `host`.
    VerifyFull,
}

impl ServerTlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTlsMode::Disable => "disable",
            ServerTlsMode::Prefer => "prefer",
            ServerTlsMode::Require => "require",
            ServerTlsMode::VerifyFull => "verify-full",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    pub name: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Relative share of reads (used by the router's load balancer).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// TLS to this replica, as `[primary] tls`.
    #[serde(default)]
    pub tls: ServerTlsMode,
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Server connections per backend, per tenant (docs/tenants.md).
    pub pool_size: usize,
    /// Connections kept open per (user, database) and backend.
    pub min_pool_size: usize,
    /// Clients of one tenant that may wait for a server connection; more get
    /// an immediate error.
    pub queue_limit: usize,
    /// Named prepared statements kept per server connection (LRU); 0 turns
    /// statement tracking off (named statements then only work while a
    /// client happens to get the same server connection).
    pub max_prepared_statements: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            pool_size: 20,
            min_pool_size: 0,
            queue_limit: 1000,
            max_prepared_statements: 200,
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_weight() -> u32 {
    1
}
