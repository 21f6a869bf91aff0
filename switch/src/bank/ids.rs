//! The switch's own outbound identifiers per bank: STAN (F11), RRN (F37)
//! and message id (ISO 20022 / JSON). Upstream ids never go to a bank, so
//! two gateways' STANs cannot collide on a bank link.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use fps_codecs::model::{write_padded, BankCode, MessageId, Rrn, Stan};

/// Counters of one bank's outbound identifiers.
///
/// Seeded from the clock at start, then moved past the last values the
/// journal recorded ([`OutboundIds::resume`]), so a restart never reuses a
/// STAN or RRN the bank has seen recently.
///
/// Not every message is journaled (reversal attempts, sign-on, echo), so
/// with a journal the ids are also *reserved* ahead of use in blocks of
/// [`RESERVE_BLOCK`]: [`OutboundIds::reservation_due`] says when the next
/// block should be journaled, [`OutboundIds::reserved`] records that it is
/// durable. The next block is asked for half a block before the last one
/// runs out, so ids never outrun a durable reservation in practice (the
/// journal commits in milliseconds; half a block lasts seconds at full
/// load); a restart resumes after the last reservation.
#[derive(Debug)]
pub struct OutboundIds {
    bank: BankCode,
    stan: AtomicU32,
    rrn: AtomicU64,
    seq: AtomicU64,
    boot_ms: u64,
    /// Raw STAN and RRN counter values reserved up to (0 = none yet).
    reserved_stan: AtomicU64,
    reserved_rrn: AtomicU64,
}

/// Ids reserved per journal record.
pub const RESERVE_BLOCK: u64 = 10_000;

/// RRNs are 12 digits.
const RRN_MODULUS: u64 = 1_000_000_000_000;

impl OutboundIds {
    /// Counters for `bank`, seeded from the wall clock.
    pub fn new(bank: BankCode) -> Self {
        let boot_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        OutboundIds {
            bank,
            stan: AtomicU32::new((boot_ms % 999_999) as u32),
            rrn: AtomicU64::new(boot_ms.wrapping_mul(1_000) % RRN_MODULUS),
            seq: AtomicU64::new(0),
            boot_ms,
            reserved_stan: AtomicU64::new(0),
            reserved_rrn: AtomicU64::new(0),
        }
    }

    /// When the next block should be reserved: the last STAN and RRN it
    /// covers (as [`OutboundIds::resume`] takes them), and the raw counter
    /// marks to pass to [`OutboundIds::reserved`] once it is durable.
    pub fn reservation_due(&self) -> Option<Reservation> {
        let stan = u64::from(self.stan.load(Ordering::Relaxed));
        let rrn = self.rrn.load(Ordering::Relaxed);
        let half = RESERVE_BLOCK / 2;
        let due = stan + half >= self.reserved_stan.load(Ordering::Relaxed)
            || rrn + half >= self.reserved_rrn.load(Ordering::Relaxed);
        due.then(|| {
            let stan_mark = stan + RESERVE_BLOCK;
            let rrn_mark = rrn + RESERVE_BLOCK;
            Reservation {
                // The counters hold the last value handed out minus one
                // (STAN) or the next value (RRN): resume(stan, rrn) moves
                // them to exactly these marks.
                last_stan: (stan_mark % u64::from(Stan::MAX)) as u32,
                last_rrn: (rrn_mark + RRN_MODULUS - 1) % RRN_MODULUS,
                stan_mark,
                rrn_mark,
            }
        })
    }

    /// The reservation `r` is durable.
    pub fn reserved(&self, r: &Reservation) {
        self.reserved_stan.fetch_max(r.stan_mark, Ordering::Relaxed);
        self.reserved_rrn.fetch_max(r.rrn_mark, Ordering::Relaxed);
    }

    /// The next STAN: 000001..=999999, wrapping, never 000000. The link
    /// refuses a STAN still in flight, so a wrap cannot duplicate a key.
    pub fn next_stan(&self) -> Stan {
        let n = self.stan.fetch_add(1, Ordering::Relaxed) % Stan::MAX + 1;
        // n is in 1..=999_999 by construction.
        Stan::new(n).unwrap_or_else(|_| Stan::new(1).expect("1 is a valid STAN"))
    }

    /// The next RRN: 12 digits from the start time and a sequence.
    pub fn next_rrn(&self) -> Rrn {
        let n = self.rrn.fetch_add(1, Ordering::Relaxed) % RRN_MODULUS;
        let mut text = [0u8; 12];
        write_padded(n, &mut text);
        Rrn::parse(&text).expect("12 digits are a valid RRN")
    }

    /// Continue after the last STAN and RRN journaled before a restart:
    /// the next ones are `last_stan + 1` and `last_rrn + 1`.
    pub fn resume(&self, last_stan: u32, last_rrn: u64) {
        self.stan.store(last_stan % Stan::MAX, Ordering::Relaxed);
        self.rrn
            .store((last_rrn + 1) % RRN_MODULUS, Ordering::Relaxed);
        // Nothing is reserved from the new position yet.
        self.reserved_stan.store(0, Ordering::Relaxed);
        self.reserved_rrn.store(0, Ordering::Relaxed);
    }

    /// The next message id: `FPS<bank><start ms><seq>`, at most 35 characters.
    pub fn next_message_id(&self) -> MessageId {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut text = [0u8; MAX_MESSAGE_ID_BYTES];
        text[..3].copy_from_slice(b"FPS");
        text[3..6].copy_from_slice(self.bank.as_bytes());
        let mut len = 6;
        len += put_decimal(self.boot_ms % 10_000_000_000_000, &mut text[len..]);
        len += put_decimal(seq % 10_000_000_000_000_000, &mut text[len..]);
        MessageId::parse(&text[..len]).expect("at most 3+3+13+16 printable characters")
    }
}

/// Longest message id [`OutboundIds::next_message_id`] makes: `FPS`, a
/// 3-digit bank code, at most 13 digits of start time and 16 of sequence.
const MAX_MESSAGE_ID_BYTES: usize = 3 + 3 + 13 + 16;

/// Writes `n` as decimal digits, without padding, at the start of `out`;
/// returns how many. `out` must have room for 20 digits or for `n`'s.
/// Ids are made per request: no formatting machinery, no allocation.
fn put_decimal(n: u64, out: &mut [u8]) -> usize {
    let digits = n.checked_ilog10().map_or(1, |d| d as usize + 1);
    write_padded(n, &mut out[..digits]);
    digits
}

/// A block of outbound ids to journal before use (see [`OutboundIds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// Last STAN covered (what the journal records).
    pub last_stan: u32,
    /// Last RRN covered, as a number.
    pub last_rrn: u64,
    stan_mark: u64,
    rrn_mark: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_and_distinct() {
        let ids = OutboundIds::new(BankCode::parse(b"004").unwrap());
        let a = ids.next_stan();
        let b = ids.next_stan();
        assert_ne!(a, b);
        assert!(a.value() >= 1);
        assert_ne!(ids.next_rrn(), ids.next_rrn());
        assert!(ids.next_message_id().as_str().starts_with("FPS004"));
    }

    #[test]
    fn resume_continues_after_the_journaled_ids() {
        let ids = OutboundIds::new(BankCode::parse(b"004").unwrap());
        ids.resume(41, 123_456_789_011);
        assert_eq!(ids.next_stan().value(), 42);
        assert_eq!(ids.next_rrn().as_str(), "123456789012");
        ids.resume(Stan::MAX, RRN_MODULUS - 1);
        assert_eq!(ids.next_stan().value(), 1);
        assert_eq!(ids.next_rrn().as_str(), "000000000000");
    }

    #[test]
    fn reservations_stay_ahead_and_resume_past_every_id_used() {
        let ids = OutboundIds::new(BankCode::parse(b"004").unwrap());
        ids.resume(100, 5_000);
        let r = ids.reservation_due().expect("nothing reserved yet");
        ids.reserved(&r);
        assert_eq!(ids.reservation_due(), None);
        let mut last = (0, 0);
        // Use ids up to half a block: the next reservation becomes due.
        for _ in 0..RESERVE_BLOCK / 2 {
            last = (
                ids.next_stan().value(),
                ids.next_rrn().as_str().parse::<u64>().unwrap(),
            );
        }
        let next = ids
            .reservation_due()
            .expect("due half a block before the end");
        // Every id used so far is covered by the durable reservation.
        assert!(u64::from(last.0) <= u64::from(r.last_stan));
        assert!(last.1 <= r.last_rrn);
        // A restart after `r` resumes past everything used.
        let after = OutboundIds::new(BankCode::parse(b"004").unwrap());
        after.resume(r.last_stan, r.last_rrn);
        assert!(after.next_stan().value() > last.0);
        assert!(after.next_rrn().as_str().parse::<u64>().unwrap() > last.1);
        ids.reserved(&next);
        assert_eq!(ids.reservation_due(), None);
    }

    #[test]
    fn message_ids_spell_bank_start_time_and_sequence() {
        let ids = OutboundIds::new(BankCode::parse(b"024").unwrap());
        let boot = ids.boot_ms % 10_000_000_000_000;
        assert_eq!(ids.next_message_id().as_str(), format!("FPS024{boot}0"));
        ids.seq.store(9_999_999_999_999_999, Ordering::Relaxed);
        let longest = ids.next_message_id();
        assert_eq!(longest.as_str(), format!("FPS024{boot}9999999999999999"));
        // The sequence wraps within its 16 digits.
        assert_eq!(ids.next_message_id().as_str(), format!("FPS024{boot}0"));
        assert!(longest.as_str().len() <= MAX_MESSAGE_ID_BYTES);
    }

    #[test]
    fn decimal_digits() {
        let mut out = [b'x'; 20];
        assert_eq!(put_decimal(0, &mut out), 1);
        assert_eq!(&out[..1], b"0");
        assert_eq!(put_decimal(u64::MAX, &mut out), 20);
        assert_eq!(&out[..], u64::MAX.to_string().as_bytes());
        assert_eq!(put_decimal(907, &mut out), 3);
        assert_eq!(&out[..3], b"907");
    }

    #[test]
    fn stan_wraps_without_zero() {
        let ids = OutboundIds::new(BankCode::parse(b"004").unwrap());
        ids.stan.store(Stan::MAX - 1, Ordering::Relaxed);
        assert_eq!(ids.next_stan().value(), Stan::MAX);
        assert_eq!(ids.next_stan().value(), 1);
    }
}
