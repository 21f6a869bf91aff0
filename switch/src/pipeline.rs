//! One upstream request to its final answer: validate, route (through
//! `fps-routing`: bank code, proxy or BIN; health-aware with fail-over),
//! map to the bank, send on a pooled link, map the answer back to the
//! upstream's ids.

use std::sync::Arc;

use bytes::BytesMut;
use fps_codecs::model::{
    BankCode, Currency, NetworkCode, ProcessingCode, ResponseCode, Transaction, TxnKind,
};
use fps_routing::idempotency::{ClientScope, Outcome};
use fps_routing::{Attempt, LinkId, LinkOutcome, RetryDecision, SendFailure};
use tokio::time::Instant;

use crate::bank::{BankPool, Framed, SendError};
use crate::metrics as m;
use crate::routing::Routing;
use crate::safety::recent::{Recent, RecentTxn};
use crate::safety::record::TxnId;
use crate::safety::reversals::Reversals;
use crate::safety::{Admission, Claimed, Safety};

/// Routes and forwards upstream requests. Shared by every connection.
#[derive(Debug)]
pub struct Pipeline {
    /// Indexed by the routing crate's `LinkId` (config order of `[[banks]]`).
    pools: Vec<Arc<BankPool>>,
    routing: Arc<Routing>,
    safety: Arc<Safety>,
    reversals: Arc<Reversals>,
    recent: Recent,
    participant: Option<BankCode>,
    series: RequestSeries,
}

/// Where a request's answer came from, for the metrics label.
const LOCAL: &str = "local";
const NONE: &str = "none";

/// How forwarding a claimed request to the banks ended.
///
/// Its transactions are boxed: the caller's future holds a `Forwarded`
/// across several awaits, and two transactions inline (1.6 KB, plus the
/// copies destructured from it) made every request's future that much
/// bigger, and every move of it (into its task, into its box) that much
/// longer a `memcpy`: two allocations cost less (performance log,
/// session 18).
enum Forwarded {
    /// A bank answered in time.
    Answered {
        bank: usize,
        sent: Box<Transaction>,
        answer: Box<Transaction>,
    },
    /// Bytes may have reached `bank` and no usable answer came.
    Unknown { bank: usize, sent: Box<Transaction> },
    /// Nothing reached any bank: answer `code` and release the key.
    NotSent {
        bank: Option<usize>,
        code: ResponseCode,
    },
}

impl Pipeline {
    /// A pipeline over these bank pools, in config order: `routing`'s
    /// `LinkId(i)` is `pools[i]`. `participant` is the switch's own
    /// participant code (debtor agent).
    pub fn new(
        pools: &[Arc<BankPool>],
        routing: Arc<Routing>,
        safety: Arc<Safety>,
        reversals: Arc<Reversals>,
        participant: Option<BankCode>,
    ) -> Self {
        debug_assert_eq!(pools.len(), routing.router().links().len());
        Pipeline {
            pools: pools.to_vec(),
            routing,
            safety,
            reversals,
            recent: Recent::new(crate::safety::recent::DEFAULT_RECENT),
            series: RequestSeries::default(),
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

    /// The safety layer (journal, idempotency).
    pub fn safety(&self) -> &Arc<Safety> {
        &self.safety
    }

    /// The reversal queues.
    pub fn reversals(&self) -> &Arc<Reversals> {
        &self.reversals
    }

    /// The one answer to an upstream request from the client `scope`, or
    /// `None` when the message is not a request (an upstream must not send
    /// responses; it is logged).
    pub async fn handle(&self, req: &Transaction, scope: &ClientScope) -> Option<Transaction> {
        if req.is_response() {
            tracing::warn!(mti = %req.mti, "upstream sent a response message: ignored");
            return None;
        }
        let started = Instant::now();
        let (bank, answer) = match req.kind() {
            Some(TxnKind::NetworkManagement) => (LOCAL, network(req)),
            Some(TxnKind::CreditTransfer) => self.credit_transfer(req, scope).await,
            // Rare paths are boxed: the common one's future (moved on
            // every spawn) stays small.
            Some(TxnKind::Reversal | TxnKind::ReversalAdvice) => {
                Box::pin(self.upstream_reversal(req, scope)).await
            }
            _ => (NONE, req.response(ResponseCode::INVALID_TRANSACTION)),
        };
        self.record(bank, req, &answer, started);
        Some(answer)
    }

    async fn credit_transfer<'a>(
        &'a self,
        req: &Transaction,
        scope: &ClientScope,
    ) -> (&'a str, Transaction) {
        if let Some(missing) = missing_field(req) {
            tracing::info!(mti = %req.mti, stan = ?req.stan.map(|s| s.value()), missing, "format error: mandatory field missing");
            return (NONE, req.response(ResponseCode::FORMAT_ERROR));
        }
        if let Some((field, code)) = invalid_value(req) {
            tracing::info!(mti = %req.mti, stan = ?req.stan.map(|s| s.value()), field, code = %code, "request refused: value not allowed");
            return (NONE, req.response(code));
        }
        let mut claimed = match self.safety.admit(scope, req).await {
            Admission::Answer(a) => return (LOCAL, a),
            Admission::Process(c) => c,
        };
        match self.forward(req, scope, &mut claimed).await {
            Forwarded::Answered { bank, sent, answer } => {
                let pool = &self.pools[bank];
                let final_code = answer.response_code.filter(|c| *c != ResponseCode::PENDING);
                let Some(outcome) = final_code.and(Outcome::from_response(&answer)) else {
                    let why = "bank answer without a final response code";
                    return (
                        pool.name(),
                        Box::pin(self.unknown(claimed, scope, bank, *sent, req, why)).await,
                    );
                };
                let txn = claimed.txn();
                match self.safety.finish(claimed, scope, outcome).await {
                    Some(o) => {
                        self.remember(scope, req, bank, txn, &sent, &o);
                        (pool.name(), o.answer_for(req))
                    }
                    None => {
                        // The final record is not durable, so upstream is not
                        // told the bank's answer: an approval is reversed.
                        let late = Outcome::new(ResponseCode::LATE);
                        self.remember(scope, req, bank, txn, &sent, &late);
                        if answer.response_code == Some(ResponseCode::APPROVED) {
                            Box::pin(self.reverse(bank, txn, *sent)).await;
                        }
                        (pool.name(), req.response(ResponseCode::LATE))
                    }
                }
            }
            Forwarded::Unknown { bank, sent } => {
                let why = "no answer before the deadline";
                let name = self.pools[bank].name();
                (
                    name,
                    Box::pin(self.unknown(claimed, scope, bank, *sent, req, why)).await,
                )
            }
            Forwarded::NotSent { bank, code } => {
                self.safety.abandon(claimed);
                (
                    bank.map_or(NONE, |b| self.pools[b].name()),
                    req.response(code),
                )
            }
        }
    }

    /// Route, then send to the chosen bank, failing over while nothing has
    /// left the switch. Each attempt is journaled as sent (durably) before
    /// its bytes go to the bank.
    async fn forward(
        &self,
        req: &Transaction,
        scope: &ClientScope,
        claimed: &mut Claimed,
    ) -> Forwarded {
        let routed = match self.routing.route(req) {
            Ok(r) => r,
            Err(e) => {
                // RouteError never carries a proxy or PAN.
                tracing::info!(stan = ?req.stan.map(|s| s.value()), reason = %e, "not routed");
                return Forwarded::NotSent {
                    bank: None,
                    code: e.response_code(),
                };
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
            let bank = lease.link().index();
            let pool = self.pool(lease.link());
            let mut sent = Box::new(to_bank(req, self.participant, pool.code()));
            pool.prepare(&mut sent);
            let result = match self.journal_sent(claimed, scope, pool, &sent).await {
                Ok(framed) => pool.send_prepared(&sent, framed, deadline).await,
                Err(code) => {
                    lease.settle(LinkOutcome::NotAttempted);
                    return Forwarded::NotSent {
                        bank: Some(bank),
                        code,
                    };
                }
            };
            let why = match result {
                Ok(answer) => {
                    lease.settle(LinkOutcome::Answered);
                    return Forwarded::Answered {
                        bank,
                        sent,
                        answer: Box::new(answer),
                    };
                }
                Err(SendError::Rejected(why)) => {
                    // Refused by our side (the bank's codec): no verdict on the link.
                    lease.settle(LinkOutcome::NotAttempted);
                    tracing::info!(bank = %pool.name(), reason = why, "transaction rejected before the bank");
                    return Forwarded::NotSent {
                        bank: Some(bank),
                        code: ResponseCode::FORMAT_ERROR,
                    };
                }
                Err(SendError::OutcomeUnknown(why)) => {
                    // Never resent: the bank may have it. Reverse (68).
                    lease.settle(LinkOutcome::Failed);
                    tracing::warn!(bank = %pool.name(), reason = why, "outcome unknown");
                    return Forwarded::Unknown { bank, sent };
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
                    return Forwarded::NotSent {
                        bank: Some(bank),
                        code,
                    };
                }
                // Only for OutcomeUnknown, handled above; nothing was sent.
                _ => {
                    return Forwarded::NotSent {
                        bank: Some(bank),
                        code: ResponseCode::BANK_UNAVAILABLE,
                    }
                }
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
                    return Forwarded::NotSent {
                        bank: Some(bank),
                        code: u.response_code(),
                    };
                }
            }
        }
    }

    /// Frame an attempt for the bank (encoded once: the journal keeps its
    /// message, the link sends the frame) and journal it as sent, durably;
    /// the code to answer if not.
    async fn journal_sent(
        &self,
        claimed: &mut Claimed,
        scope: &ClientScope,
        pool: &BankPool,
        sent: &Transaction,
    ) -> Result<Framed, ResponseCode> {
        let framed = pool.frame(sent).map_err(|_| ResponseCode::FORMAT_ERROR)?;
        let stan = sent.stan.map_or(0, |s| s.value());
        let rrn = sent
            .rrn
            .and_then(|r| r.as_str().parse::<u64>().ok())
            .unwrap_or(0);
        self.safety
            .sent(claimed, scope, pool.name(), stan, rrn, framed.message())
            .await
            .map(|_| framed)
            .map_err(|_| ResponseCode::SYSTEM_MALFUNCTION)
    }

    /// The outcome at `bank` is unknown: journal "reversing" (durable), then
    /// the final `68`, then queue the reversal. Returns the upstream answer.
    async fn unknown(
        &self,
        claimed: Claimed,
        scope: &ClientScope,
        bank: usize,
        sent: Transaction,
        req: &Transaction,
        why: &'static str,
    ) -> Transaction {
        let txn = claimed.txn();
        tracing::warn!(bank = %self.pools[bank].name(), txn = txn.0, reason = why, "outcome unknown: reversing");
        self.reversals.expect_late(bank, txn, &sent);
        // Before the 68 goes up: the gateway's 0400 of this transaction
        // must find it already under reversal (answered 00, not 25).
        let late = Outcome::new(ResponseCode::LATE);
        self.remember(scope, req, bank, txn, &sent, &late);
        let queued = self.reverse(bank, txn, sent).await;
        let _ = self.safety.finish(claimed, scope, late).await;
        if !queued {
            tracing::error!(bank = %self.pools[bank].name(), txn = txn.0, "reversal could not be queued: manual action needed");
        }
        req.response(ResponseCode::LATE)
    }

    /// Journal `txn` as reversing at `bank` and queue its reversal.
    async fn reverse(&self, bank: usize, txn: TxnId, sent: Transaction) -> bool {
        let pool = &self.pools[bank];
        let mut wire = BytesMut::with_capacity(512);
        if pool.encode_wire(&sent, &mut wire).is_ok()
            && self
                .safety
                .reversing(txn, pool.name(), &wire)
                .await
                .is_err()
        {
            tracing::error!(bank = %pool.name(), txn = txn.0, "journal unavailable: reversal kept in memory only");
        }
        match self.reversals.enqueue(bank, txn, sent) {
            Ok(()) => true,
            Err(fps_routing::reversal::EnqueueError::DuplicateId) => true,
            Err(e) => {
                metrics::counter!(m::REVERSALS, "bank" => pool.name().to_owned(), "result" => "queue_full")
                    .increment(1);
                tracing::error!(bank = %pool.name(), txn = txn.0, error = %e, "reversal queue refused the item");
                false
            }
        }
    }

    /// An 0400/0420 from upstream: reverse the original (found by F90 among
    /// this client's recent transactions) at the bank that handled it,
    /// through the store-and-forward queue. Idempotent: a repeat finds the
    /// item already queued and gets the same answer.
    async fn upstream_reversal<'a>(
        &'a self,
        req: &Transaction,
        scope: &ClientScope,
    ) -> (&'a str, Transaction) {
        let Some(original) = req.original else {
            tracing::info!(mti = %req.mti, "reversal without F90: format error");
            return (NONE, req.response(ResponseCode::FORMAT_ERROR));
        };
        let Some(found) = self.recent.find(scope, &original) else {
            tracing::info!(mti = %req.mti, "reversal of an unknown original: answered 25");
            return (NONE, req.response(ResponseCode::ORIGINAL_NOT_FOUND));
        };
        let pool = &self.pools[found.bank];
        if found.code != ResponseCode::APPROVED {
            // Declined or already under reversal (68): nothing more to do.
            return (pool.name(), req.response(ResponseCode::APPROVED));
        }
        if req.amount.is_some() && req.amount != found.sent.amount {
            tracing::info!(bank = %pool.name(), "partial reversal refused");
            return (pool.name(), req.response(ResponseCode::INVALID_AMOUNT));
        }
        if self.reverse(found.bank, found.txn, *found.sent).await {
            self.recent.mark_reversing(scope, &original);
            (pool.name(), req.response(ResponseCode::APPROVED))
        } else {
            (pool.name(), req.response(ResponseCode::SYSTEM_MALFUNCTION))
        }
    }

    fn remember(
        &self,
        scope: &ClientScope,
        req: &Transaction,
        bank: usize,
        txn: TxnId,
        sent: &Transaction,
        outcome: &Outcome,
    ) {
        if let Some(original) = req.original_data() {
            self.recent.insert(
                scope,
                original,
                RecentTxn {
                    bank,
                    txn,
                    sent: Box::new(sent.clone()),
                    code: outcome.response_code,
                },
            );
        }
    }

    fn pool(&self, link: LinkId) -> &Arc<BankPool> {
        // The router was built from the same bank list as the pools (see
        // `Switch::build`), so every LinkId it hands out indexes `pools`.
        &self.pools[link.index()]
    }
}

/// Values of an upstream 0200 that parse but that DESIGN.md does not allow:
/// the field and the code to answer. F3 must be `400000` (credit transfer,
/// else 12 invalid transaction), F4 above zero (else 13 invalid amount), F49
/// HKD `344` or CNY `156` (else 13).
fn invalid_value(req: &Transaction) -> Option<(&'static str, ResponseCode)> {
    if req.processing_code != Some(ProcessingCode::CREDIT_TRANSFER) {
        return Some(("F3", ResponseCode::INVALID_TRANSACTION));
    }
    if req.amount.is_some_and(|a| a.minor() == 0) {
        return Some(("F4", ResponseCode::INVALID_AMOUNT));
    }
    if !matches!(req.currency, Some(Currency::HKD | Currency::CNY)) {
        return Some(("F49", ResponseCode::INVALID_AMOUNT));
    }
    None
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
/// computed per bank); the settlement date (ISO 20022, JSON)
/// is today's and the debtor agent is the switch's participant code.
/// A request routed by proxy id or BIN names no creditor agent; the bank
/// chosen for it is one (ISO 20022 and JSON dialects require it).
fn to_bank(req: &Transaction, participant: Option<BankCode>, bank: BankCode) -> Transaction {
    let mut t = req.clone();
    if t.receiving_bank.is_none() {
        t.receiving_bank = Some(bank);
    }
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

/// The `fps_switch_requests_total` series met so far, by bank label, MTI
/// class and response code, each with its class's
/// `fps_switch_request_duration_seconds`: registered once each instead of
/// registry lookups (with three label allocations) per request. Bounded by
/// the labels' own bounds (banks + 2, 10 classes, response codes).
#[derive(Debug, Default)]
struct RequestSeries {
    series: std::sync::Mutex<
        std::collections::HashMap<SeriesKey, (metrics::Counter, metrics::Histogram)>,
    >,
}

/// Bank slot (pool index, then "local", then "none"), MTI class, code.
type SeriesKey = (usize, u8, [u8; 2]);

impl Pipeline {
    /// Count one answered request and its end-to-end time.
    fn record(&self, bank: &str, req: &Transaction, answer: &Transaction, started: Instant) {
        let class = req.mti.class();
        let code = answer.response_code;
        // Pools first, then the two labels of answers that reached no bank.
        let slot = self
            .pools
            .iter()
            .position(|p| p.name() == bank)
            .unwrap_or(self.pools.len() + usize::from(bank != LOCAL));
        let key = (slot, class, code.map_or([0; 2], |c| *c.as_bytes()));
        let (counter, seconds) = {
            let mut series = self.series.series.lock().unwrap_or_else(|p| p.into_inner());
            series
                .entry(key)
                .or_insert_with(|| {
                    let code = code.map_or_else(|| "none".to_owned(), |c| c.as_str().to_owned());
                    (
                        metrics::counter!(m::REQUESTS, "bank" => bank.to_owned(), "class" => class_label(class), "code" => code),
                        metrics::histogram!(m::REQUEST_SECONDS, "class" => class_label(class)),
                    )
                })
                .clone()
        };
        counter.increment(1);
        seconds.record(started.elapsed().as_secs_f64());
    }
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
