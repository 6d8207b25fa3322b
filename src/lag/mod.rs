//! The health and lag monitor: one task per server probes it every
//! `probe_interval` over its own connection, and the results decide which
//! replicas take reads ([`health`]) and which server takes writes
//! ([`elect`]). See docs/lag.md.
//!
//! - [`history`]: replica lag in time from WAL positions (no false lag when
//!   the primary is idle);
//! - [`health`]: the eviction/readmission state machine with hysteresis;
//! - [`elect`]: the writer, from configured or discovered roles;
//! - [`probe`]: the probe query; [`monitor`]: the per-server task.

pub mod elect;
pub mod health;
pub mod history;
pub mod monitor;
pub mod probe;

use crate::backend::Target;
use crate::pool::breaker::Breaker;
use arc_swap::ArcSwap;
use elect::{Claim, Writer};
use health::{Health, Observation, State, Thresholds};
use history::WalHistory;
use probe::Probe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How far back the primary's WAL positions are remembered.
const HISTORY_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum LagError {
    #[error("probe of {target} failed: {source}")]
    Postgres {
        target: String,
        source: tokio_postgres::Error,
    },
    #[error("probe of {target} timed out after {ms} ms")]
    Timeout { target: String, ms: u128 },
}

impl LagError {
    /// The server did not answer at all (as opposed to refusing the monitor's
    /// login or query).
    pub fn server_unavailable(&self) -> bool {
        match self {
            LagError::Timeout { .. } => true,
            LagError::Postgres { source, .. } => source.as_db_error().is_none(),
        }
    }
}

/// What the rest of the router reads about one server (atomics: the read
/// path checks `state` on every placement).
#[derive(Debug)]
pub struct NodeStatus {
    state: AtomicU8,
    claim: AtomicU8,
    pub lag_micros: AtomicU64,
    pub lag_bytes: AtomicU64,
    pub replay_lsn: AtomicU64,
    pub current_lsn: AtomicU64,
    pub replay_paused: AtomicBool,
    pub evictions: AtomicU64,
    pub readmissions: AtomicU64,
    pub probe_failures: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    pub breaker: Arc<Breaker>,
    /// Woken when the node turns [`State::Down`]: loans waiting on it check
    /// whether their own connection went silent too (see [`NodeStatus::stalled`]).
    went_down: tokio::sync::Notify,
}

impl NodeStatus {
    pub fn new(initial: State, breaker: Arc<Breaker>) -> Self {
        Self {
            state: AtomicU8::new(initial as u8),
            claim: AtomicU8::new(0),
            lag_micros: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            replay_lsn: AtomicU64::new(0),
            current_lsn: AtomicU64::new(0),
            replay_paused: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            readmissions: AtomicU64::new(0),
            probe_failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            breaker,
            went_down: tokio::sync::Notify::new(),
        }
    }

    /// Completes once this node is [`State::Down`] and has stayed down for
    /// `silence` since this future was created or the node went down,
    /// whichever is later. A loan re-creates it whenever its server sends
    /// something, so it fires only for a connection that went silent on a
    /// server the monitor cannot reach either (a network black hole, a hung
    /// host): such a wait would otherwise last until TCP gives up.
    pub async fn stalled(&self, silence: Duration) {
        loop {
            let notified = self.went_down.notified();
            tokio::pin!(notified);
            // Registered before the check: a transition in between still wakes us.
            notified.as_mut().enable();
            if self.state() == State::Down {
                tokio::time::sleep(silence).await;
                if self.state() == State::Down {
                    return;
                }
                continue;
            }
            notified.await;
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn claim(&self) -> Claim {
        match self.claim.load(Ordering::Acquire) {
            1 => Claim::Primary,
            2 => Claim::Standby,
            _ => Claim::Unknown,
        }
    }

    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_micros.load(Ordering::Relaxed))
    }
}

/// One configured server: index 0 is `[primary]`, then `[[replicas]]` in
/// order, then replicas added by reloads. Indexes never change: a replica
/// removed by a reload stays in the list as [`State::Removed`].
pub struct Node {
    pub target: Arc<Target>,
    pub status: Arc<NodeStatus>,
    /// All tenants' connections to this server (`max_server_conn_per_backend`).
    pub cap: Arc<crate::pool::budget::ServerCap>,
}

/// A state change worth acting on (logged, idle connections closed...).
#[derive(Debug, PartialEq, Eq)]
pub struct Published {
    pub changed: Option<State>,
    pub writer_changed: bool,
}

pub struct Monitor {
    /// Append-only (see [`Node`]).
    nodes: ArcSwap<Vec<Arc<Node>>>,
    inner: Mutex<Inner>,
    /// Eviction/readmission thresholds (swapped on reload).
    thresholds: ArcSwap<Thresholds>,
    discover: bool,
    /// Enforce roles (routing on): a primary in recovery takes no writes.
    role_gate: bool,
    writer: ArcSwap<Writer>,
}

struct Inner {
    history: WalHistory,
    /// The node whose positions `history` holds.
    history_of: usize,
    health: Vec<Health>,
}

impl Monitor {
    /// Applies reloaded thresholds from the next probe on.
    pub fn set_thresholds(&self, t: Thresholds) {
        self.thresholds.store(Arc::new(t));
    }

    /// Every server, removed ones included (check [`State::Removed`]).
    pub fn nodes(&self) -> Arc<Vec<Arc<Node>>> {
        self.nodes.load_full()
    }

    /// Adds a server (a replica added by a reload); returns its index.
    pub fn add(&self, node: Node) -> usize {
        let Ok(mut inner) = self.inner.lock() else {
            return usize::MAX;
        };
        inner.health.push(Health::default());
        let mut nodes = Vec::clone(&self.nodes.load());
        nodes.push(Arc::new(node));
        self.nodes.store(Arc::new(nodes));
        inner.health.len() - 1
    }

    /// Takes a server out for good (a replica removed by a reload): no new
    /// reads, no probes, not a writer candidate.
    pub fn remove(&self, idx: usize) {
        if let Some(n) = self.nodes.load().get(idx) {
            n.status
                .state
                .store(State::Removed as u8, Ordering::Release);
            n.status.claim.store(0, Ordering::Release);
        }
        if let Ok(mut inner) = self.inner.lock() {
            self.update_writer(&mut inner);
        }
    }

    pub fn new(nodes: Vec<Node>, thresholds: Thresholds, discover: bool, role_gate: bool) -> Self {
        let n = nodes.len();
        Self {
            nodes: ArcSwap::from_pointee(nodes.into_iter().map(Arc::new).collect()),
            inner: Mutex::new(Inner {
                history: WalHistory::new(HISTORY_WINDOW),
                history_of: 0,
                health: vec![Health::default(); n],
            }),
            thresholds: ArcSwap::from_pointee(thresholds),
            discover,
            role_gate,
            writer: ArcSwap::from_pointee(Writer::Node(0)),
        }
    }

    /// The server that takes writes now.
    pub fn writer(&self) -> arc_swap::Guard<Arc<Writer>> {
        self.writer.load()
    }

    /// Records one probe of node `idx` and updates its state and the writer.
    pub fn publish(&self, idx: usize, result: &Result<Probe, LagError>, now: Instant) -> Published {
        let unchanged = Published {
            changed: None,
            writer_changed: false,
        };
        let Some(node) = self.nodes.load().get(idx).cloned() else {
            return unchanged;
        };
        let st = &node.status;
        let Ok(mut inner) = self.inner.lock() else {
            return unchanged;
        };
        if st.state() == State::Removed {
            return unchanged;
        }
        let writer_idx = match **self.writer.load() {
            Writer::Node(w) => Some(w),
            Writer::Refused(_) => None,
        };
        let obs = match result {
            Err(e) => {
                st.probe_failures.fetch_add(1, Ordering::Relaxed);
                if e.server_unavailable() {
                    // The pools would find the same: no need for clients to
                    // wait out connect timeouts first.
                    st.breaker.failure(now, &e.to_string());
                }
                st.claim.store(0, Ordering::Release);
                if let Ok(mut l) = st.last_error.lock() {
                    *l = Some(e.to_string());
                }
                Observation::Failed
            }
            Ok(p) => {
                st.breaker.success();
                st.claim
                    .store(if p.in_recovery { 2 } else { 1 }, Ordering::Release);
                st.replay_paused.store(p.replay_paused, Ordering::Relaxed);
                if let Some(l) = p.current_lsn {
                    st.current_lsn.store(l, Ordering::Relaxed);
                    if writer_idx == Some(idx) {
                        inner.history.record(now, l);
                    }
                }
                if let Some(l) = p.replay_lsn {
                    st.replay_lsn.store(l, Ordering::Relaxed);
                }
                // Index 0 is the configured primary: it never serves as a
                // replica. Replicas must be standbys to take reads.
                let role_ok = if idx == 0 {
                    self.discover || !self.role_gate || !p.in_recovery
                } else {
                    p.in_recovery
                };
                let (lag, bytes) = if idx == 0 || !p.in_recovery {
                    (Duration::ZERO, 0)
                } else {
                    replica_lag(&inner.history, p, now)
                };
                st.lag_micros.store(
                    lag.as_micros().min(u64::MAX as u128) as u64,
                    Ordering::Relaxed,
                );
                st.lag_bytes.store(bytes, Ordering::Relaxed);
                Observation::Answered {
                    role_ok,
                    lag,
                    lag_bytes: bytes,
                }
            }
        };
        let changed = match inner.health.get_mut(idx) {
            Some(h) => {
                let before = h.state;
                let changed = h.observe(obs, &self.thresholds.load());
                if let Some(s) = changed {
                    st.state.store(s as u8, Ordering::Release);
                    if s == State::Down {
                        st.went_down.notify_waiters();
                    }
                    if s == State::Evicted && before == State::Healthy {
                        st.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                    if s == State::Healthy && before != State::Starting {
                        st.readmissions.fetch_add(1, Ordering::Relaxed);
                    }
                }
                changed
            }
            None => None,
        };
        let writer_changed = self.update_writer(&mut inner);
        Published {
            changed,
            writer_changed,
        }
    }

    fn update_writer(&self, inner: &mut Inner) -> bool {
        if !self.role_gate {
            return false;
        }
        let nodes = self.nodes.load();
        let names: Vec<String> = nodes.iter().map(|n| n.target.to_string()).collect();
        let claims: Vec<Claim> = nodes.iter().map(|n| n.status.claim()).collect();
        let mut previous = self.writer.load_full();
        if let Writer::Node(i) = *previous {
            if nodes
                .get(i)
                .is_some_and(|n| n.status.state() == State::Removed)
            {
                previous = Arc::new(Writer::Refused("removed".into()));
            }
        }
        let next = elect::elect(&names, &claims, self.discover, &previous);
        if next == *previous {
            return false;
        }
        if let Writer::Node(w) = next {
            if inner.history_of != w {
                // Another server's positions are not comparable: start over.
                inner.history.clear();
                inner.history_of = w;
            }
        }
        self.writer.store(Arc::new(next));
        true
    }

    /// Whether every server has been probed at least once.
    pub fn all_probed(&self) -> bool {
        self.nodes
            .load()
            .iter()
            .all(|n| n.status.state() != State::Starting)
    }
}

/// Lag of a standby from the primary's WAL history; when its position is
/// older than the history (just after start), the time since its last
/// replayed commit bounds it from above, and is used (the safe side).
fn replica_lag(history: &WalHistory, p: &Probe, now: Instant) -> (Duration, u64) {
    let replay = p.replay_lsn.unwrap_or(0);
    let bytes = history
        .latest()
        .map(|l| l.saturating_sub(replay))
        .unwrap_or(0);
    let lag = match history.lag(replay, now) {
        Some(l) => l,
        None if history.latest().is_none() => Duration::ZERO,
        None => {
            let wall = p.replay_timestamp.and_then(|ts| {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
                now.checked_sub(Duration::from_secs_f64(ts.max(0.0)))
            });
            history.age(now).max(wall.unwrap_or_default())
        }
    };
    (lag, bytes)
}
