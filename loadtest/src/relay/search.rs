//! The search for a system's maximum sustainable rate, sans-I/O: the
//! caller runs each step the search asks for and tells it whether the step
//! passed. Doubling from a start rate until a step fails (halving instead
//! when the very first one fails), then bisection between the highest
//! passing and the lowest failing rate, until they are within a tolerance
//! or the steps run out.

use crate::report::Report;

/// Most steps any search may take, whatever the settings say.
pub const MAX_STEPS_LIMIT: u32 = 64;

/// Settings of one search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchConfig {
    /// First rate tried (requests per second).
    pub start_rate: u64,
    /// Below this the search gives up: nothing is sustainable.
    pub min_rate: u64,
    /// Doubling stops here.
    pub max_rate: u64,
    /// Most steps (runs) of the search.
    pub max_steps: u32,
    /// Bisection stops when the failing rate is within this fraction above
    /// the passing one (0.1 = 10 %).
    pub tolerance: f64,
}

impl SearchConfig {
    /// Check the settings, naming the offending option.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_rate == 0 {
            return Err("--min-rate: must be at least 1".into());
        }
        if self.start_rate < self.min_rate || self.start_rate > self.max_rate {
            return Err(format!(
                "--start-rate: {} is not between --min-rate {} and --max-rate {}",
                self.start_rate, self.min_rate, self.max_rate
            ));
        }
        if self.max_steps == 0 || self.max_steps > MAX_STEPS_LIMIT {
            return Err(format!("--max-steps: must be 1..={MAX_STEPS_LIMIT}"));
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0 && self.tolerance < 1.0) {
            return Err("--tolerance: must be between 0 and 1 (exclusive)".into());
        }
        Ok(())
    }
}

/// Where a search stands.
#[derive(Debug, Clone)]
pub struct RateSearch {
    config: SearchConfig,
    /// Highest rate that passed.
    passed: Option<u64>,
    /// Lowest rate that failed.
    failed: Option<u64>,
    next: Option<u64>,
    steps: u32,
}

impl RateSearch {
    /// A search that has run nothing yet.
    pub fn new(config: SearchConfig) -> Self {
        RateSearch {
            config,
            passed: None,
            failed: None,
            next: Some(
                config
                    .start_rate
                    .clamp(config.min_rate.max(1), config.max_rate.max(1)),
            ),
            steps: 0,
        }
    }

    /// The rate of the next step, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<u64> {
        self.next.filter(|_| self.steps < self.config.max_steps)
    }

    /// The result of the step at `rate` (the one [`Self::next_rate`] gave).
    pub fn record(&mut self, rate: u64, passed: bool) {
        self.steps += 1;
        if passed {
            self.passed = Some(self.passed.map_or(rate, |p| p.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
        let c = &self.config;
        self.next = match (self.passed, self.failed) {
            // Still doubling.
            (Some(p), None) => (p < c.max_rate).then(|| p.saturating_mul(2).min(c.max_rate)),
            // Nothing passed yet: halve.
            (None, Some(f)) => (f / 2 >= c.min_rate).then_some(f / 2),
            (Some(p), Some(f)) => {
                let close = (f as f64) <= (p as f64) * (1.0 + c.tolerance) || f <= p + 1;
                (!close).then(|| p + (f - p) / 2)
            }
            (None, None) => self.next,
        };
    }

    /// The highest rate that passed (0 when none did).
    pub fn best(&self) -> u64 {
        self.passed.unwrap_or(0)
    }

    /// The lowest rate that failed, if any.
    pub fn lowest_failed(&self) -> Option<u64> {
        self.failed
    }

    /// Steps taken.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Whether the search ran out of steps before converging.
    pub fn out_of_steps(&self) -> bool {
        self.next.is_some() && self.steps >= self.config.max_steps
    }
}

/// Whether a step's report is sustainable: every request got exactly one
/// correct answer and p99 is under `p99_limit_us`. `Err` says why not.
pub fn verdict(report: &Report, p99_limit_us: u64) -> Result<(), String> {
    let mut why = Vec::new();
    if report.answered < report.offered {
        why.push(format!(
            "{} of {} unanswered",
            report.offered - report.answered,
            report.offered
        ));
    }
    if !report.errors.is_empty() {
        let kinds: Vec<String> = report
            .errors
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        why.push(format!("errors {}", kinds.join(" ")));
    }
    if report.p99_us >= p99_limit_us {
        why.push(format!("p99 {} µs >= {} µs", report.p99_us, p99_limit_us));
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SearchConfig {
        SearchConfig {
            start_rate: 1000,
            min_rate: 100,
            max_rate: 1_000_000,
            max_steps: 20,
            tolerance: 0.1,
        }
    }

    /// Run a search against a system that sustains exactly `capacity`.
    fn search(config: SearchConfig, capacity: u64) -> (RateSearch, Vec<u64>) {
        let mut s = RateSearch::new(config);
        let mut rates = Vec::new();
        while let Some(r) = s.next_rate() {
            rates.push(r);
            s.record(r, r <= capacity);
        }
        (s, rates)
    }

    #[test]
    fn doubles_then_bisects_to_within_the_tolerance() {
        let (s, rates) = search(config(), 23_000);
        assert_eq!(&rates[..6], &[1000, 2000, 4000, 8000, 16_000, 32_000]);
        let best = s.best();
        let failed = s.lowest_failed().unwrap();
        assert!(best <= 23_000 && failed > 23_000, "{best} {failed}");
        assert!(failed as f64 <= best as f64 * 1.1, "{best} {failed}");
        assert!(!s.out_of_steps());
    }

    #[test]
    fn halves_when_the_start_fails_and_gives_up_below_the_minimum() {
        let (s, rates) = search(config(), 300);
        assert_eq!(&rates[..4], &[1000, 500, 250, 375]);
        assert!((273..=300).contains(&s.best()), "{}", s.best());
        let (s, rates) = search(config(), 50);
        assert_eq!(rates, vec![1000, 500, 250, 125]);
        assert_eq!(s.best(), 0);
    }

    #[test]
    fn stops_at_the_maximum_rate_and_after_max_steps() {
        let c = SearchConfig {
            max_rate: 5000,
            ..config()
        };
        let (s, rates) = search(c, u64::MAX);
        assert_eq!(rates, vec![1000, 2000, 4000, 5000]);
        assert_eq!(s.best(), 5000);
        let c = SearchConfig {
            max_steps: 3,
            ..config()
        };
        let (s, rates) = search(c, 23_000);
        assert_eq!(rates.len(), 3);
        assert_eq!(s.best(), 4000);
        assert!(s.out_of_steps());
    }

    #[test]
    fn bad_settings_name_their_option() {
        let mut c = config();
        c.start_rate = 10;
        assert!(c.validate().unwrap_err().starts_with("--start-rate"));
        c = config();
        c.tolerance = 0.0;
        assert!(c.validate().unwrap_err().starts_with("--tolerance"));
        c = config();
        c.max_steps = 0;
        assert!(c.validate().unwrap_err().starts_with("--max-steps"));
        assert!(config().validate().is_ok());
    }

    #[test]
    fn verdicts_name_every_reason() {
        let mut r = crate::report::Recorder::new();
        for _ in 0..99 {
            r.answer(std::time::Duration::from_micros(500), "00", "003");
        }
        let ok = r.report(99, 99.0, std::time::Duration::from_secs(1));
        assert_eq!(verdict(&ok, 10_000), Ok(()));
        assert!(verdict(&ok, 400).unwrap_err().contains("p99"));
        r.error("timeout");
        let bad = r.report(100, 100.0, std::time::Duration::from_secs(1));
        let why = verdict(&bad, 10_000).unwrap_err();
        assert!(
            why.contains("1 of 100 unanswered") && why.contains("timeout=1"),
            "{why}"
        );
    }
}
