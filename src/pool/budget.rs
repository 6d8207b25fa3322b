//! Capacity that pools share: a tenant's budget on one server, the tenant's
//! wait queue, and the server's own cap.
//!
//! A tenant's pools on one server (one per user and database) draw from one
//! [`Budget`] with two counts of `pool_size`:
//! - checkouts: a client holds one while it has a server connection. Waiters
//!   are served FIFO (tokio's semaphore is fair), at most `queue_limit` of
//!   them per tenant, each for at most `queue_timeout`.
//! - open connections: every connection, idle or lent, holds an [`OpenSlot`],
//!   so the tenant never has more than `pool_size` connections to the server
//!   (what `pg_stat_activity` counts). A pool that needs a new connection
//!   while the slots are taken closes a sibling pool's idle one.
//!
//! A [`ServerCap`] bounds all tenants' open connections to one server
//! (`max_server_conn_per_backend`) the same way.

use super::capacity::Capacity;
use super::Pool;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why capacity was refused.
#[derive(Debug)]
pub enum Refused {
    /// `queue_limit` clients already wait.
    QueueFull { waiting: usize },
    /// No checkout came free within the wait.
    Timeout { waited: Duration },
    /// The server's cap is reached and nobody's connection could be closed.
    ServerFull { waited: Duration, limit: usize },
}

/// Counters of one tenant's queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Checkouts that had to wait.
    pub waits: AtomicU64,
    pub queue_full: AtomicU64,
    pub timeouts: AtomicU64,
}

/// One tenant's wait queue: who waits for a checkout on any of its servers.
/// Limit and timeout change on reload.
pub struct Queue {
    pub tenant: Arc<str>,
    limit: AtomicUsize,
    timeout_nanos: AtomicU64,
    waiting: AtomicUsize,
    pub stats: QueueStats,
}

impl Queue {
    pub fn new(tenant: Arc<str>, limit: usize, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            tenant,
            limit: AtomicUsize::new(limit),
            timeout_nanos: AtomicU64::new(timeout.as_nanos() as u64),
            waiting: AtomicUsize::new(0),
            stats: QueueStats::default(),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_nanos.load(Ordering::Relaxed))
    }

    pub fn set(&self, limit: usize, timeout: Duration) {
        self.limit.store(limit, Ordering::Relaxed);
        self.timeout_nanos
            .store(timeout.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A place in the queue, or None when it is full.
    fn enter(&self) -> Option<Waiting<'_>> {
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        if before >= self.limit() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Waiting(self))
    }
}

/// Leaves the queue when dropped: on success, timeout, or a client that
/// went away while waiting (its future is dropped).
struct Waiting<'a>(&'a Queue);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All tenants' connections to one server.
pub struct ServerCap {
    /// 0: no cap.
    pub limit: usize,
    open: Option<Arc<Semaphore>>,
    budgets: Mutex<Vec<Weak<Budget>>>,
}

impl ServerCap {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
            budgets: Mutex::new(Vec::new()),
        })
    }

    /// Closes one idle connection of any tenant on this server.
    fn evict_one(&self) -> bool {
        let budgets: Vec<Arc<Budget>> = self
            .budgets
            .lock()
            .map(|b| b.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        budgets.iter().any(|b| b.evict_one())
    }
}

/// Holds one open connection's place in its tenant's budget and its server's
/// cap; dropped with the connection.
pub struct OpenSlot {
    _tenant: OwnedSemaphorePermit,
    _server: Option<OwnedSemaphorePermit>,
}

/// One tenant's capacity on one server (resized on reload).
pub struct Budget {
    pub queue: Arc<Queue>,
    checkouts: Capacity,
    open: Capacity,
    /// `min_pool_size` of the tenant's pools here.
    min: AtomicUsize,
    server: Arc<ServerCap>,
    pools: Mutex<Vec<Weak<Pool>>>,
}

/// How long to wait for a slot before looking for an idle connection to
/// close again (one may have been returned meanwhile).
const RECHECK: Duration = Duration::from_millis(20);

impl Budget {
    pub fn new(size: usize, min: usize, queue: Arc<Queue>, server: Arc<ServerCap>) -> Arc<Self> {
        let b = Arc::new(Self {
            queue,
            checkouts: Capacity::new(size),
            open: Capacity::new(size),
            min: AtomicUsize::new(min),
            server: server.clone(),
            pools: Mutex::new(Vec::new()),
        });
        if let Ok(mut v) = server.budgets.lock() {
            v.push(Arc::downgrade(&b));
        }
        b
    }

    pub(super) fn register(&self, pool: &Arc<Pool>) {
        if let Ok(mut v) = self.pools.lock() {
            v.retain(|p| p.strong_count() > 0);
            v.push(Arc::downgrade(pool));
        }
    }

    /// pool_size.
    pub fn size(&self) -> usize {
        self.checkouts.size()
    }

    pub fn min(&self) -> usize {
        self.min.load(Ordering::Relaxed)
    }

    /// Applies a reloaded pool_size / min_pool_size. Lent connections are
    /// not taken back: the budget shrinks as they return, and idle ones over
    /// the new size are closed now.
    pub fn resize(&self, size: usize, min: usize) {
        self.min.store(min, Ordering::Relaxed);
        let old = self.size();
        self.checkouts.resize(size);
        self.open.resize(size);
        for _ in size..old {
            if !self.evict_one() {
                break;
            }
        }
    }

    /// More connections are open than pool_size allows (after a reload
    /// lowered it): returned ones should close.
    pub fn over_size(&self) -> bool {
        self.open.owes()
    }

    /// Connections lent to clients right now.
    pub fn in_use(&self) -> usize {
        self.checkouts.in_use()
    }

    /// Connections open (idle, lent or being opened) right now.
    pub fn open_count(&self) -> usize {
        self.open.in_use()
    }

    pub(super) fn try_checkout(&self) -> Option<OwnedSemaphorePermit> {
        self.checkouts.try_acquire()
    }

    /// Waits in the tenant's queue for a checkout.
    pub(super) async fn checkout(&self, wait: Duration) -> Result<OwnedSemaphorePermit, Refused> {
        let Some(_place) = self.queue.enter() else {
            self.queue.stats.queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::QueueFull {
                waiting: self.queue.waiting(),
            });
        };
        self.queue.stats.waits.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let checkouts = self.checkouts.semaphore().clone();
        match tokio::time::timeout(wait, checkouts.acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.queue.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(Refused::Timeout {
                    waited: started.elapsed(),
                })
            }
        }
    }

    /// A slot for a new connection without closing anyone's (keeping
    /// `min_pool_size` warm must not take from busy siblings).
    pub(super) fn try_open_slot(&self) -> Option<OpenSlot> {
        let tenant = self.open.try_acquire()?;
        let server = match &self.server.open {
            Some(s) => Some(s.clone().try_acquire_owned().ok()?),
            None => None,
        };
        Some(OpenSlot {
            _tenant: tenant,
            _server: server,
        })
    }

    /// A slot for a new connection, closing idle ones of sibling pools (then
    /// of other tenants, for the server cap) when the slots are taken.
    pub(super) async fn open_slot(&self, deadline: Instant) -> Result<OpenSlot, Refused> {
        let started = Instant::now();
        let tenant = loop {
            if let Some(p) = self.open.try_acquire() {
                break p;
            }
            if self.evict_one() {
                continue;
            }
            // Every slot is lent or being opened: one comes back soon, since
            // the caller's own checkout permit bounds the lent ones.
            let now = Instant::now();
            if now >= deadline {
                return Err(Refused::Timeout {
                    waited: started.elapsed(),
                });
            }
            let slice = RECHECK.min(deadline - now);
            let open = self.open.semaphore().clone();
            if let Ok(Ok(p)) = tokio::time::timeout(slice, open.acquire_owned()).await {
                break p;
            }
        };
        let Some(cap) = &self.server.open else {
            return Ok(OpenSlot {
                _tenant: tenant,
                _server: None,
            });
        };
        let server = loop {
            if let Ok(p) = cap.clone().try_acquire_owned() {
                break p;
            }
            if self.server.evict_one() {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Refused::ServerFull {
                    waited: started.elapsed(),
                    limit: self.server.limit,
                });
            }
            let slice = RECHECK.min(deadline - now);
            if let Ok(Ok(p)) = tokio::time::timeout(slice, cap.clone().acquire_owned()).await {
                break p;
            }
        };
        Ok(OpenSlot {
            _tenant: tenant,
            _server: Some(server),
        })
    }

    /// Closes the least recently used idle connection of this tenant's
    /// pools on this server.
    fn evict_one(&self) -> bool {
        let pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .map(|v| v.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        pools.iter().any(|p| p.close_oldest_idle())
    }
}
