//! The development SoftHSM2 token that `scripts/softhsm-init` makes, for
//! tests and benchmarks that want a real PKCS#11 token, and the policy for
//! when there is none.
//!
//! [`open`] finds the token the way the script leaves it (SoftHSM2's config
//! in `<workspace>/target/softhsm`, label `fps-switch`, user PIN `1234`),
//! honouring the variables the script prints for other setups. [`or_skip`]
//! turns "no token" into a loud skip on a developer machine and into a
//! failure under `FPS_REQUIRE_HSM=1`, as scripts/test sets, so CI never
//! passes a test that did not run.
//!
//! Development only: nothing in the switch calls this; a production token
//! is configured in `[hsm]`.

use std::ffi::OsStr;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::pkcs11::TokenSession;
use crate::software::SoftKey;
use crate::{admin, HsmError, Pin};

/// SoftHSM2 reads its config file from this variable at `C_Initialize`.
pub const CONF_ENV: &str = "SOFTHSM2_CONF";
/// Where `scripts/softhsm-init` writes SoftHSM2's config, under the
/// workspace root; used when [`CONF_ENV`] is unset.
pub const CONF_UNDER_WORKSPACE: &str = "target/softhsm/softhsm2.conf";
/// The user PIN variable; test configs use `pin_env = "FPS_HSM_PIN"` too.
pub const PIN_ENV: &str = "FPS_HSM_PIN";
/// The user PIN `scripts/softhsm-init` gives the token when [`PIN_ENV`]
/// is unset (development only).
pub const DEFAULT_PIN: &str = "1234";
/// The token label variable, as the `fps-hsm` tool reads it.
pub const LABEL_ENV: &str = "FPS_HSM_TOKEN";
/// The label `scripts/softhsm-init` gives the token.
pub const DEFAULT_LABEL: &str = "fps-switch";
/// `FPS_REQUIRE_HSM=1` turns a skip into a failure ([`or_skip`]).
pub const REQUIRE_ENV: &str = "FPS_REQUIRE_HSM";

/// The development token, logged in.
///
/// A test imports its keys through `session` and usually keeps only
/// `module` and `label`: what it tests opens sessions of its own.
#[derive(Debug)]
pub struct DevToken {
    /// The SoftHSM2 module ([`crate::pkcs11::default_module`]).
    pub module: PathBuf,
    /// The token's label (`$FPS_HSM_TOKEN`, else [`DEFAULT_LABEL`]).
    pub label: String,
    /// The user PIN (`$FPS_HSM_PIN`, which [`open`] defaults).
    pub pin: Pin,
    /// A logged-in read-write session on the token.
    pub session: TokenSession,
}

impl DevToken {
    /// Imports a test's known `key` under `label` (`<base>-vN`), keeping
    /// the one already there: the token outlives test runs, and its keys
    /// cannot be read back to compare, so a test's key bytes must stay
    /// fixed for a label.
    pub fn import_if_absent(&self, label: &str, key: &SoftKey) -> Result<(), String> {
        match admin::import(&self.session, label, key) {
            Ok(()) | Err(HsmError::KeyExists { .. }) => Ok(()),
            Err(e) => Err(format!("cannot import test key {label}: {e}")),
        }
    }
}

/// Opens the development token, or says why not (for [`or_skip`]).
///
/// `workspace_root` is the directory holding `target/` (from a test:
/// `concat!(env!("CARGO_MANIFEST_DIR"), "/..")`; it is the caller's, since
/// each crate has its own manifest dir).
///
/// # Environment
///
/// When unset, sets [`CONF_ENV`] to `<workspace_root>/`[`CONF_UNDER_WORKSPACE`]
/// (an error if that file is missing) and [`PIN_ENV`] to [`DEFAULT_PIN`],
/// so that SoftHSM2 and configs with `pin_env = "FPS_HSM_PIN"` find them.
/// Changing the environment races with any other thread reading it from C
/// (SoftHSM2 reads `SOFTHSM2_CONF` at `C_Initialize`), so this happens at
/// most once per process, on the first call, and the first call must come
/// before any HSM use: call `open` from a `OnceLock` that every HSM test of
/// the binary goes through first (or from a binary's only HSM test).
pub fn open(workspace_root: &Path) -> Result<DevToken, String> {
    let module = softhsm2_module()?;
    prepare_environment(workspace_root)?;
    let label = std::env::var(LABEL_ENV).unwrap_or_else(|_| DEFAULT_LABEL.into());
    let pin = Pin::new(std::env::var(PIN_ENV).unwrap_or_default());
    let session = TokenSession::open(&module, &label, &pin)
        .map_err(|e| format!("cannot open the development token: {e}"))?;
    Ok(DevToken {
        module,
        label,
        pin,
        session,
    })
}

/// The installed SoftHSM2 module (`$FPS_HSM_MODULE` if set), or why not.
pub fn softhsm2_module() -> Result<PathBuf, String> {
    crate::pkcs11::default_module()
        .filter(|p| p.is_file())
        .ok_or_else(|| "SoftHSM2 is not installed (apt-get install softhsm2)".into())
}

/// `Some(value)`, or `None` after printing a loud `SKIPPED` line naming
/// `what` and why; with `FPS_REQUIRE_HSM=1` a panic instead, so that CI
/// fails rather than passing a test that did not run.
#[track_caller]
pub fn or_skip<T, E: Display>(what: &str, result: Result<T, E>) -> Option<T> {
    let require = required(std::env::var_os(REQUIRE_ENV).as_deref());
    or_skip_as(require, what, result)
}

// ---------------------------------------------------------------- helpers

/// [`or_skip`] with the variable already read.
#[track_caller]
fn or_skip_as<T, E: Display>(require: bool, what: &str, result: Result<T, E>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(why) => {
            assert!(!require, "{what}: {REQUIRE_ENV}=1 but {why}");
            eprintln!(
                "\n!!!!!!!! SKIPPED ({what}): {why}. Run scripts/softhsm-init, \
                 or set {REQUIRE_ENV}=1 to fail instead. !!!!!!!!\n"
            );
            None
        }
    }
}

/// Whether `FPS_REQUIRE_HSM` (given as `value`) asks for a failure: only
/// the exact value `1` does.
fn required(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| v == "1")
}

/// Sets the environment up once per process (see [`open`]); every call
/// returns the first call's outcome.
fn prepare_environment(workspace_root: &Path) -> Result<(), String> {
    static PREPARED: OnceLock<Result<(), String>> = OnceLock::new();
    PREPARED
        .get_or_init(|| {
            let current = std::env::var_os(CONF_ENV);
            if let Some(conf) = conf_to_set(current.as_deref(), workspace_root)? {
                std::env::set_var(CONF_ENV, conf);
            }
            if std::env::var_os(PIN_ENV).is_none() {
                std::env::set_var(PIN_ENV, DEFAULT_PIN);
            }
            Ok(())
        })
        .clone()
}

/// The SoftHSM2 config to put in [`CONF_ENV`] given its `current` value:
/// `None` to keep a set one, else the one `scripts/softhsm-init` wrote
/// under `workspace_root`, which must exist.
fn conf_to_set(current: Option<&OsStr>, workspace_root: &Path) -> Result<Option<PathBuf>, String> {
    if current.is_some() {
        return Ok(None);
    }
    let conf = workspace_root.join(CONF_UNDER_WORKSPACE);
    if !conf.is_file() {
        return Err(format!(
            "{CONF_ENV} is unset and target/softhsm has no token"
        ));
    }
    Ok(Some(conf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exactly_1_requires_the_hsm() {
        assert!(required(Some(OsStr::new("1"))));
        for value in [None, Some(""), Some("0"), Some("yes"), Some(" 1")] {
            assert!(!required(value.map(OsStr::new)), "{value:?}");
        }
    }

    #[test]
    fn a_token_is_passed_through_whatever_the_policy() {
        for require in [false, true] {
            assert_eq!(or_skip_as(require, "t", Ok::<_, String>(7)), Some(7));
        }
    }

    #[test]
    fn no_token_is_a_skip_when_not_required() {
        assert_eq!(or_skip_as::<u8, _>(false, "t", Err("no token")), None);
    }

    #[test]
    #[should_panic(expected = "unit test: FPS_REQUIRE_HSM=1 but no token")]
    fn no_token_is_a_failure_when_required() {
        or_skip_as::<u8, _>(true, "unit test", Err("no token"));
    }

    #[test]
    fn a_set_conf_is_kept_even_without_the_scripts_file() {
        let root = tempfile::tempdir().unwrap();
        let kept = conf_to_set(Some(OsStr::new("/etc/softhsm/softhsm2.conf")), root.path());
        assert_eq!(kept, Ok(None));
    }

    #[test]
    fn an_unset_conf_defaults_to_the_scripts_file() {
        let root = tempfile::tempdir().unwrap();
        let conf = root.path().join("target/softhsm/softhsm2.conf");
        std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
        std::fs::write(&conf, "directories.tokendir = /nowhere\n").unwrap();
        assert_eq!(conf_to_set(None, root.path()), Ok(Some(conf)));
    }

    #[test]
    fn an_unset_conf_without_the_scripts_file_says_so() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(
            conf_to_set(None, root.path()),
            Err("SOFTHSM2_CONF is unset and target/softhsm has no token".into())
        );
    }
}
