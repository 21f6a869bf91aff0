//! The load report: latency percentiles from an HdrHistogram, offered vs
//! achieved rate, answers by response code and by bank, and the same as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly (µs); slower answers are clamped to it.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// Accumulates the outcome of every request of a run.
#[derive(Debug)]
pub struct Recorder {
    latency_us: Histogram<u64>,
    by_code: BTreeMap<String, u64>,
    by_bank: BTreeMap<String, u64>,
    errors: BTreeMap<&'static str, u64>,
    duplicates_sent: u64,
    duplicates_consistent: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Recorder {
            // 3 significant digits from 1 µs to a minute: a few hundred KiB at most.
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("bounds are valid constants"),
            by_code: BTreeMap::new(),
            by_bank: BTreeMap::new(),
            errors: BTreeMap::new(),
            duplicates_sent: 0,
            duplicates_consistent: 0,
        }
    }

    /// One answered request: its latency from the intended send time, its
    /// response code and the bank it went to.
    pub fn answer(&mut self, latency: Duration, code: &str, bank: &str) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us
            .saturating_record(us.clamp(1, MAX_LATENCY_US));
        *self.by_code.entry(code.to_owned()).or_default() += 1;
        *self.by_bank.entry(bank.to_owned()).or_default() += 1;
    }

    /// One request that got no correct answer, by kind (`timeout`,
    /// `unmatched`, `duplicate`, `connection`, ...).
    pub fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// A duplicate (same idempotency key, same content) was sent.
    pub fn duplicate_sent(&mut self) {
        self.duplicates_sent += 1;
    }

    /// A duplicate got the original's outcome and echoed its own fields.
    pub fn duplicate_consistent(&mut self) {
        self.duplicates_consistent += 1;
    }

    /// Requests without a correct answer so far.
    pub fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Fold another recorder (e.g. one per connection) into this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        for (k, v) in &other.by_code {
            *self.by_code.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.by_bank {
            *self.by_bank.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.duplicates_sent += other.duplicates_sent;
        self.duplicates_consistent += other.duplicates_consistent;
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.latency_us.len()
    }

    /// The latency at `quantile` (0..=1), in µs.
    pub fn percentile_us(&self, quantile: f64) -> u64 {
        self.latency_us.value_at_quantile(quantile)
    }

    /// The final report of a run that offered `offered` requests at
    /// `offered_tps` over `elapsed` (from the start to the last answer).
    pub fn report(&self, offered: u64, offered_tps: f64, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let h = &self.latency_us;
        Report {
            mode: "open".to_owned(),
            connections: 0,
            concurrency: None,
            offered,
            answered: self.answered(),
            offered_tps,
            achieved_tps: self.answered() as f64 / secs,
            elapsed_s: elapsed.as_secs_f64(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            by_code: self.by_code.clone(),
            by_bank: self.by_bank.clone(),
            errors: self
                .errors
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            duplicates_sent: self.duplicates_sent,
            duplicates_consistent: self.duplicates_consistent,
        }
    }
}

/// What a run achieved; printed for people and written as JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// `open` (constant arrival rate) or `closed` (fixed concurrency).
    pub mode: String,
    /// Upstream connections used.
    pub connections: u64,
    /// Outstanding requests of a closed-loop run.
    pub concurrency: Option<u64>,
    /// Requests the schedule offered (duplicates not included).
    pub offered: u64,
    /// Requests that got exactly one correct answer.
    pub answered: u64,
    /// Offered rate.
    pub offered_tps: f64,
    /// Answers per second over the run.
    pub achieved_tps: f64,
    /// Length of the run in seconds.
    pub elapsed_s: f64,
    /// Median latency (µs), from each request's intended send time.
    pub p50_us: u64,
    /// 90th percentile (µs).
    pub p90_us: u64,
    /// 99th percentile (µs).
    pub p99_us: u64,
    /// 99.9th percentile (µs).
    pub p999_us: u64,
    /// Slowest answer (µs).
    pub max_us: u64,
    /// Answers by response code.
    pub by_code: BTreeMap<String, u64>,
    /// Answers by destination bank.
    pub by_bank: BTreeMap<String, u64>,
    /// Requests without a correct answer, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Duplicates sent (same idempotency key and content, after the answer).
    pub duplicates_sent: u64,
    /// Duplicates that got the original's F39/F38 and echoed their own ids.
    pub duplicates_consistent: u64,
}

impl Report {
    /// Whether every request (and duplicate) got exactly one correct answer.
    pub fn clean(&self) -> bool {
        self.errors.is_empty()
            && self.answered == self.offered
            && self.duplicates_consistent == self.duplicates_sent
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = match self.concurrency {
            Some(c) => format!("closed loop, {c} outstanding"),
            None => "open loop".to_owned(),
        };
        writeln!(
            f,
            "{shape} over {} connection(s): offered {} at {:.0} TPS, answered {} in {:.1} s: {:.0} TPS achieved",
            self.connections,
            self.offered,
            self.offered_tps,
            self.answered,
            self.elapsed_s,
            self.achieved_tps
        )?;
        writeln!(
            f,
            "latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        )?;
        let join = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        writeln!(f, "by response code: {}", join(&self.by_code))?;
        writeln!(f, "by bank: {}", join(&self.by_bank))?;
        if self.duplicates_sent > 0 {
            writeln!(
                f,
                "duplicates: {} sent, {} consistent with the original",
                self.duplicates_sent, self.duplicates_consistent
            )?;
        }
        write!(
            f,
            "errors: {}",
            if self.errors.is_empty() {
                "none".to_owned()
            } else {
                join(&self.errors)
            }
        )
    }
}

/// Live counters shared by a run's connections, read once a second for the
/// progress line: answers and errors so far and the latencies of the
/// current window.
#[derive(Debug)]
pub struct Progress {
    window_us: Mutex<Histogram<u64>>,
    answered: AtomicU64,
    errors: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Empty counters.
    pub fn new() -> Self {
        Progress {
            // Two significant digits are plenty for a progress line.
            window_us: Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
                    .expect("bounds are valid constants"),
            ),
            answered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// One answer and its latency.
    pub fn answer(&self, latency: Duration) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Ok(mut h) = self.window_us.lock() {
            h.saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
    }

    /// One request without a correct answer.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Close the current window of length `window` and describe it.
    pub fn tick(&self, elapsed: Duration, window: Duration) -> ProgressLine {
        let (count, p99_us) = match self.window_us.lock() {
            Ok(mut h) => {
                let r = (h.len(), h.value_at_quantile(0.99));
                h.reset();
                r
            }
            Err(_) => (0, 0),
        };
        ProgressLine {
            elapsed,
            tps: count as f64 / window.as_secs_f64().max(1e-9),
            p99_us,
            answered: self.answered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// One line of live progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressLine {
    /// Time since the start.
    pub elapsed: Duration,
    /// Answers per second in the last window.
    pub tps: f64,
    /// 99th percentile latency of the last window (µs).
    pub p99_us: u64,
    /// Answers so far.
    pub answered: u64,
    /// Errors so far.
    pub errors: u64,
}

impl fmt::Display for ProgressLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>5.1} s] {:>7.0} TPS  p99 {:>8} µs  answered {:>9}  errors {}",
            self.elapsed.as_secs_f64(),
            self.tps,
            self.p99_us,
            self.answered,
            self.errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_counts_and_merge() {
        let mut a = Recorder::new();
        for us in 1..=1000u64 {
            a.answer(Duration::from_micros(us), "00", "004");
        }
        let mut b = Recorder::new();
        b.answer(Duration::from_millis(50), "51", "012");
        b.error("timeout");
        a.merge(&b);
        let r = a.report(1002, 1000.0, Duration::from_secs(1));
        assert_eq!(r.answered, 1001);
        assert!((499..=501).contains(&r.p50_us), "{}", r.p50_us);
        assert!((989..=991).contains(&r.p99_us), "{}", r.p99_us);
        assert!((49_900..=50_100).contains(&r.max_us), "{}", r.max_us);
        assert_eq!(r.by_code["00"], 1000);
        assert_eq!(r.by_bank["012"], 1);
        assert_eq!(r.errors["timeout"], 1);
        let text = r.to_string();
        assert!(
            text.contains("p99 ") && text.contains("timeout=1"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["by_code"]["51"], 1);
    }

    #[test]
    fn absurd_latencies_are_clamped_not_lost() {
        let mut r = Recorder::new();
        r.answer(Duration::from_secs(3600), "00", "003");
        r.answer(Duration::ZERO, "00", "003");
        assert_eq!(r.answered(), 2);
        assert!(r.percentile_us(1.0) >= MAX_LATENCY_US - MAX_LATENCY_US / 1000);
    }
    #[test]
    fn duplicates_and_clean_runs() {
        let mut r = Recorder::new();
        r.answer(Duration::from_micros(10), "00", "003");
        r.duplicate_sent();
        let mut rep = r.report(1, 1.0, Duration::from_secs(1));
        assert!(!rep.clean(), "a duplicate without a consistent answer");
        r.duplicate_consistent();
        rep = r.report(1, 1.0, Duration::from_secs(1));
        assert!(rep.clean());
        assert!(rep.to_string().contains("1 sent, 1 consistent"), "{rep}");
        assert!(
            !r.report(2, 1.0, Duration::from_secs(1)).clean(),
            "one unanswered"
        );
        r.error("timeout");
        assert_eq!(r.errors(), 1);
        assert!(!r.report(1, 1.0, Duration::from_secs(1)).clean());
    }

    #[test]
    fn progress_windows_reset_each_tick() {
        let p = Progress::new();
        for us in 1..=100u64 {
            p.answer(Duration::from_micros(us * 10));
        }
        p.error();
        let line = p.tick(Duration::from_secs(1), Duration::from_millis(500));
        assert_eq!(line.answered, 100);
        assert_eq!(line.errors, 1);
        assert!((line.tps - 200.0).abs() < 1e-6, "{}", line.tps);
        assert!((980..=1000).contains(&line.p99_us), "{}", line.p99_us);
        let text = line.to_string();
        assert!(text.contains("TPS") && text.contains("errors 1"), "{text}");
        let next = p.tick(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!((next.tps, next.p99_us, next.answered), (0.0, 0, 100));
    }
}
