//! Idempotency: one bank transaction per upstream key, whatever the retries.
//!
//! The key of a request is F123 when present, else (F32, F7, F11, F37); it is
//! scoped by the upstream client's certificate identity ([`ClientScope`]), so
//! two gateways never collide. Per key the index keeps a content
//! [`Fingerprint`] and either "in flight" (with bounded waiters) or the final
//! [`Outcome`]:
//!
//! - first sight of a key: [`Claim::New`] with a [`Ticket`]; send to the bank,
//!   then [`IdempotencyIndex::complete`] (or [`IdempotencyIndex::abandon`] if
//!   nothing reached the bank);
//! - same key, same content, completed: [`Claim::Duplicate`] with the original
//!   outcome; answer with [`Outcome::answer_for`] (echoes the retry's F7, F11,
//!   F37, F41) without touching the bank;
//! - same key, same content, in flight: [`Claim::InFlight`] with a
//!   [`WaiterToken`]; `complete` returns the tokens to wake with the outcome;
//! - same key, different content: [`Claim::Mismatch`] → answer F39 94.
//!
//! **Bounded memory, long retention.** The index holds at most `capacity`
//! keys. When full, the oldest *completed* key is evicted (never an in-flight
//! one: its waiters live here). The switch journals every final outcome
//! before calling `complete`, so an evicted key is still in storage; from
//! then on, until that key's retention would have ended, a key missing from
//! memory *may* be on disk, and `claim` answers [`Claim::NeedsLookup`]. The
//! key is then reserved (duplicates wait on it) while the caller reads its
//! storage and reports with [`IdempotencyIndex::resolve_lookup`]. After a
//! restart, call [`IdempotencyIndex::require_lookup_until`]`(now + retention)`
//! so keys journaled before the crash are looked up (DESIGN.md invariant 6).
//!
//! Completed keys are kept for at least `retention` (default 24 h) and
//! dropped by [`IdempotencyIndex::expire`] (bounded work per call; `claim`
//! also does a little). Nothing here reads a clock or does I/O.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fps_codecs::model::{
    write_padded, Account, AuthId, EndToEndId, IdempotencyKey, InstitutionId, ProxyId, ReasonCode,
    ResponseCode, Rrn, SettlementDate, Stan, Transaction, TransmissionDateTime,
};

use crate::time::{duration_ms, Millis};

/// Largest capacity an index may be given.
pub const MAX_IDEMPOTENCY_KEYS: usize = 8_000_000;
/// Most duplicates that may wait on one in-flight key.
pub const MAX_WAITERS_PER_KEY: usize = 32;
/// Longest client scope (certificate identity) in bytes.
pub const MAX_SCOPE_LEN: usize = 256;
/// Default retention of completed keys.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Expired keys each `claim` drops, so memory is reclaimed under load even
/// if the caller's periodic `expire` runs late.
const EXPIRE_PER_CLAIM: usize = 2;

/// Why a request could not be claimed. Static text only.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyError {
    /// Neither F123 nor all of F32, F7, F11, F37 are present.
    #[error("request has no idempotency key (F123, or F32+F7+F11+F37)")]
    NoKey,
    /// Every slot holds an in-flight key: nothing can be evicted.
    #[error("idempotency index full of in-flight keys")]
    Full,
    /// Too many duplicates already wait on this in-flight key.
    #[error("too many duplicates waiting on one in-flight key")]
    TooManyWaiters,
    /// The client scope is empty or longer than [`MAX_SCOPE_LEN`].
    #[error("client scope empty or too long")]
    BadScope,
}

impl IdempotencyError {
    /// The F39 to answer upstream with: 30 for a missing key, 96 otherwise
    /// (transient overload: the client may retry and then get the original
    /// outcome).
    pub fn response_code(self) -> ResponseCode {
        match self {
            IdempotencyError::NoKey => ResponseCode::FORMAT_ERROR,
            IdempotencyError::Full
            | IdempotencyError::TooManyWaiters
            | IdempotencyError::BadScope => ResponseCode::SYSTEM_MALFUNCTION,
        }
    }
}

/// The upstream client a key belongs to: its certificate identity (e.g. the
/// subject or SAN the listener verified). Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientScope(Arc<str>);

impl ClientScope {
    /// A scope from a certificate identity of 1 to [`MAX_SCOPE_LEN`] bytes.
    pub fn new(identity: &str) -> Result<Self, IdempotencyError> {
        if identity.is_empty() || identity.len() > MAX_SCOPE_LEN {
            return Err(IdempotencyError::BadScope);
        }
        Ok(ClientScope(Arc::from(identity)))
    }

    /// The identity text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientScope({:?})", &*self.0)
    }
}

/// The idempotency key of a request (within its client scope).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKey {
    /// F123 as sent by the client.
    Explicit(IdempotencyKey),
    /// (F32, F7, F11, F37) when F123 is absent.
    Derived {
        /// F32 acquiring institution.
        acquirer: InstitutionId,
        /// F7 transmission date and time.
        transmitted_at: TransmissionDateTime,
        /// F11 STAN.
        stan: Stan,
        /// F37 retrieval reference number.
        rrn: Rrn,
    },
}

impl RequestKey {
    /// The key of `txn`: F123, else all of F32, F7, F11, F37, else `None`.
    pub fn of(txn: &Transaction) -> Option<RequestKey> {
        if let Some(k) = txn.idempotency_key {
            return Some(RequestKey::Explicit(k));
        }
        Some(RequestKey::Derived {
            acquirer: txn.acquirer?,
            transmitted_at: txn.transmitted_at?,
            stan: txn.stan?,
            rrn: txn.rrn?,
        })
    }
}

/// A hash of the content a duplicate must repeat exactly: processing code,
/// amount, currency, PAN, debtor and creditor accounts, destination bank and
/// proxy (the amount and currency as big-endian integers). Fixed (no random keys): it is persisted with the key and must be
/// the same after a restart and on every platform. Each field is written as
/// a tag byte, a presence byte and, when present, two length bytes and its
/// bytes, so no two different field sets hash the same input.
///
/// The function ([`FINGERPRINT_VERSION`] 2) reads that input 16 bytes at a
/// time, little-endian, through a folded 64x64->128-bit multiply (the
/// construction of wyhash), so an 80-byte request costs a handful of
/// multiplies instead of FNV-1a's 80 dependent ones (version 1, half the
/// cost of a hot-key claim). A collision could only ever make two requests
/// with the same key *and* different content look like a retry; the hash
/// is not a security boundary (the key belongs to one authenticated client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

/// Version of [`Fingerprint::of`]. Stores that persist fingerprints record
/// it, and rebuild from the journal when it changes.
pub const FINGERPRINT_VERSION: u8 = 2;

/// Longest framed input of a fingerprint: eight fields of 4 framing bytes,
/// plus the longest values (processing code 6, amount 8 (u64), currency 2
/// (u16), PAN 19, two accounts, bank 3, proxy wire form).
const FINGERPRINT_INPUT_MAX: usize =
    8 * 4 + 6 + 8 + 2 + 19 + 2 * Account::MAX_LEN + 3 + ProxyId::MAX_WIRE_LEN;

impl Fingerprint {
    /// The fingerprint of `txn`'s content.
    pub fn of(txn: &Transaction) -> Fingerprint {
        let mut input = FramedInput::new();
        input.field(1, txn.processing_code.as_ref().map(|v| &v.as_bytes()[..]));
        // Numbers as their binary value, not their digits: formatting 12
        // digits costs a dozen divisions, more than the whole hash.
        input.field(
            2,
            txn.amount
                .map(|v| v.minor().to_be_bytes())
                .as_ref()
                .map(|v| &v[..]),
        );
        input.field(
            3,
            txn.currency
                .map(|v| v.numeric().to_be_bytes())
                .as_ref()
                .map(|v| &v[..]),
        );
        input.field(4, txn.pan.as_ref().map(|v| v.expose().as_bytes()));
        input.field(
            5,
            txn.debtor_account.as_ref().map(|v| v.expose().as_bytes()),
        );
        input.field(
            6,
            txn.creditor_account.as_ref().map(|v| v.expose().as_bytes()),
        );
        input.field(7, txn.receiving_bank.as_ref().map(|v| &v.as_bytes()[..]));
        match &txn.proxy {
            Some(p) => {
                let mut proxy = [0u8; ProxyId::MAX_WIRE_LEN];
                let n = p.write_wire(&mut proxy);
                input.field(8, Some(&proxy[..n]));
            }
            None => input.field(8, None),
        }
        Fingerprint(fold_hash(input.bytes()))
    }
}

/// The framed fields, on the stack.
struct FramedInput {
    buf: [u8; FINGERPRINT_INPUT_MAX],
    len: usize,
}

impl FramedInput {
    fn new() -> Self {
        FramedInput {
            buf: [0; FINGERPRINT_INPUT_MAX],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        // Every field is bounded by its type, so the sum fits; a longer value
        // (impossible through the model's parsers) is cut rather than panic.
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn field(&mut self, tag: u8, value: Option<&[u8]>) {
        match value {
            None => self.push(&[tag, 0]),
            Some(v) => {
                let len = u16::try_from(v.len()).unwrap_or(u16::MAX).to_be_bytes();
                self.push(&[tag, 1, len[0], len[1]]);
                self.push(v);
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

const FOLD_SEED: u64 = 0x2d35_8dcc_aa6c_78a5;
const FOLD_K1: u64 = 0x8bb8_4b93_962e_acc9;
const FOLD_K2: u64 = 0x4b33_a62e_d433_d4a3;

/// 64x64->128-bit multiply, high and low halves xored.
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Fixed 64-bit hash of `input`: 16-byte blocks (the last one zero-padded)
/// folded into the state, then the length.
fn fold_hash(input: &[u8]) -> u64 {
    let mut h = FOLD_SEED;
    let mut blocks = input.chunks_exact(16);
    for block in &mut blocks {
        let (a, b) = block.split_at(8);
        h = fold_mul(le_u64(a) ^ FOLD_K1 ^ h, le_u64(b) ^ FOLD_K2);
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 16];
        last[..rest.len()].copy_from_slice(rest);
        let (a, b) = last.split_at(8);
        h = fold_mul(le_u64(a) ^ FOLD_K1 ^ h, le_u64(b) ^ FOLD_K2);
    }
    fold_mul(h ^ FOLD_K1, (input.len() as u64) ^ FOLD_K2)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// Hasher of the index's table: foldhash (the default hasher of hashbrown,
/// the table inside std's `HashMap`), seeded per process, several times
/// faster than std's SipHash-1-3 on these 40-100-byte keys. Its seed keeps
/// a client from choosing colliding keys it could predict; every key also
/// belongs to one authenticated client, which bounds what it could do.
type EntryHasher = foldhash::quality::RandomState;

/// The final answer of a key: what a retry gets back without reaching the bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// F39.
    pub response_code: ResponseCode,
    /// F38 authorization id, when the bank gave one.
    pub auth_id: Option<AuthId>,
    /// Settlement date the bank reported.
    pub settlement_date: Option<SettlementDate>,
    /// ISO 20022 status reason, alongside the response code.
    pub reason: Option<ReasonCode>,
    /// The bank's own transaction reference, when it gave one.
    pub bank_reference: Option<EndToEndId>,
}

impl Outcome {
    /// An outcome with just a response code (e.g. 68 at the deadline).
    pub fn new(response_code: ResponseCode) -> Self {
        Outcome {
            response_code,
            auth_id: None,
            settlement_date: None,
            reason: None,
            bank_reference: None,
        }
    }

    /// The outcome carried by a (canonical) response, if it has an F39.
    pub fn from_response(response: &Transaction) -> Option<Outcome> {
        Some(Outcome {
            response_code: response.response_code?,
            auth_id: response.auth_id,
            settlement_date: response.settlement_date,
            reason: response.reason,
            bank_reference: response.transaction_id,
        })
    }

    /// The response to `request` (typically a retry) carrying this outcome:
    /// the request's own matching fields (F7, F11, F37, F41 ...) echoed, the
    /// original F38, F39 and bank data.
    pub fn answer_for(&self, request: &Transaction) -> Transaction {
        let mut r = request.response(self.response_code);
        r.auth_id = self.auth_id;
        r.reason = self.reason;
        if self.settlement_date.is_some() {
            r.settlement_date = self.settlement_date;
        }
        if self.bank_reference.is_some() {
            r.transaction_id = self.bank_reference;
        }
        r
    }
}

/// Where a key lives in the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EntryKey {
    scope: ClientScope,
    key: RequestKey,
}

/// The right (and duty) to send a claimed request to the bank and then
/// report it exactly once with `complete` or `abandon`. Not `Clone`.
#[must_use = "an unreported ticket keeps its key in flight forever"]
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket {
    entry: EntryKey,
    id: u64,
    fingerprint: Fingerprint,
}

impl Ticket {
    /// The client scope of the claimed key.
    pub fn scope(&self) -> &ClientScope {
        &self.entry.scope
    }

    /// The claimed key (to persist with the outcome).
    pub fn key(&self) -> &RequestKey {
        &self.entry.key
    }

    /// The content fingerprint of the claiming request (to persist).
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

/// A reservation of a key that may be in storage: look it up (scope, key),
/// then report with [`IdempotencyIndex::resolve_lookup`] (or
/// [`IdempotencyIndex::abandon_lookup`] if the lookup itself failed).
#[must_use = "an unresolved lookup keeps its key reserved forever"]
#[derive(Debug, PartialEq, Eq)]
pub struct LookupTicket(Ticket);

impl LookupTicket {
    /// The client scope to look up.
    pub fn scope(&self) -> &ClientScope {
        self.0.scope()
    }

    /// The key to look up.
    pub fn key(&self) -> &RequestKey {
        self.0.key()
    }
}

/// A duplicate waiting for an in-flight key; woken by `complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterToken(u64);

impl WaiterToken {
    /// A number unique within one index (to key the caller's waiter map).
    pub fn id(self) -> u64 {
        self.0
    }
}

/// What to do with a request, as decided by [`IdempotencyIndex::claim`].
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// First sight: send it to the bank, then `complete` or `abandon`.
    New(Ticket),
    /// Completed before: answer with `outcome.answer_for(&request)`.
    Duplicate(Outcome),
    /// The original is in flight: wait; `complete` returns this token.
    InFlight(WaiterToken),
    /// Same key, different content: answer F39 94.
    Mismatch,
    /// Not in memory, but may be in storage: look it up, then
    /// `resolve_lookup`. The key is reserved meanwhile.
    NeedsLookup(LookupTicket),
}

/// A key as the caller's storage holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Fingerprint of the request that completed the key.
    pub fingerprint: Fingerprint,
    /// Its final outcome.
    pub outcome: Outcome,
}

/// What a storage lookup decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not in storage: send to the bank (waiters keep waiting).
    New(Ticket),
    /// In storage with the same content: answer the claimer and every waiter
    /// with this outcome.
    Duplicate {
        /// The original outcome.
        outcome: Outcome,
        /// Duplicates that arrived during the lookup.
        waiters: Vec<WaiterToken>,
    },
    /// In storage with different content: answer the claimer and every
    /// waiter (same content as the claimer) with 94.
    Mismatch {
        /// Duplicates that arrived during the lookup.
        waiters: Vec<WaiterToken>,
    },
}

#[derive(Debug)]
enum State {
    Pending {
        ticket: u64,
        lookup: bool,
        waiters: Vec<WaiterToken>,
    },
    /// Its completion time is in the `completed` record.
    Done { outcome: Outcome, generation: u64 },
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    state: State,
}

/// The in-memory window of idempotency keys. See the module docs.
#[derive(Debug)]
pub struct IdempotencyIndex {
    capacity: usize,
    retention_ms: u64,
    entries: HashMap<EntryKey, Entry, EntryHasher>,
    /// Completed keys in completion order: (completed_at, key, generation).
    /// Exactly one record per `Done` entry, so its length is bounded by
    /// `capacity`; the generation guards against a stale record anyway.
    completed: VecDeque<(Millis, EntryKey, u64)>,
    lookup_until: Millis,
    next_id: u64,
    evicted: u64,
}

impl IdempotencyIndex {
    /// An index of at most `capacity` keys (clamped to
    /// `1..=MAX_IDEMPOTENCY_KEYS`) keeping completed keys for `retention`.
    ///
    /// Room for all `capacity` keys is reserved here, once: growing a table
    /// of a million keys on the request path would stop the caller while
    /// every entry is rehashed into fresh memory (measured: 10-20 ms stalls
    /// of the switch's worker at a few hundred thousand entries, the whole
    /// cost of its p99). The reservation is address space; pages are
    /// touched as keys arrive.
    ///
    /// Where the system refuses that much address space (strict
    /// overcommit), the tables start empty and grow as before instead.
    pub fn new(capacity: usize, retention: Duration) -> Self {
        let capacity = capacity.clamp(1, MAX_IDEMPOTENCY_KEYS);
        let mut entries = HashMap::with_hasher(EntryHasher::default());
        let mut completed = VecDeque::new();
        if entries.try_reserve(capacity).is_err() || completed.try_reserve(capacity).is_err() {
            entries = HashMap::with_hasher(EntryHasher::default());
            completed = VecDeque::new();
        }
        IdempotencyIndex {
            capacity,
            retention_ms: duration_ms(retention),
            entries,
            completed,
            lookup_until: Millis::ZERO,
            next_id: 0,
            evicted: 0,
        }
    }

    /// Make the room reserved by [`IdempotencyIndex::new`] resident now, on
    /// an empty index: every slot of the table and of the completion queue
    /// is written once (with placeholder keys, removed again before this
    /// returns). Returns how many slots were written; 0 when the index is
    /// not empty or its room could not be reserved up front (the tables
    /// then grow as keys arrive, and filling them here would only move
    /// that growth).
    ///
    /// Without it, the table's pages are first touched by the requests
    /// themselves: keys hash to places all over the reservation, so until
    /// most of it has been written (over a million requests at the default
    /// capacity) a large share of claims each take a page fault. Measured
    /// on a 2-vCPU KVM guest at 16,000 TPS: 0.44 faults per claim in a
    /// switch's first minute, about 4.5 us each, some 5% of its CPU per
    /// transaction. The same cost, paid once at start (the JVM's
    /// `AlwaysPreTouch`, for the same reason).
    pub fn pretouch(&mut self) -> usize {
        if !self.entries.is_empty()
            || !self.completed.is_empty()
            || self.entries.capacity() < self.capacity
            || self.completed.capacity() < self.capacity
        {
            return 0;
        }
        let Ok(scope) = ClientScope::new("pretouch") else {
            return 0;
        };
        for n in 0..self.capacity {
            let Some(key) = placeholder_key(n as u64) else {
                break;
            };
            let entry_key = EntryKey {
                scope: scope.clone(),
                key,
            };
            self.completed
                .push_back((Millis::ZERO, entry_key.clone(), 0));
            self.entries.insert(
                entry_key,
                Entry {
                    fingerprint: Fingerprint(0),
                    state: State::Pending {
                        ticket: 0,
                        lookup: false,
                        waiters: Vec::new(),
                    },
                },
            );
        }
        let written = self.entries.len();
        self.entries.clear();
        self.completed.clear();
        written
    }

    /// Decide what to do with `request` from client `scope` at `now`.
    pub fn claim(
        &mut self,
        scope: &ClientScope,
        request: &Transaction,
        now: Millis,
    ) -> Result<Claim, IdempotencyError> {
        let key = RequestKey::of(request).ok_or(IdempotencyError::NoKey)?;
        let fingerprint = Fingerprint::of(request);
        self.expire(now, EXPIRE_PER_CLAIM);
        let entry_key = EntryKey {
            scope: scope.clone(),
            key,
        };
        if let Some(entry) = self.entries.get_mut(&entry_key) {
            if entry.fingerprint != fingerprint {
                return Ok(Claim::Mismatch);
            }
            return match &mut entry.state {
                State::Done { outcome, .. } => Ok(Claim::Duplicate(outcome.clone())),
                State::Pending { waiters, .. } => {
                    if waiters.len() >= MAX_WAITERS_PER_KEY {
                        return Err(IdempotencyError::TooManyWaiters);
                    }
                    self.next_id += 1;
                    let token = WaiterToken(self.next_id);
                    waiters.push(token);
                    Ok(Claim::InFlight(token))
                }
            };
        }
        // Decided before evicting: the key evicted now is not this one.
        let lookup = now < self.lookup_until;
        if self.entries.len() >= self.capacity && !self.evict_oldest_completed() {
            return Err(IdempotencyError::Full);
        }
        self.next_id += 1;
        let id = self.next_id;
        self.entries.insert(
            entry_key.clone(),
            Entry {
                fingerprint,
                state: State::Pending {
                    ticket: id,
                    lookup,
                    waiters: Vec::new(),
                },
            },
        );
        let ticket = Ticket {
            entry: entry_key,
            id,
            fingerprint,
        };
        Ok(if lookup {
            Claim::NeedsLookup(LookupTicket(ticket))
        } else {
            Claim::New(ticket)
        })
    }

    /// Record the final `outcome` of a ticket (after journaling it) and
    /// return the waiters to answer with it (each with
    /// `outcome.answer_for(&its_request)`).
    pub fn complete(&mut self, ticket: Ticket, outcome: Outcome, now: Millis) -> Vec<WaiterToken> {
        let Some(entry) = self.entries.get_mut(&ticket.entry) else {
            return Vec::new();
        };
        let State::Pending {
            ticket: id,
            waiters,
            ..
        } = &mut entry.state
        else {
            return Vec::new();
        };
        // A ticket is not Clone and its entry is only removed through it, so
        // the ids always match; checked so a misuse cannot corrupt the index.
        if *id != ticket.id {
            return Vec::new();
        }
        let waiters = std::mem::take(waiters);
        self.mark_done(ticket.entry, None, outcome, now);
        waiters
    }

    /// Forget a ticket whose request never reached the bank (so a retry may
    /// try again). Returns the waiters: re-`claim` each waiter's request (the
    /// first becomes `New`, the rest wait on it).
    pub fn abandon(&mut self, ticket: Ticket) -> Vec<WaiterToken> {
        match self.entries.get(&ticket.entry) {
            Some(Entry {
                state: State::Pending { ticket: id, .. },
                ..
            }) if *id == ticket.id => {}
            _ => return Vec::new(),
        }
        match self.entries.remove(&ticket.entry) {
            Some(Entry {
                state: State::Pending { waiters, .. },
                ..
            }) => waiters,
            _ => Vec::new(),
        }
    }

    /// Report the storage lookup of a [`Claim::NeedsLookup`]: `stored` is
    /// what storage holds for (scope, key), if anything within retention.
    pub fn resolve_lookup(
        &mut self,
        ticket: LookupTicket,
        stored: Option<StoredKey>,
        now: Millis,
    ) -> Lookup {
        let ticket = ticket.0;
        let valid = matches!(
            self.entries.get(&ticket.entry),
            Some(Entry { state: State::Pending { ticket: id, .. }, .. }) if *id == ticket.id
        );
        if !valid {
            // Unreachable through the public API (see `complete`); answer the
            // safe way: nothing is sent, the caller answers 94.
            return Lookup::Mismatch {
                waiters: Vec::new(),
            };
        }
        match stored {
            None => {
                if let Some(Entry {
                    state: State::Pending { lookup, .. },
                    ..
                }) = self.entries.get_mut(&ticket.entry)
                {
                    *lookup = false;
                }
                Lookup::New(ticket)
            }
            Some(stored) => {
                let waiters = match self.entries.get_mut(&ticket.entry) {
                    Some(Entry {
                        state: State::Pending { waiters, .. },
                        ..
                    }) => std::mem::take(waiters),
                    _ => Vec::new(),
                };
                let same = stored.fingerprint == ticket.fingerprint;
                let outcome = stored.outcome.clone();
                self.mark_done(ticket.entry, Some(stored.fingerprint), stored.outcome, now);
                if same {
                    Lookup::Duplicate { outcome, waiters }
                } else {
                    Lookup::Mismatch { waiters }
                }
            }
        }
    }

    /// Give up a lookup that failed (storage error): the key is released and
    /// the returned waiters should be answered 96 or re-claimed.
    pub fn abandon_lookup(&mut self, ticket: LookupTicket) -> Vec<WaiterToken> {
        self.abandon(ticket.0)
    }

    /// Drop up to `max_work` completed keys whose retention ended by `now`.
    /// Returns how many were dropped.
    pub fn expire(&mut self, now: Millis, max_work: usize) -> usize {
        let mut dropped = 0;
        for _ in 0..max_work {
            match self.completed.front() {
                Some((at, _, _)) if at.plus_ms(self.retention_ms) <= now => {}
                _ => break,
            }
            if let Some((_, key, generation)) = self.completed.pop_front() {
                if self.remove_done(&key, generation) {
                    dropped += 1;
                }
            }
        }
        dropped
    }

    /// When the next completed key expires (for the caller's timer).
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.completed
            .front()
            .map(|(at, _, _)| at.plus_ms(self.retention_ms))
    }

    /// Until `until`, a key missing from memory may be in storage: `claim`
    /// answers `NeedsLookup` for it. Call with `now + retention` at start-up.
    pub fn require_lookup_until(&mut self, until: Millis) {
        self.lookup_until = self.lookup_until.max(until);
    }

    /// Until when misses need a storage lookup.
    pub fn lookup_until(&self) -> Millis {
        self.lookup_until
    }

    /// Keys held in memory (in flight and completed).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys in flight (including lookups under way).
    pub fn in_flight(&self) -> usize {
        self.entries.len() - self.completed.len().min(self.entries.len())
    }

    /// The bound on keys in memory.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Completed keys evicted to make room since creation (for metrics: a
    /// rising count means lookups in storage).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn mark_done(
        &mut self,
        key: EntryKey,
        fingerprint: Option<Fingerprint>,
        outcome: Outcome,
        now: Millis,
    ) {
        self.next_id += 1;
        let generation = self.next_id;
        if let MapEntry::Occupied(mut e) = self.entries.entry(key.clone()) {
            let entry = e.get_mut();
            if let Some(fp) = fingerprint {
                entry.fingerprint = fp;
            }
            entry.state = State::Done {
                outcome,
                generation,
            };
            self.completed.push_back((now, key, generation));
        }
    }

    /// Evict the oldest completed key; false if every key is in flight.
    fn evict_oldest_completed(&mut self) -> bool {
        // Bounded: each record is popped once, and there are at most
        // `capacity` records.
        while let Some((at, key, generation)) = self.completed.pop_front() {
            if self.remove_done(&key, generation) {
                self.evicted += 1;
                self.require_lookup_until(at.plus_ms(self.retention_ms));
                return true;
            }
        }
        false
    }

    fn remove_done(&mut self, key: &EntryKey, generation: u64) -> bool {
        let current = matches!(
            self.entries.get(key),
            Some(Entry { state: State::Done { generation: g, .. }, .. }) if *g == generation
        );
        if current {
            self.entries.remove(key);
        }
        current
    }
}

/// A distinct key for placeholder number `n` ([`IdempotencyIndex::pretouch`]):
/// its 20 zero-padded decimal digits (every `u64` fits).
fn placeholder_key(n: u64) -> Option<RequestKey> {
    let mut digits = [0u8; 20];
    write_padded(n, &mut digits);
    IdempotencyKey::parse(&digits)
        .ok()
        .map(RequestKey::Explicit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fps_codecs::model::{Account, AmountMinor, BankCode, Currency, Mti, TerminalId};

    fn request(key: &str, amount: u64, stan: u32) -> Transaction {
        let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
        t.idempotency_key = Some(IdempotencyKey::parse(key.as_bytes()).unwrap());
        t.amount = Some(AmountMinor::new(amount).unwrap());
        t.currency = Some(Currency::HKD);
        t.receiving_bank = Some(BankCode::parse(b"004").unwrap());
        t.creditor_account = Some(Account::parse(b"123456789").unwrap());
        t.stan = Some(Stan::new(stan).unwrap());
        t.rrn = Some(Rrn::parse(format!("{stan:012}").as_bytes()).unwrap());
        t.terminal_id = Some(TerminalId::parse(b"TERM0001").unwrap());
        t
    }

    fn scope(s: &str) -> ClientScope {
        ClientScope::new(s).unwrap()
    }

    fn approved() -> Outcome {
        Outcome {
            auth_id: Some(AuthId::parse(b"A1B2C3").unwrap()),
            ..Outcome::new(ResponseCode::APPROVED)
        }
    }

    #[test]
    fn retry_after_completion_gets_the_original_with_its_own_matching_fields() {
        let mut idx = IdempotencyIndex::new(8, DEFAULT_RETENTION);
        let gw = scope("CN=gateway-1");
        let Ok(Claim::New(t)) = idx.claim(&gw, &request("k1", 100, 1), Millis(0)) else {
            panic!()
        };
        assert!(idx.complete(t, approved(), Millis(5)).is_empty());
        let retry = request("k1", 100, 2);
        let Ok(Claim::Duplicate(o)) = idx.claim(&gw, &retry, Millis(10)) else {
            panic!()
        };
        let answer = o.answer_for(&retry);
        assert_eq!(answer.mti, Mti::CREDIT_TRANSFER_RESPONSE);
        assert_eq!(answer.stan, retry.stan);
        assert_eq!(answer.rrn, retry.rrn);
        assert_eq!(answer.terminal_id, retry.terminal_id);
        assert_eq!(answer.auth_id, approved().auth_id);
        assert_eq!(answer.response_code, Some(ResponseCode::APPROVED));
        // Other content under the same key: 94.
        assert_eq!(
            idx.claim(&gw, &request("k1", 101, 3), Millis(10)),
            Ok(Claim::Mismatch)
        );
        // Another client's identical key is its own.
        assert!(matches!(
            idx.claim(&scope("CN=gateway-2"), &retry, Millis(10)),
            Ok(Claim::New(_))
        ));
    }

    #[test]
    fn pretouch_writes_every_reserved_slot_and_leaves_an_empty_working_index() {
        let mut idx = IdempotencyIndex::new(5_000, DEFAULT_RETENTION);
        let (table, queue) = (idx.entries.capacity(), idx.completed.capacity());
        assert_eq!(idx.pretouch(), 5_000);
        assert!(idx.is_empty());
        assert_eq!(idx.in_flight(), 0);
        assert!(idx.completed.is_empty());
        // The same allocations, kept: nothing grows on the request path.
        assert_eq!(idx.entries.capacity(), table);
        assert_eq!(idx.completed.capacity(), queue);
        assert_eq!((idx.next_id, idx.evicted), (0, 0));
        // No placeholder answers for a real key (their keys are digits, as
        // a client's F123 may be).
        let gw = scope("pretouch");
        let Ok(Claim::New(t)) = idx.claim(&gw, &request("17", 100, 1), Millis(0)) else {
            panic!("a placeholder key survived pretouch")
        };
        assert!(idx.complete(t, approved(), Millis(1)).is_empty());
        assert!(matches!(
            idx.claim(&gw, &request("17", 100, 2), Millis(2)),
            Ok(Claim::Duplicate(_))
        ));
        // Full capacity still fits without evicting.
        for n in 0..4_999u32 {
            let key = format!("k{n}");
            assert!(matches!(
                idx.claim(&gw, &request(&key, 1, n % 999_999), Millis(3)),
                Ok(Claim::New(_))
            ));
        }
        assert_eq!((idx.len(), idx.evicted()), (5_000, 0));
        assert_eq!(idx.entries.capacity(), table);
    }

    #[test]
    fn pretouch_leaves_a_used_index_alone() {
        let mut idx = IdempotencyIndex::new(100, DEFAULT_RETENTION);
        let gw = scope("gw");
        let Ok(Claim::New(t)) = idx.claim(&gw, &request("k", 1, 1), Millis(0)) else {
            panic!()
        };
        assert_eq!(idx.pretouch(), 0);
        assert_eq!(idx.len(), 1);
        assert!(idx.complete(t, approved(), Millis(1)).is_empty());
        assert_eq!(idx.pretouch(), 0);
        assert!(matches!(
            idx.claim(&gw, &request("k", 1, 2), Millis(2)),
            Ok(Claim::Duplicate(_))
        ));
    }

    #[test]
    fn placeholder_keys_are_distinct_decimal_numbers() {
        let key = |n: u64| match placeholder_key(n) {
            Some(RequestKey::Explicit(k)) => k.as_str().to_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(key(0), "00000000000000000000");
        assert_eq!(key(7), "00000000000000000007");
        assert_eq!(key(1_000_000), "00000000000001000000");
        assert_eq!(key(u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn duplicates_in_flight_wait_and_are_bounded() {
        let mut idx = IdempotencyIndex::new(8, DEFAULT_RETENTION);
        let gw = scope("gw");
        let Ok(Claim::New(t)) = idx.claim(&gw, &request("k", 1, 1), Millis(0)) else {
            panic!()
        };
        let mut tokens = Vec::new();
        for _ in 0..MAX_WAITERS_PER_KEY {
            let Ok(Claim::InFlight(w)) = idx.claim(&gw, &request("k", 1, 9), Millis(1)) else {
                panic!()
            };
            tokens.push(w);
        }
        assert_eq!(
            idx.claim(&gw, &request("k", 1, 9), Millis(1)),
            Err(IdempotencyError::TooManyWaiters)
        );
        assert_eq!(
            idx.claim(&gw, &request("k", 2, 9), Millis(1)),
            Ok(Claim::Mismatch)
        );
        assert_eq!(idx.complete(t, approved(), Millis(2)), tokens);
    }

    #[test]
    fn abandon_frees_the_key_and_returns_waiters() {
        let mut idx = IdempotencyIndex::new(8, DEFAULT_RETENTION);
        let gw = scope("gw");
        let Ok(Claim::New(t)) = idx.claim(&gw, &request("k", 1, 1), Millis(0)) else {
            panic!()
        };
        let Ok(Claim::InFlight(w)) = idx.claim(&gw, &request("k", 1, 2), Millis(0)) else {
            panic!()
        };
        assert_eq!(idx.abandon(t), vec![w]);
        assert!(idx.is_empty());
        assert!(matches!(
            idx.claim(&gw, &request("k", 1, 2), Millis(0)),
            Ok(Claim::New(_))
        ));
    }

    #[test]
    fn missing_key_fields_are_refused() {
        let mut idx = IdempotencyIndex::new(8, DEFAULT_RETENTION);
        let mut t = request("k", 1, 1);
        t.idempotency_key = None;
        assert_eq!(
            idx.claim(&scope("gw"), &t, Millis(0)),
            Err(IdempotencyError::NoKey)
        );
        assert_eq!(
            IdempotencyError::NoKey.response_code(),
            ResponseCode::FORMAT_ERROR
        );
        t.acquirer = Some(InstitutionId::parse(b"123").unwrap());
        t.transmitted_at = Some(TransmissionDateTime::parse(b"0101120000").unwrap());
        assert!(matches!(
            idx.claim(&scope("gw"), &t, Millis(0)),
            Ok(Claim::New(_))
        ));
        assert!(ClientScope::new("").is_err());
        assert!(ClientScope::new(&"x".repeat(MAX_SCOPE_LEN + 1)).is_err());
    }

    #[test]
    fn room_for_every_key_is_reserved_at_start() {
        // The table and the completion record never grow on the request
        // path (a rehash of a large table stalls its caller).
        let index = IdempotencyIndex::new(5_000, Duration::from_secs(60));
        assert!(index.entries.capacity() >= 5_000);
        assert!(index.completed.capacity() >= 5_000);
        let clamped = IdempotencyIndex::new(0, Duration::from_secs(60));
        assert_eq!(clamped.capacity, 1);
    }

    #[test]
    fn eviction_makes_misses_look_in_storage_until_retention_ends() {
        let mut idx = IdempotencyIndex::new(2, Duration::from_millis(1000));
        let gw = scope("gw");
        for (i, k) in ["a", "b"].iter().enumerate() {
            let Ok(Claim::New(t)) = idx.claim(&gw, &request(k, 1, 1), Millis(i as u64)) else {
                panic!()
            };
            idx.complete(t, approved(), Millis(i as u64));
        }
        // Full: "a" (oldest completed) is evicted for "c".
        let Ok(Claim::New(c)) = idx.claim(&gw, &request("c", 1, 1), Millis(10)) else {
            panic!()
        };
        assert_eq!(idx.evicted(), 1);
        assert_eq!(idx.lookup_until(), Millis(1000));
        // "a" is on disk only: a lookup, during which a duplicate waits.
        let Ok(Claim::NeedsLookup(l)) = idx.claim(&gw, &request("a", 1, 2), Millis(20)) else {
            panic!()
        };
        let Ok(Claim::InFlight(w)) = idx.claim(&gw, &request("a", 1, 3), Millis(21)) else {
            panic!()
        };
        let stored = StoredKey {
            fingerprint: Fingerprint::of(&request("a", 1, 1)),
            outcome: approved(),
        };
        assert_eq!(
            idx.resolve_lookup(l, Some(stored), Millis(22)),
            Lookup::Duplicate {
                outcome: approved(),
                waiters: vec![w]
            }
        );
        // "b" was evicted to make room for that lookup: it is on disk only too.
        assert_eq!(idx.evicted(), 2);
        let Ok(Claim::NeedsLookup(l)) = idx.claim(&gw, &request("b", 1, 1), Millis(30)) else {
            panic!()
        };
        // Both slots now hold in-flight keys: nothing can be evicted.
        assert_eq!(
            idx.claim(&gw, &request("d", 1, 1), Millis(31)),
            Err(IdempotencyError::Full)
        );
        assert!(idx.abandon_lookup(l).is_empty());
        idx.complete(c, approved(), Millis(40));
        // After the horizon, misses are new again.
        let Ok(Claim::New(_)) = idx.claim(&gw, &request("z", 1, 1), Millis(2000)) else {
            panic!()
        };
    }

    #[test]
    fn lookup_not_found_becomes_new_and_after_restart_misses_look_up() {
        let mut idx = IdempotencyIndex::new(4, Duration::from_millis(100));
        idx.require_lookup_until(Millis(100));
        let gw = scope("gw");
        let Ok(Claim::NeedsLookup(l)) = idx.claim(&gw, &request("k", 1, 1), Millis(0)) else {
            panic!()
        };
        let Lookup::New(t) = idx.resolve_lookup(l, None, Millis(1)) else {
            panic!()
        };
        idx.complete(t, approved(), Millis(2));
        let Ok(Claim::NeedsLookup(l)) = idx.claim(&gw, &request("m", 1, 1), Millis(3)) else {
            panic!()
        };
        let stored = StoredKey {
            fingerprint: Fingerprint(7),
            outcome: approved(),
        };
        assert_eq!(
            idx.resolve_lookup(l, Some(stored), Millis(4)),
            Lookup::Mismatch { waiters: vec![] }
        );
        assert_eq!(
            idx.claim(&gw, &request("m", 1, 1), Millis(5)),
            Ok(Claim::Mismatch)
        );
    }

    #[test]
    fn expiry_is_bounded_per_call_and_reported_by_poll_timeout() {
        let mut idx = IdempotencyIndex::new(16, Duration::from_millis(100));
        let gw = scope("gw");
        for i in 0..5u64 {
            let Ok(Claim::New(t)) = idx.claim(&gw, &request(&format!("k{i}"), 1, 1), Millis(i))
            else {
                panic!()
            };
            idx.complete(t, approved(), Millis(i));
        }
        assert_eq!(idx.poll_timeout(), Some(Millis(100)));
        assert_eq!(idx.expire(Millis(99), 10), 0);
        assert_eq!(idx.expire(Millis(1000), 2), 2);
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.expire(Millis(1000), 10), 3);
        assert_eq!(idx.poll_timeout(), None);
    }

    #[test]
    fn fold_hash_sees_every_byte_the_length_and_block_edges() {
        let mut seen = std::collections::HashSet::new();
        // Every length 0..=48 of zeros (the padding of the last block must
        // not make lengths collide), and a single changed bit at every
        // position of a 48-byte input.
        for n in 0..=48 {
            assert!(seen.insert(fold_hash(&vec![0u8; n])), "zeros of length {n}");
        }
        for i in 0..48 {
            for bit in 0..8 {
                let mut v = vec![0u8; 48];
                v[i] = 1 << bit;
                assert!(seen.insert(fold_hash(&v)), "bit {bit} of byte {i}");
            }
        }
    }

    #[test]
    fn fingerprint_separates_fields_with_the_same_bytes() {
        let mut a = request("k", 100, 1);
        a.debtor_account = Some(Account::parse(b"12345").unwrap());
        a.creditor_account = Some(Account::parse(b"678").unwrap());
        let mut b = a.clone();
        b.debtor_account = Some(Account::parse(b"1234").unwrap());
        b.creditor_account = Some(Account::parse(b"5678").unwrap());
        assert_ne!(Fingerprint::of(&a), Fingerprint::of(&b));
        let mut c = a.clone();
        std::mem::swap(&mut c.debtor_account, &mut c.creditor_account);
        assert_ne!(Fingerprint::of(&a), Fingerprint::of(&c));
    }

    #[test]
    fn fingerprint_is_fixed_and_covers_content_only() {
        let a = request("k", 100, 1);
        let mut b = request("k", 100, 2);
        b.terminal_id = None;
        assert_eq!(Fingerprint::of(&a), Fingerprint::of(&b));
        let mut c = a.clone();
        c.creditor_account = Some(Account::parse(b"123456780").unwrap());
        assert_ne!(Fingerprint::of(&a), Fingerprint::of(&c));
        let mut d = a.clone();
        d.receiving_bank = Some(BankCode::parse(b"024").unwrap());
        assert_ne!(Fingerprint::of(&a), Fingerprint::of(&d));
        // Pinned: persisted fingerprints must survive upgrades.
        assert_eq!(
            Fingerprint::of(&Transaction::new(Mti::CREDIT_TRANSFER)),
            Fingerprint(0x44d6_0ddf_29e7_b04e)
        );
        let mut e = Transaction::new(Mti::CREDIT_TRANSFER);
        e.amount = Some(AmountMinor::new(100).unwrap());
        e.receiving_bank = Some(BankCode::parse(b"004").unwrap());
        assert_eq!(Fingerprint::of(&e), Fingerprint(0x5bcf_da12_39b5_186f));
    }
}
