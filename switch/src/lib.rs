//! # fps-switch
//!
//! The payment switch daemon (DESIGN.md): the upstream mTLS listener
//! speaking the canonical ISO 8583 protocol ([`upstream`]), pooled and
//! multiplexed links to banks ([`bank`]), the request [`pipeline`], the
//! admin HTTP endpoints ([`admin`]) and the configuration ([`config`]).
//! Protocol work is done by `fps-codecs`; this crate owns sockets, timers
//! and tasks.
//!
//! Payment safety ([`safety`]): idempotency claims, the durable
//! [`journal`] and the on-disk [`keystore`], the store-and-forward reversal
//! queues, late answers and crash recovery. MACs and signatures of bank
//! messages go through `fps-hsm` ([`bank`]). Routing (bank code, proxy, BIN;
//! breakers and fail-over) is `fps-routing`, driven by [`routing`].
//!
//! Links banks open to the switch (bank-originated traffic, identified by
//! client certificate) are [`bank::inbound`]. Outbound pools grow under
//! load, close links idle above `pool.min` and sign off at shutdown.
//!
//! Process-level choices for a steady request path: transparent huge pages
//! are turned off at start (`main.rs`), one thread runs the current-thread
//! scheduler so frames queued in one pass leave in one write ([`runtime`]),
//! and background threads (key-store
//! commits, metrics upkeep, journal rotation) run at lower priority
//! ([`threads`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod bank;
pub mod clock;
pub mod config;
mod conn;
pub mod journal;
pub mod keystore;
pub mod metrics;
pub mod pipeline;
pub mod routing;
pub mod runtime;
pub mod safety;
pub mod threads;
pub mod tls;
pub mod upstream;

pub use app::{StartError, Switch};
pub use config::Config;
