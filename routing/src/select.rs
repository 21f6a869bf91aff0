//! Health-aware selection with fail-over: of a route's ordered candidates,
//! take the first whose circuit breaker admits a request and whose
//! concurrency limit has room. Open circuits are skipped; when nothing is
//! available the answer is 91 (destination bank unavailable).
//!
//! [`HealthTable`] holds one breaker and one concurrency limit per link of a
//! [`Router`](crate::Router). A successful selection returns a [`Lease`]
//! holding both admissions; settle it with [`HealthTable::settle`] once the
//! attempt's fate is known.

use fps_codecs::model::ResponseCode;

use crate::breaker::{Admission, BreakerSettings, BreakerState, BreakerTicket, CircuitBreaker};
use crate::limit::{ConcurrencyLimit, Permit};
use crate::route::LinkId;
use crate::time::Millis;

/// Every candidate was refused. Counts say why, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error(
    "destination unavailable: {open} link(s) open-circuited, {probes_busy} half-open with probes busy, {saturated} at their concurrency limit"
)]
pub struct Unavailable {
    /// Candidates whose breaker is open and cooling down.
    pub open: usize,
    /// Candidates half-open with every probe slot taken.
    pub probes_busy: usize,
    /// Candidates whose concurrency limit is reached.
    pub saturated: usize,
}

impl Unavailable {
    /// Always 91: the destination is known but cannot be reached now.
    pub fn response_code(&self) -> ResponseCode {
        ResponseCode::BANK_UNAVAILABLE
    }

    fn count(&mut self, status: CandidateStatus) {
        match status.admission {
            Admission::Open => self.open += 1,
            Admission::ProbesBusy => self.probes_busy += 1,
            Admission::Normal | Admission::Probe => self.saturated += 1,
        }
    }
}

/// A candidate's health at one instant, as selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidateStatus {
    /// What its breaker would do with a request now.
    pub admission: Admission,
    /// Whether its concurrency limit has room.
    pub has_capacity: bool,
}

impl CandidateStatus {
    /// Whether a request may be sent to this candidate now.
    pub fn is_available(&self) -> bool {
        self.admission.admits() && self.has_capacity
    }
}

/// Pure selection: index of the first available candidate, in order.
pub fn choose(statuses: impl IntoIterator<Item = CandidateStatus>) -> Result<usize, Unavailable> {
    let mut why = Unavailable::default();
    for (i, s) in statuses.into_iter().enumerate() {
        if s.is_available() {
            return Ok(i);
        }
        why.count(s);
    }
    Err(why)
}

/// Breaker and concurrency limit of one link.
#[derive(Debug, Clone)]
pub struct LinkHealth {
    breaker: CircuitBreaker,
    limit: ConcurrencyLimit,
}

impl LinkHealth {
    /// A healthy, idle link.
    pub fn new(breaker: BreakerSettings, max_in_flight: u32) -> Self {
        LinkHealth {
            breaker: CircuitBreaker::new(breaker),
            limit: ConcurrencyLimit::new(max_in_flight),
        }
    }

    /// The link's circuit breaker (state for metrics).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The link's concurrency limit (in-flight count for metrics).
    pub fn limit(&self) -> &ConcurrencyLimit {
        &self.limit
    }

    /// The link's status at `now`.
    pub fn status(&self, now: Millis) -> CandidateStatus {
        CandidateStatus {
            admission: self.breaker.admission(now),
            has_capacity: self.limit.has_capacity(),
        }
    }
}

/// What happened to an attempt, as far as the link's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOutcome {
    /// The bank answered (approval or decline alike): the link works.
    Answered,
    /// Connect or write failed, or no answer before the timeout.
    Failed,
    /// Never attempted for a reason of our own (e.g. the deadline passed
    /// before the write): free the slots without judging the link.
    NotAttempted,
}

/// An admitted attempt on one link: a concurrency permit plus a breaker
/// ticket. Must be handed back to [`HealthTable::settle`] exactly once.
#[must_use = "a lease that is never settled leaks a concurrency slot"]
#[derive(Debug)]
pub struct Lease {
    link: LinkId,
    candidate: usize,
    permit: Permit,
    ticket: BreakerTicket,
}

impl Lease {
    /// The chosen link.
    pub fn link(&self) -> LinkId {
        self.link
    }

    /// Position of the chosen link among the route's candidates (0 = primary).
    pub fn candidate(&self) -> usize {
        self.candidate
    }

    /// Whether this attempt is a half-open probe of a recovering link.
    pub fn is_probe(&self) -> bool {
        self.ticket.is_probe()
    }
}

/// Health of every link of one router: indexed by [`LinkId`].
#[derive(Debug, Clone, Default)]
pub struct HealthTable {
    links: Vec<LinkHealth>,
}

impl HealthTable {
    /// A table of healthy, idle links, one per entry of `max_in_flight`.
    pub fn new(breaker: BreakerSettings, max_in_flight: &[u32]) -> Self {
        HealthTable {
            links: max_in_flight
                .iter()
                .map(|m| LinkHealth::new(breaker, *m))
                .collect(),
        }
    }

    /// Admit an attempt on the first available of `candidates`, trying them
    /// in order from position `start` and wrapping around (so a retry moves
    /// on to the next candidate before coming back to earlier ones).
    pub fn acquire(
        &mut self,
        candidates: &[LinkId],
        start: usize,
        now: Millis,
    ) -> Result<Lease, Unavailable> {
        let n = candidates.len();
        let start = if n == 0 { 0 } else { start % n };
        let mut why = Unavailable::default();
        for candidate in (start..n).chain(0..start) {
            let link = candidates[candidate];
            let Some(h) = self.links.get_mut(link.index()) else {
                // A link of another router (a lease outliving a reload): skip it.
                why.open += 1;
                continue;
            };
            let status = h.status(now);
            if !status.is_available() {
                why.count(status);
                continue;
            }
            let Some(permit) = h.limit.try_acquire() else {
                why.saturated += 1;
                continue;
            };
            match h.breaker.try_acquire(now) {
                Some(ticket) => {
                    return Ok(Lease {
                        link,
                        candidate,
                        permit,
                        ticket,
                    })
                }
                None => {
                    // `status` said the breaker admits; kept for safety.
                    h.limit.release(permit);
                    why.open += 1;
                }
            }
        }
        Err(why)
    }

    /// Report how an attempt ended and free its slots.
    pub fn settle(&mut self, lease: Lease, outcome: LinkOutcome, now: Millis) {
        let Lease {
            link,
            permit,
            ticket,
            ..
        } = lease;
        let Some(h) = self.links.get_mut(link.index()) else {
            return;
        };
        h.limit.release(permit);
        match outcome {
            LinkOutcome::Answered => h.breaker.on_success(ticket, now),
            LinkOutcome::Failed => h.breaker.on_failure(ticket, now),
            LinkOutcome::NotAttempted => h.breaker.release(ticket),
        }
    }

    /// Status of each of `candidates` at `now`, in order.
    pub fn statuses<'a>(
        &'a self,
        candidates: &'a [LinkId],
        now: Millis,
    ) -> impl Iterator<Item = CandidateStatus> + 'a {
        candidates
            .iter()
            .map(move |l| match self.links.get(l.index()) {
                Some(h) => h.status(now),
                None => CandidateStatus {
                    admission: Admission::Open,
                    has_capacity: false,
                },
            })
    }

    /// Health of one link.
    pub fn link(&self, link: LinkId) -> Option<&LinkHealth> {
        self.links.get(link.index())
    }

    /// Every link with its health, for metrics.
    pub fn iter(&self) -> impl Iterator<Item = (LinkId, &LinkHealth)> {
        self.links
            .iter()
            .enumerate()
            // The router bounds links to MAX_LINKS, well inside u16.
            .map(|(i, h)| (LinkId(i as u16), h))
    }

    /// Breaker state code (0 closed, 1 open, 2 half-open) of one link.
    pub fn state_code(&self, link: LinkId) -> Option<u8> {
        self.link(link).map(|h| h.breaker.state_code())
    }

    /// Apply new breaker settings and limits (configuration reload with the
    /// same links); states and in-flight counts are kept.
    pub fn reconfigure(&mut self, breaker: BreakerSettings, max_in_flight: &[u32]) {
        for (h, m) in self.links.iter_mut().zip(max_in_flight) {
            h.breaker.set_settings(breaker);
            h.limit.set_max(*m);
        }
    }

    /// Number of links.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether the table has no links.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Whether `link` is open-circuited at `now` (cooling down).
    pub fn is_open(&self, link: LinkId, now: Millis) -> bool {
        self.link(link).is_some_and(
            |h| matches!(h.breaker.state(), BreakerState::Open { until } if now < until),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_threshold: 1,
            cool_down: Duration::from_millis(100),
            max_cool_down: Duration::from_millis(100),
            cool_down_multiplier: 1,
            half_open_probes: 1,
        }
    }

    fn trip(t: &mut HealthTable, link: LinkId, now: Millis) {
        let lease = t.acquire(&[link], 0, now).unwrap();
        t.settle(lease, LinkOutcome::Failed, now);
    }

    #[test]
    fn fails_over_past_open_and_saturated_links_then_answers_91() {
        let mut t = HealthTable::new(settings(), &[1, 1, 1]);
        let c = [LinkId(0), LinkId(1), LinkId(2)];
        let now = Millis(0);
        trip(&mut t, LinkId(0), now);
        assert!(t.is_open(LinkId(0), now));
        let a = t.acquire(&c, 0, now).unwrap();
        assert_eq!((a.link(), a.candidate()), (LinkId(1), 1));
        let b = t.acquire(&c, 0, now).unwrap();
        assert_eq!(b.link(), LinkId(2));
        let err = t.acquire(&c, 0, now).unwrap_err();
        assert_eq!(
            err,
            Unavailable {
                open: 1,
                probes_busy: 0,
                saturated: 2
            }
        );
        assert_eq!(err.response_code(), ResponseCode::BANK_UNAVAILABLE);
        t.settle(a, LinkOutcome::Answered, now);
        t.settle(b, LinkOutcome::NotAttempted, now);
        assert_eq!(t.link(LinkId(1)).unwrap().limit().in_flight(), 0);
    }

    #[test]
    fn start_position_wraps_around() {
        let mut t = HealthTable::new(settings(), &[4, 4, 4]);
        let c = [LinkId(0), LinkId(1), LinkId(2)];
        let l = t.acquire(&c, 2, Millis(0)).unwrap();
        assert_eq!(l.link(), LinkId(2));
        t.settle(l, LinkOutcome::Failed, Millis(0));
        let l = t.acquire(&c, 2, Millis(0)).unwrap();
        assert_eq!(l.link(), LinkId(0));
        t.settle(l, LinkOutcome::Answered, Millis(0));
        assert!(t.acquire(&[], 0, Millis(0)).is_err());
    }

    #[test]
    fn recovered_link_is_probed_then_preferred_again() {
        let mut t = HealthTable::new(settings(), &[4, 4]);
        let c = [LinkId(0), LinkId(1)];
        trip(&mut t, LinkId(0), Millis(0));
        let l = t.acquire(&c, 0, Millis(50)).unwrap();
        assert_eq!(l.link(), LinkId(1));
        t.settle(l, LinkOutcome::Answered, Millis(50));
        let probe = t.acquire(&c, 0, Millis(100)).unwrap();
        assert!(probe.is_probe() && probe.link() == LinkId(0));
        assert_eq!(t.state_code(LinkId(0)), Some(2));
        // While the probe is out, traffic keeps flowing to the secondary.
        let other = t.acquire(&c, 0, Millis(101)).unwrap();
        assert_eq!(other.link(), LinkId(1));
        t.settle(probe, LinkOutcome::Answered, Millis(102));
        t.settle(other, LinkOutcome::Answered, Millis(102));
        assert_eq!(t.state_code(LinkId(0)), Some(0));
        let l = t.acquire(&c, 0, Millis(103)).unwrap();
        assert_eq!(l.link(), LinkId(0));
        t.settle(l, LinkOutcome::Answered, Millis(103));
    }

    #[test]
    fn pure_choice_agrees() {
        let s = |admission, has_capacity| CandidateStatus {
            admission,
            has_capacity,
        };
        assert_eq!(
            choose([s(Admission::Open, true), s(Admission::Probe, true)]),
            Ok(1)
        );
        assert_eq!(
            choose([s(Admission::ProbesBusy, true), s(Admission::Normal, false)]),
            Err(Unavailable {
                open: 0,
                probes_busy: 1,
                saturated: 1
            })
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(usize),
        Settle(usize, u8),
        Advance(u64),
    }

    proptest! {
        /// Under any sequence of attempts, results and time, selection never
        /// hands out an open-circuited or saturated link, never skips an
        /// available earlier candidate, and reports 91 only when no candidate
        /// is available.
        #[test]
        fn never_selects_an_unavailable_candidate(
            limits in proptest::collection::vec(1u32..3, 1..5),
            ops in proptest::collection::vec(prop_oneof![
                3 => (0usize..8).prop_map(Op::Acquire),
                3 => (any::<usize>(), 0u8..3).prop_map(|(i, o)| Op::Settle(i, o)),
                1 => (0u64..120).prop_map(Op::Advance),
            ], 0..200),
        ) {
            let mut t = HealthTable::new(settings(), &limits);
            let candidates: Vec<LinkId> = (0..limits.len() as u16).map(LinkId).collect();
            let mut now = Millis(0);
            let mut held: Vec<Lease> = Vec::new();
            for op in ops {
                match op {
                    Op::Acquire(start) => {
                        let before: Vec<CandidateStatus> = t.statuses(&candidates, now).collect();
                        let n = candidates.len();
                        let order: Vec<usize> = (0..n).map(|k| (start % n + k) % n).collect();
                        match t.acquire(&candidates, start, now) {
                            Ok(lease) => {
                                let i = lease.candidate();
                                prop_assert!(before[i].is_available(), "chose {:?}", before[i]);
                                prop_assert!(before[i].admission != Admission::Open);
                                let pos = order.iter().position(|k| *k == i).unwrap();
                                prop_assert!(order[..pos].iter().all(|k| !before[*k].is_available()));
                                held.push(lease);
                            }
                            Err(why) => {
                                prop_assert!(before.iter().all(|s| !s.is_available()));
                                prop_assert_eq!(why.open + why.probes_busy + why.saturated, n);
                            }
                        }
                    }
                    Op::Settle(i, o) if !held.is_empty() => {
                        let lease = held.swap_remove(i % held.len());
                        let outcome = [LinkOutcome::Answered, LinkOutcome::Failed, LinkOutcome::NotAttempted][usize::from(o)];
                        t.settle(lease, outcome, now);
                    }
                    Op::Advance(ms) => now = now.plus_ms(ms),
                    Op::Settle(..) => {}
                }
                for (id, h) in t.iter() {
                    let mine = held.iter().filter(|l| l.link() == id).count() as u32;
                    prop_assert_eq!(h.limit().in_flight(), mine);
                    prop_assert!(mine <= limits[id.index()]);
                }
            }
        }
    }
}
