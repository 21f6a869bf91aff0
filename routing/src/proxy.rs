//! FPS proxy directory: which bank holds the account behind a proxy id
//! (mobile number, e-mail, FPS id, HKID).
//!
//! The switch reads the directory file and hands its text to
//! [`ProxyDirectory::parse`]; a directory is immutable and replaced whole on
//! reload (the switch swaps an `Arc<ProxyDirectory>`), so a bad file never
//! half-replaces a good one.
//!
//! File format: UTF-8 CSV, one `proxy,bank_code[,display_name]` per line, e.g.
//! `MOBN:+852-90000001,004,Chan Tai Man`. An optional header line whose first
//! column is `proxy`, blank lines and `#` comment lines are skipped; a leading
//! BOM and CRLF line ends are accepted; a field may be double-quoted (with
//! `""` for a quote) to hold commas. Every bad line is reported with its line
//! number and reason, never with the proxy value (personal data).

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;

use fps_codecs::model::{BankCode, ProxyId};

/// Most entries one directory may hold.
pub const MAX_PROXY_ENTRIES: usize = 20_000_000;
/// Longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 1024;
/// Most line errors kept in a [`ProxyDirectoryError`]; the rest are counted.
pub const MAX_REPORTED_LINE_ERRORS: usize = 1000;
/// Longest display name accepted, in bytes (the ISO 20022 name limit).
pub const MAX_DISPLAY_NAME_BYTES: usize = 140;

/// The directory is loaded from a trusted file, not from the network, so a
/// fixed-key hasher is safe here and keeps the switch reproducible in
/// simulation (no per-process random seed).
type FixedState = BuildHasherDefault<DefaultHasher>;

/// An immutable proxy id → bank code directory.
pub struct ProxyDirectory {
    /// Keyed by the proxy's wire form (`KIND:value`) as bytes: compact on the
    /// heap, and looked up without allocating from a stack copy.
    entries: HashMap<Box<[u8]>, ProxyEntry, FixedState>,
}

/// What the directory knows about one proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyEntry {
    bank: BankCode,
    display_name: Option<Box<str>>,
    line: u32,
}

impl ProxyEntry {
    /// The bank holding the account.
    pub fn bank(&self) -> BankCode {
        self.bank
    }

    /// The account holder's display name, if the file has one. Personal
    /// data: for the wire (e.g. a name-check response), never for logs.
    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    /// Line of the directory file this entry came from.
    pub fn line(&self) -> u32 {
        self.line
    }
}

impl fmt::Debug for ProxyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyEntry")
            .field("bank", &self.bank)
            .field("display_name", &self.display_name.as_ref().map(|_| "****"))
            .field("line", &self.line)
            .finish()
    }
}

impl fmt::Debug for ProxyDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never list the proxies themselves.
        f.debug_struct("ProxyDirectory")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Default for ProxyDirectory {
    fn default() -> Self {
        ProxyDirectory {
            entries: HashMap::with_hasher(FixedState::default()),
        }
    }
}

/// Why one line of a directory file was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    /// 1-based line number.
    pub line: u32,
    /// What is wrong with it (static text, never the value).
    pub reason: LineErrorReason,
}

/// What is wrong with a directory line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineErrorReason {
    /// Not 2 or 3 columns.
    #[error("expected 2 or 3 columns (proxy,bank_code[,display_name]), found {0}")]
    Columns(usize),
    /// The proxy column is not a valid proxy id.
    #[error("proxy: {0}")]
    Proxy(&'static str),
    /// The bank code column is not 3 digits.
    #[error("bank code: {0}")]
    BankCode(&'static str),
    /// The display name is too long or has control characters.
    #[error("display name: {0}")]
    DisplayName(&'static str),
    /// The same proxy appeared earlier in the file.
    #[error("duplicate proxy (first on line {first_line})")]
    Duplicate {
        /// Where it appeared first.
        first_line: u32,
    },
    /// A quoted field is not closed or is followed by other text.
    #[error("malformed quotes")]
    Quote,
    /// The line is longer than [`MAX_LINE_BYTES`].
    #[error("line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    /// The directory already holds [`MAX_PROXY_ENTRIES`].
    #[error("more than {MAX_PROXY_ENTRIES} entries")]
    TooMany,
}

/// A directory file that could not be loaded: every bad line (up to
/// [`MAX_REPORTED_LINE_ERRORS`]) and how many more there were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyDirectoryError {
    /// The bad lines, in file order.
    pub lines: Vec<LineError>,
    /// Bad lines not listed in `lines` because of the bound.
    pub omitted: usize,
}

impl fmt::Display for ProxyDirectoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.lines.len() + self.omitted;
        write!(f, "proxy directory has {total} bad line(s)")?;
        for e in &self.lines {
            write!(f, "\n  {e}")?;
        }
        if self.omitted > 0 {
            write!(f, "\n  ... and {} more", self.omitted)?;
        }
        Ok(())
    }
}

impl std::error::Error for ProxyDirectoryError {}

impl ProxyDirectory {
    /// Parse a whole directory file. All or nothing: any bad line fails the
    /// load, so the switch keeps serving from its previous directory.
    pub fn parse(text: &str) -> Result<Self, ProxyDirectoryError> {
        Self::parse_bounded(text, MAX_PROXY_ENTRIES)
    }

    /// As [`parse`](Self::parse), with a lower entry bound (tests, small deployments).
    pub fn parse_bounded(text: &str, max_entries: usize) -> Result<Self, ProxyDirectoryError> {
        let max_entries = max_entries.min(MAX_PROXY_ENTRIES);
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut dir = ProxyDirectory::default();
        let mut errors = ProxyDirectoryError {
            lines: Vec::new(),
            omitted: 0,
        };
        let mut seen_data = false;
        for (i, raw) in text.split('\n').enumerate() {
            let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let first_data = !seen_data;
            seen_data = true;
            let result = if raw.len() > MAX_LINE_BYTES {
                Err(LineErrorReason::TooLong)
            } else {
                split_fields(raw).and_then(|fields| {
                    if first_data && fields[0].eq_ignore_ascii_case("proxy") {
                        return Ok(());
                    }
                    dir.insert_line(&fields, line, max_entries)
                })
            };
            if let Err(reason) = result {
                if errors.lines.len() < MAX_REPORTED_LINE_ERRORS {
                    errors.lines.push(LineError { line, reason });
                } else {
                    errors.omitted += 1;
                }
            }
        }
        if errors.lines.is_empty() {
            dir.entries.shrink_to_fit();
            Ok(dir)
        } else {
            Err(errors)
        }
    }

    /// The entry for `proxy`, if any.
    pub fn get(&self, proxy: &ProxyId) -> Option<&ProxyEntry> {
        let mut buf = [0u8; ProxyId::MAX_WIRE_LEN];
        let n = proxy.write_wire(&mut buf);
        self.entries.get(&buf[..n])
    }

    /// The bank holding the account behind `proxy`, if known.
    pub fn bank_of(&self, proxy: &ProxyId) -> Option<BankCode> {
        self.get(proxy).map(ProxyEntry::bank)
    }

    /// Number of proxies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the directory is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every bank code the directory points at (sorted, deduplicated), so the
    /// switch can warn about proxies whose bank has no route.
    pub fn banks(&self) -> Vec<BankCode> {
        let mut v: Vec<BankCode> = self.entries.values().map(|e| e.bank).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn insert_line(
        &mut self,
        fields: &Fields<'_>,
        line: u32,
        max_entries: usize,
    ) -> Result<(), LineErrorReason> {
        let proxy =
            ProxyId::parse(fields[0].as_bytes()).map_err(|e| LineErrorReason::Proxy(e.reason))?;
        let bank = BankCode::parse(fields[1].as_bytes())
            .map_err(|e| LineErrorReason::BankCode(e.reason))?;
        let display_name = match fields.get(2).map(|s| s.as_ref()) {
            None | Some("") => None,
            Some(name) if name.len() > MAX_DISPLAY_NAME_BYTES => {
                return Err(LineErrorReason::DisplayName("too long"))
            }
            Some(name) if name.chars().any(char::is_control) => {
                return Err(LineErrorReason::DisplayName("control character"))
            }
            Some(name) => Some(Box::from(name)),
        };
        let mut buf = [0u8; ProxyId::MAX_WIRE_LEN];
        let n = proxy.write_wire(&mut buf);
        if self.entries.len() >= max_entries && !self.entries.contains_key(&buf[..n]) {
            return Err(LineErrorReason::TooMany);
        }
        match self.entries.entry(Box::from(&buf[..n])) {
            Entry::Occupied(first) => Err(LineErrorReason::Duplicate {
                first_line: first.get().line,
            }),
            Entry::Vacant(slot) => {
                slot.insert(ProxyEntry {
                    bank,
                    display_name,
                    line,
                });
                Ok(())
            }
        }
    }
}

/// At most 3 columns are meaningful; a line with more is an error.
type Fields<'a> = arrayvec::ArrayVec<std::borrow::Cow<'a, str>, 3>;

/// Split one CSV line into trimmed fields, honouring double quotes.
fn split_fields(line: &str) -> Result<Fields<'_>, LineErrorReason> {
    let mut fields = Fields::new();
    let mut count = 0usize;
    let mut rest = line;
    loop {
        let (field, next) = next_field(rest)?;
        count += 1;
        // Past 3 columns keep counting, so the error says how many there were.
        if !fields.is_full() {
            fields.push(field);
        }
        match next {
            Some(r) => rest = r,
            None => break,
        }
    }
    if !(2..=3).contains(&count) {
        return Err(LineErrorReason::Columns(count));
    }
    Ok(fields)
}

/// One field and the text after its comma (`None` at the end of the line).
fn next_field(s: &str) -> Result<(std::borrow::Cow<'_, str>, Option<&str>), LineErrorReason> {
    let s = s.trim_start();
    let Some(quoted) = s.strip_prefix('"') else {
        return Ok(match s.split_once(',') {
            Some((f, r)) => (f.trim().into(), Some(r)),
            None => (s.trim().into(), None),
        });
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            value.push(c);
            continue;
        }
        if quoted[i + 1..].starts_with('"') {
            value.push('"');
            chars.next();
            continue;
        }
        let after = quoted[i + 1..].trim_start();
        return match after.strip_prefix(',') {
            Some(r) => Ok((value.into(), Some(r))),
            None if after.is_empty() => Ok((value.into(), None)),
            None => Err(LineErrorReason::Quote),
        };
    }
    Err(LineErrorReason::Quote)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(s: &str) -> ProxyId {
        ProxyId::parse(s.as_bytes()).unwrap()
    }

    fn bank(s: &str) -> BankCode {
        BankCode::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn parses_a_good_file() {
        let text = "\
# FPS proxy directory, generated 2024-01-01
proxy,bank_code,display_name
MOBN:+852-90000001,004,Chan Tai Man
EMAL:shop@example.com,024

FPID:1234567,003,\"Lee, Siu Ming\"
HKID:A1234567 , 012 , \"Say \"\"hi\"\"\"
";
        let dir = ProxyDirectory::parse(text).unwrap();
        assert_eq!(dir.len(), 4);
        let e = dir.get(&proxy("MOBN:+852-90000001")).unwrap();
        assert_eq!(e.bank(), bank("004"));
        assert_eq!(e.display_name(), Some("Chan Tai Man"));
        assert_eq!(e.line(), 3);
        assert_eq!(
            dir.bank_of(&proxy("EMAL:shop@example.com")),
            Some(bank("024"))
        );
        assert_eq!(
            dir.get(&proxy("EMAL:shop@example.com"))
                .unwrap()
                .display_name(),
            None
        );
        assert_eq!(
            dir.get(&proxy("FPID:1234567")).unwrap().display_name(),
            Some("Lee, Siu Ming")
        );
        assert_eq!(
            dir.get(&proxy("HKID:A1234567")).unwrap().display_name(),
            Some("Say \"hi\"")
        );
        assert_eq!(dir.bank_of(&proxy("MOBN:+852-90000002")), None);
        assert_eq!(
            dir.banks(),
            vec![bank("003"), bank("004"), bank("012"), bank("024")]
        );
    }

    #[test]
    fn header_is_optional_and_only_first() {
        let dir = ProxyDirectory::parse("FPID:1234567,003\n").unwrap();
        assert_eq!(dir.len(), 1);
        let err = ProxyDirectory::parse("FPID:1234567,003\nproxy,bank_code\n").unwrap_err();
        assert_eq!(err.lines[0].line, 2);
        assert!(matches!(err.lines[0].reason, LineErrorReason::Proxy(_)));
    }

    #[test]
    fn bom_crlf_and_blank_lines() {
        let text = "\u{feff}proxy,bank_code\r\n\r\nMOBN:+852-90000001,004\r\n  \r\n# c\r\nFPID:1234567,003\r\n";
        let dir = ProxyDirectory::parse(text).unwrap();
        assert_eq!(dir.len(), 2);
        assert_eq!(dir.get(&proxy("FPID:1234567")).unwrap().line(), 6);
        // A BOM before a data line (no header) is accepted too.
        let dir = ProxyDirectory::parse("\u{feff}FPID:1234567,003").unwrap();
        assert_eq!(dir.bank_of(&proxy("FPID:1234567")), Some(bank("003")));
        assert!(ProxyDirectory::parse("").unwrap().is_empty());
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number_and_no_value() {
        let text = "\
proxy,bank_code
MOBN:+852-90000001,004
MOBN:90000002,004
EMAL:x@example.com,4
FPID:1234567
FPID:7654321,003,a,b
\"HKID:A1234567,003
FPID:2222222,003,\"bad\x07name\"
MOBN:+852-90000001,005
EMAL:ok@example.com,024
";
        let err = ProxyDirectory::parse(text).unwrap_err();
        let got: Vec<(u32, LineErrorReason)> =
            err.lines.iter().map(|e| (e.line, e.reason)).collect();
        assert_eq!(
            got,
            vec![
                (3, LineErrorReason::Proxy("value does not fit its kind")),
                (4, LineErrorReason::BankCode("wrong length")),
                (5, LineErrorReason::Columns(1)),
                (6, LineErrorReason::Columns(4)),
                (7, LineErrorReason::Quote),
                (8, LineErrorReason::DisplayName("control character")),
                (9, LineErrorReason::Duplicate { first_line: 2 }),
            ]
        );
        assert_eq!(err.omitted, 0);
        let shown = format!("{err}\n{err:?}");
        for secret in [
            "90000001",
            "90000002",
            "x@example",
            "1234567",
            "7654321",
            "A1234567",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("line 9: duplicate proxy (first on line 2)"));
    }

    #[test]
    fn bounds_are_enforced() {
        let long = format!("EMAL:{}@example.com,004", "a".repeat(MAX_LINE_BYTES));
        let err = ProxyDirectory::parse(&long).unwrap_err();
        assert_eq!(err.lines[0].reason, LineErrorReason::TooLong);

        let name = "n".repeat(MAX_DISPLAY_NAME_BYTES + 1);
        let err = ProxyDirectory::parse(&format!("FPID:1234567,003,{name}")).unwrap_err();
        assert_eq!(
            err.lines[0].reason,
            LineErrorReason::DisplayName("too long")
        );

        let err =
            ProxyDirectory::parse_bounded("FPID:1234567,003\nFPID:1234568,003\n", 1).unwrap_err();
        assert_eq!(
            err.lines,
            vec![LineError {
                line: 2,
                reason: LineErrorReason::TooMany
            }]
        );

        let many: String = (0..MAX_REPORTED_LINE_ERRORS + 5).map(|_| "bad\n").collect();
        let err = ProxyDirectory::parse(&many).unwrap_err();
        assert_eq!(err.lines.len(), MAX_REPORTED_LINE_ERRORS);
        assert_eq!(err.omitted, 5);
    }

    #[test]
    fn debug_never_shows_proxies_or_names() {
        let dir = ProxyDirectory::parse("MOBN:+852-90000001,004,Chan Tai Man").unwrap();
        let e = dir.get(&proxy("MOBN:+852-90000001")).unwrap();
        let shown = format!("{dir:?} {e:?}");
        assert!(
            !shown.contains("90000001") && !shown.contains("Chan"),
            "{shown}"
        );
    }
}
