//! The bytes of a segment header and of a record frame (see the module
//! docs of `journal` for the layout). No I/O.

/// Bytes of a segment header.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes of framing in front of every payload.
pub(crate) const RECORD_HEADER_BYTES: usize = 24;

const MAGIC: [u8; 8] = *b"FPSJRNL\0";
const FORMAT_VERSION: u32 = 1;

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub first_lsn: u64,
    /// Valid bytes of the previous segment; 0 when unknown or none.
    pub prev_segment_bytes: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        out[24..32].copy_from_slice(&self.prev_segment_bytes.to_le_bytes());
        let crc = header_checksum(&out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8; SEGMENT_HEADER_BYTES]) -> Result<Self, &'static str> {
        if bytes[0..8] != MAGIC {
            return Err("bad segment magic");
        }
        if le_u32(bytes, 8) != FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        if le_u32(bytes, 12) != header_checksum(bytes) {
            return Err("segment header checksum mismatch");
        }
        Ok(SegmentHeader {
            first_lsn: le_u64(bytes, 16),
            prev_segment_bytes: le_u64(bytes, 24),
        })
    }
}

fn header_checksum(bytes: &[u8; SEGMENT_HEADER_BYTES]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[0..12]);
    h.update(&bytes[16..32]);
    h.finalize()
}

/// Append one framed record to `buf`. The caller bounds `payload` by
/// `MAX_RECORD_BYTES`, so its length fits the u32 field.
pub(crate) fn encode_record(buf: &mut Vec<u8>, lsn: u64, unix_ms: u64, payload: &[u8]) {
    let start = buf.len();
    // MAX_RECORD_BYTES (64 KiB) < u32::MAX: the caller checked the length.
    let len = payload.len() as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(&unix_ms.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The fixed part of a record frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub len: u32,
    pub crc: u32,
    pub lsn: u64,
    pub unix_ms: u64,
}

impl RecordHeader {
    pub(crate) fn decode(bytes: &[u8; RECORD_HEADER_BYTES]) -> Self {
        RecordHeader {
            len: le_u32(bytes, 0),
            crc: le_u32(bytes, 4),
            lsn: le_u64(bytes, 8),
            unix_ms: le_u64(bytes, 16),
        }
    }

    /// Whether `payload` (and this header's lsn and time) match the checksum.
    pub(crate) fn verifies(&self, payload: &[u8]) -> bool {
        let mut h = crc32fast::Hasher::new();
        h.update(&self.lsn.to_le_bytes());
        h.update(&self.unix_ms.to_le_bytes());
        h.update(payload);
        h.finalize() == self.crc
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = SegmentHeader {
            first_lsn: 77,
            prev_segment_bytes: 4096,
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        for i in 0..SEGMENT_HEADER_BYTES {
            let mut bad = bytes;
            bad[i] ^= 0x01;
            assert!(SegmentHeader::decode(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn record_round_trips_and_detects_flips() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 9, 1_700_000_000_000, b"hello");
        assert_eq!(buf.len(), RECORD_HEADER_BYTES + 5);
        let mut head = [0u8; RECORD_HEADER_BYTES];
        head.copy_from_slice(&buf[..RECORD_HEADER_BYTES]);
        let h = RecordHeader::decode(&head);
        assert_eq!((h.len, h.lsn, h.unix_ms), (5, 9, 1_700_000_000_000));
        assert!(h.verifies(&buf[RECORD_HEADER_BYTES..]));
        // Every bit past the length field is covered by the checksum.
        for i in 4..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x80;
            head.copy_from_slice(&bad[..RECORD_HEADER_BYTES]);
            let h = RecordHeader::decode(&head);
            assert!(!h.verifies(&bad[RECORD_HEADER_BYTES..]), "flip at {i}");
        }
    }

    #[test]
    fn empty_payload_is_a_valid_record() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, 0, b"");
        let mut head = [0u8; RECORD_HEADER_BYTES];
        head.copy_from_slice(&buf);
        assert!(RecordHeader::decode(&head).verifies(b""));
        // An all-zero header never verifies, so zero-filled tails are torn.
        assert!(!RecordHeader::decode(&[0; RECORD_HEADER_BYTES]).verifies(b""));
    }
}
