//! Newtypes for the identifiers, money and parties of a transaction.
//!
//! Parse, don't validate: each type can only hold a well-formed value, so the
//! rest of the switch never re-checks digits or lengths. Sensitive values
//! (PAN, accounts, proxy ids, party names) mask themselves in `Debug` and
//! `Display`; use `expose()` where the clear value is really needed (on the
//! wire, in the HSM input), never in logs.

use std::fmt;

use arrayvec::{ArrayString, ArrayVec};

use super::text::{inline_text, write_masked_tail, CharClass, ValueError};

/// Defines a text newtype over an inline string: constructor `parse`, `as_str`,
/// and `Debug`/`Display` that either show the value or mask it.
macro_rules! text_newtype {
    (
        $(#[$meta:meta])*
        $name:ident, cap = $cap:expr, min = $min:expr, class = $class:expr, what = $what:literal, $show:ident
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(ArrayString<$cap>);

        impl $name {
            /// Largest number of characters this value may hold.
            pub const MAX_LEN: usize = $cap;

            /// Parse from wire bytes, checking length and character class.
            pub fn parse(value: &[u8]) -> Result<Self, ValueError> {
                inline_text::<$cap>($what, value, $min, $class).map($name)
            }

            text_newtype!(@access $show);
        }

        impl std::str::FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, ValueError> {
                Self::parse(s.as_bytes())
            }
        }

        text_newtype!(@fmt $name, $what, $show);
    };
    (@access plain) => {
        /// The value as text.
        pub fn as_str(&self) -> &str {
            self.0.as_str()
        }
    };
    (@access masked) => {
        /// The clear value, for the wire and the HSM only: never log it.
        pub fn expose(&self) -> &str {
            self.0.as_str()
        }
    };
    (@fmt $name:ident, $what:literal, plain) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0.as_str())
            }
        }
        impl fmt::Display for $name {
            // `pad` honours width, fill and alignment (`{:0>4}`).
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.0.as_str())
            }
        }
    };
    (@fmt $name:ident, $what:literal, masked) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                write_masked_tail(f, self.0.as_str(), 4)?;
                f.write_str(")")
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_masked_tail(f, self.0.as_str(), 4)
            }
        }
    };
}

text_newtype!(
    /// Retrieval reference number (F37): 12 alphanumeric characters.
    Rrn, cap = 12, min = 12, class = CharClass::Ans, what = "RRN", plain
);
text_newtype!(
    /// Institution identification code (F32 acquirer, F33 forwarder): up to 11 digits.
    InstitutionId, cap = 11, min = 1, class = CharClass::N, what = "institution id", plain
);
text_newtype!(
    /// Card acceptor terminal id (F41): 8 characters.
    TerminalId, cap = 8, min = 8, class = CharClass::Ans, what = "terminal id", plain
);
text_newtype!(
    /// Card acceptor (merchant) id (F42): 15 characters.
    MerchantId, cap = 15, min = 15, class = CharClass::Ans, what = "merchant id", plain
);
text_newtype!(
    /// Authorization id response (F38): 6 characters.
    AuthId, cap = 6, min = 6, class = CharClass::Ans, what = "authorization id", plain
);
text_newtype!(
    /// Idempotency key chosen by the upstream (F123): 1 to 64 printable characters.
    IdempotencyKey, cap = 64, min = 1, class = CharClass::Ans, what = "idempotency key", plain
);
text_newtype!(
    /// Bank account number (F102 debtor, F103 creditor): up to 34 characters
    /// (the IBAN maximum). Masked to its last 4 characters.
    Account, cap = 34, min = 1, class = CharClass::An, what = "account", masked
);
text_newtype!(
    /// ISO 20022 message identification (`MsgId`), up to 35 characters.
    MessageId, cap = 35, min = 1, class = CharClass::Ans, what = "message id", plain
);
text_newtype!(
    /// ISO 20022 end-to-end or transaction identification, up to 35 characters.
    EndToEndId, cap = 35, min = 1, class = CharClass::Ans, what = "end-to-end id", plain
);
text_newtype!(
    /// ISO 20022 status reason code (e.g. `AC01`, `AM04`), up to 4 characters.
    ReasonCode, cap = 4, min = 1, class = CharClass::An, what = "reason code", plain
);

/// A party's name (debtor or creditor), up to 140 characters of UTF-8.
/// Personal data: masked in `Debug`/`Display`. Held on the heap: names are
/// rare on the hot path and 140 inline bytes would weigh on every
/// transaction that moves.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PartyName(Box<str>);

impl PartyName {
    /// Largest number of bytes a name may hold.
    pub const MAX_LEN: usize = 140;

    /// Parse a name: 1 to 140 bytes of UTF-8 without control characters.
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        const WHAT: &str = "party name";
        if value.is_empty() {
            return Err(ValueError::new(WHAT, "too short"));
        }
        if value.chars().any(char::is_control) {
            return Err(ValueError::new(WHAT, "control character"));
        }
        if value.len() > Self::MAX_LEN {
            return Err(ValueError::new(WHAT, "too long"));
        }
        Ok(PartyName(value.into()))
    }

    /// The clear name, for the wire only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PartyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartyName(<{} bytes>)", self.0.len())
    }
}

impl fmt::Display for PartyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// Parse exactly `N` ASCII digits into an array.
fn digits<const N: usize>(what: &'static str, value: &[u8]) -> Result<[u8; N], ValueError> {
    if value.len() != N {
        return Err(ValueError::new(what, "wrong length"));
    }
    if !CharClass::N.admits(value) {
        return Err(ValueError::new(what, "non-digit character"));
    }
    let mut out = [0u8; N];
    out.copy_from_slice(value);
    Ok(out)
}

/// Parse 1 to 19 ASCII digits as an integer.
fn parse_u64(what: &'static str, value: &[u8]) -> Result<u64, ValueError> {
    if value.is_empty() || value.len() > 19 {
        return Err(ValueError::new(what, "wrong length"));
    }
    value.iter().try_fold(0u64, |acc, b| {
        if b.is_ascii_digit() {
            Ok(acc * 10 + u64::from(b - b'0'))
        } else {
            Err(ValueError::new(what, "non-digit character"))
        }
    })
}

/// Write `value` as exactly `out.len()` zero-padded ASCII digits; digits
/// of `value` that do not fit are dropped (`value mod 10^len`). No
/// formatting machinery and no allocation: ids and dates made per message
/// use it. Every newtype here bounds its value, so nothing is dropped there.
pub fn write_padded(mut value: u64, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Defines a fixed-width digit newtype stored as its ASCII digits.
macro_rules! digits_newtype {
    ($(#[$meta:meta])* $name:ident, $len:expr, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Parse exactly the right number of ASCII digits.
            pub fn parse(value: &[u8]) -> Result<Self, ValueError> {
                let d = digits::<$len>($what, value)?;
                Self::check(&d)?;
                Ok($name(d))
            }

            /// The digits as text.
            pub fn as_str(&self) -> &str {
                // Only ASCII digits are ever stored (checked in `parse`).
                std::str::from_utf8(&self.0).unwrap_or("")
            }

            /// The digits as bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

digits_newtype!(
    /// Message type indicator as 4 digits, e.g. `0200`.
    Mti, 4, "MTI"
);
digits_newtype!(
    /// Processing code (F3), 6 digits; `400000` is a credit transfer.
    ProcessingCode, 6, "processing code"
);
digits_newtype!(
    /// Transmission date and time (F7), `MMDDhhmmss` in UTC.
    TransmissionDateTime, 10, "transmission date and time"
);
digits_newtype!(
    /// Local transaction time (F12), `hhmmss`.
    LocalTime, 6, "local time"
);
digits_newtype!(
    /// Local transaction date (F13), `MMDD`.
    LocalDate, 4, "local date"
);
digits_newtype!(
    /// Destination bank code (F100 in the canonical protocol): 3 digits, e.g. `004`.
    BankCode, 3, "bank code"
);
digits_newtype!(
    /// Settlement date `YYYYMMDD` (ISO 20022 `IntrBkSttlmDt`).
    SettlementDate, 8, "settlement date"
);

fn two(d: &[u8]) -> u8 {
    (d[0] - b'0') * 10 + (d[1] - b'0')
}

fn check_month_day(what: &'static str, d: &[u8]) -> Result<(), ValueError> {
    let (month, day) = (two(&d[0..2]), two(&d[2..4]));
    if !(1..=12).contains(&month) {
        return Err(ValueError::new(what, "month out of range"));
    }
    if !(1..=31).contains(&day) {
        return Err(ValueError::new(what, "day out of range"));
    }
    Ok(())
}

fn check_hms(what: &'static str, d: &[u8]) -> Result<(), ValueError> {
    if two(&d[0..2]) > 23 || two(&d[2..4]) > 59 || two(&d[4..6]) > 59 {
        return Err(ValueError::new(what, "time out of range"));
    }
    Ok(())
}

impl Mti {
    /// `0200` credit transfer request.
    pub const CREDIT_TRANSFER: Mti = Mti(*b"0200");
    /// `0210` credit transfer response.
    pub const CREDIT_TRANSFER_RESPONSE: Mti = Mti(*b"0210");
    /// `0400` reversal request.
    pub const REVERSAL: Mti = Mti(*b"0400");
    /// `0410` reversal response.
    pub const REVERSAL_RESPONSE: Mti = Mti(*b"0410");
    /// `0420` reversal advice.
    pub const REVERSAL_ADVICE: Mti = Mti(*b"0420");
    /// `0430` reversal advice response.
    pub const REVERSAL_ADVICE_RESPONSE: Mti = Mti(*b"0430");
    /// `0600` payment status inquiry (administrative request).
    pub const STATUS_INQUIRY: Mti = Mti(*b"0600");
    /// `0610` payment status inquiry response.
    pub const STATUS_INQUIRY_RESPONSE: Mti = Mti(*b"0610");
    /// `0800` network management request.
    pub const NETWORK: Mti = Mti(*b"0800");
    /// `0810` network management response.
    pub const NETWORK_RESPONSE: Mti = Mti(*b"0810");

    fn check(d: &[u8; 4]) -> Result<(), ValueError> {
        // Version digit: 0 = 1987, 1 = 1993, 2 = 2003. Class 0 is reserved.
        if d[0] > b'2' || d[1] == b'0' {
            return Err(ValueError::new("MTI", "unknown version or class"));
        }
        Ok(())
    }

    /// The message class digit (2 = financial, 4 = reversal, 8 = network ...).
    pub fn class(&self) -> u8 {
        self.0[1] - b'0'
    }

    /// The function digit (0 request, 1 response, 2 advice, 3 advice response).
    pub fn function(&self) -> u8 {
        self.0[2] - b'0'
    }

    /// Whether this message answers another (function digit odd).
    pub fn is_response(&self) -> bool {
        self.function() % 2 == 1
    }

    /// Whether the origin digit marks a repeat (e.g. `0401`, `0421`).
    pub fn is_repeat(&self) -> bool {
        self.0[3] == b'1' || self.0[3] == b'3'
    }

    /// The response MTI for this request: function digit + 1, origin digit 0.
    /// A response answers to itself.
    pub fn response(&self) -> Mti {
        if self.is_response() {
            return *self;
        }
        let mut d = self.0;
        d[2] += 1;
        d[3] = b'0';
        Mti(d)
    }

    /// The same message marked as a repeat (origin digit 1).
    pub fn repeat(&self) -> Mti {
        let mut d = self.0;
        d[3] = b'1';
        Mti(d)
    }

    /// The request MTI this message answers or repeats (function even, origin 0).
    pub fn request(&self) -> Mti {
        let mut d = self.0;
        if self.is_response() {
            d[2] -= 1;
        }
        d[3] = b'0';
        Mti(d)
    }
}

impl ProcessingCode {
    /// `400000`: credit transfer (FPS payment).
    pub const CREDIT_TRANSFER: ProcessingCode = ProcessingCode(*b"400000");
    /// `000000`: purchase (card-style networks).
    pub const PURCHASE: ProcessingCode = ProcessingCode(*b"000000");
    /// `200000`: return of funds (pacs.004), carried on a 0200.
    pub const RETURN: ProcessingCode = ProcessingCode(*b"200000");

    fn check(_: &[u8; 6]) -> Result<(), ValueError> {
        Ok(())
    }
}

impl TransmissionDateTime {
    fn check(d: &[u8; 10]) -> Result<(), ValueError> {
        check_month_day("transmission date and time", &d[0..4])?;
        check_hms("transmission date and time", &d[4..10])
    }

    /// F7 `MMDDhhmmss` (UTC) of a Unix time in whole seconds. Made for
    /// every message a switch or simulator originates: no formatting, no
    /// allocation.
    pub fn at_unix_secs(unix_secs: u64) -> Self {
        // u64 seconds are under 2^47 days: the count fits an i64.
        let (_, month, day) = crate::calendar::civil_from_days((unix_secs / 86_400) as i64);
        let rem = unix_secs % 86_400;
        let (hour, minute, second) = (rem / 3_600, rem % 3_600 / 60, rem % 60);
        let packed = u64::from(month) * 100_000_000
            + u64::from(day) * 1_000_000
            + hour * 10_000
            + minute * 100
            + second;
        let mut d = [0u8; 10];
        write_padded(packed, &mut d);
        // A real month and day, hour < 24, minute and second < 60.
        TransmissionDateTime(d)
    }
}

impl LocalTime {
    fn check(d: &[u8; 6]) -> Result<(), ValueError> {
        check_hms("local time", d)
    }
}

impl LocalDate {
    fn check(d: &[u8; 4]) -> Result<(), ValueError> {
        check_month_day("local date", d)
    }
}

impl BankCode {
    fn check(_: &[u8; 3]) -> Result<(), ValueError> {
        Ok(())
    }
}

impl SettlementDate {
    fn check(d: &[u8; 8]) -> Result<(), ValueError> {
        check_month_day("settlement date", &d[4..8])
    }

    /// The date `year`-`month`-`day` (as [`crate::calendar::civil_from_days`]
    /// gives them), refusing years outside 0..=9999 and impossible months
    /// or days.
    pub fn from_civil(year: i64, month: u32, day: u32) -> Result<Self, ValueError> {
        let year = u64::try_from(year)
            .ok()
            .filter(|y| *y <= 9_999)
            .ok_or(ValueError::new("settlement date", "year out of range"))?;
        if month > 12 || day > 31 {
            return Err(ValueError::new(
                "settlement date",
                "month or day out of range",
            ));
        }
        let mut d = [0u8; 8];
        write_padded(year, &mut d[0..4]);
        write_padded(u64::from(month), &mut d[4..6]);
        write_padded(u64::from(day), &mut d[6..8]);
        Self::parse(&d)
    }

    /// ISO 8601 form `YYYY-MM-DD`.
    pub fn to_iso(&self) -> [u8; 10] {
        let d = &self.0;
        [d[0], d[1], d[2], d[3], b'-', d[4], d[5], b'-', d[6], d[7]]
    }

    /// Parse the ISO 8601 form `YYYY-MM-DD`.
    pub fn parse_iso(value: &[u8]) -> Result<Self, ValueError> {
        if value.len() != 10 || value[4] != b'-' || value[7] != b'-' {
            return Err(ValueError::new("settlement date", "not YYYY-MM-DD"));
        }
        let mut d = [0u8; 8];
        d[0..4].copy_from_slice(&value[0..4]);
        d[4..6].copy_from_slice(&value[5..7]);
        d[6..8].copy_from_slice(&value[8..10]);
        Self::parse(&d)
    }
}

/// An amount in minor units (cents for HKD), at most 12 digits as F4 allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AmountMinor(u64);

impl AmountMinor {
    /// The largest amount F4 can carry.
    pub const MAX: u64 = 999_999_999_999;

    /// An amount, refusing values over [`AmountMinor::MAX`].
    pub fn new(minor: u64) -> Result<Self, ValueError> {
        if minor > Self::MAX {
            return Err(ValueError::new("amount", "over 12 digits"));
        }
        Ok(AmountMinor(minor))
    }

    /// Parse up to 12 ASCII digits.
    pub fn parse(value: &[u8]) -> Result<Self, ValueError> {
        if value.len() > 12 {
            return Err(ValueError::new("amount", "over 12 digits"));
        }
        Self::new(parse_u64("amount", value)?)
    }

    /// The amount in minor units.
    pub fn minor(&self) -> u64 {
        self.0
    }

    /// The 12-digit zero-padded wire form.
    pub fn to_digits(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        write_padded(self.0, &mut out);
        out
    }
}

/// System trace audit number (F11): 6 digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stan(u32);

impl Stan {
    /// The largest STAN.
    pub const MAX: u32 = 999_999;

    /// A STAN, refusing values over 6 digits.
    pub fn new(value: u32) -> Result<Self, ValueError> {
        if value > Self::MAX {
            return Err(ValueError::new("STAN", "over 6 digits"));
        }
        Ok(Stan(value))
    }

    /// Parse exactly 6 ASCII digits.
    pub fn parse(value: &[u8]) -> Result<Self, ValueError> {
        let d = digits::<6>("STAN", value)?;
        Ok(Stan(parse_u64("STAN", &d)? as u32))
    }

    /// The numeric value.
    pub fn value(&self) -> u32 {
        self.0
    }

    /// The 6-digit wire form.
    pub fn to_digits(&self) -> [u8; 6] {
        let mut out = [0u8; 6];
        write_padded(u64::from(self.0), &mut out);
        out
    }

    /// The next STAN, wrapping from 999999 to 000001 (000000 is never assigned).
    pub fn next(&self) -> Stan {
        if self.0 >= Self::MAX {
            Stan(1)
        } else {
            Stan(self.0 + 1)
        }
    }
}

impl fmt::Display for Stan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

/// ISO 4217 numeric currency code (F49), e.g. 344 for HKD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(u16);

/// Currencies the switch knows by alphabetic code (for ISO 20022 and JSON banks).
const CURRENCIES: &[(u16, &str)] = &[
    (344, "HKD"),
    (156, "CNY"),
    (840, "USD"),
    (978, "EUR"),
    (826, "GBP"),
    (392, "JPY"),
    (702, "SGD"),
    (446, "MOP"),
];

impl Currency {
    /// Hong Kong dollar.
    pub const HKD: Currency = Currency(344);
    /// Renminbi.
    pub const CNY: Currency = Currency(156);

    /// Parse exactly 3 ASCII digits.
    pub fn parse(value: &[u8]) -> Result<Self, ValueError> {
        let d = digits::<3>("currency", value)?;
        Ok(Currency(parse_u64("currency", &d)? as u16))
    }

    /// Look up an ISO 4217 alphabetic code the switch knows (`HKD`, `CNY`, ...).
    pub fn from_alpha(code: &str) -> Result<Self, ValueError> {
        CURRENCIES
            .iter()
            .find(|(_, a)| *a == code)
            .map(|(n, _)| Currency(*n))
            .ok_or(ValueError::new("currency", "unknown alphabetic code"))
    }

    /// The numeric code.
    pub fn numeric(&self) -> u16 {
        self.0
    }

    /// The 3-digit wire form.
    pub fn to_digits(&self) -> [u8; 3] {
        let mut out = [0u8; 3];
        write_padded(u64::from(self.0), &mut out);
        out
    }

    /// The ISO 4217 alphabetic code, when the switch knows it.
    pub fn alpha(&self) -> Option<&'static str> {
        CURRENCIES
            .iter()
            .find(|(n, _)| *n == self.0)
            .map(|(_, a)| *a)
    }
}

/// Response code (F39): 2 alphanumeric characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResponseCode([u8; 2]);

impl ResponseCode {
    /// `00` approved.
    pub const APPROVED: ResponseCode = ResponseCode(*b"00");
    /// `05` do not honour.
    pub const DO_NOT_HONOUR: ResponseCode = ResponseCode(*b"05");
    /// `09` request in progress: not final (ISO 20022 `PDNG`).
    pub const PENDING: ResponseCode = ResponseCode(*b"09");
    /// `12` invalid transaction.
    pub const INVALID_TRANSACTION: ResponseCode = ResponseCode(*b"12");
    /// `13` invalid amount.
    pub const INVALID_AMOUNT: ResponseCode = ResponseCode(*b"13");
    /// `14` unknown proxy or account.
    pub const UNKNOWN_ACCOUNT: ResponseCode = ResponseCode(*b"14");
    /// `25` original transaction not found (reversals, inquiries).
    pub const ORIGINAL_NOT_FOUND: ResponseCode = ResponseCode(*b"25");
    /// `30` format error.
    pub const FORMAT_ERROR: ResponseCode = ResponseCode(*b"30");
    /// `51` insufficient funds.
    pub const INSUFFICIENT_FUNDS: ResponseCode = ResponseCode(*b"51");
    /// `57` transaction not permitted.
    pub const NOT_PERMITTED: ResponseCode = ResponseCode(*b"57");
    /// `68` response received too late: outcome unknown, reversal under way.
    pub const LATE: ResponseCode = ResponseCode(*b"68");
    /// `91` destination bank unavailable.
    pub const BANK_UNAVAILABLE: ResponseCode = ResponseCode(*b"91");
    /// `94` duplicate key with different content.
    pub const DUPLICATE: ResponseCode = ResponseCode(*b"94");
    /// `96` system malfunction.
    pub const SYSTEM_MALFUNCTION: ResponseCode = ResponseCode(*b"96");
    /// `63` security violation: the message's MAC or signature did not verify.
    pub const SECURITY_VIOLATION: ResponseCode = ResponseCode(*b"63");

    /// Parse exactly 2 alphanumeric characters.
    pub fn parse(value: &[u8]) -> Result<Self, ValueError> {
        if value.len() != 2 {
            return Err(ValueError::new("response code", "wrong length"));
        }
        if !CharClass::An.admits(value) {
            return Err(ValueError::new(
                "response code",
                "character outside its class",
            ));
        }
        Ok(ResponseCode([value[0], value[1]]))
    }

    /// Whether the transaction was approved.
    pub fn is_approved(&self) -> bool {
        *self == Self::APPROVED
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are ever stored (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The code as bytes.
    pub fn as_bytes(&self) -> &[u8; 2] {
        &self.0
    }
}

impl fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseCode({})", self.as_str())
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Network management information code (F70).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkCode {
    /// `001` sign-on.
    SignOn,
    /// `002` sign-off.
    SignOff,
    /// `301` echo test.
    Echo,
    /// `161` key change (accepted, not acted on by the codec).
    KeyChange,
}

impl NetworkCode {
    /// Parse the 3-digit code.
    pub fn parse(value: &[u8]) -> Result<Self, ValueError> {
        match value {
            b"001" => Ok(NetworkCode::SignOn),
            b"002" => Ok(NetworkCode::SignOff),
            b"301" => Ok(NetworkCode::Echo),
            b"161" => Ok(NetworkCode::KeyChange),
            _ => Err(ValueError::new("network management code", "unknown code")),
        }
    }

    /// The 3-digit wire form.
    pub fn to_digits(&self) -> [u8; 3] {
        match self {
            NetworkCode::SignOn => *b"001",
            NetworkCode::SignOff => *b"002",
            NetworkCode::Echo => *b"301",
            NetworkCode::KeyChange => *b"161",
        }
    }
}

/// Primary account number (F2): 12 to 19 digits. Masked as first 6 / last 4.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pan(ArrayString<19>);

impl Pan {
    /// Parse 12 to 19 digits.
    pub fn parse(value: &[u8]) -> Result<Self, ValueError> {
        inline_text::<19>("PAN", value, 12, CharClass::N).map(Pan)
    }

    /// The clear PAN, for the wire and the HSM only: never log it.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The issuer identification number (first 6 or 8 digits) used for BIN routing.
    pub fn bin(&self, digits: usize) -> &str {
        &self.0[..digits.min(self.0.len())]
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0.as_str();
        f.write_str(&p[..6])?;
        for _ in 0..p.len() - 10 {
            f.write_str("*")?;
        }
        f.write_str(&p[p.len() - 4..])
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({self})")
    }
}

/// Kind of FPS proxy id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyKind {
    /// Mobile number, `+852-91234567`.
    Mobile,
    /// E-mail address.
    Email,
    /// FPS identifier, 7 to 9 digits.
    FpsId,
    /// Hong Kong identity card number, e.g. `A1234567`.
    Hkid,
}

impl ProxyKind {
    /// The 4-letter prefix used on the wire (`MOBN`, `EMAL`, `FPID`, `HKID`).
    pub fn prefix(&self) -> &'static str {
        match self {
            ProxyKind::Mobile => "MOBN",
            ProxyKind::Email => "EMAL",
            ProxyKind::FpsId => "FPID",
            ProxyKind::Hkid => "HKID",
        }
    }

    fn from_prefix(p: &[u8]) -> Option<Self> {
        match p {
            b"MOBN" => Some(ProxyKind::Mobile),
            b"EMAL" => Some(ProxyKind::Email),
            b"FPID" => Some(ProxyKind::FpsId),
            b"HKID" => Some(ProxyKind::Hkid),
            _ => None,
        }
    }
}

/// FPS proxy id (F120): `KIND:value`, e.g. `MOBN:+852-91234567`.
/// Personal data: masked to kind and last 2 characters in `Debug`/`Display`.
/// The value is held on the heap: 254 inline bytes would weigh on every
/// transaction that moves, with or without a proxy.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyId {
    kind: ProxyKind,
    value: Box<str>,
}

impl ProxyId {
    /// Parse the wire form `KIND:value`.
    pub fn parse(wire: &[u8]) -> Result<Self, ValueError> {
        const WHAT: &str = "proxy id";
        if wire.len() < 6 || wire[4] != b':' {
            return Err(ValueError::new(WHAT, "not KIND:value"));
        }
        let kind = ProxyKind::from_prefix(&wire[..4]).ok_or(ValueError::new(
            WHAT,
            "unknown kind (MOBN, EMAL, FPID, HKID)",
        ))?;
        Self::new(kind, &wire[5..])
    }

    /// A proxy of the given kind, checking the value's shape for that kind.
    pub fn new(kind: ProxyKind, value: &[u8]) -> Result<Self, ValueError> {
        const WHAT: &str = "proxy id";
        let ok = match kind {
            // +CCC-NNNN..., e.g. +852-91234567
            ProxyKind::Mobile => match value.iter().position(|b| *b == b'-') {
                Some(d) if value.first() == Some(&b'+') && (2..=4).contains(&d) => {
                    let (country, number) = (&value[1..d], &value[d + 1..]);
                    CharClass::N.admits(country)
                        && (6..=15).contains(&number.len())
                        && CharClass::N.admits(number)
                }
                _ => false,
            },
            ProxyKind::Email => {
                let at = value.iter().filter(|b| **b == b'@').count();
                at == 1
                    && value.first() != Some(&b'@')
                    && value.last() != Some(&b'@')
                    && value.iter().all(|b| (0x21..=0x7e).contains(b))
            }
            ProxyKind::FpsId => (7..=9).contains(&value.len()) && CharClass::N.admits(value),
            ProxyKind::Hkid => {
                (8..=9).contains(&value.len())
                    && value[0].is_ascii_uppercase()
                    && CharClass::An.admits(value)
            }
        };
        if !ok {
            return Err(ValueError::new(WHAT, "value does not fit its kind"));
        }
        let text = inline_text::<254>(WHAT, value, 1, CharClass::Ans)?;
        Ok(ProxyId {
            kind,
            value: text.as_str().into(),
        })
    }

    /// The kind of proxy.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The clear value without the kind prefix: never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Write the wire form `KIND:value` into `out`, returning its length.
    /// `out` must hold at least 259 bytes.
    pub fn write_wire(&self, out: &mut [u8]) -> usize {
        let v = self.value.as_bytes();
        out[..4].copy_from_slice(self.kind.prefix().as_bytes());
        out[4] = b':';
        out[5..5 + v.len()].copy_from_slice(v);
        5 + v.len()
    }

    /// Largest length of the wire form.
    pub const MAX_WIRE_LEN: usize = 5 + 254;
}

impl fmt::Display for ProxyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.prefix())?;
        f.write_str(":")?;
        write_masked_tail(f, &self.value, 2)
    }
}

impl fmt::Debug for ProxyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyId({self})")
    }
}

/// UETR: the unique end-to-end transaction reference, a UUID (ISO 20022).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uetr([u8; 16]);

impl Uetr {
    /// A UETR from 16 raw bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Uetr(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parse the canonical form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn parse(text: &[u8]) -> Result<Self, ValueError> {
        const WHAT: &str = "UETR";
        if text.len() != 36 {
            return Err(ValueError::new(WHAT, "wrong length"));
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, c) in text.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if *c != b'-' {
                    return Err(ValueError::new(WHAT, "misplaced dash"));
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(ValueError::new(WHAT, "non-hex character")),
            };
            out[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
            nibbles += 1;
        }
        Ok(Uetr(out))
    }

    /// The canonical lowercase text form.
    pub fn to_text(&self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 36];
        let mut j = 0;
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[j] = b'-';
                j += 1;
            }
            out[j] = HEX[usize::from(b >> 4)];
            out[j + 1] = HEX[usize::from(b & 0xf)];
            j += 2;
        }
        out
    }
}

impl fmt::Display for Uetr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.to_text();
        // Only ASCII hex digits and dashes are written by `to_text`.
        f.write_str(std::str::from_utf8(&t).unwrap_or(""))
    }
}

impl fmt::Debug for Uetr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uetr({self})")
    }
}

/// A message authentication code or signature as carried in F64/F128:
/// up to 32 bytes, never shown in logs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct MacValue(ArrayVec<u8, 32>);

impl MacValue {
    /// A MAC from its raw bytes (at most 32).
    pub fn new(bytes: &[u8]) -> Result<Self, ValueError> {
        ArrayVec::try_from(bytes)
            .map(MacValue)
            .map_err(|_| ValueError::new("MAC", "over 32 bytes"))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for MacValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacValue(<{} bytes>)", self.0.len())
    }
}

/// A detached digital signature over a message body (ISO 20022 `Sgntr`,
/// JSON `signature`): raw bytes (ECDSA P-256 is `r || s`, 64 bytes), at
/// most [`SignatureValue::MAX_LEN`], never shown in logs. Shared, so cloning
/// a transaction that carries one does not copy it.
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureValue(bytes::Bytes);

impl SignatureValue {
    /// Longest signature carried (RSA-4096).
    pub const MAX_LEN: usize = 512;

    /// A signature from its raw bytes (1 to [`SignatureValue::MAX_LEN`]).
    pub fn new(bytes: &[u8]) -> Result<Self, ValueError> {
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return Err(ValueError::new("signature", "must be 1 to 512 bytes"));
        }
        Ok(SignatureValue(bytes::Bytes::copy_from_slice(bytes)))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SignatureValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureValue(<{} bytes>)", self.0.len())
    }
}

/// The exact bytes a received MAC or signature covers, as
/// [`MessageCodec::decode_authenticated`](crate::MessageCodec::decode_authenticated)
/// cut them out of the message. Never encoded; `Debug` shows only the length
/// (the bytes hold account numbers).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthInput(bytes::Bytes);

impl AuthInput {
    /// Wraps the covered bytes.
    pub fn new(bytes: bytes::Bytes) -> Self {
        AuthInput(bytes)
    }

    /// The covered bytes (cheap clone).
    pub fn bytes(&self) -> bytes::Bytes {
        self.0.clone()
    }

    /// The covered bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for AuthInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthInput(<{} bytes>)", self.0.len())
    }
}

/// Original data elements (F90): identify the transaction a reversal,
/// advice or status inquiry refers to. Wire form: 42 digits,
/// MTI(4) STAN(6) transmission date-time(10) acquirer(11) forwarder(11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginalData {
    /// MTI of the original message.
    pub mti: Mti,
    /// STAN of the original message.
    pub stan: Stan,
    /// Transmission date and time of the original message.
    pub transmitted_at: TransmissionDateTime,
    /// Acquiring institution of the original, zero-padded to 11 digits.
    pub acquirer: [u8; 11],
    /// Forwarding institution of the original, zero-padded to 11 digits.
    pub forwarder: [u8; 11],
}

impl OriginalData {
    /// Length of the wire form.
    pub const WIRE_LEN: usize = 42;

    /// Parse the 42-digit wire form.
    pub fn parse(v: &[u8]) -> Result<Self, ValueError> {
        let d = digits::<42>("original data elements", v)?;
        let mut acquirer = [0u8; 11];
        let mut forwarder = [0u8; 11];
        acquirer.copy_from_slice(&d[20..31]);
        forwarder.copy_from_slice(&d[31..42]);
        Ok(OriginalData {
            mti: Mti::parse(&d[0..4])?,
            stan: Stan::parse(&d[4..10])?,
            transmitted_at: TransmissionDateTime::parse(&d[10..20])?,
            acquirer,
            forwarder,
        })
    }

    /// The 42-digit wire form.
    pub fn to_digits(&self) -> [u8; 42] {
        let mut out = [0u8; 42];
        out[0..4].copy_from_slice(self.mti.as_bytes());
        out[4..10].copy_from_slice(&self.stan.to_digits());
        out[10..20].copy_from_slice(self.transmitted_at.as_bytes());
        out[20..31].copy_from_slice(&self.acquirer);
        out[31..42].copy_from_slice(&self.forwarder);
        out
    }

    /// Right-align an institution id into the 11-digit F90 slot.
    pub fn pad_institution(id: Option<&InstitutionId>) -> [u8; 11] {
        let mut out = [b'0'; 11];
        if let Some(id) = id {
            let s = id.as_str().as_bytes();
            out[11 - s.len()..].copy_from_slice(s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_values_mask_in_debug_and_display() {
        let acct = Account::parse(b"123456789012").unwrap();
        assert_eq!(format!("{acct}"), "****9012");
        assert_eq!(format!("{acct:?}"), "Account(****9012)");
        let pan = Pan::parse(b"4761739001010010").unwrap();
        assert_eq!(format!("{pan}"), "476173******0010");
        let proxy = ProxyId::parse(b"MOBN:+852-91234567").unwrap();
        assert_eq!(format!("{proxy:?}"), "ProxyId(MOBN:****67)");
        assert!(!format!("{proxy}").contains("9123"));
        let name = PartyName::parse("Chan Tai Man").unwrap();
        assert!(!format!("{name:?}{name}").contains("Chan"));
        // Short values hide everything rather than most of themselves.
        assert_eq!(format!("{}", Account::parse(b"1234").unwrap()), "****");
    }

    #[test]
    fn transmission_date_times_of_unix_times() {
        assert_eq!(TransmissionDateTime::at_unix_secs(0).as_str(), "0101000000");
        // 2024-02-29T13:45:07Z
        let leap = TransmissionDateTime::at_unix_secs(1_709_214_307);
        assert_eq!(leap.as_str(), "0229134507");
        // 2024-02-29T23:59:58Z, a second before a day ends.
        let late = TransmissionDateTime::at_unix_secs(1_709_251_198);
        assert_eq!(late, TransmissionDateTime::parse(b"0229235958").unwrap());
    }

    #[test]
    fn settlement_dates_from_civil_dates() {
        let d = SettlementDate::from_civil(2026, 11, 24).unwrap();
        assert_eq!(d.as_bytes(), b"20261124");
        assert_eq!(
            SettlementDate::from_civil(7, 1, 2).unwrap().as_bytes(),
            b"00070102"
        );
        assert!(SettlementDate::from_civil(-1, 1, 1).is_err());
        assert!(SettlementDate::from_civil(10_000, 1, 1).is_err());
        assert!(SettlementDate::from_civil(2026, 13, 1).is_err());
        assert!(SettlementDate::from_civil(2026, 0, 1).is_err());
        assert!(SettlementDate::from_civil(2026, 1, 32).is_err());
        // The same check a parsed date gets.
        assert_eq!(
            SettlementDate::from_civil(2026, 2, 28),
            SettlementDate::parse(b"20260228")
        );
    }

    #[test]
    fn padded_digits_keep_the_low_digits() {
        let mut out = [0u8; 6];
        write_padded(42, &mut out);
        assert_eq!(&out, b"000042");
        write_padded(1_234_567, &mut out);
        assert_eq!(&out, b"234567");
        let mut all = [0u8; 20];
        write_padded(u64::MAX, &mut all);
        assert_eq!(&all[..], u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn plain_values_honour_width_and_fill() {
        let bank = BankCode::parse(b"003").unwrap();
        assert_eq!(format!("BANK{bank:0>4}"), "BANK0003");
        assert_eq!(format!("[{bank:<5}]"), "[003  ]");
        assert_eq!(format!("{:>3}", ResponseCode::APPROVED), " 00");
    }

    #[test]
    fn proxies_of_each_kind_parse_and_bad_ones_do_not() {
        for ok in [
            &b"MOBN:+852-91234567"[..],
            b"EMAL:name@example.com",
            b"FPID:1234567",
            b"HKID:A1234567",
        ] {
            let p = ProxyId::parse(ok).unwrap();
            let mut buf = [0u8; ProxyId::MAX_WIRE_LEN];
            let n = p.write_wire(&mut buf);
            assert_eq!(&buf[..n], ok);
        }
        for bad in [
            &b"MOBN:91234567"[..],
            b"EMAL:nobody",
            b"FPID:12",
            b"XXXX:1",
            b"MOBN",
            b"",
        ] {
            assert!(ProxyId::parse(bad).is_err(), "{:?}", bad);
        }
    }

    #[test]
    fn numbers_refuse_non_digits_and_overflow() {
        assert!(AmountMinor::parse(b"00000000100a").is_err());
        assert!(AmountMinor::parse(b"1234567890123").is_err());
        assert_eq!(AmountMinor::parse(b"000000012345").unwrap().minor(), 12345);
        assert_eq!(&AmountMinor::new(5).unwrap().to_digits(), b"000000000005");
        assert!(Stan::parse(b"12345").is_err());
        assert!(Stan::parse(b"-12345").is_err());
        assert_eq!(Stan::new(999_999).unwrap().next().value(), 1);
        assert!(TransmissionDateTime::parse(b"1301120000").is_err());
        assert!(TransmissionDateTime::parse(b"1123250000").is_err());
        assert!(TransmissionDateTime::parse(b"1123235959").is_ok());
        assert_eq!(Currency::HKD.alpha(), Some("HKD"));
        assert_eq!(Currency::from_alpha("CNY").unwrap(), Currency::CNY);
    }

    #[test]
    fn mti_functions() {
        assert_eq!(
            Mti::CREDIT_TRANSFER.response(),
            Mti::CREDIT_TRANSFER_RESPONSE
        );
        assert_eq!(Mti::REVERSAL.repeat().as_str(), "0401");
        assert!(Mti::REVERSAL.repeat().is_repeat());
        assert_eq!(Mti::REVERSAL.repeat().response(), Mti::REVERSAL_RESPONSE);
        assert_eq!(Mti::REVERSAL_RESPONSE.request(), Mti::REVERSAL);
        assert!(Mti::parse(b"0000").is_err());
        assert!(Mti::parse(b"1200").is_ok());
    }

    #[test]
    fn uetr_and_original_data_round_trip() {
        let u = Uetr::parse(b"eb6305c9-1f7f-49de-aed0-16487c27b42d").unwrap();
        assert_eq!(&u.to_text(), b"eb6305c9-1f7f-49de-aed0-16487c27b42d");
        assert!(Uetr::parse(b"eb6305c9x1f7f-49de-aed0-16487c27b42d").is_err());
        let od = b"020012345611231200000000000012300000000000";
        let o = OriginalData::parse(od).unwrap();
        assert_eq!(o.stan.value(), 123456);
        assert_eq!(&o.to_digits(), od);
    }
}
