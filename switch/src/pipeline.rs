//! One upstream request to its final answer: validate, route (through
//! `fps-routing`: bank code, proxy or BIN; health-aware with fail-over),
//! map to the bank, send on a pooled link, map the answer back to the
//! upstream's ids.

use std::sync::Arc;

use fps_codecs::model::{BankCode, NetworkCode, ResponseCode, Transaction, TxnKind};
use fps_routing::{Attempt, LinkId, LinkOutcome, RetryDecision, SendFailure};
use tokio::time::Instant;

use crate::bank::{BankPool, SendError};
use crate::metrics as m;
use crate::reversal::ReversalSink;
use crate::routing::Routing;

/// Routes and forwards upstream requests. Shared by every connection.
#[derive(Debug)]
pub struct Pipeline {
    /// Indexed by the routing crate's `LinkId` (config order of `[[banks]]`).
    pools: Vec<Arc<BankPool>>,
    routing: Arc<Routing>,
    reversals: Arc<dyn ReversalSink>,
    participant: Option<BankCode>,
}

/// Where a request's answer came from, for the metrics label.
const LOCAL: &str = "local";
const NONE: &str = "none";

impl Pipeline {
    /// A pipeline over these bank pools, in config order: `routing`'s
    /// `LinkId(i)` is `pools[i]`. `participant` is the switch's own
    /// participant code (debtor agent).
    pub fn new(
        pools: &[Arc<BankPool>],
        routing: Arc<Routing>,
        reversals: Arc<dyn ReversalSink>,
        participant: Option<BankCode>,
    ) -> Self {
        debug_assert_eq!(pools.len(), routing.router().links().len());
        Pipeline {
            pools: pools.to_vec(),
            routing,
            reversals,
            participant,
        }
    }

    /// The bank pools.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<BankPool>> {
        self.pools.iter()
    }

    /// The routing state.
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }

    /// The one answer to an upstream request, or `None` when the message is
    /// not a request (an upstream must not send responses; it is logged).
    pub async fn handle(&self, req: Transaction) -> Option<Transaction> {
        if req.is_response() {
            tracing::warn!(mti = %req.mti, "upstream sent a response message: ignored");
            return None;
        }
        let started = Instant::now();
        let (bank, answer) = match req.kind() {
            Some(TxnKind::NetworkManagement) => (LOCAL, network(&req)),
            Some(TxnKind::CreditTransfer) => self.credit_transfer(&req).await,
            // TODO(payment-safety): upstream reversals and status inquiries.
            _ => (NONE, req.response(ResponseCode::INVALID_TRANSACTION)),
        };
        record(bank, &req, &answer, started);
        Some(answer)
    }

    async fn credit_transfer<'a>(&'a self, req: &Transaction) -> (&'a str, Transaction) {
        if let Some(missing) = missing_field(req) {
            tracing::info!(mti = %req.mti, stan = ?req.stan.map(|s| s.value()), missing, "format error: mandatory field missing");
            return (NONE, req.response(ResponseCode::FORMAT_ERROR));
        }
        let routed = match self.routing.route(req) {
            Ok(r) => r,
            Err(e) => {
                // RouteError never carries a proxy or PAN.
                tracing::info!(stan = ?req.stan.map(|s| s.value()), reason = %e, "not routed");
                return (NONE, req.response(e.response_code()));
            }
        };
        let candidates = routed.decision.candidates();
        let mut lease = routed.lease;
        // The transaction's deadline is the first chosen bank's timeout;
        // fail-over attempts share it (the retry policy refuses to start one
        // that could not finish in time).
        let timeout = self.pool(lease.link()).request_timeout();
        let deadline = Instant::now() + timeout;
        let deadline_ms = self.routing.now().saturating_add(timeout);
        let policy = *self.routing.router().retry_policy();
        let mut attempt = Attempt::first(lease.candidate(), candidates.len());
        // Bounded: the policy allows at most MAX_ATTEMPTS_LIMIT attempts.
        loop {
            let pool = self.pool(lease.link());
            let (sent, result) = pool.send(to_bank(req, self.participant), deadline).await;
            let why = match result {
                Ok(bank_answer) => {
                    lease.settle(LinkOutcome::Answered);
                    let answer = match bank_answer.response_code {
                        Some(code) => {
                            let mut a = req.response(code);
                            a.auth_id = bank_answer.auth_id;
                            a
                        }
                        None => self.unknown(pool, &sent, req, "bank answer without response code"),
                    };
                    return (pool.name(), answer);
                }
                Err(SendError::Rejected(why)) => {
                    // Refused by our side (the bank's codec): no verdict on the link.
                    lease.settle(LinkOutcome::NotAttempted);
                    tracing::info!(bank = %pool.name(), reason = why, "transaction rejected before the bank");
                    return (pool.name(), req.response(ResponseCode::FORMAT_ERROR));
                }
                Err(SendError::OutcomeUnknown(why)) => {
                    // Never resent: the bank may have it. Reverse (68).
                    lease.settle(LinkOutcome::Failed);
                    return (pool.name(), self.unknown(pool, &sent, req, why));
                }
                Err(SendError::NotSent(why)) => why,
            };
            let failed = lease.link();
            lease.settle(LinkOutcome::Failed);
            let now = self.routing.now();
            let jitter = self.routing.jitter();
            let retry = match policy.decide(attempt, SendFailure::NotSent, now, deadline_ms, jitter)
            {
                RetryDecision::RetryOn(retry) => retry,
                RetryDecision::GiveUp(code) => {
                    tracing::info!(bank = %pool.name(), reason = why, attempt = attempt.number, "bank unavailable");
                    return (pool.name(), req.response(code));
                }
                // Only for OutcomeUnknown, handled above; nothing was sent.
                _ => return (pool.name(), req.response(ResponseCode::BANK_UNAVAILABLE)),
            };
            tokio::time::sleep(retry.not_before.saturating_since(now)).await;
            match self.routing.acquire(candidates, retry.attempt.candidate) {
                Ok(next) => {
                    if next.link() != failed {
                        let to = self.routing.link_name(next.link());
                        tracing::info!(bank = %pool.name(), to, reason = why, "bank unavailable: failing over");
                        metrics::counter!(m::FAILOVERS, "bank" => pool.name().to_owned())
                            .increment(1);
                    }
                    attempt = Attempt {
                        number: retry.attempt.number,
                        candidate: next.candidate(),
                        candidates: candidates.len(),
                    };
                    lease = next;
                }
                Err(u) => {
                    tracing::info!(bank = %pool.name(), reason = why, unavailable = %u, "bank unavailable, no candidate left");
                    return (pool.name(), req.response(u.response_code()));
                }
            }
        }
    }

    fn pool(&self, link: LinkId) -> &Arc<BankPool> {
        // The router was built from the same bank list as the pools (see
        // `Switch::build`), so every LinkId it hands out indexes `pools`.
        &self.pools[link.index()]
    }

    fn unknown(
        &self,
        pool: &BankPool,
        sent: &Transaction,
        req: &Transaction,
        why: &'static str,
    ) -> Transaction {
        if self
            .reversals
            .outcome_unknown(pool.name(), sent, why)
            .is_err()
        {
            tracing::error!(bank = %pool.name(), "reversal queue full: manual action needed");
        }
        req.response(ResponseCode::LATE)
    }
}

/// The mandatory fields of an upstream 0200 (DESIGN.md), first missing one.
fn missing_field(req: &Transaction) -> Option<&'static str> {
    [
        ("F3", req.processing_code.is_none()),
        ("F4", req.amount.is_none()),
        ("F7", req.transmitted_at.is_none()),
        ("F11", req.stan.is_none()),
        ("F37", req.rrn.is_none()),
        ("F41", req.terminal_id.is_none()),
        ("F49", req.currency.is_none()),
        (
            "F100|F120|F2",
            req.receiving_bank.is_none() && req.proxy.is_none() && req.pan.is_none(),
        ),
    ]
    .into_iter()
    .find(|(_, missing)| *missing)
    .map(|(name, _)| name)
}

/// The bank-bound copy of an upstream request: the upstream's own STAN/RRN
/// and MAC are removed (the pool assigns the switch's ids; MACs are
/// computed per bank — TODO(hsm)); the settlement date (ISO 20022, JSON)
/// is today's and the debtor agent is the switch's participant code.
fn to_bank(req: &Transaction, participant: Option<BankCode>) -> Transaction {
    let mut t = req.clone();
    t.stan = None;
    t.rrn = None;
    t.mac = None;
    t.message_id = None;
    if t.sending_bank.is_none() {
        t.sending_bank = participant;
    }
    if t.settlement_date.is_none() {
        t.settlement_date = Some(crate::clock::settlement_date_today());
    }
    t
}

/// Network management from upstream is answered by the switch itself.
fn network(req: &Transaction) -> Transaction {
    match req.network_code {
        Some(NetworkCode::Echo | NetworkCode::SignOn | NetworkCode::SignOff) => {
            req.response(ResponseCode::APPROVED)
        }
        _ => req.response(ResponseCode::INVALID_TRANSACTION),
    }
}

fn record(bank: &str, req: &Transaction, answer: &Transaction, started: Instant) {
    let class = class_label(req.mti.class());
    let code = answer
        .response_code
        .map_or_else(|| "none".to_owned(), |c| c.as_str().to_owned());
    metrics::counter!(m::REQUESTS, "bank" => bank.to_owned(), "class" => class, "code" => code)
        .increment(1);
    metrics::histogram!(m::REQUEST_SECONDS, "class" => class)
        .record(started.elapsed().as_secs_f64());
}

/// MTI class as a bounded label.
pub(crate) fn class_label(class: u8) -> &'static str {
    match class {
        1 => "1",
        2 => "2",
        3 => "3",
        4 => "4",
        5 => "5",
        6 => "6",
        7 => "7",
        8 => "8",
        9 => "9",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fps_codecs::model::Mti;

    #[test]
    fn first_missing_mandatory_field_is_named() {
        let t = Transaction::new(Mti::CREDIT_TRANSFER);
        assert_eq!(missing_field(&t), Some("F3"));
    }

    #[test]
    fn network_management_is_answered_locally() {
        let mut t = Transaction::new(Mti::NETWORK);
        t.network_code = Some(NetworkCode::Echo);
        let a = network(&t);
        assert_eq!(a.mti, Mti::NETWORK_RESPONSE);
        assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
    }
}
