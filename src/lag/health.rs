//! Whether a server may take traffic in its role: a pure state machine fed
//! one probe result at a time, with hysteresis so a replica hovering around
//! the threshold does not flap in and out.
//!
//! ```text
//!            first good probe                      over max_lag / max_lag_bytes
//! Starting ------------------> Healthy ------------------------------------> Evicted
//!     |                          ^  |  probe failed / timed out                 |
//!     |                          |  +---------------------------------> Down    |
//!     |                          |  |  wrong role (promoted / in recovery)      |
//!     |                          |  +---------------------------------> Misconfigured
//!     |                          |                                              |
//!     +--------------------------+-- readmit_probes consecutive probes <--------+
//!                                    under readmit_lag (from Evicted, Down or
//!                                    Misconfigured; any bad probe restarts the count)
//! ```

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// Not probed yet: no reads.
    Starting = 0,
    Healthy = 1,
    /// Behind by more than the threshold: no new reads.
    Evicted = 2,
    /// Probe failed or timed out.
    Down = 3,
    /// Reports the other role (a promoted replica, a primary in recovery).
    Misconfigured = 4,
    /// Taken out of router.toml by a reload: never used again, not probed.
    Removed = 5,
}

impl State {
    pub fn from_u8(v: u8) -> State {
        match v {
            1 => State::Healthy,
            2 => State::Evicted,
            3 => State::Down,
            4 => State::Misconfigured,
            5 => State::Removed,
            _ => State::Starting,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Healthy => "healthy",
            State::Evicted => "evicted",
            State::Down => "down",
            State::Misconfigured => "misconfigured",
            State::Removed => "removed",
        }
    }
}

/// What one probe found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observation {
    /// The server answered. `role_ok`: it has the role the router uses it
    /// for. Lag is zero for a primary.
    Answered {
        role_ok: bool,
        lag: Duration,
        lag_bytes: u64,
    },
    /// No answer within probe_timeout, or the connection failed.
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub max_lag: Duration,
    /// 0: no byte threshold.
    pub max_lag_bytes: u64,
    pub readmit_lag: Duration,
    pub readmit_lag_bytes: u64,
    pub readmit_probes: u32,
}

impl Thresholds {
    fn over(&self, lag: Duration, bytes: u64) -> bool {
        lag > self.max_lag || (self.max_lag_bytes > 0 && bytes > self.max_lag_bytes)
    }
    fn readmittable(&self, lag: Duration, bytes: u64) -> bool {
        lag <= self.readmit_lag && (self.max_lag_bytes == 0 || bytes <= self.readmit_lag_bytes)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: State,
    /// Consecutive probes under the readmission threshold while out.
    pub streak: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: State::Starting,
            streak: 0,
        }
    }
}

impl Health {
    /// Feeds one probe; returns the new state if it changed.
    pub fn observe(&mut self, obs: Observation, t: &Thresholds) -> Option<State> {
        let before = self.state;
        let mut streak = 0;
        let next = match obs {
            Observation::Failed => State::Down,
            Observation::Answered { role_ok: false, .. } => State::Misconfigured,
            Observation::Answered { lag, lag_bytes, .. } => match before {
                State::Starting | State::Healthy if t.over(lag, lag_bytes) => State::Evicted,
                State::Starting | State::Healthy => State::Healthy,
                out if t.readmittable(lag, lag_bytes) => {
                    streak = self.streak + 1;
                    if streak >= t.readmit_probes.max(1) {
                        streak = 0;
                        State::Healthy
                    } else {
                        out
                    }
                }
                // Answering, in its role, not yet under the readmission
                // threshold: "evicted" describes it.
                _ => State::Evicted,
            },
        };
        self.streak = streak;
        self.state = next;
        (next != before).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        max_lag: Duration::from_millis(1000),
        max_lag_bytes: 0,
        readmit_lag: Duration::from_millis(500),
        readmit_lag_bytes: 0,
        readmit_probes: 3,
    };

    fn lag(ms: u64) -> Observation {
        Observation::Answered {
            role_ok: true,
            lag: Duration::from_millis(ms),
            lag_bytes: 0,
        }
    }

    fn run(h: &mut Health, obs: &[Observation]) -> Vec<State> {
        obs.iter()
            .map(|o| {
                h.observe(*o, &T);
                h.state
            })
            .collect()
    }

    use State::*;

    #[test]
    fn first_probe_admits_or_evicts() {
        let mut h = Health::default();
        assert_eq!(h.observe(lag(0), &T), Some(Healthy));
        let mut h = Health::default();
        assert_eq!(h.observe(lag(5000), &T), Some(Evicted));
        let mut h = Health::default();
        assert_eq!(h.observe(Observation::Failed, &T), Some(Down));
    }

    #[test]
    fn evicts_over_threshold_and_readmits_after_streak() {
        let mut h = Health::default();
        let states = run(
            &mut h,
            &[
                lag(0),
                lag(900),
                lag(1001),
                lag(400),
                lag(400),
                lag(400),
                lag(0),
            ],
        );
        assert_eq!(
            states,
            [Healthy, Healthy, Evicted, Evicted, Evicted, Healthy, Healthy]
        );
    }

    #[test]
    fn hovering_between_thresholds_does_not_flap() {
        let mut h = Health::default();
        // Out at 1.2 s; 0.7-0.9 s is under max_lag but over readmit_lag.
        let states = run(
            &mut h,
            &[
                lag(0),
                lag(1200),
                lag(900),
                lag(700),
                lag(800),
                lag(950),
                lag(600),
            ],
        );
        assert!(states[1..].iter().all(|s| *s == Evicted), "{states:?}");
    }

    #[test]
    fn a_bad_probe_restarts_the_streak() {
        let mut h = Health::default();
        let states = run(
            &mut h,
            &[
                lag(0),
                lag(2000),
                lag(100),
                lag(100),
                lag(700),
                lag(100),
                lag(100),
                lag(100),
            ],
        );
        assert_eq!(
            states,
            [Healthy, Evicted, Evicted, Evicted, Evicted, Evicted, Evicted, Healthy]
        );
    }

    #[test]
    fn down_and_back_through_the_same_hysteresis() {
        let mut h = Health::default();
        let f = Observation::Failed;
        let states = run(
            &mut h,
            &[lag(0), f, f, lag(0), lag(0), f, lag(0), lag(0), lag(0)],
        );
        assert_eq!(
            states,
            [Healthy, Down, Down, Down, Down, Down, Down, Down, Healthy]
        );
    }

    #[test]
    fn wrong_role_is_misconfigured_until_it_settles() {
        let mut h = Health::default();
        let wrong = Observation::Answered {
            role_ok: false,
            lag: Duration::ZERO,
            lag_bytes: 0,
        };
        let states = run(&mut h, &[lag(0), wrong, lag(0), lag(0), lag(0)]);
        assert_eq!(
            states,
            [
                Healthy,
                Misconfigured,
                Misconfigured,
                Misconfigured,
                Healthy
            ]
        );
    }

    #[test]
    fn byte_threshold_evicts_too() {
        let t = Thresholds {
            max_lag_bytes: 1000,
            readmit_lag_bytes: 500,
            ..T
        };
        let mut h = Health::default();
        let b = |n| Observation::Answered {
            role_ok: true,
            lag: Duration::ZERO,
            lag_bytes: n,
        };
        h.observe(b(0), &t);
        assert_eq!(h.observe(b(1001), &t), Some(Evicted));
        for _ in 0..5 {
            h.observe(b(800), &t);
        }
        assert_eq!(h.state, Evicted);
        h.observe(b(100), &t);
        h.observe(b(100), &t);
        assert_eq!(h.observe(b(100), &t), Some(Healthy));
    }
}
