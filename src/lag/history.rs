//! Time lag from WAL positions, without the idle-primary pitfall.
//!
//! `now() - pg_last_xact_replay_timestamp()` grows while the primary is
//! idle, so it reports lag when there is none. Instead the monitor keeps a
//! short history of the primary's WAL position, one probe per
//! `probe_interval`, and a replica's lag is **how long ago the primary was
//! at the replica's replay position**:
//!
//! - replay >= the newest position: caught up, lag 0, however long the
//!   primary has been idle;
//! - otherwise the primary passed the replay position between the last time
//!   it was seen at or below it and the first time it was seen beyond it;
//!   the crossing is placed in that bracket by linear interpolation of the
//!   position, and lag = now - crossing.
//!
//! The bracket is one probe interval wide (the primary is sampled every
//! interval, and an unchanged position only moves the bracket's start), so
//! the error is under one `probe_interval`, whether the primary writes
//! steadily, in bursts, or not at all. The byte lag has no such blur.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Distinct positions kept, at most.
const MAX_SAMPLES: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Sample {
    /// When the primary was first and last seen at `lsn`.
    first: Instant,
    last: Instant,
    lsn: u64,
}

#[derive(Debug)]
pub struct WalHistory {
    /// Positions strictly increasing.
    samples: VecDeque<Sample>,
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
        match self.samples.back_mut() {
            Some(s) if lsn <= s.lsn => s.last = s.last.max(at),
            _ => self.samples.push_back(Sample {
                first: at,
                last: at,
                lsn,
            }),
        }
        while self.samples.len() > MAX_SAMPLES
            || self.samples.len() > 1
                && self
                    .samples
                    .front()
                    .is_some_and(|s| at.saturating_duration_since(s.last) > self.window)
        {
            self.samples.pop_front();
        }
    }

    /// The newest primary position known.
    pub fn latest(&self) -> Option<u64> {
        self.samples.back().map(|s| s.lsn)
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
        let i = self.samples.partition_point(|s| s.lsn <= replay);
        let (before, after) = (self.samples.get(i.checked_sub(1)?)?, self.samples.get(i)?);
        let span = after.first.saturating_duration_since(before.last);
        let frac = (replay - before.lsn) as f64 / (after.lsn - before.lsn) as f64;
        let crossing = before.last + span.mul_f64(frac.clamp(0.0, 1.0));
        Some(now.saturating_duration_since(crossing))
    }

    /// Age of the oldest sample (a lower bound for positions older than it).
    pub fn age(&self, now: Instant) -> Duration {
        self.samples
            .front()
            .map(|s| now.saturating_duration_since(s.first))
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
        // Steady writes: 100 bytes per 250 ms probe.
        h.record(t0, 100);
        h.record(t0 + ms(250), 200);
        h.record(t0 + ms(500), 300);
        h.record(t0 + ms(750), 400);
        let now = t0 + ms(1000);
        assert_eq!(h.lag(400, now), Some(Duration::ZERO));
        assert_eq!(h.lag(350, now), Some(ms(375)));
        assert_eq!(h.lag(300, now), Some(ms(500)));
        assert_eq!(h.lag(100, now), Some(ms(1000)));
        // Older than the history: unknown (at least its age).
        assert_eq!(h.lag(50, now), None);
        assert_eq!(h.age(now), ms(1000));
    }

    #[test]
    fn a_burst_after_a_long_idle_is_not_false_lag() {
        let t0 = Instant::now();
        let mut h = WalHistory::new(Duration::from_secs(600));
        h.record(t0, 100);
        // Idle for 5 minutes, sampled every 250 ms.
        for k in 1..=1200 {
            h.record(t0 + ms(250 * k), 100);
        }
        // A burst, seen at the next probe.
        let burst = t0 + ms(250 * 1201);
        h.record(burst, 5000);
        // A replica halfway through the burst, 100 ms later: the crossing is
        // inside the last probe interval, not 5 minutes ago.
        let lag = h.lag(2550, burst + ms(100));
        assert_eq!(lag, Some(ms(225)));
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
