//! The PKCS#11 backend (cryptoki): SoftHSM2 in tests and the demo, the
//! operator's HSM (Thales Luna, AWS CloudHSM, ...) in production.
//!
//! [`TokenSession`] is a logged-in read-write session for admin work
//! ([`crate::admin`]); the workers' sessions are opened by the factory here
//! and used in [`session`].

mod instances;
mod keys;
mod module;
mod session;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

pub(crate) use keys::{
    der_octet_string, find_key, key_type_fits, key_type_of, map_error, mechanism_for, object_class,
    protected_key_attributes, public_key_attributes, strip_octet_string, versions, ED25519_PARAMS,
    P256_PARAMS,
};
pub(crate) use module::Module;

use crate::pool::{Engine, EngineFactory};
use crate::{HsmConfig, HsmError, ModuleInstances, Pin};

/// Where Debian, Ubuntu and source builds install SoftHSM2's PKCS#11
/// module, most usual first.
pub const SOFTHSM2_MODULES: [&str; 4] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// The first of [`SOFTHSM2_MODULES`] that is installed.
pub fn installed_softhsm2() -> Option<PathBuf> {
    SOFTHSM2_MODULES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The module to use when none is configured: `$FPS_HSM_MODULE` when set
/// (as given: a wrong path then fails naming it), else the installed
/// SoftHSM2 module. Tools, tests and benchmarks share this.
pub fn default_module() -> Option<PathBuf> {
    std::env::var_os("FPS_HSM_MODULE")
        .map(PathBuf::from)
        .or_else(installed_softhsm2)
}

/// Opens worker sessions on one token.
pub(crate) struct Pkcs11Factory {
    /// The token as seen through each module instance: one entry with
    /// `module_instances = "shared"`; one per session with `per_session`
    /// (session `i` uses entry `i`, the first loaded from `module_path`;
    /// the workers' sessions come first, then the inline ones).
    tokens: Vec<Token>,
    pin: Pin,
    /// The files behind `tokens[1..]` with `per_session`. Declared after
    /// `tokens` so the instances are finalised before their files go.
    _copies: Option<instances::ModuleCopies>,
}

impl Pkcs11Factory {
    /// Loads the module (and its copies with `per_session`), finds the token
    /// in each instance and reads the PIN (config already validated).
    pub(crate) fn connect(config: &HsmConfig) -> Result<Self, HsmError> {
        let missing = |field: &'static str| HsmError::InvalidConfig {
            field,
            reason: "required when backend = \"pkcs11\"".into(),
        };
        let path = config
            .module_path
            .as_deref()
            .ok_or_else(|| missing("module_path"))?;
        let label = config
            .token_label
            .as_deref()
            .ok_or_else(|| missing("token_label"))?;
        let pin = config
            .pin_source()
            .ok_or_else(|| missing("pin_env"))?
            .read()?;
        let mut tokens = vec![Token::find(path, label)?];
        let copies = match config.module_instances {
            ModuleInstances::PerSession if config.sessions() > 1 => {
                let base = config
                    .module_copy_dir
                    .clone()
                    .unwrap_or_else(std::env::temp_dir);
                let copies = instances::ModuleCopies::create(path, config.sessions() - 1, &base)?;
                for copy in copies.files() {
                    match Token::find(copy, label) {
                        Ok(token) => tokens.push(token),
                        Err(e) => {
                            // Finalise the instances loaded so far before
                            // `copies` deletes their files.
                            tokens.clear();
                            return Err(copy_hint(e, path));
                        }
                    }
                }
                Some(copies)
            }
            _ => None,
        };
        Ok(Pkcs11Factory {
            tokens,
            pin,
            _copies: copies,
        })
    }

    pub(crate) fn token_label(&self) -> &str {
        &self.tokens[0].label
    }
}

/// Says where a module copy that fails to load came from, and the usual
/// cause (a temp directory mounted `noexec`).
fn copy_hint(error: HsmError, original: &Path) -> HsmError {
    match error {
        HsmError::ModuleLoad { path, reason } => HsmError::ModuleLoad {
            reason: format!(
                "{reason} (a private copy of {} for module_instances = \"per_session\"; \
                 if its directory is mounted noexec, set module_copy_dir)",
                original.display()
            ),
            path,
        },
        other => other,
    }
}

impl EngineFactory for Pkcs11Factory {
    fn open(&self, worker: usize) -> Result<Box<dyn Engine>, HsmError> {
        let token = &self.tokens[worker % self.tokens.len()];
        // Read-only sessions suffice for signing; login is per token and
        // module instance, so CKR_USER_ALREADY_LOGGED_IN from the 2nd
        // session of an instance on is expected.
        let session = token.login(&self.pin, false)?;
        Ok(Box::new(session::Pkcs11Engine::new(
            session,
            Arc::clone(&token.mechanisms),
            format!("token `{}`", token.label),
        )))
    }
}

/// A token found by label in a loaded module.
#[derive(Debug)]
struct Token {
    module: Arc<Module>,
    slot: Slot,
    label: String,
    /// Which of our mechanisms the token offers.
    mechanisms: Arc<HashSet<crate::Mechanism>>,
}

impl Token {
    fn find(module_path: &Path, label: &str) -> Result<Token, HsmError> {
        let module = Module::open(module_path)?;
        let slot = find_slot(&module, label)?;
        // Asked one by one rather than listed: cryptoki logs an ERROR line
        // for each listed mechanism it has no name for (SoftHSM2 offers
        // several), which every start of the switch printed.
        let mut mechanisms = HashSet::new();
        for m in crate::mechanism::ALL_MECHANISMS {
            match module
                .ctx()
                .get_mechanism_info(slot, keys::mechanism_type(m))
            {
                Ok(_) => {
                    mechanisms.insert(m);
                }
                Err(Error::Pkcs11(RvError::MechanismInvalid, _)) => {}
                Err(e) => return Err(map_error(e)),
            }
        }
        Ok(Token {
            module,
            slot,
            label: label.to_owned(),
            mechanisms: Arc::new(mechanisms),
        })
    }

    fn login(&self, pin: &Pin, read_write: bool) -> Result<Session, HsmError> {
        let ctx = self.module.ctx();
        let session = if read_write {
            ctx.open_rw_session(self.slot)
        } else {
            ctx.open_ro_session(self.slot)
        }
        .map_err(map_error)?;
        match session.login(UserType::User, Some(pin.auth_pin())) {
            Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(Error::Pkcs11(RvError::PinIncorrect, _)) => Err(HsmError::WrongPin {
                token: self.label.clone(),
            }),
            Err(Error::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::PinLocked {
                token: self.label.clone(),
            }),
            Err(e) => Err(map_error(e)),
        }
    }
}

fn find_slot(module: &Module, label: &str) -> Result<Slot, HsmError> {
    let ctx = module.ctx();
    let mut available = Vec::new();
    for slot in ctx.get_slots_with_token().map_err(map_error)? {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if !info.token_initialized() {
            continue;
        }
        if info.label().trim_end() == label {
            return Ok(slot);
        }
        available.push(info.label().trim_end().to_owned());
    }
    Err(HsmError::TokenNotFound {
        label: label.to_owned(),
        available,
    })
}

/// A logged-in read-write session for admin work (listing, generating,
/// rotating, importing keys). Keeps the module loaded while it lives.
#[derive(Debug)]
pub struct TokenSession {
    session: Session,
    token: Token,
}

impl TokenSession {
    /// Loads `module_path`, finds the token labelled `token_label` and logs
    /// in with the user `pin`.
    pub fn open(module_path: &Path, token_label: &str, pin: &Pin) -> Result<Self, HsmError> {
        let token = Token::find(module_path, token_label)?;
        let session = token.login(pin, true)?;
        Ok(TokenSession { session, token })
    }

    /// The raw cryptoki session (tests and advanced admin use).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The token label.
    pub fn token_label(&self) -> &str {
        &self.token.label
    }

    /// Whether the token offers the PKCS#11 mechanism that `mechanism` needs.
    pub fn supports(&self, mechanism: crate::Mechanism) -> bool {
        self.token.mechanisms.contains(&mechanism)
    }
}

/// Initialises a fresh token labelled `token_label` in the first slot holding
/// an uninitialised token (SoftHSM2 always offers one), and sets the user PIN.
/// Does nothing if a token with that label already exists.
pub fn init_token(
    module_path: &Path,
    token_label: &str,
    so_pin: &Pin,
    user_pin: &Pin,
) -> Result<(), HsmError> {
    let module = Module::open(module_path)?;
    match find_slot(&module, token_label) {
        Ok(_) => return Ok(()),
        Err(HsmError::TokenNotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let ctx = module.ctx();
    let slots = ctx.get_slots_with_token().map_err(map_error)?;
    let free = slots
        .into_iter()
        .find(|slot| {
            ctx.get_token_info(*slot)
                .is_ok_and(|i| !i.token_initialized())
        })
        .ok_or_else(|| HsmError::Unavailable {
            reason: "no slot with an uninitialised token".into(),
        })?;
    ctx.init_token(free, so_pin.auth_pin(), token_label)
        .map_err(map_error)?;
    // SoftHSM2 moves the new token to a new slot id: look it up again.
    let slot = find_slot(&module, token_label)?;
    let session = ctx.open_rw_session(slot).map_err(map_error)?;
    session
        .login(UserType::So, Some(so_pin.auth_pin()))
        .map_err(map_error)?;
    session.init_pin(user_pin.auth_pin()).map_err(map_error)?;
    session.logout().map_err(map_error)?;
    Ok(())
}
