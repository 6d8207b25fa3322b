//! Configuration: the `router.toml` model ([`model`]), durations
//! ([`duration`]), loading and validation (this file).
//!
//! Errors always name the offending key path (`server.listen`, `users[1].password`).

pub mod duration;
pub mod model;
mod tenants;

pub use duration::HumanDuration;
pub use model::*;
pub use tenants::TenantSettings;

use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {key}: {message}")]
    Parse {
        path: String,
        key: String,
        message: String,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Every setting as `key = value` pairs (`a.b`, `users[0].name`), secrets
    /// redacted: SHOW CONFIG, and what a reload changed.
    pub fn flat(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(t) = self.to_redacted_toml().parse::<toml::Table>() {
            flatten("", &toml::Value::Table(t), &mut out);
        }
        out
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            path: origin.into(),
            key: "(syntax)".into(),
            message: e.to_string().trim().to_string(),
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Parse {
                path: origin.into(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: e.into_inner().message().trim().to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: addresses, ranges, cross-references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.http_addr()?;
        let s = &self.server;
        if s.max_client_conn == 0 {
            return Err(invalid("server.max_client_conn", "must be at least 1"));
        }
        if s.max_message_size < 1024
            || s.max_message_size > crate::protocol::framing::PG_MAX_MESSAGE_LEN
        {
            return Err(invalid(
                "server.max_message_size",
                format!(
                    "must be between 1024 and {} bytes",
                    crate::protocol::framing::PG_MAX_MESSAGE_LEN
                ),
            ));
        }
        for (key, d) in [
            ("server.server_connect_timeout", s.server_connect_timeout),
            ("server.query_wait_timeout", s.query_wait_timeout),
            ("server.client_login_timeout", s.client_login_timeout),
            ("server.server_reset_timeout", s.server_reset_timeout),
            ("server.tcp_keepalive_idle", s.tcp_keepalive_idle),
            ("server.tcp_keepalive_interval", s.tcp_keepalive_interval),
            ("auth.failed_login_window", self.auth.failed_login_window),
            ("auth.failed_login_lockout", self.auth.failed_login_lockout),
            ("auth.cache_ttl", self.auth.cache_ttl),
        ] {
            if d.get().is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if s.tcp_keepalive && s.tcp_keepalive_count == 0 {
            return Err(invalid("server.tcp_keepalive_count", "must be at least 1"));
        }
        if self.pool.pool_size == 0 {
            return Err(invalid("pool.pool_size", "must be at least 1"));
        }
        if self.users.is_empty() && self.auth.query.is_none() {
            return Err(invalid("users", "at least one [[users]] entry is required"));
        }
        for (i, u) in self.users.iter().enumerate() {
            let key = |k: &str| format!("users[{i}].{k}");
            if u.name.is_empty() {
                return Err(invalid(key("name"), "must not be empty"));
            }
            if self.users[..i].iter().any(|o| o.name == u.name) {
                return Err(invalid(
                    key("name"),
                    format!("user {:?} is listed twice", u.name),
                ));
            }
            match (&u.auth, &u.password) {
                (AuthMethod::Trust, _) => {}
                (_, None) => {
                    return Err(invalid(
                        key("password"),
                        "required unless auth = \"trust\"",
                    ))
                }
                (AuthMethod::ScramSha256, Some(p)) if crate::auth::md5::is_stored_hash(p) => {
                    return Err(invalid(
                        key("password"),
                        "an md5 hash cannot verify SCRAM-SHA-256 logins: give the plaintext or a SCRAM verifier, or set auth = \"md5\"",
                    ))
                }
                (AuthMethod::Md5, Some(p)) if p.starts_with("SCRAM-SHA-256$") => {
                    return Err(invalid(
                        key("password"),
                        "a SCRAM verifier cannot verify md5 logins: give the plaintext or an md5 hash, or set auth = \"scram-sha-256\"",
                    ))
                }
                (_, Some(p)) if p.starts_with("SCRAM-SHA-256$") => {
                    crate::auth::scram::Verifier::parse(p).map_err(|e| invalid(key("password"), e))?;
                }
                _ => {}
            }
        }
        for (i, r) in self.replicas.iter().enumerate() {
            if r.name.is_empty() {
                return Err(invalid(format!("replicas[{i}].name"), "must not be empty"));
            }
            if self.replicas[..i].iter().any(|o| o.name == r.name) {
                return Err(invalid(
                    format!("replicas[{i}].name"),
                    format!("replica {:?} is listed twice", r.name),
                ));
            }
            if r.weight == 0 {
                return Err(invalid(
                    format!("replicas[{i}].weight"),
                    "must be at least 1",
                ));
            }
        }
        if let Some(q) = &self.auth.query {
            if !q.contains("$1") {
                return Err(invalid("auth.query", "must use $1 (the user name)"));
            }
            if self.auth.query_user.is_none() {
                return Err(invalid(
                    "auth.query_user",
                    "is required with auth.query (the role that runs it)",
                ));
            }
        }
        let servers = std::iter::once(("primary".to_string(), self.primary.tls, &self.primary.ca))
            .chain(
                self.replicas
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("replicas[{i}]"), r.tls, &r.ca)),
            );
        for (key, mode, ca) in servers {
            if mode == ServerTlsMode::VerifyFull && ca.is_none() {
                return Err(invalid(
                    format!("{key}.ca"),
                    "is required by tls = \"verify-full\" (the CA certificate the server's certificate chains to)",
                ));
            }
        }
        self.validate_lag()?;
        self.validate_admin()?;
        let rules = self
            .users
            .iter()
            .enumerate()
            .flat_map(|(i, u)| {
                u.allow
                    .iter()
                    .enumerate()
                    .map(move |(j, r)| (format!("users[{i}].allow[{j}]"), r))
            })
            .chain(self.tenants.iter().flat_map(|(name, t)| {
                t.allow
                    .iter()
                    .enumerate()
                    .map(move |(j, r)| (format!("tenants.{name}.allow[{j}]"), r))
            }));
        for (key, rule) in rules {
            crate::auth::allow::Cidr::parse(rule).map_err(|e| invalid(key, e))?;
        }
        if self.tls.mode != TlsMode::Disable {
            if self.tls.cert.is_none() {
                return Err(invalid(
                    "tls.cert",
                    "is required unless tls.mode = \"disable\"",
                ));
            }
            if self.tls.key.is_none() {
                return Err(invalid(
                    "tls.key",
                    "is required unless tls.mode = \"disable\"",
                ));
            }
        }
        self.validate_tenants()
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        let a = &self.admin;
        if a.database.is_empty() {
            return Err(invalid("admin.database", "must not be empty"));
        }
        for (i, name) in a.users.iter().enumerate() {
            if !self.users.iter().any(|u| &u.name == name) {
                return Err(invalid(
                    format!("admin.users[{i}]"),
                    format!("{name:?} is not a [[users]] entry (admins log in like any user)"),
                ));
            }
        }
        Ok(())
    }

    fn validate_lag(&self) -> Result<(), ConfigError> {
        let l = &self.lag;
        for (key, d) in [
            ("lag.probe_interval", l.probe_interval),
            ("lag.probe_timeout", l.probe_timeout),
            ("lag.max_lag", l.max_lag),
            ("lag.max_backoff", l.max_backoff),
            ("lag.breaker_cooldown", l.breaker_cooldown),
        ] {
            if d.get().is_zero() {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if l.readmit_lag() > l.max_lag.get() {
            return Err(invalid(
                "lag.readmit_lag",
                format!(
                    "must not exceed lag.max_lag ({}), or a readmitted replica is evicted again at once",
                    l.max_lag
                ),
            ));
        }
        if l.readmit_probes == 0 {
            return Err(invalid("lag.readmit_probes", "must be at least 1"));
        }
        if let Some(u) = &l.monitor_user {
            if u.is_empty() {
                return Err(invalid("lag.monitor_user", "must not be empty"));
            }
        }
        if self.routing.discover_roles && !l.enabled {
            return Err(invalid(
                "routing.discover_roles",
                "needs the monitor: set lag.enabled = true",
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("server.listen", &self.server.listen)
    }

    pub fn http_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr("server.http_listen", &self.server.http_listen)
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The effective settings as TOML, with secrets redacted (for `pgrouter check`).
    pub fn to_redacted_toml(&self) -> String {
        let mut c = self.clone();
        for u in &mut c.users {
            if u.password.is_some() {
                u.password = Some("<redacted>".into());
            }
            if u.server_password.is_some() {
                u.server_password = Some("<redacted>".into());
            }
        }
        if c.auth.query_password.is_some() {
            c.auth.query_password = Some("<redacted>".into());
        }
        if c.lag.monitor_password.is_some() {
            c.lag.monitor_password = Some("<redacted>".into());
        }
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::Array(a) if !a.is_empty() && a.iter().all(|x| x.is_table()) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        invalid(
            key,
            format!("{text:?} is not an address like \"127.0.0.1:6432\""),
        )
    })
}

#[cfg(test)]
mod tests;
