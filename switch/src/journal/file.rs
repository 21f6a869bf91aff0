//! [`FileJournal`]: the segmented log on a local directory.

use std::fs;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam::channel::{self, Sender, TrySendError};

use super::completion::{Completion, Relay};
use super::writer::{self, sync_dir, Core, Msg, Pending, Shared, Writer};
use super::{
    scan, segment_file_name, Durable, FsyncMode, Journal, JournalConfig, JournalError, Lsn,
    RecoveryReport, SegmentInfo, MAX_RECORD_BYTES, METRIC_SEGMENTS,
};

/// The embedded journal: segment files in one directory, written by one
/// writer thread with group commit, or with `fsync = "never"` by each
/// appender inline (see the module docs for the format).
#[derive(Debug)]
pub struct FileJournal {
    /// None once closed; dropping it lets the writer drain and stop.
    tx: Option<Sender<Msg>>,
    shared: Arc<Shared>,
    /// Some with `fsync = "never"`: appends write through it inline.
    inline: Option<Arc<Mutex<Core>>>,
    writer: Option<JoinHandle<Result<(), JournalError>>>,
    /// Hands completed records' wakers to the runtime (see `completion.rs`).
    relay: Arc<Relay>,
}

/// The writer thread's name with group commit (`batch`, `always`).
pub(crate) const WRITER_THREAD: &str = "fps-journal";
/// Its name with inline appends (`never`), where it only rotates segments
/// and probes the disk, at background priority.
pub(crate) const ROTATOR_THREAD: &str = "fps-journal-bg";

impl FileJournal {
    /// Opens (creating) the directory, scans every segment in order, calls
    /// `replay` with each valid record, truncates a torn tail of the LAST
    /// segment (partial header, partial payload, or checksum mismatch of
    /// the final record), and refuses to start with
    /// [`JournalError::Corrupt`] when a bad record is followed by more data
    /// or sits in a non-last segment.
    pub fn open(
        cfg: JournalConfig,
        replay: &mut dyn FnMut(Lsn, u64, &[u8]),
    ) -> Result<(FileJournal, RecoveryReport), JournalError> {
        cfg.validate()?;
        fs::create_dir_all(&cfg.dir).map_err(|e| JournalError::io(&cfg.dir, e))?;
        let recovered = scan::recover(&cfg.dir, replay)?;
        let shared = Arc::new(Shared::new(
            cfg.dir.clone(),
            recovered.segments,
            recovered.next_lsn.saturating_sub(1),
        ));
        let (tx, rx) = channel::bounded(cfg.queue_capacity);
        let relay = Relay::start();
        let writer = Writer::open(
            Arc::clone(&shared),
            rx,
            Arc::clone(&relay),
            &cfg,
            recovered.next_lsn,
            recovered.prev_sealed_bytes,
        )?;
        let inline = (cfg.fsync == FsyncMode::Never).then(|| writer.core());
        // With inline appends the writer thread is off the request path: it
        // only rotates full segments (appends go on into the full one while
        // it syncs) and probes a failing disk. Its sync of a 64 MiB segment
        // held the one core 4-10 ms at a stretch (perf sched, 11,000 TPS),
        // so it runs at background priority. With group commit it is the
        // request path and keeps normal priority.
        let background = inline.is_some();
        let report = RecoveryReport {
            records: recovered.records,
            segments: shared.segments().len(),
            torn_tail_bytes: recovered.torn_tail_bytes,
            next_lsn: Lsn(recovered.next_lsn),
        };
        let handle = std::thread::Builder::new()
            .name(
                if background {
                    ROTATOR_THREAD
                } else {
                    WRITER_THREAD
                }
                .into(),
            )
            .spawn(move || {
                if background {
                    crate::threads::run_in_background();
                }
                writer.run()
            })
            .map_err(|e| JournalError::io(&cfg.dir, e))?;
        tracing::info!(
            dir = %cfg.dir.display(),
            records = report.records,
            segments = report.segments,
            torn_tail_bytes = report.torn_tail_bytes,
            next_lsn = report.next_lsn.0,
            fsync = ?cfg.fsync,
            "journal opened"
        );
        Ok((
            FileJournal {
                tx: Some(tx),
                shared,
                inline,
                writer: Some(handle),
                relay,
            },
            report,
        ))
    }

    /// Flush everything queued, fsync, stop the writer thread.
    pub fn close(mut self) -> Result<(), JournalError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), JournalError> {
        // Dropping the only sender: the writer drains the queue and stops.
        self.tx = None;
        let stopped = match self.writer.take() {
            Some(handle) => handle.join().unwrap_or_else(|_| {
                Err(JournalError::io(
                    &self.shared.dir,
                    io::Error::other("journal writer thread panicked"),
                ))
            }),
            None => Ok(()),
        };
        // After the writer's last completions: the dispatcher wakes them
        // and stops.
        self.relay.close();
        stopped
    }

    /// Highest lsn that is in the journal (durable per the fsync mode):
    /// every record appended after this is read gets a higher lsn. 0 while
    /// the journal is empty.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.shared.durable_lsn.load(Ordering::Acquire))
    }

    /// A reader of [`FileJournal::durable_lsn`] that does not keep the
    /// journal open (for the key store to follow it).
    pub fn durable_lsn_reader(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.durable_lsn.load(Ordering::Acquire)
    }

    /// Test hook: make every write, sync, segment creation and probe of
    /// the writer fail with EIO while `on`.
    #[doc(hidden)]
    pub fn inject_write_failures(&self, on: bool) {
        self.shared
            .inject_write_failures
            .store(on, Ordering::Release);
    }

    /// Test hook: make truncating a failed write off the segment fail
    /// while `on` (the writer then starts a new segment).
    #[doc(hidden)]
    pub fn inject_truncate_failures(&self, on: bool) {
        self.shared
            .inject_truncate_failures
            .store(on, Ordering::Release);
    }

    /// Test hook: hold the writer before its next batch while `on` (at
    /// most 30 s), so the queue fills.
    #[doc(hidden)]
    pub fn inject_stall(&self, on: bool) {
        self.shared.inject_stall.store(on, Ordering::Release);
    }
}

impl FileJournal {
    /// The writer's queue, when a record of `len` bytes may be appended:
    /// not too large, the journal open and healthy.
    fn accepting(&self, len: usize) -> Result<&Sender<Msg>, JournalError> {
        if len > MAX_RECORD_BYTES {
            return Err(JournalError::TooLarge {
                bytes: len,
                max: MAX_RECORD_BYTES,
            });
        }
        let Some(tx) = &self.tx else {
            return Err(JournalError::Closed);
        };
        if !self.healthy() {
            return Err(JournalError::Unavailable);
        }
        Ok(tx)
    }

    /// Queue `record` for the writer thread's group commit.
    fn enqueue(&self, tx: &Sender<Msg>, record: Vec<u8>) -> Result<Durable, JournalError> {
        let done = Arc::new(Completion::default());
        let pending = Pending {
            payload: record,
            done: Some(Arc::clone(&done)),
        };
        match tx.try_send(Msg::Record(pending)) {
            Ok(()) => Ok(Durable::waiting(done)),
            Err(TrySendError::Full(_)) => Err(JournalError::Full),
            Err(TrySendError::Disconnected(_)) => Err(JournalError::Closed),
        }
    }

    /// Write `record` now through the core (`fsync = "never"`); wake the
    /// writer thread when the segment is full or the write failed.
    fn append_inline(
        &self,
        core: &Mutex<Core>,
        tx: &Sender<Msg>,
        record: &[u8],
    ) -> Result<Lsn, JournalError> {
        let (result, full) = {
            let mut core = writer::lock(core);
            let result = core.append_now(record);
            (result, core.full())
        };
        let rotate = full && !self.shared.rotate_wanted.swap(true, Ordering::AcqRel);
        if rotate || result.is_err() {
            // A full queue holds a wake already.
            let _ = tx.try_send(Msg::Wake);
        }
        result
    }
}

impl Drop for FileJournal {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "journal did not close cleanly");
        }
    }
}

impl Journal for FileJournal {
    fn append(&self, record: &[u8]) -> Result<Durable, JournalError> {
        let tx = self.accepting(record.len())?;
        match &self.inline {
            // Written from the caller's slice: no copy.
            Some(core) => Ok(Durable::ready(self.append_inline(core, tx, record))),
            None => self.enqueue(tx, record.to_vec()),
        }
    }

    fn append_owned(&self, record: Vec<u8>) -> Result<Durable, JournalError> {
        let tx = self.accepting(record.len())?;
        match &self.inline {
            Some(core) => Ok(Durable::ready(self.append_inline(core, tx, &record))),
            None => self.enqueue(tx, record),
        }
    }

    fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    fn segments(&self) -> Vec<SegmentInfo> {
        self.shared.segments().clone()
    }

    fn remove_segments_before(&self, lsn: Lsn) -> Result<usize, JournalError> {
        let mut segments = self.shared.segments();
        let mut removed = 0;
        let mut result = Ok(());
        // Oldest first and lsns increase, so what goes is a prefix.
        for info in segments.iter() {
            let end_exclusive = info.last_lsn.map_or(info.first_lsn.0, |l| l.0 + 1);
            if !info.sealed || end_exclusive > lsn.0 {
                break;
            }
            let path = self.shared.dir.join(segment_file_name(info.first_lsn.0));
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    result = Err(JournalError::io(path, e));
                    break;
                }
                _ => removed += 1,
            }
        }
        if removed > 0 {
            segments.drain(..removed);
            metrics::gauge!(METRIC_SEGMENTS).set(segments.len() as f64);
            drop(segments);
            sync_dir(&self.shared.dir).map_err(|e| JournalError::io(&self.shared.dir, e))?;
        }
        result.map(|()| removed)
    }
}
