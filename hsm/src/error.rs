//! The crate's one error type. Messages name what is wrong and never contain
//! key material or PINs.

use std::path::PathBuf;

use crate::Mechanism;

/// Everything that can go wrong asking for a MAC or a signature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// A config value is missing or invalid.
    #[error("invalid hsm config `{field}`: {reason}")]
    InvalidConfig {
        /// The config key, e.g. `module_path`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The user PIN could not be read from its environment variable or file.
    #[error("hsm user PIN unavailable from {source_name}: {reason}")]
    PinUnavailable {
        /// `env FPS_HSM_PIN` or `file /run/secrets/pin` (never the PIN itself).
        source_name: String,
        /// Why it could not be read.
        reason: String,
    },
    /// The PKCS#11 module (shared library) could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {}: {reason}", path.display())]
    ModuleLoad {
        /// The configured module path.
        path: PathBuf,
        /// The loader's or module's complaint.
        reason: String,
    },
    /// `module_instances = "per_session"`: a private copy of the module
    /// could not be made at start (directory not creatable, disk full).
    #[error("cannot make a private copy of the PKCS#11 module at {} (module_instances = \"per_session\"): {reason}", path.display())]
    ModuleCopy {
        /// The directory or copy that could not be created.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// No initialised token carries the configured label.
    #[error("no PKCS#11 token labelled `{label}` (tokens present: {available:?})")]
    TokenNotFound {
        /// The configured token label.
        label: String,
        /// Labels of the tokens that are present, to spot typos.
        available: Vec<String>,
    },
    /// The token refused the user PIN (CKR_PIN_INCORRECT).
    #[error("wrong user PIN for token `{token}` (CKR_PIN_INCORRECT)")]
    WrongPin {
        /// The token label.
        token: String,
    },
    /// The user PIN is locked after too many wrong tries.
    #[error("user PIN of token `{token}` is locked (CKR_PIN_LOCKED)")]
    PinLocked {
        /// The token label.
        token: String,
    },
    /// No key with this label (and any `-vN` version suffix) exists.
    #[error("no key labelled `{label}` (expected objects `{label}-v1`, `{label}-v2`, ...) of class {class} in {store}")]
    KeyNotFound {
        /// The base label, without version suffix.
        label: String,
        /// The object class looked for (`secret`, `private`, `public`).
        class: &'static str,
        /// Where it was looked for (`token fps-switch`, `danger_software store`).
        store: String,
    },
    /// The key exists but is of a type the requested mechanism cannot use.
    #[error("key `{label}` is a {found} key, which cannot be used for {mechanism}")]
    KeyTypeMismatch {
        /// The full key label.
        label: String,
        /// The requested mechanism.
        mechanism: Mechanism,
        /// The key type found.
        found: String,
    },
    /// The mechanism cannot be used here: the token lacks it, or the operation
    /// does not fit the mechanism (a MAC asked of a signature key).
    #[error("unsupported mechanism {mechanism}: {reason}")]
    UnsupportedMechanism {
        /// The requested mechanism.
        mechanism: Mechanism,
        /// Why it is unsupported.
        reason: String,
    },
    /// The request queue is full: backpressure, retry later or decline.
    #[error("hsm busy: request queue full ({queue_bound} waiting)")]
    Busy {
        /// The configured queue bound.
        queue_bound: usize,
    },
    /// The HSM session is down and being reopened with backoff.
    #[error("hsm unavailable: {reason}")]
    Unavailable {
        /// What failed (PKCS#11 return value or open error).
        reason: String,
    },
    /// The request waited in the queue past `request_timeout_ms`.
    #[error("hsm request timed out after {waited_ms} ms in the queue")]
    Timeout {
        /// How long it waited.
        waited_ms: u64,
    },
    /// The [`Hsm`](crate::Hsm) was shut down (or a worker died).
    #[error("hsm is shut down")]
    ShutDown,
    /// A MAC did not verify under any accepted key version.
    #[error("MAC mismatch")]
    MacMismatch,
    /// A signature did not verify under any accepted key version.
    #[error("signature invalid")]
    SignatureInvalid,
    /// Bad input to an admin function (malformed key material, bad label).
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// A key with this exact label already exists (admin `generate`).
    #[error("key `{label}` already exists")]
    KeyExists {
        /// The full label.
        label: String,
    },
    /// Any other PKCS#11 failure, with the function and return value named.
    #[error("PKCS#11 {function} failed: {rv}")]
    Pkcs11 {
        /// The PKCS#11 function, e.g. `Sign`.
        function: String,
        /// The return value, e.g. `CKR_ATTRIBUTE_SENSITIVE`-style name.
        rv: String,
    },
}

/// A bounded classification of [`HsmError`], used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Config, PIN, module or token problems found at start.
    Setup,
    /// Missing key or wrong key type.
    Key,
    /// Mechanism unsupported.
    Mechanism,
    /// Queue full.
    Busy,
    /// Session down.
    Unavailable,
    /// Waited too long.
    Timeout,
    /// Shut down.
    ShutDown,
    /// A MAC or signature that did not verify.
    Verification,
    /// Bad admin input.
    Input,
    /// Other token error.
    Token,
}

impl ErrorKind {
    /// The metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Setup => "setup",
            ErrorKind::Key => "key",
            ErrorKind::Mechanism => "mechanism",
            ErrorKind::Busy => "busy",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ShutDown => "shut_down",
            ErrorKind::Verification => "verification",
            ErrorKind::Input => "input",
            ErrorKind::Token => "token",
        }
    }
}

impl HsmError {
    /// The bounded kind of this error (for metrics and for deciding what to do).
    pub fn kind(&self) -> ErrorKind {
        match self {
            HsmError::InvalidConfig { .. }
            | HsmError::PinUnavailable { .. }
            | HsmError::ModuleLoad { .. }
            | HsmError::ModuleCopy { .. }
            | HsmError::TokenNotFound { .. }
            | HsmError::WrongPin { .. }
            | HsmError::PinLocked { .. } => ErrorKind::Setup,
            HsmError::KeyNotFound { .. }
            | HsmError::KeyTypeMismatch { .. }
            | HsmError::KeyExists { .. } => ErrorKind::Key,
            HsmError::UnsupportedMechanism { .. } => ErrorKind::Mechanism,
            HsmError::Busy { .. } => ErrorKind::Busy,
            HsmError::Unavailable { .. } => ErrorKind::Unavailable,
            HsmError::Timeout { .. } => ErrorKind::Timeout,
            HsmError::ShutDown => ErrorKind::ShutDown,
            HsmError::MacMismatch | HsmError::SignatureInvalid => ErrorKind::Verification,
            HsmError::InvalidInput { .. } => ErrorKind::Input,
            HsmError::Pkcs11 { .. } => ErrorKind::Token,
        }
    }

    /// True when the message failed authentication (as opposed to the HSM
    /// failing): the switch treats the message as forged or corrupted.
    pub fn is_verification_failure(&self) -> bool {
        self.kind() == ErrorKind::Verification
    }

    /// True when retrying later may succeed (busy, unavailable, timeout).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Busy | ErrorKind::Unavailable | ErrorKind::Timeout
        )
    }
}
