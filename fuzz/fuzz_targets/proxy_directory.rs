//! The proxy directory file (`[routing] proxy_directory`, CSV
//! `proxy,bank_code[,display_name]`): random text into
//! `ProxyDirectory::parse`.
//!
//! Oracles besides "never panics":
//! - a refused file lists its bad lines in file order, each a line of the
//!   input, at most `MAX_REPORTED_LINE_ERRORS` of them (the rest counted);
//! - CRLF line ends and a leading BOM change nothing;
//! - an accepted file holds one entry per data line, and every plain
//!   (unquoted) line looks up to its own bank, line number and display name;
//!   `banks()` is sorted and without repeats;
//! - the entry bound is exact: `len` entries load under `parse_bounded(len)`
//!   and fail with `TooMany` under `len - 1`.

#![no_main]

use fps_codecs::model::{BankCode, ProxyId};
use fps_routing::proxy::{LineErrorReason, MAX_REPORTED_LINE_ERRORS};
use fps_routing::{ProxyDirectory, ProxyDirectoryError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = ProxyDirectory::parse(text);
    if !text.contains('\r') {
        let crlf = ProxyDirectory::parse(&text.replace('\n', "\r\n"));
        assert_same(&result, &crlf, "CRLF line ends");
    }
    if !text.starts_with('\u{feff}') {
        let bom = ProxyDirectory::parse(&format!("\u{feff}{text}"));
        assert_same(&result, &bom, "a leading BOM");
    }
    match result {
        Err(e) => check_refused(text, &e),
        Ok(dir) => check_loaded(text, &dir),
    }
});

fn assert_same(
    a: &Result<ProxyDirectory, ProxyDirectoryError>,
    b: &Result<ProxyDirectory, ProxyDirectoryError>,
    what: &str,
) {
    match (a, b) {
        (Ok(a), Ok(b)) => assert_eq!(a.len(), b.len(), "{what} changed the entries"),
        (Err(a), Err(b)) => assert_eq!(a, b, "{what} changed the errors"),
        (a, b) => panic!("{what} changed the outcome: {a:?} vs {b:?}"),
    }
}

fn check_refused(text: &str, e: &ProxyDirectoryError) {
    let lines = text.split('\n').count();
    assert!(!e.lines.is_empty(), "refused without a bad line: {e:?}");
    assert!(e.lines.len() <= MAX_REPORTED_LINE_ERRORS);
    assert!(
        e.omitted == 0 || e.lines.len() == MAX_REPORTED_LINE_ERRORS,
        "omitted errors before the list is full"
    );
    for pair in e.lines.windows(2) {
        assert!(pair[0].line < pair[1].line, "errors out of order: {e:?}");
    }
    for l in &e.lines {
        assert!(
            (1..=lines).contains(&(l.line as usize)),
            "{l}: the file has {lines} line(s)"
        );
    }
}

fn check_loaded(text: &str, dir: &ProxyDirectory) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Plain data lines are checked one by one; quoted ones (maybe a quoted
    // header) only bound the count.
    let (mut plain, mut quoted) = (0usize, 0usize);
    let mut first = true;
    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let may_be_header = std::mem::take(&mut first);
        if raw.contains('"') {
            quoted += 1;
            continue;
        }
        let cols: Vec<&str> = raw.split(',').map(str::trim).collect();
        if may_be_header && cols[0].eq_ignore_ascii_case("proxy") {
            continue;
        }
        plain += 1;
        let line = i + 1;
        let proxy = ProxyId::parse(cols[0].as_bytes())
            .unwrap_or_else(|e| panic!("line {line}: accepted proxy does not parse: {e:?}"));
        let bank = BankCode::parse(cols[1].as_bytes())
            .unwrap_or_else(|e| panic!("line {line}: accepted bank code does not parse: {e:?}"));
        let entry = dir
            .get(&proxy)
            .unwrap_or_else(|| panic!("line {line}: accepted proxy not found"));
        assert_eq!(entry.bank(), bank, "line {line}: bank");
        assert_eq!(entry.line() as usize, line, "line {line}: entry line");
        let name = cols.get(2).copied().filter(|n| !n.is_empty());
        assert_eq!(entry.display_name(), name, "line {line}: display name");
    }
    assert!(
        (plain..=plain + quoted).contains(&dir.len()),
        "{} entries from {plain} plain and {quoted} quoted data line(s)",
        dir.len()
    );
    assert_eq!(dir.is_empty(), dir.len() == 0);
    let mut banks = dir.banks();
    let n = banks.len();
    banks.dedup();
    assert_eq!(banks.len(), n, "banks() has repeats");
    assert!(banks.windows(2).all(|w| w[0] < w[1]), "banks() unsorted");
    assert_eq!(banks.is_empty(), dir.is_empty());

    let len = dir.len();
    if len > 0 {
        assert_eq!(
            ProxyDirectory::parse_bounded(text, len)
                .map(|d| d.len())
                .ok(),
            Some(len),
            "{len} entries refused under a bound of {len}"
        );
        let over = ProxyDirectory::parse_bounded(text, len - 1)
            .expect_err("more entries than the bound accepted");
        assert!(
            over.lines
                .iter()
                .all(|l| l.reason == LineErrorReason::TooMany),
            "only the bound may refuse an accepted file: {over:?}"
        );
    }
}
