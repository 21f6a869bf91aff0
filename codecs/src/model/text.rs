//! Character classes of ISO 8583 content (`n`, `an`, `ans`, `z`, `b`) and the
//! inline, fixed-capacity text storage the canonical newtypes are built on.
//!
//! Values live inline (no heap) so that decoding a message allocates nothing.

use arrayvec::ArrayString;
use serde::Deserialize;

/// Content class of a field, as ISO 8583 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CharClass {
    /// Digits `0-9` only.
    N,
    /// Letters only.
    A,
    /// Letters and digits.
    An,
    /// Letters, digits and special characters: any printable ASCII incl. space.
    Ans,
    /// Track-2 style: digits, `=` and `D` separators.
    Z,
    /// Binary: any byte.
    B,
}

impl CharClass {
    /// Whether every byte of `value` belongs to this class.
    #[inline]
    pub fn admits(self, value: &[u8]) -> bool {
        match self {
            CharClass::N => value.iter().all(u8::is_ascii_digit),
            CharClass::A => value.iter().all(u8::is_ascii_alphabetic),
            CharClass::An => value.iter().all(u8::is_ascii_alphanumeric),
            CharClass::Ans => value.iter().all(|b| (0x20..=0x7e).contains(b)),
            CharClass::Z => value
                .iter()
                .all(|b| b.is_ascii_digit() || *b == b'=' || *b == b'D' || *b == b'd'),
            CharClass::B => true,
        }
    }

    /// Short name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            CharClass::N => "n",
            CharClass::A => "a",
            CharClass::An => "an",
            CharClass::Ans => "ans",
            CharClass::Z => "z",
            CharClass::B => "b",
        }
    }
}

/// Why a value was refused by a canonical newtype. Static text only: the
/// error never echoes the (possibly sensitive) value itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct ValueError {
    /// What kind of value was being parsed (e.g. "STAN").
    pub what: &'static str,
    /// Why it was refused.
    pub reason: &'static str,
}

impl ValueError {
    pub(crate) const fn new(what: &'static str, reason: &'static str) -> Self {
        ValueError { what, reason }
    }
}

/// Parse `value` into an inline string of capacity `N` after checking its
/// length bounds and character class.
pub(crate) fn inline_text<const N: usize>(
    what: &'static str,
    value: &[u8],
    min: usize,
    class: CharClass,
) -> Result<ArrayString<N>, ValueError> {
    if value.len() < min {
        return Err(ValueError::new(what, "too short"));
    }
    if value.len() > N {
        return Err(ValueError::new(what, "too long"));
    }
    // Binary content is never held as text.
    if class == CharClass::B || !class.admits(value) {
        return Err(ValueError::new(what, "character outside its class"));
    }
    let text = std::str::from_utf8(value).map_err(|_| ValueError::new(what, "not ASCII"))?;
    ArrayString::from(text).map_err(|_| ValueError::new(what, "too long"))
}

/// Write `last` trailing characters of `value` after a run of `*`, for
/// logging sensitive values (accounts, proxies, names).
pub(crate) fn write_masked_tail(
    f: &mut std::fmt::Formatter<'_>,
    value: &str,
    last: usize,
) -> std::fmt::Result {
    let keep = if value.len() > last * 2 { last } else { 0 };
    f.write_str("****")?;
    f.write_str(&value[value.len() - keep..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_admit_what_iso8583_says() {
        assert!(CharClass::N.admits(b"0123456789"));
        assert!(!CharClass::N.admits(b"12a"));
        assert!(!CharClass::N.admits(b"-1"));
        assert!(CharClass::An.admits(b"AB12"));
        assert!(!CharClass::An.admits(b"AB 12"));
        assert!(CharClass::Ans.admits(b"AB 12-/@"));
        assert!(!CharClass::Ans.admits(b"AB\x0012"));
        assert!(CharClass::Z.admits(b"4761739001010010=2212"));
        assert!(CharClass::B.admits(&[0, 255]));
    }

    #[test]
    fn inline_text_checks_bounds_and_class() {
        assert!(inline_text::<4>("x", b"12345", 0, CharClass::N).is_err());
        assert!(inline_text::<4>("x", b"1", 2, CharClass::N).is_err());
        assert!(inline_text::<4>("x", b"1a", 0, CharClass::N).is_err());
        assert_eq!(
            inline_text::<4>("x", b"12", 0, CharClass::N)
                .unwrap()
                .as_str(),
            "12"
        );
    }
}
