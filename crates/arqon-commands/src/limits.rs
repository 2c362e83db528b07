//! Per-connection rate limit and violation window (SPEC §6).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` 0 turns the limit off.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token; `Err(retry_after)` when none is left.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.rate == 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Violations within a sliding window.
#[derive(Debug, Clone)]
pub struct ViolationWindow {
    window: Duration,
    max: u32,
    times: VecDeque<Instant>,
}

impl ViolationWindow {
    /// `max` 0 turns the limit off.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            window,
            max,
            times: VecDeque::new(),
        }
    }

    /// Records a violation; true when it is the `max`-th within the window.
    pub fn record(&mut self, now: Instant) -> bool {
        while self
            .times
            .front()
            .is_some_and(|first| now.saturating_duration_since(*first) >= self.window)
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.max > 0 && self.times.len() >= self.max as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        for _ in 0..3 {
            assert!(bucket.take(start).is_ok());
        }
        let retry = bucket.take(start).expect_err("empty");
        assert!(retry > Duration::ZERO && retry <= Duration::from_millis(100));
        assert!(bucket.take(start + Duration::from_millis(100)).is_ok());
        assert!(bucket.take(start + Duration::from_millis(100)).is_err());
        // Refills never exceed the burst.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.take(later).is_ok());
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn a_zero_rate_is_unlimited() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(0, 1, now);
        for _ in 0..10_000 {
            assert!(bucket.take(now).is_ok());
        }
    }

    #[test]
    fn violations_slide_out_of_the_window() {
        let start = Instant::now();
        let mut window = ViolationWindow::new(3, Duration::from_secs(60));
        assert!(!window.record(start));
        assert!(!window.record(start + Duration::from_secs(1)));
        // The first one has left the window by now.
        assert!(!window.record(start + Duration::from_secs(60)));
        assert!(window.record(start + Duration::from_millis(60_500)));
    }
}
