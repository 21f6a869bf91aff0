//! Seeded, reproducible draws of each answer's latency and fault: no I/O,
//! no clock. One [`SplitMix64`] per bank, seeded from the config's seed and
//! the bank's name, so a bank's sequence of draws does not depend on the
//! other banks.

use std::time::Duration;

use super::config::{Faults, Latency, MAX_DELAY_MS};

/// What happens to one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Never answered.
    Drop,
    /// Answered after `late_ms`.
    Late,
    /// Answered twice.
    Duplicate,
    /// The connection is closed instead of answering.
    Disconnect,
    /// A malformed frame is written instead of the answer.
    Garbage,
    /// The answer's MAC or signature is corrupted (banks with `auth`).
    BadMac,
}

impl Fault {
    /// Every fault, in the order their percentages are drawn (a new one
    /// goes last, so older configs draw as before).
    pub const ALL: [Fault; 6] = [
        Fault::Drop,
        Fault::Late,
        Fault::Duplicate,
        Fault::Disconnect,
        Fault::Garbage,
        Fault::BadMac,
    ];

    /// Name in config and in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Drop => "drop",
            Fault::Late => "late",
            Fault::Duplicate => "duplicate",
            Fault::Disconnect => "disconnect",
            Fault::Garbage => "garbage",
            Fault::BadMac => "bad_mac",
        }
    }

    fn percent(self, f: &Faults) -> f64 {
        match self {
            Fault::Drop => f.drop,
            Fault::Late => f.late,
            Fault::Duplicate => f.duplicate,
            Fault::Disconnect => f.disconnect,
            Fault::Garbage => f.garbage,
            Fault::BadMac => f.bad_mac,
        }
    }
}

/// The draw for one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// Delay before the answer (or the fault) takes effect.
    pub delay: Duration,
    /// The fault applied, if any.
    pub fault: Option<Fault>,
}

/// SplitMix64: tiny, fast, and good enough for simulation draws.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The generator of one bank: the config seed mixed with the bank's name.
    pub fn for_bank(seed: u64, name: &str) -> Self {
        // FNV-1a of the name keeps a bank's stream stable when banks are
        // added or reordered.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        SplitMix64(seed ^ h)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Draw the latency and fault of one answer.
    pub fn draw(&mut self, latency: &Latency, faults: &Faults) -> Draw {
        // Always two draws per answer, whatever the settings, so changing
        // one percentage does not shift every later latency.
        let fault_u = self.unit() * 100.0;
        let ms = self.latency_ms(latency);
        let mut edge = 0.0;
        let fault = Fault::ALL.into_iter().find(|f| {
            edge += f.percent(faults);
            fault_u < edge
        });
        let delay_ms = match fault {
            Some(Fault::Late) => faults.late_ms,
            _ => ms,
        };
        Draw {
            delay: Duration::from_millis(delay_ms.min(MAX_DELAY_MS)),
            fault,
        }
    }

    fn latency_ms(&mut self, latency: &Latency) -> u64 {
        let u1 = self.unit();
        let u2 = self.unit();
        let ms = match *latency {
            Latency::Fixed { ms } => return ms.min(MAX_DELAY_MS),
            Latency::Uniform { min_ms, max_ms } => {
                let span = max_ms.saturating_sub(min_ms).saturating_add(1);
                return min_ms
                    .saturating_add(self.next_u64() % span)
                    .min(MAX_DELAY_MS);
            }
            Latency::Lognormal { median_ms, sigma } => {
                // Box-Muller: one standard normal from two uniforms; 1 - u1
                // is in (0, 1] so the logarithm is finite.
                let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                median_ms * (sigma * z).exp()
            }
        };
        if ms.is_finite() {
            (ms.max(0.0) as u64).min(MAX_DELAY_MS)
        } else {
            MAX_DELAY_MS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(drop: f64, late: f64, duplicate: f64) -> Faults {
        Faults {
            drop,
            late,
            duplicate,
            late_ms: 777,
            ..Faults::default()
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let lat = Latency::Lognormal {
            median_ms: 5.0,
            sigma: 0.5,
        };
        let f = faults(10.0, 10.0, 10.0);
        let mut a = SplitMix64::for_bank(42, "bank003");
        let mut b = SplitMix64::for_bank(42, "bank003");
        let mut c = SplitMix64::for_bank(42, "bank004");
        let da: Vec<_> = (0..100).map(|_| a.draw(&lat, &f)).collect();
        let db: Vec<_> = (0..100).map(|_| b.draw(&lat, &f)).collect();
        let dc: Vec<_> = (0..100).map(|_| c.draw(&lat, &f)).collect();
        assert_eq!(da, db);
        assert_ne!(da, dc);
    }

    #[test]
    fn percentages_are_roughly_honoured() {
        let mut r = SplitMix64::new(1);
        let f = faults(10.0, 20.0, 0.0);
        let lat = Latency::Fixed { ms: 3 };
        let n = 20_000;
        let draws: Vec<_> = (0..n).map(|_| r.draw(&lat, &f)).collect();
        let count = |want| draws.iter().filter(|d| d.fault == want).count() as f64 / n as f64;
        assert!((count(Some(Fault::Drop)) - 0.10).abs() < 0.01);
        assert!((count(Some(Fault::Late)) - 0.20).abs() < 0.01);
        assert_eq!(count(Some(Fault::Duplicate)), 0.0);
        for d in &draws {
            let want = if d.fault == Some(Fault::Late) { 777 } else { 3 };
            assert_eq!(d.delay, Duration::from_millis(want));
        }
    }

    #[test]
    fn hundred_percent_always_applies_and_latencies_stay_in_range() {
        let mut r = SplitMix64::new(9);
        let f = Faults {
            duplicate: 100.0,
            ..Faults::default()
        };
        let lat = Latency::Uniform {
            min_ms: 2,
            max_ms: 4,
        };
        for _ in 0..1000 {
            let d = r.draw(&lat, &f);
            assert_eq!(d.fault, Some(Fault::Duplicate));
            assert!((2..=4).contains(&(d.delay.as_millis() as u64)));
        }
        let lat = Latency::Lognormal {
            median_ms: 10.0,
            sigma: 1.0,
        };
        let mut v: Vec<u64> = (0..2001)
            .map(|_| r.draw(&lat, &Faults::default()).delay.as_millis() as u64)
            .collect();
        v.sort_unstable();
        assert!((7..=13).contains(&v[1000]), "median {}", v[1000]);
    }
}
