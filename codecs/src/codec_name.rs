//! The name a config gives a bank's interface standard (`codec = "..."`),
//! read the same way by the switch and the bank simulator.

use crate::iso8583;

/// A bank's interface standard, named `iso8583:<dialect>`, `iso20022` or
/// `json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecName {
    /// An ISO 8583 dialect, by name; [`CodecName::parse_shipped`] only
    /// returns the ones shipped in `configs/dialects/`.
    Iso8583(String),
    /// ISO 20022 XML.
    Iso20022,
    /// The JSON bank API.
    Json,
}

impl CodecName {
    /// Parse `iso8583:<dialect>` (any non-empty dialect name), `iso20022` or
    /// `json`; `None` for anything else.
    ///
    /// Only the syntax is checked, so a config validator can say "unknown
    /// dialect" (and list the shipped ones) apart from "unknown codec".
    pub fn parse(s: &str) -> Option<CodecName> {
        match s {
            "iso20022" => Some(CodecName::Iso20022),
            "json" => Some(CodecName::Json),
            _ => s
                .strip_prefix("iso8583:")
                .filter(|d| !d.is_empty())
                .map(|d| CodecName::Iso8583(d.to_owned())),
        }
    }

    /// As [`CodecName::parse`], and `None` as well for an ISO 8583 dialect
    /// not shipped in `configs/dialects/` (see [`iso8583::builtin_names`]).
    pub fn parse_shipped(s: &str) -> Option<CodecName> {
        CodecName::parse(s).filter(CodecName::is_shipped)
    }

    /// Whether this codec can be built without a dialect file of one's own:
    /// always for ISO 20022 and JSON, for ISO 8583 when the dialect is one of
    /// [`iso8583::builtin_names`].
    pub fn is_shipped(&self) -> bool {
        match self {
            CodecName::Iso8583(dialect) => iso8583::builtin_names().any(|n| n == dialect),
            CodecName::Iso20022 | CodecName::Json => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_checks_only_the_syntax() {
        assert_eq!(CodecName::parse("json"), Some(CodecName::Json));
        assert_eq!(CodecName::parse("iso20022"), Some(CodecName::Iso20022));
        assert_eq!(
            CodecName::parse("iso8583:canonical"),
            Some(CodecName::Iso8583("canonical".into()))
        );
        assert_eq!(
            CodecName::parse("iso8583:no-such-dialect"),
            Some(CodecName::Iso8583("no-such-dialect".into()))
        );
        for bad in ["", "iso8583:", "iso8583", "JSON", "xml", " json"] {
            assert_eq!(CodecName::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parse_shipped_refuses_unknown_dialects() {
        for name in iso8583::builtin_names() {
            let text = format!("iso8583:{name}");
            assert_eq!(
                CodecName::parse_shipped(&text),
                Some(CodecName::Iso8583(name.into()))
            );
        }
        assert_eq!(CodecName::parse_shipped("json"), Some(CodecName::Json));
        assert_eq!(
            CodecName::parse_shipped("iso20022"),
            Some(CodecName::Iso20022)
        );
        assert_eq!(CodecName::parse_shipped("iso8583:no-such-dialect"), None);
        assert_eq!(CodecName::parse_shipped("iso8583:"), None);
    }
}
