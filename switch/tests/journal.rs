//! The file journal against a real directory: round trips, torn tails at
//! every byte, corruption, rotation, compaction, fsync modes, back
//! pressure, disk failures and self-recovery, concurrent appenders, and
//! (as root) a real ENOSPC on a small tmpfs.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fps_switch::journal::{
    FileJournal, FsyncMode, Journal, JournalConfig, JournalError, Lsn, RecoveryReport,
    MAX_RECORD_BYTES, MIN_SEGMENT_BYTES, PROBE_INTERVAL, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

/// How long a test waits for the journal to recover by itself.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(10);

type Replayed = Vec<(Lsn, Vec<u8>)>;

fn cfg(dir: &Path) -> JournalConfig {
    JournalConfig::new(dir)
}

fn open(cfg: JournalConfig) -> (FileJournal, RecoveryReport, Replayed) {
    let mut replayed = Vec::new();
    let (j, report) = FileJournal::open(cfg, &mut |lsn, _ms, p| replayed.push((lsn, p.to_vec())))
        .expect("journal opens");
    (j, report, replayed)
}

fn try_open(cfg: JournalConfig) -> Result<(RecoveryReport, Replayed), JournalError> {
    let mut replayed = Vec::new();
    let (j, report) = FileJournal::open(cfg, &mut |lsn, _ms, p| replayed.push((lsn, p.to_vec())))?;
    j.close()?;
    Ok((report, replayed))
}

/// Payloads of different lengths, recognisable by number.
fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("record-{i:06}:").into_bytes();
    p.extend(std::iter::repeat_n(
        b'a' + (i % 26) as u8,
        (i % 40) as usize,
    ));
    p
}

async fn append_range(j: &FileJournal, range: std::ops::RangeInclusive<u64>) -> Vec<Lsn> {
    let mut lsns = Vec::new();
    for i in range {
        let lsn = j
            .append(&payload(i))
            .expect("queued")
            .await
            .expect("durable");
        lsns.push(lsn);
    }
    lsns
}

fn expected(range: std::ops::RangeInclusive<u64>) -> Replayed {
    range.map(|i| (Lsn(i), payload(i))).collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    for f in segment_files(from) {
        fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

fn truncate_file(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

/// Offset of record `index` (0-based) in a segment holding records made
/// by `payload(first..)`.
fn record_offset(first: u64, index: u64) -> u64 {
    SEGMENT_HEADER_BYTES as u64
        + (first..first + index)
            .map(|i| (RECORD_HEADER_BYTES + payload(i).len()) as u64)
            .sum::<u64>()
}

async fn wait_healthy(j: &FileJournal) {
    let since = Instant::now();
    while !j.healthy() {
        assert!(
            since.elapsed() < RECOVERY_DEADLINE,
            "journal did not recover by itself"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn round_trip_across_reopens_keeps_lsns_continuous() {
    let dir = tempfile::tempdir().unwrap();
    let (j, report, replayed) = open(cfg(dir.path()));
    assert_eq!((report.records, report.next_lsn), (0, Lsn(1)));
    assert!(replayed.is_empty());
    assert_eq!(
        append_range(&j, 1..=10).await,
        (1..=10).map(Lsn).collect::<Vec<_>>()
    );
    j.close().unwrap();

    let (j, report, replayed) = open(cfg(dir.path()));
    assert_eq!(replayed, expected(1..=10));
    assert_eq!((report.records, report.next_lsn), (10, Lsn(11)));
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(append_range(&j, 11..=15).await[0], Lsn(11));
    j.close().unwrap();

    let (report, replayed) = try_open(cfg(dir.path())).unwrap();
    assert_eq!(replayed, expected(1..=15));
    assert_eq!((report.segments, report.next_lsn), (1, Lsn(16)));
}

#[tokio::test]
async fn torn_tail_at_every_byte_of_the_last_record_is_cut_and_writing_goes_on() {
    const N: u64 = 5;
    let base = tempfile::tempdir().unwrap();
    let (j, ..) = open(cfg(base.path()));
    append_range(&j, 1..=N).await;
    j.close().unwrap();
    let seg_name = segment_files(base.path())[0]
        .file_name()
        .unwrap()
        .to_owned();
    let start = record_offset(1, N - 1);
    let end = record_offset(1, N);
    assert_eq!(
        fs::metadata(base.path().join(&seg_name)).unwrap().len(),
        end
    );

    for cut in start..end {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        truncate_file(&dir.path().join(&seg_name), cut);

        let (j, report, replayed) = open(cfg(dir.path()));
        assert_eq!(replayed, expected(1..=N - 1), "cut at {cut}");
        assert_eq!(report.torn_tail_bytes, cut - start, "cut at {cut}");
        assert_eq!(report.next_lsn, Lsn(N), "cut at {cut}");
        let lsn = j.append(b"after the tear").unwrap().await.unwrap();
        assert_eq!(lsn, Lsn(N), "cut at {cut}");
        j.close().unwrap();

        let (report, replayed) = try_open(cfg(dir.path())).unwrap();
        let mut want = expected(1..=N - 1);
        want.push((Lsn(N), b"after the tear".to_vec()));
        assert_eq!(replayed, want, "cut at {cut}");
        assert_eq!(report.torn_tail_bytes, 0, "cut at {cut}");
    }
}

#[tokio::test]
async fn checksum_corruption_in_a_middle_record_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (j, ..) = open(cfg(dir.path()));
    append_range(&j, 1..=5).await;
    j.close().unwrap();
    let seg = &segment_files(dir.path())[0];
    let offset = record_offset(1, 2);
    flip_byte(seg, offset + RECORD_HEADER_BYTES as u64 + 3);

    match try_open(cfg(dir.path())) {
        Err(JournalError::Corrupt {
            segment,
            offset: at,
            reason,
        }) => {
            assert_eq!(segment, "journal-00000000000000000001.log");
            assert_eq!(at, offset);
            assert_eq!(reason, "record checksum mismatch");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn flipped_byte_in_the_last_record_is_a_torn_tail() {
    const N: u64 = 4;
    let base = tempfile::tempdir().unwrap();
    let (j, ..) = open(cfg(base.path()));
    append_range(&j, 1..=N).await;
    j.close().unwrap();
    let seg_name = segment_files(base.path())[0]
        .file_name()
        .unwrap()
        .to_owned();
    let start = record_offset(1, N - 1);
    let end = record_offset(1, N);
    // Every byte but the length field (a shorter length is "followed by
    // more data": Corrupt; a longer one is a partial payload: torn).
    for at in start + 4..end {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        flip_byte(&dir.path().join(&seg_name), at);
        let (report, replayed) = try_open(cfg(dir.path())).unwrap();
        assert_eq!(replayed, expected(1..=N - 1), "flip at {at}");
        assert_eq!(report.torn_tail_bytes, end - start, "flip at {at}");
    }
}

#[tokio::test]
async fn zero_filled_tail_is_torn_but_garbage_after_a_bad_record_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (j, ..) = open(cfg(dir.path()));
    append_range(&j, 1..=3).await;
    j.close().unwrap();
    let seg = segment_files(dir.path())[0].clone();
    let len = fs::metadata(&seg).unwrap().len();
    // A crash after the size grew but before the data landed.
    truncate_file(&seg, len + 4096);
    let (report, replayed) = try_open(cfg(dir.path())).unwrap();
    assert_eq!(replayed, expected(1..=3));
    assert_eq!(report.torn_tail_bytes, 4096);
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);

    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0u8; 100]);
    bytes.extend_from_slice(b"not zero");
    fs::write(&seg, bytes).unwrap();
    assert!(matches!(
        try_open(cfg(dir.path())),
        Err(JournalError::Corrupt { offset, .. }) if offset == len
    ));
}

#[tokio::test]
async fn rotation_seals_segments_and_recovery_reads_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = MIN_SEGMENT_BYTES;
    let (j, ..) = open(c.clone());
    append_range(&j, 1..=200).await;
    let segs = j.segments();
    assert!(segs.len() > 5, "{} segments", segs.len());
    assert_eq!(segs.len(), segment_files(dir.path()).len());
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.sealed, i + 1 < segs.len());
        if s.sealed {
            assert!(s.bytes >= MIN_SEGMENT_BYTES);
            assert!(s.newest_unix_ms.is_some());
        }
    }
    for w in segs.windows(2) {
        assert_eq!(Lsn(w[0].last_lsn.unwrap().0 + 1), w[1].first_lsn);
    }
    assert_eq!(segs[0].first_lsn, Lsn(1));
    j.close().unwrap();

    let (j, report, replayed) = open(c);
    assert_eq!(replayed, expected(1..=200));
    assert_eq!(report.segments, segs.len());
    assert_eq!(report.next_lsn, Lsn(201));
    j.close().unwrap();
}

#[tokio::test]
async fn remove_segments_before_compacts_sealed_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = MIN_SEGMENT_BYTES;
    let (j, ..) = open(c.clone());
    append_range(&j, 1..=200).await;
    let segs = j.segments();
    let keep_from = segs[3].first_lsn;
    // segs[2].last_lsn < keep_from, segs[3].last_lsn is not.
    assert_eq!(j.remove_segments_before(keep_from).unwrap(), 3);
    assert_eq!(j.segments()[0].first_lsn, keep_from);
    assert_eq!(segment_files(dir.path()).len(), segs.len() - 3);
    assert_eq!(j.remove_segments_before(keep_from).unwrap(), 0);

    assert_eq!(
        j.remove_segments_before(Lsn(u64::MAX)).unwrap(),
        segs.len() - 4
    );
    let left = j.segments();
    assert_eq!(left.len(), 1);
    assert!(!left[0].sealed);
    j.close().unwrap();

    let (j, report, replayed) = open(c);
    assert_eq!(replayed, expected(left[0].first_lsn.0..=200));
    assert_eq!(report.next_lsn, Lsn(201));
    assert_eq!(append_range(&j, 201..=201).await, vec![Lsn(201)]);
    j.close().unwrap();
}

#[tokio::test]
async fn a_missing_middle_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = MIN_SEGMENT_BYTES;
    let (j, ..) = open(c.clone());
    append_range(&j, 1..=100).await;
    j.close().unwrap();
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).unwrap();
    let got = try_open(c.clone());
    assert!(
        matches!(
            got,
            Err(JournalError::Corrupt {
                reason: "lsn gap between segments",
                ..
            })
        ),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_bad_last_record_of_a_sealed_segment_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = MIN_SEGMENT_BYTES;
    let (j, ..) = open(c.clone());
    append_range(&j, 1..=100).await;
    j.close().unwrap();
    let first = &segment_files(dir.path())[0];
    let len = fs::metadata(first).unwrap().len();
    flip_byte(first, len - 1);
    assert!(matches!(
        try_open(c),
        Err(JournalError::Corrupt { segment, .. }) if segment == "journal-00000000000000000001.log"
    ));
}

#[tokio::test]
async fn every_fsync_mode_round_trips() {
    for mode in [FsyncMode::Always, FsyncMode::Batch, FsyncMode::Never] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.fsync = mode;
        c.segment_bytes = MIN_SEGMENT_BYTES;
        let (j, ..) = open(c.clone());
        let durables: Vec<_> = (1..=50).map(|i| j.append(&payload(i)).unwrap()).collect();
        for (i, d) in durables.into_iter().enumerate() {
            assert_eq!(d.await.unwrap(), Lsn(i as u64 + 1), "{mode:?}");
        }
        j.close().unwrap();
        let (_, replayed) = try_open(c).unwrap();
        assert_eq!(replayed, expected(1..=50), "{mode:?}");
    }
}

#[tokio::test]
async fn too_large_records_are_refused_and_the_largest_fits() {
    let dir = tempfile::tempdir().unwrap();
    let (j, ..) = open(cfg(dir.path()));
    assert!(matches!(
        j.append(&vec![7; MAX_RECORD_BYTES + 1]),
        Err(JournalError::TooLarge { bytes, max }) if bytes == MAX_RECORD_BYTES + 1 && max == MAX_RECORD_BYTES
    ));
    let big = vec![7; MAX_RECORD_BYTES];
    assert_eq!(j.append(&big).unwrap().await.unwrap(), Lsn(1));
    assert_eq!(j.append(b"").unwrap().await.unwrap(), Lsn(2));
    j.close().unwrap();
    let (_, replayed) = try_open(cfg(dir.path())).unwrap();
    assert_eq!(replayed, vec![(Lsn(1), big), (Lsn(2), Vec::new())]);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.queue_capacity = 4;
    let (j, ..) = open(c);
    j.inject_stall(true);
    let mut durables = Vec::new();
    let mut full = false;
    for i in 1..=20 {
        match j.append(&payload(i)) {
            Ok(d) => durables.push(d),
            Err(JournalError::Full) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(full);
    // The queue plus, at most, the one record the stalled writer holds.
    assert!((4..=5).contains(&durables.len()), "{}", durables.len());
    j.inject_stall(false);
    for (i, d) in durables.into_iter().enumerate() {
        assert_eq!(d.await.unwrap(), Lsn(i as u64 + 1));
    }
    j.close().unwrap();
}

#[tokio::test]
async fn close_makes_everything_queued_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.fsync = FsyncMode::Never;
    let (j, ..) = open(c.clone());
    let durables: Vec<_> = (1..=300).map(|i| j.append(&payload(i)).unwrap()).collect();
    j.close().unwrap();
    for (i, d) in durables.into_iter().enumerate() {
        assert_eq!(d.await.unwrap(), Lsn(i as u64 + 1));
    }
    let (_, replayed) = try_open(c).unwrap();
    assert_eq!(replayed, expected(1..=300));
}

#[tokio::test]
async fn write_failures_fail_fast_and_the_journal_recovers_by_itself() {
    write_failures_then_recovery(FsyncMode::Batch).await;
}

/// The same when appenders write inline: the writer thread still probes.
#[tokio::test]
async fn inline_write_failures_fail_fast_and_the_journal_recovers_by_itself() {
    write_failures_then_recovery(FsyncMode::Never).await;
}

async fn write_failures_then_recovery(fsync: FsyncMode) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.fsync = fsync;
    let (j, ..) = open(c);
    append_range(&j, 1..=3).await;

    j.inject_write_failures(true);
    let failed = j.append(b"lost to EIO").unwrap().await;
    assert!(
        matches!(failed, Err(JournalError::Unavailable)),
        "{failed:?}"
    );
    assert!(!j.healthy());
    assert!(matches!(j.append(b"x"), Err(JournalError::Unavailable)));
    // Probes fail while the disk does.
    tokio::time::sleep(PROBE_INTERVAL * 3).await;
    assert!(!j.healthy());

    j.inject_write_failures(false);
    wait_healthy(&j).await;
    // The failed record's lsn was not consumed.
    assert_eq!(append_range(&j, 4..=6).await, vec![Lsn(4), Lsn(5), Lsn(6)]);
    j.close().unwrap();

    let (report, replayed) = try_open(cfg(dir.path())).unwrap();
    assert_eq!(replayed, expected(1..=6));
    assert_eq!(report.torn_tail_bytes, 0, "the failed write was cut off");
}

#[tokio::test]
async fn when_truncation_fails_too_a_new_segment_supersedes_the_bad_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (j, ..) = open(cfg(dir.path()));
    append_range(&j, 1..=3).await;

    j.inject_truncate_failures(true);
    j.inject_write_failures(true);
    let failed = j.append(&payload(99)).unwrap().await;
    assert!(matches!(failed, Err(JournalError::Unavailable)));
    assert!(!j.healthy());
    j.inject_write_failures(false);
    wait_healthy(&j).await;
    j.inject_truncate_failures(false);

    assert_eq!(append_range(&j, 4..=5).await, vec![Lsn(4), Lsn(5)]);
    let segs = j.segments();
    assert_eq!(segs.len(), 2);
    assert!(segs[0].sealed);
    assert_eq!(segs[0].last_lsn, Some(Lsn(3)));
    assert_eq!(segs[1].first_lsn, Lsn(4));
    j.close().unwrap();

    // The half-written record is still in the first file; its successor's
    // header says where the valid part ends.
    let first = &segment_files(dir.path())[0];
    let garbage = fs::metadata(first).unwrap().len() - record_offset(1, 3);
    assert!(garbage > 0);
    let (report, replayed) = try_open(cfg(dir.path())).unwrap();
    assert_eq!(replayed, expected(1..=5));
    assert_eq!(report.torn_tail_bytes, garbage);
    assert_eq!(fs::metadata(first).unwrap().len(), record_offset(1, 3));
}

#[tokio::test]
async fn an_empty_segment_that_cannot_be_truncated_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (j, ..) = open(cfg(dir.path()));
    j.inject_truncate_failures(true);
    j.inject_write_failures(true);
    assert!(matches!(
        j.append(b"first").unwrap().await,
        Err(JournalError::Unavailable)
    ));
    j.inject_write_failures(false);
    wait_healthy(&j).await;
    j.inject_truncate_failures(false);
    assert_eq!(j.append(b"first").unwrap().await.unwrap(), Lsn(1));
    assert_eq!(j.segments().len(), 1);
    j.close().unwrap();
    let (report, replayed) = try_open(cfg(dir.path())).unwrap();
    assert_eq!(replayed, vec![(Lsn(1), b"first".to_vec())]);
    assert_eq!(report.torn_tail_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_get_distinct_increasing_lsns() {
    concurrent_appenders(FsyncMode::Batch, 16 * 1024).await;
}

/// With `fsync = "never"` the appenders write inline, four worker threads
/// at once, while the writer thread rotates 1 KiB segments behind them
/// (each past its size by what was appended meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inline_appenders_get_distinct_increasing_lsns_across_rotations() {
    let segments = concurrent_appenders(FsyncMode::Never, MIN_SEGMENT_BYTES).await;
    assert!(segments > 1, "{segments} segments");
}

/// 64 tasks append 50 records each; returns the segment files left.
async fn concurrent_appenders(fsync: FsyncMode, segment_bytes: u64) -> usize {
    const TASKS: u64 = 64;
    const PER_TASK: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.fsync = fsync;
    c.segment_bytes = segment_bytes;
    let (j, ..) = open(c.clone());
    let j = Arc::new(j);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let j = Arc::clone(&j);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for k in 0..PER_TASK {
                let body = format!("task {t} record {k}").into_bytes();
                let lsn = j.append(&body).unwrap().await.unwrap();
                mine.push((lsn, body));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0));
        all.extend(mine);
    }
    all.sort();
    let lsns: Vec<Lsn> = all.iter().map(|(lsn, _)| *lsn).collect();
    assert_eq!(lsns, (1..=TASKS * PER_TASK).map(Lsn).collect::<Vec<_>>());
    // Rotation keeps up: soon no segment is left past its size (with
    // inline appends the writer thread rotates behind them).
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    while j.segments().last().unwrap().bytes >= segment_bytes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let segments = j.segments();
    assert!(segments.last().unwrap().bytes < segment_bytes, "{fsync:?}");
    assert!(segments[..segments.len() - 1].iter().all(|s| s.sealed));
    let j = Arc::try_unwrap(j).expect("every task is done");
    j.close().unwrap();

    let (_, replayed) = try_open(c).unwrap();
    assert_eq!(replayed, all, "{fsync:?}");
    segment_files(dir.path()).len()
}

#[tokio::test]
async fn with_fsync_never_an_append_is_written_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.fsync = FsyncMode::Never;
    let (j, ..) = open(c.clone());
    let active = segment_files(dir.path()).pop().unwrap();
    let before = fs::metadata(&active).unwrap().len();
    for i in 1..=3 {
        let mut durable = j.append(&payload(i)).unwrap();
        // Resolved at its first poll: no hand-off to the writer thread.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = std::pin::Pin::new(&mut durable).poll(&mut cx);
        assert!(
            matches!(polled, std::task::Poll::Ready(Ok(Lsn(l))) if l == i),
            "{polled:?}"
        );
        assert_eq!(j.durable_lsn(), Lsn(i));
    }
    let written: usize = (1..=3)
        .map(|i| RECORD_HEADER_BYTES + payload(i).len())
        .sum();
    assert_eq!(
        fs::metadata(&active).unwrap().len(),
        before + written as u64
    );
    j.close().unwrap();
    let (_, replayed) = try_open(c).unwrap();
    assert_eq!(replayed, expected(1..=3));
}

/// As root: a real ENOSPC on a 1 MiB tmpfs, then space comes back.
#[tokio::test]
async fn disk_full_on_tmpfs_fails_fast_then_recovers_by_itself() {
    let Some(mount) = TmpfsMount::new() else {
        return;
    };
    let filler = mount.path.join("filler");
    fs::write(&filler, vec![1u8; 640 * 1024]).unwrap();
    let dir = mount.path.join("journal");
    let mut c = cfg(&dir);
    c.segment_bytes = 64 * 1024;
    let (j, ..) = open(c.clone());

    let record = vec![9u8; 4096];
    let mut acked = 0u64;
    let mut saw_unavailable = false;
    for _ in 0..1000 {
        match j.append(&record) {
            Ok(d) => match d.await {
                Ok(lsn) => {
                    acked += 1;
                    assert_eq!(lsn, Lsn(acked));
                }
                Err(JournalError::Unavailable) => {
                    saw_unavailable = true;
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            },
            Err(JournalError::Unavailable) => {
                saw_unavailable = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(saw_unavailable, "the tmpfs never filled up");
    assert!(acked > 0);
    assert!(!j.healthy());
    assert!(matches!(j.append(&record), Err(JournalError::Unavailable)));

    fs::remove_file(&filler).unwrap();
    wait_healthy(&j).await;
    assert_eq!(j.append(&record).unwrap().await.unwrap(), Lsn(acked + 1));
    j.close().unwrap();

    let (_, replayed) = try_open(c).unwrap();
    assert_eq!(replayed.len() as u64, acked + 1);
    assert!(replayed
        .iter()
        .enumerate()
        .all(|(i, (lsn, p))| *lsn == Lsn(i as u64 + 1) && *p == record));
}

/// A 1 MiB tmpfs mounted on a temporary directory, unmounted on drop.
struct TmpfsMount {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TmpfsMount {
    fn new() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(TmpfsMount { path, _dir: dir }),
            Ok(o) => {
                eprintln!(
                    "skipping the tmpfs ENOSPC test: mount failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping the tmpfs ENOSPC test: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        match std::process::Command::new("umount")
            .arg(&self.path)
            .status()
        {
            Ok(s) if s.success() => {}
            other => eprintln!("umount {} failed: {other:?}", self.path.display()),
        }
    }
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A journal opened on a runtime (so its dispatcher task lives there) that
/// the caller keeps but never drives again.
fn opened_on_a_runtime_left_idle(dir: &Path) -> (tokio::runtime::Runtime, FileJournal) {
    let opener = current_thread_runtime();
    let (j, _, _) = opener.block_on(async { open(cfg(dir)) });
    (opener, j)
}

/// The journal hands a batch's wakes to a task on the runtime it was
/// opened in. A journal opened on a runtime that is then never driven
/// again, and used from another one, must still answer: the writer thread
/// delivers wakes the dispatcher has not taken once they are 20 ms old.
#[test]
fn appends_awaited_on_another_runtime_resolve_when_the_opening_one_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (opener, j) = opened_on_a_runtime_left_idle(dir.path());
    let user = current_thread_runtime();
    let lsns = user.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), append_range(&j, 1..=5))
            .await
            .expect("every append resolved, none stranded with the idle dispatcher")
    });
    assert_eq!(lsns, (1..=5).map(Lsn).collect::<Vec<_>>());
    j.close().unwrap();
    drop(opener);
}

/// ... also while other records keep arriving (the writer is never idle):
/// an append awaited on another runtime resolves within half a second
/// while a background task appends every millisecond for five. (Measured
/// by the clock: a timeout's own wake-up would poll the append again and
/// find it resolved, hiding a stranded wake.)
#[test]
fn appends_resolve_with_an_idle_dispatcher_while_records_keep_arriving() {
    let dir = tempfile::tempdir().unwrap();
    let (opener, j) = opened_on_a_runtime_left_idle(dir.path());
    let j = Arc::new(j);
    let user = current_thread_runtime();
    user.block_on(async {
        let background = {
            let j = Arc::clone(&j);
            tokio::spawn(async move {
                for i in 0..5_000u64 {
                    drop(j.append(&payload(i)).expect("queued"));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let lsn = tokio::time::timeout(Duration::from_secs(10), j.append(b"awaited").unwrap())
            .await
            .expect("resolved")
            .expect("durable");
        assert!(lsn.0 >= 1);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "resolved after {took:?}: its wake waited for the idle dispatcher"
        );
        background.abort();
    });
    drop(user);
    Arc::into_inner(j)
        .expect("the only handle")
        .close()
        .unwrap();
    drop(opener);
}
