//! Property tests of the idempotency index: random interleavings of claims,
//! duplicates, completions, abandons, storage lookups and expiry across
//! client scopes, against a model of what storage (the journal) holds.
//!
//! Checked after every step:
//! - a key never gets a second `New` while it is in flight or retained (no
//!   double debit), even after it was evicted from memory;
//! - a retry of a retained key with the same content gets the original outcome;
//! - different content under an in-flight or retained key gets `Mismatch`;
//! - every waiter of a key is woken exactly once, all with the same answer;
//! - the index never holds more than its capacity.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fps_codecs::model::{
    AmountMinor, AuthId, BankCode, Currency, IdempotencyKey, Mti, ResponseCode, Transaction,
};
use fps_routing::{
    Claim, ClientScope, IdempotencyIndex, Lookup, LookupTicket, Millis, Outcome, StoredKey, Ticket,
    WaiterToken,
};
use proptest::prelude::*;

const SCOPES: usize = 2;
const KEYS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Claim {
        scope: usize,
        key: usize,
        content: u8,
    },
    Complete {
        pick: usize,
        code: u8,
    },
    Abandon {
        pick: usize,
    },
    Resolve {
        pick: usize,
    },
    Advance {
        ms: u64,
    },
    Expire {
        max: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..SCOPES, 0..KEYS, 0u8..2).prop_map(|(scope, key, content)| Op::Claim { scope, key, content }),
        3 => (any::<usize>(), 0u8..3).prop_map(|(pick, code)| Op::Complete { pick, code }),
        1 => any::<usize>().prop_map(|pick| Op::Abandon { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Resolve { pick }),
        2 => (0u64..400).prop_map(|ms| Op::Advance { ms }),
        1 => (0usize..4).prop_map(|max| Op::Expire { max }),
    ]
}

type Slot = (usize, usize);

fn request(key: usize, content: u8, stan_seed: u32) -> Transaction {
    let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
    t.idempotency_key = Some(IdempotencyKey::parse(format!("key-{key}").as_bytes()).unwrap());
    t.amount = Some(AmountMinor::new(100 + u64::from(content)).unwrap());
    t.currency = Some(Currency::HKD);
    t.receiving_bank = Some(BankCode::parse(b"004").unwrap());
    t.stan = Some(fps_codecs::model::Stan::new(stan_seed % 999_999).unwrap());
    t
}

fn outcome(code: u8, n: u32) -> Outcome {
    let rc = [
        ResponseCode::APPROVED,
        ResponseCode::DO_NOT_HONOUR,
        ResponseCode::LATE,
    ][usize::from(code % 3)];
    Outcome {
        auth_id: Some(AuthId::parse(format!("{:06}", n % 1_000_000).as_bytes()).unwrap()),
        ..Outcome::new(rc)
    }
}

/// What storage holds: the final outcome and content of completed keys.
struct Stored {
    content: u8,
    outcome: Outcome,
    completed_at: Millis,
}

struct Model {
    retention_ms: u64,
    now: Millis,
    stored: BTreeMap<Slot, Stored>,
    /// In flight (sent or being looked up): slot → content.
    in_flight: BTreeMap<Slot, u8>,
    waiters: BTreeMap<Slot, BTreeSet<WaiterToken>>,
    tickets: Vec<(Slot, Ticket)>,
    lookups: Vec<(Slot, LookupTicket)>,
}

impl Model {
    fn retained(&self, slot: Slot) -> Option<&Stored> {
        self.stored
            .get(&slot)
            .filter(|s| self.now < s.completed_at.plus_ms(self.retention_ms))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_double_new_and_duplicates_get_the_original(
        capacity in 1usize..6,
        retention_ms in 1u64..2000,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let scopes: Vec<ClientScope> =
            (0..SCOPES).map(|i| ClientScope::new(&format!("CN=gw-{i}")).unwrap()).collect();
        let mut idx = IdempotencyIndex::new(capacity, Duration::from_millis(retention_ms));
        let mut m = Model {
            retention_ms,
            now: Millis(0),
            stored: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            waiters: BTreeMap::new(),
            tickets: Vec::new(),
            lookups: Vec::new(),
        };
        let mut n = 0u32;
        for op in ops {
            n += 1;
            match op {
                Op::Claim { scope, key, content } => {
                    let slot = (scope, key);
                    let req = request(key, content, n);
                    let known = m.in_flight.get(&slot).copied()
                        .or_else(|| m.retained(slot).map(|s| s.content));
                    match idx.claim(&scopes[scope], &req, m.now) {
                        Ok(Claim::New(t)) => {
                            prop_assert!(known.is_none(), "second New for {:?} (known {:?})", slot, known);
                            m.in_flight.insert(slot, content);
                            m.tickets.push((slot, t));
                        }
                        Ok(Claim::NeedsLookup(l)) => {
                            prop_assert!(!m.in_flight.contains_key(&slot));
                            m.in_flight.insert(slot, content);
                            m.lookups.push((slot, l));
                        }
                        Ok(Claim::Duplicate(o)) => {
                            let s = m.retained(slot).or(m.stored.get(&slot));
                            prop_assert!(s.is_some(), "duplicate of unknown {:?}", slot);
                            let s = s.unwrap();
                            prop_assert_eq!(s.content, content);
                            prop_assert_eq!(&o, &s.outcome);
                            let answer = o.answer_for(&req);
                            prop_assert_eq!(answer.stan, req.stan);
                        }
                        Ok(Claim::InFlight(w)) => {
                            prop_assert_eq!(m.in_flight.get(&slot).copied(), Some(content));
                            prop_assert!(m.waiters.entry(slot).or_default().insert(w));
                        }
                        Ok(Claim::Mismatch) => {
                            let other = m.in_flight.get(&slot).copied()
                                .or_else(|| m.stored.get(&slot).map(|s| s.content));
                            prop_assert!(other.is_some() && other != Some(content));
                        }
                        Err(e) => {
                            // Full of in-flight keys or too many waiters only.
                            prop_assert!(
                                m.in_flight.len() >= capacity
                                    || m.waiters.get(&slot).map_or(0, BTreeSet::len) >= fps_routing::idempotency::MAX_WAITERS_PER_KEY,
                                "{:?}", e
                            );
                        }
                    }
                }
                Op::Complete { pick, code } => {
                    if m.tickets.is_empty() { continue; }
                    let (slot, t) = m.tickets.swap_remove(pick % m.tickets.len());
                    let o = outcome(code, n);
                    let content = m.in_flight.remove(&slot).unwrap();
                    // Journaled before completing.
                    m.stored.insert(slot, Stored { content, outcome: o.clone(), completed_at: m.now });
                    let woken: BTreeSet<WaiterToken> = idx.complete(t, o, m.now).into_iter().collect();
                    prop_assert_eq!(woken, m.waiters.remove(&slot).unwrap_or_default());
                }
                Op::Abandon { pick } => {
                    if m.tickets.is_empty() { continue; }
                    let (slot, t) = m.tickets.swap_remove(pick % m.tickets.len());
                    m.in_flight.remove(&slot);
                    let woken: BTreeSet<WaiterToken> = idx.abandon(t).into_iter().collect();
                    prop_assert_eq!(woken, m.waiters.remove(&slot).unwrap_or_default());
                }
                Op::Resolve { pick } => {
                    if m.lookups.is_empty() { continue; }
                    let (slot, l) = m.lookups.swap_remove(pick % m.lookups.len());
                    let content = m.in_flight[&slot];
                    let found = m.retained(slot).map(|s| StoredKey {
                        fingerprint: fps_routing::Fingerprint::of(&request(slot.1, s.content, 0)),
                        outcome: s.outcome.clone(),
                    });
                    let expect_same = m.retained(slot).map(|s| s.content == content);
                    match idx.resolve_lookup(l, found, m.now) {
                        Lookup::New(t) => {
                            prop_assert_eq!(expect_same, None);
                            m.tickets.push((slot, t));
                        }
                        Lookup::Duplicate { outcome, waiters } => {
                            prop_assert_eq!(expect_same, Some(true));
                            prop_assert_eq!(&outcome, &m.stored[&slot].outcome);
                            m.in_flight.remove(&slot);
                            let woken: BTreeSet<WaiterToken> = waiters.into_iter().collect();
                            prop_assert_eq!(woken, m.waiters.remove(&slot).unwrap_or_default());
                        }
                        Lookup::Mismatch { waiters } => {
                            prop_assert_eq!(expect_same, Some(false));
                            m.in_flight.remove(&slot);
                            let woken: BTreeSet<WaiterToken> = waiters.into_iter().collect();
                            prop_assert_eq!(woken, m.waiters.remove(&slot).unwrap_or_default());
                        }
                    }
                }
                Op::Advance { ms } => m.now = m.now.plus_ms(ms),
                Op::Expire { max } => {
                    prop_assert!(idx.expire(m.now, max) <= max);
                }
            }
            prop_assert!(idx.len() <= idx.capacity());
            prop_assert!(idx.in_flight() == m.in_flight.len());
        }
    }
}
