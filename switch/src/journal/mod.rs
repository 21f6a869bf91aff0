//! The transaction journal: an embedded, append-only, segmented log with
//! group commit. Payloads are opaque bytes; the record encoding and crash
//! recovery of transactions live above this module.
//!
//! Two implementations of one small [`Journal`] trait: [`FileJournal`]
//! (the real one) and [`MemoryJournal`] (tests and simulations), so that a
//! shared database backend can come later without touching the pipeline.
//!
//! # On-disk format (version 1)
//!
//! A journal is a directory of segment files named
//! `journal-{first_lsn:020}.log`, oldest first by name. Every integer is
//! little-endian.
//!
//! Segment header, [`SEGMENT_HEADER_BYTES`] (32) bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `FPSJRNL\0` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 4 | CRC-32 (IEEE) of bytes 0..12 and 16..32 |
//! | 16 | 8 | first lsn of this segment (equals the file name's number) |
//! | 24 | 8 | byte length of the previous segment's valid part, 0 if none |
//!
//! Then records back to back, each [`RECORD_HEADER_BYTES`] (24) bytes of
//! header and the payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | payload length (at most [`MAX_RECORD_BYTES`]) |
//! | 4 | 4 | CRC-32 (IEEE, `crc32fast`) of bytes 8.. to the payload's end |
//! | 8 | 8 | lsn: 1, 2, 3, ... with no gap across segments |
//! | 16 | 8 | unix time in milliseconds when the writer wrote it |
//! | 24 | len | payload |
//!
//! The header's "previous segment length" exists for one failure: when
//! the writer cannot truncate a failed write off the active segment, it
//! seals that segment and starts the next one, and the next one's header
//! says where the previous segment's valid records end. Recovery reads a
//! sealed segment only up to that length and cuts the rest off.
//!
//! # Recovery rules ([`FileJournal::open`])
//!
//! - In the last segment, a partial record header, a partial payload, a
//!   checksum mismatch of the final record, or a bad record followed only
//!   by zero bytes is a torn tail from a crash: it is truncated and
//!   counted in [`RecoveryReport::torn_tail_bytes`]. A last segment
//!   shorter than its header (or exactly a header that does not verify)
//!   holds no record and is removed.
//! - Anything else is [`JournalError::Corrupt`]: a bad record followed by
//!   more data, any bad record in a sealed segment, a valid record with
//!   the wrong lsn, a gap between segments, a bad header. (A damaged
//!   length field that makes the final record look shorter is therefore
//!   Corrupt, not torn: the rest of the record is "more data".)
//!
//! # Group commit
//!
//! With `fsync = "never"` [`Journal::append`] writes the record itself
//! (one positional write under the writer's lock) and returns a
//! [`Durable`] that is already resolved: with no sync to share, handing
//! each record to a thread and waking the appender back cost more than the
//! write. The writer thread then only rotates full segments (syncing the
//! full one outside the lock first, so appends stop only for the sync of
//! what came since) and probes the disk while writes fail.
//!
//! Otherwise [`Journal::append`] copies the record into a bounded queue and returns
//! a [`Durable`] at once. One writer thread per journal drains up to
//! `max_batch_records` (and [`MAX_BATCH_BYTES`]), assigns lsns, writes the
//! batch with one positional write, syncs per [`FsyncMode`], and completes
//! the batch's [`Durable`]s in lsn order, waking their tasks with one wake
//! of a dispatcher task on the runtime (a wake per record from outside the
//! runtime is a system call each: in a closed-loop run with 256 requests
//! in flight this took the switch with a journal from 40-43 to 30 us of
//! CPU per transaction, and 23,000-24,500 to 30,000 TPS). Under load (the
//! previous batch held 16 records or more) with `fsync = "batch"`, a batch
//! of fewer than 64 records waits up to 200 us for more first: fewer
//! fsyncs for the same records; a quiet journal never waits. A caller that
//! must learn how a record's append ended even if its owner never awaits
//! it attaches a [`DurableWatch`] ([`Durable::watched`]);
//! [`FileJournal::durable_lsn`] says how far the journal is durable.
//!
//! # Disk trouble
//!
//! A failed write or sync completes the affected records with
//! [`JournalError::Unavailable`] (their lsns are reused: no gap on disk),
//! marks the journal unhealthy, and cuts the segment back to its last
//! good offset. While unhealthy, appends fail at once; every
//! [`PROBE_INTERVAL`] the writer repairs what is left and writes a probe
//! file, and becomes healthy again when that works.
//!
//! What a failed [`Durable`] means: the record is not acknowledged and its
//! lsn will be given to a later record. If the process dies before the
//! cut back to the good offset reached the disk (the cut itself is
//! synced), a record whose write failed only at fsync could still be on
//! disk and replay after a restart. Callers therefore treat a failed
//! append as "outcome unknown to the journal" (answer 96, reverse or
//! inquire), never as proof that nothing was written. Every acknowledged
//! record is on disk.

mod completion;
mod file;
mod format;
mod memory;
mod scan;
mod writer;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use completion::Completion;

pub use file::FileJournal;
pub use memory::MemoryJournal;

/// Largest payload one record may carry.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Bytes of a segment file's header.
pub const SEGMENT_HEADER_BYTES: usize = format::SEGMENT_HEADER_BYTES;
/// Bytes of framing in front of every payload.
pub const RECORD_HEADER_BYTES: usize = format::RECORD_HEADER_BYTES;
/// A batch stops growing once its encoded size passes this, whatever
/// `max_batch_records` says, so the writer's buffer stays bounded.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Upper bound on `max_batch_records`.
pub const MAX_BATCH_RECORDS_LIMIT: usize = 65_536;
/// Upper bound on `queue_capacity`.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;
/// Smallest accepted `segment_bytes`.
pub const MIN_SEGMENT_BYTES: u64 = 1024;
/// How often an unhealthy journal tries to repair itself and write a probe.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Most segment files [`FileJournal::open`] accepts in one directory.
pub const MAX_SEGMENT_FILES: usize = 100_000;

const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const DEFAULT_MAX_BATCH_RECORDS: usize = 4096;
const DEFAULT_QUEUE_CAPACITY: usize = 65_536;

// A batch can always take at least one largest record.
const _: () = assert!(MAX_BATCH_BYTES >= MAX_RECORD_BYTES + RECORD_HEADER_BYTES);
const _: () = assert!(MIN_SEGMENT_BYTES > SEGMENT_HEADER_BYTES as u64);
const _: () = assert!(DEFAULT_MAX_BATCH_RECORDS <= MAX_BATCH_RECORDS_LIMIT);
const _: () = assert!(DEFAULT_QUEUE_CAPACITY <= MAX_QUEUE_CAPACITY);

/// Records written by the journal writer (durable per the fsync mode).
pub const METRIC_APPENDS: &str = "fps_switch_journal_appends_total";
/// Records per group commit.
pub const METRIC_BATCH_RECORDS: &str = "fps_switch_journal_batch_records";
/// Duration of one fdatasync/fsync, seconds.
pub const METRIC_FSYNC_SECONDS: &str = "fps_switch_journal_fsync_seconds";
/// Failed writes, syncs, truncations, rotations and probes.
pub const METRIC_WRITE_ERRORS: &str = "fps_switch_journal_write_errors_total";
/// 1 while the journal accepts appends, 0 while writes are failing.
pub const METRIC_HEALTHY: &str = "fps_switch_journal_healthy";
/// Segment files (sealed and active).
pub const METRIC_SEGMENTS: &str = "fps_switch_journal_segments";

/// When a record counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// fdatasync after every record.
    Always,
    /// One fdatasync per group commit.
    Batch,
    /// No sync: durable once written to the OS (sync on rotation and close).
    Never,
}

/// Settings of a [`FileJournal`].
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// Directory of the segment files (created when missing).
    pub dir: PathBuf,
    /// When a record counts as durable.
    pub fsync: FsyncMode,
    /// The active segment is sealed once it passes this size (default 64 MiB).
    pub segment_bytes: u64,
    /// Most records in one group commit (default 4096).
    pub max_batch_records: usize,
    /// Records queued for the writer before appends fail with
    /// [`JournalError::Full`] (default 65536).
    pub queue_capacity: usize,
}

impl JournalConfig {
    /// Defaults for `dir`, with `fsync = Batch`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            fsync: FsyncMode::Batch,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }

    fn validate(&self) -> Result<(), JournalError> {
        let bad = |reason| Err(JournalError::InvalidConfig { reason });
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return bad("segment_bytes is below MIN_SEGMENT_BYTES");
        }
        if self.max_batch_records == 0 || self.max_batch_records > MAX_BATCH_RECORDS_LIMIT {
            return bad("max_batch_records must be 1..=MAX_BATCH_RECORDS_LIMIT");
        }
        if self.queue_capacity == 0 || self.queue_capacity > MAX_QUEUE_CAPACITY {
            return bad("queue_capacity must be 1..=MAX_QUEUE_CAPACITY");
        }
        Ok(())
    }
}

/// Log sequence number: 1, 2, 3, ... strictly increasing across segments
/// and restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The append-only journal, as the pipeline sees it.
pub trait Journal: Send + Sync + fmt::Debug {
    /// Queue one record. Err at once (never blocks, never waits) when the
    /// queue is full, the record is too large, or the journal is closed.
    fn append(&self, record: &[u8]) -> Result<Durable, JournalError>;
    /// [`Journal::append`] of a record the caller no longer needs: a
    /// journal that queues records takes it without a copy.
    fn append_owned(&self, record: Vec<u8>) -> Result<Durable, JournalError> {
        self.append(&record)
    }
    /// false while the last write or fsync failed and has not yet
    /// succeeded since.
    fn healthy(&self) -> bool;
    /// Sealed and active segments, oldest first.
    fn segments(&self) -> Vec<SegmentInfo>;
    /// Delete sealed segments whose last_lsn < lsn (never the active one).
    /// Returns how many.
    fn remove_segments_before(&self, lsn: Lsn) -> Result<usize, JournalError>;
}

/// A shared journal is a journal (so a wrapper can own one that others
/// also hold).
impl<J: Journal + ?Sized> Journal for std::sync::Arc<J> {
    fn append(&self, record: &[u8]) -> Result<Durable, JournalError> {
        (**self).append(record)
    }

    fn append_owned(&self, record: Vec<u8>) -> Result<Durable, JournalError> {
        (**self).append_owned(record)
    }

    fn healthy(&self) -> bool {
        (**self).healthy()
    }

    fn segments(&self) -> Vec<SegmentInfo> {
        (**self).segments()
    }

    fn remove_segments_before(&self, lsn: Lsn) -> Result<usize, JournalError> {
        (**self).remove_segments_before(lsn)
    }
}

/// One segment of a journal.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Lsn of its first record (also in the file name).
    pub first_lsn: Lsn,
    /// Lsn of its last record; None while it has none.
    pub last_lsn: Option<Lsn>,
    /// Valid bytes, header included.
    pub bytes: u64,
    /// Write time of its last record.
    pub newest_unix_ms: Option<u64>,
    /// true for every segment but the active (last) one.
    pub sealed: bool,
}

/// What [`FileJournal::open`] found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Records passed to `replay`.
    pub records: u64,
    /// Segment files after recovery, the active one included.
    pub segments: usize,
    /// Bytes cut off: torn tails of the last segment, headers of a torn
    /// last segment, and tails of sealed segments past the length their
    /// successor declares.
    pub torn_tail_bytes: u64,
    /// Lsn the next append will get.
    pub next_lsn: Lsn,
}

impl Default for Lsn {
    fn default() -> Self {
        Lsn(1)
    }
}

/// Why the journal refused or failed a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The writer's queue is full: the journal is slower than the offered load.
    #[error("journal queue is full")]
    Full,
    /// The record is larger than [`MAX_RECORD_BYTES`].
    #[error("journal record of {bytes} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The record's size.
        bytes: usize,
        /// [`MAX_RECORD_BYTES`].
        max: usize,
    },
    /// The journal was closed.
    #[error("journal is closed")]
    Closed,
    /// Writes are failing (disk full, I/O error): the caller answers 96.
    #[error("journal is unavailable: writes are failing")]
    Unavailable,
    /// A file operation failed.
    #[error("journal I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A segment holds a bad record that is not a torn tail.
    #[error("journal segment {segment} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// Segment file name.
        segment: String,
        /// Byte offset of the bad header or record.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A [`JournalConfig`] value is out of range.
    #[error("invalid journal config: {reason}")]
    InvalidConfig {
        /// Which value and its range.
        reason: &'static str,
    },
}

impl JournalError {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Completion of one append: resolves to the record's lsn once it is
/// durable per the [`FsyncMode`] (`Never`: once written to the OS), or to
/// [`JournalError::Unavailable`] when the write failed (the record is not
/// in the journal), or [`JournalError::Closed`] when the writer stopped
/// without writing it.
///
/// With group commit the task awaiting it is woken from the runtime the
/// journal was opened in (one cross-thread wake per batch, see
/// `completion.rs`); should that runtime not run, the writer thread wakes
/// it after 20 ms instead.
#[derive(Debug)]
#[must_use = "a record is only durable once its Durable resolves to Ok"]
pub struct Durable {
    state: DurableState,
    watch: Option<Box<dyn DurableWatch>>,
}

/// Told how one [`Durable`] ended (see [`Durable::watched`]): `resolved`
/// is called once, from the poll that yields the result. A `Durable`
/// dropped before it yields drops its watch without calling it, so the
/// watch's own `Drop` is where "nobody will ever know this record's lsn"
/// is handled.
pub trait DurableWatch: Send + Sync + fmt::Debug {
    /// The `Durable` yielded `result` to its owner.
    fn resolved(self: Box<Self>, result: &Result<Lsn, JournalError>);
}

#[derive(Debug)]
enum DurableState {
    Ready(Option<Result<Lsn, JournalError>>),
    Waiting(Arc<Completion>),
}

impl Durable {
    /// A completion that is already known.
    pub fn ready(result: Result<Lsn, JournalError>) -> Self {
        Durable {
            state: DurableState::Ready(Some(result)),
            watch: None,
        }
    }

    fn waiting(done: Arc<Completion>) -> Self {
        Durable {
            state: DurableState::Waiting(done),
            watch: None,
        }
    }

    /// This completion, reporting its result to `watch` before its owner
    /// sees it (replaces an earlier watch, which is dropped unresolved).
    pub fn watched(mut self, watch: Box<dyn DurableWatch>) -> Self {
        self.watch = Some(watch);
        self
    }
}

impl Future for Durable {
    type Output = Result<Lsn, JournalError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Durable is Unpin: both states hold Unpin values.
        let this = self.get_mut();
        let result = match &mut this.state {
            DurableState::Ready(result) => result.take().unwrap_or(Err(JournalError::Closed)),
            // Err(Closed) when the writer stopped without answering.
            DurableState::Waiting(done) => match done.poll(cx) {
                Poll::Ready(result) => result,
                Poll::Pending => return Poll::Pending,
            },
        };
        if let Some(watch) = this.watch.take() {
            watch.resolved(&result);
        }
        Poll::Ready(result)
    }
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn segment_file_name(first_lsn: u64) -> String {
    format!("journal-{first_lsn:020}.log")
}

fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_by_lsn() {
        let name = segment_file_name(42);
        assert_eq!(name, "journal-00000000000000000042.log");
        assert_eq!(parse_segment_file_name(&name), Some(42));
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(parse_segment_file_name("journal-42.log"), None);
        assert_eq!(parse_segment_file_name("journal.probe"), None);
        assert_eq!(
            parse_segment_file_name("journal-0000000000000000004x.log"),
            None
        );
    }

    #[derive(Debug)]
    struct Seen(std::sync::Arc<std::sync::Mutex<Vec<Option<u64>>>>);

    impl DurableWatch for Seen {
        fn resolved(self: Box<Self>, result: &Result<Lsn, JournalError>) {
            self.0
                .lock()
                .unwrap()
                .push(result.as_ref().ok().map(|l| l.0));
        }
    }

    #[tokio::test]
    async fn a_watch_hears_the_result_once_and_nothing_when_dropped_unresolved() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let watch = || Box::new(Seen(seen.clone()));
        assert_eq!(
            Durable::ready(Ok(Lsn(7))).watched(watch()).await.unwrap(),
            Lsn(7)
        );
        assert!(Durable::ready(Err(JournalError::Unavailable))
            .watched(watch())
            .await
            .is_err());
        let done = Arc::new(Completion::default());
        let waiting = Durable::waiting(Arc::clone(&done)).watched(watch());
        assert!(done.set(Ok(Lsn(9))).is_none(), "nobody polled yet");
        assert_eq!(waiting.await.unwrap(), Lsn(9));
        // The writer stopped without answering.
        let done = Arc::new(Completion::default());
        let _ = done.set(Err(JournalError::Closed));
        assert!(matches!(
            Durable::waiting(done).watched(watch()).await,
            Err(JournalError::Closed)
        ));
        // Dropped before it resolved: the watch is dropped, not called.
        drop(Durable::waiting(Arc::new(Completion::default())).watched(watch()));
        assert_eq!(*seen.lock().unwrap(), vec![Some(7), None, Some(9), None]);
    }

    #[test]
    fn config_rejects_out_of_range_values() {
        let mut cfg = JournalConfig::new("/nonexistent");
        assert!(cfg.validate().is_ok());
        cfg.segment_bytes = 10;
        assert!(cfg.validate().is_err());
        cfg.segment_bytes = MIN_SEGMENT_BYTES;
        cfg.queue_capacity = 0;
        assert!(cfg.validate().is_err());
        cfg.queue_capacity = 1;
        cfg.max_batch_records = MAX_BATCH_RECORDS_LIMIT + 1;
        assert!(cfg.validate().is_err());
    }

    /// With inline appends (`never`) the writer thread only rotates and
    /// probes, at background priority; with group commit it is on the
    /// request path at normal priority. (Other tests' journals may run
    /// meanwhile: every thread of each name must have its priority.)
    #[test]
    fn only_the_rotator_of_inline_appends_runs_at_background_priority() {
        use crate::threads::tests as t;
        let base = std::env::temp_dir().join(format!("fps-journal-nice-{}", std::process::id()));
        let normal = t::nice_of(&t::my_tid()).unwrap();
        let open = |mode: FsyncMode, sub: &str| {
            let mut cfg = JournalConfig::new(base.join(sub));
            cfg.fsync = mode;
            FileJournal::open(cfg, &mut |_, _, _| {}).unwrap().0
        };
        let never = open(FsyncMode::Never, "never");
        let batch = open(FsyncMode::Batch, "batch");
        t::wait_until_all_named_have_nice(file::ROTATOR_THREAD, t::lowered_from_mine());
        t::wait_until_all_named_have_nice(file::WRITER_THREAD, normal);
        drop((never, batch));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn fsync_mode_reads_lowercase() {
        #[derive(serde::Deserialize)]
        struct T {
            fsync: FsyncMode,
        }
        let t: T = toml::from_str("fsync = \"always\"").unwrap();
        assert_eq!(t.fsync, FsyncMode::Always);
        let t: T = toml::from_str("fsync = \"never\"").unwrap();
        assert_eq!(t.fsync, FsyncMode::Never);
    }
}
