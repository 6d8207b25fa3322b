//! Pools of server connections, one per (tenant, server, user, database).
//!
//! - Capacity belongs to the tenant ([`budget::Budget`]): its pools on one
//!   server share `pool_size` checkouts (a FIFO wait queue, bounded in length
//!   and time) and `pool_size` open connections.
//! - A checked-out connection is a [`PooledConn`] guard. [`PooledConn::release`]
//!   returns it only if it is idle and clean; dropping the guard any other
//!   way closes the connection. A dirty connection is never handed out.
//! - Idle connections expire after `server_idle_timeout`, any connection
//!   after `server_lifetime` ([`Pool::reap`], run by a background task).

pub mod breaker;
pub mod budget;
pub mod capacity;
mod registry;

pub use registry::Pools;

use crate::backend::conn::Params;
use crate::backend::connect::{connect, Login};
use crate::backend::{BackendError, ServerConn, Target};
use breaker::{Admit, Breaker};
use budget::{Budget, OpenSlot, Refused};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;

/// Server-wide pool timeouts, shared by every pool and swapped on reload
/// (per-tenant sizes live in the [`Budget`]).
pub type SharedSettings = Arc<arc_swap::ArcSwap<PoolSettings>>;

#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub lifetime: Duration,
    pub max_message: usize,
    pub tcp: crate::backend::keepalive::TcpSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("pgrouter: tenant {tenant}: waited {waited_ms} ms for a server connection to {target} (pool_size {size})")]
    Timeout {
        tenant: Arc<str>,
        waited_ms: u128,
        target: String,
        size: usize,
    },
    #[error("pgrouter: tenant {tenant}: queue full ({waiting} waiting for a server connection, queue_limit {limit})")]
    QueueFull {
        tenant: Arc<str>,
        waiting: usize,
        limit: usize,
    },
    #[error("pgrouter: server {target} is at max_server_conn_per_backend ({limit} connections); waited {waited_ms} ms for one to close")]
    ServerFull {
        target: String,
        limit: usize,
        waited_ms: u128,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl PoolError {
    pub fn sqlstate(&self) -> &str {
        match self {
            PoolError::Backend(e) => e.sqlstate(),
            _ => crate::protocol::sqlstate::TOO_MANY_CONNECTIONS,
        }
    }
    pub fn client_message(&self) -> String {
        match self {
            PoolError::Backend(e) => e.client_message(),
            _ => self.to_string(),
        }
    }
}

/// Counters for one pool (read by SHOW POOLS / metrics later).
#[derive(Debug, Default)]
pub struct PoolStats {
    pub checkouts: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub discarded: AtomicU64,
    pub wait_timeouts: AtomicU64,
}

/// An idle connection and its place in the budget.
struct Idle {
    /// Boxed: a connection moves in and out of the idle list on every
    /// transaction, so it moves as a pointer, not as its ~500 bytes.
    conn: Box<ServerConn>,
    slot: OpenSlot,
}

pub struct Pool {
    pub target: Arc<Target>,
    pub login: Login,
    settings: SharedSettings,
    /// Least recently used first.
    idle: Mutex<Vec<Idle>>,
    /// The tenant's capacity on this server, shared with its other pools.
    pub budget: Arc<Budget>,
    in_use: AtomicUsize,
    /// A min_pool_size top-up is running.
    warming: AtomicBool,
    /// ParameterStatus values of a fresh session: the defaults clients start from.
    defaults: Mutex<Option<Params>>,
    /// Set once a login to this (server, user, database) has succeeded.
    proven: AtomicBool,
    pub stats: PoolStats,
    /// The server's circuit (shared by every pool of the server).
    breaker: Arc<Breaker>,
}

impl Pool {
    pub fn new(
        target: Arc<Target>,
        login: Login,
        settings: SharedSettings,
        breaker: Arc<Breaker>,
        budget: Arc<Budget>,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            breaker,
            budget,
            in_use: AtomicUsize::new(0),
            warming: AtomicBool::new(false),
            target,
            login,
            settings,
            idle: Mutex::new(Vec::new()),
            defaults: Mutex::new(None),
            proven: AtomicBool::new(false),
            stats: PoolStats::default(),
        });
        pool.budget.register(&pool);
        pool
    }

    pub fn tenant(&self) -> &Arc<str> {
        &self.budget.queue.tenant
    }

    /// How long a checkout may wait (the tenant's `queue_timeout`).
    pub fn wait_limit(&self) -> Duration {
        self.budget.queue.timeout()
    }

    pub fn is_proven(&self) -> bool {
        self.proven.load(Ordering::Relaxed)
    }

    /// Session defaults seen at the first successful login.
    pub fn defaults(&self) -> Option<Params> {
        self.defaults.lock().ok().and_then(|d| d.clone())
    }

    /// The tenant's pool_size on this server.
    pub fn size(&self) -> usize {
        self.budget.size()
    }

    /// (idle, in use) server connections of this pool right now.
    pub fn counts(&self) -> (usize, usize) {
        let idle = self.idle.lock().map(|v| v.len()).unwrap_or(0);
        (idle, self.in_use.load(Ordering::Relaxed))
    }

    /// (backend pid, age) of each idle connection (SHOW SERVERS).
    pub fn idle_conns(&self) -> Vec<(i32, Duration)> {
        self.idle
            .lock()
            .map(|v| {
                v.iter()
                    .map(|i| (i.conn.pid, i.conn.created.elapsed()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks out a server connection, waiting up to `wait` for capacity.
    /// Cancel-safe: a cancelled wait leaves the queue.
    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<PooledConn, PoolError> {
        let permit = match self.budget.try_checkout() {
            Some(p) => p,
            None => self
                .budget
                .checkout(wait)
                .await
                .map_err(|r| self.refused(r))?,
        };
        match self.checkout_idle(permit) {
            Ok(conn) => Ok(conn),
            Err(permit) => {
                let slot = self
                    .budget
                    .open_slot(Instant::now() + wait)
                    .await
                    .map_err(|r| self.refused(r))?;
                let conn = Box::new(self.open().await?);
                Ok(PooledConn::new(conn, slot, Some(permit), self.clone()))
            }
        }
    }

    fn refused(&self, r: Refused) -> PoolError {
        match r {
            Refused::QueueFull { waiting } => PoolError::QueueFull {
                tenant: self.tenant().clone(),
                waiting,
                limit: self.budget.queue.limit(),
            },
            Refused::Timeout { waited } => {
                self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                PoolError::Timeout {
                    tenant: self.tenant().clone(),
                    waited_ms: waited.as_millis(),
                    target: self.target.to_string(),
                    size: self.budget.size(),
                }
            }
            Refused::ServerFull { waited, limit } => {
                self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                PoolError::ServerFull {
                    target: self.target.to_string(),
                    limit,
                    waited_ms: waited.as_millis(),
                }
            }
        }
    }

    /// The fast path: a free checkout and a warm idle connection, without
    /// awaiting anything. `None` means take the slow path ([`Pool::acquire`]).
    pub fn try_acquire_idle(self: &Arc<Self>) -> Option<PooledConn> {
        let permit = self.budget.try_checkout()?;
        self.checkout_idle(permit).ok()
    }

    fn checkout_idle(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
    ) -> Result<PooledConn, OwnedSemaphorePermit> {
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        // Expiry is the reaper's job (once a second), so no clock is read here.
        while let Some(mut idle) = self.pop_idle() {
            if idle.conn.looks_alive() {
                return Ok(PooledConn::new(
                    idle.conn,
                    idle.slot,
                    Some(permit),
                    self.clone(),
                ));
            }
            self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        }
        Err(permit)
    }

    fn pop_idle(&self) -> Option<Idle> {
        // Most recently used first: warm connections stay warm, cold ones expire.
        self.idle.lock().ok().and_then(|mut v| v.pop())
    }

    /// Closes this pool's least recently used idle connection (a sibling
    /// pool of the tenant needs its slot). Keeps none back for min_pool_size:
    /// a connection in use beats a warm one.
    fn close_oldest_idle(&self) -> bool {
        let Ok(mut v) = self.idle.lock() else {
            return false;
        };
        if v.is_empty() {
            return false;
        }
        v.remove(0);
        self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Whether fewer than `min_pool_size` connections are open.
    pub fn needs_warming(&self) -> bool {
        let (idle, used) = self.counts();
        let min = self.budget.min();
        min > 0 && self.is_proven() && idle + used < min
    }

    /// Opens connections up to `min_pool_size`, within the tenant's budget
    /// and without closing anyone's (one top-up at a time per pool).
    pub async fn warm(self: Arc<Self>) {
        if self.warming.swap(true, Ordering::AcqRel) {
            return;
        }
        while self.needs_warming() {
            let Some(slot) = self.budget.try_open_slot() else {
                break;
            };
            match self.open().await {
                Ok(conn) => self.put_back(Box::new(conn), slot),
                Err(e) => {
                    tracing::debug!(server = %self.target, error = %e, "cannot warm the pool");
                    break;
                }
            }
        }
        self.warming.store(false, Ordering::Release);
    }

    async fn open(&self) -> Result<ServerConn, BackendError> {
        if let Admit::Open {
            retry_in,
            failures,
            last_error,
        } = self.breaker.admit(Instant::now())
        {
            self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            return Err(BackendError::CircuitOpen {
                target: self.target.to_string(),
                failures,
                last_error,
                retry_ms: retry_in.as_millis(),
            });
        }
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        let settings = self.settings.load_full();
        let result = connect(
            self.target.clone(),
            &self.login,
            settings.connect_timeout,
            settings.max_message,
            &settings.tcp,
        )
        .await;
        match &result {
            Ok(conn) => {
                self.breaker.success();
                if !self.proven.swap(true, Ordering::Relaxed) {
                    if let Ok(mut d) = self.defaults.lock() {
                        *d = Some(conn.params.clone());
                    }
                }
            }
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                if e.server_unavailable() && self.breaker.failure(Instant::now(), &e.to_string()) {
                    tracing::warn!(server = %self.target, error = %e, "circuit opened: new connections to this server fail at once until it recovers");
                }
            }
        }
        result
    }

    fn put_back(&self, mut conn: Box<ServerConn>, slot: OpenSlot) {
        // Not reusable, or the tenant's pool_size was lowered by a reload and
        // it still has too many open: close it (its slot pays the debt).
        if !conn.is_reusable() || self.budget.over_size() {
            self.stats.discarded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        conn.idle_ticks = 0;
        if let Ok(mut v) = self.idle.lock() {
            v.push(Idle { conn, slot });
        }
    }

    /// Closes idle connections past `server_idle_timeout` or `server_lifetime`.
    /// Called once per `tick`: each call ages every idle connection by one
    /// tick, so the hot path never reads the clock to track idleness.
    pub fn reap(&self, now: Instant, tick: Duration) -> usize {
        let Ok(mut v) = self.idle.lock() else {
            return 0;
        };
        let before = v.len();
        let s = self.settings.load();
        // Idle ones may close only down to min_pool_size; old ones always
        // (the warmer opens fresh ones).
        let open = before + self.in_use.load(Ordering::Relaxed);
        let mut may_idle_out = open.saturating_sub(self.budget.min());
        v.retain_mut(|i| {
            let c = &mut i.conn;
            c.idle_ticks = c.idle_ticks.saturating_add(1);
            if now.duration_since(c.created) >= s.lifetime {
                return false;
            }
            if tick * c.idle_ticks >= s.idle_timeout && may_idle_out > 0 {
                may_idle_out -= 1;
                return false;
            }
            true
        });
        let closed = before - v.len();
        self.stats
            .discarded
            .fetch_add(closed as u64, Ordering::Relaxed);
        closed
    }

    /// Closes every idle connection (shutdown).
    pub fn close_idle(&self) {
        if let Ok(mut v) = self.idle.lock() {
            v.clear();
        }
    }
}

/// A checked-out server connection. Return it with [`PooledConn::release`];
/// dropped any other way (errors, panics, a vanished client) it is closed.
pub struct PooledConn {
    conn: Option<Box<ServerConn>>,
    slot: Option<OpenSlot>,
    _permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Pool>,
}

impl PooledConn {
    fn new(
        conn: Box<ServerConn>,
        slot: OpenSlot,
        permit: Option<OwnedSemaphorePermit>,
        pool: Arc<Pool>,
    ) -> Self {
        pool.in_use.fetch_add(1, Ordering::Relaxed);
        Self {
            conn: Some(conn),
            slot: Some(slot),
            _permit: permit,
            pool,
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Returns the connection to the pool if it is clean; closes it otherwise.
    pub fn release(mut self) {
        // Back in the idle list before the checkout permit is freed (when
        // `self` drops), so the next waiter finds it rather than opening one.
        if let (Some(conn), Some(slot)) = (self.conn.take(), self.slot.take()) {
            self.pool.put_back(conn, slot);
        }
    }
}

impl std::ops::Deref for PooledConn {
    type Target = ServerConn;
    fn deref(&self) -> &ServerConn {
        // Invariant: `conn` is Some until release() or drop consumes the guard.
        match &self.conn {
            Some(c) => c,
            None => unreachable!("PooledConn used after release"),
        }
    }
}

impl std::ops::DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut ServerConn {
        match &mut self.conn {
            Some(c) => c,
            None => unreachable!("PooledConn used after release"),
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        self.pool.in_use.fetch_sub(1, Ordering::Relaxed);
        if self.conn.take().is_some() {
            self.pool.stats.discarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}
