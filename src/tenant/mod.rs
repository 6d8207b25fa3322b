//! Tenants: bulkheads around groups of users (docs/tenants.md).
//!
//! Each tenant has its own pools on every server, its own wait queue, client
//! limit, rate limit and statement timeout, so one tenant's overload cannot
//! take another's connections. Overload is refused fast, with a message that
//! names the tenant and the limit:
//! - too many clients: 53300 at login;
//! - queue full / waited too long for a server connection: 53300 (from
//!   [`crate::pool`]), the client's connection stays usable;
//! - over the rate limit: 53400, the connection stays usable.

pub mod rate;

use crate::backend::Target;
use crate::config::{Config, RateLimitConfig, TenantSettings, DEFAULT_TENANT};
use crate::metrics::{Metrics, TenantMetrics};
use crate::pool::budget::{Budget, Queue, ServerCap};
use crate::pool::capacity::Capacity;
use arc_swap::ArcSwap;
use rate::TokenBucket;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("pgrouter: tenant {tenant}: too many clients (max_clients {max})")]
    TooManyClients { tenant: Arc<str>, max: usize },
    #[error("pgrouter: tenant {tenant}: rate limit of {rate} transactions/s exceeded (burst {burst}); the next slot is {wait_ms} ms away, over queue_timeout")]
    RateLimited {
        tenant: Arc<str>,
        rate: f64,
        burst: u32,
        wait_ms: u128,
    },
}

impl TenantError {
    pub fn sqlstate(&self) -> &'static str {
        use crate::protocol::sqlstate;
        match self {
            TenantError::TooManyClients { .. } => sqlstate::TOO_MANY_CONNECTIONS,
            TenantError::RateLimited { .. } => sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
        }
    }
}

/// Counters of one tenant (the pool-side ones live in its [`Queue`]).
#[derive(Debug, Default)]
pub struct TenantStats {
    pub clients_refused: AtomicU64,
    /// Transactions that waited for a rate-limit token.
    pub rate_delayed: AtomicU64,
    pub rate_refused: AtomicU64,
}

fn bucket(r: RateLimitConfig) -> TokenBucket {
    TokenBucket::new(r.transactions_per_second, r.burst, Instant::now())
}

pub struct Tenant {
    pub name: Arc<str>,
    /// Current limits (swapped on reload; see [`Tenant::apply`]).
    settings: ArcSwap<TenantSettings>,
    clients: Capacity,
    pub queue: Arc<Queue>,
    rate: Mutex<Option<TokenBucket>>,
    /// Whether `rate` holds a bucket: most tenants have no rate limit, and
    /// their transactions then skip the lock.
    rate_limited: AtomicBool,
    /// This tenant's capacity on each server, made on first use.
    budgets: Mutex<HashMap<Arc<Target>, Arc<Budget>>>,
    pub stats: TenantStats,
    /// This tenant's transaction and pool-wait series.
    pub metrics: TenantMetrics,
    /// PAUSE: new transactions wait until RESUME. The flag is the hot-path
    /// check; the channel wakes the waiters.
    paused: AtomicBool,
    resumed: tokio::sync::watch::Sender<bool>,
}

impl Tenant {
    fn new(name: &str, settings: TenantSettings, metrics: &Metrics) -> Self {
        let name: Arc<str> = name.into();
        Self {
            metrics: metrics.tenant(&name),
            paused: AtomicBool::new(false),
            resumed: tokio::sync::watch::Sender::new(true),
            queue: Queue::new(name.clone(), settings.queue_limit, settings.queue_timeout),
            clients: Capacity::new(settings.max_clients),
            rate_limited: AtomicBool::new(settings.rate_limit.is_some()),
            rate: Mutex::new(settings.rate_limit.map(bucket)),
            budgets: Mutex::new(HashMap::new()),
            stats: TenantStats::default(),
            name,
            settings: ArcSwap::from_pointee(settings),
        }
    }

    pub fn settings(&self) -> arc_swap::Guard<Arc<TenantSettings>> {
        self.settings.load()
    }

    /// Applies reloaded limits in place: clients and transactions in flight
    /// keep going; the new sizes hold as work finishes.
    pub fn apply(&self, new: TenantSettings) {
        let old = self.settings();
        self.clients.resize(new.max_clients);
        self.queue.set(new.queue_limit, new.queue_timeout);
        if old.rate_limit != new.rate_limit {
            if let Ok(mut r) = self.rate.lock() {
                *r = new.rate_limit.map(bucket);
                self.rate_limited
                    .store(new.rate_limit.is_some(), Ordering::Relaxed);
            }
        }
        if let Ok(budgets) = self.budgets.lock() {
            for b in budgets.values() {
                b.resize(new.pool_size, new.min_pool_size);
            }
        }
        self.settings.store(Arc::new(new));
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// PAUSE: transactions not yet started wait for [`Tenant::resume`].
    pub fn pause(&self) {
        self.resumed.send_replace(false);
        self.paused.store(true, Ordering::Release);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
        self.resumed.send_replace(true);
    }

    /// Resolves when the tenant is not paused. Cancel-safe.
    pub async fn wait_resumed(&self) {
        let mut rx = self.resumed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Server connections lent to this tenant's clients now, on all servers.
    pub fn active(&self) -> usize {
        self.servers().iter().map(|(_, _, in_use)| in_use).sum()
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.in_use()
    }

    /// A client's place among `max_clients`, held for its whole session.
    pub fn admit_client(&self) -> Result<OwnedSemaphorePermit, TenantError> {
        self.clients.try_acquire().ok_or_else(|| {
            self.stats.clients_refused.fetch_add(1, Ordering::Relaxed);
            TenantError::TooManyClients {
                tenant: self.name.clone(),
                max: self.settings().max_clients,
            }
        })
    }

    /// Whether the rate limit lets a transaction start: after how long
    /// (zero: now), or why not.
    pub fn admit_transaction(&self) -> Result<Duration, TenantError> {
        if !self.rate_limited.load(Ordering::Relaxed) {
            return Ok(Duration::ZERO);
        }
        let Ok(mut guard) = self.rate.lock() else {
            return Ok(Duration::ZERO);
        };
        let Some(b) = guard.as_mut() else {
            return Ok(Duration::ZERO);
        };
        match b.reserve(Instant::now(), self.queue.timeout()) {
            Ok(w) => {
                if !w.is_zero() {
                    self.stats.rate_delayed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(w)
            }
            Err(w) => {
                self.stats.rate_refused.fetch_add(1, Ordering::Relaxed);
                let r = self.settings().rate_limit.unwrap_or(RateLimitConfig {
                    transactions_per_second: 0.0,
                    burst: 0,
                });
                Err(TenantError::RateLimited {
                    tenant: self.name.clone(),
                    rate: r.transactions_per_second,
                    burst: r.burst,
                    wait_ms: w.as_millis(),
                })
            }
        }
    }

    /// This tenant's capacity on `target`.
    pub fn budget(&self, target: &Arc<Target>, cap: &Arc<ServerCap>) -> Arc<Budget> {
        let make = || {
            let s = self.settings();
            Budget::new(
                s.pool_size,
                s.min_pool_size,
                self.queue.clone(),
                cap.clone(),
            )
        };
        let Ok(mut m) = self.budgets.lock() else {
            return make();
        };
        m.entry(target.clone()).or_insert_with(make).clone()
    }

    /// (server name, open connections, lent connections) per server used.
    pub fn servers(&self) -> Vec<(String, usize, usize)> {
        let mut v: Vec<_> = self
            .budgets
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(t, b)| (t.name.clone(), b.open_count(), b.in_use()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Startup `options` for this tenant's server connections.
    pub fn server_options(&self) -> Option<String> {
        self.settings()
            .statement_timeout
            .map(|d| format!("-c statement_timeout={}", d.as_millis()))
    }
}

/// Every tenant, and who belongs to which.
pub struct Tenants {
    list: Vec<Arc<Tenant>>,
    by_user: HashMap<String, usize>,
    by_database: HashMap<String, usize>,
    default: usize,
}

impl Tenants {
    pub fn new(config: &Config, metrics: &Metrics) -> Self {
        Self::build(config, metrics, &[])
    }

    /// The tenants of a reloaded config. Tenants that keep their name are
    /// the same objects, their limits changed in place ([`Tenant::apply`]),
    /// so their connected clients and pools carry on; removed tenants live
    /// on only in the clients still connected to them.
    pub fn reconfigure(&self, config: &Config, metrics: &Metrics) -> Self {
        Self::build(config, metrics, &self.list)
    }

    fn build(config: &Config, metrics: &Metrics, existing: &[Arc<Tenant>]) -> Self {
        let mut list = Vec::new();
        let mut by_user = HashMap::new();
        let mut by_database = HashMap::new();
        let mut default = 0;
        for name in config.tenant_names() {
            let i = list.len();
            if name == DEFAULT_TENANT {
                default = i;
            }
            if let Some(t) = config.tenants.get(&name) {
                for u in &t.users {
                    by_user.insert(u.clone(), i);
                }
                for d in &t.databases {
                    by_database.insert(d.clone(), i);
                }
            }
            let settings = config.tenant_settings(&name);
            let tenant = match existing.iter().find(|t| *t.name == *name) {
                Some(t) => {
                    if **t.settings() != settings {
                        t.apply(settings);
                    }
                    t.clone()
                }
                None => Arc::new(Tenant::new(&name, settings, metrics)),
            };
            list.push(tenant);
        }
        Self {
            list,
            by_user,
            by_database,
            default,
        }
    }

    /// The tenant of a client: the one listing its user, else the one
    /// listing its database, else `default`.
    pub fn resolve(&self, user: &str, database: &str) -> &Arc<Tenant> {
        let i = self
            .by_user
            .get(user)
            .or_else(|| self.by_database.get(database))
            .copied()
            .unwrap_or(self.default);
        &self.list[i.min(self.list.len() - 1)]
    }

    /// When `user` belongs to one tenant by name and `database` to another:
    /// (the user's tenant, the database's). Such a login is refused.
    pub fn crossing(&self, user: &str, database: &str) -> Option<(&Arc<Tenant>, &Arc<Tenant>)> {
        let u = *self.by_user.get(user)?;
        let d = *self.by_database.get(database)?;
        (u != d).then(|| (&self.list[u], &self.list[d]))
    }

    pub fn all(&self) -> &[Arc<Tenant>] {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new().unwrap_or_else(|e| panic!("{e}"))
    }

    fn config(extra: &str) -> Config {
        let text = format!(
            "[[users]]\nname = \"a\"\npassword = \"x\"\n[[users]]\nname = \"b\"\npassword = \"x\"\n\
             [[users]]\nname = \"c\"\npassword = \"x\"\n[primary]\nport = 5432\n{extra}"
        );
        Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn users_then_databases_then_default() {
        let c = config(
            "[tenants.acme]\nusers = [\"a\"]\npool_size = 3\n\
             [tenants.globex]\ndatabases = [\"globex\"]\n",
        );
        let t = Tenants::new(&c, &metrics());
        assert_eq!(&*t.resolve("a", "globex").name, "acme");
        assert_eq!(t.resolve("a", "x").settings().pool_size, 3);
        assert_eq!(&*t.resolve("b", "globex").name, "globex");
        assert_eq!(&*t.resolve("b", "other").name, "default");
        assert_eq!(t.resolve("b", "other").settings().pool_size, 20);
    }

    #[test]
    fn client_limit_is_per_tenant() {
        let c = config("[tenants.acme]\nusers = [\"a\"]\nmax_clients = 1\n");
        let t = Tenants::new(&c, &metrics());
        let acme = t.resolve("a", "d");
        let first = acme.admit_client();
        assert!(first.is_ok());
        let err = acme.admit_client().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("pgrouter: tenant acme: too many clients (max_clients 1)")
        );
        // Another tenant is unaffected.
        assert!(t.resolve("b", "d").admit_client().is_ok());
        drop(first);
        assert!(acme.admit_client().is_ok());
    }

    #[test]
    fn statement_timeout_becomes_a_startup_option() {
        let c = config("[tenants.acme]\nusers = [\"a\"]\nstatement_timeout = \"1500ms\"\n");
        let t = Tenants::new(&c, &metrics());
        assert_eq!(
            t.resolve("a", "d").server_options().as_deref(),
            Some("-c statement_timeout=1500")
        );
        assert_eq!(t.resolve("b", "d").server_options(), None);
    }
}
