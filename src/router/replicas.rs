//! Replica state the router routes by, and the load balancer.
//!
//! Each replica carries its in-flight loans (for least-outstanding), the
//! highest replay position seen (for read-your-writes; from the lag monitor
//! and from on-demand checks), its health as the lag monitor sees it
//! (only "healthy" replicas take reads), and a short "down" mark after a
//! failed connection so reads stop trying it before the next probe.

use crate::backend::Target;
use crate::config::LoadBalance;
use crate::lag::health::State;
use crate::lag::NodeStatus;
use crate::pool::breaker::Breaker;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a replica that failed to connect is skipped.
pub const DOWN_BACKOFF: Duration = Duration::from_secs(2);

pub struct Replica {
    pub target: Arc<Target>,
    pub weight: u32,
    pub outstanding: AtomicUsize,
    /// Highest `pg_last_wal_replay_lsn()` seen (0: unknown).
    pub replay_lsn: AtomicU64,
    /// Health from the lag monitor (shared with it).
    pub status: Arc<NodeStatus>,
    /// Set while `down_until` holds a time: the common case (all up) then
    /// costs one atomic load per read, no lock and no clock read.
    down: AtomicBool,
    down_until: Mutex<Option<Instant>>,
}

impl Replica {
    /// A replica taken as healthy until told otherwise (no monitor).
    pub fn new(target: Arc<Target>, weight: u32) -> Self {
        let status = NodeStatus::new(
            State::Healthy,
            Arc::new(Breaker::new(0, Duration::from_secs(1))),
        );
        Self::with_status(target, weight, Arc::new(status))
    }

    pub fn with_status(target: Arc<Target>, weight: u32, status: Arc<NodeStatus>) -> Self {
        Self {
            status,
            target,
            weight: weight.max(1),
            outstanding: AtomicUsize::new(0),
            replay_lsn: AtomicU64::new(0),
            down: AtomicBool::new(false),
            down_until: Mutex::new(None),
        }
    }

    pub fn observe_replay(&self, lsn: u64) {
        self.replay_lsn.fetch_max(lsn, Ordering::Relaxed);
    }

    pub fn mark_down(&self, now: Instant) {
        if let Ok(mut d) = self.down_until.lock() {
            *d = Some(now + DOWN_BACKOFF);
            self.down.store(true, Ordering::Release);
        }
    }

    /// `now` is read only if this replica was marked down.
    pub fn is_usable(&self, now: impl FnOnce() -> Instant) -> bool {
        if self.status.state() != State::Healthy {
            return false;
        }
        if !self.down.load(Ordering::Acquire) {
            return true;
        }
        match self.down_until.lock() {
            Ok(mut d) => match *d {
                Some(until) if now() < until => false,
                _ => {
                    *d = None;
                    self.down.store(false, Ordering::Release);
                    true
                }
            },
            Err(_) => true,
        }
    }
}

/// A small inline list of replica indexes (spills to the heap past 16).
#[derive(Default)]
struct Candidates {
    inline: [usize; 16],
    len: usize,
    spill: Vec<usize>,
}

impl Candidates {
    fn push(&mut self, i: usize) {
        if self.len < self.inline.len() {
            self.inline[self.len] = i;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(i);
        }
        self.len += 1;
    }
    fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn as_slice(&self) -> &[usize] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

pub struct Replicas {
    pub list: Vec<Arc<Replica>>,
    policy: LoadBalance,
    next: AtomicUsize,
}

impl Replicas {
    pub fn new(list: Vec<Arc<Replica>>, policy: LoadBalance) -> Self {
        Self {
            list,
            policy,
            next: AtomicUsize::new(0),
        }
    }

    /// The same replicas and policy plus `extra` (a reload added it).
    /// Indexes of the existing ones do not change.
    pub fn with(&self, extra: Arc<Replica>) -> Self {
        let mut list = self.list.clone();
        list.push(extra);
        Self::new(list, self.policy)
    }

    /// Picks a usable replica. With `min_lsn`, prefers replicas already known
    /// to have replayed it; `Some((idx, known))` tells whether it is known.
    /// Allocation-free for up to 16 replicas (it runs on every read).
    pub fn pick(&self, now: impl Fn() -> Instant, min_lsn: u64) -> Option<(usize, bool)> {
        let mut usable = Candidates::default();
        let mut caught_up = Candidates::default();
        for (i, r) in self.list.iter().enumerate() {
            if r.is_usable(&now) {
                usable.push(i);
                if r.replay_lsn.load(Ordering::Relaxed) >= min_lsn {
                    caught_up.push(i);
                }
            }
        }
        if usable.is_empty() {
            return None;
        }
        let (candidates, known) = if caught_up.is_empty() {
            (usable, false)
        } else {
            (caught_up, true)
        };
        Some((self.choose(candidates.as_slice()), known))
    }

    fn choose(&self, candidates: &[usize]) -> usize {
        match self.policy {
            LoadBalance::LeastOutstanding => {
                // Fewest in-flight loans per unit of weight; ties rotate.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let n = candidates.len();
                (0..n)
                    .map(|k| candidates[(start + k) % n])
                    .min_by(|&a, &b| {
                        let (ra, rb) = (&self.list[a], &self.list[b]);
                        let la = ra.outstanding.load(Ordering::Relaxed) as u64 * rb.weight as u64;
                        let lb = rb.outstanding.load(Ordering::Relaxed) as u64 * ra.weight as u64;
                        la.cmp(&lb)
                    })
                    .unwrap_or(candidates[0])
            }
            LoadBalance::RoundRobin => {
                self.weighted(candidates, self.next.fetch_add(1, Ordering::Relaxed) as u64)
            }
            LoadBalance::Random => self.weighted(candidates, rand::random()),
        }
    }

    fn weighted(&self, candidates: &[usize], ticket: u64) -> usize {
        let total: u64 = candidates.iter().map(|&i| self.list[i].weight as u64).sum();
        let mut t = ticket % total.max(1);
        for &i in candidates {
            let w = self.list[i].weight as u64;
            if t < w {
                return i;
            }
            t -= w;
        }
        candidates[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Role;

    fn replicas(weights: &[u32], policy: LoadBalance) -> Replicas {
        let list = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Replica::new(
                    Arc::new(Target {
                        name: format!("r{i}"),
                        role: Role::Replica,
                        host: "h".into(),
                        port: 1,
                        tls: crate::backend::tls::ServerTls::disabled(),
                    }),
                    *w,
                ))
            })
            .collect();
        Replicas::new(list, policy)
    }

    #[test]
    fn round_robin_follows_weights() {
        let r = replicas(&[1, 3], LoadBalance::RoundRobin);
        let now = Instant::now();
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[r.pick(|| now, 0).map(|p| p.0).unwrap_or(9)] += 1;
        }
        assert_eq!(counts, [100, 300]);
    }

    #[test]
    fn least_outstanding_prefers_idle() {
        let r = replicas(&[1, 1], LoadBalance::LeastOutstanding);
        r.list[0].outstanding.store(5, Ordering::Relaxed);
        for _ in 0..10 {
            assert_eq!(r.pick(Instant::now, 0).map(|p| p.0), Some(1));
        }
    }

    #[test]
    fn lsn_and_down_marks() {
        let r = replicas(&[1, 1], LoadBalance::RoundRobin);
        let now = Instant::now();
        r.list[1].observe_replay(100);
        for _ in 0..5 {
            assert_eq!(r.pick(|| now, 50), Some((1, true)));
        }
        // Nobody known at 200: any usable one, flagged unknown.
        assert!(matches!(r.pick(|| now, 200), Some((_, false))));
        r.list[1].mark_down(now);
        assert_eq!(r.pick(|| now, 50), Some((0, false)));
        r.list[0].mark_down(now);
        assert_eq!(r.pick(|| now, 0), None);
        assert!(r.pick(|| now + DOWN_BACKOFF, 0).is_some());
    }
}
