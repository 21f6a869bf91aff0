//! The durable store of completed idempotency keys.
//!
//! The in-memory [`IdempotencyIndex`](fps_routing::idempotency::IdempotencyIndex)
//! keeps at most `capacity` keys; once it is full it evicts the oldest
//! completed key and answers later misses with `Claim::NeedsLookup`. This
//! store is where those lookups go, so memory stays bounded whatever the
//! retention (24 h by default, tens of millions of keys on disk).
//!
//! **Derived, not authoritative.** The journal is the source of truth. The
//! switch [`KeyStore::put`]s every completed key after its final record is
//! durable; a dedicated writer thread batches the puts into one write
//! transaction per batch. After a crash the switch replays the journal's
//! final records into the store, so it must know where the store's
//! completeness ends. The highest lsn committed
//! ([`KeyStore::high_water_lsn`]) does not say: concurrent tasks put out of
//! lsn order, and a put refused with `Full` never lands at all.
//!
//! **The low-water mark** ([`KeyStore::low_water_lsn`]) does: every key
//! whose final record has an lsn up to it is in the store (or expired), so
//! the catch-up replays from there and nothing below it is missing. It is
//! kept exact by tracking, while a journal is followed
//! ([`KeyStore::follow_journal`]), every final record from before it is
//! appended until its key is committed:
//!
//! - [`KeyStore::announce_final`] before the append: the record's lsn will
//!   be above the journal's durable lsn read now (its *floor*);
//! - [`FinalTicket::durable_at`] once durable: now its lsn is known;
//! - [`KeyStore::put`] of that lsn: queued; committed with its batch;
//! - a ticket dropped unresolved, a put refused (`Full`, `Closed`) or a key
//!   declared missing ([`KeyStore::hold_low_water_below`]) *holds* the mark
//!   below that record for as long as the store is open: the next start
//!   replays from there.
//!
//! Each batch commit stores, in the same transaction, the smallest of: the
//! journal's durable lsn (read first), one below every tracked floor,
//! durable-but-unput lsn and queued put's lsn, and the hold. The mark only
//! moves up. Puts not from tracked records (the catch-up at start, lsn 0)
//! hold it only while queued.
//!
//! **Why redb.** [redb](https://www.redb.org) is a pure-Rust embedded
//! key-value store: a copy-on-write B-tree in one file with ACID
//! transactions, checksummed commit slots (a torn commit rolls back to the
//! previous one on open), MVCC readers that never block the single writer,
//! and a stable file format. It needs no C toolchain (unlike RocksDB or
//! LMDB bindings), keeps `unsafe` out of this crate, is actively maintained
//! (sled, the other pure-Rust option, has been in beta for years), and a
//! B-tree gives point lookups in O(log n) page reads from its own bounded
//! page cache ([`KeyStoreConfig::cache_bytes`]) plus the ordered scans that
//! expiry needs. Group commit (one transaction per batch) amortises the
//! fsync, which is the cost that matters here.
//!
//! Tables: `keys` (entry key → value), `expiry` (oldest completion time ‖
//! sequence number → the entry keys of up to a few thousand puts of one
//! commit with their completion times, oldest first, for
//! [`KeyStore::expire`]) and `meta` (format version, high- and low-water
//! lsns, the next expiry batch's sequence number). The byte layouts are
//! documented in [`format`](mod@format).
//!
//! **One expiry record per batch, not per key.** Format 2 kept an index
//! record (completion time ‖ entry key) per key: a second B-tree insert per
//! put with the whole entry key in it, half of the writer thread's CPU
//! (measured: 262 vs 117-122 ms per 5 s at 16,000 puts/s with and without
//! it), and a second delete per expired key. An expiry batch is one insert
//! per commit; expiry reads a batch, deletes the keys that are still its
//! own, and removes the batch (or rewrites what is left of it, under its
//! oldest remaining time, when the cut-off or the call's bound falls
//! inside it). A format-2 store is upgraded in place at open: its
//! `by_time` index is drained by expiry as before, then dropped.
//!
//! **A failed commit** is retried with backoff. redb refuses every
//! operation after a failed write until the database is reopened, so before
//! each retry the writer reopens the file, once a probe write shows the disk
//! has room again: a full disk stops commits only while it is full.
//!
//! **Most misses never read the file.** A membership filter over the
//! stored keys ([`filter`]) answers "not stored" for a key the store
//! certainly does not hold, which is nearly every new key once the
//! in-memory index is full.
//!
//! **Reads see pending writes.** A put is visible to [`KeyStore::lookup`] at
//! once: queued and in-flight puts live in a small overlay (bounded by
//! `queue_capacity`) until their transaction has committed, and the overlay
//! is consulted before the file. Because an entry leaves the overlay only
//! after its commit, a lookup that misses the overlay and then reads the
//! file always finds a key put before the lookup began.

pub mod filter;
pub mod format;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use filter::KeyFilter;
use fps_routing::idempotency::{ClientScope, RequestKey, StoredKey};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle,
};
use tokio::sync::{oneshot, watch};

use crate::metrics as m;

/// Default most puts committed in one write transaction.
pub const DEFAULT_MAX_BATCH: usize = 8192;
/// Default most puts queued or in flight before `put` answers `Full`.
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// Reader threads serving `lookup` (the machine has 2 cores; a read that
/// hits the page cache takes about 2 µs, so two threads keep up with far
/// more lookups than the switch makes).
pub const READER_THREADS: usize = 2;
/// Lookups queued for the reader threads before `lookup` falls back to
/// tokio's blocking pool.
pub const READ_QUEUE_CAPACITY: usize = 4096;
/// Keys the start-up scan adds to the filter per read transaction.
const FILTER_SCAN_CHUNK: usize = 65_536;
/// Failed reads in a row after which the start-up scan gives up.
const FILTER_SCAN_ATTEMPTS: u32 = 10;
/// Most lookups one reader serves per wake-up and read transaction.
pub const MAX_READ_BATCH: usize = 64;
/// Keys a commit inserts between two offers of the CPU to other threads
/// (about 100-200 us of work).
const YIELD_EVERY_INSERTS: usize = 64;
/// Default least time between two batch commits (see
/// [`KeyStoreConfig::commit_interval`]).
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// Largest accepted `commit_interval`: the overlay holds every put of one
/// interval, so a long one only trades memory for nothing.
pub const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(10);
/// Default redb page cache.
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;
/// Largest accepted `max_batch` (one transaction's worth of work).
pub const MAX_BATCH_LIMIT: usize = 1 << 20;
/// Largest accepted `queue_capacity` (the overlay's bound).
pub const MAX_QUEUE_CAPACITY: usize = 1 << 24;
/// Most keys one [`KeyStore::expire`] call deletes, whatever `max` says, so
/// one expiry transaction never holds up the writer for long.
pub const MAX_EXPIRE_PER_CALL: usize = 65_536;
/// Most calls one [`KeyStore::expire_due`] makes (a bound: each call
/// consumes what it looks at, so the loop ends long before it).
pub const MAX_EXPIRE_CALLS: usize = 10_000;
/// Pause between two of [`KeyStore::expire_due`]'s calls, for the writer.
const EXPIRE_PAUSE: Duration = Duration::from_millis(2);
/// On-disk format of the store as a whole (in the `meta` table). Format 1
/// stored version 1 request fingerprints (FNV-1a): such a store is set
/// aside at open (renamed `<file>.format<N>`) and a fresh one is rebuilt
/// from the journal, whose received records carry every request: the store
/// is derived, so nothing is lost, and no stale fingerprint ever turns a
/// genuine retry into a 94. Format 2 indexed expiry per key (`by_time`);
/// format 3 per commit (`expiry`), and a format-2 store is upgraded in
/// place (see the module doc).
pub const STORE_FORMAT: u64 = 3;
/// Oldest store format upgraded in place (format 2: the same entries,
/// expiry indexed per key in `by_time`); older ones are set aside.
const OLDEST_UPGRADABLE_FORMAT: u64 = 2;
/// Most final records tracked at once (announced, or durable and not yet
/// put). Past it a new record is not tracked and the low-water mark is held
/// below it instead: memory stays bounded, the mark stays exact (only lower).
pub const MAX_TRACKED_FINALS: usize = 1 << 20;

/// First and largest pause between retries of a failed batch commit. The
/// writer keeps retrying (the queue in front of it is bounded, so puts get
/// `Full` meanwhile) and recovers by itself when the disk works again.
const RETRY_BACKOFF_FIRST: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bytes written (and removed) next to the store before it is reopened
/// after a failed commit: while the disk has less room than this, reopening
/// (which may repair the whole file) is not worth trying.
const REOPEN_PROBE_BYTES: usize = 1024 * 1024;

const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys");
/// Format 2's per-key expiry index, drained and dropped after an upgrade.
const BY_TIME: TableDefinition<&[u8], ()> = TableDefinition::new("by_time");
const EXPIRY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("expiry");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_FORMAT: &str = "format";
const META_HIGH_WATER_LSN: &str = "high_water_lsn";
/// Absent in stores written before it existed: read as 0 (replay everything).
const META_LOW_WATER_LSN: &str = "low_water_lsn";
/// The next expiry batch's sequence number.
const META_EXPIRY_SEQ: &str = "expiry_seq";

/// Name of the redb table of entries (entry key → value), for tools and tests.
pub const KEYS_TABLE: &str = "keys";

thread_local! {
    /// [`KeyStore::put`]'s encoding buffer, one per thread (puts come from
    /// the runtime's workers): a put allocates only what it shares.
    static PUT_SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(
        Vec::with_capacity(format::MAX_KEY_BYTES + format::MIN_VALUE_BYTES + 128),
    );
}

/// Where and how to keep the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStoreConfig {
    /// The redb file (created if missing; its directory must exist).
    pub path: PathBuf,
    /// Most puts per write transaction (1..=[`MAX_BATCH_LIMIT`]).
    pub max_batch: usize,
    /// Most puts queued or in flight (1..=[`MAX_QUEUE_CAPACITY`]); past it
    /// `put` answers `Full`.
    pub queue_capacity: usize,
    /// redb page cache in bytes.
    pub cache_bytes: usize,
    /// `true` (default): each batch is durable when its commit returns.
    /// `false`: commits are not fsynced, so a crash may lose recent batches
    /// (and the high-water mark with them, so the journal replay covers it).
    pub durable_commits: bool,
    /// Least time between two batch commits (0..=[`MAX_COMMIT_INTERVAL`]).
    /// A commit costs the same fixed work (page flushes, commit slot,
    /// fsync) whatever its size, and the keys are spread over the whole
    /// B-tree, so larger, rarer batches cut the writer's CPU per key
    /// several-fold. Nothing waits for a commit: reads see pending puts
    /// (the overlay), the journal already holds every key, and the
    /// low-water mark only lags by this much. The writer commits sooner
    /// when `max_batch` puts are queued, on [`KeyStore::flush`] and on
    /// shutdown. 0 commits as soon as anything is queued.
    pub commit_interval: Duration,
    /// How long a completed key must stay findable: the idempotency
    /// retention. The membership filter keeps each key at least this long.
    pub retention: Duration,
}

impl KeyStoreConfig {
    /// A config for the file at `path` with the defaults.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KeyStoreConfig {
            path: path.into(),
            max_batch: DEFAULT_MAX_BATCH,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            cache_bytes: DEFAULT_CACHE_BYTES,
            durable_commits: true,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            retention: fps_routing::idempotency::DEFAULT_RETENTION,
        }
    }
}

/// One completed key to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The client the key belongs to.
    pub scope: ClientScope,
    /// The key.
    pub key: RequestKey,
    /// Its fingerprint and final outcome.
    pub stored: StoredKey,
    /// When it completed, Unix milliseconds (drives expiry).
    pub completed_unix_ms: u64,
    /// Journal lsn of the key's final record.
    pub lsn: u64,
}

/// Why a key store operation failed. Messages never carry key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// The put queue is full; the key is still in the journal.
    #[error("key store queue full")]
    Full,
    /// The writer has stopped; the store cannot take puts.
    #[error("key store closed")]
    Closed,
    /// The file could not be read or written.
    #[error("key store I/O error: {0}")]
    Io(String),
    /// A record or the file is damaged.
    #[error("key store corrupt: {0}")]
    Corrupt(&'static str),
    /// A config value is out of range.
    #[error("key store config: {0}")]
    InvalidConfig(&'static str),
}

/// The future [`KeyStorage::lookup`] returns.
pub type LookupFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Option<(StoredKey, u64)>, KeyStoreError>>
            + Send
            + 'a,
    >,
>;

/// What the request path needs from a store of completed idempotency keys:
/// the seam for other backends. [`KeyStore`] (redb, one switch, derived
/// from its own journal) is the one built in.
///
/// A shared backend for several switch instances behind one gateway (a
/// PostgreSQL table keyed by scope and key, with the value bytes of
/// [`format`](mod@format)) implements this trait and nothing in
/// `safety` or `pipeline` changes. It differs only in how it is
/// kept complete: with one switch the store trails the journal and the
/// start-up catch-up fills the gap ([`KeyStore::low_water_lsn`]); shared,
/// `put` would run in the transaction that makes the final record durable
/// (or the instances would claim keys there first), so there is no gap to
/// fill, and `app` would skip the catch-up for it.
pub trait KeyStorage: Send + Sync + fmt::Debug {
    /// Store a completed key; never blocks the caller. `Err(Full)` or
    /// `Err(Closed)` leave the key in the journal only.
    fn put(&self, rec: KeyRecord) -> Result<(), KeyStoreError>;

    /// The stored outcome of (scope, key) and its completion time (Unix
    /// milliseconds), if the store holds it. Sees every earlier `put`.
    fn lookup<'a>(&'a self, scope: &'a ClientScope, key: &'a RequestKey) -> LookupFuture<'a>;
}

impl KeyStorage for KeyStore {
    fn put(&self, rec: KeyRecord) -> Result<(), KeyStoreError> {
        KeyStore::put(self, rec)
    }

    fn lookup<'a>(&'a self, scope: &'a ClientScope, key: &'a RequestKey) -> LookupFuture<'a> {
        Box::pin(KeyStore::lookup(self, scope, key))
    }
}

/// The durable key store. See the module docs.
pub struct KeyStore {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    /// Lookups for the reader threads; dropped first on shutdown so they exit.
    reads: Option<crossbeam::channel::Sender<ReadRequest>>,
    readers: Vec<JoinHandle<()>>,
    /// Adds the keys in the file at open to the filter.
    filter_scan: Option<JoinHandle<()>>,
}

impl KeyStore {
    /// Open (or create) the store at `cfg.path` and start its writer thread.
    pub fn open(cfg: KeyStoreConfig) -> Result<KeyStore, KeyStoreError> {
        if !(1..=MAX_BATCH_LIMIT).contains(&cfg.max_batch) {
            return Err(KeyStoreError::InvalidConfig("max_batch out of range"));
        }
        if !(1..=MAX_QUEUE_CAPACITY).contains(&cfg.queue_capacity) {
            return Err(KeyStoreError::InvalidConfig("queue_capacity out of range"));
        }
        if cfg.commit_interval > MAX_COMMIT_INTERVAL {
            return Err(KeyStoreError::InvalidConfig("commit_interval out of range"));
        }
        let mut db = Database::builder()
            .set_cache_size(cfg.cache_bytes)
            .create(&cfg.path)
            .map_err(db_err)?;
        if let Some(old) = stored_format(&db)?.filter(|f| (1..OLDEST_UPGRADABLE_FORMAT).contains(f))
        {
            drop(db);
            let mut aside = cfg.path.as_os_str().to_owned();
            aside.push(format!(".format{old}"));
            std::fs::rename(&cfg.path, &aside).map_err(|e| KeyStoreError::Io(e.to_string()))?;
            tracing::warn!(
                from = old,
                to = STORE_FORMAT,
                aside = %Path::new(&aside).display(),
                "key store of an older format set aside; rebuilding it from the journal"
            );
            db = Database::builder()
                .set_cache_size(cfg.cache_bytes)
                .create(&cfg.path)
                .map_err(db_err)?;
        }
        let opened = init_tables(&db)?;
        let stored_keys = stored_len(&db)?;
        metrics::gauge!(m::KEYSTORE_KEYS).set(stored_keys as f64);
        let durability = if cfg.durable_commits {
            Durability::Immediate
        } else {
            Durability::None
        };
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(Arc::new(db))),
            cache_bytes: cfg.cache_bytes,
            path: cfg.path,
            durability,
            max_batch: cfg.max_batch,
            queue_capacity: cfg.queue_capacity,
            commit_interval: cfg.commit_interval,
            full_batch: cfg.max_batch.min(cfg.queue_capacity),
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            progress: watch::Sender::new(Progress::default()),
            high_water_lsn: AtomicU64::new(opened.high_water),
            low_water_lsn: AtomicU64::new(opened.low_water),
            expiry_seq: AtomicU64::new(opened.expiry_seq),
            legacy_index: AtomicBool::new(opened.legacy_index),
            journal_lsn: OnceLock::new(),
            refused: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            filter: KeyFilter::new(cfg.retention, stored_keys),
            lookups: LookupCounters::new(),
        });
        let for_writer = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("keystore-writer".into())
            .spawn(move || {
                crate::threads::run_in_background();
                run_writer(&for_writer)
            })
            .map_err(|e| KeyStoreError::Io(e.to_string()))?;
        let (reads, requests) = crossbeam::channel::bounded(READ_QUEUE_CAPACITY);
        // Built before the readers start so that, if one fails to start,
        // dropping it stops whatever did start.
        let mut store = KeyStore {
            shared,
            writer: Some(writer),
            reads: Some(reads),
            readers: Vec::with_capacity(READER_THREADS),
            filter_scan: None,
        };
        for i in 0..READER_THREADS {
            let shared = Arc::clone(&store.shared);
            let requests = requests.clone();
            let reader = std::thread::Builder::new()
                .name(format!("keystore-reader-{i}"))
                .spawn(move || run_reader(&shared, &requests))
                .map_err(|e| KeyStoreError::Io(e.to_string()))?;
            store.readers.push(reader);
        }
        let for_scan = Arc::clone(&store.shared);
        let scan = std::thread::Builder::new()
            .name("keystore-filter".into())
            .spawn(move || {
                crate::threads::run_in_background();
                run_filter_scan(&for_scan);
            })
            .map_err(|e| KeyStoreError::Io(e.to_string()))?;
        store.filter_scan = Some(scan);
        Ok(store)
    }

    /// Queue a completed key; never blocks. `Err(Full)` when the queue is
    /// full (count it: the journal still has the key), `Err(Closed)` if the
    /// writer has stopped.
    pub fn put(&self, rec: KeyRecord) -> Result<(), KeyStoreError> {
        // Encoded into this thread's scratch buffer, then copied once into
        // the two shared allocations the queue and the overlay hold.
        let (key, value): (Arc<[u8]>, Arc<[u8]>) = PUT_SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            format::encode_key(&rec.scope, &rec.key, buf);
            let key_len = buf.len();
            format::encode_value(&rec.stored, rec.completed_unix_ms, rec.lsn, buf);
            let (key, value) = buf.split_at(key_len);
            // Before the key can be seen anywhere (and whether or not the
            // put is refused below): the filter never answers "absent" for it.
            self.shared.filter.insert(key, rec.completed_unix_ms);
            (key.into(), value.into())
        });

        let mut p = self.shared.lock_pending();
        // A tracked final record is no longer waiting for its put: from here
        // on it is either queued (and counted in `queued_lsns`) or missing.
        let tracked = take_one(&mut p.unput, rec.lsn);
        if p.writer_gone || p.shutdown {
            if tracked {
                p.hold_below(rec.lsn);
            }
            return Err(KeyStoreError::Closed);
        }
        if p.queue.len() + p.in_flight >= self.shared.queue_capacity {
            if tracked {
                p.hold_below(rec.lsn);
            }
            drop(p);
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::KEYSTORE_REFUSED).increment(1);
            return Err(KeyStoreError::Full);
        }
        if rec.lsn > 0 {
            *p.queued_lsns.entry(rec.lsn).or_default() += 1;
        }
        p.next_seq += 1;
        let seq = p.next_seq;
        p.overlay.insert(
            Arc::clone(&key),
            Overlaid {
                seq,
                value: Arc::clone(&value),
            },
        );
        p.queue.push_back(Queued {
            seq,
            key,
            value,
            completed_unix_ms: rec.completed_unix_ms,
            lsn: rec.lsn,
        });
        // The writer sleeps on an empty queue, or until its commit interval
        // is up with fewer than a batch queued: only the first put and the
        // one that fills a batch need to wake it.
        let wake = p.queue.len() == 1 || p.queue.len() == self.shared.full_batch;
        drop(p);
        if wake {
            self.shared.wake.notify_all();
        }
        Ok(())
    }

    /// Look a key up: pending puts first, then the file, read by the
    /// store's reader threads (off the async workers; each wake-up serves up
    /// to [`MAX_READ_BATCH`] queued lookups from one read transaction). When
    /// their queue is full the read goes to tokio's blocking pool instead.
    /// Returns the stored key and its completion time, Unix milliseconds.
    pub async fn lookup(
        &self,
        scope: &ClientScope,
        key: &RequestKey,
    ) -> Result<Option<(StoredKey, u64)>, KeyStoreError> {
        let mut entry = Vec::with_capacity(64);
        format::encode_key(scope, key, &mut entry);
        if let Some(found) = self.shared.known_without_read(&entry) {
            return found;
        }
        let (reply, answer) = oneshot::channel();
        let request = ReadRequest { entry, reply };
        let Some(reads) = &self.reads else {
            return Err(KeyStoreError::Closed);
        };
        match reads.try_send(request) {
            // A dropped reply means the reader is gone (shutdown).
            Ok(()) => answer.await.map_err(|_| KeyStoreError::Closed)?,
            Err(crossbeam::channel::TrySendError::Full(request)) => {
                let shared = Arc::clone(&self.shared);
                tokio::task::spawn_blocking(move || shared.read(&request.entry))
                    .await
                    // The closure does not panic; a JoinError means the
                    // runtime is shutting down.
                    .map_err(|_| KeyStoreError::Closed)?
            }
            Err(crossbeam::channel::TrySendError::Disconnected(_)) => Err(KeyStoreError::Closed),
        }
    }

    /// [`KeyStore::lookup`] for a thread that may block (start-up, tools).
    pub fn lookup_blocking(
        &self,
        scope: &ClientScope,
        key: &RequestKey,
    ) -> Result<Option<(StoredKey, u64)>, KeyStoreError> {
        let mut entry = Vec::with_capacity(64);
        format::encode_key(scope, key, &mut entry);
        if let Some(found) = self.shared.known_without_read(&entry) {
            return found;
        }
        self.shared.read(&entry)
    }

    /// Whether the membership filter holds every stored key (the scan of
    /// the file at open is done): from then on most lookups of new keys
    /// read nothing.
    pub fn filter_complete(&self) -> bool {
        self.shared.filter.is_complete()
    }

    /// Highest journal lsn whose key is durably in the store (kept in the
    /// store, updated with each batch). Keys below it may be missing: see
    /// [`KeyStore::low_water_lsn`].
    pub fn high_water_lsn(&self) -> u64 {
        self.shared.high_water_lsn.load(Ordering::Acquire)
    }

    /// Every key whose final record has a journal lsn up to this one is
    /// durably in the store (or expired): the catch-up after a crash starts
    /// above it. Kept in the store, updated with each batch; see the module
    /// docs.
    pub fn low_water_lsn(&self) -> u64 {
        self.shared.low_water_lsn.load(Ordering::Acquire)
    }

    /// Follow the journal the keys come from: `durable_lsn` returns its
    /// highest durable lsn (every record appended after a read gets a
    /// higher one). Until this is called the low-water mark does not move;
    /// from then on every final record must be announced with
    /// [`KeyStore::announce_final`] before it is appended. Set once: later
    /// calls are ignored (and return `false`).
    pub fn follow_journal(&self, durable_lsn: impl Fn() -> u64 + Send + Sync + 'static) -> bool {
        self.shared.journal_lsn.set(Box::new(durable_lsn)).is_ok()
    }

    /// A final record is about to be appended to the followed journal. The
    /// low-water mark stays below it until the ticket learns its lsn
    /// ([`FinalTicket::durable_at`]) and its key is put and committed, or
    /// the ticket says it was not written. A ticket dropped unresolved holds
    /// the mark below the record for good (its lsn, if any, is unknown).
    pub fn announce_final(&self) -> FinalTicket {
        let mut p = self.shared.lock_pending();
        // Read under the lock, so floors never decrease in announcement
        // order (the first tracked one is the lowest).
        let floor = self
            .shared
            .journal_lsn()
            .unwrap_or_else(|| self.low_water_lsn())
            + 1;
        if p.announced.len() + p.unput.len() >= MAX_TRACKED_FINALS {
            p.hold_below(floor);
            return FinalTicket {
                shared: None,
                id: 0,
                floor,
            };
        }
        p.next_announced += 1;
        let id = p.next_announced;
        p.announced.insert(id, floor);
        FinalTicket {
            shared: Some(Arc::clone(&self.shared)),
            id,
            floor,
        }
    }

    /// The key of the final record at `lsn` will not be put (it is known to
    /// be missing): keep the low-water mark below it while the store is open.
    pub fn hold_low_water_below(&self, lsn: u64) {
        let mut p = self.shared.lock_pending();
        take_one(&mut p.unput, lsn);
        p.hold_below(lsn);
    }

    /// The journal lsn stored with a key (pending puts first), if the key is
    /// in the store. For a thread that may block (start-up catch-up).
    pub fn stored_lsn_blocking(
        &self,
        scope: &ClientScope,
        key: &RequestKey,
    ) -> Result<Option<u64>, KeyStoreError> {
        let mut entry = Vec::with_capacity(64);
        format::encode_key(scope, key, &mut entry);
        let pending = {
            let p = self.shared.lock_pending();
            p.overlay
                .get(entry.as_slice())
                .map(|o| Arc::clone(&o.value))
        };
        if let Some(value) = pending {
            return format::decode_value(&value).map(|v| Some(v.lsn));
        }
        let tx = self.shared.db()?.begin_read().map_err(db_err)?;
        let keys = tx.open_table(KEYS).map_err(db_err)?;
        let Some(v) = keys.get(entry.as_slice()).map_err(db_err)? else {
            return Ok(None);
        };
        format::decode_value(v.value()).map(|v| Some(v.lsn))
    }

    /// Delete keys completed before `before_unix_ms`, oldest first, looking
    /// at most at `max` (and [`MAX_EXPIRE_PER_CALL`]) index entries per
    /// call; returns how many keys were deleted. Blocks for one write
    /// transaction: call it from a blocking thread (`spawn_blocking`) on a
    /// timer.
    pub fn expire(&self, before_unix_ms: u64, max: usize) -> Result<usize, KeyStoreError> {
        self.expire_step(before_unix_ms, max).map(|b| b.deleted)
    }

    /// Expire everything completed before `before_unix_ms`: [`expire`]
    /// calls of at most `per_call` index entries (and
    /// [`MAX_EXPIRE_PER_CALL`]), each its own transaction with a pause
    /// after it so that the writer's commits go on, until one finds nothing
    /// more to look at (at most [`MAX_EXPIRE_CALLS`] calls). Returns how
    /// many keys were deleted. One call of the old size a minute fell
    /// behind any rate above about 1,100 puts/s.
    ///
    /// [`expire`]: KeyStore::expire
    pub fn expire_due(&self, before_unix_ms: u64, per_call: usize) -> Result<usize, KeyStoreError> {
        let mut deleted = 0;
        if per_call == 0 {
            return Ok(0);
        }
        for _ in 0..MAX_EXPIRE_CALLS {
            let step = self.expire_step(before_unix_ms, per_call)?;
            deleted += step.deleted;
            if step.left > 0 {
                break;
            }
            std::thread::sleep(EXPIRE_PAUSE);
        }
        metrics::gauge!(m::KEYSTORE_KEYS).set(self.len()? as f64);
        Ok(deleted)
    }

    /// One expiry transaction; the budget it ends with says whether it ran
    /// out (`left == 0`: there may be more).
    fn expire_step(&self, before_unix_ms: u64, max: usize) -> Result<ExpiryBudget, KeyStoreError> {
        let max = max.min(MAX_EXPIRE_PER_CALL);
        if max == 0 {
            return Ok(ExpiryBudget {
                left: 0,
                deleted: 0,
            });
        }
        let mut tx = self.shared.db()?.begin_write().map_err(db_err)?;
        tx.set_durability(self.shared.durability)
            .map_err(|e| KeyStoreError::Io(e.to_string()))?;
        let mut budget = ExpiryBudget {
            left: max,
            deleted: 0,
        };
        let mut legacy_drained = false;
        {
            let mut keys = tx.open_table(KEYS).map_err(db_err)?;
            if self.shared.legacy_index.load(Ordering::Acquire) {
                legacy_drained = expire_legacy(&tx, &mut keys, before_unix_ms, &mut budget)?;
            }
            expire_batches(&tx, &mut keys, before_unix_ms, &mut budget)?;
        }
        if legacy_drained {
            tx.delete_table(BY_TIME).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        metrics::counter!(m::KEYSTORE_EXPIRED).increment(budget.deleted as u64);
        if legacy_drained {
            self.shared.legacy_index.store(false, Ordering::Release);
            tracing::info!("key store: format 2 expiry index drained and dropped");
        }
        Ok(budget)
    }

    /// Wait until every put queued before this call is committed. Fails with
    /// `Io` if a commit fails meanwhile (the writer keeps retrying).
    pub async fn flush(&self) -> Result<(), KeyStoreError> {
        let target = {
            let mut p = self.shared.lock_pending();
            p.flush_to = p.flush_to.max(p.next_seq);
            p.next_seq
        };
        self.shared.wake.notify_all();
        let mut rx = self.shared.progress.subscribe();
        let failures_before = rx.borrow().failures;
        let progress = *rx
            .wait_for(|p| p.committed_seq >= target || p.failures > failures_before || p.closed)
            .await
            // The sender lives in `shared`, which `self` holds.
            .map_err(|_| KeyStoreError::Closed)?;
        if progress.committed_seq >= target {
            Ok(())
        } else if progress.closed {
            Err(KeyStoreError::Closed)
        } else {
            Err(self.shared.last_error())
        }
    }

    /// Number of keys committed to the file (puts still pending are not
    /// counted: `flush` first).
    pub fn len(&self) -> Result<u64, KeyStoreError> {
        let tx = self.shared.db()?.begin_read().map_err(db_err)?;
        let keys = tx.open_table(KEYS).map_err(db_err)?;
        keys.len().map_err(db_err)
    }

    /// Whether no key is committed.
    pub fn is_empty(&self) -> Result<bool, KeyStoreError> {
        Ok(self.len()? == 0)
    }

    /// Puts queued or being committed.
    pub fn pending(&self) -> usize {
        self.shared.pending_len()
    }

    /// Puts refused with `Full` since open (for a metric).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Batch commits that failed since open (each is retried; for a metric).
    pub fn commit_failures(&self) -> u64 {
        self.shared.commit_failures.load(Ordering::Relaxed)
    }

    /// The redb file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Hold (`true`) or release the writer (tests only): held puts stay pending.
    #[cfg(test)]
    fn pause_writer(&self, paused: bool) {
        self.shared.lock_pending().paused = paused;
        self.shared.wake.notify_all();
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.shared.path)
            .field("pending", &self.pending())
            .field("high_water_lsn", &self.high_water_lsn())
            .field("low_water_lsn", &self.low_water_lsn())
            .finish_non_exhaustive()
    }
}

impl Drop for KeyStore {
    /// Commit what is still queued, then stop the writer. If a commit fails
    /// during shutdown the rest is dropped: the journal still has it.
    fn drop(&mut self) {
        // The filter scan stops at its next chunk once shutdown is set.
        self.shared.lock_pending().shutdown = true;
        if let Some(scan) = self.filter_scan.take() {
            let _ = scan.join();
        }
        // Readers exit once the channel is closed and drained.
        self.reads = None;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.shared.lock_pending().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(writer) = self.writer.take() {
            // A panic in the writer has already been reported by the runtime;
            // nothing more to do with it here.
            let _ = writer.join();
        }
    }
}

struct Shared {
    /// The open file; `None` only while the writer reopens it (see
    /// [`Shared::reopen`]).
    db: RwLock<Option<Arc<Database>>>,
    cache_bytes: usize,
    path: PathBuf,
    durability: Durability,
    max_batch: usize,
    queue_capacity: usize,
    commit_interval: Duration,
    /// Queued puts that make the writer commit before its interval is up:
    /// a full batch, or a full queue if that is smaller.
    full_batch: usize,
    pending: Mutex<Pending>,
    /// Wakes the writer: a first put into an empty queue, pause changes,
    /// shutdown.
    wake: Condvar,
    progress: watch::Sender<Progress>,
    high_water_lsn: AtomicU64,
    low_water_lsn: AtomicU64,
    /// The next expiry batch's sequence number (the writer's; committed
    /// with each batch).
    expiry_seq: AtomicU64,
    /// A format-2 `by_time` index may still hold records (until expiry has
    /// drained and dropped it).
    legacy_index: AtomicBool,
    /// The followed journal's durable lsn (see [`KeyStore::follow_journal`]).
    journal_lsn: OnceLock<Box<dyn Fn() -> u64 + Send + Sync>>,
    refused: AtomicU64,
    commit_failures: AtomicU64,
    last_error: Mutex<Option<KeyStoreError>>,
    /// Every key put, and every key in the file at open once the scan is
    /// done.
    filter: KeyFilter,
    lookups: LookupCounters,
}

/// How lookups were answered (cached handles: one per lookup, and in the
/// steady state that is one per new transaction).
struct LookupCounters {
    pending: metrics::Counter,
    filter: metrics::Counter,
    store: metrics::Counter,
}

impl LookupCounters {
    fn new() -> Self {
        let via = |v: &'static str| metrics::counter!(m::KEYSTORE_LOOKUPS, "via" => v);
        LookupCounters {
            pending: via("pending"),
            filter: via("filter"),
            store: via("store"),
        }
    }
}

/// Puts not yet committed. `queue.len() + in_flight <= queue_capacity`, and
/// the overlay holds at most one entry per such put.
#[derive(Default)]
struct Pending {
    queue: VecDeque<Queued>,
    /// Puts taken by the writer and not yet committed.
    in_flight: usize,
    /// Latest pending value of each key, by the seq of the put that set it.
    overlay: HashMap<Arc<[u8]>, Overlaid>,
    /// Seq of the last put (seqs start at 1).
    next_seq: u64,
    shutdown: bool,
    writer_gone: bool,
    paused: bool,
    /// [`KeyStore::flush`] waits for puts up to this seq: commit them now,
    /// whatever the commit interval says.
    flush_to: u64,
    /// Lsns (> 0) of queued puts, with multiplicity. The writer removes a
    /// batch's lsns when it takes the batch: that batch's commit is the one
    /// that stores the low-water mark they allow.
    queued_lsns: BTreeMap<u64, u32>,
    /// Final records announced and not yet durable: ticket id → floor.
    /// Floors never decrease in id order.
    announced: BTreeMap<u64, u64>,
    /// Tracked final records durable at an lsn whose put has not come yet.
    unput: BTreeMap<u64, u32>,
    /// The low-water mark stays below this (a tracked key is missing);
    /// `None` while nothing is held.
    held_below: Option<u64>,
    /// Id of the last announced final record.
    next_announced: u64,
}

impl Pending {
    fn hold_below(&mut self, lsn: u64) {
        self.held_below = Some(self.held_below.map_or(lsn, |h| h.min(lsn)));
    }
}

/// Remove one occurrence of `lsn` from a multiset; whether it was there.
fn take_one(set: &mut BTreeMap<u64, u32>, lsn: u64) -> bool {
    let Some(n) = set.get_mut(&lsn) else {
        return false;
    };
    *n -= 1;
    if *n == 0 {
        set.remove(&lsn);
    }
    true
}

/// One tracked final record (see [`KeyStore::announce_final`]).
#[derive(Debug)]
#[must_use = "a dropped ticket holds the low-water mark for good"]
pub struct FinalTicket {
    /// `None` once resolved, or when the record is not tracked.
    shared: Option<Arc<Shared>>,
    id: u64,
    floor: u64,
}

impl FinalTicket {
    /// The record is durable at `lsn`: the mark now waits for its put.
    pub fn durable_at(mut self, lsn: u64) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let mut p = shared.lock_pending();
        p.announced.remove(&self.id);
        if lsn < self.floor {
            // Cannot happen with a journal that follows its contract; hold
            // rather than trust a mark that may already be past this lsn.
            p.hold_below(lsn.max(1));
        } else {
            *p.unput.entry(lsn).or_default() += 1;
        }
    }

    /// The record was not written: its lsn goes to a later record, so
    /// there is nothing to wait for.
    pub fn not_written(mut self) {
        if let Some(shared) = self.shared.take() {
            shared.lock_pending().announced.remove(&self.id);
        }
    }
}

impl Drop for FinalTicket {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut p = shared.lock_pending();
            p.announced.remove(&self.id);
            p.hold_below(self.floor);
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

struct Queued {
    seq: u64,
    key: Arc<[u8]>,
    value: Arc<[u8]>,
    completed_unix_ms: u64,
    lsn: u64,
}

struct Overlaid {
    seq: u64,
    value: Arc<[u8]>,
}

/// What `flush` waits on.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every put with a seq up to this one is committed.
    committed_seq: u64,
    /// Failed commit attempts so far.
    failures: u64,
    /// The writer has stopped.
    closed: bool,
}

type Found = Result<(StoredKey, u64), KeyStoreError>;

impl Shared {
    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics while holding the lock, and every update leaves
        // the state consistent, so a poisoned lock is still usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer to a lookup of `entry` when it needs no read: the pending
    /// value, or "not stored" when the filter rules the key out.
    fn known_without_read(
        &self,
        entry: &[u8],
    ) -> Option<Result<Option<(StoredKey, u64)>, KeyStoreError>> {
        if let Some(found) = self.overlay_get(entry) {
            self.lookups.pending.increment(1);
            return Some(found.map(Some));
        }
        if !self.filter.may_contain(entry) {
            self.lookups.filter.increment(1);
            return Some(Ok(None));
        }
        self.lookups.store.increment(1);
        None
    }

    fn overlay_get(&self, entry: &[u8]) -> Option<Found> {
        let value = Arc::clone(&self.lock_pending().overlay.get(entry)?.value);
        Some(format::decode_value(&value).map(|v| (v.stored, v.completed_unix_ms)))
    }

    /// The open database (held only for the call that needs it, so that a
    /// reopen is not kept waiting).
    fn db(&self) -> Result<Arc<Database>, KeyStoreError> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| KeyStoreError::Io("key store is being reopened".into()))
    }

    /// Close and reopen the file. redb answers every operation after a
    /// failed write with "previous I/O error" until the database is
    /// reopened, so without this a store that once hit a full disk would
    /// never commit again. Only tried when a probe write shows room on the
    /// disk; the reopen repairs the file if its last commit was cut short.
    fn reopen(&self) -> Result<(), KeyStoreError> {
        probe_room(&self.path)?;
        let old = self
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Dropping the last handle closes the file and releases its lock;
        // a reader inside a call still holds one for a moment, and then the
        // open below fails with "already open" and is tried again later.
        drop(old);
        let db = Database::builder()
            .set_cache_size(self.cache_bytes)
            .create(&self.path)
            .map_err(db_err)?;
        *self.db.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
        tracing::info!(path = %self.path.display(), "key store reopened after a failed commit");
        Ok(())
    }

    fn pending_len(&self) -> usize {
        let p = self.lock_pending();
        p.queue.len() + p.in_flight
    }

    fn journal_lsn(&self) -> Option<u64> {
        self.journal_lsn.get().map(|f| f())
    }

    /// The low-water mark a commit of the batch taken last may store: see
    /// the module docs. The batch's own lsns are already out of
    /// `queued_lsns`, as it commits in the same transaction.
    fn next_low_water(&self) -> u64 {
        let current = self.low_water_lsn.load(Ordering::Acquire);
        // Read before the lock: a final record with an lsn up to this one
        // was announced before the read, so it is seen under the lock
        // unless it is already settled.
        let Some(mut low) = self.journal_lsn() else {
            return current;
        };
        let p = self.lock_pending();
        if let Some((_, floor)) = p.announced.first_key_value() {
            low = low.min(floor - 1);
        }
        if let Some((lsn, _)) = p.unput.first_key_value() {
            low = low.min(lsn - 1);
        }
        if let Some((lsn, _)) = p.queued_lsns.first_key_value() {
            low = low.min(lsn - 1);
        }
        if let Some(held) = p.held_below {
            low = low.min(held.saturating_sub(1));
        }
        // Only ever lower bounds were taken above, all at or past the
        // current mark (each was above the journal lsn the mark came from).
        current.max(low)
    }

    fn read(&self, entry: &[u8]) -> Result<Option<(StoredKey, u64)>, KeyStoreError> {
        let tx = self.db()?.begin_read().map_err(db_err)?;
        let keys = tx.open_table(KEYS).map_err(db_err)?;
        read_in(&keys, entry)
    }

    /// Commit one batch in one write transaction; returns the new high-
    /// and low-water lsns.
    fn commit(&self, batch: &[Queued]) -> Result<(u64, u64), KeyStoreError> {
        let low_water = self.next_low_water();
        let mut tx = self.db()?.begin_write().map_err(db_err)?;
        tx.set_durability(self.durability)
            .map_err(|e| KeyStoreError::Io(e.to_string()))?;
        let mut high_water = self.high_water_lsn.load(Ordering::Acquire);
        {
            let mut keys = tx.open_table(KEYS).map_err(db_err)?;
            let mut meta = tx.open_table(META).map_err(db_err)?;
            for (i, q) in batch.iter().enumerate() {
                if i % YIELD_EVERY_INSERTS == YIELD_EVERY_INSERTS - 1 {
                    // A commit of a few thousand keys takes milliseconds of
                    // CPU; on a core shared with the request path it steps
                    // aside now and then (it runs at background priority,
                    // see `threads`), so no request waits for all of it.
                    std::thread::yield_now();
                }
                // A key stored again keeps its older expiry entry too;
                // expiry deletes a key only for the entry of its current
                // completion time.
                keys.insert(&*q.key, &*q.value).map_err(db_err)?;
                high_water = high_water.max(q.lsn);
            }
            let next_seq = self.write_expiry_batches(&tx, batch)?;
            meta.insert(META_EXPIRY_SEQ, next_seq).map_err(db_err)?;
            meta.insert(META_HIGH_WATER_LSN, high_water)
                .map_err(db_err)?;
            meta.insert(META_LOW_WATER_LSN, low_water).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok((high_water, low_water))
    }

    /// Index `batch` for expiry: its entries oldest first, in expiry
    /// batches of at most [`format::MAX_EXPIRY_BATCH_ENTRIES`], each under
    /// its oldest completion time and a new sequence number. Returns the
    /// next sequence number, to commit with them.
    fn write_expiry_batches(
        &self,
        tx: &redb::WriteTransaction,
        batch: &[Queued],
    ) -> Result<u64, KeyStoreError> {
        let mut seq = self.expiry_seq.load(Ordering::Acquire);
        if batch.is_empty() {
            return Ok(seq);
        }
        let mut order: Vec<(u64, u32)> = batch
            .iter()
            .enumerate()
            .map(|(i, q)| (q.completed_unix_ms, u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        // Puts arrive nearly in completion order: the stable sort's run
        // detection makes this close to one pass.
        order.sort_by_key(|&(completed, _)| completed);
        let mut expiry = tx.open_table(EXPIRY).map_err(db_err)?;
        let mut value = Vec::new();
        for chunk in order.chunks(format::MAX_EXPIRY_BATCH_ENTRIES) {
            format::start_expiry_batch(&mut value);
            for &(completed, i) in chunk {
                let key = &batch[i as usize].key;
                format::push_expiry_entry(completed, key, &mut value);
            }
            let key = format::expiry_batch_key(chunk[0].0, seq);
            expiry.insert(&key[..], value.as_slice()).map_err(db_err)?;
            seq += 1;
        }
        // Only this (the writer's) thread moves it; a failed commit just
        // leaves a gap in the numbers.
        self.expiry_seq.store(seq, Ordering::Release);
        Ok(seq)
    }

    fn last_error(&self) -> KeyStoreError {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| KeyStoreError::Io("commit failed".into()))
    }
}

/// One lookup for a reader thread.
struct ReadRequest {
    entry: Vec<u8>,
    reply: oneshot::Sender<Result<Option<(StoredKey, u64)>, KeyStoreError>>,
}

/// A reader thread: wait for a lookup, take whatever else is queued (up to
/// [`MAX_READ_BATCH`]), answer them all from one read transaction. Under
/// load one wake-up and one transaction serve many lookups. Exits when the
/// store drops its sender.
fn run_reader(shared: &Shared, requests: &crossbeam::channel::Receiver<ReadRequest>) {
    let mut batch = Vec::with_capacity(MAX_READ_BATCH);
    while let Ok(first) = requests.recv() {
        batch.push(first);
        batch.extend(requests.try_iter().take(MAX_READ_BATCH - 1));
        let table = shared
            .db()
            .and_then(|db| db.begin_read().map_err(db_err))
            .and_then(|tx| tx.open_table(KEYS).map_err(db_err));
        for request in batch.drain(..) {
            let answer = match &table {
                Ok(keys) => read_in(keys, &request.entry),
                Err(e) => Err(e.clone()),
            };
            // The caller may have stopped waiting (cancelled lookup).
            let _ = request.reply.send(answer);
        }
    }
}

/// Adds every key in the file to the filter, a chunk per read transaction
/// (a long one would keep the writer from reusing pages), then lets it
/// answer "absent". Keys put meanwhile are added by `put`. A failed read
/// (the file being reopened after a failed commit) is retried with backoff;
/// after [`FILTER_SCAN_ATTEMPTS`] failures in a row the filter stays
/// incomplete and every lookup reads the store, as without a filter.
fn run_filter_scan(shared: &Shared) {
    let started = Instant::now();
    match scan_into_filter(shared) {
        Ok(Some(keys)) => {
            shared.filter.mark_complete();
            metrics::gauge!(m::KEYSTORE_FILTER_BYTES).set(shared.filter.bytes() as f64);
            tracing::info!(
                keys,
                bytes = shared.filter.bytes(),
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "key store filter built"
            );
        }
        Ok(None) => {} // shut down meanwhile
        Err(e) => {
            tracing::warn!(error = %e, "key store filter not built: every idempotency lookup reads the store");
        }
    }
}

/// The scan of [`run_filter_scan`]: the keys added, `None` if the store
/// shut down meanwhile, or the error that ended the retries.
fn scan_into_filter(shared: &Shared) -> Result<Option<u64>, KeyStoreError> {
    let mut after: Option<Vec<u8>> = None;
    let mut keys = 0u64;
    let mut failures = 0;
    let mut backoff = RETRY_BACKOFF_FIRST;
    loop {
        if shared.lock_pending().shutdown {
            return Ok(None);
        }
        match scan_chunk(shared, after.as_deref(), &mut keys) {
            Ok(Some(last)) => {
                after = Some(last);
                failures = 0;
            }
            Ok(None) => return Ok(Some(keys)),
            Err(e) if failures + 1 < FILTER_SCAN_ATTEMPTS => {
                failures += 1;
                tracing::debug!(error = %e, failures, "key store filter scan failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Adds up to [`FILTER_SCAN_CHUNK`] entries after `after` to the filter;
/// returns the last one's key, or `None` once the table is done.
fn scan_chunk(
    shared: &Shared,
    after: Option<&[u8]>,
    keys: &mut u64,
) -> Result<Option<Vec<u8>>, KeyStoreError> {
    use std::ops::Bound;
    let tx = shared.db()?.begin_read().map_err(db_err)?;
    let table = tx.open_table(KEYS).map_err(db_err)?;
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut seen = 0;
    for item in table
        .range::<&[u8]>((start, Bound::Unbounded))
        .map_err(db_err)?
    {
        let (entry, value) = item.map_err(db_err)?;
        // An entry whose value cannot be read is filed as completed now:
        // its lookup reads it (and fails, as it would without a filter).
        let completed = format::completed_unix_ms_of(value.value())
            .unwrap_or_else(|_| crate::safety::unix_ms());
        shared.filter.insert(entry.value(), completed);
        *keys += 1;
        seen += 1;
        if seen == FILTER_SCAN_CHUNK {
            return Ok(Some(entry.value().to_vec()));
        }
    }
    Ok(None)
}

/// Entries in the store's file.
fn stored_len(db: &Database) -> Result<u64, KeyStoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let table = tx.open_table(KEYS).map_err(db_err)?;
    table.len().map_err(db_err)
}

fn read_in(
    keys: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    entry: &[u8],
) -> Result<Option<(StoredKey, u64)>, KeyStoreError> {
    let Some(v) = keys.get(entry).map_err(db_err)? else {
        return Ok(None);
    };
    let v = format::decode_value(v.value())?;
    Ok(Some((v.stored, v.completed_unix_ms)))
}

/// Create the tables if missing, check the format, and read the high- and
/// low-water lsns.
/// The store format recorded in `db`, if it has one yet.
fn stored_format(db: &Database) -> Result<Option<u64>, KeyStoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let meta = match tx.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_err(e)),
    };
    let format = meta.get(META_FORMAT).map_err(db_err)?.map(|v| v.value());
    Ok(format)
}

/// What [`init_tables`] read.
struct Opened {
    high_water: u64,
    low_water: u64,
    expiry_seq: u64,
    legacy_index: bool,
}

fn init_tables(db: &Database) -> Result<Opened, KeyStoreError> {
    let tx = db.begin_write().map_err(db_err)?;
    let legacy_index = tx
        .list_tables()
        .map_err(db_err)?
        .any(|t| t.name() == BY_TIME.name());
    let opened;
    {
        tx.open_table(KEYS).map_err(db_err)?;
        tx.open_table(EXPIRY).map_err(db_err)?;
        let mut meta = tx.open_table(META).map_err(db_err)?;
        let format = meta.get(META_FORMAT).map_err(db_err)?.map(|v| v.value());
        let upgrade = match format {
            Some(STORE_FORMAT) => false,
            None => true,
            Some(f) if (OLDEST_UPGRADABLE_FORMAT..STORE_FORMAT).contains(&f) => {
                tracing::info!(
                    from = f,
                    to = STORE_FORMAT,
                    "key store upgraded in place; its per-key expiry index is drained by expiry"
                );
                true
            }
            Some(_) => return Err(KeyStoreError::Corrupt("unsupported store format")),
        };
        if upgrade {
            meta.insert(META_FORMAT, STORE_FORMAT).map_err(db_err)?;
        }
        let read = |name: &str| -> Result<u64, KeyStoreError> {
            Ok(meta.get(name).map_err(db_err)?.map_or(0, |v| v.value()))
        };
        opened = Opened {
            high_water: read(META_HIGH_WATER_LSN)?,
            low_water: read(META_LOW_WATER_LSN)?,
            expiry_seq: read(META_EXPIRY_SEQ)?,
            legacy_index,
        };
    }
    tx.commit().map_err(db_err)?;
    Ok(opened)
}

/// Marks the writer gone however it exits (even by a panic), so puts answer
/// `Closed` and `flush` stops waiting.
struct WriterExit<'a>(&'a Shared);

impl Drop for WriterExit<'_> {
    fn drop(&mut self) {
        let mut p = self.0.lock_pending();
        p.writer_gone = true;
        p.queue.clear();
        p.queued_lsns.clear();
        p.overlay.clear();
        p.in_flight = 0;
        drop(p);
        self.0.progress.send_modify(|p| p.closed = true);
    }
}

/// The writer thread: take up to `max_batch` puts, commit them in one
/// transaction, retire them from the overlay, repeat. Exits on shutdown once
/// the queue is empty.
fn run_writer(shared: &Shared) {
    let _exit = WriterExit(shared);
    let mut batch: Vec<Queued> = Vec::with_capacity(shared.max_batch.min(DEFAULT_MAX_BATCH));
    let mut last_commit = Instant::now();
    loop {
        {
            let mut p = shared.lock_pending();
            loop {
                if p.shutdown {
                    break;
                }
                if p.queue.is_empty() || p.paused {
                    p = shared.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                let due = last_commit + shared.commit_interval;
                let now = Instant::now();
                let flushing = p.queue.front().is_some_and(|q| q.seq <= p.flush_to);
                if now >= due || flushing || p.queue.len() >= shared.full_batch {
                    break;
                }
                p = shared
                    .wake
                    .wait_timeout(p, due - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if p.queue.is_empty() {
                return; // shut down with nothing left to commit
            }
            let n = p.queue.len().min(shared.max_batch);
            batch.extend(p.queue.drain(..n));
            p.in_flight = n;
            for q in &batch {
                take_one(&mut p.queued_lsns, q.lsn);
            }
        }

        let committed = commit_with_retry(shared, &batch);
        last_commit = Instant::now();

        let last_seq = batch.last().map_or(0, |q| q.seq);
        let mut p = shared.lock_pending();
        for q in batch.drain(..) {
            if p.overlay.get(&q.key).is_some_and(|o| o.seq == q.seq) {
                p.overlay.remove(&q.key);
            }
        }
        p.in_flight = 0;
        drop(p);
        match committed {
            Some((high_water, low_water)) => {
                shared.high_water_lsn.store(high_water, Ordering::Release);
                shared.low_water_lsn.store(low_water, Ordering::Release);
                metrics::gauge!(m::KEYSTORE_PENDING).set(shared.pending_len() as f64);
                metrics::gauge!(m::KEYSTORE_FILTER_BYTES).set(shared.filter.bytes() as f64);
                if let Some(journal) = shared.journal_lsn() {
                    metrics::gauge!(m::KEYSTORE_CATCH_UP_LSNS)
                        .set(journal.saturating_sub(low_water) as f64);
                }
                shared
                    .progress
                    .send_modify(|p| p.committed_seq = p.committed_seq.max(last_seq));
            }
            None => return, // shutting down and the disk fails: the journal has the rest
        }
    }
}

/// Commit `batch`, retrying with backoff until it works; `None` if the store
/// is shut down while commits fail.
/// What one [`KeyStore::expire`] call may still look at, and has deleted.
struct ExpiryBudget {
    left: usize,
    deleted: usize,
}

type KeysTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// Delete `entry` if its stored value is still the one completed at
/// `completed` (a key stored again later keeps its newer value). A value
/// that cannot be read is deleted too: the journal has it.
fn expire_entry(
    keys: &mut KeysTable<'_>,
    entry: &[u8],
    completed: u64,
    budget: &mut ExpiryBudget,
) -> Result<(), KeyStoreError> {
    budget.left -= 1;
    let current = keys
        .get(entry)
        .map_err(db_err)?
        .map(|v| format::completed_unix_ms_of(v.value()).ok());
    if let Some(current) = current {
        if current.is_none_or(|c| c == completed) {
            keys.remove(entry).map_err(db_err)?;
            budget.deleted += 1;
        }
    }
    Ok(())
}

/// Expire through format 2's per-key index; true once it is empty.
fn expire_legacy(
    tx: &redb::WriteTransaction,
    keys: &mut KeysTable<'_>,
    before_unix_ms: u64,
    budget: &mut ExpiryBudget,
) -> Result<bool, KeyStoreError> {
    let mut by_time = tx.open_table(BY_TIME).map_err(db_err)?;
    let end = before_unix_ms.to_be_bytes();
    let mut victims = Vec::new();
    for item in by_time.range::<&[u8]>(..&end[..]).map_err(db_err)? {
        let (k, _) = item.map_err(db_err)?;
        victims.push(k.value().to_vec());
        if victims.len() >= budget.left {
            break;
        }
    }
    for time_key in &victims {
        by_time.remove(time_key.as_slice()).map_err(db_err)?;
        match format::split_time_key(time_key) {
            Ok((completed, entry)) => expire_entry(keys, entry, completed, budget)?,
            // A damaged index record: dropping it is the repair.
            Err(_) => budget.left -= 1,
        }
    }
    by_time.is_empty().map_err(db_err)
}

/// Expire through the expiry batches, oldest first, while the budget
/// lasts. A batch whose entries all went is removed; one the cut-off or
/// the budget falls inside is rewritten with what is left, under its
/// oldest remaining time.
fn expire_batches(
    tx: &redb::WriteTransaction,
    keys: &mut KeysTable<'_>,
    before_unix_ms: u64,
    budget: &mut ExpiryBudget,
) -> Result<(), KeyStoreError> {
    let mut batches = tx.open_table(EXPIRY).map_err(db_err)?;
    let end = format::expiry_batch_key(before_unix_ms, 0);
    let mut rest = Vec::new();
    while budget.left > 0 {
        let (key, value) = match batches.first().map_err(db_err)? {
            Some((k, v)) if k.value() < &end[..] => (k.value().to_vec(), v.value().to_vec()),
            _ => break,
        };
        batches.remove(key.as_slice()).map_err(db_err)?;
        let seq = match format::split_expiry_batch_key(&key) {
            Ok((_, seq)) => seq,
            Err(_) => {
                tracing::warn!("key store: damaged expiry batch key dropped");
                continue;
            }
        };
        let entries = match format::expiry_entries(&value) {
            Ok(entries) => entries,
            Err(_) => {
                tracing::warn!("key store: expiry batch of an unknown format dropped");
                continue;
            }
        };
        let mut kept = None;
        for entry in entries {
            let Ok(entry) = entry else {
                // The keys after the damage expire only with the journal's
                // replay; nothing better can be done with the record.
                tracing::warn!("key store: damaged expiry batch dropped at the damage");
                break;
            };
            if entry.completed_unix_ms >= before_unix_ms || budget.left == 0 {
                kept = Some(entry);
                break;
            }
            expire_entry(keys, entry.entry_key, entry.completed_unix_ms, budget)?;
        }
        if let Some(first_kept) = kept {
            format::start_expiry_batch(&mut rest);
            rest.extend_from_slice(&value[first_kept.start..]);
            let key = format::expiry_batch_key(first_kept.completed_unix_ms, seq);
            batches.insert(&key[..], rest.as_slice()).map_err(db_err)?;
        }
    }
    Ok(())
}

fn commit_with_retry(shared: &Shared, batch: &[Queued]) -> Option<(u64, u64)> {
    let mut backoff = RETRY_BACKOFF_FIRST;
    loop {
        match shared.commit(batch) {
            Ok(marks) => return Some(marks),
            Err(e) => {
                let failures = shared.commit_failures.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::counter!(m::KEYSTORE_COMMIT_FAILURES).increment(1);
                tracing::warn!(error = %e, failures, "keystore batch commit failed; retrying");
                *shared
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e);
                shared.progress.send_modify(|p| p.failures += 1);
                let p = shared.lock_pending();
                if p.shutdown {
                    return None;
                }
                let (p, _) = shared
                    .wake
                    .wait_timeout(p, backoff)
                    .unwrap_or_else(PoisonError::into_inner);
                if p.shutdown {
                    return None;
                }
                metrics::gauge!(m::KEYSTORE_PENDING).set((p.queue.len() + p.in_flight) as f64);
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                drop(p);
                if let Err(e) = shared.reopen() {
                    tracing::debug!(error = %e, "key store not reopened yet");
                }
            }
        }
    }
}

/// Write, sync and remove [`REOPEN_PROBE_BYTES`] next to `store`.
fn probe_room(store: &Path) -> Result<(), KeyStoreError> {
    use std::io::Write;
    let mut probe = store.as_os_str().to_owned();
    probe.push(".probe");
    let probe = PathBuf::from(probe);
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&vec![0u8; REOPEN_PROBE_BYTES])?;
        f.sync_data()
    });
    // Best effort: a leftover probe is overwritten by the next one.
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| KeyStoreError::Io(e.to_string()))
}

/// Map any redb error: damage reported by redb is `Corrupt`, the rest `Io`.
fn db_err(e: impl Into<redb::Error>) -> KeyStoreError {
    match e.into() {
        redb::Error::Corrupted(_) => KeyStoreError::Corrupt("redb reports a damaged file"),
        other => KeyStoreError::Io(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fps_codecs::model::{IdempotencyKey, ResponseCode};
    use fps_routing::idempotency::{Fingerprint, Outcome};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!(
                "fps-keystore-unit-{tag}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn record(i: u64) -> KeyRecord {
        KeyRecord {
            scope: ClientScope::new("CN=unit").unwrap(),
            key: RequestKey::Explicit(IdempotencyKey::parse(format!("k{i}").as_bytes()).unwrap()),
            stored: StoredKey {
                fingerprint: Fingerprint(i),
                outcome: Outcome::new(ResponseCode::APPROVED),
            },
            completed_unix_ms: 1_000 + i,
            lsn: i,
        }
    }

    /// The writer's batched commits run at background priority: they must
    /// not hold a busy core away from the request path for a whole slice.
    #[tokio::test]
    async fn the_writer_thread_runs_at_background_priority() {
        use crate::threads::tests as t;
        let dir = TempDir::new("nice");
        let store = KeyStore::open(KeyStoreConfig::new(dir.0.join("k.redb"))).unwrap();
        // Its first act; a put and a flush mean it has started.
        store.put(record(1)).unwrap();
        store.flush().await.unwrap();
        // Other tests' stores may be starting in parallel.
        t::wait_until_all_named_have_nice("keystore-writer", t::lowered_from_mine());
    }

    /// Deterministic version of "a lookup sees a put the writer has not
    /// committed": the writer is held, so the put is certainly pending.
    #[tokio::test]
    async fn lookup_sees_put_held_in_queue() {
        let dir = TempDir::new("held");
        let store = KeyStore::open(KeyStoreConfig::new(dir.0.join("k.redb"))).unwrap();
        store.pause_writer(true);
        let r = record(1);
        store.put(r.clone()).unwrap();
        assert_eq!(store.pending(), 1);
        assert_eq!(store.len().unwrap(), 0);
        let got = store.lookup(&r.scope, &r.key).await.unwrap();
        assert_eq!(got, Some((r.stored.clone(), r.completed_unix_ms)));
        assert_eq!(
            store.lookup_blocking(&r.scope, &r.key).unwrap(),
            Some((r.stored.clone(), r.completed_unix_ms))
        );
        store.pause_writer(false);
        store.flush().await.unwrap();
        assert_eq!(store.pending(), 0);
        assert_eq!(store.len().unwrap(), 1);
        assert_eq!(store.high_water_lsn(), 1);
    }

    /// The scan adds the keys of the file at open (over several chunks),
    /// puts made meanwhile are kept too, and from then on a key the store
    /// never held is answered without a read: here, even while the file is
    /// taken away (as during a reopen), when every read fails.
    #[tokio::test]
    async fn once_the_filter_is_built_new_keys_need_no_read() {
        let dir = TempDir::new("filter");
        let n = FILTER_SCAN_CHUNK as u64 + 1_000;
        let mut cfg = KeyStoreConfig::new(dir.0.join("k.redb"));
        cfg.queue_capacity = 1 << 20;
        {
            let store = KeyStore::open(cfg.clone()).unwrap();
            for i in 0..n {
                store.put(record(i)).unwrap();
            }
            store.flush().await.unwrap();
        }
        let store = KeyStore::open(cfg).unwrap();
        store.put(record(n)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !store.filter_complete() {
            assert!(Instant::now() < deadline, "filter scan did not finish");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        store.flush().await.unwrap();
        for i in (0..=n).step_by(7).chain([n - 1, n]) {
            let r = record(i);
            let got = store.lookup(&r.scope, &r.key).await.unwrap();
            assert_eq!(got, Some((r.stored, r.completed_unix_ms)), "key {i}");
        }
        let file = store.shared.db.write().unwrap().take();
        let mut absent = 0;
        for i in n + 1..n + 1_001 {
            let r = record(i);
            match store.lookup(&r.scope, &r.key).await {
                Ok(None) => absent += 1,
                // A false positive reads, and reads fail now.
                Err(KeyStoreError::Io(_)) => {}
                other => panic!("key {i}: {other:?}"),
            }
        }
        assert!(
            absent >= 950,
            "{absent} of 1000 new keys answered without a read"
        );
        // A stored key is never ruled out: it is read (and that fails now).
        let r = record(3);
        assert!(matches!(
            store.lookup_blocking(&r.scope, &r.key),
            Err(KeyStoreError::Io(_))
        ));
        *store.shared.db.write().unwrap() = file;
    }

    /// The scan at open retries a read that fails while the file is away
    /// (being reopened after a failed commit) and then adds every key.
    #[tokio::test]
    async fn the_filter_scan_outlasts_a_reopen() {
        let dir = TempDir::new("filter-retry");
        let store = KeyStore::open(KeyStoreConfig::new(dir.0.join("k.redb"))).unwrap();
        for i in 0..10 {
            store.put(record(i)).unwrap();
        }
        store.flush().await.unwrap();
        let file = store.shared.db.write().unwrap().take();
        let shared = Arc::clone(&store.shared);
        let scan = std::thread::spawn(move || scan_into_filter(&shared));
        // Longer than the first retries' backoff (50 + 100 ms).
        std::thread::sleep(Duration::from_millis(200));
        assert!(!scan.is_finished(), "the scan gave up or did not wait");
        *store.shared.db.write().unwrap() = file;
        assert_eq!(scan.join().unwrap(), Ok(Some(10)));
    }

    #[tokio::test]
    async fn full_queue_refuses_without_blocking() {
        let dir = TempDir::new("full");
        let mut cfg = KeyStoreConfig::new(dir.0.join("k.redb"));
        cfg.queue_capacity = 4;
        let store = KeyStore::open(cfg).unwrap();
        store.pause_writer(true);
        for i in 0..4 {
            store.put(record(i)).unwrap();
        }
        assert_eq!(store.put(record(4)), Err(KeyStoreError::Full));
        assert_eq!(store.refused(), 1);
        store.pause_writer(false);
        store.flush().await.unwrap();
        store.put(record(4)).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.len().unwrap(), 5);
    }

    #[test]
    fn bad_config_is_refused() {
        let dir = TempDir::new("cfg");
        let mut cfg = KeyStoreConfig::new(dir.0.join("k.redb"));
        cfg.max_batch = 0;
        assert!(matches!(
            KeyStore::open(cfg),
            Err(KeyStoreError::InvalidConfig(_))
        ));
    }

    /// A store following a fake journal whose durable lsn the test sets.
    fn following(
        dir: &TempDir,
        cfg: impl FnOnce(&mut KeyStoreConfig),
    ) -> (KeyStore, Arc<AtomicU64>) {
        let mut c = KeyStoreConfig::new(dir.0.join("k.redb"));
        cfg(&mut c);
        let store = KeyStore::open(c).unwrap();
        let journal = Arc::new(AtomicU64::new(0));
        let j = journal.clone();
        assert!(store.follow_journal(move || j.load(Ordering::Acquire)));
        assert!(!store.follow_journal(|| 0), "set once");
        (store, journal)
    }

    /// Commit something unrelated (lsn 0) so the writer stores a new mark.
    async fn tick(store: &KeyStore) {
        let mut r = record(1_000_000);
        r.lsn = 0;
        store.put(r).unwrap();
        store.flush().await.unwrap();
    }

    /// Two finals appended in lsn order whose puts land in the other order
    /// (and the first one's never, as if the process died before it): the
    /// mark stays below the missing one, before and after a reopen.
    #[tokio::test]
    async fn low_water_waits_for_a_final_put_out_of_lsn_order() {
        let dir = TempDir::new("order");
        let (store, journal) = following(&dir, |_| {});
        journal.store(4, Ordering::Release);
        let a = store.announce_final();
        let b = store.announce_final();
        journal.store(6, Ordering::Release); // a at 5, b at 6
        b.durable_at(6);
        store.put(record(6)).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.high_water_lsn(), 6);
        assert_eq!(store.low_water_lsn(), 4, "a is announced, not yet durable");
        a.durable_at(5);
        tick(&store).await;
        assert_eq!(store.low_water_lsn(), 4, "a is durable, not yet put");
        drop(store); // the crash: a's put never came
        let store = KeyStore::open(KeyStoreConfig::new(dir.0.join("k.redb"))).unwrap();
        assert_eq!((store.low_water_lsn(), store.high_water_lsn()), (4, 6));
        drop(store);

        // The same, with the put coming late: then the mark catches up
        // with the journal, past the last final.
        let dir = TempDir::new("order-late");
        let (store, journal) = following(&dir, |_| {});
        let a = store.announce_final();
        let b = store.announce_final();
        a.durable_at(1);
        b.durable_at(2);
        store.put(record(2)).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.low_water_lsn(), 0);
        journal.store(9, Ordering::Release); // records 3..=9 are not finals
        store.put(record(1)).unwrap();
        store.flush().await.unwrap();
        assert_eq!(store.low_water_lsn(), 9);
    }

    #[tokio::test]
    async fn a_refused_put_holds_the_mark_until_the_store_is_reopened() {
        let dir = TempDir::new("refused");
        let (store, journal) = following(&dir, |c| c.queue_capacity = 2);
        journal.store(10, Ordering::Release);
        let t = store.announce_final();
        store.pause_writer(true);
        store.put(record(1)).unwrap();
        store.put(record(2)).unwrap();
        t.durable_at(11);
        assert_eq!(store.put(record(11)), Err(KeyStoreError::Full));
        assert_eq!(store.refused(), 1);
        store.pause_writer(false);
        store.flush().await.unwrap();
        journal.store(50, Ordering::Release);
        let later = store.announce_final();
        later.durable_at(51);
        store.put(record(51)).unwrap();
        store.flush().await.unwrap();
        journal.store(60, Ordering::Release);
        tick(&store).await;
        assert_eq!(store.high_water_lsn(), 51);
        assert_eq!(store.low_water_lsn(), 10, "held below the refused key");
        drop(store);
        let store = KeyStore::open(KeyStoreConfig::new(dir.0.join("k.redb"))).unwrap();
        assert_eq!(store.low_water_lsn(), 10);
    }

    #[tokio::test]
    async fn unresolved_tickets_hold_and_unwritten_ones_do_not() {
        let dir = TempDir::new("tickets");
        let (store, journal) = following(&dir, |_| {});
        journal.store(3, Ordering::Release);
        store.announce_final().not_written();
        tick(&store).await;
        assert_eq!(store.low_water_lsn(), 3);
        // Dropped unresolved: its lsn, if it has one, is above 3.
        drop(store.announce_final());
        journal.store(8, Ordering::Release);
        tick(&store).await;
        assert_eq!(store.low_water_lsn(), 3);
        // A key declared missing holds the mark too.
        let dir = TempDir::new("tickets-missing");
        let (store, journal) = following(&dir, |_| {});
        let t = store.announce_final();
        t.durable_at(2);
        store.hold_low_water_below(2);
        journal.store(5, Ordering::Release);
        tick(&store).await;
        assert_eq!(store.low_water_lsn(), 1);
    }

    /// Puts made before the store follows the journal (the start-up
    /// catch-up) hold the mark only while they are queued.
    #[tokio::test]
    async fn untracked_puts_hold_the_mark_while_queued() {
        let dir = TempDir::new("untracked");
        let store = KeyStore::open(KeyStoreConfig::new(dir.0.join("k.redb"))).unwrap();
        store.pause_writer(true);
        store.put(record(3)).unwrap();
        store.put(record(7)).unwrap();
        assert!(store.follow_journal(|| 9));
        assert_eq!(store.shared.next_low_water(), 2);
        store.pause_writer(false);
        store.flush().await.unwrap();
        tick(&store).await;
        assert_eq!(store.low_water_lsn(), 9);
        assert_eq!(store.len().unwrap(), 3);
    }

    /// A store written before the low-water mark existed reads it as 0:
    /// the catch-up replays everything.
    #[test]
    fn a_store_without_a_low_water_mark_reads_zero() {
        let dir = TempDir::new("old");
        let path = dir.0.join("k.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut meta = tx.open_table(META).unwrap();
                meta.insert(META_FORMAT, STORE_FORMAT).unwrap();
                meta.insert(META_HIGH_WATER_LSN, 40).unwrap();
            }
            tx.commit().unwrap();
        }
        let store = KeyStore::open(KeyStoreConfig::new(&path)).unwrap();
        assert_eq!((store.low_water_lsn(), store.high_water_lsn()), (0, 40));
    }

    /// The expiry batches in the file: (oldest completion time, sequence
    /// number) and the completion times of their entries.
    fn expiry_batches(store: &KeyStore) -> Vec<((u64, u64), Vec<u64>)> {
        let tx = store.shared.db().unwrap().begin_read().unwrap();
        let table = tx.open_table(EXPIRY).unwrap();
        table
            .iter()
            .unwrap()
            .map(|item| {
                let (k, v) = item.unwrap();
                let key = format::split_expiry_batch_key(k.value()).unwrap();
                let times = format::expiry_entries(v.value())
                    .unwrap()
                    .map(|e| e.unwrap().completed_unix_ms)
                    .collect();
                (key, times)
            })
            .collect()
    }

    fn record_at(i: u64, completed_unix_ms: u64) -> KeyRecord {
        KeyRecord {
            completed_unix_ms,
            ..record(i)
        }
    }

    /// A commit writes one expiry record per `MAX_EXPIRY_BATCH_ENTRIES`
    /// keys, entries oldest first whatever order the puts came in, keyed
    /// by the oldest; expiry then deletes exactly the keys completed before
    /// the cut-off and rewrites the batch it cut through.
    #[tokio::test]
    async fn a_commit_indexes_its_keys_in_few_sorted_expiry_batches() {
        let dir = TempDir::new("batches");
        let store = KeyStore::open(KeyStoreConfig::new(dir.0.join("k.redb"))).unwrap();
        let n = format::MAX_EXPIRY_BATCH_ENTRIES as u64 + 100;
        store.pause_writer(true);
        // Completion times 10_000 + 0..n, put in a scrambled order.
        for i in 0..n {
            let t = (i * 7_919) % n;
            store.put(record_at(i, 10_000 + t)).unwrap();
        }
        store.pause_writer(false);
        store.flush().await.unwrap();
        let batches = expiry_batches(&store);
        assert_eq!(batches.len(), 2, "one commit, two batches");
        let mut all = Vec::new();
        for ((oldest, _), times) in &batches {
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
            assert_eq!(*oldest, times[0]);
            all.extend_from_slice(times);
        }
        assert_eq!(batches[0].1.len(), format::MAX_EXPIRY_BATCH_ENTRIES);
        assert_ne!(batches[0].0 .1, batches[1].0 .1, "sequence numbers differ");
        all.sort_unstable();
        assert_eq!(all, (10_000..10_000 + n).collect::<Vec<_>>());

        // Cut through the second batch: 10_000 + 4_096 + 50.
        let cut = 10_000 + format::MAX_EXPIRY_BATCH_ENTRIES as u64 + 50;
        assert_eq!(
            store.expire(cut, usize::MAX).unwrap(),
            (cut - 10_000) as usize
        );
        assert_eq!(store.len().unwrap(), 10_000 + n - cut);
        let left = expiry_batches(&store);
        assert_eq!(left.len(), 1);
        assert_eq!(
            left[0].0 .0, cut,
            "rewritten under its oldest remaining time"
        );
        assert_eq!(left[0].1, (cut..10_000 + n).collect::<Vec<_>>());
        for i in 0..n {
            let t = 10_000 + (i * 7_919) % n;
            let r = record_at(i, t);
            let got = store.lookup_blocking(&r.scope, &r.key).unwrap();
            assert_eq!(got.is_some(), t >= cut, "key {i} completed at {t}");
        }
        assert_eq!(store.expire(u64::MAX, usize::MAX).unwrap(), 50);
        assert!(expiry_batches(&store).is_empty());
        assert_eq!(store.len().unwrap(), 0);
    }

    /// Expiry batches keep their sequence numbers unique across restarts:
    /// two commits with the same oldest time in two lives of the store are
    /// two batches, and both expire.
    #[tokio::test]
    async fn expiry_sequence_numbers_survive_a_restart() {
        let dir = TempDir::new("seq");
        let path = dir.0.join("k.redb");
        for i in 0..2 {
            let store = KeyStore::open(KeyStoreConfig::new(&path)).unwrap();
            store.put(record_at(i, 5_000)).unwrap();
            store.flush().await.unwrap();
        }
        let store = KeyStore::open(KeyStoreConfig::new(&path)).unwrap();
        let batches = expiry_batches(&store);
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(store.expire(5_001, 10).unwrap(), 2);
        assert_eq!(store.len().unwrap(), 0);
    }

    /// A damaged expiry batch is dropped without a panic; the batches after
    /// it still expire.
    #[tokio::test]
    async fn a_damaged_expiry_batch_is_dropped() {
        let dir = TempDir::new("damaged");
        let store = KeyStore::open(KeyStoreConfig::new(dir.0.join("k.redb"))).unwrap();
        store.put(record_at(1, 2_000)).unwrap();
        store.flush().await.unwrap();
        {
            let tx = store.shared.db().unwrap().begin_write().unwrap();
            {
                let mut t = tx.open_table(EXPIRY).unwrap();
                let key = format::expiry_batch_key(1_000, 999);
                t.insert(&key[..], &[format::EXPIRY_BATCH_FORMAT, 0, 0, 1][..])
                    .unwrap();
                // A key too short to be a batch's, sorting first.
                t.insert(&[0u8, 0, 0][..], &[format::EXPIRY_BATCH_FORMAT][..])
                    .unwrap();
                // A batch of a format this build does not know.
                let key = format::expiry_batch_key(1_500, 998);
                t.insert(&key[..], &[9u8][..]).unwrap();
            }
            tx.commit().unwrap();
        }
        assert_eq!(store.expire(3_000, 100).unwrap(), 1);
        assert!(expiry_batches(&store).is_empty());
    }

    /// A format-2 store (per-key `by_time` index) is upgraded in place: its
    /// keys stay, expiry drains the old index and then drops it, and new
    /// puts expire through batches.
    #[tokio::test]
    async fn a_format_2_store_is_upgraded_in_place() {
        let dir = TempDir::new("upgrade");
        let path = dir.0.join("k.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut meta = tx.open_table(META).unwrap();
                meta.insert(META_FORMAT, 2).unwrap();
                meta.insert(META_HIGH_WATER_LSN, 20).unwrap();
                meta.insert(META_LOW_WATER_LSN, 20).unwrap();
                let mut keys = tx.open_table(KEYS).unwrap();
                let mut by_time = tx.open_table(BY_TIME).unwrap();
                for i in 0..20 {
                    let r = record(i);
                    let (mut k, mut v, mut t) = (Vec::new(), Vec::new(), Vec::new());
                    format::encode_key(&r.scope, &r.key, &mut k);
                    format::encode_value(&r.stored, r.completed_unix_ms, r.lsn, &mut v);
                    format::encode_time_key(r.completed_unix_ms, &k, &mut t);
                    keys.insert(k.as_slice(), v.as_slice()).unwrap();
                    by_time.insert(t.as_slice(), ()).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let store = KeyStore::open(KeyStoreConfig::new(&path)).unwrap();
        assert_eq!(stored_format(&store.shared.db().unwrap()).unwrap(), Some(3));
        assert_eq!((store.low_water_lsn(), store.high_water_lsn()), (20, 20));
        assert_eq!(store.len().unwrap(), 20);
        let old = record(3);
        assert!(store.lookup(&old.scope, &old.key).await.unwrap().is_some());
        store.put(record_at(100, 1_005)).unwrap();
        store.flush().await.unwrap();

        // Keys 0..10 completed at 1_000..1_010, and the new one at 1_005.
        assert_eq!(store.expire(1_010, 4).unwrap(), 4);
        assert_eq!(store.expire(1_010, 100).unwrap(), 7);
        assert!(store.shared.legacy_index.load(Ordering::Acquire));
        assert_eq!(store.len().unwrap(), 10);
        assert_eq!(store.expire(u64::MAX, 100).unwrap(), 10);
        assert!(!store.shared.legacy_index.load(Ordering::Acquire));
        drop(store);
        let store = KeyStore::open(KeyStoreConfig::new(&path)).unwrap();
        assert!(
            !store.shared.legacy_index.load(Ordering::Acquire),
            "table dropped"
        );
        assert_eq!(store.len().unwrap(), 0);
    }

    /// `expire_due` keeps calling until nothing below the cut-off is left,
    /// even when a call's entries were mostly not the keys' own (keys
    /// stored again later), so deleted less than it looked at.
    #[tokio::test]
    async fn expire_due_goes_on_until_nothing_is_left() {
        let dir = TempDir::new("due");
        let store = KeyStore::open(KeyStoreConfig::new(dir.0.join("k.redb"))).unwrap();
        for i in 0..300 {
            store.put(record_at(i, 1_000 + i)).unwrap();
        }
        store.flush().await.unwrap();
        // Keys 0..100 stored again, completed later: their old entries are
        // looked at and skipped.
        for i in 0..100 {
            store.put(record_at(i, 5_000 + i)).unwrap();
        }
        store.flush().await.unwrap();
        assert_eq!(store.expire_due(1_250, 0).unwrap(), 0);
        // 250 entries below 1_250, 100 of them stale: 150 deleted, in
        // calls of 7; the metrics say so.
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let deleted = metrics::with_local_recorder(&recorder, || store.expire_due(1_250, 7));
        assert_eq!(deleted.unwrap(), 150);
        assert_eq!(store.len().unwrap(), 150);
        let text = handle.render();
        assert!(
            text.contains("fps_switch_keystore_expired_total 150"),
            "{text}"
        );
        assert!(text.contains("fps_switch_keystore_keys 150"), "{text}");
        assert_eq!(store.expire_due(1_250, 7).unwrap(), 0);
        assert_eq!(store.expire_due(u64::MAX, 7).unwrap(), 150);
        assert_eq!(store.len().unwrap(), 0);
        assert!(expiry_batches(&store).is_empty());
    }

    /// Dropping the store commits what is still queued.
    #[test]
    fn drop_commits_queue() {
        let dir = TempDir::new("drop");
        let path = dir.0.join("k.redb");
        {
            let store = KeyStore::open(KeyStoreConfig::new(&path)).unwrap();
            for i in 0..100 {
                store.put(record(i)).unwrap();
            }
        }
        let store = KeyStore::open(KeyStoreConfig::new(&path)).unwrap();
        assert_eq!(store.len().unwrap(), 100);
        assert_eq!(store.high_water_lsn(), 99);
    }
}
