//! Recovery: read every segment in order, replay valid records, cut torn
//! tails, refuse real corruption (rules in the `journal` module docs).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::format::{RecordHeader, SegmentHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::{
    parse_segment_file_name, JournalError, Lsn, SegmentInfo, MAX_RECORD_BYTES, MAX_SEGMENT_FILES,
};

/// Name of the file the writer probes the disk with; never a segment.
pub(crate) const PROBE_FILE_NAME: &str = "journal.probe";
/// Read buffer of the scan.
const SCAN_READ_BUFFER_BYTES: usize = 1024 * 1024;

/// The state of the directory after recovery.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Every remaining segment, oldest first; the last one is not sealed.
    pub segments: Vec<SegmentInfo>,
    pub records: u64,
    pub torn_tail_bytes: u64,
    pub next_lsn: u64,
    /// Valid bytes of the segment before the last one (0 if none).
    pub prev_sealed_bytes: u64,
}

struct SegmentFile {
    first_lsn: u64,
    path: PathBuf,
    name: String,
    len: u64,
    header: Option<SegmentHeader>,
}

/// Scan `dir` (which exists) and replay its records.
pub(crate) fn recover(
    dir: &Path,
    replay: &mut dyn FnMut(Lsn, u64, &[u8]),
) -> Result<Recovered, JournalError> {
    remove_if_exists(&dir.join(PROBE_FILE_NAME))?;
    let mut files = list_segments(dir)?;
    read_headers(&mut files)?;

    let mut out = Recovered {
        segments: Vec::with_capacity(files.len()),
        records: 0,
        torn_tail_bytes: 0,
        next_lsn: 1,
        prev_sealed_bytes: 0,
    };
    // A last segment without a verified header holds no record: a crash
    // hit while it was being created. Its name still says which lsn comes
    // next when it is the only segment (the older ones were compacted).
    let mut torn_first_lsn = None;
    let mut torn_last = None;
    if let Some(last) = files.last() {
        if last.header.is_none() {
            out.torn_tail_bytes += last.len;
            torn_first_lsn = Some(last.first_lsn);
            torn_last = Some(last.path.clone());
            files.pop();
        }
    }

    let mut payload = Vec::with_capacity(MAX_RECORD_BYTES);
    // Files are only changed once the whole directory checked out, so a
    // refusal to start leaves everything as found.
    let mut cuts = Vec::new();
    let count = files.len();
    for i in 0..count {
        let seg = &files[i];
        let is_last = i + 1 == count;
        let corrupt = |offset, reason| JournalError::Corrupt {
            segment: seg.name.clone(),
            offset,
            reason,
        };
        // read_headers verified every header but a last one, popped above.
        let Some(header) = seg.header else {
            return Err(corrupt(0, "missing segment header"));
        };
        if i > 0 {
            if header.first_lsn != out.next_lsn {
                return Err(corrupt(0, "lsn gap between segments"));
            }
            if header.prev_segment_bytes != 0 && header.prev_segment_bytes != out.prev_sealed_bytes
            {
                return Err(JournalError::Corrupt {
                    segment: files[i - 1].name.clone(),
                    offset: files[i - 1].len,
                    reason: "segment is shorter than its successor declares",
                });
            }
        }
        // A sealed segment ends where its successor's header says, when
        // the record boundary there is followed by the successor's first
        // lsn; past that are the leftovers of a failed write.
        let stop_at = files
            .get(i + 1)
            .and_then(|next| next.header)
            .filter(|next| next.prev_segment_bytes != 0)
            .map(|next| (next.prev_segment_bytes, next.first_lsn));
        let limit = seg.len;
        let scanned = scan_records(seg, header.first_lsn, limit, stop_at, &mut payload, replay)?;
        let good_end = match scanned.bad {
            None => scanned.end,
            Some(bad) => {
                if !is_last {
                    return Err(corrupt(bad.offset, bad.reason));
                }
                let torn = match bad.kind {
                    BadKind::Truncated => true,
                    BadKind::Damaged { extent_end } => {
                        extent_end == limit || zero_from(&seg.path, bad.offset, limit)?
                    }
                    BadKind::Wrong => false,
                };
                if !torn {
                    return Err(corrupt(bad.offset, bad.reason));
                }
                bad.offset
            }
        };
        if good_end < seg.len {
            out.torn_tail_bytes += seg.len - good_end;
            cuts.push((seg.path.clone(), good_end));
        }
        out.records += scanned.records;
        out.next_lsn = header.first_lsn + scanned.records;
        if !is_last {
            out.prev_sealed_bytes = good_end;
        }
        out.segments.push(SegmentInfo {
            first_lsn: Lsn(header.first_lsn),
            last_lsn: (scanned.records > 0).then(|| Lsn(out.next_lsn - 1)),
            bytes: good_end,
            newest_unix_ms: scanned.newest_unix_ms,
            sealed: !is_last,
        });
    }
    if count == 0 {
        out.next_lsn = torn_first_lsn.unwrap_or(1).max(1);
    }
    if let Some(path) = torn_last {
        remove_if_exists(&path)?;
    }
    for (path, len) in cuts {
        truncate(&path, len)?;
    }
    Ok(out)
}

fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    let entries = fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(first_lsn) = parse_segment_file_name(&name) else {
            continue;
        };
        if files.len() == MAX_SEGMENT_FILES {
            return Err(JournalError::Corrupt {
                segment: name,
                offset: 0,
                reason: "more than MAX_SEGMENT_FILES segment files",
            });
        }
        let path = entry.path();
        let len = entry
            .metadata()
            .map_err(|e| JournalError::io(&path, e))?
            .len();
        files.push(SegmentFile {
            first_lsn,
            path,
            name,
            len,
            header: None,
        });
    }
    files.sort_by_key(|f| f.first_lsn);
    Ok(files)
}

/// Verify every header. Only the last file may lack a valid one, and only
/// when it is no longer than a header (a torn creation).
fn read_headers(files: &mut [SegmentFile]) -> Result<(), JournalError> {
    let count = files.len();
    for (i, f) in files.iter_mut().enumerate() {
        let is_last = i + 1 == count;
        let corrupt = |reason| JournalError::Corrupt {
            segment: f.name.clone(),
            offset: 0,
            reason,
        };
        if f.len < SEGMENT_HEADER_BYTES as u64 {
            if is_last {
                continue;
            }
            return Err(corrupt("segment shorter than its header"));
        }
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        File::open(&f.path)
            .and_then(|mut file| file.read_exact(&mut bytes))
            .map_err(|e| JournalError::io(&f.path, e))?;
        match SegmentHeader::decode(&bytes) {
            Ok(h) if h.first_lsn != f.first_lsn => {
                return Err(corrupt("header lsn does not match the file name"))
            }
            Ok(h) => f.header = Some(h),
            Err(_) if is_last && f.len == SEGMENT_HEADER_BYTES as u64 => {}
            Err(reason) => return Err(corrupt(reason)),
        }
    }
    Ok(())
}

struct Scanned {
    /// Where the valid records end (when `bad` is None).
    end: u64,
    records: u64,
    newest_unix_ms: Option<u64>,
    bad: Option<BadRecord>,
}

struct BadRecord {
    offset: u64,
    reason: &'static str,
    kind: BadKind,
}

enum BadKind {
    /// The data ends inside the record: torn when in the last segment.
    Truncated,
    /// The record does not verify; `extent_end` is where its declared
    /// length ends. Torn only when nothing but zeros follows.
    Damaged { extent_end: u64 },
    /// A record that verifies but is not the one expected: never torn.
    Wrong,
}

fn scan_records(
    seg: &SegmentFile,
    first_lsn: u64,
    limit: u64,
    stop_at: Option<(u64, u64)>,
    payload: &mut Vec<u8>,
    replay: &mut dyn FnMut(Lsn, u64, &[u8]),
) -> Result<Scanned, JournalError> {
    let io_err = |e| JournalError::io(&seg.path, e);
    let mut file = File::open(&seg.path).map_err(io_err)?;
    file.seek(SeekFrom::Start(SEGMENT_HEADER_BYTES as u64))
        .map_err(io_err)?;
    let mut reader = BufReader::with_capacity(SCAN_READ_BUFFER_BYTES, file);
    let mut out = Scanned {
        end: limit,
        records: 0,
        newest_unix_ms: None,
        bad: None,
    };
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let mut expected_lsn = first_lsn;
    // Bounded: every pass consumes at least RECORD_HEADER_BYTES of `limit`.
    while offset < limit {
        if stop_at == Some((offset, expected_lsn)) {
            out.end = offset;
            break;
        }
        let bad = |reason, kind| {
            Some(BadRecord {
                offset,
                reason,
                kind,
            })
        };
        if limit - offset < RECORD_HEADER_BYTES as u64 {
            out.bad = bad("partial record header", BadKind::Truncated);
            break;
        }
        let mut head = [0u8; RECORD_HEADER_BYTES];
        reader.read_exact(&mut head).map_err(io_err)?;
        let h = RecordHeader::decode(&head);
        let len = h.len as usize;
        let extent_end = offset + (RECORD_HEADER_BYTES + len) as u64;
        if len > MAX_RECORD_BYTES {
            let kind = BadKind::Damaged {
                extent_end: u64::MAX,
            };
            out.bad = bad("record length out of range", kind);
            break;
        }
        if extent_end > limit {
            out.bad = bad("partial record payload", BadKind::Truncated);
            break;
        }
        payload.resize(len, 0);
        reader.read_exact(payload).map_err(io_err)?;
        if !h.verifies(payload) {
            out.bad = bad("record checksum mismatch", BadKind::Damaged { extent_end });
            break;
        }
        if h.lsn != expected_lsn {
            out.bad = bad("record lsn out of sequence", BadKind::Wrong);
            break;
        }
        replay(Lsn(h.lsn), h.unix_ms, payload);
        out.records += 1;
        out.newest_unix_ms = Some(h.unix_ms);
        expected_lsn += 1;
        offset = extent_end;
    }
    Ok(out)
}

/// Whether every byte of `path` in `from..to` is zero.
fn zero_from(path: &Path, from: u64, to: u64) -> Result<bool, JournalError> {
    let io_err = |e| JournalError::io(path, e);
    let mut file = File::open(path).map_err(io_err)?;
    file.seek(SeekFrom::Start(from)).map_err(io_err)?;
    let mut reader = file.take(to.saturating_sub(from));
    let mut chunk = vec![0u8; 64 * 1024];
    // Bounded by `to - from` bytes.
    loop {
        let n = reader.read(&mut chunk).map_err(io_err)?;
        if n == 0 {
            return Ok(true);
        }
        if chunk[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(len)?;
            f.sync_all()
        })
        .map_err(|e| JournalError::io(path, e))
}

fn remove_if_exists(path: &Path) -> Result<(), JournalError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(JournalError::io(path, e)),
        _ => Ok(()),
    }
}
