//! Reversals: the store-and-forward queue that settles outcome-unknown
//! transactions (DESIGN.md invariants 3 and 4).
//!
//! When a bank's deadline passes with no answer, the switch journals the
//! transaction as "reversing", answers 68 upstream and enqueues a
//! [`ReversalItem`] here. Intended use: one [`ReversalQueue`] per bank. The
//! queue decides *what* to send and *when*; the switch builds, sends and
//! times out each attempt and reports back:
//!
//! | style | messages |
//! |---|---|
//! | [`ReversalStyle::Iso8583Reversal`] | 0400, then repeats 0401 |
//! | [`ReversalStyle::Iso8583Advice`] | 0420, then repeats 0421 |
//! | [`ReversalStyle::Iso20022InquiryThenCancel`] | pacs.028 status inquiry until it answers; executed → camt.056 cancellation; not executed or rejected → nothing to reverse |
//! | [`ReversalStyle::JsonCancel`] | the JSON bank's cancel call, repeated |
//!
//! Each message is repeated with exponential backoff (equal jitter from a
//! seeded [`SplitMix64`], never shorter than the previous backoff, capped)
//! until acknowledged; after `max_attempts` attempts of one message the item
//! is **parked** in the manual queue (listable, counted). Items are served in
//! order of due time, ties in order of scheduling, so a failing item goes to
//! the back after every attempt and never blocks the others.
//!
//! A **late response** to the original ([`ReversalQueue::on_late_response`]):
//! a decline closes the item as nothing-to-reverse; an approval confirms the
//! reversal is needed (and lets an ISO 20022 item skip its status inquiry).
//! The caller journals it and never forwards it upstream.
//!
//! Every attempt handed out by [`ReversalQueue::poll_due`] must be reported
//! once with [`ReversalQueue::on_result`] (`Timeout` from the switch's own
//! attempt timer): the queue keeps no timers of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fps_codecs::model::{BankCode, Mti, Transaction};

use crate::retry::SplitMix64;
use crate::time::{duration_ms, Millis};

/// Largest `max_attempts` per message.
pub const MAX_REVERSAL_ATTEMPTS: u32 = 64;
/// Largest queue capacity (active plus parked items).
pub const MAX_REVERSAL_QUEUE: usize = 1_000_000;
/// Longest backoff between attempts.
pub const MAX_REVERSAL_BACKOFF: Duration = Duration::from_secs(3600);

/// Settings of a [`ReversalQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReversalConfig {
    /// Attempts of one message before the item is parked (default 6).
    pub max_attempts: u32,
    /// Backoff after the first failed attempt (default 1 s).
    pub base_backoff_ms: u64,
    /// Longest backoff (default 60 s).
    pub max_backoff_ms: u64,
    /// Most items held, active and parked together (default 10 000).
    pub capacity: usize,
}

impl Default for ReversalConfig {
    fn default() -> Self {
        ReversalConfig {
            max_attempts: 6,
            base_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
            capacity: 10_000,
        }
    }
}

impl ReversalConfig {
    /// The settings with every value brought within its bound.
    pub fn clamped(self) -> Self {
        let max_backoff_ms = self.max_backoff_ms.min(duration_ms(MAX_REVERSAL_BACKOFF));
        ReversalConfig {
            max_attempts: self.max_attempts.clamp(1, MAX_REVERSAL_ATTEMPTS),
            base_backoff_ms: self.base_backoff_ms.min(max_backoff_ms),
            max_backoff_ms,
            capacity: self.capacity.clamp(1, MAX_REVERSAL_QUEUE),
        }
    }
}

/// The caller's id of a reversal (e.g. its journal record number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReversalId(pub u64);

/// How the bank wants an unknown outcome settled (from its dialect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReversalStyle {
    /// ISO 8583 reversal: 0400, repeats 0401.
    Iso8583Reversal,
    /// ISO 8583 reversal advice: 0420, repeats 0421.
    Iso8583Advice,
    /// ISO 20022: pacs.028 status inquiry, then camt.056 if executed.
    Iso20022InquiryThenCancel,
    /// The JSON bank's cancel call.
    JsonCancel,
}

/// A transaction to reverse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalItem {
    /// The caller's id; unique within the queue.
    pub id: ReversalId,
    /// The bank the original went to.
    pub bank: BankCode,
    /// The original request as sent to the bank (its ids build the reversal).
    pub original: Transaction,
    /// Which messages settle it.
    pub style: ReversalStyle,
}

/// The message an attempt sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReversalMessage {
    /// ISO 8583 0400.
    Reversal,
    /// ISO 8583 0401.
    RepeatReversal,
    /// ISO 8583 0420.
    ReversalAdvice,
    /// ISO 8583 0421.
    RepeatReversalAdvice,
    /// ISO 20022 pacs.028 (repeats are identical).
    StatusInquiry,
    /// ISO 20022 camt.056 (repeats are identical).
    Cancellation,
    /// The JSON bank's cancel call (repeats are identical).
    JsonCancel,
}

impl ReversalMessage {
    /// The canonical MTI of the ISO 8583 messages.
    pub fn mti(self) -> Option<Mti> {
        match self {
            ReversalMessage::Reversal => Some(Mti::REVERSAL),
            ReversalMessage::RepeatReversal => Some(Mti::REVERSAL.repeat()),
            ReversalMessage::ReversalAdvice => Some(Mti::REVERSAL_ADVICE),
            ReversalMessage::RepeatReversalAdvice => Some(Mti::REVERSAL_ADVICE.repeat()),
            _ => None,
        }
    }
}

/// One send to make now: build `message` for item `id` and report its
/// result with [`ReversalQueue::on_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReversalAttempt {
    /// The item.
    pub id: ReversalId,
    /// What to send.
    pub message: ReversalMessage,
    /// 1 for the first send of this message, then 2, 3, ...
    pub attempt_no: u32,
}

/// How the bank answered an attempt (mapped by the switch from the dialect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// Reversal, advice, cancellation or cancel call accepted.
    Acknowledged,
    /// Refused. For a status inquiry: the original was rejected (nothing to
    /// reverse); for the other messages: a failed attempt, repeated.
    Rejected,
    /// No answer in time: a failed attempt, repeated.
    Timeout,
    /// The original was not executed (a status, or F39 25 "original not
    /// found" to a reversal): nothing to reverse.
    StatusSaysNotExecuted,
    /// The original was executed (status inquiry): cancel it.
    StatusSaysExecuted,
    /// Nothing left the switch (no link to the bank was up): the attempt
    /// does not count, the same message is tried again after a backoff, and
    /// an item is never parked for want of a link.
    NotSent,
}

/// Where an item stands after a call: what the caller should journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalStatus {
    /// Still queued: another attempt is scheduled (see `poll_timeout`).
    Pending,
    /// The bank acknowledged the reversal: journal "reversed"; removed.
    Acknowledged,
    /// The original never executed: journal "closed, nothing to reverse"; removed.
    ClosedNothingToReverse,
    /// Out of attempts: in the manual queue; raise the alert.
    Parked,
    /// No such item, or a stale report (another phase): ignore.
    Unknown,
}

/// Why an item was not queued.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// The queue holds `capacity` items (active plus parked).
    #[error("reversal queue full")]
    Full,
    /// An item with this id is already queued.
    #[error("reversal id already queued")]
    DuplicateId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// 0400/0420/JSON cancel.
    Reversing,
    /// pacs.028.
    Inquiring,
    /// camt.056.
    Cancelling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Due at this schedule key (also in `schedule`).
    Waiting { due: Millis, seq: u64 },
    /// Neither scheduled nor handed out (only inside a transition).
    Idle,
    /// Handed out, awaiting the report of this attempt.
    Outstanding { phase: Phase, attempt_no: u32 },
    /// In the manual queue.
    Parked,
}

#[derive(Debug)]
struct Entry {
    item: ReversalItem,
    phase: Phase,
    /// Attempts of the current phase's message handed out so far.
    attempts: u32,
    /// Last backoff used (ms), so backoff never shrinks.
    last_backoff_ms: u64,
    slot: Slot,
    late_approved: bool,
}

/// The store-and-forward reversal queue. See the module docs.
#[derive(Debug)]
pub struct ReversalQueue {
    config: ReversalConfig,
    entries: BTreeMap<ReversalId, Entry>,
    /// (due, scheduling sequence, id) of every waiting item.
    schedule: BTreeSet<(Millis, u64, ReversalId)>,
    next_seq: u64,
    parked: usize,
    rng: SplitMix64,
}

impl ReversalQueue {
    /// A queue with `config` (clamped) drawing jitter from `seed`.
    pub fn new(config: ReversalConfig, seed: u64) -> Self {
        ReversalQueue {
            config: config.clamped(),
            entries: BTreeMap::new(),
            schedule: BTreeSet::new(),
            next_seq: 0,
            parked: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// Queue `item`; its first attempt is due at `now`.
    pub fn enqueue(&mut self, item: ReversalItem, now: Millis) -> Result<(), EnqueueError> {
        if self.entries.contains_key(&item.id) {
            return Err(EnqueueError::DuplicateId);
        }
        if self.entries.len() >= self.config.capacity {
            return Err(EnqueueError::Full);
        }
        let phase = match item.style {
            ReversalStyle::Iso20022InquiryThenCancel => Phase::Inquiring,
            _ => Phase::Reversing,
        };
        let id = item.id;
        self.entries.insert(
            id,
            Entry {
                item,
                phase,
                attempts: 0,
                last_backoff_ms: 0,
                slot: Slot::Idle,
                late_approved: false,
            },
        );
        self.schedule_at(id, now);
        Ok(())
    }

    /// Up to `max` attempts due by `now`, earliest due first (ties in
    /// scheduling order). Each item is handed out at most once until its
    /// attempt is reported.
    pub fn poll_due(&mut self, now: Millis, max: usize) -> Vec<ReversalAttempt> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&(due, seq, id)) = self.schedule.first() else {
                break;
            };
            if due > now {
                break;
            }
            self.schedule.remove(&(due, seq, id));
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.attempts += 1;
            entry.slot = Slot::Outstanding {
                phase: entry.phase,
                attempt_no: entry.attempts,
            };
            out.push(ReversalAttempt {
                id,
                message: message_for(entry.item.style, entry.phase, entry.attempts),
                attempt_no: entry.attempts,
            });
        }
        out
    }

    /// Report how `attempt` went.
    pub fn on_result(
        &mut self,
        attempt: ReversalAttempt,
        result: AttemptResult,
        now: Millis,
    ) -> ReversalStatus {
        let Some(entry) = self.entries.get_mut(&attempt.id) else {
            return ReversalStatus::Unknown;
        };
        let phase = phase_of(attempt.message);
        let current = entry.slot
            == Slot::Outstanding {
                phase,
                attempt_no: attempt.attempt_no,
            };
        if current {
            entry.slot = Slot::Idle;
        }
        if phase != entry.phase {
            // A late approval moved the item on while this attempt was out:
            // whatever it says, the next phase starts now.
            if current {
                self.schedule_at(attempt.id, now);
                return ReversalStatus::Pending;
            }
            return ReversalStatus::Unknown;
        }
        if entry.slot == Slot::Parked {
            return ReversalStatus::Unknown;
        }
        // A failure counts only for the attempt outstanding now; an answer
        // to an earlier attempt of the same message still settles the item.
        use AttemptResult as R;
        match (entry.phase, result) {
            (Phase::Inquiring, R::StatusSaysExecuted) => {
                self.start_cancelling(attempt.id, now);
                ReversalStatus::Pending
            }
            (Phase::Inquiring, R::StatusSaysNotExecuted | R::Rejected)
            | (Phase::Reversing | Phase::Cancelling, R::StatusSaysNotExecuted) => {
                self.remove(attempt.id);
                ReversalStatus::ClosedNothingToReverse
            }
            (Phase::Reversing | Phase::Cancelling, R::Acknowledged) => {
                self.remove(attempt.id);
                ReversalStatus::Acknowledged
            }
            (_, R::NotSent) if current => self.not_sent(attempt.id, now),
            _ if current => self.failed(attempt.id, now),
            _ => ReversalStatus::Pending,
        }
    }

    /// A response to the original arrived after its deadline: a decline
    /// (`approved == false`) closes the item; an approval confirms the
    /// reversal (an ISO 20022 item goes straight to cancellation).
    pub fn on_late_response(
        &mut self,
        id: ReversalId,
        approved: bool,
        now: Millis,
    ) -> ReversalStatus {
        let Some(entry) = self.entries.get_mut(&id) else {
            return ReversalStatus::Unknown;
        };
        if !approved {
            self.remove(id);
            return ReversalStatus::ClosedNothingToReverse;
        }
        entry.late_approved = true;
        match entry.slot {
            Slot::Parked => ReversalStatus::Parked,
            _ if entry.phase == Phase::Inquiring => {
                self.start_cancelling(id, now);
                ReversalStatus::Pending
            }
            _ => ReversalStatus::Pending,
        }
    }

    /// Parked items (manual queue), by id.
    pub fn parked(&self) -> impl Iterator<Item = &ReversalItem> + '_ {
        self.entries
            .values()
            .filter(|e| e.slot == Slot::Parked)
            .map(|e| &e.item)
    }

    /// Every item held, active and parked (e.g. to re-journal them).
    pub fn items(&self) -> impl Iterator<Item = &ReversalItem> + '_ {
        self.entries.values().map(|e| &e.item)
    }

    /// An operator settled a parked item by hand: remove and return it.
    pub fn release_parked(&mut self, id: ReversalId) -> Option<ReversalItem> {
        if self.entries.get(&id)?.slot != Slot::Parked {
            return None;
        }
        self.remove(id).map(|e| e.item)
    }

    /// An operator re-arms a parked item: attempts start over, due at `now`.
    pub fn retry_parked(&mut self, id: ReversalId, now: Millis) -> bool {
        match self.entries.get_mut(&id) {
            Some(e) if e.slot == Slot::Parked => {
                e.attempts = 0;
                e.last_backoff_ms = 0;
                e.slot = Slot::Idle;
                self.parked -= 1;
                self.schedule_at(id, now);
                true
            }
            _ => false,
        }
    }

    /// The queued item `id` (to build its messages).
    pub fn item(&self, id: ReversalId) -> Option<&ReversalItem> {
        self.entries.get(&id).map(|e| &e.item)
    }

    /// Whether a late approval has confirmed item `id` must be reversed.
    pub fn is_confirmed(&self, id: ReversalId) -> bool {
        self.entries.get(&id).is_some_and(|e| e.late_approved)
    }

    /// Items held, active and parked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no item is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Items in the manual queue.
    pub fn parked_len(&self) -> usize {
        self.parked
    }

    /// When the next attempt is due (for the caller's timer).
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.schedule.first().map(|(due, _, _)| *due)
    }

    /// The settings in force (clamped).
    pub fn config(&self) -> &ReversalConfig {
        &self.config
    }

    /// Backoff after failed attempt `failed` (1-based) of a message whose
    /// previous backoff was `last_ms`: `d = min(base * 2^(failed-1), max)`,
    /// then `d/2 + jitter % (d/2 + 1)`, never below `last_ms`, never above max.
    pub fn backoff_ms(&self, failed: u32, last_ms: u64, jitter: u64) -> u64 {
        let c = &self.config;
        let exp = failed.saturating_sub(1).min(63);
        let full = c
            .base_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(c.max_backoff_ms);
        let half = full / 2;
        let jittered = half + jitter % (full - half + 1);
        jittered.max(last_ms).min(c.max_backoff_ms)
    }

    fn failed(&mut self, id: ReversalId, now: Millis) -> ReversalStatus {
        let jitter = self.rng.next_u64();
        let max_attempts = self.config.max_attempts;
        let Some(entry) = self.entries.get(&id) else {
            return ReversalStatus::Unknown;
        };
        if entry.attempts >= max_attempts {
            if let Some(e) = self.entries.get_mut(&id) {
                e.slot = Slot::Parked;
            }
            self.parked += 1;
            return ReversalStatus::Parked;
        }
        let delay = self.backoff_ms(entry.attempts, entry.last_backoff_ms, jitter);
        if let Some(e) = self.entries.get_mut(&id) {
            e.last_backoff_ms = delay;
        }
        self.schedule_at(id, now.plus_ms(delay));
        ReversalStatus::Pending
    }

    /// An attempt that never left: give its number back, wait, try again.
    fn not_sent(&mut self, id: ReversalId, now: Millis) -> ReversalStatus {
        let jitter = self.rng.next_u64();
        let Some(entry) = self.entries.get(&id) else {
            return ReversalStatus::Unknown;
        };
        let delay = self.backoff_ms(entry.attempts.max(1), entry.last_backoff_ms, jitter);
        if let Some(e) = self.entries.get_mut(&id) {
            e.attempts = e.attempts.saturating_sub(1);
            e.last_backoff_ms = delay;
        }
        self.schedule_at(id, now.plus_ms(delay));
        ReversalStatus::Pending
    }

    /// Move to the camt.056 phase. If an inquiry is still out, the
    /// cancellation is scheduled when that inquiry is reported, so an item
    /// never has two attempts out at once.
    fn start_cancelling(&mut self, id: ReversalId, now: Millis) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.phase = Phase::Cancelling;
        e.attempts = 0;
        e.last_backoff_ms = 0;
        if !matches!(e.slot, Slot::Outstanding { .. }) {
            self.schedule_at(id, now);
        }
    }

    /// (Re)schedule `id` at `due`, behind everything already scheduled then.
    fn schedule_at(&mut self, id: ReversalId, due: Millis) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if let Slot::Waiting { due, seq } = e.slot {
            self.schedule.remove(&(due, seq, id));
        }
        self.next_seq += 1;
        e.slot = Slot::Waiting {
            due,
            seq: self.next_seq,
        };
        self.schedule.insert((due, self.next_seq, id));
    }

    fn remove(&mut self, id: ReversalId) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        match e.slot {
            Slot::Waiting { due, seq } => {
                self.schedule.remove(&(due, seq, id));
            }
            Slot::Parked => self.parked -= 1,
            Slot::Idle | Slot::Outstanding { .. } => {}
        }
        Some(e)
    }
}

fn message_for(style: ReversalStyle, phase: Phase, attempt_no: u32) -> ReversalMessage {
    let first = attempt_no <= 1;
    match (style, phase) {
        (_, Phase::Inquiring) => ReversalMessage::StatusInquiry,
        (_, Phase::Cancelling) => ReversalMessage::Cancellation,
        (ReversalStyle::Iso8583Advice, _) if first => ReversalMessage::ReversalAdvice,
        (ReversalStyle::Iso8583Advice, _) => ReversalMessage::RepeatReversalAdvice,
        (ReversalStyle::JsonCancel, _) => ReversalMessage::JsonCancel,
        // An ISO 20022 item never reverses; kept total for the match.
        (ReversalStyle::Iso8583Reversal | ReversalStyle::Iso20022InquiryThenCancel, _) if first => {
            ReversalMessage::Reversal
        }
        _ => ReversalMessage::RepeatReversal,
    }
}

fn phase_of(message: ReversalMessage) -> Phase {
    match message {
        ReversalMessage::StatusInquiry => Phase::Inquiring,
        ReversalMessage::Cancellation => Phase::Cancelling,
        _ => Phase::Reversing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64, style: ReversalStyle) -> ReversalItem {
        ReversalItem {
            id: ReversalId(id),
            bank: BankCode::parse(b"004").unwrap(),
            original: Transaction::new(Mti::CREDIT_TRANSFER),
            style,
        }
    }

    fn queue(max_attempts: u32) -> ReversalQueue {
        ReversalQueue::new(
            ReversalConfig {
                max_attempts,
                base_backoff_ms: 100,
                max_backoff_ms: 1_000,
                capacity: 4,
            },
            7,
        )
    }

    #[test]
    fn iso8583_reversal_repeats_as_0401_until_acknowledged() {
        let mut q = queue(6);
        q.enqueue(item(1, ReversalStyle::Iso8583Reversal), Millis(0))
            .unwrap();
        let a = q.poll_due(Millis(0), 10);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].message, ReversalMessage::Reversal);
        assert_eq!(a[0].message.mti(), Some(Mti::REVERSAL));
        assert!(q.poll_due(Millis(0), 10).is_empty(), "outstanding once");
        assert_eq!(
            q.on_result(a[0], AttemptResult::Timeout, Millis(10)),
            ReversalStatus::Pending
        );
        let due = q.poll_timeout().unwrap();
        assert!(due >= Millis(60) && due <= Millis(110));
        let a = q.poll_due(due, 10);
        assert_eq!(a[0].message, ReversalMessage::RepeatReversal);
        assert_eq!(a[0].message.mti().unwrap().as_str(), "0401");
        assert_eq!(
            q.on_result(a[0], AttemptResult::Acknowledged, due),
            ReversalStatus::Acknowledged
        );
        assert!(q.is_empty());
    }

    #[test]
    fn attempts_that_never_left_do_not_count_and_never_park() {
        let mut q = queue(2);
        q.enqueue(item(1, ReversalStyle::Iso8583Reversal), Millis(0))
            .unwrap();
        let mut now = Millis(0);
        // Far more "no link" rounds than max_attempts: still the first 0400.
        for _ in 0..10 {
            let a = q.poll_due(now, 1);
            assert_eq!(a[0].message, ReversalMessage::Reversal);
            assert_eq!(a[0].attempt_no, 1);
            assert_eq!(
                q.on_result(a[0], AttemptResult::NotSent, now),
                ReversalStatus::Pending
            );
            let due = q.poll_timeout().unwrap();
            assert!(due > now, "backs off");
            now = due;
        }
        assert_eq!(q.parked_len(), 0);
        let a = q.poll_due(now, 1);
        assert_eq!(
            q.on_result(a[0], AttemptResult::Timeout, now),
            ReversalStatus::Pending
        );
        now = q.poll_timeout().unwrap();
        let a = q.poll_due(now, 1);
        assert_eq!(a[0].message, ReversalMessage::RepeatReversal);
        assert_eq!(
            q.on_result(a[0], AttemptResult::Timeout, now),
            ReversalStatus::Parked
        );
    }

    #[test]
    fn advice_style_uses_0420_then_0421_and_parks_after_max_attempts() {
        let mut q = queue(3);
        q.enqueue(item(1, ReversalStyle::Iso8583Advice), Millis(0))
            .unwrap();
        let mut now = Millis(0);
        let mut kinds = Vec::new();
        let mut last = ReversalStatus::Pending;
        for _ in 0..3 {
            now = q.poll_timeout().unwrap();
            let a = q.poll_due(now, 1);
            kinds.push(a[0].message);
            last = q.on_result(a[0], AttemptResult::Rejected, now);
        }
        assert_eq!(
            kinds,
            [
                ReversalMessage::ReversalAdvice,
                ReversalMessage::RepeatReversalAdvice,
                ReversalMessage::RepeatReversalAdvice
            ]
        );
        assert_eq!(last, ReversalStatus::Parked);
        assert_eq!(q.parked_len(), 1);
        assert_eq!(q.parked().count(), 1);
        assert_eq!(q.poll_timeout(), None);
        assert!(q.retry_parked(ReversalId(1), now));
        assert_eq!(q.parked_len(), 0);
        assert_eq!(q.poll_due(now, 1)[0].attempt_no, 1);
    }

    #[test]
    fn iso20022_inquires_then_cancels_only_if_executed() {
        let mut q = queue(6);
        q.enqueue(item(1, ReversalStyle::Iso20022InquiryThenCancel), Millis(0))
            .unwrap();
        q.enqueue(item(2, ReversalStyle::Iso20022InquiryThenCancel), Millis(0))
            .unwrap();
        let a = q.poll_due(Millis(0), 10);
        assert!(a
            .iter()
            .all(|a| a.message == ReversalMessage::StatusInquiry));
        assert_eq!(
            q.on_result(a[0], AttemptResult::StatusSaysExecuted, Millis(5)),
            ReversalStatus::Pending
        );
        assert_eq!(
            q.on_result(a[1], AttemptResult::StatusSaysNotExecuted, Millis(5)),
            ReversalStatus::ClosedNothingToReverse
        );
        let c = q.poll_due(Millis(5), 10);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].message, ReversalMessage::Cancellation);
        assert_eq!(c[0].attempt_no, 1);
        // A stale report from the inquiry phase is ignored.
        assert_eq!(
            q.on_result(a[0], AttemptResult::Timeout, Millis(6)),
            ReversalStatus::Unknown
        );
        assert_eq!(
            q.on_result(c[0], AttemptResult::Acknowledged, Millis(7)),
            ReversalStatus::Acknowledged
        );
        assert!(q.is_empty());
    }

    #[test]
    fn late_responses_settle_or_confirm() {
        let mut q = queue(6);
        q.enqueue(item(1, ReversalStyle::JsonCancel), Millis(0))
            .unwrap();
        q.enqueue(item(2, ReversalStyle::Iso20022InquiryThenCancel), Millis(0))
            .unwrap();
        let a = q.poll_due(Millis(0), 10);
        assert_eq!(a[0].message, ReversalMessage::JsonCancel);
        assert_eq!(
            q.on_late_response(ReversalId(1), false, Millis(1)),
            ReversalStatus::ClosedNothingToReverse
        );
        // The outstanding attempt's report no longer matters.
        assert_eq!(
            q.on_result(a[0], AttemptResult::Timeout, Millis(2)),
            ReversalStatus::Unknown
        );
        // A late approval skips the inquiry.
        assert_eq!(
            q.on_late_response(ReversalId(2), true, Millis(3)),
            ReversalStatus::Pending
        );
        assert!(q.is_confirmed(ReversalId(2)));
        // Its inquiry is still out: never two attempts at once.
        assert!(q.poll_due(Millis(3), 10).is_empty());
        assert_eq!(
            q.on_result(a[1], AttemptResult::Timeout, Millis(3)),
            ReversalStatus::Pending
        );
        let c = q.poll_due(Millis(3), 10);
        assert_eq!(c[0].message, ReversalMessage::Cancellation);
        assert_eq!(
            q.on_late_response(ReversalId(9), true, Millis(3)),
            ReversalStatus::Unknown
        );
    }

    #[test]
    fn capacity_and_duplicate_ids_are_refused() {
        let mut q = queue(1);
        for i in 0..4 {
            q.enqueue(item(i, ReversalStyle::Iso8583Reversal), Millis(0))
                .unwrap();
        }
        assert_eq!(
            q.enqueue(item(0, ReversalStyle::Iso8583Reversal), Millis(0)),
            Err(EnqueueError::DuplicateId)
        );
        assert_eq!(
            q.enqueue(item(9, ReversalStyle::Iso8583Reversal), Millis(0)),
            Err(EnqueueError::Full)
        );
        // Parked items still count: they are not forgotten.
        for a in q.poll_due(Millis(0), 10) {
            assert_eq!(
                q.on_result(a, AttemptResult::Timeout, Millis(0)),
                ReversalStatus::Parked
            );
        }
        assert_eq!(
            q.enqueue(item(9, ReversalStyle::Iso8583Reversal), Millis(0)),
            Err(EnqueueError::Full)
        );
        assert!(q.release_parked(ReversalId(0)).is_some());
        assert!(q
            .enqueue(item(9, ReversalStyle::Iso8583Reversal), Millis(0))
            .is_ok());
    }

    #[test]
    fn backoff_doubles_is_monotone_and_capped() {
        let q = queue(6);
        let mut last = 0;
        for n in 1..20 {
            for jitter in [0, 7, u64::MAX] {
                let d = q.backoff_ms(n, last, jitter);
                assert!(d >= last && d <= 1_000);
            }
            last = q.backoff_ms(n, last, n as u64 * 31);
        }
        assert_eq!(q.backoff_ms(1, 0, 0), 50);
        assert_eq!(q.backoff_ms(1, 0, 50), 100);
        assert_eq!(q.backoff_ms(40, 0, 0), 500);
    }
}
