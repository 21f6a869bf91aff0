//! Hook for transactions whose outcome is unknown at the deadline.
//!
//! TODO(payment-safety): DESIGN.md invariant 3 — journal "reversing" before
//! the `68` goes upstream, then send 0400 / camt.056 / status inquiries from
//! a store-and-forward queue until the bank acknowledges. This slice only
//! logs and counts; the real sink replaces [`LoggingReversalSink`].

use fps_codecs::model::Transaction;

/// Takes transactions that may have reached a bank without an answer.
/// Implementations must not block and must be bounded: when full they
/// return [`ReversalQueueFull`] and the caller raises an alert.
pub trait ReversalSink: Send + Sync + std::fmt::Debug {
    /// `sent` is the transaction exactly as sent to `bank` (switch's ids).
    fn outcome_unknown(
        &self,
        bank: &str,
        sent: &Transaction,
        reason: &'static str,
    ) -> Result<(), ReversalQueueFull>;
}

/// The reversal queue is at its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reversal queue full")]
pub struct ReversalQueueFull;

/// Logs one line per transaction needing reversal (no queue, so never full).
#[derive(Debug, Default)]
pub struct LoggingReversalSink;

impl ReversalSink for LoggingReversalSink {
    fn outcome_unknown(
        &self,
        bank: &str,
        sent: &Transaction,
        reason: &'static str,
    ) -> Result<(), ReversalQueueFull> {
        metrics::counter!("fps_switch_reversals_needed_total", "bank" => bank.to_owned())
            .increment(1);
        tracing::error!(
            bank,
            mti = %sent.mti,
            stan = ?sent.stan.map(|s| s.value()),
            rrn = ?sent.rrn.as_ref().map(|r| r.as_str().to_owned()),
            message_id = ?sent.message_id.as_ref().map(|m| m.as_str().to_owned()),
            amount_minor = ?sent.amount.map(|a| a.minor()),
            reason,
            "outcome unknown: reversal required (not yet automated)"
        );
        Ok(())
    }
}
