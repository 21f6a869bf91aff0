//! ISO 20022 value types that the canonical model does not have (creation
//! date-times, status codes, BICs, ...) and the text conversions of amounts
//! and dates. Everything is inline and allocation-free; no value is ever
//! echoed in an error.

use std::fmt;

use arrayvec::ArrayString;

use crate::calendar::{civil_from_days, days_from_civil, days_in_month};
use crate::model::{AmountMinor, Currency, TransmissionDateTime, ValueError};

/// Longest ISO date-time we accept: `YYYY-MM-DDThh:mm:ss.fffffffff+hh:mm`.
const MAX_DATE_TIME_LEN: usize = 35;

/// Longest decimal amount text we look at (ISO allows 18 total digits).
const MAX_AMOUNT_TEXT_LEN: usize = 40;

/// Number of minor-unit digits of a currency (ISO 4217 exponent).
///
/// The model's [`Currency`] knows no exponent, so the codec keeps the table:
/// JPY has none, every other currency the switch knows has 2.
pub fn minor_digits(currency: Currency) -> u32 {
    match currency.numeric() {
        392 => 0, // JPY
        _ => 2,
    }
}

/// Parse an ISO 20022 decimal amount (`1234.56`) into minor units of a
/// currency with `digits` minor digits.
///
/// Accepts `[0-9]+(\.[0-9]*)?` or `\.[0-9]+`; trailing fraction zeros past the
/// currency's precision are accepted (`12.340` HKD is 1234 cents, the exact
/// value); any other excess precision, a sign, an exponent or more than 12
/// digits of minor units is refused with a static reason.
pub(crate) fn parse_amount(text: &[u8], digits: u32) -> Result<AmountMinor, &'static str> {
    if text.is_empty() {
        return Err("empty amount");
    }
    if text.len() > MAX_AMOUNT_TEXT_LEN {
        return Err("amount text too long");
    }
    let (int, frac) = match text.iter().position(|b| *b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &text[..0]),
    };
    if int.is_empty() && frac.is_empty() {
        return Err("not a decimal amount");
    }
    if !int.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit) {
        // Catches signs, exponents, a second dot, spaces and any other byte.
        return Err("not a non-negative decimal amount");
    }
    let digits = digits as usize;
    let (kept, excess) = if frac.len() > digits {
        (&frac[..digits], &frac[digits..])
    } else {
        (frac, &frac[..0])
    };
    if excess.iter().any(|b| *b != b'0') {
        return Err("more decimals than the currency allows");
    }
    let mut value: u64 = 0;
    let int = trim_leading_zeros(int);
    // Each step multiplies by 10, so stop before u64 could overflow: any
    // value over AmountMinor::MAX (12 digits) is refused anyway.
    if int.len() + digits > 12 {
        return Err("amount over 12 digits of minor units");
    }
    for b in int.iter().chain(kept.iter()) {
        value = value * 10 + u64::from(b - b'0');
    }
    for _ in kept.len()..digits {
        value *= 10;
    }
    AmountMinor::new(value).map_err(|_| "amount over 12 digits of minor units")
}

fn trim_leading_zeros(d: &[u8]) -> &[u8] {
    let start = d.iter().position(|b| *b != b'0').unwrap_or(d.len());
    &d[start..]
}

/// Write `amount` as an ISO decimal with exactly `digits` fraction digits
/// (`12345`, 2 -> `123.45`; `500`, 0 -> `500`). Returns the text length.
pub(crate) fn format_amount(amount: AmountMinor, digits: u32, buf: &mut [u8; 24]) -> usize {
    let mut tmp = [0u8; 20];
    let mut v = amount.minor();
    let mut n = 0;
    // At least digits + 1 digits so that 5 cents prints as 0.05.
    while v > 0 || n <= digits as usize {
        tmp[n] = b'0' + (v % 10) as u8;
        v /= 10;
        n += 1;
    }
    let mut len = 0;
    for i in (0..n).rev() {
        buf[len] = tmp[i];
        len += 1;
        if i == digits as usize && digits > 0 {
            buf[len] = b'.';
            len += 1;
        }
    }
    len
}

/// An ISO 20022 creation date-time (`CreDtTm`, `ISODateTime`):
/// `YYYY-MM-DDThh:mm:ss[.f{1,9}][Z|(+|-)hh:mm]`, checked against the calendar.
///
/// The codec has no clock: callers pass the creation time to
/// [`Iso20022Codec::encode_at`](super::Iso20022Codec::encode_at), or let
/// [`MessageCodec::encode`](crate::MessageCodec::encode) derive it from the
/// transaction (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CreationDateTime {
    text: ArrayString<MAX_DATE_TIME_LEN>,
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// Offset from UTC in minutes; `None` when the text has no zone.
    offset_minutes: Option<i16>,
}

impl CreationDateTime {
    /// Parse the ISO 8601 text form.
    pub fn parse(text: &[u8]) -> Result<Self, ValueError> {
        const WHAT: &str = "creation date-time";
        let bad = |reason| ValueError::new(WHAT, reason);
        if text.len() < 19 || text.len() > MAX_DATE_TIME_LEN {
            return Err(bad("wrong length"));
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32, ValueError> {
            let d = &text[r];
            if !d.iter().all(u8::is_ascii_digit) {
                return Err(bad("not YYYY-MM-DDThh:mm:ss"));
            }
            Ok(d.iter().fold(0u32, |a, b| a * 10 + u32::from(b - b'0')))
        };
        if text[4] != b'-'
            || text[7] != b'-'
            || text[10] != b'T'
            || text[13] != b':'
            || text[16] != b':'
        {
            return Err(bad("not YYYY-MM-DDThh:mm:ss"));
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(i64::from(year), month) {
            return Err(bad("date out of range"));
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(bad("time out of range"));
        }
        let mut rest = &text[19..];
        if let Some(frac) = rest.strip_prefix(b".") {
            let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
            if n == 0 || n > 9 {
                return Err(bad("bad fraction of a second"));
            }
            rest = &frac[n..];
        }
        let offset_minutes = match rest {
            [] => None,
            [b'Z'] => Some(0),
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let digits = [*h1, *h2, *m1, *m2];
                if !digits.iter().all(u8::is_ascii_digit) {
                    return Err(bad("bad zone offset"));
                }
                let h = i16::from(h1 - b'0') * 10 + i16::from(h2 - b'0');
                let m = i16::from(m1 - b'0') * 10 + i16::from(m2 - b'0');
                if h > 14 || m > 59 {
                    return Err(bad("bad zone offset"));
                }
                let v = h * 60 + m;
                Some(if *sign == b'-' { -v } else { v })
            }
            _ => return Err(bad("bad zone offset")),
        };
        // All bytes checked above are ASCII, so this cannot fail.
        let s = std::str::from_utf8(text).map_err(|_| bad("not ASCII"))?;
        let text = ArrayString::from(s).map_err(|_| bad("wrong length"))?;
        Ok(CreationDateTime {
            text,
            year: year as u16,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
            offset_minutes,
        })
    }

    /// A UTC creation time (`YYYY-MM-DDThh:mm:ssZ`) from a year and the
    /// canonical transmission date-time (F7, `MMDDhhmmss` UTC).
    pub fn from_transmission(year: u16, at: &TransmissionDateTime) -> Result<Self, ValueError> {
        let d = at.as_bytes();
        let y = [
            b'0' + (year / 1000 % 10) as u8,
            b'0' + (year / 100 % 10) as u8,
            b'0' + (year / 10 % 10) as u8,
            b'0' + (year % 10) as u8,
        ];
        let text = [
            y[0], y[1], y[2], y[3], b'-', d[0], d[1], b'-', d[2], d[3], b'T', d[4], d[5], b':',
            d[6], d[7], b':', d[8], d[9], b'Z',
        ];
        Self::parse(&text)
    }

    /// The text as written on the wire.
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// The year.
    pub fn year(&self) -> u16 {
        self.year
    }

    /// The instant as the canonical transmission date-time (UTC, `MMDDhhmmss`).
    /// A text without a zone is read as local time at `default_offset_minutes`.
    pub fn to_transmission(&self, default_offset_minutes: i16) -> TransmissionDateTime {
        let offset = i64::from(self.offset_minutes.unwrap_or(default_offset_minutes));
        let days = days_from_civil(
            i64::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        );
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - offset * 60;
        let (day_index, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (_, m, d) = civil_from_days(day_index);
        let (h, mi, s) = (sod / 3600, sod / 60 % 60, sod % 60);
        let mut out = [0u8; 10];
        for (i, v) in [i64::from(m), i64::from(d), h, mi, s]
            .into_iter()
            .enumerate()
        {
            out[i * 2] = b'0' + (v / 10) as u8;
            out[i * 2 + 1] = b'0' + (v % 10) as u8;
        }
        // Month 1-12, day 1-31 and a time of day are always valid F7 content.
        TransmissionDateTime::parse(&out).expect("a calendar instant is a valid MMDDhhmmss")
    }
}

impl fmt::Debug for CreationDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CreationDateTime({})", self.text.as_str())
    }
}

impl fmt::Display for CreationDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text.as_str())
    }
}

/// Defines a short upper-case code newtype held inline.
macro_rules! code_newtype {
    ($(#[$meta:meta])* $name:ident, min = $min:expr, max = $max:expr, what = $what:literal, $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(ArrayString<$max>);

        impl $name {
            /// Parse from wire text, checking length and characters.
            pub fn parse(value: &[u8]) -> Result<Self, ValueError> {
                if value.len() < $min || value.len() > $max {
                    return Err(ValueError::new($what, "wrong length"));
                }
                let check: fn(&[u8]) -> bool = $check;
                if !check(value) {
                    return Err(ValueError::new($what, "character outside its class"));
                }
                let s = std::str::from_utf8(value).map_err(|_| ValueError::new($what, "not ASCII"))?;
                ArrayString::from(s).map($name).map_err(|_| ValueError::new($what, "wrong length"))
            }

            /// The code as text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }
    };
}

fn upper_alnum(v: &[u8]) -> bool {
    v.iter()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

code_newtype!(
    /// A status code as ISO 20022 carries it: `TxSts` (`ACSC`, `RJCT`, `PDNG`
    /// ...), `TxCxlSts` (`ACCR`, `RJCR`, `PDCR`) or `Sts/Conf` (`CNCL` ...).
    StatusCode, min = 4, max = 4, what = "status code", |v| v.iter().all(u8::is_ascii_uppercase)
);
code_newtype!(
    /// A business identifier code (`BICFI`): 8 or 11 upper-case characters,
    /// the first six letters.
    Bic, min = 8, max = 11, what = "BIC", |v| (v.len() == 8 || v.len() == 11)
        && v[..6].iter().all(u8::is_ascii_uppercase)
        && upper_alnum(&v[6..])
);
code_newtype!(
    /// An ISO external clearing system code (`ClrSysId/Cd`), e.g. `HKNCC`.
    ClearingSystemCode, min = 1, max = 5, what = "clearing system code", upper_alnum
);
code_newtype!(
    /// A proxy type code (`Prxy/Tp/Cd`), e.g. `MOBN`.
    ProxyTypeCode, min = 1, max = 4, what = "proxy type code", upper_alnum
);
code_newtype!(
    /// A message definition version, e.g. `001.08` of `pacs.008.001.08`.
    MessageVersion, min = 6, max = 6, what = "message version", |v| v[3] == b'.'
        && v[..3].iter().all(u8::is_ascii_digit)
        && v[4..].iter().all(u8::is_ascii_digit)
);

impl StatusCode {
    /// Parse a code the codec itself writes (compile-time constants).
    pub(crate) fn known(code: &'static str) -> StatusCode {
        // Only called with 4 upper-case letters from this module's tables.
        StatusCode::parse(code.as_bytes()).expect("status code constants are 4 letters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_follow_currency_precision() {
        assert_eq!(parse_amount(b"1234.56", 2).unwrap().minor(), 123_456);
        assert_eq!(parse_amount(b"1234.5", 2).unwrap().minor(), 123_450);
        assert_eq!(parse_amount(b"1234", 2).unwrap().minor(), 123_400);
        assert_eq!(parse_amount(b"1234.", 2).unwrap().minor(), 123_400);
        assert_eq!(parse_amount(b".5", 2).unwrap().minor(), 50);
        assert_eq!(parse_amount(b"12.340", 2).unwrap().minor(), 1234);
        assert_eq!(parse_amount(b"500", 0).unwrap().minor(), 500);
        assert_eq!(parse_amount(b"0000000001.00", 2).unwrap().minor(), 100);
        assert_eq!(
            parse_amount(b"9999999999.99", 2).unwrap().minor(),
            AmountMinor::MAX
        );
        for bad in [
            &b"12.345"[..],
            b"-1",
            b"+1",
            b"1e5",
            b"",
            b".",
            b"1.2.3",
            b" 1",
            b"10000000000.00",
            b"500.5",
            b"99999999999999999999999999",
        ] {
            let digits = if bad == b"500.5" { 0 } else { 2 };
            assert!(parse_amount(bad, digits).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn amounts_format_with_currency_precision() {
        let mut buf = [0u8; 24];
        let cases: [(u64, u32, &str); 5] = [
            (123_456, 2, "1234.56"),
            (5, 2, "0.05"),
            (0, 2, "0.00"),
            (500, 0, "500"),
            (AmountMinor::MAX, 2, "9999999999.99"),
        ];
        for (minor, digits, text) in cases {
            let n = format_amount(AmountMinor::new(minor).unwrap(), digits, &mut buf);
            assert_eq!(&buf[..n], text.as_bytes());
        }
    }

    #[test]
    fn date_times_convert_to_utc_transmission_time() {
        let t = CreationDateTime::parse(b"2024-03-01T07:15:30+08:00").unwrap();
        assert_eq!(t.to_transmission(0).as_str(), "0229231530");
        let t = CreationDateTime::parse(b"2023-12-31T23:59:59.123-01:00").unwrap();
        assert_eq!(t.to_transmission(0).as_str(), "0101005959");
        let t = CreationDateTime::parse(b"2024-05-01T10:00:00").unwrap();
        assert_eq!(t.to_transmission(480).as_str(), "0501020000");
        let t = CreationDateTime::parse(b"2024-05-01T10:00:00Z").unwrap();
        assert_eq!(t.to_transmission(480).as_str(), "0501100000");
        for bad in [
            &b"2023-02-29T00:00:00"[..],
            b"2024-13-01T00:00:00",
            b"2024-01-01 00:00:00",
            b"2024-01-01T24:00:00",
            b"2024-01-01T00:00:00+15:00",
            b"2024-01-01T00:00:00.",
            b"2024-01-01T00:00:00+0800",
            b"2024-01-01",
        ] {
            assert!(CreationDateTime::parse(bad).is_err(), "{bad:?}");
        }
        let f7 = TransmissionDateTime::parse(b"0229120000").unwrap();
        assert!(CreationDateTime::from_transmission(2023, &f7).is_err());
        assert_eq!(
            CreationDateTime::from_transmission(2024, &f7)
                .unwrap()
                .as_str(),
            "2024-02-29T12:00:00Z"
        );
    }

    #[test]
    fn codes_check_their_shape() {
        assert!(Bic::parse(b"HSBCHKHHHKH").is_ok());
        assert!(Bic::parse(b"HSBCHKHH").is_ok());
        assert!(Bic::parse(b"HSBC1KHH").is_err());
        assert!(Bic::parse(b"hsbchkhh").is_err());
        assert!(MessageVersion::parse(b"001.08").is_ok());
        assert!(MessageVersion::parse(b"00108").is_err());
        assert!(StatusCode::parse(b"ACSC").is_ok());
        assert!(StatusCode::parse(b"AC5C").is_err());
    }
}
