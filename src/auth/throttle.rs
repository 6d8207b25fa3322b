//! Failed-login accounting per source address (`[auth] max_failed_logins`).
//!
//! A password guesser gets `max_failed_logins` tries per
//! `failed_login_window` from one address; after that, that address is
//! refused before authentication until `failed_login_lockout` has passed.
//! Clients on other addresses are not affected, and the answer is the same
//! whether the user being guessed exists or not. Sans-IO: callers pass the
//! time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most; past it, expired entries are dropped and,
/// if still full, new addresses are not tracked (memory stays bounded when
/// failures come from very many addresses, where a per-address limit could
/// not help anyway).
const MAX_TRACKED: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// 0: no limit.
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

/// Login outcomes, for /metrics.
#[derive(Debug, Default)]
pub struct LoginStats {
    pub ok: AtomicU64,
    /// Wrong password, unknown user, login timeout.
    pub failed: AtomicU64,
    /// Refused because the address is locked out.
    pub locked_out: AtomicU64,
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    by_addr: Mutex<HashMap<IpAddr, Entry>>,
    pub stats: LoginStats,
}

impl LoginThrottle {
    /// Whether `ip` may try to log in now; Err(how long until it may).
    pub fn check(&self, ip: IpAddr, limits: Limits, now: Instant) -> Result<(), Duration> {
        if limits.max_failures == 0 {
            return Ok(());
        }
        let map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip).and_then(|e| e.locked_until) {
            Some(until) if until > now => {
                self.stats.locked_out.fetch_add(1, Ordering::Relaxed);
                Err(until - now)
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login from `ip`; returns true when this failure
    /// locked the address out.
    pub fn failed(&self, ip: IpAddr, limits: Limits, now: Instant) -> bool {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        if limits.max_failures == 0 {
            return false;
        }
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, e| !expired(e, limits, now));
            if map.len() >= MAX_TRACKED {
                return false;
            }
        }
        let e = map.entry(ip).or_insert(Entry {
            failures: 0,
            window_start: now,
            locked_until: None,
        });
        if expired(e, limits, now) {
            *e = Entry {
                failures: 0,
                window_start: now,
                locked_until: None,
            };
        }
        e.failures += 1;
        if e.failures >= limits.max_failures && e.locked_until.is_none() {
            e.locked_until = Some(now + limits.lockout);
            return true;
        }
        false
    }

    pub fn succeeded(&self) {
        self.stats.ok.fetch_add(1, Ordering::Relaxed);
    }

    /// Addresses locked out now (/metrics, SHOW).
    pub fn locked_addresses(&self, now: Instant) -> usize {
        let map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|e| e.locked_until.is_some_and(|u| u > now))
            .count()
    }
}

/// An entry whose window and lockout are both over counts for nothing.
fn expired(e: &Entry, limits: Limits, now: Instant) -> bool {
    let window_over = now.duration_since(e.window_start) >= limits.window;
    let lock_over = e.locked_until.is_none_or(|u| u <= now);
    window_over && lock_over
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_failures: 3,
        window: Duration::from_secs(60),
        lockout: Duration::from_secs(30),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn locks_out_after_max_failures_in_the_window() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let a = ip("10.0.0.1");
        assert!(!t.failed(a, LIMITS, now));
        assert!(!t.failed(a, LIMITS, now));
        assert!(t.check(a, LIMITS, now).is_ok());
        assert!(t.failed(a, LIMITS, now), "third failure locks");
        assert_eq!(t.check(a, LIMITS, now), Err(Duration::from_secs(30)));
        // Another address is unaffected.
        assert!(t.check(ip("10.0.0.2"), LIMITS, now).is_ok());
        // The lockout ends.
        let later = now + Duration::from_secs(31);
        assert!(t.check(a, LIMITS, later).is_ok());
        assert_eq!(t.locked_addresses(now), 1);
        assert_eq!(t.locked_addresses(later), 0);
    }

    #[test]
    fn failures_spread_over_windows_do_not_lock() {
        let t = LoginThrottle::default();
        let mut now = Instant::now();
        let a = ip("::1");
        for _ in 0..10 {
            assert!(!t.failed(a, LIMITS, now));
            assert!(!t.failed(a, LIMITS, now));
            now += Duration::from_secs(61);
        }
        assert!(t.check(a, LIMITS, now).is_ok());
    }

    #[test]
    fn zero_means_no_limit() {
        let t = LoginThrottle::default();
        let off = Limits {
            max_failures: 0,
            ..LIMITS
        };
        let now = Instant::now();
        for _ in 0..100 {
            t.failed(ip("10.0.0.1"), off, now);
        }
        assert!(t.check(ip("10.0.0.1"), off, now).is_ok());
        assert_eq!(t.stats.failed.load(Ordering::Relaxed), 100);
    }
}
