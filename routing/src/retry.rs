//! Retry policy: what to do after an attempt to send to a bank fails.
//!
//! Retry safety lives in the failure type (STYLE.md):
//! - [`SendFailure::NotSent`]: nothing reached the bank (connect refused, no
//!   pooled link, write failed before the first byte): safe to try again on
//!   the next candidate, within the attempt and deadline bounds.
//! - [`SendFailure::OutcomeUnknown`]: bytes may have reached the bank and no
//!   answer came back: **never** resend as new; reverse (or inquire).
//! - [`SendFailure::Rejected`]: the bank answered with a decline: that is the
//!   final answer.
//!
//! Backoff grows exponentially with "equal jitter" (half fixed, half random).
//! The random half comes from a `u64` the caller passes in, so a simulation
//! seed replays exactly; [`SplitMix64`] is a small generator for that.

use std::time::Duration;

use fps_codecs::model::ResponseCode;

use crate::select::LinkOutcome;
use crate::time::{duration_ms, Millis};

/// Most attempts (first send plus retries) a policy may allow.
pub const MAX_ATTEMPTS_LIMIT: u32 = 8;
/// Longest backoff a policy may use.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How an attempt to send a request to a bank failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// Nothing reached the bank: safe to retry elsewhere.
    NotSent,
    /// The request may have reached the bank; its outcome is unknown.
    OutcomeUnknown,
    /// The bank declined with this (canonical) response code.
    Rejected(ResponseCode),
}

impl SendFailure {
    /// How this failure counts for the link's circuit breaker: a decline
    /// proves the link works; the other two count against it.
    pub fn link_outcome(self) -> LinkOutcome {
        match self {
            SendFailure::Rejected(_) => LinkOutcome::Answered,
            SendFailure::NotSent | SendFailure::OutcomeUnknown => LinkOutcome::Failed,
        }
    }
}

/// One attempt of a transaction: which try it is and on which candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first send.
    pub number: u32,
    /// Position of the candidate used, within the route's candidates.
    pub candidate: usize,
    /// How many candidates the route has.
    pub candidates: usize,
}

impl Attempt {
    /// The first attempt, made on candidate position `candidate` of `candidates`.
    pub fn first(candidate: usize, candidates: usize) -> Self {
        Attempt {
            number: 1,
            candidate,
            candidates,
        }
    }
}

/// A retry to make: the next attempt, not before `not_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The next attempt; its `candidate` is where selection should start
    /// (the one after the failed candidate, wrapping around).
    pub attempt: Attempt,
    /// Earliest time to send it (backoff with jitter applied).
    pub not_before: Millis,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again, on the next candidate, after the backoff.
    RetryOn(Retry),
    /// Stop and answer upstream with this code.
    GiveUp(ResponseCode),
    /// Outcome unknown: journal "reversing", decline upstream with 68 and
    /// queue a reversal (or status inquiry). Never resend as new.
    Reverse,
}

/// Bounded retries with exponential backoff and injected jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_backoff: Duration,
    max_backoff: Duration,
    min_attempt_time: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new(
            2,
            Duration::from_millis(20),
            Duration::from_millis(500),
            Duration::from_millis(500),
        )
    }
}

impl RetryPolicy {
    /// A policy of at most `max_attempts` sends (clamped to
    /// `1..=MAX_ATTEMPTS_LIMIT`), backing off from `base_backoff` doubling up
    /// to `max_backoff` (clamped to [`MAX_BACKOFF`]), and never starting an
    /// attempt with less than `min_attempt_time` left before the deadline (an
    /// attempt that cannot complete would only end as outcome-unknown).
    pub fn new(
        max_attempts: u32,
        base_backoff: Duration,
        max_backoff: Duration,
        min_attempt_time: Duration,
    ) -> Self {
        let max_backoff = max_backoff.min(MAX_BACKOFF);
        RetryPolicy {
            max_attempts: max_attempts.clamp(1, MAX_ATTEMPTS_LIMIT),
            base_backoff: base_backoff.min(max_backoff),
            max_backoff,
            min_attempt_time,
        }
    }

    /// Most sends per transaction.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Decide what follows `attempt` failing with `failure` at `now`, for a
    /// transaction that must be answered by `deadline`. `jitter` is any
    /// random word (from the caller's RNG or a simulation seed).
    pub fn decide(
        &self,
        attempt: Attempt,
        failure: SendFailure,
        now: Millis,
        deadline: Millis,
        jitter: u64,
    ) -> RetryDecision {
        match failure {
            SendFailure::OutcomeUnknown => RetryDecision::Reverse,
            SendFailure::Rejected(code) => RetryDecision::GiveUp(code),
            SendFailure::NotSent => {
                if attempt.number >= self.max_attempts {
                    return RetryDecision::GiveUp(ResponseCode::BANK_UNAVAILABLE);
                }
                let not_before = now.saturating_add(self.backoff(attempt.number, jitter));
                if not_before.saturating_add(self.min_attempt_time) > deadline {
                    return RetryDecision::GiveUp(ResponseCode::BANK_UNAVAILABLE);
                }
                let next = if attempt.candidates == 0 {
                    0
                } else {
                    (attempt.candidate + 1) % attempt.candidates
                };
                RetryDecision::RetryOn(Retry {
                    attempt: Attempt {
                        number: attempt.number + 1,
                        candidate: next,
                        candidates: attempt.candidates,
                    },
                    not_before,
                })
            }
        }
    }

    /// Backoff after failed attempt number `failed` (1-based):
    /// `d = min(base * 2^(failed-1), max)`, then `d/2 + jitter % (d/2 + 1)`.
    pub fn backoff(&self, failed: u32, jitter: u64) -> Duration {
        let exp = failed.saturating_sub(1).min(63);
        let full = duration_ms(self.base_backoff)
            .saturating_mul(1u64 << exp)
            .min(duration_ms(self.max_backoff));
        let half = full / 2;
        let extra = jitter % (full - half + 1);
        Duration::from_millis(half + extra)
    }
}

/// A tiny deterministic random generator (SplitMix64) for jitter, so the
/// caller can derive jitter from a seed without global RNG state.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next pseudo-random word.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(
            3,
            Duration::from_millis(100),
            Duration::from_millis(1000),
            Duration::from_millis(200),
        )
    }

    #[test]
    fn not_sent_moves_to_the_next_candidate_after_a_backoff() {
        let d = policy().decide(
            Attempt::first(0, 2),
            SendFailure::NotSent,
            Millis(1000),
            Millis(5000),
            0,
        );
        assert_eq!(
            d,
            RetryDecision::RetryOn(Retry {
                attempt: Attempt {
                    number: 2,
                    candidate: 1,
                    candidates: 2
                },
                not_before: Millis(1050),
            })
        );
        let RetryDecision::RetryOn(r) = d else {
            unreachable!()
        };
        let d = policy().decide(
            r.attempt,
            SendFailure::NotSent,
            Millis(1050),
            Millis(5000),
            u64::MAX,
        );
        let RetryDecision::RetryOn(r) = d else {
            panic!("{d:?}")
        };
        assert_eq!(r.attempt.candidate, 0, "wraps to the primary");
        assert!(r.not_before >= Millis(1150) && r.not_before <= Millis(1250));
        let d = policy().decide(
            r.attempt,
            SendFailure::NotSent,
            Millis(1250),
            Millis(5000),
            7,
        );
        assert_eq!(d, RetryDecision::GiveUp(ResponseCode::BANK_UNAVAILABLE));
    }

    #[test]
    fn unknown_outcome_reverses_and_decline_is_final() {
        let p = policy();
        let a = Attempt::first(0, 3);
        assert_eq!(
            p.decide(a, SendFailure::OutcomeUnknown, Millis(0), Millis(10_000), 1),
            RetryDecision::Reverse
        );
        // Even past the deadline: the money may have moved.
        assert_eq!(
            p.decide(
                a,
                SendFailure::OutcomeUnknown,
                Millis(20_000),
                Millis(10_000),
                1
            ),
            RetryDecision::Reverse
        );
        assert_eq!(
            p.decide(
                a,
                SendFailure::Rejected(ResponseCode::INSUFFICIENT_FUNDS),
                Millis(0),
                Millis(10_000),
                1
            ),
            RetryDecision::GiveUp(ResponseCode::INSUFFICIENT_FUNDS)
        );
        assert_eq!(
            SendFailure::Rejected(ResponseCode::DO_NOT_HONOUR).link_outcome(),
            LinkOutcome::Answered
        );
        assert_eq!(
            SendFailure::OutcomeUnknown.link_outcome(),
            LinkOutcome::Failed
        );
    }

    #[test]
    fn no_retry_that_cannot_finish_before_the_deadline() {
        let p = policy();
        // 50ms backoff + 200ms minimum attempt time > 240ms left.
        assert_eq!(
            p.decide(
                Attempt::first(0, 2),
                SendFailure::NotSent,
                Millis(0),
                Millis(240),
                0
            ),
            RetryDecision::GiveUp(ResponseCode::BANK_UNAVAILABLE)
        );
        assert!(matches!(
            p.decide(
                Attempt::first(0, 2),
                SendFailure::NotSent,
                Millis(0),
                Millis(250),
                0
            ),
            RetryDecision::RetryOn(_)
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let p = policy();
        for (n, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            assert_eq!(p.backoff(n, 0), Duration::from_millis(full / 2));
            assert_eq!(p.backoff(n, full / 2), Duration::from_millis(full));
            assert!(p.backoff(n, u64::MAX) <= Duration::from_millis(full));
        }
        let zero = RetryPolicy::new(2, Duration::ZERO, Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.backoff(1, 12345), Duration::ZERO);
    }

    #[test]
    fn splitmix_is_deterministic() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }

    fn failure() -> impl Strategy<Value = SendFailure> {
        prop_oneof![
            Just(SendFailure::NotSent),
            Just(SendFailure::OutcomeUnknown),
            Just(SendFailure::Rejected(ResponseCode::DO_NOT_HONOUR)),
        ]
    }

    proptest! {
        /// Following the policy's own decisions under any failure sequence:
        /// no RetryOn after an unknown outcome, never more than max_attempts
        /// sends, never a retry scheduled too close to (or past) the deadline.
        #[test]
        fn retry_bounds_hold(
            max_attempts in 0u32..12,
            base in 0u64..500,
            cap in 0u64..5000,
            min_attempt in 0u64..1000,
            candidates in 0usize..5,
            start in 0u64..10_000,
            budget in 0u64..20_000,
            seed in any::<u64>(),
            failures in proptest::collection::vec(failure(), 1..20),
        ) {
            let p = RetryPolicy::new(max_attempts, Duration::from_millis(base), Duration::from_millis(cap), Duration::from_millis(min_attempt));
            let deadline = Millis(start + budget);
            let mut rng = SplitMix64::new(seed);
            let mut now = Millis(start);
            let mut attempt = Attempt::first(0, candidates);
            let mut sends = 1u32;
            for f in failures {
                match p.decide(attempt, f, now, deadline, rng.next_u64()) {
                    RetryDecision::RetryOn(r) => {
                        prop_assert_eq!(f, SendFailure::NotSent, "retry after {:?}", f);
                        prop_assert!(r.not_before >= now);
                        prop_assert!(r.not_before.plus_ms(min_attempt) <= deadline);
                        prop_assert!(r.not_before < deadline || min_attempt == 0 && r.not_before == deadline);
                        prop_assert_eq!(r.attempt.number, attempt.number + 1);
                        prop_assert!(candidates == 0 || r.attempt.candidate < candidates);
                        sends += 1;
                        prop_assert!(sends <= p.max_attempts() && sends <= MAX_ATTEMPTS_LIMIT);
                        attempt = r.attempt;
                        now = r.not_before;
                    }
                    RetryDecision::Reverse => {
                        prop_assert_eq!(f, SendFailure::OutcomeUnknown);
                        break;
                    }
                    RetryDecision::GiveUp(code) => {
                        prop_assert_ne!(f, SendFailure::OutcomeUnknown);
                        if f == SendFailure::NotSent {
                            prop_assert_eq!(code, ResponseCode::BANK_UNAVAILABLE);
                        }
                        break;
                    }
                }
            }
        }
    }
}
