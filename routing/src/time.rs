//! Time as the caller sees it: a monotonic millisecond count since an epoch
//! the caller picks (process start, a simulation's zero). Routing never reads
//! a clock; every decision that depends on time takes a [`Millis`].

use std::fmt;
use std::time::Duration;

/// A point in time: milliseconds on the caller's monotonic clock.
///
/// Arithmetic saturates: a deadline far in the future never wraps into the past.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// The caller's epoch.
    pub const ZERO: Millis = Millis(0);

    /// Milliseconds since the caller's epoch.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(duration_ms(d)))
    }

    /// `self + ms`, saturating at the end of time.
    pub const fn plus_ms(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Whole milliseconds in `d`, saturating at `u64::MAX`.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis(u64::MAX - 1).plus_ms(10), Millis(u64::MAX));
        assert_eq!(Millis(5).saturating_add(Duration::MAX), Millis(u64::MAX));
        assert_eq!(Millis(5).saturating_since(Millis(9)), Duration::ZERO);
        assert_eq!(
            Millis(9).saturating_since(Millis(5)),
            Duration::from_millis(4)
        );
    }
}
