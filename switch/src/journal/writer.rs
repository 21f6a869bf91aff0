//! The writing side of a [`FileJournal`](super::FileJournal): the
//! [`Core`] (active segment, next lsn, rotation, repair after disk trouble)
//! behind a mutex, and the writer thread that drives it.
//!
//! With `fsync = "batch"` or `"always"` every record goes through the
//! writer thread's queue: group commit, one sync for many records. With
//! `fsync = "never"` there is no sync to share, and a thread hand-off per
//! record (queue, wake the writer, wake the appender back) costs more than
//! the write itself: the appender writes its record through the core
//! inline ([`Core::append_now`]), and the thread only rotates full
//! segments (syncing the old one outside the lock first) and probes the
//! disk while writes fail.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError};

use super::completion::{Completion, Relay};
use super::format::{encode_record, SegmentHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::scan::PROBE_FILE_NAME;
use super::{
    segment_file_name, unix_ms_now, FsyncMode, JournalConfig, JournalError, Lsn, SegmentInfo,
    MAX_BATCH_BYTES, METRIC_APPENDS, METRIC_BATCH_RECORDS, METRIC_FSYNC_SECONDS, METRIC_HEALTHY,
    METRIC_SEGMENTS, METRIC_WRITE_ERRORS, PROBE_INTERVAL,
};

/// Bytes the probe writes: room for the largest record.
const PROBE_BYTES: usize = super::MAX_RECORD_BYTES + RECORD_HEADER_BYTES;
static PROBE_BLOCK: [u8; PROBE_BYTES] = [0; PROBE_BYTES];
/// Longest the test-only stall hook holds the writer.
const MAX_STALL: Duration = Duration::from_secs(30);
/// Poll period of the stall hook.
const STALL_POLL: Duration = Duration::from_millis(1);
/// Longest a batch waits for more records under load (see `collect_batch`).
const GROUP_COMMIT_LINGER: Duration = Duration::from_micros(200);
/// A batch this large does not wait for more.
const GROUP_COMMIT_TARGET: usize = 64;
/// A previous batch this large means the journal is under load.
const BUSY_BATCH_RECORDS: usize = 16;
/// Linux EIO, what an injected failure looks like.
const EIO: i32 = 5;

/// State shared by the [`FileJournal`](super::FileJournal) handle and its writer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub healthy: AtomicBool,
    /// Highest lsn written (and synced per the mode); every lsn up to it
    /// is in the journal. Published after the records' completions.
    pub durable_lsn: AtomicU64,
    pub segments: Mutex<Vec<SegmentInfo>>,
    pub inject_write_failures: AtomicBool,
    pub inject_truncate_failures: AtomicBool,
    pub inject_stall: AtomicBool,
    /// Set by an inline append that filled the active segment: the writer
    /// thread rotates it.
    pub rotate_wanted: AtomicBool,
}

impl Shared {
    pub(crate) fn new(dir: PathBuf, segments: Vec<SegmentInfo>, durable_lsn: u64) -> Self {
        Shared {
            dir,
            healthy: AtomicBool::new(true),
            durable_lsn: AtomicU64::new(durable_lsn),
            segments: Mutex::new(segments),
            inject_write_failures: AtomicBool::new(false),
            inject_truncate_failures: AtomicBool::new(false),
            inject_stall: AtomicBool::new(false),
            rotate_wanted: AtomicBool::new(false),
        }
    }

    /// The segment list; a panic elsewhere while it was held leaves it
    /// consistent (every update is a single assignment or push), so a
    /// poisoned lock is still used.
    pub(crate) fn segments(&self) -> MutexGuard<'_, Vec<SegmentInfo>> {
        self.segments.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
        metrics::gauge!(METRIC_HEALTHY).set(if healthy { 1.0 } else { 0.0 });
    }
}

/// One queued record and who waits for it.
#[derive(Debug)]
pub(crate) struct Pending {
    pub payload: Vec<u8>,
    /// Taken when the record is completed.
    pub done: Option<Arc<Completion>>,
}

/// What the writer thread's queue carries.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A record to write (`fsync` batch or always).
    Record(Pending),
    /// Look at the shared flags: a segment to rotate, writes failing.
    Wake,
}

impl Pending {
    /// Records the result; the waiting task is woken with the batch's
    /// [`Relay::flush`]. The caller may have stopped waiting: the record
    /// stands anyway.
    fn complete(&mut self, result: Result<Lsn, JournalError>, relay: &Relay) {
        if let Some(waker) = self.done.take().and_then(|done| done.set(result)) {
            relay.defer(waker);
        }
    }
}

impl Drop for Pending {
    /// A record dropped unanswered (the writer stopping): its waiter sees
    /// `Closed` at once.
    fn drop(&mut self) {
        if let Some(waker) = self
            .done
            .take()
            .and_then(|d| d.set(Err(JournalError::Closed)))
        {
            waker.wake();
        }
    }
}

/// The segment records go to.
#[derive(Debug)]
struct Active {
    file: File,
    path: PathBuf,
    first_lsn: u64,
    /// End of the last record that was written (and synced per the mode).
    good_bytes: u64,
}

/// Everything that writes to the segment files. Behind a mutex: the
/// writer thread holds it for a batch, an inline append for its record.
#[derive(Debug)]
pub(crate) struct Core {
    shared: Arc<Shared>,
    fsync: FsyncMode,
    segment_bytes: u64,
    /// None after sealing a segment when the next one could not be created.
    active: Option<Active>,
    next_lsn: u64,
    /// Valid bytes of the segment before the active one (0 if none).
    prev_sealed_bytes: u64,
    /// Bytes past `good_bytes` may be in the active file.
    dirty: bool,
    next_probe: Instant,
    buf: Vec<u8>,
    appends: metrics::Counter,
}

/// The writer thread's side: its queue and the batch it is building.
#[derive(Debug)]
pub(crate) struct Writer {
    core: Arc<Mutex<Core>>,
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    /// Where completed records' wakers go (one wake per batch).
    relay: Arc<Relay>,
    fsync: FsyncMode,
    max_batch_records: usize,
    batch: Vec<Pending>,
    /// Records in the previous batch (a measure of load).
    last_batch_records: usize,
}

/// The core, also when a panic elsewhere poisoned its lock: every method
/// leaves it consistent between system calls (a failed write is cut off
/// by the repair that follows), so it is still used.
pub(crate) fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Writer {
    /// A writer continuing after recovery: appends to the last segment in
    /// `shared.segments`, or creates the first one.
    pub(crate) fn open(
        shared: Arc<Shared>,
        rx: Receiver<Msg>,
        relay: Arc<Relay>,
        cfg: &JournalConfig,
        next_lsn: u64,
        prev_sealed_bytes: u64,
    ) -> Result<Self, JournalError> {
        let mut core = Core {
            shared: Arc::clone(&shared),
            fsync: cfg.fsync,
            segment_bytes: cfg.segment_bytes,
            active: None,
            next_lsn,
            prev_sealed_bytes,
            dirty: false,
            next_probe: Instant::now(),
            buf: Vec::with_capacity(MAX_BATCH_BYTES.min(1024 * 1024)),
            appends: metrics::counter!(METRIC_APPENDS),
        };
        let last = shared.segments().last().cloned();
        match last {
            Some(last) => {
                let path = shared.dir.join(segment_file_name(last.first_lsn.0));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| JournalError::io(&path, e))?;
                core.active = Some(Active {
                    file,
                    path,
                    first_lsn: last.first_lsn.0,
                    good_bytes: last.bytes,
                });
            }
            None => core
                .start_segment()
                .map_err(|e| JournalError::io(&shared.dir, e))?,
        }
        metrics::gauge!(METRIC_SEGMENTS).set(shared.segments().len() as f64);
        shared.set_healthy(true);
        Ok(Writer {
            core: Arc::new(Mutex::new(core)),
            shared,
            rx,
            relay,
            fsync: cfg.fsync,
            max_batch_records: cfg.max_batch_records,
            batch: Vec::with_capacity(cfg.max_batch_records),
            last_batch_records: 0,
        })
    }

    /// The core, for inline appends (`fsync = "never"`).
    pub(crate) fn core(&self) -> Arc<Mutex<Core>> {
        Arc::clone(&self.core)
    }

    /// Serve the queue until every sender is gone and it is drained, then
    /// sync and stop.
    pub(crate) fn run(mut self) -> Result<(), JournalError> {
        // Bounded by the journal's lifetime: ends when the handle drops
        // its sender and the queue (at most queue_capacity) is empty.
        loop {
            // Wait for the next record until the next thing due without
            // one: the disk probe while unhealthy, and wakes handed to a
            // dispatcher that does not run, delivered here once due (see
            // `completion.rs`).
            let rescue = self.relay.rescue_due(Instant::now());
            let probe = (!self.shared.healthy()).then(|| lock(&self.core).next_probe);
            let until = match (rescue, probe) {
                (Some(r), Some(p)) => Some(r.min(p)),
                (r, p) => r.or(p),
            };
            let received = match until {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(until) => self.rx.recv_deadline(until),
            };
            let msg = match received {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    if probe.is_some_and(|p| Instant::now() >= p) {
                        lock(&self.core).try_recover();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Msg::Record(first) = msg {
                self.stall_while_asked();
                self.collect_batch(first);
                let mut batch = std::mem::take(&mut self.batch);
                lock(&self.core).commit(&mut batch, &self.relay);
                self.relay.flush();
                batch.clear();
                self.batch = batch;
            }
            if self.shared.rotate_wanted.swap(false, Ordering::AcqRel) {
                self.rotate_behind_appends();
            }
            if !self.shared.healthy() {
                let mut core = lock(&self.core);
                if Instant::now() >= core.next_probe {
                    core.try_recover();
                }
            }
        }
        let mut core = lock(&self.core);
        core.finish()
    }

    fn stall_while_asked(&self) {
        let since = Instant::now();
        while self.shared.inject_stall.load(Ordering::Acquire) && since.elapsed() < MAX_STALL {
            std::thread::sleep(STALL_POLL);
        }
    }

    /// Take what is queued behind `first`. Under load (the last batch held
    /// at least [`BUSY_BATCH_RECORDS`]) and with `fsync = "batch"`, a batch
    /// short of [`GROUP_COMMIT_TARGET`] waits up to [`GROUP_COMMIT_LINGER`]
    /// for more: one sync then covers more records, which costs each of
    /// them less CPU than it adds latency. A quiet journal never waits, nor
    /// does one that syncs every record (`always`).
    fn collect_batch(&mut self, first: Pending) {
        let linger_until = (self.fsync == FsyncMode::Batch
            && self.last_batch_records >= BUSY_BATCH_RECORDS)
            .then(|| Instant::now() + GROUP_COMMIT_LINGER);
        let mut bytes = first.payload.len() + RECORD_HEADER_BYTES;
        self.batch.push(first);
        while self.batch.len() < self.max_batch_records && bytes < MAX_BATCH_BYTES {
            let next = match self.rx.try_recv() {
                Ok(m) => Some(m),
                Err(_) if self.batch.len() < GROUP_COMMIT_TARGET => {
                    linger_until.and_then(|until| self.rx.recv_deadline(until).ok())
                }
                Err(_) => None,
            };
            match next {
                None => break,
                // The flags it points at are read after the batch.
                Some(Msg::Wake) => {}
                Some(Msg::Record(p)) => {
                    bytes += p.payload.len() + RECORD_HEADER_BYTES;
                    self.batch.push(p);
                }
            }
        }
        self.last_batch_records = self.batch.len();
    }

    /// Rotate the segment that inline appends filled, stopping them as
    /// briefly as possible: the full segment's data is synced without the
    /// lock (appends go on into it meanwhile), then, under the lock, the
    /// little written since is synced and the next segment started.
    fn rotate_behind_appends(&self) {
        let file = {
            let core = lock(&self.core);
            match core.active.as_ref().map(|a| a.file.try_clone()) {
                Some(Ok(file)) => Some(file),
                // Rotate under the lock as usual; it reports the error.
                Some(Err(_)) | None => None,
            }
        };
        if let Some(file) = file {
            // Best effort: the sync under the lock is the one that counts.
            let _ = file.sync_data();
        }
        let mut core = lock(&self.core);
        if core.shared.healthy() && core.full() {
            core.rotate();
        }
    }
}

impl Core {
    /// Write one record now (`fsync = "never"`: durable once the OS has
    /// it). Err leaves the journal unhealthy with the record cut off.
    pub(crate) fn append_now(&mut self, payload: &[u8]) -> Result<Lsn, JournalError> {
        if !self.shared.healthy() || self.active.is_none() {
            return Err(JournalError::Unavailable);
        }
        let lsn = self.next_lsn;
        let unix_ms = unix_ms_now();
        self.buf.clear();
        encode_record(&mut self.buf, lsn, unix_ms, payload);
        match self.write_buf() {
            Ok(()) => {
                self.next_lsn += 1;
                self.appends.increment(1);
                self.publish_active(unix_ms);
                Ok(Lsn(lsn))
            }
            Err(e) => {
                self.on_error("write", &e);
                Err(JournalError::Unavailable)
            }
        }
    }

    /// The active segment has reached its size: time to rotate.
    pub(crate) fn full(&self) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| a.good_bytes >= self.segment_bytes)
    }

    /// Write the batch, sync per the mode, complete every record in order.
    fn commit(&mut self, batch: &mut [Pending], relay: &Relay) {
        if !self.shared.healthy() || self.active.is_none() {
            for p in batch.iter_mut() {
                p.complete(Err(JournalError::Unavailable), relay);
            }
        } else {
            metrics::histogram!(METRIC_BATCH_RECORDS).record(batch.len() as f64);
            let group = match self.fsync {
                FsyncMode::Always => 1,
                FsyncMode::Batch | FsyncMode::Never => batch.len(),
            };
            let mut written = 0u64;
            let mut newest_unix_ms = 0;
            let mut failed = false;
            for chunk in batch.chunks_mut(group) {
                if failed {
                    for p in chunk.iter_mut() {
                        p.complete(Err(JournalError::Unavailable), relay);
                    }
                    continue;
                }
                let base = self.next_lsn;
                let unix_ms = unix_ms_now();
                self.buf.clear();
                for (k, p) in chunk.iter().enumerate() {
                    encode_record(&mut self.buf, base + k as u64, unix_ms, &p.payload);
                }
                match self.write_buf() {
                    Ok(()) => {
                        self.next_lsn += chunk.len() as u64;
                        newest_unix_ms = unix_ms;
                        written += chunk.len() as u64;
                        for (k, p) in chunk.iter_mut().enumerate() {
                            p.complete(Ok(Lsn(base + k as u64)), relay);
                        }
                    }
                    Err(e) => {
                        self.on_error("write", &e);
                        failed = true;
                        // Lsns from `base` on are not consumed.
                        for p in chunk.iter_mut() {
                            p.complete(Err(JournalError::Unavailable), relay);
                        }
                    }
                }
            }
            if written > 0 {
                self.appends.increment(written);
                self.publish_active(newest_unix_ms);
            }
        }
        if self.buf.capacity() > 2 * MAX_BATCH_BYTES {
            self.buf = Vec::with_capacity(MAX_BATCH_BYTES);
        }
        if self.shared.healthy() && self.full() {
            self.rotate();
        }
    }

    /// One positional write of `buf` at the good end, then the sync the
    /// mode asks for.
    fn write_buf(&mut self) -> io::Result<()> {
        let Some(active) = self.active.as_mut() else {
            return Err(io::Error::other("no active journal segment"));
        };
        self.dirty = true;
        if self.shared.inject_write_failures.load(Ordering::Acquire) {
            // Like a real EIO mid-write: part of the batch may have landed.
            let half = &self.buf[..self.buf.len() / 2];
            let _ = active.file.write_all_at(half, active.good_bytes);
            return Err(io::Error::from_raw_os_error(EIO));
        }
        active.file.write_all_at(&self.buf, active.good_bytes)?;
        if self.fsync != FsyncMode::Never {
            let started = Instant::now();
            active.file.sync_data()?;
            metrics::histogram!(METRIC_FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
        }
        active.good_bytes += self.buf.len() as u64;
        self.dirty = false;
        Ok(())
    }

    fn publish_active(&self, newest_unix_ms: u64) {
        self.shared
            .durable_lsn
            .store(self.next_lsn.saturating_sub(1), Ordering::Release);
        let Some(active) = &self.active else { return };
        let mut segments = self.shared.segments();
        if let Some(info) = segments.last_mut() {
            if info.first_lsn.0 == active.first_lsn {
                info.bytes = active.good_bytes;
                info.last_lsn = (self.next_lsn > active.first_lsn).then(|| Lsn(self.next_lsn - 1));
                info.newest_unix_ms = Some(newest_unix_ms);
            }
        }
    }

    /// Seal the full active segment and start the next one.
    fn rotate(&mut self) {
        let Some(active) = &self.active else { return };
        let sealed = injected(&self.shared.inject_write_failures).and_then(|()| {
            let started = Instant::now();
            active.file.sync_all()?;
            metrics::histogram!(METRIC_FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
            Ok(())
        });
        if let Err(e) = sealed {
            self.on_error("seal", &e);
            return;
        }
        self.seal_active();
        if let Err(e) = self.start_segment() {
            // The probe loop creates it; no write happens until then.
            self.on_error("rotate", &e);
        }
    }

    /// Stop writing to the active segment; the next one's header records
    /// its valid length.
    fn seal_active(&mut self) {
        let Some(active) = self.active.take() else {
            return;
        };
        self.prev_sealed_bytes = active.good_bytes;
        let mut segments = self.shared.segments();
        if let Some(info) = segments
            .iter_mut()
            .rev()
            .find(|s| s.first_lsn.0 == active.first_lsn)
        {
            info.sealed = true;
            info.bytes = active.good_bytes;
        }
    }

    /// Create `journal-{next_lsn}.log` (replacing a leftover of a failed
    /// attempt), write and sync its header, sync the directory.
    fn start_segment(&mut self) -> io::Result<()> {
        injected(&self.shared.inject_write_failures)?;
        let first_lsn = self.next_lsn;
        let path = self.shared.dir.join(segment_file_name(first_lsn));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let header = SegmentHeader {
            first_lsn,
            prev_segment_bytes: self.prev_sealed_bytes,
        };
        file.write_all_at(&header.encode(), 0)?;
        file.sync_all()?;
        sync_dir(&self.shared.dir)?;
        let info = SegmentInfo {
            first_lsn: Lsn(first_lsn),
            last_lsn: None,
            bytes: SEGMENT_HEADER_BYTES as u64,
            newest_unix_ms: None,
            sealed: false,
        };
        {
            let mut segments = self.shared.segments();
            match segments.last_mut() {
                Some(last) if last.first_lsn.0 == first_lsn => *last = info,
                Some(last) => {
                    last.sealed = true;
                    segments.push(info);
                }
                None => segments.push(info),
            }
            metrics::gauge!(METRIC_SEGMENTS).set(segments.len() as f64);
        }
        self.active = Some(Active {
            file,
            path,
            first_lsn,
            good_bytes: SEGMENT_HEADER_BYTES as u64,
        });
        Ok(())
    }

    fn on_error(&mut self, op: &'static str, e: &io::Error) {
        metrics::counter!(METRIC_WRITE_ERRORS).increment(1);
        if self.shared.healthy() {
            tracing::warn!(
                op,
                error = %e,
                dir = %self.shared.dir.display(),
                "journal write failed; appends fail until a probe write succeeds"
            );
        }
        self.shared.set_healthy(false);
        self.next_probe = Instant::now() + PROBE_INTERVAL;
        if let Err(e) = self.repair_tail() {
            metrics::counter!(METRIC_WRITE_ERRORS).increment(1);
            tracing::debug!(error = %e, "journal tail repair failed; retrying at the next probe");
        }
    }

    /// Cut a failed write off the active segment, or, when even that
    /// fails, leave the segment behind and start the next one (whose
    /// header says where this one's valid records end).
    fn repair_tail(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let Some(active) = &self.active else {
            self.dirty = false;
            return Ok(());
        };
        let cut = injected(&self.shared.inject_truncate_failures).and_then(|()| {
            active.file.set_len(active.good_bytes)?;
            active.file.sync_all()
        });
        match cut {
            Ok(()) => {
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                metrics::counter!(METRIC_WRITE_ERRORS).increment(1);
                tracing::warn!(
                    error = %e,
                    path = %active.path.display(),
                    "cannot truncate the journal segment after a failed write; starting a new one"
                );
                if active.first_lsn < self.next_lsn {
                    self.seal_active();
                } else if let Some(empty) = self.active.take() {
                    // No record in it: the new segment takes its name.
                    drop(empty.file);
                    let _ = fs::remove_file(&empty.path);
                }
                self.dirty = false;
                self.start_segment()
            }
        }
    }

    /// While unhealthy: finish any repair, then probe the disk.
    fn try_recover(&mut self) {
        self.next_probe = Instant::now() + PROBE_INTERVAL;
        match self.recover_steps() {
            Ok(()) => {
                tracing::info!(dir = %self.shared.dir.display(), "journal writes work again");
                self.shared.set_healthy(true);
            }
            Err(e) => {
                metrics::counter!(METRIC_WRITE_ERRORS).increment(1);
                tracing::debug!(error = %e, "journal probe failed");
            }
        }
    }

    fn recover_steps(&mut self) -> io::Result<()> {
        self.repair_tail()?;
        if self.active.is_none() {
            self.start_segment()?;
        }
        self.probe()
    }

    /// Write, sync and remove a scratch file the size of the largest
    /// record: the disk has room and accepts writes.
    fn probe(&self) -> io::Result<()> {
        injected(&self.shared.inject_write_failures)?;
        let path = self.shared.dir.join(PROBE_FILE_NAME);
        let result = File::create(&path).and_then(|f| {
            f.write_all_at(&PROBE_BLOCK, 0)?;
            f.sync_data()
        });
        // Best effort: a leftover probe file is removed at the next open.
        let _ = fs::remove_file(&path);
        result
    }

    /// After the queue closed: one last repair if needed, then sync.
    fn finish(&mut self) -> Result<(), JournalError> {
        if !self.shared.healthy() {
            self.try_recover();
        }
        if !self.shared.healthy() {
            return Err(JournalError::Unavailable);
        }
        let Some(active) = &self.active else {
            return Err(JournalError::Unavailable);
        };
        active
            .file
            .sync_all()
            .map_err(|e| JournalError::io(&active.path, e))
    }
}

fn injected(flag: &AtomicBool) -> io::Result<()> {
    if flag.load(Ordering::Acquire) {
        Err(io::Error::from_raw_os_error(EIO))
    } else {
        Ok(())
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
