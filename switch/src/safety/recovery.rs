//! Crash recovery (DESIGN.md invariant 6): fold the journal's records, in
//! order, into what must happen at start-up.
//!
//! - A transaction with a `Final` record: its idempotency key is restored
//!   with that outcome (a retry gets the original answer).
//! - `Sent` without `Final`: the outcome is unknown. It is journaled as
//!   reversing with a final `68`, its key completes with `68`, and its
//!   reversal (or status inquiry) is queued.
//! - `Reversing` without `ReversalClosed`: the reversal resumes (parked
//!   ones too: a restart re-arms them).
//! - Outbound STAN/RRN per bank continue after the last ones sent.
//!
//! The fold keeps only transactions still open, so its memory is bounded by
//! what was in flight at the crash, not by the journal's length.

use std::collections::HashMap;

use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::ResponseCode;
use fps_routing::idempotency::{
    Claim, ClientScope, Fingerprint, IdempotencyIndex, Outcome, RequestKey, StoredKey,
};
use fps_routing::Millis;

use super::record::{Record, TxnId};
use crate::keystore::{KeyRecord, KeyStore, KeyStoreError};

/// Pauses while the key store's queue is full during catch-up (its writer
/// drains it meanwhile), and how many before giving up on one key.
const CATCH_UP_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);
const CATCH_UP_TRIES: usize = 5_000;

/// Transactions open at the end of the journal, per state.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Sent without a final answer: reverse (bank index, bytes as sent).
    pub unknown: Vec<Pending>,
    /// Under reversal: resume.
    pub reversing: Vec<Pending>,
    /// Per bank (pipeline order): last outbound STAN and RRN journaled.
    pub last_ids: Vec<Option<(u32, u64)>>,
    /// First transaction id free for new requests.
    pub next_txn: u64,
    /// Records read.
    pub records: u64,
    /// Completed keys restored to the index.
    pub keys_restored: u64,
    /// Records that could not be interpreted (logged; should be 0).
    pub bad_records: u64,
    /// Completed keys written to the key store that it had not committed.
    pub keys_caught_up: u64,
}

/// A transaction that needs its reversal (re)started.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The switch's id.
    pub txn: TxnId,
    /// Index of the bank's pool.
    pub bank: usize,
    /// The original in the bank's codec, as sent.
    pub wire: Vec<u8>,
    /// Client scope and canonical request (to complete its key with 68).
    pub key: Option<(String, Vec<u8>)>,
}

/// Folds records one at a time (the journal's replay callback).
#[derive(Debug)]
pub struct Replay<'a> {
    banks: &'a [String],
    index: &'a mut IdempotencyIndex,
    now: Millis,
    canonical: Iso8583Codec,
    open: HashMap<TxnId, Open>,
    reversing: HashMap<TxnId, Pending>,
    /// The key store and the last journal lsn it holds.
    keystore: Option<(&'a KeyStore, u64)>,
    out: Recovery,
}

#[derive(Debug)]
struct Open {
    scope: String,
    request: Vec<u8>,
    sent: Option<(usize, Vec<u8>)>,
}

impl<'a> Replay<'a> {
    /// A fold restoring keys into `index`; `banks` are the pool names in
    /// pipeline order.
    pub fn new(banks: &'a [String], index: &'a mut IdempotencyIndex, now: Millis) -> Self {
        Replay {
            banks,
            index,
            now,
            keystore: None,
            canonical: Iso8583Codec::builtin("canonical")
                .expect("the canonical dialect is built in"),
            open: HashMap::new(),
            reversing: HashMap::new(),
            out: Recovery {
                last_ids: vec![None; banks.len()],
                next_txn: 1,
                ..Recovery::default()
            },
        }
    }

    /// Also bring `keystore` up to date: completed keys after its
    /// high-water lsn (queued but not committed before the crash) are put
    /// again, so a key evicted from memory is always found on disk.
    pub fn with_keystore(mut self, keystore: &'a KeyStore) -> Self {
        self.keystore = Some((keystore, keystore.high_water_lsn()));
        self
    }

    /// Take one journal record (its lsn and Unix time in milliseconds).
    pub fn record(&mut self, lsn: u64, unix_ms: u64, payload: &[u8]) {
        self.out.records += 1;
        let rec = match Record::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                self.out.bad_records += 1;
                tracing::error!(error = %e, records = self.out.records, "journal record not understood: skipped");
                return;
            }
        };
        let txn = rec.txn();
        self.out.next_txn = self.out.next_txn.max(txn.0 + 1);
        match rec {
            Record::Received { scope, request, .. } => {
                self.open.insert(
                    txn,
                    Open {
                        scope: scope.to_owned(),
                        request: request.to_vec(),
                        sent: None,
                    },
                );
            }
            Record::Sent {
                bank,
                stan,
                rrn,
                wire,
                ..
            } => {
                let Some(i) = self.bank(bank) else {
                    return;
                };
                self.out.last_ids[i] = Some((stan, rrn));
                if let Some(o) = self.open.get_mut(&txn) {
                    o.sent = Some((i, wire.to_vec()));
                }
            }
            Record::Final { outcome, .. } => {
                if let Some(o) = self.open.remove(&txn) {
                    self.catch_up(lsn, unix_ms, &o, &outcome);
                    self.restore(&o.scope, &o.request, outcome);
                }
            }
            Record::Reversing { bank, wire, .. } => {
                let Some(i) = self.bank(bank) else {
                    return;
                };
                self.reversing.insert(
                    txn,
                    Pending {
                        txn,
                        bank: i,
                        wire: wire.to_vec(),
                        key: None,
                    },
                );
            }
            Record::ReversalClosed { .. } => {
                self.reversing.remove(&txn);
            }
            Record::Parked { .. } => {}
            Record::Released { .. } => {
                self.open.remove(&txn);
            }
        }
    }

    /// What is left to do.
    pub fn finish(mut self) -> Recovery {
        for (txn, o) in self.open.drain() {
            // Received but never sent: nothing happened; a retry goes through.
            if let Some((bank, wire)) = o.sent {
                if self.reversing.contains_key(&txn) {
                    // Reversal journaled but not the final 68: complete the key.
                    self.out.keys_restored += 1;
                    restore_key(
                        &self.canonical,
                        self.index,
                        self.now,
                        &o.scope,
                        &o.request,
                        Outcome::new(ResponseCode::LATE),
                    );
                    continue;
                }
                self.out.unknown.push(Pending {
                    txn,
                    bank,
                    wire,
                    key: Some((o.scope, o.request)),
                });
            }
        }
        self.out.reversing = self.reversing.into_values().collect();
        self.out.unknown.sort_by_key(|p| p.txn);
        self.out.reversing.sort_by_key(|p| p.txn);
        self.out
    }

    fn bank(&mut self, name: &str) -> Option<usize> {
        let i = self.banks.iter().position(|b| b == name);
        if i.is_none() {
            self.out.bad_records += 1;
            tracing::error!(
                bank = name,
                "journal names a bank that is no longer configured: record skipped"
            );
        }
        i
    }

    fn catch_up(&mut self, lsn: u64, unix_ms: u64, o: &Open, outcome: &Outcome) {
        let Some((ks, high_water)) = self.keystore else {
            return;
        };
        if lsn <= high_water {
            return;
        }
        let (Ok(scope), Ok(req)) = (
            ClientScope::new(&o.scope),
            self.canonical.decode(&o.request),
        ) else {
            return;
        };
        let Some(key) = RequestKey::of(&req) else {
            return;
        };
        let rec = KeyRecord {
            scope,
            key,
            stored: StoredKey {
                fingerprint: Fingerprint::of(&req),
                outcome: outcome.clone(),
            },
            completed_unix_ms: unix_ms,
            lsn,
        };
        for _ in 0..CATCH_UP_TRIES {
            match ks.put(rec.clone()) {
                Ok(()) => {
                    self.out.keys_caught_up += 1;
                    return;
                }
                Err(KeyStoreError::Full) => std::thread::sleep(CATCH_UP_PAUSE),
                Err(e) => {
                    tracing::error!(error = %e, "key store catch-up failed");
                    return;
                }
            }
        }
    }

    fn restore(&mut self, scope: &str, request: &[u8], outcome: Outcome) {
        if restore_key(
            &self.canonical,
            self.index,
            self.now,
            scope,
            request,
            outcome,
        ) {
            self.out.keys_restored += 1;
        }
    }
}

/// Complete `request`'s key in `index` with `outcome`.
pub(crate) fn restore_key(
    canonical: &Iso8583Codec,
    index: &mut IdempotencyIndex,
    now: Millis,
    scope: &str,
    request: &[u8],
    outcome: Outcome,
) -> bool {
    let (Ok(scope), Ok(req)) = (ClientScope::new(scope), canonical.decode(request)) else {
        return false;
    };
    match index.claim(&scope, &req, now) {
        Ok(Claim::New(t)) => {
            let _ = index.complete(t, outcome, now);
            true
        }
        Ok(Claim::NeedsLookup(l)) => {
            // Restoring: the journal is the authority, not the key store.
            if let fps_routing::idempotency::Lookup::New(t) = index.resolve_lookup(l, None, now) {
                let _ = index.complete(t, outcome, now);
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use fps_codecs::model::examples::credit_transfer;
    use fps_routing::idempotency::Claim;
    use std::time::Duration;

    fn enc(rec: Record<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        rec.encode(&mut out).unwrap();
        out
    }

    fn canonical_bytes(t: &fps_codecs::model::Transaction) -> Vec<u8> {
        let mut b = BytesMut::new();
        Iso8583Codec::builtin("canonical")
            .unwrap()
            .encode(t, &mut b)
            .unwrap();
        b.to_vec()
    }

    #[test]
    fn folds_each_state_into_its_action() {
        let banks = vec!["bank003".to_owned(), "bank004".to_owned()];
        let mut index = IdempotencyIndex::new(100, Duration::from_secs(3600));
        let mut a = credit_transfer();
        a.idempotency_key = fps_codecs::model::IdempotencyKey::parse(b"key-a").ok();
        let mut b = credit_transfer();
        b.idempotency_key = fps_codecs::model::IdempotencyKey::parse(b"key-b").ok();
        let mut c = credit_transfer();
        c.idempotency_key = fps_codecs::model::IdempotencyKey::parse(b"key-c").ok();
        let (ra, rb, rc) = (
            canonical_bytes(&a),
            canonical_bytes(&b),
            canonical_bytes(&c),
        );
        let records = [
            // 1: completed.
            enc(Record::Received {
                txn: TxnId(1),
                scope: "gw",
                request: &ra,
            }),
            enc(Record::Sent {
                txn: TxnId(1),
                bank: "bank004",
                stan: 10,
                rrn: 500,
                wire: b"w1",
            }),
            enc(Record::Final {
                txn: TxnId(1),
                outcome: Outcome::new(ResponseCode::APPROVED),
            }),
            // 2: sent, no answer (crash).
            enc(Record::Received {
                txn: TxnId(2),
                scope: "gw",
                request: &rb,
            }),
            enc(Record::Sent {
                txn: TxnId(2),
                bank: "bank004",
                stan: 11,
                rrn: 501,
                wire: b"w2",
            }),
            // 3: received only.
            enc(Record::Received {
                txn: TxnId(3),
                scope: "gw",
                request: &rc,
            }),
            // 4: reversing, still open; 5: reversing, closed.
            enc(Record::Reversing {
                txn: TxnId(4),
                bank: "bank003",
                wire: b"w4",
            }),
            enc(Record::Reversing {
                txn: TxnId(5),
                bank: "bank003",
                wire: b"w5",
            }),
            enc(Record::ReversalClosed {
                txn: TxnId(5),
                how: super::super::record::Closed::Acknowledged,
            }),
        ];
        let mut replay = Replay::new(&banks, &mut index, Millis(0));
        for (i, r) in records.iter().enumerate() {
            replay.record(i as u64 + 1, 0, r);
        }
        replay.record(99, 0, b"garbage");
        let rec = replay.finish();
        assert_eq!(rec.records, 10);
        assert_eq!(rec.bad_records, 1);
        assert_eq!(rec.next_txn, 6);
        assert_eq!(rec.keys_restored, 1);
        assert_eq!(rec.last_ids, vec![None, Some((11, 501))]);
        assert_eq!(rec.unknown.len(), 1);
        assert_eq!(rec.unknown[0].txn, TxnId(2));
        assert_eq!(rec.unknown[0].wire, b"w2");
        assert_eq!(rec.reversing.len(), 1);
        assert_eq!(rec.reversing[0].txn, TxnId(4));
        // The completed key answers a retry with the original outcome.
        let scope = ClientScope::new("gw").unwrap();
        match index.claim(&scope, &a, Millis(1)).unwrap() {
            Claim::Duplicate(o) => assert_eq!(o.response_code, ResponseCode::APPROVED),
            other => panic!("expected the original outcome, got {other:?}"),
        }
        // The never-sent one is free to go through.
        assert!(matches!(
            index.claim(&scope, &c, Millis(1)).unwrap(),
            Claim::New(_)
        ));
    }
}
