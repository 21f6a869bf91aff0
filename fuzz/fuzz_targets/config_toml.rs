//! The switch's config loader: what `fps-switch check-config` does
//! (`Config::from_toml_str`, then `Config::validate`) on random text.
//!
//! Oracles besides "never panics":
//! - every error has a non-empty key path and reason; parse errors point at
//!   a line of the input, and validation paths at an index that exists
//!   (`banks[i]`, `banks[i].endpoints[j]`, `routing.routes[i]`,
//!   `routing.bins[i]`) and no error is reported twice;
//! - validating twice gives the same errors (no hidden state);
//! - no error carries a secret or personal data: the PIN in the PIN file and
//!   the environment, the private key, the proxies of the directory file;
//! - a config that validates holds everything the daemon takes for granted
//!   at start (`Switch::start`, `open_journal`): its routing builds, every
//!   codec, framing and auth resolves, its listener addresses parse, and no
//!   setting is silently changed or overflows when the daemon uses it.
//!
//! File paths in the config are mapped onto `fuzz/fixtures/` by file name
//! (`ca.crt`, `switch.key`, `proxies.csv`, `pin`, ...), anything else to a
//! missing file, so the target reads no file the fuzzer names (`/dev/zero`
//! would hang it) and behaves the same on every machine.

#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Once;

use fps_codecs::framing::Framer;
use fps_switch::config::{CodecName, Config, ConfigError, ConfigErrors};
use libfuzzer_sys::fuzz_target;

/// The PIN in `fixtures/pin` and in the [`PIN_ENV`] variable.
const PIN: &str = "fuzz-pin-97310824";
/// An environment variable a fuzzed `pin_env` can name.
const PIN_ENV: &str = "FPS_HSM_PIN";
/// Private-key material of `fixtures/p256-test-only.pem` (base64 of its scalar).
const KEY_MATERIAL: &str = "cjutQUt2nNGANbqV";
/// A proxy id of `fixtures/bad-proxies.csv` (personal data): its digits.
const PROXY_DIGITS: &str = "97310824";

fuzz_target!(|data: &[u8]| {
    static ENV: Once = Once::new();
    // Single-threaded at this point (libFuzzer runs one input at a time).
    ENV.call_once(|| std::env::set_var(PIN_ENV, PIN));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A secret the input itself spells out may come back quoted.
    let secrets: Vec<&str> = [PIN, KEY_MATERIAL, PROXY_DIGITS]
        .into_iter()
        .filter(|s| !text.contains(s))
        .collect();
    let mut cfg = match Config::from_toml_str(text) {
        Ok(cfg) => cfg,
        Err(errs) => {
            check_parse_errors(text, &errs, &secrets);
            return;
        }
    };
    hermetic(&mut cfg);
    let result = cfg.validate();
    assert_eq!(result, cfg.validate(), "validating twice differs");
    match result {
        Err(errs) => check_validation_errors(&cfg, &errs, &secrets),
        Ok(()) => check_valid(&cfg),
    }
});

fn check_parse_errors(text: &str, errs: &ConfigErrors, secrets: &[&str]) {
    assert_eq!(errs.0.len(), 1, "the TOML parser reports one error");
    let e = &errs.0[0];
    check_error_shape(e, secrets);
    if e.path != "toml" {
        let line: usize = e
            .path
            .strip_prefix("line ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("parse error path {:?} is not `line N`", e.path));
        let lines = text.matches('\n').count() + 1;
        assert!(
            (1..=lines).contains(&line),
            "{e}: the input has {lines} line(s)"
        );
    }
}

fn check_validation_errors(cfg: &Config, errs: &ConfigErrors, secrets: &[&str]) {
    assert!(!errs.0.is_empty(), "Err(ConfigErrors) with no error");
    let mut seen = HashSet::new();
    for e in &errs.0 {
        check_error_shape(e, secrets);
        assert!(seen.insert((&e.path, &e.reason)), "reported twice: {e}");
        check_path_points_into_config(cfg, e);
    }
}

/// Path and reason are there, and neither gives away a secret.
fn check_error_shape(e: &ConfigError, secrets: &[&str]) {
    assert!(!e.path.trim().is_empty(), "error without a key path: {e:?}");
    assert!(!e.reason.trim().is_empty(), "error without a reason: {e:?}");
    let shown = e.to_string();
    for secret in secrets {
        assert!(
            !shown.contains(secret),
            "error message gives away {secret:?}: {e}"
        );
    }
}

/// `banks[3].endpoints[1]` names a bank and an endpoint that exist, and so
/// on for every indexed list the validator reports into.
fn check_path_points_into_config(cfg: &Config, e: &ConfigError) {
    let path = e.path.as_str();
    let root = path.split(['.', '[']).next().unwrap_or("");
    assert!(
        !root.is_empty() && root.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "path {path:?} does not start with a config key: {e}"
    );
    if let Some(i) = index_after(path, "banks[") {
        let bank = cfg
            .banks
            .get(i)
            .unwrap_or_else(|| panic!("{e}: there are {} bank(s)", cfg.banks.len()));
        let rest = &path[path.find(']').map_or(0, |p| p + 1)..];
        if let Some(j) = index_after(rest, ".endpoints[") {
            assert!(j < bank.endpoints.len(), "{e}: no such endpoint");
        }
    }
    if let Some(i) = index_after(path, "routing.routes[") {
        let written = cfg.routing.rules.routes.len();
        assert!(i < written, "{e}: the file has {written} route(s)");
    }
    if let Some(i) = index_after(path, "routing.bins[") {
        let written = cfg.routing.rules.bins.len();
        assert!(i < written, "{e}: the file has {written} BIN range(s)");
    }
}

/// `N` of `<prefix>N]...` when `path` starts with `prefix`.
fn index_after(path: &str, prefix: &str) -> Option<usize> {
    let rest = path.strip_prefix(prefix)?;
    let end = rest.find(']')?;
    Some(
        rest[..end]
            .parse()
            .unwrap_or_else(|_| panic!("index in {path:?} is not a number")),
    )
}

/// What `Switch::start` relies on once `validate` said yes.
fn check_valid(cfg: &Config) {
    assert!(
        cfg.upstream.bind.parse::<SocketAddr>().is_ok(),
        "upstream.bind"
    );
    assert!(cfg.admin.bind.parse::<SocketAddr>().is_ok(), "admin.bind");
    if let Err(e) = cfg.routing_rules().build(&cfg.link_names()) {
        panic!("validated config, but its routing does not build: {e}");
    }
    for (i, b) in cfg.banks.iter().enumerate() {
        match CodecName::parse(&b.codec) {
            None => panic!("banks[{i}].codec {:?} validated", b.codec),
            Some(CodecName::Iso8583(d)) => {
                assert!(
                    matches!(fps_codecs::iso8583::builtin(&d), Some(Ok(_))),
                    "banks[{i}]: dialect {d:?} validated"
                );
            }
            Some(_) => {}
        }
        if let Err(e) = Framer::new(b.framing) {
            panic!("banks[{i}].framing validated: {e}");
        }
        assert!(!b.endpoints.is_empty(), "banks[{i}] has no endpoint");
        if let Some(auth) = &b.auth {
            assert!(auth.keys().is_ok(), "banks[{i}].auth validated");
        }
        if let Some(inbound) = &b.inbound {
            assert!(
                !matches!(inbound.sha256_bytes(), Some(Err(_))),
                "banks[{i}].inbound.sha256 validated"
            );
            if let Some(f) = inbound.framing {
                assert!(
                    Framer::new(f).is_ok(),
                    "banks[{i}].inbound.framing validated"
                );
            }
        }
    }
    let with_auth = cfg.banks.iter().any(|b| b.auth.is_some());
    assert_eq!(!cfg.hsm_keys().is_empty(), with_auth, "hsm_keys");
    assert!(cfg.summary().starts_with("config ok"));

    // What the daemon computes from the safety sections: no silent clamp,
    // no overflow.
    let r = &cfg.reversal;
    let written = fps_routing::reversal::ReversalConfig {
        max_attempts: r.max_attempts,
        base_backoff_ms: r.base_backoff_ms,
        max_backoff_ms: r.max_backoff_ms,
        capacity: r.capacity,
    };
    assert_eq!(
        r.queue_config(),
        written,
        "[reversal] validated, but the daemon runs it clamped"
    );
    let idem = &cfg.idempotency;
    assert!(
        idem.retention_hours >= 1 && idem.retention_hours.checked_mul(3_600).is_some(),
        "idempotency.retention_hours = {} validated (the daemon multiplies by 3600)",
        idem.retention_hours
    );
    assert!(
        (1..=fps_routing::idempotency::MAX_IDEMPOTENCY_KEYS).contains(&idem.max_keys_in_memory),
        "idempotency.max_keys_in_memory = {} validated, but the daemon clamps it",
        idem.max_keys_in_memory
    );
    assert!(
        cfg.journal.segment_bytes >= fps_switch::journal::MIN_SEGMENT_BYTES,
        "journal.segment_bytes = {} validated, but the journal refuses it at start",
        cfg.journal.segment_bytes
    );
}

/// Point every file the config names at a fixture (by file name) or at a
/// file that does not exist. A new path setting must be added here.
fn hermetic(cfg: &mut Config) {
    let u = &mut cfg.upstream;
    for p in [&mut u.cert, &mut u.key, &mut u.client_ca]
        .into_iter()
        .flatten()
    {
        *p = fixture(p);
    }
    if let Some(i) = &mut cfg.bank_inbound {
        for p in [&mut i.cert, &mut i.key, &mut i.client_ca] {
            *p = fixture(p);
        }
    }
    for b in &mut cfg.banks {
        if let Some(t) = &mut b.tls {
            for p in [&mut t.cert, &mut t.key, &mut t.ca] {
                *p = fixture(p);
            }
        }
    }
    if let Some(p) = &mut cfg.routing.proxy_directory {
        *p = fixture(p);
    }
    if let Some(h) = &mut cfg.hsm {
        for p in [&mut h.module_path, &mut h.pin_file, &mut h.danger_key_dir]
            .into_iter()
            .flatten()
        {
            *p = fixture(p);
        }
    }
    if let Some(p) = &mut cfg.journal.dir {
        *p = fixture(p);
    }
}

fn fixture(p: &Path) -> PathBuf {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let file = match name {
        "ca.crt" | "switch.crt" | "switch-client.crt" | "cert.pem" => "cert.pem",
        "switch.key" | "switch-client.key" => "p256-test-only.pem",
        "not-pem.crt" | "proxies.csv" | "bad-proxies.csv" | "pin" => name,
        // An existing file for `hsm.module_path` (only checked to exist).
        "libsofthsm2.so" => "cert.pem",
        _ => return PathBuf::from("/nonexistent/fps-fuzz").join("missing"),
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(file)
}
