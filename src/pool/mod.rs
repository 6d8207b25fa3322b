//! Bounded pools of server connections, one per (server, user, database).
//!
//! - Capacity is a FIFO-fair semaphore (`pool_size` permits): waiters are
//!   served in arrival order, and a wait is bounded by `query_wait_timeout`.
//! - A checked-out connection is a [`PooledConn`] guard. [`PooledConn::release`]
//!   returns it only if it is idle and clean; dropping the guard any other
//!   way closes the connection. A dirty connection is never handed out.
//! - Idle connections expire after `server_idle_timeout`, any connection
//!   after `server_lifetime` ([`Pool::reap`], run by a background task).

pub mod breaker;
mod registry;

pub use registry::Pools;

use crate::backend::conn::Params;
use crate::backend::connect::{connect, Login};
use crate::backend::{BackendError, ServerConn, Target};
use breaker::{Admit, Breaker};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub size: usize,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub lifetime: Duration,
    pub max_message: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("pgrouter: waited {waited_ms} ms for a server connection to {target} (pool_size {size} for user {user:?}, database {database:?})")]
    Timeout {
        waited_ms: u128,
        target: String,
        size: usize,
        user: String,
        database: String,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl PoolError {
    pub fn sqlstate(&self) -> &str {
        match self {
            PoolError::Timeout { .. } => crate::protocol::sqlstate::TOO_MANY_CONNECTIONS,
            PoolError::Backend(e) => e.sqlstate(),
        }
    }
    pub fn client_message(&self) -> String {
        match self {
            PoolError::Timeout { .. } => self.to_string(),
            PoolError::Backend(e) => e.client_message(),
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

pub struct Pool {
    pub target: Arc<Target>,
    pub login: Login,
    settings: PoolSettings,
    idle: Mutex<Vec<ServerConn>>,
    permits: Arc<Semaphore>,
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
        settings: PoolSettings,
        breaker: Arc<Breaker>,
    ) -> Arc<Self> {
        Arc::new(Self {
            breaker,
            permits: Arc::new(Semaphore::new(settings.size)),
            target,
            login,
            settings,
            idle: Mutex::new(Vec::new()),
            defaults: Mutex::new(None),
            proven: AtomicBool::new(false),
            stats: PoolStats::default(),
        })
    }

    pub fn is_proven(&self) -> bool {
        self.proven.load(Ordering::Relaxed)
    }

    /// Session defaults seen at the first successful login.
    pub fn defaults(&self) -> Option<Params> {
        self.defaults.lock().ok().and_then(|d| d.clone())
    }

    pub fn size(&self) -> usize {
        self.settings.size
    }

    /// (idle, in use) server connections right now.
    pub fn counts(&self) -> (usize, usize) {
        let idle = self.idle.lock().map(|v| v.len()).unwrap_or(0);
        let used = self.settings.size - self.permits.available_permits();
        (idle, used)
    }

    /// Checks out a server connection, waiting up to `wait` for capacity.
    /// Cancel-safe: a cancelled wait leaves the queue.
    pub async fn acquire(self: &Arc<Self>, wait: Duration) -> Result<PooledConn, PoolError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let started = Instant::now();
                match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                        return Err(PoolError::Timeout {
                            waited_ms: started.elapsed().as_millis(),
                            target: self.target.to_string(),
                            size: self.settings.size,
                            user: self.login.user.clone(),
                            database: self.login.database.clone(),
                        });
                    }
                }
            }
        };
        match self.checkout_idle(permit) {
            Ok(conn) => Ok(conn),
            Err(permit) => {
                let conn = self.open().await?;
                Ok(PooledConn::new(conn, permit, self.clone()))
            }
        }
    }

    /// The fast path: a free permit and a warm idle connection, without
    /// awaiting anything. `None` means take the slow path ([`Pool::acquire`]).
    pub fn try_acquire_idle(self: &Arc<Self>) -> Option<PooledConn> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        self.checkout_idle(permit).ok()
    }

    fn checkout_idle(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
    ) -> Result<PooledConn, OwnedSemaphorePermit> {
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        // Expiry is the reaper's job (once a second), so no clock is read here.
        while let Some(mut conn) = self.pop_idle() {
            if conn.looks_alive() {
                return Ok(PooledConn::new(conn, permit, self.clone()));
            }
            self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        }
        Err(permit)
    }

    fn pop_idle(&self) -> Option<ServerConn> {
        // Most recently used first: warm connections stay warm, cold ones expire.
        self.idle.lock().ok().and_then(|mut v| v.pop())
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
        let result = connect(
            self.target.clone(),
            &self.login,
            self.settings.connect_timeout,
            self.settings.max_message,
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

    fn put_back(&self, mut conn: ServerConn) {
        if !conn.is_reusable() {
            self.stats.discarded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        conn.idle_ticks = 0;
        if let Ok(mut v) = self.idle.lock() {
            v.push(conn);
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
        let s = &self.settings;
        v.retain_mut(|c| {
            c.idle_ticks = c.idle_ticks.saturating_add(1);
            tick * c.idle_ticks < s.idle_timeout && now.duration_since(c.created) < s.lifetime
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
    conn: Option<ServerConn>,
    _permit: OwnedSemaphorePermit,
    pool: Arc<Pool>,
}

impl PooledConn {
    fn new(conn: ServerConn, permit: OwnedSemaphorePermit, pool: Arc<Pool>) -> Self {
        Self {
            conn: Some(conn),
            _permit: permit,
            pool,
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Returns the connection to the pool if it is clean; closes it otherwise.
    pub fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
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
        if self.conn.take().is_some() {
            self.pool.stats.discarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}
