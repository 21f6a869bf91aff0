//! `fps_hsm_*` metrics through the `metrics` facade. Label values come from
//! closed sets (mechanism names, operation names, error kinds), never from
//! key labels or data.
//!
//! The per-request metrics are recorded through handles registered once per
//! worker (and per pool for the queue depth) when the [`crate::Hsm`] starts,
//! not looked up per request: with a recorder installed a lookup hashes the
//! key and its labels into the registry, and even without one the labels
//! are collected into a fresh `Vec`. So install the recorder before starting
//! the `Hsm`, as `fps-switch` does; handles registered earlier stay no-ops.

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

/// One worker's handles on the metrics it records for every request.
pub(crate) struct WorkerMetrics {
    queue_depth: metrics::Gauge,
    queue_wait: metrics::Histogram,
    /// `OP_SECONDS` by (mechanism, op), registered on first use; at most
    /// mechanisms x operation labels entries (25), usually one or two.
    op_seconds: Vec<(Mechanism, &'static str, metrics::Histogram)>,
}

impl WorkerMetrics {
    /// Registers the handles with the recorder installed now.
    pub(crate) fn new() -> Self {
        WorkerMetrics {
            queue_depth: metrics::gauge!(QUEUE_DEPTH),
            queue_wait: metrics::histogram!(QUEUE_WAIT_SECONDS),
            op_seconds: Vec::new(),
        }
    }

    pub(crate) fn op_latency(&mut self, mechanism: Mechanism, op: &'static str, took: Duration) {
        let known = self
            .op_seconds
            .iter()
            .position(|(m, o, _)| *m == mechanism && *o == op);
        let index = known.unwrap_or_else(|| {
            let histogram =
                metrics::histogram!(OP_SECONDS, "mechanism" => mechanism.as_str(), "op" => op);
            self.op_seconds.push((mechanism, op, histogram));
            self.op_seconds.len() - 1
        });
        self.op_seconds[index].2.record(took.as_secs_f64());
    }

    /// Records how an operation ended: its time when it succeeded, its
    /// error kind when it failed.
    pub(crate) fn outcome<T>(
        &mut self,
        mechanism: Mechanism,
        op: &'static str,
        took: Duration,
        result: &Result<T, HsmError>,
    ) {
        match result {
            Ok(_) => self.op_latency(mechanism, op, took),
            Err(e) => error(e, op),
        }
    }

    pub(crate) fn queue_wait(&self, waited: Duration) {
        self.queue_wait.record(waited.as_secs_f64());
    }

    pub(crate) fn queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as f64);
    }
}

/// The queue-depth gauge, for the submitting side.
pub(crate) fn queue_depth_gauge() -> metrics::Gauge {
    metrics::gauge!(QUEUE_DEPTH)
}

pub(crate) fn error(error: &HsmError, op: &'static str) {
    metrics::counter!(ERRORS_TOTAL, "kind" => error.kind().as_str(), "op" => op).increment(1);
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
