//! `[hsm]` config section, key references and the user PIN.
//!
//! The PIN is never part of the config itself: the config names an
//! environment variable (`pin_env`) or a file (`pin_file`) to read it from.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cryptoki::types::AuthPin;
use serde::Deserialize;

use crate::{HsmError, Mechanism};

/// Most worker threads (each holds one HSM session).
pub const MAX_THREADS: usize = 64;
/// Most inline sessions (one per caller thread is plenty).
pub const MAX_INLINE_SESSIONS: usize = 64;
/// Largest allowed request queue bound.
pub const MAX_QUEUE_BOUND: usize = 65_536;
/// Longest allowed key rotation overlap (30 days).
pub const MAX_ROTATION_OVERLAP_SECS: u64 = 30 * 24 * 3600;
/// Longest allowed interval between key version re-scans.
pub const MAX_KEY_REFRESH_SECS: u64 = 3600;
/// Longest allowed queue wait before a request is answered `Timeout`.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 60_000;
/// Longest key label (without the `-vN` suffix).
pub const MAX_LABEL_LEN: usize = 64;

/// How many instances of the PKCS#11 module the worker sessions live in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ModuleInstances {
    /// Every session in one loaded instance of `module_path` (the PKCS#11
    /// norm). Keep this for vendor HSM client libraries (Thales Luna, AWS
    /// CloudHSM, ...): they scale per session, and some refuse to be loaded
    /// twice in one process.
    #[default]
    Shared,
    /// Each worker's session in its own instance of the module: worker 0
    /// loads `module_path`, every other worker a private copy of the file
    /// (copied at start into a new mode-0700 directory under
    /// `module_copy_dir`, deleted when the [`crate::Hsm`] stops), so the
    /// module's process-wide state and locks are not shared. For software
    /// tokens such as SoftHSM2, whose global locks serialise the sessions
    /// of one instance (on 2 cores, two pool sessions in one instance reach
    /// 1.3-1.5x one session; in two instances 1.7-1.8x).
    /// SoftHSM2 guards its token files against other processes with POSIX
    /// record locks, which belong to the process, so two instances in one
    /// process do not exclude each other: make keys (generate, rotate,
    /// import) from another process, such as the `fps-hsm` tool, not from
    /// the process serving requests with `per_session`.
    PerSession,
}

impl ModuleInstances {
    /// The config value, e.g. `per_session`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ModuleInstances::Shared => "shared",
            ModuleInstances::PerSession => "per_session",
        }
    }
}

/// Which implementation answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum Backend {
    /// A PKCS#11 module: SoftHSM2 in tests, the operator's HSM in production.
    #[serde(rename = "pkcs11")]
    Pkcs11,
    /// Keys in process memory. **Development only**: keys can leak; logs a
    /// warning at start.
    #[serde(rename = "danger_software")]
    DangerSoftware,
}

/// The `[hsm]` section of the switch config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// `pkcs11` or `danger_software`.
    pub backend: Backend,
    /// Path of the PKCS#11 shared library (pkcs11 backend).
    #[serde(default)]
    pub module_path: Option<PathBuf>,
    /// Label of the token holding the keys (pkcs11 backend).
    #[serde(default)]
    pub token_label: Option<String>,
    /// Environment variable holding the user PIN (exclusive with `pin_file`).
    #[serde(default)]
    pub pin_env: Option<String>,
    /// File holding the user PIN, trailing newline ignored (exclusive with `pin_env`).
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// Worker threads, one HSM session each.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Sessions the callers use on their own thread, beside the workers'
    /// (default 0: every operation goes to a worker). A caller that finds
    /// one of them free runs its operation there and then, without the two
    /// thread hand-offs a worker costs (on one core about 15 us each, more
    /// than a SoftHSM2 HMAC); when all are busy or one is down, the request
    /// goes to the workers as usual. **Only for tokens whose operations take
    /// microseconds in process** (SoftHSM2): the async caller's thread is
    /// blocked for the operation, so with a network HSM (a round trip per
    /// call) every task of that runtime thread would wait on it. See the
    /// crate doc's "Threading design".
    #[serde(default)]
    pub inline_sessions: usize,
    /// `shared` (default): all sessions in one instance of the module;
    /// `per_session`: one instance per worker, from private copies of the
    /// module file (SoftHSM2 only; see [`ModuleInstances`]).
    #[serde(default)]
    pub module_instances: ModuleInstances,
    /// `per_session` only: the directory under which the private directory
    /// of module copies is created (default: the system temp directory).
    /// It must allow executable mappings (not `noexec`).
    #[serde(default)]
    pub module_copy_dir: Option<PathBuf>,
    /// Requests that may wait for a worker before callers get `Busy`.
    #[serde(default = "default_queue_bound")]
    pub queue_bound: usize,
    /// After a newer key version appears, how long the previous one still
    /// verifies MACs and signatures.
    #[serde(default = "default_overlap")]
    pub key_rotation_overlap_secs: u64,
    /// How often a key's versions are re-scanned on use (picks up rotations
    /// without restart).
    #[serde(default = "default_refresh")]
    pub key_refresh_secs: u64,
    /// A request still queued after this long is answered `Timeout`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// danger_software only: directory of development key files (see
    /// [`crate::software::SoftwareKeyStore::load_dir`]).
    #[serde(default)]
    pub danger_key_dir: Option<PathBuf>,
}

fn default_threads() -> usize {
    2
}
fn default_queue_bound() -> usize {
    1024
}
fn default_overlap() -> u64 {
    3600
}
fn default_refresh() -> u64 {
    60
}
fn default_request_timeout() -> u64 {
    2000
}

impl HsmConfig {
    /// A PKCS#11 config with defaults for everything else.
    pub fn pkcs11(module_path: impl Into<PathBuf>, token_label: &str, pin: PinSource) -> Self {
        let (pin_env, pin_file) = match pin {
            PinSource::Env(var) => (Some(var), None),
            PinSource::File(path) => (None, Some(path)),
        };
        HsmConfig {
            backend: Backend::Pkcs11,
            module_path: Some(module_path.into()),
            token_label: Some(token_label.to_owned()),
            pin_env,
            pin_file,
            threads: default_threads(),
            inline_sessions: 0,
            module_instances: ModuleInstances::Shared,
            module_copy_dir: None,
            queue_bound: default_queue_bound(),
            key_rotation_overlap_secs: default_overlap(),
            key_refresh_secs: default_refresh(),
            request_timeout_ms: default_request_timeout(),
            danger_key_dir: None,
        }
    }

    /// A danger_software config (development only) with defaults.
    pub fn danger_software() -> Self {
        HsmConfig {
            backend: Backend::DangerSoftware,
            module_path: None,
            token_label: None,
            pin_env: None,
            pin_file: None,
            threads: default_threads(),
            inline_sessions: 0,
            module_instances: ModuleInstances::Shared,
            module_copy_dir: None,
            queue_bound: default_queue_bound(),
            key_rotation_overlap_secs: default_overlap(),
            key_refresh_secs: default_refresh(),
            request_timeout_ms: default_request_timeout(),
            danger_key_dir: None,
        }
    }

    /// Checks every field and returns all problems at once.
    pub fn validate(&self) -> Result<(), Vec<HsmError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &'static str, reason: String| {
            errors.push(HsmError::InvalidConfig { field, reason })
        };
        if !(1..=MAX_THREADS).contains(&self.threads) {
            bad(
                "threads",
                format!("must be 1..={MAX_THREADS}, got {}", self.threads),
            );
        }
        if self.inline_sessions > MAX_INLINE_SESSIONS {
            bad(
                "inline_sessions",
                format!(
                    "must be 0..={MAX_INLINE_SESSIONS}, got {}",
                    self.inline_sessions
                ),
            );
        }
        if !(1..=MAX_QUEUE_BOUND).contains(&self.queue_bound) {
            bad(
                "queue_bound",
                format!("must be 1..={MAX_QUEUE_BOUND}, got {}", self.queue_bound),
            );
        }
        if self.key_rotation_overlap_secs > MAX_ROTATION_OVERLAP_SECS {
            bad(
                "key_rotation_overlap_secs",
                format!("must be at most {MAX_ROTATION_OVERLAP_SECS}"),
            );
        }
        if !(1..=MAX_KEY_REFRESH_SECS).contains(&self.key_refresh_secs) {
            bad(
                "key_refresh_secs",
                format!("must be 1..={MAX_KEY_REFRESH_SECS}"),
            );
        }
        if !(1..=MAX_REQUEST_TIMEOUT_MS).contains(&self.request_timeout_ms) {
            bad(
                "request_timeout_ms",
                format!("must be 1..={MAX_REQUEST_TIMEOUT_MS}"),
            );
        }
        match self.backend {
            Backend::Pkcs11 => {
                match &self.module_path {
                    None => bad("module_path", "required when backend = \"pkcs11\"".into()),
                    Some(p) if !p.is_file() => bad(
                        "module_path",
                        format!("{} does not exist or is not a file", p.display()),
                    ),
                    Some(_) => {}
                }
                match self.token_label.as_deref() {
                    None | Some("") => {
                        bad("token_label", "required when backend = \"pkcs11\"".into())
                    }
                    Some(l) if l.len() > 32 => bad(
                        "token_label",
                        "PKCS#11 token labels are at most 32 bytes".into(),
                    ),
                    Some(_) => {}
                }
                match (&self.pin_env, &self.pin_file) {
                    (None, None) => bad(
                        "pin_env",
                        "set pin_env (environment variable) or pin_file; the PIN itself never goes in the config".into(),
                    ),
                    (Some(_), Some(_)) => {
                        bad("pin_file", "set only one of pin_env and pin_file".into())
                    }
                    (Some(var), None) if var.is_empty() => {
                        bad("pin_env", "empty variable name".into())
                    }
                    _ => {}
                }
                if self.danger_key_dir.is_some() {
                    bad(
                        "danger_key_dir",
                        "only valid with backend = \"danger_software\"".into(),
                    );
                }
                match (&self.module_copy_dir, self.module_instances) {
                    (None, _) => {}
                    (Some(_), ModuleInstances::Shared) => bad(
                        "module_copy_dir",
                        "only valid with module_instances = \"per_session\"".into(),
                    ),
                    (Some(dir), _) if !dir.is_dir() => bad(
                        "module_copy_dir",
                        format!("{} does not exist or is not a directory", dir.display()),
                    ),
                    (Some(_), _) => {}
                }
            }
            Backend::DangerSoftware => {
                for (field, set) in [
                    ("module_path", self.module_path.is_some()),
                    ("token_label", self.token_label.is_some()),
                    ("pin_env", self.pin_env.is_some()),
                    ("pin_file", self.pin_file.is_some()),
                    (
                        "module_instances",
                        self.module_instances != ModuleInstances::Shared,
                    ),
                    ("module_copy_dir", self.module_copy_dir.is_some()),
                ] {
                    if set {
                        bad(field, "only valid with backend = \"pkcs11\"".into());
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Sessions opened in all: one per worker thread plus the inline ones.
    pub fn sessions(&self) -> usize {
        self.threads + self.inline_sessions
    }

    /// Where the user PIN comes from (pkcs11 backend).
    pub fn pin_source(&self) -> Option<PinSource> {
        match (&self.pin_env, &self.pin_file) {
            (Some(var), _) => Some(PinSource::Env(var.clone())),
            (None, Some(path)) => Some(PinSource::File(path.clone())),
            (None, None) => None,
        }
    }

    /// The rotation overlap as a duration.
    pub fn rotation_overlap(&self) -> Duration {
        Duration::from_secs(self.key_rotation_overlap_secs)
    }
}

/// Where to read the user PIN from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// An environment variable name.
    Env(String),
    /// A file path; one trailing newline is ignored.
    File(PathBuf),
}

impl PinSource {
    /// Reads the PIN now.
    pub fn read(&self) -> Result<Pin, HsmError> {
        match self {
            PinSource::Env(var) => match std::env::var(var) {
                Ok(pin) if !pin.is_empty() => Ok(Pin::new(pin)),
                Ok(_) => Err(self.unavailable("is empty".into())),
                Err(std::env::VarError::NotPresent) => Err(self.unavailable("is not set".into())),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(self.unavailable("is not valid UTF-8".into()))
                }
            },
            PinSource::File(path) => read_pin_file(path).map_err(|reason| self.unavailable(reason)),
        }
    }

    fn unavailable(&self, reason: String) -> HsmError {
        HsmError::PinUnavailable {
            source_name: match self {
                PinSource::Env(var) => format!("environment variable {var}"),
                PinSource::File(path) => format!("file {}", path.display()),
            },
            reason,
        }
    }
}

fn read_pin_file(path: &Path) -> Result<Pin, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.kind().to_string())?;
    let pin = text.strip_suffix('\n').unwrap_or(&text);
    let pin = pin.strip_suffix('\r').unwrap_or(pin);
    if pin.is_empty() {
        return Err("is empty".into());
    }
    Ok(Pin::new(pin.to_owned()))
}

/// A PKCS#11 PIN. Zeroized on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct Pin(AuthPin);

impl Pin {
    /// Wraps a PIN.
    pub fn new(pin: String) -> Self {
        Pin(AuthPin::from(pin))
    }

    pub(crate) fn auth_pin(&self) -> &AuthPin {
        &self.0
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(****)")
    }
}

/// A key as the switch config names it: a base label (the token holds
/// `<label>-v1`, `<label>-v2`, ...) and the mechanism to use it with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "RawKeyRef")]
pub struct KeyRef {
    /// Shared, not owned: every request carries a clone of its key to a
    /// worker thread, which then must not pay for (nor free across threads)
    /// a copy of the label.
    label: Arc<str>,
    mechanism: Mechanism,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyRef {
    label: String,
    mechanism: Mechanism,
}

impl TryFrom<RawKeyRef> for KeyRef {
    type Error = HsmError;
    fn try_from(raw: RawKeyRef) -> Result<Self, HsmError> {
        KeyRef::new(&raw.label, raw.mechanism)
    }
}

impl KeyRef {
    /// Validates the base label: 1..=64 of `[A-Za-z0-9._-]`, without a
    /// `-vN` suffix (versions are found in the token).
    pub fn new(label: &str, mechanism: Mechanism) -> Result<Self, HsmError> {
        check_base_label(label)?;
        Ok(KeyRef {
            label: Arc::from(label),
            mechanism,
        })
    }

    /// The base label (no version suffix).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The mechanism the key is used with.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.label, self.mechanism)
    }
}

/// Checks a base key label (see [`KeyRef::new`]).
pub fn check_base_label(label: &str) -> Result<(), HsmError> {
    let invalid = |reason: String| HsmError::InvalidInput { reason };
    if label.is_empty() || label.len() > MAX_LABEL_LEN {
        return Err(invalid(format!(
            "key label must be 1..={MAX_LABEL_LEN} characters"
        )));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(format!(
            "key label `{label}` may only contain A-Z a-z 0-9 . _ -"
        )));
    }
    if crate::keyring::split_version(label).is_some() {
        return Err(invalid(format!(
            "key label `{label}` must not carry a version suffix; name the base label and the newest -vN is used"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_debug_is_masked() {
        let pin = Pin::new("123456".into());
        assert_eq!(format!("{pin:?}"), "Pin(****)");
    }

    #[test]
    fn key_ref_rejects_versioned_and_odd_labels() {
        assert!(KeyRef::new("mac-hmac", Mechanism::HmacSha256).is_ok());
        assert!(KeyRef::new("mac-hmac-v1", Mechanism::HmacSha256).is_err());
        assert!(KeyRef::new("", Mechanism::HmacSha256).is_err());
        assert!(KeyRef::new("a b", Mechanism::HmacSha256).is_err());
    }

    #[test]
    fn validation_collects_every_error() {
        let mut config = HsmConfig::danger_software();
        config.backend = Backend::Pkcs11;
        config.threads = 0;
        let errors = config.validate().unwrap_err();
        let fields: Vec<_> = errors
            .iter()
            .map(|e| match e {
                HsmError::InvalidConfig { field, .. } => *field,
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(fields, ["threads", "module_path", "token_label", "pin_env"]);
    }

    #[test]
    fn module_instances_parse_and_validate() {
        let parse = |extra: &str| {
            toml::from_str::<HsmConfig>(&format!(
                "backend = \"pkcs11\"\nmodule_path = \"/x.so\"\ntoken_label = \"t\"\npin_env = \"P\"\n{extra}"
            ))
        };
        assert_eq!(parse("").unwrap().module_instances, ModuleInstances::Shared);
        let config = parse("module_instances = \"per_session\"").unwrap();
        assert_eq!(config.module_instances, ModuleInstances::PerSession);
        assert_eq!(config.module_instances.as_str(), "per_session");
        let err = parse("module_instances = \"per_thread\"").unwrap_err();
        assert!(err.to_string().contains("per_session"), "{err}");

        let fields = |config: &HsmConfig| -> Vec<&'static str> {
            config
                .validate()
                .err()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| match e {
                    HsmError::InvalidConfig { field, .. } => Some(field),
                    _ => None,
                })
                .collect()
        };
        // A copy directory without per_session, or one that does not exist.
        let mut config = parse("module_copy_dir = \"/tmp\"").unwrap();
        assert!(fields(&config).contains(&"module_copy_dir"));
        config.module_instances = ModuleInstances::PerSession;
        assert!(!fields(&config).contains(&"module_copy_dir"));
        config.module_copy_dir = Some("/no/such/dir".into());
        assert!(fields(&config).contains(&"module_copy_dir"));
        // No module to copy with danger_software.
        let mut config = HsmConfig::danger_software();
        config.module_instances = ModuleInstances::PerSession;
        assert_eq!(fields(&config), ["module_instances"]);
    }

    #[test]
    fn pin_file_strips_newline() {
        let dir = std::env::temp_dir().join(format!("fps-hsm-pin-{}", std::process::id()));
        std::fs::write(&dir, "4321\n").unwrap();
        let pin = PinSource::File(dir.clone()).read().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(pin.auth_pin().expose_secret(), "4321");
        std::fs::remove_file(dir).unwrap();
    }
}
