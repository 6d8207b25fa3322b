//! A circuit breaker per server: after `failures` consecutive failed
//! connection attempts the circuit opens and new connections fail at once
//! (no client waits out a connect timeout against a dead server, and the
//! server is not hammered while it restarts). After `cooldown` one attempt
//! is let through (half-open); success closes the circuit, failure opens it
//! again for twice as long (capped). A successful health probe also closes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_COOLDOWN: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Breaker {
    /// Fast path: closed circuits cost one atomic load per connect.
    open: AtomicBool,
    inner: Mutex<Inner>,
    failures: u32,
    cooldown: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    consecutive: u32,
    open_until: Option<Instant>,
    current_cooldown: Duration,
    /// A half-open attempt in flight since then.
    probing: Option<Instant>,
    last_error: String,
}

/// Whether a connection attempt may go ahead.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// Refused: the circuit is open.
    Open {
        retry_in: Duration,
        failures: u32,
        last_error: String,
    },
}

impl Breaker {
    /// `failures` = 0 disables the breaker.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Self {
            open: AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
            failures,
            cooldown: cooldown.max(Duration::from_millis(10)),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn admit(&self, now: Instant) -> Admit {
        if !self.is_open() {
            return Admit::Go;
        }
        let Ok(mut g) = self.inner.lock() else {
            return Admit::Go;
        };
        let until = g.open_until.unwrap_or(now);
        // A half-open attempt whose caller vanished must not wedge the circuit.
        let stale_probe = g
            .probing
            .is_some_and(|t| now.saturating_duration_since(t) > g.current_cooldown + MAX_COOLDOWN);
        if now >= until && (g.probing.is_none() || stale_probe) {
            g.probing = Some(now);
            return Admit::Go;
        }
        Admit::Open {
            retry_in: until.saturating_duration_since(now),
            failures: g.consecutive,
            last_error: g.last_error.clone(),
        }
    }

    pub fn success(&self) {
        if !self.is_open() {
            if let Ok(mut g) = self.inner.lock() {
                g.consecutive = 0;
            }
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            *g = Inner::default();
            self.open.store(false, Ordering::Release);
        }
    }

    /// Records a failed attempt; returns true if this opened the circuit.
    pub fn failure(&self, now: Instant, error: &str) -> bool {
        if self.failures == 0 {
            return false;
        }
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        g.consecutive = g.consecutive.saturating_add(1);
        g.last_error = error.to_string();
        let was_open = self.is_open();
        if was_open && g.probing.is_some() {
            // The half-open attempt failed: stay open, longer.
            g.current_cooldown = (g.current_cooldown * 2).min(MAX_COOLDOWN);
            g.open_until = Some(now + g.current_cooldown);
            g.probing = None;
            return false;
        }
        if !was_open && g.consecutive >= self.failures {
            g.current_cooldown = self.cooldown;
            g.open_until = Some(now + self.cooldown);
            g.probing = None;
            self.open.store(true, Ordering::Release);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn opens_after_consecutive_failures_then_half_opens() {
        let b = Breaker::new(3, ms(1000));
        let t = Instant::now();
        assert!(!b.failure(t, "refused"));
        assert!(!b.failure(t, "refused"));
        assert_eq!(b.admit(t), Admit::Go);
        assert!(b.failure(t, "refused"));
        assert!(matches!(
            b.admit(t + ms(10)),
            Admit::Open { failures: 3, .. }
        ));
        // Cooldown over: exactly one attempt goes through.
        assert_eq!(b.admit(t + ms(1000)), Admit::Go);
        assert!(matches!(b.admit(t + ms(1001)), Admit::Open { .. }));
        // It fails: open for twice as long.
        b.failure(t + ms(1100), "refused");
        assert!(matches!(b.admit(t + ms(2500)), Admit::Open { .. }));
        assert_eq!(b.admit(t + ms(3100)), Admit::Go);
        b.success();
        assert!(!b.is_open());
        assert_eq!(b.admit(t + ms(3101)), Admit::Go);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(3, ms(1000));
        let t = Instant::now();
        b.failure(t, "x");
        b.failure(t, "x");
        b.success();
        b.failure(t, "x");
        b.failure(t, "x");
        assert!(!b.is_open());
    }

    #[test]
    fn zero_disables() {
        let b = Breaker::new(0, ms(1000));
        let t = Instant::now();
        for _ in 0..10 {
            b.failure(t, "x");
        }
        assert_eq!(b.admit(t), Admit::Go);
    }
}
