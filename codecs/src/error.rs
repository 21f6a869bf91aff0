//! The one error type of every codec. Static text only: building an error
//! never allocates and never echoes a (possibly sensitive) field value.

use std::fmt;

use crate::model::{ResponseCode, ValueError};

/// Where in a message a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The whole frame (length header, framing).
    Frame,
    /// The fixed header before the MTI (e.g. a TPDU).
    Header,
    /// The message type indicator.
    Mti,
    /// The primary or secondary bitmap.
    Bitmap,
    /// An ISO 8583 data element by number.
    Field(u8),
    /// An ISO 20022 element or JSON member, by path.
    Element(&'static str),
    /// The message as a whole (e.g. trailing bytes, unsupported kind).
    Message,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Frame => f.write_str("frame"),
            Location::Header => f.write_str("header"),
            Location::Mti => f.write_str("MTI"),
            Location::Bitmap => f.write_str("bitmap"),
            Location::Field(n) => write!(f, "field {n}"),
            Location::Element(p) => write!(f, "element {p}"),
            Location::Message => f.write_str("message"),
        }
    }
}

/// A decode or encode failure, naming the field and the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ends inside this item.
    #[error("{at}: truncated: needs {needed} bytes, {available} left")]
    Truncated {
        /// Where.
        at: Location,
        /// Bytes the item needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A length (prefix or value) is over the item's maximum.
    #[error("{at}: length {len} is over the maximum {max}")]
    TooLong {
        /// Where.
        at: Location,
        /// The length found.
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// A variable-length prefix is not a number in its encoding.
    #[error("{at}: length prefix is not a valid number")]
    BadLengthPrefix {
        /// Where.
        at: Location,
    },
    /// Content outside the item's character class (e.g. a letter in `n`).
    #[error("{at}: content outside class {class}")]
    BadContent {
        /// Where.
        at: Location,
        /// The class name (`n`, `an`, ...).
        class: &'static str,
    },
    /// A packed-BCD nibble above 9 (or a bad pad nibble).
    #[error("{at}: invalid packed BCD")]
    BadBcd {
        /// Where.
        at: Location,
    },
    /// The bitmap names a field the dialect does not define.
    #[error("{at}: not defined by the dialect")]
    UndefinedField {
        /// Where.
        at: Location,
    },
    /// A field the message kind requires is absent.
    #[error("{at}: mandatory field missing")]
    Missing {
        /// Where.
        at: Location,
    },
    /// A value was refused by its canonical type.
    #[error("{at}: {} {}", source.what, source.reason)]
    Value {
        /// Where.
        at: Location,
        /// Why.
        source: ValueError,
    },
    /// Anything else, with a static reason.
    #[error("{at}: {reason}")]
    Invalid {
        /// Where.
        at: Location,
        /// Why.
        reason: &'static str,
    },
}

impl CodecError {
    /// Where the problem is.
    pub fn location(&self) -> Location {
        match *self {
            CodecError::Truncated { at, .. }
            | CodecError::TooLong { at, .. }
            | CodecError::BadLengthPrefix { at }
            | CodecError::BadContent { at, .. }
            | CodecError::BadBcd { at }
            | CodecError::UndefinedField { at }
            | CodecError::Missing { at }
            | CodecError::Value { at, .. }
            | CodecError::Invalid { at, .. } => at,
        }
    }

    /// The response code the switch answers a request with when decoding it
    /// failed: `30` format error.
    pub fn response_code(&self) -> ResponseCode {
        ResponseCode::FORMAT_ERROR
    }

    /// Wrap a value error found at `at`.
    pub fn value(at: Location, source: ValueError) -> Self {
        CodecError::Value { at, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_field_and_reason() {
        let e = CodecError::BadContent {
            at: Location::Field(4),
            class: "n",
        };
        assert_eq!(e.to_string(), "field 4: content outside class n");
        let e = CodecError::Truncated {
            at: Location::Field(102),
            needed: 12,
            available: 3,
        };
        assert_eq!(
            e.to_string(),
            "field 102: truncated: needs 12 bytes, 3 left"
        );
        assert_eq!(e.response_code(), ResponseCode::FORMAT_ERROR);
    }
}
