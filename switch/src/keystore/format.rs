//! The on-disk encoding of the key store: compact, versioned, and decoded
//! without ever panicking (corrupt bytes give [`KeyStoreError::Corrupt`]).
//!
//! Every multi-byte integer is big-endian. Text fields are the model
//! newtypes' canonical ASCII (`as_str`), re-parsed with their `parse` on the
//! way back, so a value that decodes is as well-formed as one the codecs made.
//!
//! **Entry key** (the key of the `keys` table), format 1:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | key format version, `1` |
//! | 2 | scope length `n`, 1..=[`MAX_SCOPE_LEN`] |
//! | n | scope: the client's certificate identity, UTF-8 |
//! | 1 | kind: `1` explicit (F123), `2` derived (F32, F7, F11, F37) |
//! | explicit: 1 + m | length `m` (1..=64) and the F123 characters |
//! | derived: 1 + a, 10, 6, 12 | F32 length `a` (1..=11) and digits, F7 `MMDDhhmmss`, F11 6 digits, F37 12 characters |
//!
//! **Entry value**, format 2 (format 1 had the same layout with a version 1
//! fingerprint; stores holding it are rebuilt from the journal, see
//! [`STORE_FORMAT`](super::STORE_FORMAT)):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | value format version, `2` |
//! | 8 | content fingerprint ([`FINGERPRINT_VERSION`] 2) |
//! | 8 | completed, Unix milliseconds |
//! | 8 | journal lsn of the final record |
//! | 2 | F39 response code |
//! | 1 | flags: bit 0 auth id, bit 1 settlement date, bit 2 reason, bit 3 bank reference; other bits 0 |
//! | 6 | F38 auth id, if flagged |
//! | 8 | settlement date `YYYYMMDD`, if flagged |
//! | 1 + r | reason code length (1..=4) and characters, if flagged |
//! | 1 + e | bank reference length (1..=35) and characters, if flagged |
//!
//! **Expiry batch** (the `expiry` table, store format 3): one record per
//! at most [`MAX_EXPIRY_BATCH_ENTRIES`] keys of one commit, so that a commit
//! adds one index record per few thousand keys instead of one per key. Its
//! key is the oldest completion time in the batch (Unix milliseconds, 8
//! bytes) and the batch's sequence number (8 bytes), so a range scan from the
//! start visits batches holding the oldest keys first. Its value:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | batch format version, `1` |
//! | then, per entry, oldest first: | |
//! | 8 | completed, Unix milliseconds |
//! | 2 | entry key length `k` |
//! | k | entry key |
//!
//! **Legacy expiry index** (the `by_time` table of store format 2, drained
//! by expiry and no longer written): completed Unix milliseconds (8 bytes)
//! followed by the entry key.
//!
//! A new layout gets a new version byte; decoders refuse versions they do
//! not know rather than guess.

use fps_codecs::model::{
    AuthId, EndToEndId, IdempotencyKey, InstitutionId, ReasonCode, ResponseCode, Rrn,
    SettlementDate, Stan, TransmissionDateTime,
};
use fps_routing::idempotency::{
    ClientScope, Fingerprint, Outcome, RequestKey, StoredKey, FINGERPRINT_VERSION, MAX_SCOPE_LEN,
};

use super::KeyStoreError;

/// Version byte that starts every entry key.
pub const KEY_FORMAT: u8 = 1;
/// Version byte that starts every entry value; it names the fingerprint
/// function too, so the two move together.
pub const VALUE_FORMAT: u8 = 2;
const _: () = assert!(VALUE_FORMAT == FINGERPRINT_VERSION);
/// Longest encoded entry key: version, scope, kind and the longest key.
pub const MAX_KEY_BYTES: usize = 1 + 2 + MAX_SCOPE_LEN + 1 + 1 + IdempotencyKey::MAX_LEN;
/// Length of the fixed part of a value (everything before the optional fields).
const VALUE_FIXED_BYTES: usize = 1 + 8 + 8 + 8 + 2 + 1;

const KIND_EXPLICIT: u8 = 1;
const KIND_DERIVED: u8 = 2;

const FLAG_AUTH_ID: u8 = 1;
const FLAG_SETTLEMENT_DATE: u8 = 1 << 1;
const FLAG_REASON: u8 = 1 << 2;
const FLAG_BANK_REFERENCE: u8 = 1 << 3;
const KNOWN_FLAGS: u8 = FLAG_AUTH_ID | FLAG_SETTLEMENT_DATE | FLAG_REASON | FLAG_BANK_REFERENCE;

// The derived key's fixed-width fields, in the order they are written.
const F7_LEN: usize = 10;
const F11_LEN: usize = 6;
const F37_LEN: usize = 12;
const AUTH_ID_LEN: usize = 6;
const SETTLEMENT_DATE_LEN: usize = 8;

/// A decoded entry value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredValue {
    /// Fingerprint and outcome, as the idempotency index wants them.
    pub stored: StoredKey,
    /// When the key completed, Unix milliseconds.
    pub completed_unix_ms: u64,
    /// Journal lsn of the key's final record.
    pub lsn: u64,
}

/// Append the entry key of (`scope`, `key`) to `out`.
pub fn encode_key(scope: &ClientScope, key: &RequestKey, out: &mut Vec<u8>) {
    let scope = scope.as_str().as_bytes();
    out.push(KEY_FORMAT);
    // `ClientScope::new` bounds the scope to MAX_SCOPE_LEN (256) bytes.
    out.extend_from_slice(&u16::try_from(scope.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(scope);
    match key {
        RequestKey::Explicit(k) => {
            out.push(KIND_EXPLICIT);
            push_short(out, k.as_str().as_bytes());
        }
        RequestKey::Derived {
            acquirer,
            transmitted_at,
            stan,
            rrn,
        } => {
            out.push(KIND_DERIVED);
            push_short(out, acquirer.as_str().as_bytes());
            out.extend_from_slice(transmitted_at.as_bytes());
            out.extend_from_slice(&stan.to_digits());
            out.extend_from_slice(rrn.as_str().as_bytes());
        }
    }
}

/// Decode an entry key back into its scope and request key.
pub fn decode_key(bytes: &[u8]) -> Result<(ClientScope, RequestKey), KeyStoreError> {
    let mut r = Reader::new(bytes);
    if r.u8()? != KEY_FORMAT {
        return Err(KeyStoreError::Corrupt("unknown key format version"));
    }
    let scope_len = usize::from(r.u16()?);
    let scope = std::str::from_utf8(r.take(scope_len)?)
        .map_err(|_| KeyStoreError::Corrupt("scope is not UTF-8"))?;
    let scope = ClientScope::new(scope).map_err(|_| KeyStoreError::Corrupt("bad scope length"))?;
    let key = match r.u8()? {
        KIND_EXPLICIT => RequestKey::Explicit(
            IdempotencyKey::parse(r.short()?).map_err(|_| corrupt("bad F123 key"))?,
        ),
        KIND_DERIVED => RequestKey::Derived {
            acquirer: InstitutionId::parse(r.short()?).map_err(|_| corrupt("bad F32"))?,
            transmitted_at: TransmissionDateTime::parse(r.take(F7_LEN)?)
                .map_err(|_| corrupt("bad F7"))?,
            stan: Stan::parse(r.take(F11_LEN)?).map_err(|_| corrupt("bad F11"))?,
            rrn: Rrn::parse(r.take(F37_LEN)?).map_err(|_| corrupt("bad F37"))?,
        },
        _ => return Err(corrupt("unknown key kind")),
    };
    r.finish()?;
    Ok((scope, key))
}

/// Append the entry value of a completed key to `out`.
pub fn encode_value(stored: &StoredKey, completed_unix_ms: u64, lsn: u64, out: &mut Vec<u8>) {
    let o = &stored.outcome;
    out.push(VALUE_FORMAT);
    out.extend_from_slice(&stored.fingerprint.0.to_be_bytes());
    out.extend_from_slice(&completed_unix_ms.to_be_bytes());
    out.extend_from_slice(&lsn.to_be_bytes());
    out.extend_from_slice(o.response_code.as_bytes());
    let mut flags = 0;
    if o.auth_id.is_some() {
        flags |= FLAG_AUTH_ID;
    }
    if o.settlement_date.is_some() {
        flags |= FLAG_SETTLEMENT_DATE;
    }
    if o.reason.is_some() {
        flags |= FLAG_REASON;
    }
    if o.bank_reference.is_some() {
        flags |= FLAG_BANK_REFERENCE;
    }
    out.push(flags);
    if let Some(a) = &o.auth_id {
        out.extend_from_slice(a.as_str().as_bytes());
    }
    if let Some(d) = &o.settlement_date {
        out.extend_from_slice(d.as_bytes());
    }
    if let Some(r) = &o.reason {
        push_short(out, r.as_str().as_bytes());
    }
    if let Some(e) = &o.bank_reference {
        push_short(out, e.as_str().as_bytes());
    }
}

/// Decode an entry value.
pub fn decode_value(bytes: &[u8]) -> Result<StoredValue, KeyStoreError> {
    let mut r = Reader::new(bytes);
    if r.u8()? != VALUE_FORMAT {
        return Err(corrupt("unknown value format version"));
    }
    let fingerprint = Fingerprint(r.u64()?);
    let completed_unix_ms = r.u64()?;
    let lsn = r.u64()?;
    let response_code = ResponseCode::parse(r.take(2)?).map_err(|_| corrupt("bad F39"))?;
    let flags = r.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(corrupt("unknown value flags"));
    }
    let mut outcome = Outcome::new(response_code);
    if flags & FLAG_AUTH_ID != 0 {
        outcome.auth_id =
            Some(AuthId::parse(r.take(AUTH_ID_LEN)?).map_err(|_| corrupt("bad F38"))?);
    }
    if flags & FLAG_SETTLEMENT_DATE != 0 {
        outcome.settlement_date = Some(
            SettlementDate::parse(r.take(SETTLEMENT_DATE_LEN)?)
                .map_err(|_| corrupt("bad settlement date"))?,
        );
    }
    if flags & FLAG_REASON != 0 {
        outcome.reason =
            Some(ReasonCode::parse(r.short()?).map_err(|_| corrupt("bad reason code"))?);
    }
    if flags & FLAG_BANK_REFERENCE != 0 {
        outcome.bank_reference =
            Some(EndToEndId::parse(r.short()?).map_err(|_| corrupt("bad bank reference"))?);
    }
    r.finish()?;
    Ok(StoredValue {
        stored: StoredKey {
            fingerprint,
            outcome,
        },
        completed_unix_ms,
        lsn,
    })
}

/// The completion time of an encoded value, read without decoding the rest
/// (the writer and `expire` need only this).
pub fn completed_unix_ms_of(value: &[u8]) -> Result<u64, KeyStoreError> {
    let mut r = Reader::new(value);
    if r.u8()? != VALUE_FORMAT {
        return Err(corrupt("unknown value format version"));
    }
    r.take(8)?;
    r.u64()
}

/// Append the expiry-index key of an entry: completion time, then entry key.
pub fn encode_time_key(completed_unix_ms: u64, entry_key: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&completed_unix_ms.to_be_bytes());
    out.extend_from_slice(entry_key);
}

/// Split an expiry-index key into its completion time and entry key.
pub fn split_time_key(time_key: &[u8]) -> Result<(u64, &[u8]), KeyStoreError> {
    let mut r = Reader::new(time_key);
    let t = r.u64()?;
    Ok((t, r.rest()))
}

/// Version byte that starts every expiry batch.
pub const EXPIRY_BATCH_FORMAT: u8 = 1;
/// Most entries in one expiry batch: bounds the record a commit writes and
/// the part of it an expiry rewrites (a few hundred KB).
pub const MAX_EXPIRY_BATCH_ENTRIES: usize = 4096;
/// Bytes of an expiry batch's key.
pub const EXPIRY_BATCH_KEY_BYTES: usize = 16;

/// The key of an expiry batch: its oldest completion time, then its
/// sequence number.
pub fn expiry_batch_key(oldest_unix_ms: u64, seq: u64) -> [u8; EXPIRY_BATCH_KEY_BYTES] {
    let mut key = [0u8; EXPIRY_BATCH_KEY_BYTES];
    key[..8].copy_from_slice(&oldest_unix_ms.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Split an expiry batch's key into its oldest completion time and sequence
/// number.
pub fn split_expiry_batch_key(key: &[u8]) -> Result<(u64, u64), KeyStoreError> {
    let mut r = Reader::new(key);
    let oldest = r.u64()?;
    let seq = r.u64()?;
    r.finish()?;
    Ok((oldest, seq))
}

/// Start an expiry batch in `out` (cleared first).
pub fn start_expiry_batch(out: &mut Vec<u8>) {
    out.clear();
    out.push(EXPIRY_BATCH_FORMAT);
}

/// Append one entry to an expiry batch. Entries go in oldest first.
pub fn push_expiry_entry(completed_unix_ms: u64, entry_key: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&completed_unix_ms.to_be_bytes());
    // Entry keys are at most MAX_KEY_BYTES (a few hundred bytes).
    out.extend_from_slice(
        &u16::try_from(entry_key.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(entry_key);
}

/// One entry of an expiry batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryEntry<'a> {
    /// When the key's transaction completed, Unix milliseconds.
    pub completed_unix_ms: u64,
    /// The entry key (of the `keys` table).
    pub entry_key: &'a [u8],
    /// Offset of this entry in the batch: `[version] ++ batch[start..]` is
    /// the batch without the entries before it.
    pub start: usize,
}

/// The entries of an expiry batch, oldest first; a damaged batch ends with
/// `Corrupt` (and nothing after it).
pub fn expiry_entries(
    batch: &[u8],
) -> Result<impl Iterator<Item = Result<ExpiryEntry<'_>, KeyStoreError>>, KeyStoreError> {
    let mut r = Reader::new(batch);
    if r.u8()? != EXPIRY_BATCH_FORMAT {
        return Err(corrupt("unknown expiry batch format version"));
    }
    let mut failed = false;
    Ok(std::iter::from_fn(move || {
        if failed || r.buf.is_empty() {
            return None;
        }
        let start = batch.len() - r.buf.len();
        let entry = (|| {
            let completed_unix_ms = r.u64()?;
            let len = usize::from(r.u16()?);
            let entry_key = r.take(len)?;
            Ok(ExpiryEntry {
                completed_unix_ms,
                entry_key,
                start,
            })
        })();
        failed = entry.is_err();
        Some(entry)
    }))
}

/// Encoded value length for a record with no optional fields (for sizing).
pub const MIN_VALUE_BYTES: usize = VALUE_FIXED_BYTES;

fn corrupt(what: &'static str) -> KeyStoreError {
    KeyStoreError::Corrupt(what)
}

/// A length byte and the bytes; every field written this way is at most 64
/// bytes (F123), so the length always fits.
fn push_short(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(bytes);
}

/// A bounds-checked cursor: every read past the end is `Corrupt`.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], KeyStoreError> {
        if self.buf.len() < n {
            return Err(corrupt("truncated record"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, KeyStoreError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, KeyStoreError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, KeyStoreError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn short(&mut self) -> Result<&'a [u8], KeyStoreError> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn finish(&self) -> Result<(), KeyStoreError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(corrupt("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derived() -> RequestKey {
        RequestKey::Derived {
            acquirer: InstitutionId::parse(b"12345678901").unwrap(),
            transmitted_at: TransmissionDateTime::parse(b"1123235959").unwrap(),
            stan: Stan::new(42).unwrap(),
            rrn: Rrn::parse(b"ABC123456789").unwrap(),
        }
    }

    fn full_value() -> StoredKey {
        StoredKey {
            fingerprint: Fingerprint(0xdead_beef_0123_4567),
            outcome: Outcome {
                response_code: ResponseCode::APPROVED,
                auth_id: Some(AuthId::parse(b"A1B2C3").unwrap()),
                settlement_date: Some(SettlementDate::parse(b"20261123").unwrap()),
                reason: Some(ReasonCode::parse(b"AC01").unwrap()),
                bank_reference: Some(EndToEndId::parse(b"E2E-REF-0001").unwrap()),
            },
        }
    }

    #[test]
    fn keys_round_trip() {
        let scope = ClientScope::new("CN=gateway-1").unwrap();
        for key in [
            RequestKey::Explicit(IdempotencyKey::parse(b"order-77/retry").unwrap()),
            derived(),
        ] {
            let mut buf = Vec::new();
            encode_key(&scope, &key, &mut buf);
            assert!(buf.len() <= MAX_KEY_BYTES);
            assert_eq!(decode_key(&buf).unwrap(), (scope.clone(), key));
        }
    }

    #[test]
    fn values_round_trip() {
        let minimal = StoredKey {
            fingerprint: Fingerprint(7),
            outcome: Outcome::new(ResponseCode::LATE),
        };
        for stored in [full_value(), minimal] {
            let mut buf = Vec::new();
            encode_value(&stored, 1_700_000_000_123, 99, &mut buf);
            let v = decode_value(&buf).unwrap();
            assert_eq!(v.stored, stored);
            assert_eq!((v.completed_unix_ms, v.lsn), (1_700_000_000_123, 99));
            assert_eq!(completed_unix_ms_of(&buf).unwrap(), 1_700_000_000_123);
        }
    }

    #[test]
    fn time_keys_sort_by_time() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        encode_time_key(255, b"\x01zzz", &mut a);
        encode_time_key(256, b"\x01aaa", &mut b);
        assert!(a < b);
        assert_eq!(split_time_key(&b).unwrap(), (256, &b"\x01aaa"[..]));
        assert!(split_time_key(b"short").is_err());
    }

    /// Every truncation and every single-byte change of a valid record
    /// decodes to a value or `Corrupt`, never a panic; plus seeded noise.
    #[test]
    fn corrupt_bytes_never_panic() {
        let scope = ClientScope::new("CN=gateway-1").unwrap();
        let mut key = Vec::new();
        encode_key(&scope, &derived(), &mut key);
        let mut value = Vec::new();
        encode_value(&full_value(), 5, 6, &mut value);
        for good in [&key, &value] {
            for cut in 0..good.len() {
                let _ = decode_key(&good[..cut]);
                assert!(decode_value(&good[..cut]).is_err() || cut == good.len());
            }
            for i in 0..good.len() {
                for b in [0u8, 1, 2, 0x7f, 0x80, 0xff] {
                    let mut bad = good.clone();
                    bad[i] = b;
                    let _ = decode_key(&bad);
                    let _ = decode_value(&bad);
                    let _ = completed_unix_ms_of(&bad);
                }
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 96) as usize;
            let noise: Vec<u8> = (0..len)
                .map(|i| (x.rotate_left(i as u32 % 64) as u8) ^ (i as u8))
                .collect();
            let _ = decode_key(&noise);
            let _ = decode_value(&noise);
        }
        assert!(matches!(
            decode_value(&[]),
            Err(KeyStoreError::Corrupt("truncated record"))
        ));
    }

    #[test]
    fn expiry_batches_round_trip_and_refuse_damage() {
        let key = expiry_batch_key(1_700_000_000_123, 42);
        assert_eq!(
            split_expiry_batch_key(&key).unwrap(),
            (1_700_000_000_123, 42)
        );
        assert!(split_expiry_batch_key(&key[..15]).is_err());
        assert!(split_expiry_batch_key(&[0u8; 17]).is_err());
        // Keys sort by time, then sequence number.
        assert!(expiry_batch_key(1, u64::MAX) < expiry_batch_key(2, 0));
        assert!(expiry_batch_key(256, 0) > expiry_batch_key(255, u64::MAX));

        let mut batch = Vec::new();
        start_expiry_batch(&mut batch);
        let entries: [(u64, &[u8]); 3] = [(5, b"first"), (5, b""), (9, &[0xff; 300])];
        for (t, k) in entries {
            push_expiry_entry(t, k, &mut batch);
        }
        let got: Vec<ExpiryEntry<'_>> = expiry_entries(&batch)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got.len(), 3);
        for (e, (t, k)) in got.iter().zip(entries) {
            assert_eq!((e.completed_unix_ms, e.entry_key), (t, k));
        }
        // The batch without its first entry, as expiry rewrites it.
        let mut rest = Vec::new();
        start_expiry_batch(&mut rest);
        rest.extend_from_slice(&batch[got[1].start..]);
        let tail: Vec<u64> = expiry_entries(&rest)
            .unwrap()
            .map(|e| e.unwrap().completed_unix_ms)
            .collect();
        assert_eq!(tail, [5, 9]);

        // Every truncation ends in one Corrupt (or is a shorter valid batch),
        // never a panic; an unknown version is refused.
        for cut in 0..batch.len() {
            match expiry_entries(&batch[..cut]) {
                Err(_) => assert_eq!(cut, 0),
                Ok(it) => {
                    let items: Vec<_> = it.collect();
                    let errors = items.iter().filter(|e| e.is_err()).count();
                    assert!(errors <= 1);
                    if errors == 1 {
                        assert!(items.last().unwrap().is_err(), "nothing after the damage");
                    }
                }
            }
        }
        batch[0] = 2;
        assert!(expiry_entries(&batch).is_err());
    }
}
