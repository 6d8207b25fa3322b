//! Time lag from WAL positions, without the idle-primary pitfall.
//!
//! `now() - pg_last_xact_replay_timestamp()` grows while the primary is
//! idle, so it reports lag when there is none. Instead the monitor keeps a
//! short history of (when, primary WAL position) samples, one per probe of
//! the primary, and a replica's lag is **how long ago the primary was at the
//! replica's replay position**:
//!
//! - replay >= the newest sample: caught up, lag 0 (an idle primary adds no
//!   samples, so a caught-up replica stays at 0 however long it idles);
//! - otherwise the first sample past the replay position was taken at `t`:
//!   the replica lacks WAL the primary had at `t`, so lag >= now - t.
//!
//! The estimate is a lower bound with one probe interval of resolution (the
//! primary passed the position somewhere between two samples); the byte lag
//! has no such blur and backs it up (`max_lag_bytes`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples are kept only when the position moved, and never more than this.
const MAX_SAMPLES: usize = 4096;

#[derive(Debug)]
pub struct WalHistory {
    /// (when first seen, primary WAL position), positions strictly increasing.
    samples: VecDeque<(Instant, u64)>,
    /// How far back samples are kept.
    window: Duration,
}

impl WalHistory {
    pub fn new(window: Duration) -> Self {
        Self {
            samples: VecDeque::new(),
            window,
        }
    }

    /// Records the primary's position as of `at`.
    pub fn record(&mut self, at: Instant, lsn: u64) {
        match self.samples.back() {
            Some(&(_, last)) if lsn <= last => {}
            _ => self.samples.push_back((at, lsn)),
        }
        while self.samples.len() > MAX_SAMPLES
            || self.samples.len() > 1
                && self
                    .samples
                    .front()
                    .is_some_and(|&(t, _)| at.saturating_duration_since(t) > self.window)
        {
            self.samples.pop_front();
        }
    }

    /// The newest primary position known.
    pub fn latest(&self) -> Option<u64> {
        self.samples.back().map(|&(_, l)| l)
    }

    /// Forgets everything (the writer changed: positions are not comparable
    /// across servers until the new one has been sampled).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Lag of a replica that has replayed up to `replay` as of `now`.
    /// `None` when the replay position is older than the whole history (the
    /// lag is then at least the history's age; the caller decides).
    pub fn lag(&self, replay: u64, now: Instant) -> Option<Duration> {
        let latest = self.latest()?;
        if replay >= latest {
            return Some(Duration::ZERO);
        }
        // First sample strictly past the replay position.
        let i = self.samples.partition_point(|&(_, l)| l <= replay);
        if i == 0 {
            return None;
        }
        self.samples
            .get(i)
            .map(|&(t, _)| now.saturating_duration_since(t))
    }

    /// Age of the oldest sample (a lower bound for positions older than it).
    pub fn age(&self, now: Instant) -> Duration {
        self.samples
            .front()
            .map(|&(t, _)| now.saturating_duration_since(t))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn idle_primary_reports_no_lag() {
        let t0 = Instant::now();
        let mut h = WalHistory::new(Duration::from_secs(60));
        h.record(t0, 1000);
        // The primary stays at 1000 for 30 s: no new samples.
        for k in 1..120 {
            h.record(t0 + ms(250 * k), 1000);
        }
        assert_eq!(
            h.lag(1000, t0 + Duration::from_secs(30)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn lag_is_time_since_primary_passed_the_replay_position() {
        let t0 = Instant::now();
        let mut h = WalHistory::new(Duration::from_secs(60));
        h.record(t0, 100);
        h.record(t0 + ms(250), 200);
        h.record(t0 + ms(500), 300);
        h.record(t0 + ms(750), 400);
        let now = t0 + ms(1000);
        assert_eq!(h.lag(400, now), Some(Duration::ZERO));
        assert_eq!(h.lag(350, now), Some(ms(250)));
        assert_eq!(h.lag(300, now), Some(ms(250)));
        assert_eq!(h.lag(250, now), Some(ms(500)));
        assert_eq!(h.lag(100, now), Some(ms(750)));
        // Older than the history: unknown (at least its age).
        assert_eq!(h.lag(50, now), None);
        assert_eq!(h.age(now), ms(1000));
    }

    #[test]
    fn old_samples_expire_but_one_remains() {
        let t0 = Instant::now();
        let mut h = WalHistory::new(Duration::from_secs(1));
        h.record(t0, 1);
        h.record(t0 + ms(500), 2);
        h.record(t0 + ms(3000), 3);
        assert_eq!(h.samples.len(), 1);
        assert_eq!(h.latest(), Some(3));
        // A later, still-idle check keeps the last sample.
        h.record(t0 + ms(9000), 3);
        assert_eq!(h.samples.len(), 1);
    }
}
