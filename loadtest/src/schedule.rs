//! When each request is sent and what it is.
//!
//! [`OpenLoop`]: a constant arrival rate. Latency is measured from a
//! request's intended send time, not from when the generator got round to
//! sending it, so a stall in the system under test shows up in the
//! percentiles instead of silently lowering the offered rate (coordinated
//! omission). [`ClosedLoop`]: a fixed number of outstanding requests, each
//! sent when an earlier one is answered. [`Mix`]: which destination, outcome
//! and retry each request gets, deterministically from its number.
//! Sans-I/O: the caller passes `elapsed`.

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

/// A closed-loop run: at most `concurrency` requests outstanding; a new one
/// is released when an answer frees a slot, until `duration` has passed.
#[derive(Debug, Clone)]
pub struct ClosedLoop {
    concurrency: u64,
    duration: Duration,
    in_flight: u64,
    released: u64,
}

impl ClosedLoop {
    /// `concurrency` outstanding requests for `duration`. Zero is refused.
    pub fn new(concurrency: u64, duration: Duration) -> Option<Self> {
        (concurrency > 0).then_some(ClosedLoop {
            concurrency,
            duration,
            in_flight: 0,
            released: 0,
        })
    }

    /// Release requests into the free slots (none once `duration` has
    /// passed): the range of their sequence numbers.
    pub fn due(&mut self, elapsed: Duration) -> std::ops::Range<u64> {
        let start = self.released;
        if !self.finished(elapsed) {
            let free = self.concurrency - self.in_flight;
            self.in_flight += free;
            self.released += free;
        }
        start..self.released
    }

    /// A released request got its final answer (or was given up on).
    pub fn answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Whether the run's time is over (no more releases).
    pub fn finished(&self, elapsed: Duration) -> bool {
        elapsed >= self.duration
    }

    /// Requests released so far.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Requests released and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }
}

/// Where a request is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// F100: the bank at this index of the plan's bank list.
    Bank(usize),
    /// F120 `MOBN:+852-9000NNNN` with this `NNNN` (1-based).
    Proxy(u32),
}

/// The outcome a request is built to get from the bank simulator, whose
/// rules are deterministic on the accounts (DESIGN.md, issue 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ordinary accounts: approved (`00`).
    Approve,
    /// Debtor account ending `51`: insufficient funds (`51`).
    InsufficientFunds,
    /// Debtor account ending `05`: do not honour (`05`).
    DoNotHonour,
    /// Creditor account ending `14`: no such account (`14`).
    NoSuchAccount,
}

impl Outcome {
    /// The two-digit endings of (debtor, creditor) account that ask for it.
    pub fn account_endings(self) -> (&'static str, &'static str) {
        match self {
            Outcome::Approve => ("00", "00"),
            Outcome::InsufficientFunds => ("51", "00"),
            Outcome::DoNotHonour => ("05", "00"),
            Outcome::NoSuchAccount => ("00", "14"),
        }
    }

    /// The response code (F39) expected upstream.
    pub fn expected_code(self) -> &'static str {
        match self {
            Outcome::Approve => "00",
            Outcome::InsufficientFunds => "51",
            Outcome::DoNotHonour => "05",
            Outcome::NoSuchAccount => "14",
        }
    }
}

/// What one request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// F100 bank or F120 proxy.
    pub destination: Destination,
    /// The outcome its accounts ask for.
    pub outcome: Outcome,
    /// Whether it is resent (same F123, same content) after its answer.
    pub duplicate: bool,
}

/// Most distinct proxies `MOBN:+852-9000NNNN` a mix can address.
pub const MAX_PROXIES: u32 = 9_999;

/// The request mix: shares (0..=1) of proxied, declined and duplicated
/// requests. Banks are used round-robin among the requests sent by F100.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Distinct proxies used (`+852-90000001` ..); 0 = none.
    pub proxies: u32,
    /// Share of requests addressed by proxy (needs `proxies > 0`).
    pub proxy_share: f64,
    /// Share of requests built to be declined (51, 05, 14 equally).
    pub decline_share: f64,
    /// Share of requests resent with the same idempotency key.
    pub duplicate_share: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            proxies: 0,
            proxy_share: 0.0,
            decline_share: 0.0,
            duplicate_share: 0.0,
        }
    }
}

impl Mix {
    /// Check the shares and the proxy count, naming the offending option.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("--proxy-share", self.proxy_share),
            ("--decline-share", self.decline_share),
            ("--duplicate-share", self.duplicate_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name}: {v} is not between 0 and 1"));
            }
        }
        if self.proxies > MAX_PROXIES {
            return Err(format!("--proxies: at most {MAX_PROXIES}"));
        }
        if self.proxy_share > 0.0 && self.proxies == 0 {
            return Err("--proxy-share needs --proxies N (N > 0)".to_owned());
        }
        Ok(())
    }

    /// What request number `n` is, among `banks` banks. Deterministic: the
    /// same `n` always gives the same pick, and the shares hold over many.
    pub fn pick(&self, n: u64, banks: usize) -> Pick {
        let mut h = Draws(n);
        let proxied = self.proxies > 0 && h.chance(self.proxy_share);
        let destination = if proxied {
            Destination::Proxy((h.next() % u64::from(self.proxies)) as u32 + 1)
        } else {
            Destination::Bank((n % banks.max(1) as u64) as usize)
        };
        let outcome = if h.chance(self.decline_share) {
            match h.next() % 3 {
                0 => Outcome::InsufficientFunds,
                1 => Outcome::DoNotHonour,
                _ => Outcome::NoSuchAccount,
            }
        } else {
            Outcome::Approve
        };
        let duplicate = h.chance(self.duplicate_share);
        Pick {
            destination,
            outcome,
            duplicate,
        }
    }
}

/// Independent pseudo-random draws from a request number (SplitMix64).
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        // 53 random bits as a fraction in [0, 1).
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
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
    #[test]
    fn closed_loop_keeps_concurrency_outstanding_until_the_end() {
        let mut c = ClosedLoop::new(3, Duration::from_secs(1)).unwrap();
        assert_eq!(c.due(Duration::ZERO), 0..3);
        assert_eq!(c.due(Duration::from_millis(1)), 3..3, "no free slot");
        c.answered();
        assert_eq!(c.due(Duration::from_millis(2)), 3..4);
        c.answered();
        c.answered();
        assert_eq!(c.in_flight(), 1);
        assert_eq!(c.due(Duration::from_millis(3)), 4..6);
        c.answered();
        assert!(c.finished(Duration::from_secs(1)));
        assert_eq!(c.due(Duration::from_secs(1)), 6..6, "nothing after the end");
        assert_eq!(c.released(), 6);
        assert!(ClosedLoop::new(0, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn the_mix_holds_its_shares_and_is_deterministic() {
        let mix = Mix {
            proxies: 100,
            proxy_share: 0.25,
            decline_share: 0.3,
            duplicate_share: 0.1,
        };
        mix.validate().unwrap();
        let n = 100_000u64;
        let (mut proxied, mut declined, mut dup) = (0u64, 0u64, 0u64);
        let mut codes = std::collections::BTreeMap::new();
        let mut banks = [0u64; 4];
        for i in 0..n {
            let p = mix.pick(i, 4);
            assert_eq!(p, mix.pick(i, 4));
            match p.destination {
                Destination::Proxy(k) => {
                    assert!((1..=100).contains(&k));
                    proxied += 1;
                }
                Destination::Bank(b) => banks[b] += 1,
            }
            if p.outcome != Outcome::Approve {
                declined += 1;
            }
            *codes.entry(p.outcome.expected_code()).or_insert(0u64) += 1;
            dup += u64::from(p.duplicate);
        }
        let near = |got: u64, share: f64| ((got as f64 / n as f64) - share).abs() < 0.01;
        assert!(near(proxied, 0.25), "{proxied}");
        assert!(near(declined, 0.3), "{declined}");
        assert!(near(dup, 0.1), "{dup}");
        assert!(near(codes["51"], 0.1) && near(codes["05"], 0.1) && near(codes["14"], 0.1));
        for b in banks {
            assert!(near(b, 0.75 / 4.0), "{banks:?}");
        }
    }

    #[test]
    fn outcomes_follow_the_simulator_account_rules() {
        assert_eq!(Outcome::InsufficientFunds.account_endings().0, "51");
        assert_eq!(Outcome::DoNotHonour.account_endings().0, "05");
        assert_eq!(Outcome::NoSuchAccount.account_endings().1, "14");
        let (d, c) = Outcome::Approve.account_endings();
        assert!(!["51", "05"].contains(&d) && c != "14");
    }

    #[test]
    fn bad_mixes_are_refused_naming_the_option() {
        let mut m = Mix {
            proxy_share: 0.5,
            ..Mix::default()
        };
        assert!(m.validate().unwrap_err().contains("--proxies"));
        m.proxies = 10;
        m.decline_share = 1.5;
        assert!(m.validate().unwrap_err().starts_with("--decline-share"));
        assert_eq!(Mix::default().pick(7, 3).destination, Destination::Bank(1));
    }
}
