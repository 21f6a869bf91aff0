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
//! - The key store catches up: every completed key whose final record is
//!   above the store's low-water mark is checked and put again, so a key
//!   evicted from memory is always found on disk
//!   ([`crate::keystore`] explains why that mark is exact). While running,
//!   [`KeyedJournal`] keeps the mark exact by announcing every final record
//!   to the store before it is appended.
//!
//! The fold keeps only transactions still open, so its memory is bounded by
//! what was in flight at the crash, not by the journal's length.

use std::collections::HashMap;
use std::sync::Arc;

use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::ResponseCode;
use fps_routing::idempotency::{
    Claim, ClientScope, Fingerprint, IdempotencyIndex, Outcome, RequestKey, StoredKey,
};
use fps_routing::Millis;

use super::record::{Record, TxnId};
use crate::journal::{Durable, DurableWatch, Journal, JournalError, Lsn, SegmentInfo};
use crate::keystore::{FinalTicket, KeyRecord, KeyStore, KeyStoreError};

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
    /// Per bank (pipeline order): the outbound STAN and RRN to resume
    /// after: the last reservation, else the last ids journaled as sent.
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
    /// Completed keys above the store's low-water mark found already in it.
    pub keys_checked: u64,
    /// Completed keys the catch-up could not put (logged): the store's
    /// low-water mark must stay below the first one.
    pub keys_missed: u64,
    /// Lsn of the first key the catch-up could not put.
    pub first_missed_lsn: Option<u64>,
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
    /// The key store to bring up to date.
    keystore: Option<CatchUp<'a>>,
    /// Per bank: the last `IdsReserved` (covers every id used after it).
    reserved_ids: Vec<Option<(u32, u64)>>,
    out: Recovery,
}

/// The key store and its marks as found at start.
#[derive(Debug, Clone, Copy)]
struct CatchUp<'a> {
    store: &'a KeyStore,
    /// Every key with a final record up to this lsn is in the store.
    low_water: u64,
    /// No key with a final record above this lsn is in the store.
    high_water: u64,
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
            reserved_ids: vec![None; banks.len()],
            out: Recovery {
                last_ids: vec![None; banks.len()],
                next_txn: 1,
                ..Recovery::default()
            },
        }
    }

    /// Also bring `keystore` up to date: every completed key whose final
    /// record is above its low-water mark (queued but not committed before
    /// the crash, put out of lsn order, or refused) is put again unless the
    /// store already has it, so a key evicted from memory is always found
    /// on disk. Keys below the mark are in the store by its definition.
    pub fn with_keystore(mut self, keystore: &'a KeyStore) -> Self {
        self.keystore = Some(CatchUp {
            store: keystore,
            low_water: keystore.low_water_lsn(),
            high_water: keystore.high_water_lsn(),
        });
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
            Record::Received { scope, request, .. } => self.received(txn, scope, request),
            Record::Dispatched {
                scope,
                request,
                bank,
                stan,
                rrn,
                wire,
                ..
            } => {
                self.received(txn, scope, request);
                self.sent(txn, bank, stan, rrn, wire);
            }
            Record::Sent {
                bank,
                stan,
                rrn,
                wire,
                ..
            } => self.sent(txn, bank, stan, rrn, wire),
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
            Record::IdsReserved { bank, stan, rrn } => {
                if let Some(i) = self.bank(bank) {
                    self.reserved_ids[i] = Some((stan, rrn));
                }
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
        // A reservation is made (durably) before any of its ids is used,
        // so the last one bounds every id used since, journaled or not.
        for (last, reserved) in self.out.last_ids.iter_mut().zip(&self.reserved_ids) {
            if reserved.is_some() {
                *last = *reserved;
            }
        }
        self.out.reversing = self.reversing.into_values().collect();
        self.out.unknown.sort_by_key(|p| p.txn);
        self.out.reversing.sort_by_key(|p| p.txn);
        self.out
    }

    /// `txn` came from client `scope` as `request` (canonical bytes).
    fn received(&mut self, txn: TxnId, scope: &str, request: &[u8]) {
        let open = Open {
            scope: scope.to_owned(),
            request: request.to_vec(),
            sent: None,
        };
        self.open.insert(txn, open);
    }

    /// An attempt of `txn` went to `bank` with these ids and bytes.
    fn sent(&mut self, txn: TxnId, bank: &str, stan: u32, rrn: u64, wire: &[u8]) {
        let Some(i) = self.bank(bank) else {
            return;
        };
        self.out.last_ids[i] = Some((stan, rrn));
        if let Some(o) = self.open.get_mut(&txn) {
            o.sent = Some((i, wire.to_vec()));
        }
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
        let Some(c) = self.keystore else {
            return;
        };
        if lsn <= c.low_water {
            return;
        }
        // A request the canonical codec cannot decode has no key in the
        // index either (`restore` skips it too): nothing to look up later.
        let Some(rec) = key_record(
            &self.canonical,
            &o.scope,
            &o.request,
            outcome.clone(),
            lsn,
            unix_ms,
        ) else {
            return;
        };
        if lsn <= c.high_water {
            // The store may hold it already (or a later completion of the
            // same key): a read is cheaper than a write.
            match c.store.stored_lsn_blocking(&rec.scope, &rec.key) {
                Ok(Some(stored)) if stored >= lsn => {
                    self.out.keys_checked += 1;
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "key store read failed during catch-up: putting the key again");
                }
            }
        }
        match put_patiently(c.store, rec) {
            Ok(()) => self.out.keys_caught_up += 1,
            Err(e) => {
                tracing::error!(error = %e, lsn, "key store catch-up failed: the key stays in the journal only");
                self.out.keys_missed += 1;
                self.out.first_missed_lsn.get_or_insert(lsn);
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

/// The key store record of a completed request (client scope, canonical
/// bytes) whose final record is at `lsn`; `None` if the request has no key
/// (it cannot be decoded, or carries neither F123 nor the derived fields).
pub fn key_record(
    canonical: &Iso8583Codec,
    scope: &str,
    request: &[u8],
    outcome: Outcome,
    lsn: u64,
    unix_ms: u64,
) -> Option<KeyRecord> {
    let scope = ClientScope::new(scope).ok()?;
    let req = canonical.decode(request).ok()?;
    Some(KeyRecord {
        scope,
        key: RequestKey::of(&req)?,
        stored: StoredKey {
            fingerprint: Fingerprint::of(&req),
            outcome,
        },
        completed_unix_ms: unix_ms,
        lsn,
    })
}

/// Put `rec`, waiting (on this thread) while the store's queue is full: its
/// writer drains it meanwhile. For start-up, never for a request path.
pub fn put_patiently(store: &KeyStore, rec: KeyRecord) -> Result<(), KeyStoreError> {
    let mut last = KeyStoreError::Full;
    for _ in 0..CATCH_UP_TRIES {
        match store.put(rec.clone()) {
            Ok(()) => return Ok(()),
            Err(KeyStoreError::Full) => std::thread::sleep(CATCH_UP_PAUSE),
            Err(e) => {
                last = e;
                break;
            }
        }
    }
    Err(last)
}

/// The journal the safety layer writes to when a key store is kept: every
/// final record is announced to the store before it is appended, and its
/// lsn reported once durable, so the store's low-water mark never passes a
/// final record whose key it does not hold (see [`crate::keystore`]).
/// Every other record passes straight through.
#[derive(Debug)]
pub struct KeyedJournal<J> {
    inner: J,
    keystore: Arc<KeyStore>,
}

impl<J: Journal> KeyedJournal<J> {
    /// `inner`, announcing its final records to `keystore`. The caller has
    /// made the store follow `inner` ([`KeyStore::follow_journal`]).
    pub fn new(inner: J, keystore: Arc<KeyStore>) -> Self {
        KeyedJournal { inner, keystore }
    }

    /// The wrapped journal.
    pub fn inner(&self) -> &J {
        &self.inner
    }
}

impl<J: Journal> Journal for KeyedJournal<J> {
    fn append(&self, record: &[u8]) -> Result<Durable, JournalError> {
        self.append_owned(record.to_vec())
    }

    fn append_owned(&self, record: Vec<u8>) -> Result<Durable, JournalError> {
        // The kind byte is enough: records come from `Record::encode`.
        if !Record::is_final(&record) {
            return self.inner.append_owned(record);
        }
        let ticket = self.keystore.announce_final();
        match self.inner.append_owned(record) {
            Ok(durable) => Ok(durable.watched(Box::new(FinalWatch(ticket)))),
            Err(e) => {
                // Refused at once: nothing was queued.
                ticket.not_written();
                Err(e)
            }
        }
    }

    fn healthy(&self) -> bool {
        self.inner.healthy()
    }

    fn segments(&self) -> Vec<SegmentInfo> {
        self.inner.segments()
    }

    fn remove_segments_before(&self, lsn: Lsn) -> Result<usize, JournalError> {
        self.inner.remove_segments_before(lsn)
    }
}

/// Tells a final record's ticket how its append ended.
#[derive(Debug)]
struct FinalWatch(FinalTicket);

impl DurableWatch for FinalWatch {
    fn resolved(self: Box<Self>, result: &Result<Lsn, JournalError>) {
        match result {
            Ok(lsn) => self.0.durable_at(lsn.0),
            // A failed record's lsn is given to a later record, and no
            // later record is durable before the failed bytes are cut off
            // (journal docs): the mark cannot pass it while it might still
            // come back after a crash.
            Err(_) => self.0.not_written(),
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

    fn keyed(key: &[u8]) -> (fps_codecs::model::Transaction, Vec<u8>) {
        let mut t = credit_transfer();
        t.idempotency_key = fps_codecs::model::IdempotencyKey::parse(key).ok();
        let bytes = canonical_bytes(&t);
        (t, bytes)
    }

    /// A temporary key store file, removed on drop.
    struct StoreDir(tempfile::TempDir);

    impl StoreDir {
        fn new() -> Self {
            StoreDir(tempfile::tempdir().unwrap())
        }

        fn open(&self) -> KeyStore {
            KeyStore::open(crate::keystore::KeyStoreConfig::new(
                self.0.path().join("k.redb"),
            ))
            .unwrap()
        }
    }

    fn final_record(txn: u64, code: ResponseCode) -> Vec<u8> {
        enc(Record::Final {
            txn: TxnId(txn),
            outcome: Outcome::new(code),
        })
    }

    /// Journal of `n` approved transactions with keys `k1..=kn`: three
    /// records each (received, sent, final), the final of `i` at lsn `3i`.
    fn approved_journal(n: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for i in 1..=n {
            let (_, req) = keyed(format!("k{i}").as_bytes());
            out.push(enc(Record::Received {
                txn: TxnId(i),
                scope: "gw",
                request: &req,
            }));
            out.push(enc(Record::Sent {
                txn: TxnId(i),
                bank: "bank004",
                stan: i as u32,
                rrn: i,
                wire: b"w",
            }));
            out.push(final_record(i, ResponseCode::APPROVED));
        }
        out
    }

    fn replay_into(store: &KeyStore, journal: &[Vec<u8>]) -> Recovery {
        let banks = vec!["bank004".to_owned()];
        let mut index = IdempotencyIndex::new(100, Duration::from_secs(3600));
        let mut replay = Replay::new(&banks, &mut index, Millis(0)).with_keystore(store);
        for (i, r) in journal.iter().enumerate() {
            replay.record(i as u64 + 1, 1_000, r);
        }
        replay.finish()
    }

    fn stored(store: &KeyStore, key: &str) -> Option<u64> {
        let (t, _) = keyed(key.as_bytes());
        store
            .stored_lsn_blocking(
                &ClientScope::new("gw").unwrap(),
                &RequestKey::of(&t).unwrap(),
            )
            .unwrap()
    }

    /// The bug this mark exists for: k2's final (lsn 6) was committed to
    /// the store before k1's (lsn 3), then the process died. The highest
    /// committed lsn is 6, yet k1 is missing; replaying from the low-water
    /// mark (2) puts it back, and k2 is only checked.
    #[tokio::test]
    async fn catch_up_restores_a_key_below_the_high_water_mark() {
        let dir = StoreDir::new();
        let journal = approved_journal(2);
        {
            let store = dir.open();
            let durable = Arc::new(std::sync::atomic::AtomicU64::new(2));
            let d = durable.clone();
            store.follow_journal(move || d.load(std::sync::atomic::Ordering::Acquire));
            let first = store.announce_final();
            durable.store(5, std::sync::atomic::Ordering::Release);
            let second = store.announce_final();
            durable.store(6, std::sync::atomic::Ordering::Release);
            first.durable_at(3);
            second.durable_at(6);
            let (t, req) = keyed(b"k2");
            let rec = key_record(
                &Iso8583Codec::builtin("canonical").unwrap(),
                "gw",
                &req,
                Outcome::new(ResponseCode::APPROVED),
                6,
                1_000,
            )
            .unwrap();
            assert_eq!(rec.key, RequestKey::of(&t).unwrap());
            store.put(rec).unwrap();
            store.flush().await.unwrap();
            assert_eq!((store.low_water_lsn(), store.high_water_lsn()), (2, 6));
        }
        let store = dir.open();
        assert_eq!(stored(&store, "k1"), None, "the crash lost k1's put");
        let rec = replay_into(&store, &journal);
        assert_eq!(
            (rec.keys_caught_up, rec.keys_checked, rec.keys_missed),
            (1, 1, 0)
        );
        assert_eq!(stored(&store, "k1"), Some(3));
        assert_eq!(stored(&store, "k2"), Some(6));
        let found = store
            .lookup_blocking(
                &ClientScope::new("gw").unwrap(),
                &RequestKey::of(&keyed(b"k1").0).unwrap(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(found.0.outcome.response_code, ResponseCode::APPROVED);
        assert_eq!(found.1, 1_000, "completion time from the journal");
    }

    /// Finals at or below the mark are not touched; above the high-water
    /// mark they are put without a read; a store with no mark at all
    /// (older file, or new) gets every key.
    #[tokio::test]
    async fn catch_up_starts_above_the_low_water_mark() {
        let dir = StoreDir::new();
        let journal = approved_journal(3);
        {
            let store = dir.open();
            assert_eq!(store.low_water_lsn(), 0);
            let rec = replay_into(&store, &journal);
            assert_eq!((rec.keys_caught_up, rec.keys_checked), (3, 0));
            store.flush().await.unwrap();
            // Now the store follows a journal that has all 9 records.
            store.follow_journal(|| 9);
            let mut r = key_record(
                &Iso8583Codec::builtin("canonical").unwrap(),
                "gw",
                &keyed(b"other").1,
                Outcome::new(ResponseCode::APPROVED),
                0,
                1,
            )
            .unwrap();
            r.lsn = 0;
            store.put(r).unwrap();
            store.flush().await.unwrap();
            assert_eq!(store.low_water_lsn(), 9);
        }
        let store = dir.open();
        let rec = replay_into(&store, &journal);
        assert_eq!((rec.keys_caught_up, rec.keys_checked), (0, 0));
        // A longer journal: only the new finals are put.
        let longer = approved_journal(5);
        let rec = replay_into(&store, &longer);
        assert_eq!((rec.keys_caught_up, rec.keys_checked), (2, 0));
    }

    /// Through [`KeyedJournal`], only final records are tracked; the mark
    /// follows the journal once their keys are committed, and a final
    /// whose completion nobody awaited holds it.
    #[tokio::test]
    async fn keyed_journal_tracks_final_records_only() {
        let dir = StoreDir::new();
        let store = Arc::new(dir.open());
        let inner = Arc::new(crate::journal::MemoryJournal::new());
        let j = inner.clone();
        store.follow_journal(move || j.records().len() as u64);
        let journal = KeyedJournal::new(inner.clone(), store.clone());
        let (_, req) = keyed(b"k1");
        let received = enc(Record::Received {
            txn: TxnId(1),
            scope: "gw",
            request: &req,
        });
        assert_eq!(journal.append(&received).unwrap().await.unwrap(), Lsn(1));
        let lsn = journal
            .append(&final_record(1, ResponseCode::APPROVED))
            .unwrap()
            .await
            .unwrap();
        assert_eq!(lsn, Lsn(2));
        // Durable, not yet put: the mark waits.
        store.put(other_key()).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.low_water_lsn(), 1);
        let canonical = Iso8583Codec::builtin("canonical").unwrap();
        let outcome = Outcome::new(ResponseCode::APPROVED);
        store
            .put(key_record(&canonical, "gw", &req, outcome, lsn.0, 5).unwrap())
            .unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.low_water_lsn(), 2);
        // Non-final records do not stop it.
        for _ in 0..3 {
            drop(journal.append(&received).unwrap());
        }
        store.put(other_key()).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.low_water_lsn(), 5);
        // A final whose Durable was dropped unresolved holds it for good.
        drop(
            journal
                .append(&final_record(2, ResponseCode::APPROVED))
                .unwrap(),
        );
        for _ in 0..3 {
            drop(journal.append(&received).unwrap());
        }
        store.put(other_key()).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.low_water_lsn(), 5);
        // A final the journal refused holds nothing.
        let dir = StoreDir::new();
        let store = Arc::new(dir.open());
        let inner = Arc::new(crate::journal::MemoryJournal::new());
        let j = inner.clone();
        store.follow_journal(move || j.records().len() as u64);
        let journal = KeyedJournal::new(inner.clone(), store.clone());
        inner.set_failing(true);
        assert!(journal
            .append(&final_record(1, ResponseCode::APPROVED))
            .is_err());
        inner.set_failing(false);
        drop(journal.append(&received).unwrap());
        store.put(other_key()).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.low_water_lsn(), 1);
    }

    /// An unrelated key put with lsn 0, to make the writer commit.
    fn other_key() -> KeyRecord {
        let canonical = Iso8583Codec::builtin("canonical").unwrap();
        let outcome = Outcome::new(ResponseCode::APPROVED);
        key_record(&canonical, "gw", &keyed(b"other").1, outcome, 0, 1).unwrap()
    }

    /// What this switch writes: one `Dispatched` per transaction, `Sent`
    /// for a fail-over, `Released` when nothing reached a bank.
    #[test]
    fn dispatched_records_fold_like_received_and_sent() {
        let banks = vec!["bank003".to_owned(), "bank004".to_owned()];
        let mut index = IdempotencyIndex::new(100, Duration::from_secs(3600));
        let (a, ra) = keyed(b"key-a");
        let (b, rb) = keyed(b"key-b");
        let (c, rc) = keyed(b"key-c");
        let dispatched = |txn, request, bank, stan, wire| {
            enc(Record::Dispatched {
                txn: TxnId(txn),
                scope: "gw",
                request,
                bank,
                stan,
                rrn: 700 + u64::from(stan),
                wire,
            })
        };
        let records = [
            // 1: answered after a fail-over from bank003 to bank004.
            dispatched(1, &ra[..], "bank003", 1, &b"a1"[..]),
            enc(Record::Sent {
                txn: TxnId(1),
                bank: "bank004",
                stan: 2,
                rrn: 702,
                wire: b"a2",
            }),
            final_record(1, ResponseCode::APPROVED),
            // 2: dispatched, then the crash: outcome unknown.
            dispatched(2, &rb[..], "bank004", 3, &b"b1"[..]),
            // 3: dispatched, nothing reached a bank: released.
            dispatched(3, &rc[..], "bank003", 4, &b"c1"[..]),
            enc(Record::Released { txn: TxnId(3) }),
        ];
        let mut replay = Replay::new(&banks, &mut index, Millis(0));
        for (i, r) in records.iter().enumerate() {
            replay.record(i as u64 + 1, 0, r);
        }
        let rec = replay.finish();
        assert_eq!(rec.bad_records, 0);
        assert_eq!(rec.next_txn, 4);
        assert_eq!(rec.keys_restored, 1);
        assert_eq!(rec.last_ids, vec![Some((4, 704)), Some((3, 703))]);
        assert_eq!(rec.unknown.len(), 1);
        assert_eq!(rec.unknown[0].txn, TxnId(2));
        assert_eq!(rec.unknown[0].bank, 1);
        assert_eq!(rec.unknown[0].wire, b"b1");
        // The unknown one keeps its key, to be completed with 68.
        assert!(rec.unknown[0]
            .key
            .as_ref()
            .is_some_and(|(scope, req)| scope == "gw" && req == &rb));
        let scope = ClientScope::new("gw").unwrap();
        match index.claim(&scope, &a, Millis(1)).unwrap() {
            Claim::Duplicate(o) => assert_eq!(o.response_code, ResponseCode::APPROVED),
            other => panic!("expected the original outcome, got {other:?}"),
        }
        assert!(matches!(
            index.claim(&scope, &b, Millis(1)).unwrap(),
            Claim::New(_)
        ));
        assert!(matches!(
            index.claim(&scope, &c, Millis(1)).unwrap(),
            Claim::New(_)
        ));
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
