//! The per-seed fault schedule: which faults happen, where and when. Drawn
//! once from the seed's generator before the run, printed on failure.

use std::fmt;

use fps_routing::{Millis, SplitMix64};

use super::{BANK_CODES, HEAL_AT, LINKS};

/// One kind of fault. Window faults apply during `[from, to)`; point faults
/// (link reset, crash, clock jump) happen at `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Bank answers are lost, each with this chance in a thousand.
    AnswerDropped { permille: u64 },
    /// Messages (answers, sometimes requests) are held past the attempt
    /// deadline: late approvals and late declines.
    AnswerLate { permille: u64 },
    /// Bank answers are delivered twice.
    AnswerDuplicated { permille: u64 },
    /// Answers get extra random latency, so they overtake each other.
    AnswersReordered { jitter_ms: u64 },
    /// The link drops its connection (in-flight messages lost) and
    /// reconnects after `down_ms`.
    LinkReset { link: usize, down_ms: u64 },
    /// The bank is out: it refuses connections, or (black hole) accepts
    /// requests and never processes them.
    BankOutage { bank: usize, black_hole: bool },
    /// The switch process dies and restarts after `down_ms`. `mid_write`:
    /// it dies during one of its next journal appends (the effects after
    /// it never happen); `torn`: the record being written is left torn.
    SwitchCrash {
        torn: bool,
        mid_write: bool,
        down_ms: u64,
    },
    /// The HSM fails to sign requests (they fail before sending) or to
    /// verify answers (never trusted, so never approved).
    HsmError { sign: bool, permille: u64 },
    /// Every journal append (and key-store read) fails.
    JournalWriteFailure,
    /// The switch's clock jumps forward.
    ClockJump { ms: u64 },
    /// The bank refuses every reversal (or fails every status inquiry), so
    /// items are repeated and then parked.
    ReversalRejected { bank: usize },
}

/// Every fault kind, for coverage reports.
pub const KINDS: [&str; 11] = [
    "AnswerDropped",
    "AnswerLate",
    "AnswerDuplicated",
    "AnswersReordered",
    "LinkReset",
    "BankOutage",
    "SwitchCrash",
    "HsmError",
    "JournalWriteFailure",
    "ClockJump",
    "ReversalRejected",
];

impl Fault {
    /// The kind's name (one of [`KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::AnswerDropped { .. } => KINDS[0],
            Fault::AnswerLate { .. } => KINDS[1],
            Fault::AnswerDuplicated { .. } => KINDS[2],
            Fault::AnswersReordered { .. } => KINDS[3],
            Fault::LinkReset { .. } => KINDS[4],
            Fault::BankOutage { .. } => KINDS[5],
            Fault::SwitchCrash { .. } => KINDS[6],
            Fault::HsmError { .. } => KINDS[7],
            Fault::JournalWriteFailure => KINDS[8],
            Fault::ClockJump { .. } => KINDS[9],
            Fault::ReversalRejected { .. } => KINDS[10],
        }
    }
}

/// A fault and when it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// Start (or instant, for point faults).
    pub from: Millis,
    /// End of a window fault.
    pub to: Millis,
    /// What.
    pub fault: Fault,
}

/// The faults of one seed.
#[derive(Debug, Clone, Default)]
pub struct FaultSchedule {
    /// In order of start time.
    pub faults: Vec<Scheduled>,
}

impl FaultSchedule {
    /// Draw 2 to 8 faults, each inside `[100ms, HEAL_AT - 500ms)`.
    pub fn draw(rng: &mut SplitMix64) -> Self {
        let n = 2 + rng.next_u64() % 7;
        let mut faults = Vec::new();
        for _ in 0..n {
            let from = 100 + rng.next_u64() % (HEAL_AT.0 - 2_000);
            let len = 100 + rng.next_u64() % 1_400;
            let to = (from + len).min(HEAL_AT.0 - 500);
            let pick = |rng: &mut SplitMix64, n: usize| (rng.next_u64() % n as u64) as usize;
            let fault = match rng.next_u64() % 11 {
                0 => Fault::AnswerDropped {
                    permille: 100 + rng.next_u64() % 600,
                },
                1 => Fault::AnswerLate {
                    permille: 100 + rng.next_u64() % 600,
                },
                2 => Fault::AnswerDuplicated {
                    permille: 100 + rng.next_u64() % 800,
                },
                3 => Fault::AnswersReordered {
                    jitter_ms: 20 + rng.next_u64() % 400,
                },
                4 => Fault::LinkReset {
                    link: pick(rng, LINKS.len()),
                    down_ms: 10 + rng.next_u64() % 1_000,
                },
                5 => Fault::BankOutage {
                    bank: pick(rng, BANK_CODES.len()),
                    black_hole: rng.next_u64() % 2 == 0,
                },
                6 => Fault::SwitchCrash {
                    torn: rng.next_u64() % 2 == 0,
                    mid_write: rng.next_u64() % 2 == 0,
                    down_ms: 20 + rng.next_u64() % 800,
                },
                7 => Fault::HsmError {
                    sign: rng.next_u64() % 2 == 0,
                    permille: 200 + rng.next_u64() % 800,
                },
                8 => Fault::JournalWriteFailure,
                9 => Fault::ClockJump {
                    ms: 200 + rng.next_u64() % 5_000,
                },
                _ => Fault::ReversalRejected {
                    bank: pick(rng, BANK_CODES.len()),
                },
            };
            // Outages and refused reversals last long enough for reversals
            // to run out of attempts and park.
            let to = match fault {
                Fault::BankOutage { .. } | Fault::ReversalRejected { .. } => {
                    (to + 1_500).min(HEAL_AT.0 - 500)
                }
                _ => to,
            };
            faults.push(Scheduled {
                from: Millis(from),
                to: Millis(to),
                fault,
            });
        }
        faults.sort_by_key(|s| s.from);
        FaultSchedule { faults }
    }

    /// Window faults in force at `now`.
    pub fn active(&self, now: Millis) -> impl Iterator<Item = &Fault> + '_ {
        self.faults
            .iter()
            .filter(move |s| s.from <= now && now < s.to)
            .map(|s| &s.fault)
    }

    /// The largest chance (per thousand) of the window fault selected by `f`.
    pub fn permille(&self, now: Millis, f: impl Fn(&Fault) -> Option<u64>) -> u64 {
        self.active(now).filter_map(f).max().unwrap_or(0)
    }

    /// Whether the journal fails at `now`.
    pub fn journal_failing(&self, now: Millis) -> bool {
        self.active(now)
            .any(|f| matches!(f, Fault::JournalWriteFailure))
    }

    /// End of the journal failure window containing `now`, if any.
    pub fn journal_failing_until(&self, now: Millis) -> Option<Millis> {
        self.faults
            .iter()
            .filter(|s| s.fault == Fault::JournalWriteFailure && s.from <= now && now < s.to)
            .map(|s| s.to)
            .max()
    }

    /// Whether `bank` is out at `now`, and how: `Some(black_hole)`.
    pub fn bank_out(&self, bank: usize, now: Millis) -> Option<bool> {
        self.active(now).find_map(|f| match *f {
            Fault::BankOutage {
                bank: b,
                black_hole,
            } if b == bank => Some(black_hole),
            _ => None,
        })
    }

    /// Whether `bank` refuses reversals at `now`.
    pub fn reversals_rejected(&self, bank: usize, now: Millis) -> bool {
        self.active(now)
            .any(|f| matches!(*f, Fault::ReversalRejected { bank: b } if b == bank))
    }
}

impl fmt::Display for FaultSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fault schedule ({} faults):", self.faults.len())?;
        for s in &self.faults {
            writeln!(f, "  {:>6}..{:<6} {:?}", s.from.0, s.to.0, s.fault)?;
        }
        Ok(())
    }
}
