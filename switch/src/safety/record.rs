//! The switch's journal records: one per state change of a transaction.
//!
//! The journal ([`crate::journal`]) stores opaque, checksummed payloads;
//! this module gives them meaning. Every record starts with a format
//! version byte, a kind byte and the switch's transaction id (`u64` LE).
//!
//! | kind | record | body |
//! |---|---|---|
//! | 1 | `Received` | client scope (u8 len + UTF-8), upstream request in the canonical ISO 8583 encoding (u16 len + bytes) |
//! | 2 | `Sent` | bank name (u8 len), outbound STAN (u32), outbound RRN (u64, 12 digits), the exact bytes sent, in the bank's codec (u32 len) |
//! | 3 | `Final` | F39 (2 bytes), then F38, settlement date, reason, bank reference (u8 len + text each, 0 = absent) |
//! | 4 | `Reversing` | bank name, the bytes of the original as sent to that bank |
//! | 5 | `ReversalClosed` | 1 acknowledged, 2 nothing to reverse |
//! | 6 | `Parked` | — |
//! | 7 | `Released` | — (nothing reached a bank; the key was released) |
//! | 8 | `IdsReserved` | bank name, last STAN (u32) and RRN (u64) reserved; transaction id 0 |
//! | 9 | `Dispatched` | a transaction's first attempt: the body of `Received` then the body of `Sent` |
//!
//! A transaction's first attempt is one `Dispatched` record (receipt and
//! send in one durable write); `Received` followed by `Sent` is what older
//! switches wrote for it, and still replays.
//!
//! Bank messages are stored in the bank's own codec because that is the
//! exact message the bank saw: a reversal after a restart is built from the
//! same identifiers. Decoding never panics: a short or malformed payload is
//! a [`RecordError`] naming what was wrong (never a value).

use fps_codecs::model::{AuthId, EndToEndId, ReasonCode, ResponseCode, SettlementDate};
use fps_routing::idempotency::Outcome;

/// Version byte of this encoding.
pub const RECORD_VERSION: u8 = 1;
/// Kind byte of a `Final` record.
const KIND_FINAL: u8 = 3;

/// The switch's own id of one upstream transaction (unique per journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub u64);

/// How a reversal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The bank acknowledged the reversal (or cancellation).
    Acknowledged,
    /// The original never executed: nothing was reversed.
    NothingToReverse,
}

/// One decoded record, borrowing its byte fields from the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// An upstream request was accepted for processing.
    Received {
        /// Transaction.
        txn: TxnId,
        /// Client certificate identity.
        scope: &'a str,
        /// The request, canonical ISO 8583 (no framing).
        request: &'a [u8],
    },
    /// `Received` and `Sent` of a transaction's first attempt in one
    /// record (durable before the write).
    Dispatched {
        /// Transaction.
        txn: TxnId,
        /// Client certificate identity.
        scope: &'a str,
        /// The request, canonical ISO 8583 (no framing).
        request: &'a [u8],
        /// Bank name (config).
        bank: &'a str,
        /// Outbound F11.
        stan: u32,
        /// Outbound F37 as a number.
        rrn: u64,
        /// The message in the bank's codec (no framing).
        wire: &'a [u8],
    },
    /// About to be written to a bank (durable before the write); a later
    /// attempt (fail-over) of a dispatched transaction.
    Sent {
        /// Transaction.
        txn: TxnId,
        /// Bank name (config).
        bank: &'a str,
        /// Outbound F11.
        stan: u32,
        /// Outbound F37 as a number.
        rrn: u64,
        /// The message in the bank's codec (no framing).
        wire: &'a [u8],
    },
    /// The final upstream answer (durable before it is written upstream).
    Final {
        /// Transaction.
        txn: TxnId,
        /// What the upstream was (or will be) told.
        outcome: Outcome,
    },
    /// Outcome unknown: a reversal is under way.
    Reversing {
        /// Transaction.
        txn: TxnId,
        /// Bank name.
        bank: &'a str,
        /// The original as sent to the bank.
        wire: &'a [u8],
    },
    /// The reversal is settled.
    ReversalClosed {
        /// Transaction.
        txn: TxnId,
        /// How.
        how: Closed,
    },
    /// Out of attempts: in the manual queue.
    Parked {
        /// Transaction.
        txn: TxnId,
    },
    /// Nothing reached a bank (unroutable, bank unavailable, refused by
    /// its codec): the key was released and the request answered.
    Released {
        /// Transaction.
        txn: TxnId,
    },
    /// Outbound ids of a bank reserved up to these values, before any of
    /// them is used (reversals and network messages are not journaled one
    /// by one): a restart resumes past them. Not about a transaction.
    IdsReserved {
        /// Bank name.
        bank: &'a str,
        /// Last STAN reserved.
        stan: u32,
        /// Last RRN reserved, as a number.
        rrn: u64,
    },
}

/// Why a payload is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("journal record: {0}")]
pub struct RecordError(pub &'static str);

impl Record<'_> {
    /// The transaction the record is about.
    pub fn txn(&self) -> TxnId {
        match self {
            Record::Received { txn, .. }
            | Record::Dispatched { txn, .. }
            | Record::Sent { txn, .. }
            | Record::Final { txn, .. }
            | Record::Reversing { txn, .. }
            | Record::ReversalClosed { txn, .. }
            | Record::Parked { txn }
            | Record::Released { txn } => *txn,
            Record::IdsReserved { .. } => TxnId(0),
        }
    }

    /// Append the encoding of this record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        out.push(RECORD_VERSION);
        let (kind, txn) = match self {
            Record::Received { txn, .. } => (1, *txn),
            Record::Sent { txn, .. } => (2, *txn),
            Record::Final { txn, .. } => (KIND_FINAL, *txn),
            Record::Reversing { txn, .. } => (4, *txn),
            Record::ReversalClosed { txn, .. } => (5, *txn),
            Record::Parked { txn } => (6, *txn),
            Record::Released { txn } => (7, *txn),
            Record::IdsReserved { .. } => (8, TxnId(0)),
            Record::Dispatched { txn, .. } => (9, *txn),
        };
        out.push(kind);
        out.extend_from_slice(&txn.0.to_le_bytes());
        match self {
            Record::Received { scope, request, .. } => put_received(out, scope, request)?,
            Record::Dispatched {
                scope,
                request,
                bank,
                stan,
                rrn,
                wire,
                ..
            } => {
                put_received(out, scope, request)?;
                put_sent(out, bank, *stan, *rrn, wire)?;
            }
            Record::Sent {
                bank,
                stan,
                rrn,
                wire,
                ..
            } => put_sent(out, bank, *stan, *rrn, wire)?,
            Record::Final { outcome, .. } => {
                out.extend_from_slice(outcome.response_code.as_bytes());
                put_opt(out, outcome.auth_id.as_ref().map(|v| v.as_str().as_bytes()));
                put_opt(
                    out,
                    outcome
                        .settlement_date
                        .as_ref()
                        .map(|v| v.as_bytes().as_slice()),
                );
                put_opt(out, outcome.reason.as_ref().map(|v| v.as_str().as_bytes()));
                put_opt(
                    out,
                    outcome
                        .bank_reference
                        .as_ref()
                        .map(|v| v.as_str().as_bytes()),
                );
            }
            Record::Reversing { bank, wire, .. } => {
                put_u8_len(out, bank.as_bytes(), "bank")?;
                put_u32_len(out, wire)?;
            }
            Record::ReversalClosed { how, .. } => out.push(match how {
                Closed::Acknowledged => 1,
                Closed::NothingToReverse => 2,
            }),
            Record::IdsReserved { bank, stan, rrn } => {
                put_u8_len(out, bank.as_bytes(), "bank")?;
                out.extend_from_slice(&stan.to_le_bytes());
                out.extend_from_slice(&rrn.to_le_bytes());
            }
            Record::Parked { .. } | Record::Released { .. } => {}
        }
        Ok(())
    }

    /// Bytes the encoding takes, give or take a few (to size its buffer).
    pub fn size_hint(&self) -> usize {
        const FIXED: usize = 64;
        FIXED
            + match self {
                Record::Received { scope, request, .. } => scope.len() + request.len(),
                Record::Dispatched {
                    scope,
                    request,
                    bank,
                    wire,
                    ..
                } => scope.len() + request.len() + bank.len() + wire.len(),
                Record::Sent { bank, wire, .. } | Record::Reversing { bank, wire, .. } => {
                    bank.len() + wire.len()
                }
                Record::Final { .. } => 64,
                Record::IdsReserved { bank, .. } => bank.len(),
                Record::ReversalClosed { .. } | Record::Parked { .. } | Record::Released { .. } => {
                    0
                }
            }
    }

    /// Whether `payload` is (the encoding of) a `Final` record, from its
    /// version and kind bytes alone.
    pub fn is_final(payload: &[u8]) -> bool {
        payload.get(..2) == Some(&[RECORD_VERSION, KIND_FINAL])
    }

    /// Decode one payload.
    pub fn decode(payload: &[u8]) -> Result<Record<'_>, RecordError> {
        let mut r = Reader(payload);
        if r.u8()? != RECORD_VERSION {
            return Err(RecordError("unknown format version"));
        }
        let kind = r.u8()?;
        let txn = TxnId(r.u64()?);
        let rec = match kind {
            1 => Record::Received {
                txn,
                scope: std::str::from_utf8(r.u8_len()?)
                    .map_err(|_| RecordError("scope not UTF-8"))?,
                request: r.u16_len()?,
            },
            2 => Record::Sent {
                txn,
                bank: bank_name(r.u8_len()?)?,
                stan: r.u32()?,
                rrn: r.u64()?,
                wire: r.u32_len()?,
            },
            KIND_FINAL => {
                let code = ResponseCode::parse(r.take(2)?)
                    .map_err(|_| RecordError("bad response code"))?;
                let mut outcome = Outcome::new(code);
                outcome.auth_id = r
                    .opt()?
                    .map(AuthId::parse)
                    .transpose()
                    .map_err(|_| RecordError("bad authorization id"))?;
                outcome.settlement_date = r
                    .opt()?
                    .map(SettlementDate::parse)
                    .transpose()
                    .map_err(|_| RecordError("bad settlement date"))?;
                outcome.reason = r
                    .opt()?
                    .map(ReasonCode::parse)
                    .transpose()
                    .map_err(|_| RecordError("bad reason code"))?;
                outcome.bank_reference = r
                    .opt()?
                    .map(EndToEndId::parse)
                    .transpose()
                    .map_err(|_| RecordError("bad bank reference"))?;
                Record::Final { txn, outcome }
            }
            4 => Record::Reversing {
                txn,
                bank: bank_name(r.u8_len()?)?,
                wire: r.u32_len()?,
            },
            5 => Record::ReversalClosed {
                txn,
                how: match r.u8()? {
                    1 => Closed::Acknowledged,
                    2 => Closed::NothingToReverse,
                    _ => return Err(RecordError("bad reversal result")),
                },
            },
            6 => Record::Parked { txn },
            7 => Record::Released { txn },
            8 => Record::IdsReserved {
                bank: bank_name(r.u8_len()?)?,
                stan: r.u32()?,
                rrn: r.u64()?,
            },
            9 => Record::Dispatched {
                txn,
                scope: std::str::from_utf8(r.u8_len()?)
                    .map_err(|_| RecordError("scope not UTF-8"))?,
                request: r.u16_len()?,
                bank: bank_name(r.u8_len()?)?,
                stan: r.u32()?,
                rrn: r.u64()?,
                wire: r.u32_len()?,
            },
            _ => return Err(RecordError("unknown record kind")),
        };
        if !r.0.is_empty() {
            return Err(RecordError("trailing bytes"));
        }
        Ok(rec)
    }
}

fn bank_name(b: &[u8]) -> Result<&str, RecordError> {
    std::str::from_utf8(b).map_err(|_| RecordError("bank name not UTF-8"))
}

/// The body of `Received` (and the first half of `Dispatched`).
fn put_received(out: &mut Vec<u8>, scope: &str, request: &[u8]) -> Result<(), RecordError> {
    put_u8_len(out, scope.as_bytes(), "scope")?;
    put_u16_len(out, request, "request")
}

/// The body of `Sent` (and the second half of `Dispatched`).
fn put_sent(
    out: &mut Vec<u8>,
    bank: &str,
    stan: u32,
    rrn: u64,
    wire: &[u8],
) -> Result<(), RecordError> {
    put_u8_len(out, bank.as_bytes(), "bank")?;
    out.extend_from_slice(&stan.to_le_bytes());
    out.extend_from_slice(&rrn.to_le_bytes());
    put_u32_len(out, wire)
}

fn put_u8_len(out: &mut Vec<u8>, v: &[u8], what: &'static str) -> Result<(), RecordError> {
    let len = u8::try_from(v.len()).map_err(|_| RecordError(what))?;
    out.push(len);
    out.extend_from_slice(v);
    Ok(())
}

fn put_u16_len(out: &mut Vec<u8>, v: &[u8], what: &'static str) -> Result<(), RecordError> {
    let len = u16::try_from(v.len()).map_err(|_| RecordError(what))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(v);
    Ok(())
}

fn put_u32_len(out: &mut Vec<u8>, v: &[u8]) -> Result<(), RecordError> {
    let len = u32::try_from(v.len()).map_err(|_| RecordError("message too large"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(v);
    Ok(())
}

/// Optional short text: length 0 means absent (every such field is ≥ 1 byte).
fn put_opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        // Every optional field is at most 35 bytes (its newtype's cap).
        Some(v) => {
            out.push(v.len() as u8);
            out.extend_from_slice(v);
        }
        None => out.push(0),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn u8_len(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u8()? as usize;
        self.take(n)
    }

    fn u16_len(&mut self) -> Result<&'a [u8], RecordError> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }

    fn u32_len(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn opt(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        let v = self.u8_len()?;
        Ok((!v.is_empty()).then_some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(rec: Record<'_>) {
        let mut out = Vec::new();
        rec.encode(&mut out).unwrap();
        assert_eq!(Record::decode(&out).unwrap(), rec);
        // The kind test agrees with the decoder, and the buffer size hint
        // holds the whole record (no regrowth while encoding).
        assert_eq!(Record::is_final(&out), matches!(rec, Record::Final { .. }));
        assert!(
            out.len() <= rec.size_hint(),
            "{} > {}",
            out.len(),
            rec.size_hint()
        );
        // Every strict prefix is refused, never a panic.
        for cut in 0..out.len() {
            assert!(Record::decode(&out[..cut]).is_err(), "prefix {cut}");
        }
    }

    #[test]
    fn every_kind_round_trips_and_prefixes_are_refused() {
        let txn = TxnId(42);
        round_trip(Record::Received {
            txn,
            scope: "CN=gateway",
            request: b"0200...",
        });
        round_trip(Record::Sent {
            txn,
            bank: "bank004",
            stan: 123456,
            rrn: 999_999_999_999,
            wire: &[0, 1, 2, 255],
        });
        round_trip(Record::Dispatched {
            txn,
            scope: "CN=gateway",
            request: b"0200...",
            bank: "bank004",
            stan: 654321,
            rrn: 1,
            wire: &[7; 300],
        });
        let mut outcome = Outcome::new(ResponseCode::APPROVED);
        outcome.auth_id = Some(AuthId::parse(b"A1B2C3").unwrap());
        outcome.settlement_date = Some(SettlementDate::parse(b"20261123").unwrap());
        outcome.reason = Some(ReasonCode::parse(b"AC01").unwrap());
        outcome.bank_reference = Some(EndToEndId::parse(b"REF-1").unwrap());
        round_trip(Record::Final { txn, outcome });
        round_trip(Record::Final {
            txn,
            outcome: Outcome::new(ResponseCode::LATE),
        });
        round_trip(Record::Reversing {
            txn,
            bank: "bank012",
            wire: b"<xml/>",
        });
        round_trip(Record::ReversalClosed {
            txn,
            how: Closed::NothingToReverse,
        });
        round_trip(Record::Parked { txn });
        round_trip(Record::Released { txn });
        round_trip(Record::IdsReserved {
            bank: "bank003",
            stan: 999_999,
            rrn: 1_000_000_000_000 - 1,
        });
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Record::decode(&[]).is_err());
        assert!(Record::decode(&[9, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Record::decode(&[1, 99, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut out = Vec::new();
        Record::Parked { txn: TxnId(1) }.encode(&mut out).unwrap();
        out.push(0);
        assert_eq!(Record::decode(&out), Err(RecordError("trailing bytes")));
    }
}
