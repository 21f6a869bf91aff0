//! Concurrency limit per bank link: how many requests may be outstanding at
//! the bank at once. Protects a slow bank (and our memory) from an unbounded
//! pile-up; when the limit is reached the next candidate is tried instead.

/// Largest `max_in_flight` any link may be configured with.
pub const MAX_IN_FLIGHT_PER_LINK: u32 = 65_536;

/// A counter of requests in flight to one bank link, never above its bound
/// and never below zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    max: u32,
    in_flight: u32,
}

/// Proof that one unit of a [`ConcurrencyLimit`] was taken. Hand it back with
/// [`ConcurrencyLimit::release`] exactly once; it cannot be copied, so it
/// cannot be released twice. The switch should release it from a drop guard
/// so that a cancelled task does not leak capacity.
#[must_use = "a permit that is never released shrinks the limit for good"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    _private: (),
}

impl ConcurrencyLimit {
    /// A limit of `max` concurrent requests, clamped to
    /// `1..=MAX_IN_FLIGHT_PER_LINK` (configuration validation refuses values
    /// outside that range before they get here).
    pub fn new(max: u32) -> Self {
        ConcurrencyLimit {
            max: max.clamp(1, MAX_IN_FLIGHT_PER_LINK),
            in_flight: 0,
        }
    }

    /// Take one unit if any is free.
    pub fn try_acquire(&mut self) -> Option<Permit> {
        if self.in_flight >= self.max {
            return None;
        }
        self.in_flight += 1;
        Some(Permit { _private: () })
    }

    /// Give back a unit taken by [`try_acquire`](Self::try_acquire).
    pub fn release(&mut self, permit: Permit) {
        let Permit { _private: () } = permit;
        debug_assert!(self.in_flight > 0, "permit released to an idle limit");
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Change the bound (configuration reload). Requests already in flight
    /// above a lowered bound finish normally; no new ones start until the
    /// count is back under it.
    pub fn set_max(&mut self, max: u32) {
        self.max = max.clamp(1, MAX_IN_FLIGHT_PER_LINK);
    }

    /// Whether [`try_acquire`](Self::try_acquire) would succeed now.
    pub fn has_capacity(&self) -> bool {
        self.in_flight < self.max
    }

    /// Requests in flight now (for metrics).
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The configured bound.
    pub fn max(&self) -> u32 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn acquires_up_to_the_bound_then_refuses() {
        let mut l = ConcurrencyLimit::new(2);
        let a = l.try_acquire().unwrap();
        let b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        assert!(!l.has_capacity());
        l.release(a);
        assert_eq!(l.in_flight(), 1);
        let c = l.try_acquire().unwrap();
        l.release(b);
        l.release(c);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn bound_is_clamped() {
        assert_eq!(ConcurrencyLimit::new(0).max(), 1);
        assert_eq!(
            ConcurrencyLimit::new(u32::MAX).max(),
            MAX_IN_FLIGHT_PER_LINK
        );
    }

    #[test]
    fn lowering_the_bound_drains_before_admitting() {
        let mut l = ConcurrencyLimit::new(3);
        let p: Vec<_> = (0..3).map(|_| l.try_acquire().unwrap()).collect();
        l.set_max(1);
        let mut p = p.into_iter();
        l.release(p.next().unwrap());
        assert!(l.try_acquire().is_none(), "2 in flight over a bound of 1");
        l.release(p.next().unwrap());
        assert!(l.try_acquire().is_none(), "1 in flight at a bound of 1");
        l.release(p.next().unwrap());
        let q = l.try_acquire().unwrap();
        l.release(q);
    }

    proptest! {
        /// Random interleavings of acquire and release never exceed the bound,
        /// never go negative, and always account for every permit.
        #[test]
        fn never_exceeds_bound(max in 1u32..16, ops in proptest::collection::vec(any::<bool>(), 0..400)) {
            let mut l = ConcurrencyLimit::new(max);
            let mut held = Vec::new();
            for acquire in ops {
                if acquire {
                    match l.try_acquire() {
                        Some(p) => held.push(p),
                        None => prop_assert_eq!(held.len() as u32, max),
                    }
                } else if let Some(p) = held.pop() {
                    l.release(p);
                }
                prop_assert!(l.in_flight() <= max);
                prop_assert_eq!(l.in_flight() as usize, held.len());
            }
        }
    }
}
