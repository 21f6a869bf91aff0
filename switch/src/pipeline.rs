//! One upstream request to its final answer: validate, route, map to the
//! bank, send on a pooled link, map the answer back to the upstream's ids.

use std::collections::HashMap;
use std::sync::Arc;

use fps_codecs::model::{BankCode, NetworkCode, ResponseCode, Transaction, TxnKind};
use tokio::time::Instant;

use crate::bank::{BankPool, SendError};
use crate::metrics as m;
use crate::reversal::ReversalSink;

/// Routes and forwards upstream requests. Shared by every connection.
#[derive(Debug)]
pub struct Pipeline {
    banks: HashMap<BankCode, Arc<BankPool>>,
    reversals: Arc<dyn ReversalSink>,
    participant: Option<BankCode>,
}

/// Where a request's answer came from, for the metrics label.
const LOCAL: &str = "local";
const NONE: &str = "none";

impl Pipeline {
    /// A pipeline over these bank pools.
    /// `participant` is the switch's own participant code (debtor agent).
    pub fn new(
        pools: &[Arc<BankPool>],
        reversals: Arc<dyn ReversalSink>,
        participant: Option<BankCode>,
    ) -> Self {
        Pipeline {
            banks: pools.iter().map(|p| (p.code(), p.clone())).collect(),
            reversals,
            participant,
        }
    }

    /// The bank pools.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<BankPool>> {
        self.banks.values()
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
        // TODO(routing): F120 proxies and BIN ranges through fps-routing's
        // RouteTable / ProxyDirectory, with health-aware secondaries.
        let Some(pool) = req.receiving_bank.and_then(|code| self.banks.get(&code)) else {
            return (NONE, req.response(ResponseCode::UNKNOWN_ACCOUNT));
        };
        let deadline = Instant::now() + pool.request_timeout();
        let (sent, result) = pool.send(to_bank(req, self.participant), deadline).await;
        let answer = match result {
            Ok(bank_answer) => match bank_answer.response_code {
                Some(code) => {
                    let mut a = req.response(code);
                    a.auth_id = bank_answer.auth_id;
                    a
                }
                None => self.unknown(pool, &sent, req, "bank answer without response code"),
            },
            Err(SendError::NotSent(why)) => {
                tracing::info!(bank = %pool.name(), reason = why, "bank unavailable");
                req.response(ResponseCode::BANK_UNAVAILABLE)
            }
            Err(SendError::Rejected(why)) => {
                tracing::info!(bank = %pool.name(), reason = why, "transaction rejected before the bank");
                req.response(ResponseCode::FORMAT_ERROR)
            }
            Err(SendError::OutcomeUnknown(why)) => self.unknown(pool, &sent, req, why),
        };
        (pool.name(), answer)
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
            "F100|F120",
            req.receiving_bank.is_none() && req.proxy.is_none(),
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
