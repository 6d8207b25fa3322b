//! A token bucket that shapes rather than only refuses: a transaction that
//! finds the bucket empty reserves a future token and waits for it, unless
//! that wait would exceed the tenant's queue_timeout, in which case it is
//! refused at once (53400). Throughput over a window T is therefore at most
//! `rate * T + burst`.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// May go negative: tokens already promised to waiting transactions.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes a token. `Ok(wait)`: it is yours once `wait` has passed (zero:
    /// now). `Err(wait)`: it would take `wait`, longer than `max_wait`;
    /// nothing was taken.
    pub fn reserve(&mut self, now: Instant, max_wait: Duration) -> Result<Duration, Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(Duration::ZERO);
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
        if wait > max_wait {
            return Err(wait);
        }
        self.tokens -= 1.0;
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(b.reserve(t0, Duration::ZERO), Ok(Duration::ZERO));
        }
        // Empty: the next token comes in 100 ms.
        assert!(b.reserve(t0, 50 * MS).is_err());
        let w = b.reserve(t0, 200 * MS).unwrap_or_default();
        assert!(w > 99 * MS && w < 101 * MS, "{w:?}");
        // The promised token is spent: the one after comes at 200 ms.
        let w = b.reserve(t0, Duration::from_secs(1)).unwrap_or_default();
        assert!(w > 199 * MS && w < 201 * MS, "{w:?}");
        // 300 ms later two are paid back and one is free again.
        let t1 = t0 + 300 * MS;
        assert!(b.reserve(t1, Duration::ZERO).is_ok());
        assert!(b.reserve(t1, Duration::ZERO).is_err());
    }

    #[test]
    fn refill_never_exceeds_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 2, t0);
        let later = t0 + Duration::from_secs(60);
        assert!(b.reserve(later, Duration::ZERO).is_ok());
        assert!(b.reserve(later, Duration::ZERO).is_ok());
        assert!(b.reserve(later, Duration::ZERO).is_err());
    }

    #[test]
    fn long_run_rate_is_the_configured_rate() {
        // Transactions arriving as fast as they are allowed for 10 s.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50.0, 5, t0);
        let mut now = t0;
        let mut n = 0;
        while now < t0 + Duration::from_secs(10) {
            let w = b.reserve(now, Duration::from_secs(1)).unwrap_or_default();
            now += w;
            n += 1;
        }
        assert!((500..=506).contains(&n), "{n}");
    }
}
