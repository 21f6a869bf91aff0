//! Every place the switch reads a clock: wall-clock values it puts in
//! messages it originates (F7), and the monotonic [`Millis`] that routing
//! decisions (breakers, retries) are made against, injected as a
//! [`MonotonicClock`] so tests and simulation can drive it.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use fps_codecs::calendar::civil_from_days;
use fps_codecs::model::{SettlementDate, TransmissionDateTime};
use fps_routing::Millis;

/// Monotonic milliseconds for the sans-I/O routing crate.
pub trait MonotonicClock: Send + Sync + fmt::Debug {
    /// Milliseconds since the clock started; never goes backwards.
    fn now(&self) -> Millis;
}

/// The production clock: tokio's monotonic time since switch start (so a
/// test with `tokio::time::pause()` moves it too).
#[derive(Debug, Clone, Copy)]
pub struct SwitchClock {
    start: tokio::time::Instant,
}

impl SwitchClock {
    /// A clock reading 0 now.
    pub fn start() -> Self {
        SwitchClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl MonotonicClock for SwitchClock {
    fn now(&self) -> Millis {
        // u64 milliseconds cover 584 million years of uptime.
        Millis(self.start.elapsed().as_millis() as u64)
    }
}

/// Hong Kong time, UTC+8, in which FPS business days run.
const HKT_OFFSET_SECS: u64 = 8 * 3_600;

/// F7 `MMDDhhmmss` (UTC) for now.
pub fn transmission_now() -> TransmissionDateTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    TransmissionDateTime::at_unix_secs(secs)
}

/// Today's interbank settlement date (Hong Kong calendar day).
///
/// TODO(settlement): FPS cut-off times and holidays move the settlement date;
/// this is the calendar day in HKT.
pub fn settlement_date_today() -> SettlementDate {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    settlement_date_at(secs)
}

/// The HKT calendar day of a Unix time, as a settlement date.
pub fn settlement_date_at(unix_secs: u64) -> SettlementDate {
    let (year, month, day) = civil_from_days(((unix_secs + HKT_OFFSET_SECS) / 86_400) as i64);
    // Made per request: no formatting, no allocation.
    SettlementDate::from_civil(year, month, day).expect("a real date of years 1970..=9999")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        // (F7 of a Unix time is tested in fps-codecs.)
        // 2024-02-29T16:00:00Z is already 1 March in Hong Kong.
        assert_eq!(settlement_date_at(1_709_222_400).as_str(), "20240301");
    }
}
