//! `fps_hsm_*` metrics through the `metrics` facade. Label values come from
//! closed sets (mechanism names, operation names, error kinds), never from
//! key labels or data.

use std::time::Duration;

use crate::{HsmError, Mechanism};

/// Histogram (seconds) of HSM operation time, labels `mechanism`, `op`.
pub const OP_SECONDS: &str = "fps_hsm_op_seconds";
/// Histogram (seconds) of time requests wait in the queue.
pub const QUEUE_WAIT_SECONDS: &str = "fps_hsm_queue_wait_seconds";
/// Counter of failed requests, labels `kind`, `op`.
pub const ERRORS_TOTAL: &str = "fps_hsm_errors_total";
/// Gauge of requests waiting for a worker.
pub const QUEUE_DEPTH: &str = "fps_hsm_queue_depth";
/// Gauge of open HSM sessions (one per healthy worker).
pub const SESSIONS: &str = "fps_hsm_sessions";
/// Counter of sessions reopened after a loss.
pub const SESSION_REOPENS_TOTAL: &str = "fps_hsm_session_reopens_total";

/// Registers descriptions with the installed recorder (call once at start).
pub fn describe() {
    metrics::describe_histogram!(
        OP_SECONDS,
        metrics::Unit::Seconds,
        "HSM operation time by mechanism and operation"
    );
    metrics::describe_histogram!(
        QUEUE_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "Time HSM requests waited for a worker"
    );
    metrics::describe_counter!(ERRORS_TOTAL, "Failed HSM requests by error kind");
    metrics::describe_gauge!(QUEUE_DEPTH, "HSM requests waiting for a worker");
    metrics::describe_gauge!(SESSIONS, "Open HSM sessions");
    metrics::describe_counter!(SESSION_REOPENS_TOTAL, "HSM sessions reopened after a loss");
}

pub(crate) fn op_latency(mechanism: Mechanism, op: &'static str, took: Duration) {
    metrics::histogram!(OP_SECONDS, "mechanism" => mechanism.as_str(), "op" => op)
        .record(took.as_secs_f64());
}

pub(crate) fn queue_wait(waited: Duration) {
    metrics::histogram!(QUEUE_WAIT_SECONDS).record(waited.as_secs_f64());
}

pub(crate) fn error(error: &HsmError, op: &'static str) {
    metrics::counter!(ERRORS_TOTAL, "kind" => error.kind().as_str(), "op" => op).increment(1);
}

pub(crate) fn queue_depth(depth: usize) {
    metrics::gauge!(QUEUE_DEPTH).set(depth as f64);
}

pub(crate) fn session_opened() {
    metrics::gauge!(SESSIONS).increment(1.0);
}

pub(crate) fn session_closed() {
    metrics::gauge!(SESSIONS).decrement(1.0);
}

pub(crate) fn session_reopen() {
    metrics::counter!(SESSION_REOPENS_TOTAL).increment(1);
}
