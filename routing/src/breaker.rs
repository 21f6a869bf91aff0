//! Circuit breaker per bank link.
//!
//! `Closed` lets everything through and counts consecutive failures; the Nth
//! opens it. `Open { until }` refuses everything until the cool-down ends
//! (growing exponentially while re-opens repeat). Then `HalfOpen` lets at most
//! `half_open_probes` real requests through: the first success closes the
//! breaker, the first failure re-opens it.
//!
//! Every admission hands out a [`BreakerTicket`] that carries the breaker's
//! generation; opening and closing start a new generation, so a late result
//! from a request admitted before the last transition is ignored instead of
//! closing or re-opening the breaker by accident.

use std::time::Duration;

use crate::time::{duration_ms, Millis};

/// Largest consecutive-failure threshold accepted.
pub const MAX_FAILURE_THRESHOLD: u32 = 10_000;
/// Largest number of concurrent half-open probes accepted.
pub const MAX_HALF_OPEN_PROBES: u32 = 64;
/// Longest cool-down accepted (base or grown).
pub const MAX_COOL_DOWN: Duration = Duration::from_secs(3600);
/// Largest cool-down growth factor accepted.
pub const MAX_COOL_DOWN_MULTIPLIER: u32 = 16;

/// How a breaker trips and recovers. Values outside the documented ranges
/// are clamped by [`CircuitBreaker::new`]; configuration validation reports
/// them before that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures (errors or timeouts) that open the breaker, `1..=MAX_FAILURE_THRESHOLD`.
    pub failure_threshold: u32,
    /// Time the breaker stays open after the first opening.
    pub cool_down: Duration,
    /// Cap on the grown cool-down, at least `cool_down`, at most [`MAX_COOL_DOWN`].
    pub max_cool_down: Duration,
    /// Growth of the cool-down on each re-open without a close in between;
    /// `1` keeps it constant, at most [`MAX_COOL_DOWN_MULTIPLIER`].
    pub cool_down_multiplier: u32,
    /// Requests let through at once while half-open, `1..=MAX_HALF_OPEN_PROBES`.
    pub half_open_probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            cool_down: Duration::from_secs(5),
            max_cool_down: Duration::from_secs(60),
            cool_down_multiplier: 2,
            half_open_probes: 1,
        }
    }
}

impl BreakerSettings {
    /// The settings with every value forced into its documented range.
    pub fn clamped(self) -> Self {
        let cool_down = self
            .cool_down
            .clamp(Duration::from_millis(1), MAX_COOL_DOWN);
        BreakerSettings {
            failure_threshold: self.failure_threshold.clamp(1, MAX_FAILURE_THRESHOLD),
            cool_down,
            max_cool_down: self.max_cool_down.clamp(cool_down, MAX_COOL_DOWN),
            cool_down_multiplier: self.cool_down_multiplier.clamp(1, MAX_COOL_DOWN_MULTIPLIER),
            half_open_probes: self.half_open_probes.clamp(1, MAX_HALF_OPEN_PROBES),
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows; `consecutive_failures` is below the threshold.
    Closed {
        /// Failures since the last success.
        consecutive_failures: u32,
    },
    /// Traffic refused until `until`.
    Open {
        /// End of the cool-down.
        until: Millis,
    },
    /// A bounded number of probes are allowed through.
    HalfOpen {
        /// Probes admitted and not yet settled.
        probes_in_flight: u32,
    },
}

impl BreakerState {
    /// Metric encoding: 0 closed, 1 open, 2 half-open.
    pub fn code(&self) -> u8 {
        match self {
            BreakerState::Closed { .. } => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen { .. } => 2,
        }
    }
}

/// What [`CircuitBreaker::admission`] would answer now, without changing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: a normal request.
    Normal,
    /// Half-open (or open with the cool-down over): the request would be a probe.
    Probe,
    /// Open and cooling down.
    Open,
    /// Half-open with every probe slot taken.
    ProbesBusy,
}

impl Admission {
    /// Whether a request would be let through.
    pub fn admits(self) -> bool {
        matches!(self, Admission::Normal | Admission::Probe)
    }
}

/// Proof of admission by a [`CircuitBreaker`]; settle it exactly once with
/// [`CircuitBreaker::on_success`], [`CircuitBreaker::on_failure`] or
/// [`CircuitBreaker::release`].
#[must_use = "an unsettled probe ticket keeps a half-open slot taken"]
#[derive(Debug, PartialEq, Eq)]
pub struct BreakerTicket {
    generation: u64,
    probe: bool,
}

impl BreakerTicket {
    /// Whether this request was admitted as a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// A circuit breaker for one bank link. Deterministic: time is passed in.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: BreakerState,
    /// Bumped on every transition that invalidates outstanding tickets.
    generation: u64,
    /// Opens since the breaker last closed; drives cool-down growth.
    consecutive_opens: u32,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        CircuitBreaker {
            settings: settings.clamped(),
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
            generation: 0,
            consecutive_opens: 0,
        }
    }

    /// Current state, as last updated (an `Open` whose cool-down has passed
    /// stays `Open` until the next admission turns it half-open).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Metric encoding of the state: 0 closed, 1 open, 2 half-open.
    pub fn state_code(&self) -> u8 {
        self.state.code()
    }

    /// The settings in force (clamped).
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// Replace the settings (configuration reload); the state is kept.
    pub fn set_settings(&mut self, settings: BreakerSettings) {
        self.settings = settings.clamped();
    }

    /// What [`try_acquire`](Self::try_acquire) would do at `now`.
    pub fn admission(&self, now: Millis) -> Admission {
        match self.state {
            BreakerState::Closed { .. } => Admission::Normal,
            BreakerState::Open { until } if now >= until => Admission::Probe,
            BreakerState::Open { .. } => Admission::Open,
            BreakerState::HalfOpen { probes_in_flight } => {
                if probes_in_flight < self.settings.half_open_probes {
                    Admission::Probe
                } else {
                    Admission::ProbesBusy
                }
            }
        }
    }

    /// Admit one request at `now`, or refuse it.
    pub fn try_acquire(&mut self, now: Millis) -> Option<BreakerTicket> {
        match self.state {
            BreakerState::Closed { .. } => Some(BreakerTicket {
                generation: self.generation,
                probe: false,
            }),
            BreakerState::Open { until } => {
                if now < until {
                    return None;
                }
                self.generation = self.generation.wrapping_add(1);
                self.state = BreakerState::HalfOpen {
                    probes_in_flight: 1,
                };
                Some(self.probe_ticket())
            }
            BreakerState::HalfOpen {
                ref mut probes_in_flight,
            } => {
                if *probes_in_flight >= self.settings.half_open_probes {
                    return None;
                }
                *probes_in_flight += 1;
                Some(self.probe_ticket())
            }
        }
    }

    /// The request behind `ticket` got an answer from the bank (any answer,
    /// a decline included: the link works).
    pub fn on_success(&mut self, ticket: BreakerTicket, _now: Millis) {
        if ticket.generation != self.generation {
            return;
        }
        match self.state {
            BreakerState::Closed {
                ref mut consecutive_failures,
            } => *consecutive_failures = 0,
            BreakerState::HalfOpen { .. } => self.close(),
            // Opening bumps the generation, so no current ticket exists here.
            BreakerState::Open { .. } => {}
        }
    }

    /// The request behind `ticket` failed or timed out at the link.
    pub fn on_failure(&mut self, ticket: BreakerTicket, now: Millis) {
        if ticket.generation != self.generation {
            return;
        }
        match self.state {
            BreakerState::Closed {
                ref mut consecutive_failures,
            } => {
                *consecutive_failures = consecutive_failures.saturating_add(1);
                if *consecutive_failures >= self.settings.failure_threshold {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen { .. } => self.open(now),
            BreakerState::Open { .. } => {}
        }
    }

    /// The request behind `ticket` was never sent for a reason unrelated to
    /// the link (e.g. another limit refused it): give the slot back, no verdict.
    pub fn release(&mut self, ticket: BreakerTicket) {
        if ticket.generation != self.generation || !ticket.probe {
            return;
        }
        if let BreakerState::HalfOpen {
            ref mut probes_in_flight,
        } = self.state
        {
            debug_assert!(*probes_in_flight > 0, "probe released twice");
            *probes_in_flight = probes_in_flight.saturating_sub(1);
        }
    }

    /// The cool-down the next opening would use.
    pub fn next_cool_down(&self) -> Duration {
        let s = &self.settings;
        let growth = u64::from(s.cool_down_multiplier).saturating_pow(self.consecutive_opens);
        let ms = duration_ms(s.cool_down).saturating_mul(growth);
        Duration::from_millis(ms.min(duration_ms(s.max_cool_down)))
    }

    fn probe_ticket(&self) -> BreakerTicket {
        BreakerTicket {
            generation: self.generation,
            probe: true,
        }
    }

    fn open(&mut self, now: Millis) {
        let until = now.saturating_add(self.next_cool_down());
        self.consecutive_opens = self.consecutive_opens.saturating_add(1);
        self.generation = self.generation.wrapping_add(1);
        self.state = BreakerState::Open { until };
    }

    fn close(&mut self) {
        self.consecutive_opens = 0;
        self.generation = self.generation.wrapping_add(1);
        self.state = BreakerState::Closed {
            consecutive_failures: 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(threshold: u32, probes: u32) -> BreakerSettings {
        BreakerSettings {
            failure_threshold: threshold,
            cool_down: Duration::from_millis(100),
            max_cool_down: Duration::from_millis(350),
            cool_down_multiplier: 2,
            half_open_probes: probes,
        }
    }

    #[test]
    fn opens_at_threshold_and_success_resets_the_count() {
        let mut b = CircuitBreaker::new(settings(3, 1));
        let now = Millis(0);
        for _ in 0..2 {
            let t = b.try_acquire(now).unwrap();
            b.on_failure(t, now);
        }
        let t = b.try_acquire(now).unwrap();
        b.on_success(t, now);
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
        for _ in 0..3 {
            let t = b.try_acquire(now).unwrap();
            b.on_failure(t, now);
        }
        assert_eq!(b.state(), BreakerState::Open { until: Millis(100) });
        assert_eq!(b.state_code(), 1);
        assert!(b.try_acquire(Millis(99)).is_none());
    }

    #[test]
    fn half_open_admits_bounded_probes_then_closes_on_success() {
        let mut b = CircuitBreaker::new(settings(1, 2));
        let t = b.try_acquire(Millis(0)).unwrap();
        b.on_failure(t, Millis(0));
        assert_eq!(b.admission(Millis(100)), Admission::Probe);
        let p1 = b.try_acquire(Millis(100)).unwrap();
        let p2 = b.try_acquire(Millis(100)).unwrap();
        assert!(p1.is_probe() && p2.is_probe());
        assert_eq!(b.state_code(), 2);
        assert_eq!(b.admission(Millis(100)), Admission::ProbesBusy);
        assert!(b.try_acquire(Millis(100)).is_none());
        b.on_success(p1, Millis(101));
        assert_eq!(b.state_code(), 0);
        // The other probe's late failure belongs to the old generation.
        b.on_failure(p2, Millis(102));
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
    }

    #[test]
    fn cool_down_grows_on_repeated_opens_up_to_the_cap_and_resets_on_close() {
        let mut b = CircuitBreaker::new(settings(1, 1));
        let mut now = Millis(0);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let t = b.try_acquire(now).unwrap();
            b.on_failure(t, now);
            let BreakerState::Open { until } = b.state() else {
                panic!("not open")
            };
            seen.push(until.0 - now.0);
            now = until;
        }
        assert_eq!(seen, vec![100, 200, 350, 350]);
        let t = b.try_acquire(now).unwrap();
        b.on_success(t, now);
        assert_eq!(b.next_cool_down(), Duration::from_millis(100));
    }

    #[test]
    fn released_probe_frees_its_slot_without_a_verdict() {
        let mut b = CircuitBreaker::new(settings(1, 1));
        let t = b.try_acquire(Millis(0)).unwrap();
        b.on_failure(t, Millis(0));
        let p = b.try_acquire(Millis(100)).unwrap();
        assert!(b.try_acquire(Millis(100)).is_none());
        b.release(p);
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen {
                probes_in_flight: 0
            }
        );
        let p = b.try_acquire(Millis(100)).unwrap();
        b.on_failure(p, Millis(150));
        assert_eq!(b.state(), BreakerState::Open { until: Millis(350) });
    }

    #[test]
    fn stale_closed_failures_do_not_count_after_reopening() {
        let mut b = CircuitBreaker::new(settings(2, 1));
        let old: Vec<_> = (0..4).map(|_| b.try_acquire(Millis(0)).unwrap()).collect();
        let mut old = old.into_iter();
        b.on_failure(old.next().unwrap(), Millis(0));
        b.on_failure(old.next().unwrap(), Millis(0));
        assert_eq!(b.state_code(), 1);
        let p = b.try_acquire(Millis(100)).unwrap();
        b.on_success(p, Millis(100));
        for t in old {
            b.on_failure(t, Millis(101));
        }
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
    }

    #[test]
    fn settings_are_clamped() {
        let s = BreakerSettings {
            failure_threshold: 0,
            cool_down: Duration::ZERO,
            max_cool_down: Duration::MAX,
            cool_down_multiplier: 0,
            half_open_probes: 1000,
        }
        .clamped();
        assert_eq!(s.failure_threshold, 1);
        assert_eq!(s.cool_down, Duration::from_millis(1));
        assert_eq!(s.max_cool_down, MAX_COOL_DOWN);
        assert_eq!(s.cool_down_multiplier, 1);
        assert_eq!(s.half_open_probes, MAX_HALF_OPEN_PROBES);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Succeed(usize),
        Fail(usize),
        Release(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Acquire),
            2 => any::<usize>().prop_map(Op::Succeed),
            3 => any::<usize>().prop_map(Op::Fail),
            1 => any::<usize>().prop_map(Op::Release),
            2 => (0u64..200).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// For any interleaving of admissions, results and time:
        /// - half-open never has more unsettled probes than configured;
        /// - the breaker closes only on a success;
        /// - it opens exactly when the Nth consecutive current-generation
        ///   failure is recorded while closed (or any probe fails).
        #[test]
        fn breaker_invariants(
            threshold in 1u32..6,
            probes in 1u32..4,
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            let mut b = CircuitBreaker::new(settings(threshold, probes));
            let mut now = Millis(0);
            let mut held: Vec<BreakerTicket> = Vec::new();
            // Reference model of the closed-state failure count.
            let mut model_failures = 0u32;
            for op in ops {
                let before = b.state();
                let gen_before = b.generation;
                let mut closed_by_success = false;
                let mut expect_open = false;
                match op {
                    Op::Acquire => {
                        if let Some(t) = b.try_acquire(now) {
                            held.push(t);
                        }
                    }
                    Op::Advance(ms) => now = now.plus_ms(ms),
                    Op::Succeed(i) | Op::Fail(i) | Op::Release(i) if !held.is_empty() => {
                        let t = held.swap_remove(i % held.len());
                        let current = t.generation == gen_before;
                        match op {
                            Op::Succeed(_) => {
                                closed_by_success = current;
                                if current && matches!(before, BreakerState::Closed { .. }) {
                                    model_failures = 0;
                                }
                                b.on_success(t, now);
                            }
                            Op::Fail(_) => {
                                if current {
                                    match before {
                                        BreakerState::Closed { .. } => {
                                            model_failures += 1;
                                            expect_open = model_failures == threshold;
                                        }
                                        BreakerState::HalfOpen { .. } => expect_open = true,
                                        BreakerState::Open { .. } => {}
                                    }
                                }
                                b.on_failure(t, now);
                            }
                            _ => b.release(t),
                        }
                    }
                    _ => {}
                }
                let after = b.state();
                // Probe bound: unsettled current-generation probes == counter <= configured.
                if let BreakerState::HalfOpen { probes_in_flight } = after {
                    prop_assert!(probes_in_flight <= probes);
                    let live = held.iter().filter(|t| t.probe && t.generation == b.generation).count();
                    prop_assert_eq!(live as u32, probes_in_flight);
                }
                // Closes only on success.
                if !matches!(before, BreakerState::Closed { .. }) && matches!(after, BreakerState::Closed { .. }) {
                    prop_assert!(closed_by_success, "closed without a success: {:?} -> {:?}", before, after);
                    model_failures = 0;
                }
                // Opens exactly at the Nth consecutive failure.
                let opened = !matches!(before, BreakerState::Open { .. }) && matches!(after, BreakerState::Open { .. });
                prop_assert_eq!(opened, expect_open, "{:?} -> {:?} with model count {}", before, after, model_failures);
                if opened {
                    model_failures = 0;
                }
                if let BreakerState::Closed { consecutive_failures } = after {
                    prop_assert_eq!(consecutive_failures, model_failures);
                }
            }
        }
    }
}
