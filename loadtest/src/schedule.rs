//! Open-loop arrival schedule: when each request *should* be sent.
//!
//! Latency is measured from a request's intended send time, not from when
//! the generator got round to sending it, so a stall in the system under
//! test shows up in the percentiles instead of silently lowering the offered
//! rate (coordinated omission). Sans-I/O: the caller passes `elapsed`.

use std::time::Duration;

/// Most requests released by one call to [`OpenLoop::due`], so a generator
/// that fell far behind catches up in bounded steps.
pub const MAX_BURST: u64 = 10_000;

/// A constant-rate schedule of `total` requests.
#[derive(Debug, Clone)]
pub struct OpenLoop {
    interval_ns: u64,
    total: u64,
    released: u64,
}

impl OpenLoop {
    /// `rate_per_s` requests per second for `duration`. A zero rate is refused.
    pub fn new(rate_per_s: u64, duration: Duration) -> Option<Self> {
        if rate_per_s == 0 {
            return None;
        }
        let total = (u128::from(rate_per_s) * duration.as_nanos() / 1_000_000_000) as u64;
        Some(OpenLoop {
            interval_ns: 1_000_000_000 / rate_per_s,
            total,
            released: 0,
        })
    }

    /// Total requests the schedule will release.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Requests released so far.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Whether every request has been released.
    pub fn finished(&self) -> bool {
        self.released >= self.total
    }

    /// Intended send time (since the start) of request `seq`.
    pub fn intended(&self, seq: u64) -> Duration {
        Duration::from_nanos(seq.saturating_mul(self.interval_ns))
    }

    /// Release the requests whose intended time is at or before `elapsed`:
    /// returns the range of their sequence numbers (at most [`MAX_BURST`]).
    pub fn due(&mut self, elapsed: Duration) -> std::ops::Range<u64> {
        let elapsed_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let due_total = (elapsed_ns / self.interval_ns)
            .saturating_add(1)
            .min(self.total);
        let end = due_total.min(self.released + MAX_BURST).max(self.released);
        let range = self.released..end;
        self.released = end;
        range
    }

    /// Time until the next request is due, or `None` when finished.
    pub fn until_next(&self, elapsed: Duration) -> Option<Duration> {
        (!self.finished()).then(|| self.intended(self.released).saturating_sub(elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_at_the_constant_rate() {
        let mut s = OpenLoop::new(1000, Duration::from_secs(1)).unwrap();
        assert_eq!(s.total(), 1000);
        assert_eq!(s.due(Duration::ZERO), 0..1);
        assert_eq!(s.due(Duration::from_micros(999)), 1..1);
        assert_eq!(s.due(Duration::from_millis(1)), 1..2);
        assert_eq!(s.due(Duration::from_millis(10)), 2..11);
        assert_eq!(s.intended(10), Duration::from_millis(10));
        assert_eq!(
            s.until_next(Duration::from_millis(10)),
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn a_stalled_generator_catches_up_in_bounded_bursts_and_stops_at_total() {
        let mut s = OpenLoop::new(1_000_000, Duration::from_secs(1)).unwrap();
        let r = s.due(Duration::from_secs(5));
        assert_eq!(r, 0..MAX_BURST);
        let mut released = MAX_BURST;
        while !s.finished() {
            released += s.due(Duration::from_secs(5)).count() as u64;
        }
        assert_eq!(released, 1_000_000);
        assert_eq!(s.due(Duration::from_secs(6)).count(), 0);
        assert_eq!(s.until_next(Duration::from_secs(6)), None);
    }

    #[test]
    fn zero_rate_is_refused() {
        assert!(OpenLoop::new(0, Duration::from_secs(1)).is_none());
    }
}
