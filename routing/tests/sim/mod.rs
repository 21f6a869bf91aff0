//! A TigerBeetle-VOPR / quinn-style deterministic simulation of the switch's
//! sans-I/O core, driven entirely by one [`SplitMix64`] per seed.
//!
//! - [`world`]: the virtual clock, the event queue ordered by (time, sequence),
//!   simulated upstream clients, links (with their match-key registries) and
//!   the fault schedule's effects on them;
//! - [`switch`]: a switch core composed from the real routing state machines
//!   (IdempotencyIndex, Router/HealthTable/breakers, RetryPolicy, one
//!   ReversalQueue per bank), journaling before every effect;
//! - [`journal`]: the simulated durable journal (and the key store derived
//!   from it), with write failures, crashes and torn records;
//! - [`bank`]: simulated banks keeping a ledger;
//! - [`faults`]: the per-seed fault schedule;
//! - [`check`]: the invariants checked after each seed.
//!
//! A seed's failure is reported with its seed, its fault schedule and the
//! event trace; `SIM_SEED=N` replays it exactly.

pub mod bank;
pub mod check;
pub mod faults;
pub mod journal;
pub mod switch;
pub mod world;

use fps_codecs::model::{AuthId, ResponseCode};
use fps_routing::{Millis, ReversalMessage};

pub use world::run_seed;

/// Upstream clients (each its own `ClientScope`).
pub const CLIENTS: usize = 3;
/// Original requests (new keys) per seed, before retries.
pub const ORIGINALS: usize = 100;
/// Originals are sent in `[0, TRAFFIC_END)`.
pub const TRAFFIC_END: Millis = Millis(6_000);
/// No client sends anything after this.
pub const CLIENT_STOP: Millis = Millis(12_000);
/// Every fault is over by then; the heal-and-drain phase starts.
pub const HEAL_AT: Millis = Millis(10_000);
/// Every queue must be empty this long after `HEAL_AT`.
pub const DRAIN_BOUND_MS: u64 = 20_000;
/// The upstream client's deadline per request.
pub const CLIENT_DEADLINE_MS: u64 = 3_000;
/// The switch's own budget per request (below the client's deadline).
pub const SWITCH_BUDGET_MS: u64 = 2_500;
/// How long the switch waits for a bank's answer to one attempt.
pub const ATTEMPT_TIMEOUT_MS: u64 = 800;
/// How long the switch waits for the answer to a reversal attempt.
pub const REVERSAL_TIMEOUT_MS: u64 = 400;
/// Idempotency index capacity: small, so eviction and lookups run.
pub const INDEX_CAPACITY: usize = 32;
/// Idempotency retention (clients never retry past it).
pub const RETENTION_MS: u64 = 60_000;
/// Runaway bound on processed events per seed.
pub const MAX_EVENTS: usize = 200_000;

/// Bank codes; index = bank number.
pub const BANK_CODES: [&[u8; 3]; 3] = [b"004", b"012", b"024"];
/// Link names (as configured) and the bank each reaches.
pub const LINKS: [(&str, usize); 5] = [
    ("hsbc", 0),
    ("hsbc-dr", 0),
    ("boc", 1),
    ("boc-2", 1),
    ("hase", 2),
];

/// The switch's end-to-end id of one bank transaction (unique across
/// restarts: it resumes from the journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(pub u64);

/// An upstream request (index into the world's request list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub usize);

/// The key of an upstream request, as the simulation knows it: (client, key
/// number). The switch never sees this; it sees F123 or F32+F7+F11+F37.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// Client number.
    pub scope: usize,
    /// Key number within the client.
    pub key: u32,
}

/// Match key on a link: message class and STAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatchKey {
    /// 2 credit transfer, 4 reversal / advice / cancel, 6 status inquiry.
    pub class: u8,
    /// The switch's per-bank STAN.
    pub stan: u32,
}

/// A message from the switch to a bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToBank {
    /// 0200 credit transfer.
    Credit {
        /// Per-bank STAN.
        stan: u32,
        /// End-to-end id (the bank's reference of the transaction).
        txn: TxnId,
        /// Copied from the upstream request (F32/F37-like provenance).
        origin: Origin,
        /// Amount in minor units.
        amount: u64,
    },
    /// A reversal, advice, status inquiry, cancellation or cancel call.
    Reversal {
        /// Per-bank STAN of this message.
        stan: u32,
        /// The original's end-to-end id.
        txn: TxnId,
        /// What it is.
        message: ReversalMessage,
    },
}

impl ToBank {
    /// The match key the switch registers on the link for it.
    pub fn match_key(&self) -> MatchKey {
        match *self {
            ToBank::Credit { stan, .. } => MatchKey { class: 2, stan },
            ToBank::Reversal {
                stan,
                message: ReversalMessage::StatusInquiry,
                ..
            } => MatchKey { class: 6, stan },
            ToBank::Reversal { stan, .. } => MatchKey { class: 4, stan },
        }
    }
}

/// A bank's answer to a reversal-type message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankReply {
    /// Reversed / cancelled (or already was).
    Acknowledged,
    /// The bank refuses this reversal message (fault): repeat it.
    Rejected,
    /// Original not found or not executed: nothing to reverse.
    NotExecuted,
    /// Status inquiry: the original was executed.
    Executed,
    /// The inquiry itself failed (fault): no information.
    InquiryFailed,
}

/// A message from a bank to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToSwitch {
    /// 0210.
    Credit {
        /// The request's STAN.
        stan: u32,
        /// End-to-end id.
        txn: TxnId,
        /// F39.
        code: ResponseCode,
        /// F38 when approved.
        auth: Option<AuthId>,
    },
    /// Answer to a reversal-type message.
    Reversal {
        /// That message's STAN.
        stan: u32,
        /// The original's end-to-end id.
        txn: TxnId,
        /// What the bank said.
        reply: BankReply,
    },
}

/// Known-bad core behaviours, to prove the checker catches them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Treat an outcome-unknown attempt like a not-sent one: resend it.
    pub resend_unknown_as_new: bool,
    /// After a restart, start STANs from 1 instead of past the journal's.
    pub forget_stans_on_restart: bool,
    /// Forward a late bank answer upstream.
    pub forward_late_answers: bool,
    /// Recovery trusts a torn last record (no checksum check).
    pub trust_torn_records: bool,
}
