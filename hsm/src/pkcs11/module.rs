//! One initialised PKCS#11 context per module path per process.
//!
//! `C_Initialize` may be called once per process per module; a second
//! [`crate::Hsm`] or an admin call on the same module must share the first
//! context. The last user calls `C_Finalize` (after every session of it is
//! closed), so a later start re-reads the module's configuration: tests rely
//! on that to give each test its own SoftHSM2 token directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};

use crate::HsmError;

/// An initialised module, finalised when the last holder drops it.
#[derive(Debug)]
pub(crate) struct Module {
    ctx: Pkcs11,
    path: PathBuf,
}

type Registry = Mutex<HashMap<PathBuf, Weak<Module>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Module {
    /// Loads and initialises `path`, or shares the context already open.
    pub(crate) fn open(path: &Path) -> Result<Arc<Module>, HsmError> {
        // Poisoning: the map only holds Weak pointers, always consistent.
        let mut modules = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(module) = modules.get(path).and_then(Weak::upgrade) {
            return Ok(module);
        }
        let load_error = |reason: String| HsmError::ModuleLoad {
            path: path.to_owned(),
            reason,
        };
        if !path.is_file() {
            return Err(load_error("no such file".into()));
        }
        let ctx = Pkcs11::new(path).map_err(|e| load_error(e.to_string()))?;
        // OS locking: our worker threads call the module concurrently.
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(load_error(format!("C_Initialize failed: {e}"))),
        }
        let module = Arc::new(Module {
            ctx,
            path: path.to_owned(),
        });
        modules.insert(path.to_owned(), Arc::downgrade(&module));
        Ok(module)
    }

    /// The context.
    pub(crate) fn ctx(&self) -> &Pkcs11 {
        &self.ctx
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        // Finalise under the registry lock so a concurrent `open` of the same
        // path cannot initialise between our last use and C_Finalize.
        let mut modules = registry().lock().unwrap_or_else(|e| e.into_inner());
        if modules
            .get(&self.path)
            .is_some_and(|weak| weak.strong_count() == 0)
        {
            modules.remove(&self.path);
        }
        if let Err(e) = self.ctx.clone().finalize() {
            tracing::warn!(error = %e, "C_Finalize failed");
        }
    }
}
