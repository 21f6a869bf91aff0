//! Property tests of the reversal queue: random orderings of bank answers,
//! timeouts and late responses to the original, then a drain.
//!
//! Checked:
//! - every item ends Acknowledged, ClosedNothingToReverse or Parked;
//! - an item is parked only after exactly `max_attempts` attempts of a message;
//! - an item is never handed out twice before its attempt is reported;
//! - items are served round-robin: a permanently failing item starves no one;
//! - backoff is monotone non-decreasing and capped;
//! - the queue never holds more than its capacity.

use std::collections::{BTreeMap, BTreeSet};

use fps_codecs::model::{BankCode, Mti, Transaction};
use fps_routing::{
    AttemptResult, Millis, ReversalAttempt, ReversalConfig, ReversalId, ReversalItem,
    ReversalQueue, ReversalStatus, ReversalStyle,
};
use proptest::prelude::*;

fn item(id: u64, style: ReversalStyle) -> ReversalItem {
    ReversalItem {
        id: ReversalId(id),
        bank: BankCode::parse(b"004").unwrap(),
        original: Transaction::new(Mti::CREDIT_TRANSFER),
        style,
    }
}

fn style() -> impl Strategy<Value = ReversalStyle> {
    prop_oneof![
        Just(ReversalStyle::Iso8583Reversal),
        Just(ReversalStyle::Iso8583Advice),
        Just(ReversalStyle::Iso20022InquiryThenCancel),
        Just(ReversalStyle::JsonCancel),
    ]
}

fn result() -> impl Strategy<Value = AttemptResult> {
    prop_oneof![
        2 => Just(AttemptResult::Timeout),
        1 => Just(AttemptResult::Rejected),
        1 => Just(AttemptResult::Acknowledged),
        1 => Just(AttemptResult::StatusSaysExecuted),
        1 => Just(AttemptResult::StatusSaysNotExecuted),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(ReversalStyle),
    Poll(usize),
    Report { pick: usize, result: AttemptResult },
    Late { id: u64, approved: bool },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => style().prop_map(Op::Enqueue),
        3 => (0usize..4).prop_map(Op::Poll),
        4 => (any::<usize>(), result()).prop_map(|(pick, result)| Op::Report { pick, result }),
        1 => (0u64..12, any::<bool>()).prop_map(|(id, approved)| Op::Late { id, approved }),
        2 => (0u64..3000).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Acknowledged,
    Closed,
    Parked,
}

struct Model {
    max_attempts: u32,
    outstanding: Vec<ReversalAttempt>,
    ended: BTreeMap<ReversalId, End>,
}

impl Model {
    fn settle(&mut self, id: ReversalId, status: ReversalStatus, attempt_no: Option<u32>) {
        let end = match status {
            ReversalStatus::Acknowledged => End::Acknowledged,
            ReversalStatus::ClosedNothingToReverse => End::Closed,
            ReversalStatus::Parked => {
                if let Some(n) = attempt_no {
                    assert_eq!(n, self.max_attempts, "parked after {n} attempts");
                }
                End::Parked
            }
            ReversalStatus::Pending | ReversalStatus::Unknown => return,
        };
        // A parked item may later be closed by a late decline.
        let prev = self.ended.insert(id, end);
        assert!(
            prev.is_none() || prev == Some(End::Parked) && end == End::Closed,
            "{id:?} ended twice: {prev:?} then {end:?}"
        );
        self.outstanding.retain(|a| a.id != id);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn every_item_ends_settled_or_parked(
        max_attempts in 1u32..7,
        base in 0u64..500,
        cap in 0u64..5000,
        capacity in 1usize..8,
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let mut q = ReversalQueue::new(
            ReversalConfig { max_attempts, base_backoff_ms: base, max_backoff_ms: cap, capacity },
            seed,
        );
        let mut m = Model { max_attempts, outstanding: Vec::new(), ended: BTreeMap::new() };
        let mut enqueued = BTreeSet::new();
        let mut next_id = 0u64;
        let mut now = Millis(0);
        for op in ops {
            match op {
                Op::Enqueue(style) => {
                    let id = next_id;
                    let r = q.enqueue(item(id, style), now);
                    if r.is_ok() {
                        enqueued.insert(ReversalId(id));
                        next_id += 1;
                    } else {
                        prop_assert_eq!(q.len(), capacity);
                    }
                }
                Op::Poll(max) => {
                    let due = q.poll_due(now, max);
                    prop_assert!(due.len() <= max);
                    for a in due {
                        prop_assert!(!m.outstanding.iter().any(|o| o.id == a.id), "{:?} handed out twice", a.id);
                        prop_assert!(a.attempt_no >= 1 && a.attempt_no <= max_attempts);
                        m.outstanding.push(a);
                    }
                }
                Op::Report { pick, result } => {
                    if m.outstanding.is_empty() { continue; }
                    let a = m.outstanding.swap_remove(pick % m.outstanding.len());
                    let status = q.on_result(a, result, now);
                    m.settle(a.id, status, Some(a.attempt_no));
                }
                Op::Late { id, approved } => {
                    let status = q.on_late_response(ReversalId(id), approved, now);
                    if !approved && enqueued.contains(&ReversalId(id)) {
                        let ended = m.ended.get(&ReversalId(id)).copied();
                        // A decline closes anything not yet settled.
                        if ended.is_none() || ended == Some(End::Parked) {
                            prop_assert_eq!(status, ReversalStatus::ClosedNothingToReverse);
                        }
                    }
                    if status == ReversalStatus::ClosedNothingToReverse {
                        m.settle(ReversalId(id), status, None);
                    }
                }
                Op::Advance(ms) => now = now.plus_ms(ms),
            }
            prop_assert!(q.len() <= capacity);
            let parked = m.ended.values().filter(|e| **e == End::Parked).count();
            prop_assert_eq!(q.parked_len(), parked);
        }
        // Drain: the bank never answers again; everything must end.
        for _ in 0..(enqueued.len() as u32 * (2 * max_attempts + 2)) {
            for a in std::mem::take(&mut m.outstanding) {
                let status = q.on_result(a, AttemptResult::Timeout, now);
                m.settle(a.id, status, Some(a.attempt_no));
            }
            let Some(t) = q.poll_timeout() else { break };
            now = now.max(t);
            m.outstanding = q.poll_due(now, usize::MAX);
        }
        prop_assert_eq!(q.poll_timeout(), None);
        for id in &enqueued {
            prop_assert!(m.ended.contains_key(id), "{:?} never ended", id);
        }
        prop_assert_eq!(q.len(), q.parked_len());
        prop_assert_eq!(q.parked().count(), q.parked_len());
    }

    #[test]
    fn a_failing_item_starves_no_one(
        items in 2u64..8,
        max_attempts in 2u32..7,
        rounds in 1u32..5,
        seed in any::<u64>(),
    ) {
        // Zero backoff: every item is always due, so the order is pure fairness.
        let mut q = ReversalQueue::new(
            ReversalConfig { max_attempts, base_backoff_ms: 0, max_backoff_ms: 0, capacity: 16 },
            seed,
        );
        for id in 0..items {
            q.enqueue(item(id, ReversalStyle::Iso8583Reversal), Millis(0)).unwrap();
        }
        let rounds = rounds.min(max_attempts - 1);
        for i in 0..u64::from(rounds) * items {
            let a = q.poll_due(Millis(i), 1);
            prop_assert_eq!(a.len(), 1);
            prop_assert_eq!(a[0].id, ReversalId(i % items), "round-robin order");
            // Every item keeps failing: each goes to the back after its attempt.
            prop_assert_eq!(q.on_result(a[0], AttemptResult::Timeout, Millis(i)), ReversalStatus::Pending);
        }
    }

    #[test]
    fn backoff_is_monotone_and_capped(
        max_attempts in 1u32..20,
        base in 0u64..2000,
        cap in 0u64..20_000,
        seed in any::<u64>(),
        gaps in proptest::collection::vec(0u64..100, 20),
    ) {
        let mut q = ReversalQueue::new(
            ReversalConfig { max_attempts, base_backoff_ms: base, max_backoff_ms: cap, capacity: 1 },
            seed,
        );
        q.enqueue(item(1, ReversalStyle::JsonCancel), Millis(0)).unwrap();
        let mut now = Millis(0);
        let mut last = 0u64;
        for gap in gaps {
            let Some(due) = q.poll_timeout() else { break };
            now = now.max(due);
            let a = q.poll_due(now, 1);
            prop_assert_eq!(a.len(), 1);
            now = now.plus_ms(gap);
            if q.on_result(a[0], AttemptResult::Timeout, now) == ReversalStatus::Parked {
                prop_assert_eq!(a[0].attempt_no, q.config().max_attempts);
                break;
            }
            let delay = q.poll_timeout().unwrap().as_u64() - now.as_u64();
            prop_assert!(delay >= last, "backoff shrank: {} < {}", delay, last);
            prop_assert!(delay <= q.config().max_backoff_ms);
            last = delay;
        }
    }
}
