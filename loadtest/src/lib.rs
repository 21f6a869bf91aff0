//! # fps-loadtest
//!
//! Owns the tools that measure fps-switch without writing code: the
//! open-loop load generator ([`schedule`], [`report`], [`load`]), the bank
//! simulators and the demo orchestration. Scheduling and reporting are
//! sans-I/O and unit-tested; [`load`] drives them over sockets, each
//! request leaving at its intended time to within the kernel's timer slack
//! ([`pacer`]: a timerfd, not tokio's millisecond timer).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod banksim;
pub mod chaos;
pub mod load;
pub mod pacer;
pub mod pki;
pub mod reconcile;
pub mod relay;
pub mod report;
pub mod schedule;
pub mod tls;
