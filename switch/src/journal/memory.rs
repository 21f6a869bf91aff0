//! [`MemoryJournal`]: the [`Journal`] semantics without a disk, for unit
//! tests and simulations.

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{
    unix_ms_now, Durable, Journal, JournalError, Lsn, SegmentInfo, MAX_RECORD_BYTES,
    SEGMENT_HEADER_BYTES,
};

/// In-memory journal: records kept in a Vec, one never-sealed segment,
/// appends durable at once. [`set_failing`](MemoryJournal::set_failing)
/// makes appends fail with [`JournalError::Unavailable`] and the journal
/// unhealthy, as a failing disk would.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    records: Vec<(Lsn, u64, Vec<u8>)>,
    failing: bool,
}

impl MemoryJournal {
    /// An empty journal; the first append gets lsn 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// While `failing`, appends fail with `Unavailable` and `healthy()` is false.
    pub fn set_failing(&self, failing: bool) {
        self.state().failing = failing;
    }

    /// Every record appended so far, in lsn order.
    pub fn records(&self) -> Vec<(Lsn, Vec<u8>)> {
        self.state()
            .records
            .iter()
            .map(|(lsn, _, payload)| (*lsn, payload.clone()))
            .collect()
    }

    /// Call `replay` with every record, as
    /// [`FileJournal::open`](super::FileJournal::open) would after a restart.
    pub fn replay(&self, replay: &mut dyn FnMut(Lsn, u64, &[u8])) {
        for (lsn, unix_ms, payload) in &self.state().records {
            replay(*lsn, *unix_ms, payload);
        }
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // Every update is a push or a flag store: a panic elsewhere cannot
        // leave the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Journal for MemoryJournal {
    fn append(&self, record: &[u8]) -> Result<Durable, JournalError> {
        if record.len() > MAX_RECORD_BYTES {
            return Err(JournalError::TooLarge {
                bytes: record.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        let mut state = self.state();
        if state.failing {
            return Err(JournalError::Unavailable);
        }
        let lsn = Lsn(state.records.len() as u64 + 1);
        state.records.push((lsn, unix_ms_now(), record.to_vec()));
        Ok(Durable::ready(Ok(lsn)))
    }

    fn healthy(&self) -> bool {
        !self.state().failing
    }

    fn segments(&self) -> Vec<SegmentInfo> {
        let state = self.state();
        let bytes = state
            .records
            .iter()
            .map(|(_, _, p)| (super::RECORD_HEADER_BYTES + p.len()) as u64)
            .sum::<u64>()
            + SEGMENT_HEADER_BYTES as u64;
        vec![SegmentInfo {
            first_lsn: Lsn(1),
            last_lsn: state.records.last().map(|(lsn, _, _)| *lsn),
            bytes,
            newest_unix_ms: state.records.last().map(|(_, ms, _)| *ms),
            sealed: false,
        }]
    }

    fn remove_segments_before(&self, _lsn: Lsn) -> Result<usize, JournalError> {
        // The only segment is the active one, which is never removed.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_get_increasing_lsns_and_read_back() {
        let j = MemoryJournal::new();
        assert_eq!(j.append(b"a").unwrap().await.unwrap(), Lsn(1));
        assert_eq!(j.append(b"b").unwrap().await.unwrap(), Lsn(2));
        assert_eq!(
            j.records(),
            vec![(Lsn(1), b"a".to_vec()), (Lsn(2), b"b".to_vec())]
        );
        let segs = j.segments();
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].last_lsn, Some(Lsn(2)));
        assert_eq!(j.remove_segments_before(Lsn(100)).unwrap(), 0);
    }

    #[tokio::test]
    async fn failing_rejects_without_consuming_lsns() {
        let j = MemoryJournal::new();
        j.append(b"a").unwrap().await.unwrap();
        j.set_failing(true);
        assert!(!j.healthy());
        assert!(matches!(j.append(b"b"), Err(JournalError::Unavailable)));
        j.set_failing(false);
        assert!(j.healthy());
        assert_eq!(j.append(b"c").unwrap().await.unwrap(), Lsn(2));
        assert!(matches!(
            j.append(&vec![0; MAX_RECORD_BYTES + 1]),
            Err(JournalError::TooLarge { .. })
        ));
    }
}
