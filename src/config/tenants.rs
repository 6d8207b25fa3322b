//! Tenants in the config: who belongs where, each tenant's effective limits,
//! and the checks that keep them consistent (docs/tenants.md).

use super::{invalid, Config, ConfigError, RateLimitConfig, TenantConfig, DEFAULT_TENANT};
use std::time::Duration;

/// A tenant's limits with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantSettings {
    pub pool_size: usize,
    pub min_pool_size: usize,
    pub max_clients: usize,
    pub queue_limit: usize,
    pub queue_timeout: Duration,
    pub rate_limit: Option<RateLimitConfig>,
    pub statement_timeout: Option<Duration>,
}

impl Config {
    /// The effective limits of tenant `name` (`default` when unconfigured).
    pub fn tenant_settings(&self, name: &str) -> TenantSettings {
        let empty = TenantConfig::default();
        let t = self.tenants.get(name).unwrap_or(&empty);
        TenantSettings {
            pool_size: t.pool_size.unwrap_or(self.pool.pool_size),
            min_pool_size: t.min_pool_size.unwrap_or(self.pool.min_pool_size),
            max_clients: t.max_clients.unwrap_or(self.server.max_client_conn),
            queue_limit: t.queue_limit.unwrap_or(self.pool.queue_limit),
            queue_timeout: t
                .queue_timeout
                .map(|d| d.get())
                .unwrap_or(self.server.query_wait_timeout.get()),
            rate_limit: t.rate_limit,
            statement_timeout: t.statement_timeout.map(|d| d.get()),
        }
    }

    /// Every tenant that can have clients: the configured ones and `default`.
    pub fn tenant_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tenants.keys().cloned().collect();
        if !self.tenants.contains_key(DEFAULT_TENANT) {
            names.push(DEFAULT_TENANT.to_string());
        }
        names
    }

    pub(super) fn validate_tenants(&self) -> Result<(), ConfigError> {
        let cap = self.server.max_server_conn_per_backend;
        if self.pool.min_pool_size > self.pool.pool_size {
            return Err(invalid(
                "pool.min_pool_size",
                format!("must not exceed pool.pool_size ({})", self.pool.pool_size),
            ));
        }
        if cap > 0 && self.pool.pool_size > cap {
            return Err(invalid(
                "pool.pool_size",
                format!("exceeds server.max_server_conn_per_backend ({cap})"),
            ));
        }
        // Who claimed each user and database first, to name both keys.
        let mut user_owner: Vec<(&str, String)> = Vec::new();
        let mut db_owner: Vec<(&str, String)> = Vec::new();
        for (name, t) in &self.tenants {
            let key = |k: &str| format!("tenants.{name}.{k}");
            if name.is_empty() {
                return Err(invalid("tenants", "a tenant name must not be empty"));
            }
            if name == DEFAULT_TENANT {
                if !t.users.is_empty() || !t.databases.is_empty() {
                    return Err(invalid(
                        key(if t.users.is_empty() { "databases" } else { "users" }),
                        "the default tenant holds everyone no other tenant claims; it lists no members",
                    ));
                }
            } else if t.users.is_empty() && t.databases.is_empty() {
                return Err(invalid(
                    key("users"),
                    "a tenant needs users or databases (or it would never be used)",
                ));
            }
            for (i, u) in t.users.iter().enumerate() {
                if self.user(u).is_none() {
                    return Err(invalid(
                        format!("{}[{i}]", key("users")),
                        format!("no [[users]] entry is named {u:?}"),
                    ));
                }
                if let Some((_, first)) = user_owner.iter().find(|(o, _)| o == u) {
                    return Err(invalid(
                        format!("{}[{i}]", key("users")),
                        format!("user {u:?} already belongs to a tenant ({first}); a user belongs to exactly one"),
                    ));
                }
                user_owner.push((u, format!("{}[{i}]", key("users"))));
            }
            for (i, d) in t.databases.iter().enumerate() {
                if let Some((_, first)) = db_owner.iter().find(|(o, _)| o == d) {
                    return Err(invalid(
                        format!("{}[{i}]", key("databases")),
                        format!("database {d:?} already belongs to a tenant ({first})"),
                    ));
                }
                db_owner.push((d, format!("{}[{i}]", key("databases"))));
            }
            let s = self.tenant_settings(name);
            if s.pool_size == 0 {
                return Err(invalid(key("pool_size"), "must be at least 1"));
            }
            if cap > 0 && s.pool_size > cap {
                return Err(invalid(
                    key("pool_size"),
                    format!(
                        "{} exceeds server.max_server_conn_per_backend ({cap})",
                        s.pool_size
                    ),
                ));
            }
            if s.min_pool_size > s.pool_size {
                return Err(invalid(
                    key("min_pool_size"),
                    format!("must not exceed the tenant's pool_size ({})", s.pool_size),
                ));
            }
            if s.max_clients == 0 {
                return Err(invalid(key("max_clients"), "must be at least 1"));
            }
            if s.max_clients > self.server.max_client_conn {
                return Err(invalid(
                    key("max_clients"),
                    format!(
                        "{} exceeds server.max_client_conn ({})",
                        s.max_clients, self.server.max_client_conn
                    ),
                ));
            }
            if s.queue_timeout.is_zero() {
                return Err(invalid(key("queue_timeout"), "must be greater than 0"));
            }
            if let Some(r) = s.rate_limit {
                if !(r.transactions_per_second.is_finite() && r.transactions_per_second > 0.0) {
                    return Err(invalid(
                        key("rate_limit.transactions_per_second"),
                        "must be a number greater than 0",
                    ));
                }
                if r.burst == 0 {
                    return Err(invalid(key("rate_limit.burst"), "must be at least 1"));
                }
            }
            if s.statement_timeout.is_some_and(|d| d.is_zero()) {
                return Err(invalid(
                    key("statement_timeout"),
                    "must be greater than 0 (leave it out for no timeout)",
                ));
            }
        }
        Ok(())
    }

    /// Settings that are valid but probably not what the operator meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let cap = self.server.max_server_conn_per_backend;
        if cap > 0 {
            let names = self.tenant_names();
            let sum: usize = names
                .iter()
                .map(|n| self.tenant_settings(n).pool_size)
                .sum();
            if sum > cap {
                out.push(format!(
                    "tenants' pool sizes add up to {sum} per server ({}), over server.max_server_conn_per_backend ({cap}): they cannot all be honoured at once; a busy tenant may wait for another's idle connections to close",
                    names
                        .iter()
                        .map(|n| format!("{n} {}", self.tenant_settings(n).pool_size))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        out
    }
}
