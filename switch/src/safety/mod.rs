//! Payment safety at run time (DESIGN.md invariants 2, 3, 4 and 6): the
//! idempotency claim of every upstream request, the journal records that
//! precede each effect, the reversal queues, and crash recovery.
//!
//! The decisions are `fps-routing`'s state machines ([`IdempotencyIndex`],
//! [`fps_routing::reversal::ReversalQueue`]); this module drives them with
//! the clock, the journal ([`crate::journal`]), the key store
//! ([`crate::keystore`]) and the bank pools.
//!
//! Order of effects for one credit transfer:
//! `claim` → journal `Dispatched` (receipt and first attempt in one
//! record; a fail-over attempt: `Sent`), durable, then the write to the
//! bank → journal `Final`, durable → answer upstream and wake duplicates. At the deadline with no answer: journal
//! `Reversing`, durable → `Final(68)` → queue the reversal.

pub mod recent;
pub mod record;
pub mod recovery;
pub mod reversals;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::{ResponseCode, Transaction};
use fps_routing::idempotency::{
    Claim, ClientScope, IdempotencyIndex, Lookup, Outcome, StoredKey, Ticket, WaiterToken,
};
use tokio::sync::oneshot;

use crate::clock::MonotonicClock;
use crate::journal::{Durable, Journal, JournalError, Lsn, SegmentInfo};
use crate::keystore::{KeyRecord, KeyStorage};
use crate::metrics as m;
use record::{Record, TxnId};

/// How many times a duplicate may re-claim after the original was abandoned
/// (nothing reached a bank) before it is answered 96.
const MAX_RECLAIMS: usize = 4;
/// Keys expired per timer tick (bounds the work done under the lock).
const EXPIRE_BATCH: usize = 10_000;
/// Journal segments are kept this much longer than the key retention.
const COMPACTION_MARGIN: Duration = Duration::from_secs(3_600);

/// What the safety layer decided about an upstream request.
// Returned once per request and matched at once; boxing the answer would
// cost an allocation on the duplicate path for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Admission {
    /// First sight: process it, then [`Safety::finish`] or [`Safety::abandon`].
    Process(Claimed),
    /// Answer this without reaching a bank (duplicate, mismatch, journal down).
    Answer(Transaction),
}

/// A claimed, journaled request: the duty to report it exactly once.
#[derive(Debug)]
#[must_use = "a claimed request must be finished or abandoned"]
pub struct Claimed {
    ticket: Ticket,
    txn: TxnId,
    /// The request in the canonical encoding, journaled with the first
    /// attempt.
    request: BytesMut,
    /// An attempt was journaled (or its append was tried).
    dispatched: bool,
}

impl Claimed {
    /// The switch's transaction id.
    pub fn txn(&self) -> TxnId {
        self.txn
    }
}

/// What a waiting duplicate is woken with.
#[derive(Debug)]
enum Wake {
    Outcome(Outcome),
    Mismatch,
    Reclaim,
}

thread_local! {
    /// [`Safety::write`]'s encoding buffer, one per thread: journaling a
    /// record allocates nothing when the journal writes inline.
    static RECORD_SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(1024));
}

/// The run-time safety layer shared by every connection.
#[derive(Debug)]
pub struct Safety {
    journal: Arc<dyn Journal>,
    keystore: Option<Arc<dyn KeyStorage>>,
    index: Mutex<IdempotencyIndex>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Wake>>>,
    next_txn: AtomicU64,
    clock: Arc<dyn MonotonicClock>,
    canonical: Iso8583Codec,
    /// How long a duplicate waits for its in-flight original.
    wait_limit: Duration,
    /// Claims by `result`.
    claims: m::CounterSet<1>,
}

impl Safety {
    /// A safety layer over `journal` with an index of `capacity` keys kept
    /// for `retention`. `next_txn` continues after the journal's last id.
    pub fn new(
        journal: Arc<dyn Journal>,
        keystore: Option<Arc<dyn KeyStorage>>,
        index: IdempotencyIndex,
        next_txn: u64,
        clock: Arc<dyn MonotonicClock>,
        wait_limit: Duration,
    ) -> Safety {
        Safety {
            journal,
            keystore,
            index: Mutex::new(index),
            waiters: Mutex::new(HashMap::new()),
            next_txn: AtomicU64::new(next_txn.max(1)),
            clock,
            canonical: Iso8583Codec::builtin("canonical")
                .expect("the canonical dialect is built in"),
            wait_limit,
            claims: m::CounterSet::new(m::IDEMPOTENCY, ["result"]),
        }
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// Whether new requests can be journaled (else they are answered 96).
    pub fn healthy(&self) -> bool {
        self.journal.healthy()
    }

    /// Claim `req`'s idempotency key in `scope` (its receipt is journaled
    /// with its first attempt, [`Safety::sent`]), or decide its answer (original outcome for a duplicate, 94 for the same
    /// key with other content, 96 when the journal cannot write).
    pub async fn admit(&self, scope: &ClientScope, req: &Transaction) -> Admission {
        for _ in 0..MAX_RECLAIMS {
            let now = self.clock.now();
            let claim = {
                let mut index = self.lock_index();
                match index.claim(scope, req, now) {
                    Ok(Claim::InFlight(token)) => {
                        // Registered under the index lock, so `complete`
                        // (which takes it first) cannot miss this waiter.
                        let (tx, rx) = oneshot::channel();
                        self.lock_waiters().insert(token.id(), tx);
                        Ok((Claim::InFlight(token), Some(rx)))
                    }
                    Ok(other) => Ok((other, None)),
                    Err(e) => Err(e),
                }
            };
            let rx = match claim {
                Err(e) => return Admission::Answer(req.response(e.response_code())),
                Ok((Claim::New(ticket), _)) => {
                    self.claims.increment(["new"]);
                    return self.received(ticket, req);
                }
                Ok((Claim::Duplicate(outcome), _)) => {
                    self.claims.increment(["duplicate"]);
                    return Admission::Answer(outcome.answer_for(req));
                }
                Ok((Claim::Mismatch, _)) => {
                    self.claims.increment(["mismatch"]);
                    return Admission::Answer(req.response(ResponseCode::DUPLICATE));
                }
                Ok((Claim::NeedsLookup(lookup), _)) => {
                    self.claims.increment(["lookup"]);
                    match self.lookup(lookup, req).await {
                        Some(a) => return a,
                        None => continue,
                    }
                }
                Ok((Claim::InFlight(token), Some(rx))) => {
                    self.claims.increment(["in_flight"]);
                    (token, rx)
                }
                Ok((Claim::InFlight(_), None)) => continue,
            };
            let (token, rx) = rx;
            match tokio::time::timeout(self.wait_limit, rx).await {
                Ok(Ok(Wake::Outcome(o))) => return Admission::Answer(o.answer_for(req)),
                Ok(Ok(Wake::Mismatch)) => {
                    return Admission::Answer(req.response(ResponseCode::DUPLICATE))
                }
                Ok(Ok(Wake::Reclaim)) => continue,
                Ok(Err(_)) | Err(_) => {
                    self.lock_waiters().remove(&token.id());
                    tracing::warn!(stan = ?req.stan.map(|s| s.value()), "duplicate waited too long for its original: answered 96");
                    return Admission::Answer(req.response(ResponseCode::SYSTEM_MALFUNCTION));
                }
            }
        }
        Admission::Answer(req.response(ResponseCode::SYSTEM_MALFUNCTION))
    }

    /// Journal that `claimed` (from the client `scope`) is about to be
    /// written to `bank` with these outbound ids; durable when this returns
    /// `Ok`. The first attempt's record also carries the request.
    pub async fn sent(
        &self,
        claimed: &mut Claimed,
        scope: &ClientScope,
        bank: &str,
        stan: u32,
        rrn: u64,
        wire: &[u8],
    ) -> Result<Lsn, JournalError> {
        let txn = claimed.txn;
        let first = !claimed.dispatched;
        // Even a failed append may have reached the disk: from here on the
        // transaction is released explicitly if nothing is sent.
        claimed.dispatched = true;
        let rec = if first {
            Record::Dispatched {
                txn,
                scope: scope.as_str(),
                request: &claimed.request,
                bank,
                stan,
                rrn,
                wire,
            }
        } else {
            Record::Sent {
                txn,
                bank,
                stan,
                rrn,
                wire,
            }
        };
        self.write(&rec).await
    }

    /// Journal that the outcome of `claimed` at `bank` is unknown: durable
    /// before the `68` goes upstream.
    pub async fn reversing(
        &self,
        txn: TxnId,
        bank: &str,
        wire: &[u8],
    ) -> Result<Lsn, JournalError> {
        self.write(&Record::Reversing { txn, bank, wire }).await
    }

    /// Journal the final outcome (durable), complete the key and answer its
    /// waiting duplicates. Returns the outcome to answer upstream with:
    /// `outcome`, or `None` when it could not be made durable (the caller
    /// then treats the transaction as outcome-unknown).
    pub async fn finish(
        &self,
        claimed: Claimed,
        scope: &ClientScope,
        outcome: Outcome,
    ) -> Option<Outcome> {
        let durable = self
            .write(&Record::Final {
                txn: claimed.txn,
                outcome: outcome.clone(),
            })
            .await;
        let ok = durable.is_ok();
        let lsn = durable.map_or(0, |l| l.0);
        // Even when the journal failed, duplicates must not reach the bank:
        // the key completes in memory with what upstream is told.
        let told = if ok {
            outcome.clone()
        } else {
            Outcome::new(ResponseCode::LATE)
        };
        if let Some(ks) = &self.keystore {
            let rec = KeyRecord {
                scope: scope.clone(),
                key: claimed.ticket.key().clone(),
                stored: StoredKey {
                    fingerprint: claimed.ticket.fingerprint(),
                    outcome: told.clone(),
                },
                completed_unix_ms: unix_ms(),
                lsn,
            };
            if ks.put(rec).is_err() {
                metrics::counter!(m::KEYSTORE_DROPPED).increment(1);
            }
        }
        let tokens = self
            .lock_index()
            .complete(claimed.ticket, told.clone(), self.clock.now());
        self.wake(tokens, |_| Wake::Outcome(told.clone()));
        ok.then_some(outcome)
    }

    /// Nothing reached a bank: release the key (a retry may go through) and
    /// let waiting duplicates claim again.
    pub fn abandon(&self, claimed: Claimed) {
        let rec = Record::Released { txn: claimed.txn };
        let mut buf = Vec::with_capacity(rec.size_hint());
        // Only spares recovery from tracking (and reversing) a transaction
        // journaled as dispatched: not awaited, and a failure leaves
        // recovery to reverse what never reached the bank (harmless).
        if claimed.dispatched && rec.encode(&mut buf).is_ok() {
            let _ = self.journal.append_owned(buf);
        }
        let tokens = self.lock_index().abandon(claimed.ticket);
        self.wake(tokens, |_| Wake::Reclaim);
    }

    /// Drop keys past retention (from a timer).
    pub fn expire(&self) {
        let now = self.clock.now();
        let mut index = self.lock_index();
        index.expire(now, EXPIRE_BATCH);
        metrics::gauge!(m::IDEMPOTENCY_KEYS).set(index.len() as f64);
    }

    /// Complete the key of a journaled request (client scope, canonical
    /// bytes) with `outcome` (recovery of transactions in flight at a crash).
    pub fn restore_encoded(&self, scope: &str, request: &[u8], outcome: Outcome) {
        let now = self.clock.now();
        let mut index = self.lock_index();
        recovery::restore_key(&self.canonical, &mut index, now, scope, request, outcome);
    }

    /// Drop journal segments older than the retention (plus a margin),
    /// first re-journaling every reversal still queued so that none is
    /// forgotten with its segment.
    pub async fn compact(&self, reversals: &reversals::Reversals, retention: Duration) {
        let cutoff = unix_ms().saturating_sub((retention + COMPACTION_MARGIN).as_millis() as u64);
        let segments = self.journal.segments();
        let keep_from = segments
            .iter()
            .take_while(|s| s.sealed && s.newest_unix_ms.is_some_and(|t| t < cutoff))
            .count();
        let Some(first_kept) = segments.get(keep_from) else {
            return;
        };
        if keep_from == 0 {
            return;
        }
        if !reversals.carry_forward().await {
            tracing::warn!(
                "journal compaction postponed: queued reversals could not be re-journaled"
            );
            return;
        }
        match self.journal.remove_segments_before(first_kept.first_lsn) {
            Ok(n) => tracing::info!(segments = n, "journal segments past retention removed"),
            Err(e) => tracing::warn!(error = %e, "journal compaction failed"),
        }
    }

    /// Journal a record and wait until it is durable.
    pub(crate) async fn write(&self, rec: &Record<'_>) -> Result<Lsn, JournalError> {
        // Encoded into this thread's scratch buffer: an inline journal
        // (`fsync = "never"`) writes it from there, a queued one copies it.
        let durable = RECORD_SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            buf.reserve(rec.size_hint());
            match rec.encode(buf) {
                Ok(()) => Ok(self.journal.append(buf)),
                Err(_) => Err(JournalError::TooLarge {
                    bytes: buf.len(),
                    max: u16::MAX as usize,
                }),
            }
        })?;
        match durable {
            Ok(d) => d.await,
            Err(e) => Err(e),
        }
        .inspect_err(|e| {
            metrics::counter!(m::JOURNAL_REFUSED).increment(1);
            tracing::error!(error = %e, "journal write failed");
        })
    }

    /// A new request: its transaction id and canonical bytes (journaled
    /// with its first attempt), or 96 when the journal cannot take it.
    fn received(&self, ticket: Ticket, req: &Transaction) -> Admission {
        let txn = TxnId(self.next_txn.fetch_add(1, Ordering::Relaxed));
        let mut request = BytesMut::with_capacity(crate::conn::ENCODE_BUFFER_BYTES);
        // A request the canonical codec cannot re-encode was decoded by it,
        // so that does not happen; refuse safely if it does.
        let ready = self.canonical.encode(req, &mut request).is_ok() && self.journal.healthy();
        let claimed = Claimed {
            ticket,
            txn,
            request,
            dispatched: false,
        };
        if ready {
            return Admission::Process(claimed);
        }
        metrics::counter!(m::JOURNAL_REFUSED).increment(1);
        tracing::error!("journal unavailable: request answered 96");
        self.abandon(claimed);
        Admission::Answer(req.response(ResponseCode::SYSTEM_MALFUNCTION))
    }

    async fn lookup(
        &self,
        lookup: fps_routing::idempotency::LookupTicket,
        req: &Transaction,
    ) -> Option<Admission> {
        let found = match &self.keystore {
            None => Ok(None),
            Some(ks) => ks.lookup(lookup.scope(), lookup.key()).await,
        };
        let stored = match found {
            Ok(v) => v.map(|(stored, _)| stored),
            Err(e) => {
                tracing::error!(error = %e, "idempotency key store lookup failed: answered 96");
                let tokens = self.lock_index().abandon_lookup(lookup);
                self.wake(tokens, |_| Wake::Reclaim);
                return Some(Admission::Answer(
                    req.response(ResponseCode::SYSTEM_MALFUNCTION),
                ));
            }
        };
        let decided = self
            .lock_index()
            .resolve_lookup(lookup, stored, self.clock.now());
        match decided {
            Lookup::New(ticket) => Some(self.received(ticket, req)),
            Lookup::Duplicate { outcome, waiters } => {
                self.wake(waiters, |_| Wake::Outcome(outcome.clone()));
                Some(Admission::Answer(outcome.answer_for(req)))
            }
            Lookup::Mismatch { waiters } => {
                self.wake(waiters, |_| Wake::Mismatch);
                Some(Admission::Answer(req.response(ResponseCode::DUPLICATE)))
            }
        }
    }

    fn wake(&self, tokens: Vec<WaiterToken>, wake: impl Fn(WaiterToken) -> Wake) {
        if tokens.is_empty() {
            return;
        }
        let mut waiters = self.lock_waiters();
        for t in tokens {
            if let Some(tx) = waiters.remove(&t.id()) {
                // A waiter that gave up has dropped its receiver: fine.
                let _ = tx.send(wake(t));
            }
        }
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, IdempotencyIndex> {
        // Never held across an await; a panic while held leaves a
        // consistent index (every method finishes its own update first).
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Wake>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Wall-clock milliseconds since the Unix epoch (for retention on disk).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The journal when `[journal] dir` is not set: every append is "durable" at
/// once and kept nowhere. For development and for measuring the journal's
/// cost; nothing survives a crash.
#[derive(Debug, Default)]
pub struct NullJournal {
    next: AtomicU64,
}

impl Journal for NullJournal {
    fn append(&self, _record: &[u8]) -> Result<Durable, JournalError> {
        let lsn = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Durable::ready(Ok(Lsn(lsn))))
    }

    fn healthy(&self) -> bool {
        true
    }

    fn segments(&self) -> Vec<SegmentInfo> {
        Vec::new()
    }

    fn remove_segments_before(&self, _lsn: Lsn) -> Result<usize, JournalError> {
        Ok(0)
    }
}
