//! BIN ranges: route a card-style transaction by the leading digits of its PAN.
//!
//! A range covers PAN prefixes of one length (6 to 11 digits), from `from` to
//! `to` inclusive; a single prefix is the range `prefix..=prefix`. A longer
//! range is more specific and wins over a shorter one that also matches.
//! Ranges of the same length may not overlap: which one wins would be
//! ambiguous, so [`BinTable::build`] refuses them.
//!
//! Lookup is one binary search per configured length: O(log n), no allocation.

use fps_codecs::model::{BankCode, Pan};

/// Shortest BIN prefix accepted.
pub const MIN_BIN_DIGITS: usize = 6;
/// Longest BIN prefix accepted.
pub const MAX_BIN_DIGITS: usize = 11;
/// Most BIN ranges one table may hold.
pub const MAX_BIN_RANGES: usize = 200_000;

const LENGTHS: usize = MAX_BIN_DIGITS - MIN_BIN_DIGITS + 1;

/// A range of PAN prefixes of one length, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BinRange {
    from: u64,
    to: u64,
    digits: u8,
}

/// Why a BIN range was refused. BINs identify issuers, not cardholders, so
/// showing them is safe; the messages still carry no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BinRangeError {
    /// Not made of ASCII digits only.
    #[error("BIN must be digits only")]
    NotDigits,
    /// Shorter than 6 or longer than 11 digits.
    #[error("BIN must have 6 to 11 digits")]
    Length,
    /// `from` and `to` have different lengths.
    #[error("`from` and `to` must have the same number of digits")]
    LengthMismatch,
    /// `from` is above `to`.
    #[error("`from` is greater than `to`")]
    Reversed,
}

impl BinRange {
    /// The single prefix `digits`, e.g. `"476173"`.
    pub fn prefix(digits: &str) -> Result<Self, BinRangeError> {
        Self::range(digits, digits)
    }

    /// The prefixes `from..=to`, which must have the same length.
    pub fn range(from: &str, to: &str) -> Result<Self, BinRangeError> {
        let (f, flen) = parse_bin(from)?;
        let (t, tlen) = parse_bin(to)?;
        if flen != tlen {
            return Err(BinRangeError::LengthMismatch);
        }
        if f > t {
            return Err(BinRangeError::Reversed);
        }
        Ok(BinRange {
            from: f,
            to: t,
            // 6..=11 always fits a u8.
            digits: flen as u8,
        })
    }

    /// Number of digits: the specificity of the range.
    pub fn digits(&self) -> usize {
        usize::from(self.digits)
    }

    /// Whether the PAN digits `pan` fall in this range.
    pub fn contains(&self, pan: &[u8]) -> bool {
        leading_value(pan, self.digits()).is_some_and(|v| self.from <= v && v <= self.to)
    }

    /// Whether `other` has the same length and shares a prefix with this range
    /// (the ambiguity [`BinTable::build`] refuses).
    pub fn overlaps(&self, other: &BinRange) -> bool {
        self.digits == other.digits && self.from <= other.to && other.from <= self.to
    }
}

/// Why a BIN table could not be built. Indices refer to the input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BinTableError {
    /// Two ranges of the same length overlap.
    #[error("range #{index} overlaps range #{other} of the same length")]
    Overlap {
        /// The later range (input order).
        index: usize,
        /// The earlier range it collides with.
        other: usize,
    },
    /// More than [`MAX_BIN_RANGES`] ranges.
    #[error("more than {MAX_BIN_RANGES} BIN ranges")]
    TooMany,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    from: u64,
    to: u64,
    bank: BankCode,
}

/// An immutable BIN table: PAN prefix ranges to destination bank codes.
#[derive(Debug, Clone, Default)]
pub struct BinTable {
    /// One sorted, non-overlapping list per prefix length (index = length - 6).
    by_len: [Vec<Entry>; LENGTHS],
}

impl BinTable {
    /// Build a table, reporting every overlap (not just the first).
    pub fn build(
        ranges: impl IntoIterator<Item = (BinRange, BankCode)>,
    ) -> Result<Self, Vec<BinTableError>> {
        let mut by_len: [Vec<(usize, Entry)>; LENGTHS] = Default::default();
        for (i, (r, bank)) in ranges.into_iter().enumerate() {
            if i >= MAX_BIN_RANGES {
                return Err(vec![BinTableError::TooMany]);
            }
            by_len[r.digits() - MIN_BIN_DIGITS].push((
                i,
                Entry {
                    from: r.from,
                    to: r.to,
                    bank,
                },
            ));
        }
        let mut errors = Vec::new();
        let mut table = BinTable::default();
        for (len, mut list) in by_len.into_iter().enumerate() {
            list.sort_by_key(|(i, e)| (e.from, *i));
            // Sorted by start: a range overlaps an earlier one exactly when it
            // starts before the furthest end seen so far.
            let mut reach: Option<(u64, usize)> = None;
            for (i, e) in &list {
                match reach {
                    Some((end, other)) if e.from <= end => errors.push(BinTableError::Overlap {
                        index: (*i).max(other),
                        other: (*i).min(other),
                    }),
                    _ => {}
                }
                if reach.is_none_or(|(end, _)| e.to > end) {
                    reach = Some((e.to, *i));
                }
            }
            table.by_len[len] = list.into_iter().map(|(_, e)| e).collect();
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            errors.sort_by_key(|e| match e {
                BinTableError::Overlap { index, other } => (*index, *other),
                BinTableError::TooMany => (0, 0),
            });
            Err(errors)
        }
    }

    /// The bank of the most specific range containing `pan`'s prefix.
    pub fn lookup(&self, pan: &Pan) -> Option<BankCode> {
        self.lookup_digits(pan.expose().as_bytes())
    }

    /// As [`lookup`](Self::lookup), on raw PAN digits (at least 6).
    pub fn lookup_digits(&self, pan: &[u8]) -> Option<BankCode> {
        for len in (MIN_BIN_DIGITS..=MAX_BIN_DIGITS).rev() {
            let list = &self.by_len[len - MIN_BIN_DIGITS];
            if list.is_empty() {
                continue;
            }
            let Some(key) = leading_value(pan, len) else {
                continue;
            };
            let after = list.partition_point(|e| e.from <= key);
            if let Some(e) = after.checked_sub(1).map(|i| &list[i]) {
                if key <= e.to {
                    return Some(e.bank);
                }
            }
        }
        None
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.by_len.iter().map(Vec::len).sum()
    }

    /// Whether the table has no ranges.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every bank code the table points at (sorted, deduplicated).
    pub fn banks(&self) -> Vec<BankCode> {
        let mut v: Vec<BankCode> = self.by_len.iter().flatten().map(|e| e.bank).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn parse_bin(s: &str) -> Result<(u64, usize), BinRangeError> {
    if !(MIN_BIN_DIGITS..=MAX_BIN_DIGITS).contains(&s.len()) {
        return Err(if s.bytes().all(|b| b.is_ascii_digit()) {
            BinRangeError::Length
        } else {
            BinRangeError::NotDigits
        });
    }
    leading_value(s.as_bytes(), s.len())
        .map(|v| (v, s.len()))
        .ok_or(BinRangeError::NotDigits)
}

/// The first `len` bytes of `digits` as a number, if they are all digits.
/// `len` is at most 11, so the value always fits.
fn leading_value(digits: &[u8], len: usize) -> Option<u64> {
    digits.get(..len)?.iter().try_fold(0u64, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bank(code: &str) -> BankCode {
        BankCode::parse(code.as_bytes()).unwrap()
    }

    #[test]
    fn parses_prefixes_and_ranges() {
        assert_eq!(BinRange::prefix("476173").unwrap().digits(), 6);
        assert_eq!(BinRange::prefix("47617"), Err(BinRangeError::Length));
        assert_eq!(BinRange::prefix("476173001011"), Err(BinRangeError::Length));
        assert_eq!(BinRange::prefix("47617a"), Err(BinRangeError::NotDigits));
        assert_eq!(BinRange::prefix("+47617"), Err(BinRangeError::NotDigits));
        assert_eq!(
            BinRange::range("400000", "4999999"),
            Err(BinRangeError::LengthMismatch)
        );
        assert_eq!(
            BinRange::range("499999", "400000"),
            Err(BinRangeError::Reversed)
        );
        assert!(BinRange::range("40000000000", "49999999999").is_ok());
    }

    #[test]
    fn most_specific_range_wins() {
        let t = BinTable::build([
            (BinRange::range("400000", "499999").unwrap(), bank("001")),
            (BinRange::prefix("47617300").unwrap(), bank("003")),
            (BinRange::prefix("4761730").unwrap(), bank("002")),
        ])
        .unwrap();
        assert_eq!(t.len(), 3);
        let pan = |s: &str| Pan::parse(s.as_bytes()).unwrap();
        assert_eq!(t.lookup(&pan("4761730010100100")), Some(bank("003")));
        assert_eq!(t.lookup(&pan("4761730910100100")), Some(bank("002")));
        assert_eq!(t.lookup(&pan("4761731010100100")), Some(bank("001")));
        assert_eq!(t.lookup(&pan("4111111111111111")), Some(bank("001")));
        assert_eq!(t.lookup(&pan("5111111111111111")), None);
        assert_eq!(t.banks(), vec![bank("001"), bank("002"), bank("003")]);
    }

    #[test]
    fn every_equal_length_overlap_is_reported() {
        let err = BinTable::build([
            (BinRange::range("400000", "499999").unwrap(), bank("001")),
            (BinRange::prefix("476173").unwrap(), bank("002")),
            (BinRange::prefix("4761730").unwrap(), bank("002")),
            (BinRange::range("480000", "480001").unwrap(), bank("003")),
            (BinRange::prefix("500000").unwrap(), bank("003")),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            vec![
                BinTableError::Overlap { index: 1, other: 0 },
                BinTableError::Overlap { index: 3, other: 0 },
            ]
        );
    }

    /// A BIN table with ranges clustered in a narrow window so that ranges of
    /// different lengths nest and ranges of equal length collide.
    fn range_strategy() -> impl Strategy<Value = (BinRange, BankCode)> {
        (MIN_BIN_DIGITS..=MAX_BIN_DIGITS, 0u64..40, 0u64..8, 0u16..5).prop_map(
            |(len, start, width, b)| {
                let scale = 10u64.pow((len - MIN_BIN_DIGITS) as u32);
                let from = 400_000 * scale + start * scale / 2;
                let to = from + width * scale / 3;
                let r = BinRange {
                    from,
                    to,
                    digits: len as u8,
                };
                (r, BankCode::parse(format!("{b:03}").as_bytes()).unwrap())
            },
        )
    }

    fn naive(entries: &[(BinRange, BankCode)], pan: &[u8]) -> Option<BankCode> {
        entries
            .iter()
            .filter(|(r, _)| r.contains(pan))
            .max_by_key(|(r, _)| r.digits())
            .map(|(_, b)| *b)
    }

    proptest! {
        /// Lookup equals a linear scan for the most specific containing range.
        #[test]
        fn lookup_matches_linear_scan(
            raw in proptest::collection::vec(range_strategy(), 0..60),
            pans in proptest::collection::vec((0u64..30, 0u64..10_000_000_000), 1..60),
        ) {
            // Keep only ranges that do not collide with an earlier one of the same length.
            let mut kept: Vec<(BinRange, BankCode)> = Vec::new();
            for (r, b) in raw {
                if !kept.iter().any(|(k, _)| k.overlaps(&r)) {
                    kept.push((r, b));
                }
            }
            let table = BinTable::build(kept.clone()).unwrap();
            prop_assert_eq!(table.len(), kept.len());
            for (head, tail) in pans {
                let pan = format!("{}{:010}", 400_000 + head, tail);
                prop_assert_eq!(table.lookup_digits(pan.as_bytes()), naive(&kept, pan.as_bytes()), "pan {}", pan);
            }
            // And the ends of every range resolve to the range itself or a more specific one.
            for (r, _) in &kept {
                for end in [r.from, r.to] {
                    let pan = format!("{end:0w$}{}", "0".repeat(19 - r.digits()), w = r.digits());
                    prop_assert_eq!(table.lookup_digits(pan.as_bytes()), naive(&kept, pan.as_bytes()));
                    prop_assert!(table.lookup_digits(pan.as_bytes()).is_some());
                }
            }
        }

        /// Building fails exactly when two ranges of the same length overlap.
        #[test]
        fn build_rejects_exactly_equal_length_overlaps(
            raw in proptest::collection::vec(range_strategy(), 0..30),
        ) {
            let clash = raw.iter().enumerate().any(|(i, (a, _))| raw[..i].iter().any(|(b, _)| a.overlaps(b)));
            prop_assert_eq!(BinTable::build(raw).is_err(), clash);
        }
    }
}
