//! Hot reload (SIGHUP or the admin console's RELOAD): re-read router.toml,
//! validate it, and apply what can change under running clients.
//!
//! Applied live, without dropping clients or transactions:
//! - users (new logins see new users and passwords; connected clients stay);
//! - tenants: new ones, removed ones (their connected clients finish on the
//!   old limits), and every limit of existing ones in place (pool_size,
//!   min_pool_size, max_clients, queue_limit, queue_timeout, rate_limit;
//!   statement_timeout on new server connections);
//! - server-wide: max_client_conn, query_wait_timeout (the default
//!   tenant's queue timeout), timeouts, log_slow_transactions,
//!   server_reset_query;
//! - routing and read-your-writes settings, write/read-only function lists;
//! - lag thresholds (from the next probe), probe interval and timeout;
//! - replicas added (probed, then given reads once healthy) and removed (no
//!   new reads; reads running there finish; idle connections closed; a
//!   replica whose host, port or weight changed is removed and added anew);
//! - the admin section.
//!
//! Needing a restart (the running value is kept, and the reload says so):
//! listen addresses, worker_threads, pool_mode, max_message_size,
//! max_server_conn_per_backend, [primary], and switching routing, the
//! monitor or role discovery on or off, breaker settings.
//!
//! A file that fails to parse or validate changes nothing: the error is
//! logged and returned to RELOAD.

use crate::app::Shared;
use crate::config::{Config, ConfigError};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the router was not started from a config file")]
    NoSource,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    ServerTls(#[from] crate::backend::tls::ServerTlsError),
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Settings now in effect that differ from before.
    pub changed: Vec<String>,
    /// Settings that differ in the file but need a restart (not applied).
    pub need_restart: Vec<String>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &Vec<String>| {
            let mut s = v.iter().take(12).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 12 {
                s.push_str(&format!(" and {} more", v.len() - 12));
            }
            s
        };
        if self.changed.is_empty() {
            write!(f, "configuration reloaded: nothing changed")?;
        } else {
            write!(
                f,
                "configuration reloaded: {} changed ({})",
                self.changed.len(),
                list(&self.changed)
            )?;
        }
        if !self.need_restart.is_empty() {
            write!(
                f,
                "; needs a restart, not applied: {}",
                list(&self.need_restart)
            )?;
        }
        Ok(())
    }
}

/// Settings only a restart changes (key prefixes of [`Config::flat`]).
const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.http_listen",
    "server.worker_threads",
    "server.reuse_port",
    "server.pool_mode",
    "server.max_message_size",
    "server.max_server_conn_per_backend",
    "primary",
    "lag.enabled",
    "lag.breaker_",
    "lag.monitor_",
    "routing.enabled",
    "routing.discover_roles",
    "routing.load_balance",
];

fn restart_only(key: &str) -> bool {
    RESTART_ONLY.iter().any(|p| key.starts_with(p))
}

/// Re-reads the file the router was started from and applies it.
pub fn reload(shared: &Shared) -> Result<Reloaded, ReloadError> {
    let old = shared.config();
    let path = old.source.clone().ok_or(ReloadError::NoSource)?;
    let mut new = Config::load(&path)?;
    let (before, after) = (old.flat(), new.flat());
    let differs = |k: &str| {
        let in_old = before.iter().filter(|(b, _)| b.starts_with(k));
        let in_new = after.iter().filter(|(a, _)| a.starts_with(k));
        !in_old.eq(in_new)
    };
    let mut result = Reloaded::default();
    // Keep the running values of what needs a restart.
    for p in RESTART_ONLY {
        if differs(p) {
            result
                .need_restart
                .push(p.trim_end_matches('_').to_string());
        }
    }
    let s = &mut new.server;
    s.listen.clone_from(&old.server.listen);
    s.http_listen.clone_from(&old.server.http_listen);
    s.worker_threads = old.server.worker_threads;
    s.reuse_port = old.server.reuse_port;
    s.pool_mode = old.server.pool_mode;
    s.max_message_size = old.server.max_message_size;
    s.max_server_conn_per_backend = old.server.max_server_conn_per_backend;
    new.primary = old.primary.clone();
    new.lag.enabled = old.lag.enabled;
    new.lag.breaker_failures = old.lag.breaker_failures;
    new.lag.breaker_cooldown = old.lag.breaker_cooldown;
    new.lag.monitor_user.clone_from(&old.lag.monitor_user);
    new.lag
        .monitor_password
        .clone_from(&old.lag.monitor_password);
    new.lag
        .monitor_database
        .clone_from(&old.lag.monitor_database);
    new.routing.enabled = old.routing.enabled;
    new.routing.discover_roles = old.routing.discover_roles;
    new.routing.load_balance = old.routing.load_balance;
    // The merged config must hold together too (a tenant pool_size over
    // the kept server cap, say).
    new.validate()?;
    // Read the certificate files again even if the paths did not change
    // (a renewal); a bad file refuses the whole reload.
    let tls = crate::tls::acceptor(&new.tls)?;
    for (i, r) in new.replicas.iter().enumerate() {
        crate::app::replica_tls(i, r)?;
    }
    new.source = Some(path);
    let kept = new.flat();
    result.changed = kept
        .iter()
        .filter(|kv| !before.contains(kv))
        .map(|(k, _)| k.clone())
        .chain(
            before
                .iter()
                .filter(|(k, _)| !kept.iter().any(|(n, _)| n == k))
                .map(|(k, _)| format!("{k} (removed)")),
        )
        .filter(|k| !restart_only(k))
        .collect();
    shared.set_tls(tls);
    shared.apply(new);
    Ok(result)
}

/// Reloads on every SIGHUP until shutdown, logging the outcome.
pub async fn on_sighup(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: reload with the admin console's RELOAD");
        return;
    };
    loop {
        tokio::select! {
            r = hup.recv() => if r.is_none() { return },
            _ = shared.shutdown.wait() => return,
        }
        log(&reload(&shared), "SIGHUP");
    }
}

/// Logs a reload's outcome.
pub fn log(result: &Result<Reloaded, ReloadError>, via: &str) {
    match result {
        Ok(r) if r.need_restart.is_empty() => tracing::info!(via, "{r}"),
        Ok(r) => tracing::warn!(via, "{r}"),
        Err(e) => {
            tracing::error!(via, error = %e, "reload refused; the running configuration stays")
        }
    }
}
