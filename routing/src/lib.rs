//! # fps-routing
//!
//! Deterministic, sans-I/O routing logic that the switch daemon drives:
//!
//! - [`route`]: destination bank by F100 bank code, else FPS proxy id through
//!   the [`proxy`] directory, else PAN BIN through the [`bin`] table; each
//!   routed bank code has ordered candidate links (primary, then secondaries);
//! - [`select`]: health-aware choice of the first available candidate;
//! - [`breaker`]: a circuit breaker per link (closed / open / half-open);
//! - [`limit`]: a concurrency limit per link;
//! - [`retry`]: what to do after a failed send (`NotSent` may be retried
//!   elsewhere, `OutcomeUnknown` is reversed, `Rejected` is final);
//! - [`config`]: the `[routing]` configuration section, validated with every
//!   error reported at its key path, built into a [`Router`];
//! - [`idempotency`]: one bank transaction per upstream key (F123 or
//!   F32+F7+F11+F37, scoped by client): duplicates get the original outcome,
//!   in-flight duplicates wait, different content gets 94; bounded memory
//!   with storage lookups for evicted keys;
//! - [`reversal`]: the store-and-forward queue that reverses (or inquires and
//!   cancels) outcome-unknown transactions until the bank acknowledges, then
//!   parks them for manual handling.
//!
//! Nothing here does I/O, spawns threads, or reads a clock: time comes in as
//! [`Millis`] and randomness (jitter) as a `u64`, so the switch can simulate
//! thousands of failure seeds exactly. Every table and list has a named bound.
//! No error or `Debug` output carries a PAN, account or proxy value.
//!
//! ## Typical use by the switch
//!
//! ```
//! use fps_codecs::model::{BankCode, Mti, Transaction};
//! use fps_routing::{LinkOutcome, Millis, ProxyDirectory, RoutingConfig};
//!
//! let cfg: RoutingConfig = toml::from_str(r#"
//!     [[routes]]
//!     bank_code = "004"
//!     primary = "hsbc"
//!     secondaries = ["hsbc-dr"]
//! "#).unwrap();
//! let router = cfg.build(&["hsbc", "hsbc-dr"]).unwrap();
//! let mut health = router.new_health();
//! let proxies = ProxyDirectory::parse("MOBN:+852-90000001,004\n").unwrap();
//!
//! let mut txn = Transaction::new(Mti::CREDIT_TRANSFER);
//! txn.receiving_bank = Some(BankCode::parse(b"004").unwrap());
//! let routed = router.route(&txn, &proxies, &mut health, Millis(0)).unwrap();
//! assert_eq!(router.link_name(routed.lease.link()).unwrap().as_str(), "hsbc");
//! // ... send, then report how it went:
//! health.settle(routed.lease, LinkOutcome::Answered, Millis(12));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bin;
pub mod breaker;
pub mod config;
pub mod idempotency;
pub mod limit;
pub mod proxy;
pub mod retry;
pub mod reversal;
pub mod route;
pub mod router;
pub mod select;
pub mod time;

pub use bin::{BinRange, BinTable};
pub use breaker::{Admission, BreakerSettings, BreakerState, BreakerTicket, CircuitBreaker};
pub use config::{ConfigError, ConfigErrors, RoutingConfig};
pub use idempotency::{
    Claim, ClientScope, Fingerprint, IdempotencyError, IdempotencyIndex, Lookup, LookupTicket,
    Outcome, RequestKey, StoredKey, Ticket, WaiterToken,
};
pub use limit::{ConcurrencyLimit, Permit};
pub use proxy::{ProxyDirectory, ProxyDirectoryError, ProxyEntry};
pub use retry::{Attempt, Retry, RetryDecision, RetryPolicy, SendFailure, SplitMix64};
pub use reversal::{
    AttemptResult, EnqueueError, ReversalAttempt, ReversalConfig, ReversalId, ReversalItem,
    ReversalMessage, ReversalQueue, ReversalStatus, ReversalStyle,
};
pub use route::{BankId, BankRoute, LinkId, RouteDecision, RouteError, RouteSource, RouteTable};
pub use router::{Routed, Router};
pub use select::{
    choose, CandidateStatus, HealthTable, Lease, LinkHealth, LinkOutcome, Unavailable,
};
pub use time::Millis;
