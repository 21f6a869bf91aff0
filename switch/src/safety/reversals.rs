//! The store-and-forward reversal queues: one
//! [`fps_routing::reversal::ReversalQueue`] per bank, driven by one task per
//! bank that sends each due attempt on the bank's pool, reports the result
//! to the queue and journals what the queue decides.
//!
//! Also the sink of late bank answers (DESIGN.md invariant 4): a late answer
//! to a transaction under reversal settles or confirms it; it is never
//! forwarded upstream.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fps_codecs::model::{Mti, ResponseCode, Transaction};
use fps_routing::reversal::{
    AttemptResult, EnqueueError, ReversalAttempt, ReversalConfig, ReversalId, ReversalItem,
    ReversalMessage, ReversalQueue, ReversalStatus,
};
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::record::{Closed, Record, TxnId};
use super::Safety;
use crate::bank::{BankPool, LateAnswers, MatchKey, SendError};
use crate::clock::MonotonicClock;
use crate::metrics as m;

/// Attempts handed out per wake-up of a bank's task.
const MAX_ATTEMPTS_PER_POLL: usize = 64;
/// Longest sleep of a bank's task when nothing is due.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Late answers seen before their item was queued, kept per bank.
const MAX_EARLY_LATE: usize = 4_096;
/// Settled items remembered per bank, for late approvals that re-open them.
const MAX_RECENTLY_CLOSED: usize = 16_384;

/// Every bank's reversal queue.
#[derive(Debug)]
pub struct Reversals {
    banks: Vec<BankReversals>,
    safety: Arc<Safety>,
    clock: Arc<dyn MonotonicClock>,
}

#[derive(Debug)]
struct BankReversals {
    pool: Arc<BankPool>,
    queue: Mutex<ReversalQueue>,
    /// Match key of each original under reversal → its item.
    by_key: Mutex<HashMap<MatchKey, ReversalId>>,
    /// Late answers (approved?) that came before their item was queued.
    early_late: Mutex<HashMap<ReversalId, bool>>,
    /// Items settled lately, for a late approval that re-opens one.
    closed: Mutex<RecentlyClosed>,
    wake: Notify,
}

/// Settled items by the original's match key, oldest dropped first.
///
/// A reversal can overtake its original at the bank (both stuck in the
/// bank's queue when the switch timed out): the bank finds nothing to
/// reverse, acknowledges, then executes the original and approves it late.
/// That late approval must start a new reversal, not be dropped.
#[derive(Debug, Default)]
struct RecentlyClosed {
    by_key: HashMap<MatchKey, (ReversalId, Transaction)>,
    order: VecDeque<MatchKey>,
}

impl RecentlyClosed {
    fn insert(&mut self, key: MatchKey, id: ReversalId, original: Transaction) {
        if self.by_key.insert(key, (id, original)).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > MAX_RECENTLY_CLOSED {
            if let Some(old) = self.order.pop_front() {
                self.by_key.remove(&old);
            }
        }
    }

    fn take(&mut self, key: &MatchKey) -> Option<(ReversalId, Transaction)> {
        // `order` keeps the key until it ages out; a missing map entry is
        // skipped then.
        self.by_key.remove(key)
    }
}

/// A parked reversal in `/reversals`.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedReversal {
    /// Bank name.
    pub bank: String,
    /// The switch's transaction id.
    pub txn: u64,
    /// Canonical MTI of the original.
    pub mti: String,
    /// Outbound STAN of the original.
    pub stan: Option<u32>,
    /// Amount in minor units.
    pub amount_minor: Option<u64>,
}

/// Queue sizes in `/reversals`.
#[derive(Debug, Clone, Serialize)]
pub struct ReversalsStatus {
    /// Per bank: (name, queued, parked).
    pub banks: Vec<BankQueueStatus>,
    /// Every parked item.
    pub parked: Vec<ParkedReversal>,
}

/// One bank's queue in `/reversals`.
#[derive(Debug, Clone, Serialize)]
pub struct BankQueueStatus {
    /// Bank name.
    pub bank: String,
    /// Items held (active and parked).
    pub queued: usize,
    /// Items parked.
    pub parked: usize,
}

impl Reversals {
    /// Queues for these pools (same order as the pipeline's), each with
    /// `config`; `seed` varies the backoff jitter.
    pub fn new(
        pools: &[Arc<BankPool>],
        config: ReversalConfig,
        safety: Arc<Safety>,
        clock: Arc<dyn MonotonicClock>,
        seed: u64,
    ) -> Arc<Reversals> {
        let banks = pools
            .iter()
            .enumerate()
            .map(|(i, pool)| BankReversals {
                pool: pool.clone(),
                queue: Mutex::new(ReversalQueue::new(config, seed ^ (i as u64 + 1))),
                by_key: Mutex::new(HashMap::new()),
                early_late: Mutex::new(HashMap::new()),
                closed: Mutex::new(RecentlyClosed::default()),
                wake: Notify::new(),
            })
            .collect();
        let r = Arc::new(Reversals {
            banks,
            safety,
            clock,
        });
        // The pools hold their sink weakly: `Reversals` holds the pools, and
        // a strong pointer back would keep both (and the journal and key
        // store behind `safety`) alive after the switch stops.
        let sink: Arc<dyn LateAnswers> = Arc::new(LateSink(Arc::downgrade(&r)));
        for b in &r.banks {
            b.pool.set_late_answers(sink.clone());
        }
        r
    }

    /// Before journaling "reversing": make late answers to `sent` (as sent
    /// to pool `bank`) find item `txn` even before it is queued.
    pub fn expect_late(&self, bank: usize, txn: TxnId, sent: &Transaction) {
        let b = &self.banks[bank];
        if let Some(key) = b.pool.match_key(sent) {
            lock(&b.by_key).insert(key, ReversalId(txn.0));
        }
    }

    /// Queue the reversal of `sent` (journaled as reversing already).
    pub fn enqueue(&self, bank: usize, txn: TxnId, sent: Transaction) -> Result<(), EnqueueError> {
        let b = &self.banks[bank];
        let id = ReversalId(txn.0);
        if let Some(key) = b.pool.match_key(&sent) {
            lock(&b.by_key).insert(key, id);
        }
        let item = ReversalItem {
            id,
            bank: b.pool.code(),
            original: sent,
            style: b.pool.reversal_style(),
        };
        let now = self.clock.now();
        let mut queue = lock(&b.queue);
        queue.enqueue(item, now)?;
        if let Some(approved) = lock(&b.early_late).remove(&id) {
            let original = queue.item(id).map(|i| i.original.clone());
            let status = queue.on_late_response(id, approved, now);
            drop(queue);
            self.count_late_settlement(bank, status);
            self.settled(bank, id, status, original);
        } else {
            drop(queue);
        }
        self.gauges(bank);
        b.wake.notify_one();
        Ok(())
    }

    /// Start one task per bank; they stop when `shutdown` turns true.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        (0..self.banks.len())
            .map(|i| tokio::spawn(self.clone().run_bank(i, shutdown.clone())))
            .collect()
    }

    /// Queue sizes and the manual queue.
    pub fn status(&self) -> ReversalsStatus {
        let mut banks = Vec::new();
        let mut parked = Vec::new();
        for b in &self.banks {
            let q = lock(&b.queue);
            banks.push(BankQueueStatus {
                bank: b.pool.name().to_owned(),
                queued: q.len(),
                parked: q.parked_len(),
            });
            parked.extend(q.parked().map(|item| ParkedReversal {
                bank: b.pool.name().to_owned(),
                txn: item.id.0,
                mti: item.original.mti.to_string(),
                stan: item.original.stan.map(|s| s.value()),
                amount_minor: item.original.amount.map(|a| a.minor()),
            }));
        }
        ReversalsStatus { banks, parked }
    }

    /// Re-journal every queued item (before old segments are dropped).
    /// Returns whether all of them are durable again.
    pub async fn carry_forward(&self) -> bool {
        let mut items = Vec::new();
        for (i, b) in self.banks.iter().enumerate() {
            let q = lock(&b.queue);
            let parked: std::collections::HashSet<ReversalId> = q.parked().map(|p| p.id).collect();
            items.extend(
                q.items()
                    .map(|item| (i, item.id, item.original.clone(), parked.contains(&item.id))),
            );
        }
        for (bank, id, original, parked) in items {
            let pool = &self.banks[bank].pool;
            let mut wire = bytes::BytesMut::with_capacity(512);
            if pool.encode_wire(&original, &mut wire).is_err() {
                continue;
            }
            let txn = TxnId(id.0);
            if self
                .safety
                .reversing(txn, pool.name(), &wire)
                .await
                .is_err()
            {
                return false;
            }
            if parked && self.safety.write(&Record::Parked { txn }).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Items held over every bank (active and parked).
    pub fn len(&self) -> usize {
        self.banks.iter().map(|b| lock(&b.queue).len()).sum()
    }

    /// Whether no bank holds an item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn run_bank(self: Arc<Self>, bank: usize, mut shutdown: watch::Receiver<bool>) {
        let b = &self.banks[bank];
        loop {
            let now = self.clock.now();
            let attempts = lock(&b.queue).poll_due(now, MAX_ATTEMPTS_PER_POLL);
            for a in attempts {
                tokio::spawn(self.clone().attempt(bank, a));
            }
            let next = lock(&b.queue).poll_timeout();
            let sleep = match next {
                Some(due) => due.saturating_since(self.clock.now()).min(IDLE_POLL),
                None => IDLE_POLL,
            };
            tokio::select! {
                _ = b.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    async fn attempt(self: Arc<Self>, bank: usize, attempt: ReversalAttempt) {
        let b = &self.banks[bank];
        let original = lock(&b.queue).item(attempt.id).map(|i| i.original.clone());
        let Some(original) = original else {
            return;
        };
        let msg = build(attempt.message, &original);
        let original = Some(original);
        let deadline = tokio::time::Instant::now() + b.pool.request_timeout();
        let (_, result) = b.pool.send(msg, deadline).await;
        let result = match result {
            Ok(answer) => judge(attempt.message, &answer),
            Err(SendError::Rejected(why)) => {
                tracing::error!(bank = %b.pool.name(), txn = attempt.id.0, reason = why, "reversal message cannot be built for this bank");
                AttemptResult::Rejected
            }
            // No link up: nothing left, the attempt does not count.
            Err(SendError::NotSent(_)) => AttemptResult::NotSent,
            Err(_) => AttemptResult::Timeout,
        };
        let status = lock(&b.queue).on_result(attempt, result, self.clock.now());
        self.count(bank, status);
        self.settled(bank, attempt.id, status, original);
        b.wake.notify_one();
    }

    /// Count an attempt's result, or a settlement.
    fn count(&self, bank: usize, status: ReversalStatus) {
        let b = &self.banks[bank];
        metrics::counter!(m::REVERSALS, "bank" => b.pool.name().to_owned(), "result" => match status {
            ReversalStatus::Acknowledged => "acknowledged",
            ReversalStatus::ClosedNothingToReverse => "nothing_to_reverse",
            ReversalStatus::Parked => "parked",
            ReversalStatus::Pending | ReversalStatus::Unknown => "retry",
        })
        .increment(1);
    }

    /// A late answer is no attempt: count only the settlement it makes (a
    /// late decline closes the item), not the confirmation of an approval.
    fn count_late_settlement(&self, bank: usize, status: ReversalStatus) {
        if status == ReversalStatus::ClosedNothingToReverse {
            self.count(bank, status);
        }
    }

    /// Journal what the queue decided and keep the gauges right.
    /// `original`: the item's original, remembered if the item closed.
    fn settled(
        &self,
        bank: usize,
        id: ReversalId,
        status: ReversalStatus,
        original: Option<Transaction>,
    ) {
        let b = &self.banks[bank];
        let rec = match status {
            ReversalStatus::Acknowledged => Some(Record::ReversalClosed {
                txn: TxnId(id.0),
                how: Closed::Acknowledged,
            }),
            ReversalStatus::ClosedNothingToReverse => Some(Record::ReversalClosed {
                txn: TxnId(id.0),
                how: Closed::NothingToReverse,
            }),
            ReversalStatus::Parked => {
                tracing::error!(bank = %b.pool.name(), txn = id.0, "reversal out of attempts: parked for manual action");
                Some(Record::Parked { txn: TxnId(id.0) })
            }
            ReversalStatus::Pending | ReversalStatus::Unknown => None,
        };
        if matches!(
            status,
            ReversalStatus::Acknowledged | ReversalStatus::ClosedNothingToReverse
        ) {
            let mut keys = Vec::new();
            lock(&b.by_key).retain(|k, v| {
                let mine = *v == id;
                if mine {
                    keys.push(*k);
                }
                !mine
            });
            if let Some(original) = original {
                let mut closed = lock(&b.closed);
                for k in keys {
                    closed.insert(k, id, original.clone());
                }
            }
            tracing::info!(bank = %b.pool.name(), txn = id.0, outcome = ?status, "reversal settled");
        }
        if let Some(rec) = rec {
            let mut buf = Vec::with_capacity(32);
            // Fixed-size records: encoding cannot fail. A journal failure is
            // logged and counted by `append`'s caller path; the queue's state
            // is already right in memory.
            if rec.encode(&mut buf).is_ok() && self.safety.journal().append(&buf).is_err() {
                metrics::counter!(m::JOURNAL_REFUSED).increment(1);
                tracing::error!(
                    txn = id.0,
                    "journal unavailable: reversal state not recorded"
                );
            }
        }
        self.gauges(bank);
    }

    fn gauges(&self, bank: usize) {
        let b = &self.banks[bank];
        let (len, parked) = {
            let q = lock(&b.queue);
            (q.len(), q.parked_len())
        };
        let name = b.pool.name().to_owned();
        metrics::gauge!(m::REVERSAL_QUEUE_DEPTH, "bank" => name.clone()).set(len as f64);
        metrics::gauge!(m::REVERSALS_PARKED, "bank" => name).set(parked as f64);
    }

    fn bank_index(&self, name: &str) -> Option<usize> {
        self.banks.iter().position(|b| b.pool.name() == name)
    }
}

impl Reversals {
    /// A bank's answer that came after its deadline (see the module doc).
    pub fn late_answer(self: &Arc<Self>, bank: &str, answer: Transaction) {
        let Some(i) = self.bank_index(bank) else {
            return;
        };
        let b = &self.banks[i];
        // Answers to our own reversal messages that came late say nothing new.
        if !matches!(answer.mti.class(), 2) {
            return;
        }
        let Some(key) = b.pool.answer_key(&answer) else {
            return;
        };
        let approved = answer.response_code == Some(ResponseCode::APPROVED);
        let Some(id) = lock(&b.by_key).get(&key).copied() else {
            let reopen = if approved {
                lock(&b.closed).take(&key)
            } else {
                None
            };
            match reopen {
                Some((id, original)) => self.reopen(i, id, original),
                None => {
                    tracing::warn!(bank, "late answer matches no transaction under reversal")
                }
            }
            return;
        };
        let now = self.clock.now();
        let (status, original) = {
            let mut q = lock(&b.queue);
            if q.item(id).is_none() {
                let mut early = lock(&b.early_late);
                if early.len() < MAX_EARLY_LATE {
                    early.insert(id, approved);
                }
                return;
            }
            let original = q.item(id).map(|i| i.original.clone());
            (q.on_late_response(id, approved, now), original)
        };
        self.count_late_settlement(i, status);
        tracing::info!(
            bank,
            txn = id.0,
            approved,
            "late answer settles the reversal"
        );
        self.settled(i, id, status, original);
        b.wake.notify_one();
    }

    /// A late approval of an item already settled: the bank executed the
    /// original after our reversal found nothing. Journal it as reversing
    /// again and queue a new reversal.
    fn reopen(self: &Arc<Self>, bank: usize, id: ReversalId, original: Transaction) {
        let b = &self.banks[bank];
        metrics::counter!(m::REVERSALS, "bank" => b.pool.name().to_owned(), "result" => "reopened")
            .increment(1);
        tracing::warn!(bank = %b.pool.name(), txn = id.0, "late approval after the reversal was settled: reversing again");
        let this = self.clone();
        tokio::spawn(async move {
            let pool = &this.banks[bank].pool;
            let txn = TxnId(id.0);
            let mut wire = bytes::BytesMut::with_capacity(512);
            if pool.encode_wire(&original, &mut wire).is_ok()
                && this
                    .safety
                    .reversing(txn, pool.name(), &wire)
                    .await
                    .is_err()
            {
                tracing::error!(bank = %pool.name(), txn = id.0, "journal unavailable: reversal kept in memory only");
            }
            if let Err(e) = this.enqueue(bank, txn, original) {
                tracing::error!(bank = %pool.name(), txn = id.0, error = %e, "reversal queue refused the re-opened item: manual action needed");
            }
        });
    }
}

/// What the pools hand late answers to: forwards to the queues while they
/// exist (see [`Reversals::new`]).
#[derive(Debug)]
struct LateSink(Weak<Reversals>);

impl LateAnswers for LateSink {
    fn late_answer(&self, bank: &str, answer: Transaction) {
        if let Some(r) = self.0.upgrade() {
            r.late_answer(bank, answer);
        }
    }
}

/// The message an attempt sends, built from the original as sent. The pool
/// gives it fresh outbound ids; F90 (ISO 8583) or the original message id
/// (ISO 20022, JSON) names the original.
fn build(message: ReversalMessage, original: &Transaction) -> Transaction {
    let mut t = original.clone();
    t.stan = None;
    t.rrn = None;
    t.message_id = None;
    t.mac = None;
    t.response_code = None;
    t.auth_id = None;
    t.original = original.original_data();
    t.original_message_id = original.message_id;
    t.mti = match message {
        ReversalMessage::StatusInquiry => Mti::STATUS_INQUIRY,
        ReversalMessage::Cancellation | ReversalMessage::JsonCancel => Mti::REVERSAL,
        m => m.mti().unwrap_or(Mti::REVERSAL),
    };
    t
}

/// What an answer to a reversal-side message means for the queue.
fn judge(message: ReversalMessage, answer: &Transaction) -> AttemptResult {
    let code = answer.response_code;
    match message {
        ReversalMessage::StatusInquiry => match code {
            // "Not found" may only mean the original is still on its way
            // (queued at the bank when we timed out): cancel anyway, so the
            // bank refuses it if it comes. Closing here would leave its
            // debit standing.
            Some(ResponseCode::APPROVED | ResponseCode::ORIGINAL_NOT_FOUND) => {
                AttemptResult::StatusSaysExecuted
            }
            Some(ResponseCode::PENDING) | None => AttemptResult::Timeout,
            Some(_) => AttemptResult::StatusSaysNotExecuted,
        },
        _ => match code {
            Some(ResponseCode::APPROVED) => AttemptResult::Acknowledged,
            Some(ResponseCode::ORIGINAL_NOT_FOUND) => AttemptResult::StatusSaysNotExecuted,
            Some(ResponseCode::PENDING) | None => AttemptResult::Timeout,
            Some(_) => AttemptResult::Rejected,
        },
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Never held across an await; every critical section leaves the value
    // consistent before it can panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fps_codecs::model::examples::credit_transfer;
    use fps_codecs::model::Stan;

    #[test]
    fn reversal_names_the_original() {
        let mut sent = credit_transfer();
        sent.stan = Some(Stan::new(77).unwrap());
        let r = build(ReversalMessage::Reversal, &sent);
        assert_eq!(r.mti, Mti::REVERSAL);
        assert_eq!(r.stan, None, "the pool assigns a fresh STAN");
        let orig = r.original.expect("F90");
        assert_eq!(orig.stan.value(), 77);
        assert_eq!(orig.mti, Mti::CREDIT_TRANSFER);
        assert_eq!(r.amount, sent.amount);
        let repeat = build(ReversalMessage::RepeatReversal, &sent);
        assert_eq!(repeat.mti, Mti::REVERSAL.repeat());
        assert_eq!(
            build(ReversalMessage::StatusInquiry, &sent).mti,
            Mti::STATUS_INQUIRY
        );
    }

    #[test]
    fn answers_are_judged_by_message() {
        let mut a = Transaction::new(Mti::REVERSAL_RESPONSE);
        a.response_code = Some(ResponseCode::APPROVED);
        assert_eq!(
            judge(ReversalMessage::Reversal, &a),
            AttemptResult::Acknowledged
        );
        assert_eq!(
            judge(ReversalMessage::StatusInquiry, &a),
            AttemptResult::StatusSaysExecuted
        );
        a.response_code = Some(ResponseCode::ORIGINAL_NOT_FOUND);
        assert_eq!(
            judge(ReversalMessage::Reversal, &a),
            AttemptResult::StatusSaysNotExecuted
        );
        // Not found yet is not "not executed": the original may be in transit.
        assert_eq!(
            judge(ReversalMessage::StatusInquiry, &a),
            AttemptResult::StatusSaysExecuted
        );
        a.response_code = Some(ResponseCode::PENDING);
        assert_eq!(
            judge(ReversalMessage::Cancellation, &a),
            AttemptResult::Timeout
        );
        a.response_code = Some(ResponseCode::DO_NOT_HONOUR);
        assert_eq!(
            judge(ReversalMessage::Reversal, &a),
            AttemptResult::Rejected
        );
        assert_eq!(
            judge(ReversalMessage::StatusInquiry, &a),
            AttemptResult::StatusSaysNotExecuted
        );
    }
}
