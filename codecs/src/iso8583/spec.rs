//! Dialect files: the data that describes one bank's ISO 8583.
//!
//! A dialect file (`configs/dialects/*.toml`) gives the layout of every field
//! the bank may send (length type, maximum, content class, data and
//! length-prefix encodings), the MTI and bitmap encodings, an optional fixed
//! header, MTI renumbering (e.g. 1987 `0800` = 1993 `1804`) and the map from
//! canonical fields to field numbers. A new bank is a new file, not new code.
//!
//! ```toml
//! name = "example"
//! mti = "ascii"             # ascii | bcd | ebcdic
//! bitmap = "hex"            # hex | binary
//! header_hex = ""           # fixed header bytes, e.g. a 5-byte TPDU "6000010000"
//! default_data = "ascii"    # ascii | ebcdic | bcd | binary
//! default_prefix = "ascii"  # ascii | ebcdic | bcd | binary
//! unmapped = "ignore"       # defined fields with no canonical meaning: ignore | reject
//! [mti_map]                 # canonical = dialect; identity when absent
//! "0800" = "1804"
//! [fields]
//! 2 = { kind = "llvar", max = 19, class = "n" }
//! 4 = { kind = "fixed", len = 12, class = "n", data = "bcd" }
//! [map]
//! pan = 2
//! amount = 4
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::canonical::CanonicalField;
use crate::model::{CharClass, Mti};

/// Encoding of the 4-digit MTI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtiEncoding {
    /// 4 ASCII digits.
    Ascii,
    /// 2 bytes of packed BCD.
    Bcd,
    /// 4 EBCDIC digits.
    Ebcdic,
}

/// Encoding of the primary and secondary bitmaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BitmapEncoding {
    /// 16 hex ASCII characters each.
    Hex,
    /// 8 raw bytes each.
    Binary,
}

/// Encoding of a field's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataEncoding {
    /// One ASCII byte per character.
    Ascii,
    /// One EBCDIC (code page 037) byte per character.
    Ebcdic,
    /// Packed BCD, two digits per byte; lengths count digits.
    Bcd,
    /// Raw bytes (class `b` only).
    Binary,
}

/// Encoding of a variable field's length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefixEncoding {
    /// ASCII digits (2, 3 or 4 bytes).
    Ascii,
    /// EBCDIC digits (2, 3 or 4 bytes).
    Ebcdic,
    /// Packed BCD (1 byte for LL, 2 for LLL and LLLL).
    Bcd,
    /// Big-endian binary (1 byte for LL, 2 for LLL and LLLL).
    Binary,
}

/// Where the pad nibble of an odd-length BCD value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BcdPad {
    /// Pad nibble `0` first (right-justified digits), the common choice.
    #[default]
    Left,
    /// Pad nibble last (`F` on encode; `F` or `0` accepted on decode).
    Right,
}

/// Whether a field is fixed or variable, and its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldLength {
    /// Exactly this many units.
    Fixed(u16),
    /// A length prefix of `digits` (2, 3 or 4) digits, then at most `max` units.
    Var {
        /// LL = 2, LLL = 3, LLLL = 4.
        digits: u8,
        /// Largest length allowed.
        max: u16,
    },
}

/// The layout of one field. Lengths count units: digits for BCD data,
/// characters for ASCII/EBCDIC, bytes for binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Fixed or variable length.
    pub length: FieldLength,
    /// Content class checked on decode and encode.
    pub class: CharClass,
    /// Data encoding.
    pub data: DataEncoding,
    /// Length-prefix encoding (variable fields).
    pub prefix: PrefixEncoding,
    /// Pad side for odd-length BCD.
    pub pad: BcdPad,
}

impl FieldSpec {
    /// Largest number of units the field may carry.
    pub fn max_units(&self) -> usize {
        match self.length {
            FieldLength::Fixed(n) => usize::from(n),
            FieldLength::Var { max, .. } => usize::from(max),
        }
    }
}

/// What to do with a field the dialect lays out but does not map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unmapped {
    /// Check its format, then drop it (pass-through of extra fields).
    #[default]
    Ignore,
    /// Refuse the message.
    Reject,
}

/// The dialect file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DialectFile {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub mti: MtiEncoding,
    pub bitmap: BitmapEncoding,
    #[serde(default)]
    pub header_hex: String,
    #[serde(default = "ascii_data")]
    pub default_data: DataEncoding,
    #[serde(default = "ascii_prefix")]
    pub default_prefix: PrefixEncoding,
    #[serde(default)]
    pub unmapped: Unmapped,
    #[serde(default)]
    pub mti_map: BTreeMap<String, String>,
    pub fields: BTreeMap<String, FieldFile>,
    #[serde(default)]
    pub map: BTreeMap<String, u16>,
    #[serde(default)]
    pub translate: BTreeMap<String, TranslateFile>,
}

/// A value translation table as written: canonical value = dialect value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TranslateFile {
    pub values: BTreeMap<String, String>,
    #[serde(default)]
    pub unknown_decodes_as: Option<String>,
}

/// Value translation of one canonical field (e.g. 2-digit response codes to
/// 1993 3-digit action codes). Both directions are one-to-one.
#[derive(Debug, Clone)]
pub(crate) struct Translation {
    /// (canonical, dialect) pairs.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Canonical value for dialect values not in `pairs`; refused when absent.
    unknown: Option<Vec<u8>>,
}

impl Translation {
    /// The dialect's value for a canonical one.
    pub fn to_dialect(&self, canonical: &[u8]) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(c, _)| c == canonical)
            .map(|(_, d)| d.as_slice())
    }

    /// The canonical value for one of the dialect's.
    pub fn to_canonical(&self, dialect: &[u8]) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(_, d)| d == dialect)
            .map(|(c, _)| c.as_slice())
            .or(self.unknown.as_deref())
    }
}

fn ascii_data() -> DataEncoding {
    DataEncoding::Ascii
}

fn ascii_prefix() -> PrefixEncoding {
    PrefixEncoding::Ascii
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KindFile {
    Fixed,
    Llvar,
    Lllvar,
    Llllvar,
}

/// One field as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FieldFile {
    pub kind: KindFile,
    #[serde(default)]
    pub len: Option<u16>,
    #[serde(default)]
    pub max: Option<u16>,
    pub class: CharClass,
    #[serde(default)]
    pub data: Option<DataEncoding>,
    #[serde(default)]
    pub prefix: Option<PrefixEncoding>,
    #[serde(default)]
    pub pad: BcdPad,
    /// Human name, for documentation only.
    #[serde(default)]
    #[allow(dead_code)]
    pub name: Option<String>,
}

/// Every problem found in a dialect file, each with its key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dialect {}: {}", .dialect, .problems.join("; "))]
pub struct DialectError {
    /// The dialect's name or file.
    pub dialect: String,
    /// One `key.path: reason` line per problem.
    pub problems: Vec<String>,
}

/// A dialect after validation: what the engine runs on.
#[derive(Debug, Clone)]
pub struct Dialect {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) header: Vec<u8>,
    pub(crate) mti: MtiEncoding,
    pub(crate) bitmap: BitmapEncoding,
    pub(crate) unmapped: Unmapped,
    /// Index = field number; 0 and 1 are never set.
    pub(crate) fields: [Option<FieldSpec>; 129],
    /// Canonical MTI -> dialect MTI, only where they differ.
    pub(crate) mti_map: Vec<(Mti, Mti)>,
    /// Index = field number: which canonical field it carries.
    pub(crate) canonical_of: [Option<CanonicalField>; 129],
    /// Mapped (field number, canonical field), ascending by field number.
    pub(crate) mapped: Vec<(u8, CanonicalField)>,
    /// Index = field number: value translation for that field, if any.
    pub(crate) translation_of: [Option<Arc<Translation>>; 129],
}

impl Dialect {
    /// Load a dialect from TOML text, reporting every problem at once.
    pub fn from_toml(text: &str) -> Result<Dialect, DialectError> {
        let file: DialectFile = toml::from_str(text).map_err(|e| DialectError {
            dialect: "<unparsed>".into(),
            problems: vec![
                e.message().to_string()
                    + &e.span()
                        .map(|s| format!(" (at byte {})", s.start))
                        .unwrap_or_default(),
            ],
        })?;
        Self::build(file)
    }

    fn build(file: DialectFile) -> Result<Dialect, DialectError> {
        let mut problems = Vec::new();
        let header = parse_hex(&file.header_hex).unwrap_or_else(|| {
            problems.push("header_hex: not an even number of hex digits".into());
            Vec::new()
        });
        let mut fields: [Option<FieldSpec>; 129] = [None; 129];
        for (key, f) in &file.fields {
            let at = format!("fields.{key}");
            match key.parse::<usize>() {
                Ok(n) if (2..=128).contains(&n) => match field_spec(f, &file, &at) {
                    Ok(spec) => fields[n] = Some(spec),
                    Err(mut p) => problems.append(&mut p),
                },
                _ => problems.push(format!("{at}: field number must be 2 to 128")),
            }
        }
        let mut mti_map = Vec::new();
        for (canon, bank) in &file.mti_map {
            match (Mti::parse(canon.as_bytes()), Mti::parse(bank.as_bytes())) {
                (Ok(c), Ok(b)) => mti_map.push((c, b)),
                _ => problems.push(format!("mti_map.{canon}: both sides must be 4-digit MTIs")),
            }
        }
        let mut canonical_of: [Option<CanonicalField>; 129] = [None; 129];
        let mut mapped = Vec::new();
        for (name, number) in &file.map {
            let at = format!("map.{name}");
            let Some(cf) = CanonicalField::from_name(name) else {
                problems.push(format!("{at}: unknown canonical field"));
                continue;
            };
            let n = usize::from(*number);
            if !(2..=128).contains(&n) || fields[n].is_none() {
                problems.push(format!("{at}: field {number} is not laid out in [fields]"));
                continue;
            }
            if canonical_of[n].is_some() {
                problems.push(format!(
                    "{at}: field {number} already carries another canonical field"
                ));
                continue;
            }
            canonical_of[n] = Some(cf);
            mapped.push((n as u8, cf));
        }
        mapped.sort_by_key(|(n, _)| *n);
        let mut translation_of: [Option<Arc<Translation>>; 129] = std::array::from_fn(|_| None);
        for (name, t) in &file.translate {
            let at = format!("translate.{name}");
            let field = CanonicalField::from_name(name)
                .and_then(|cf| mapped.iter().find(|(_, c)| *c == cf));
            let Some((n, _)) = field else {
                problems.push(format!("{at}: not a canonical field mapped in [map]"));
                continue;
            };
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for (c, d) in &t.values {
                if pairs.iter().any(|(_, seen)| seen == d.as_bytes()) {
                    problems.push(format!(
                        "{at}.values.{c}: dialect value {d:?} is used twice"
                    ));
                }
                pairs.push((c.clone().into_bytes(), d.clone().into_bytes()));
            }
            translation_of[usize::from(*n)] = Some(Arc::new(Translation {
                pairs,
                unknown: t.unknown_decodes_as.clone().map(String::into_bytes),
            }));
        }
        if !problems.is_empty() {
            return Err(DialectError {
                dialect: file.name,
                problems,
            });
        }
        Ok(Dialect {
            description: file.description.unwrap_or_default(),
            name: file.name,
            header,
            mti: file.mti,
            bitmap: file.bitmap,
            unmapped: file.unmapped,
            fields,
            mti_map,
            canonical_of,
            mapped,
            translation_of,
        })
    }

    /// The dialect's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dialect's description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The layout of field `n`, if the dialect defines it.
    pub fn field(&self, n: u8) -> Option<&FieldSpec> {
        self.fields.get(usize::from(n)).and_then(Option::as_ref)
    }

    /// The fixed header written in front of every message.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// The field number carrying canonical field `cf`, if mapped.
    pub fn field_of(&self, cf: CanonicalField) -> Option<u8> {
        self.mapped.iter().find(|(_, c)| *c == cf).map(|(n, _)| *n)
    }

    /// The dialect's MTI for a canonical one.
    pub fn to_dialect_mti(&self, canonical: Mti) -> Mti {
        self.mti_map
            .iter()
            .find(|(c, _)| *c == canonical)
            .map_or(canonical, |(_, b)| *b)
    }

    /// The canonical MTI for one of the dialect's.
    pub fn to_canonical_mti(&self, dialect: Mti) -> Mti {
        self.mti_map
            .iter()
            .find(|(_, b)| *b == dialect)
            .map_or(dialect, |(c, _)| *c)
    }
}

fn field_spec(f: &FieldFile, file: &DialectFile, at: &str) -> Result<FieldSpec, Vec<String>> {
    let mut problems = Vec::new();
    let data = f.data.unwrap_or(if f.class == CharClass::B {
        DataEncoding::Binary
    } else {
        file.default_data
    });
    let length = match f.kind {
        KindFile::Fixed => match (f.len, f.max) {
            (Some(n), None) if (1..=999).contains(&n) => Some(FieldLength::Fixed(n)),
            _ => {
                problems.push(format!(
                    "{at}: a fixed field needs len (1 to 999) and no max"
                ));
                None
            }
        },
        kind => {
            let digits = match kind {
                KindFile::Llvar => 2u8,
                KindFile::Lllvar => 3,
                _ => 4,
            };
            let limit = 10u16.pow(u32::from(digits)) - 1;
            match (f.max, f.len) {
                (Some(max), None) if max >= 1 && max <= limit => {
                    Some(FieldLength::Var { digits, max })
                }
                _ => {
                    problems.push(format!(
                        "{at}: a variable field needs max (1 to {limit}) and no len"
                    ));
                    None
                }
            }
        }
    };
    match (f.class, data) {
        (CharClass::B, DataEncoding::Binary) => {}
        (CharClass::B, _) | (_, DataEncoding::Binary) => problems.push(format!(
            "{at}: binary data goes with class b and only with it"
        )),
        (CharClass::N | CharClass::Z, DataEncoding::Bcd) => {}
        (_, DataEncoding::Bcd) => problems.push(format!("{at}: BCD data needs class n or z")),
        _ => {}
    }
    match length {
        Some(length) if problems.is_empty() => Ok(FieldSpec {
            length,
            class: f.class,
            data,
            prefix: f.prefix.unwrap_or(file.default_prefix),
            pad: f.pad,
        }),
        _ => Err(problems),
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = Dialect::from_toml(
            r#"
            name = "broken"
            mti = "ascii"
            bitmap = "hex"
            header_hex = "abc"
            [mti_map]
            "0800" = "18x4"
            [fields]
            1 = { kind = "fixed", len = 8, class = "b" }
            3 = { kind = "llvar", len = 6, class = "n" }
            4 = { kind = "fixed", len = 12, class = "an", data = "bcd" }
            5 = { kind = "lllvar", max = 1000, class = "ans" }
            [map]
            amount = 4
            colour = 3
            stan = 11
            "#,
        )
        .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "header_hex",
            "mti_map.0800",
            "fields.1:",
            "fields.3:",
            "fields.4: BCD",
            "fields.5:",
            "map.colour: unknown",
            "map.stan: field 11",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            Dialect::from_toml("name='x'\nmti='ascii'\nbitmap='hex'\ncolour='red'\n[fields]\n")
                .unwrap_err();
        assert!(err.problems[0].contains("colour"), "{err}");
    }
}
