//! One initialised PKCS#11 context per loaded module file per process.
//!
//! `C_Initialize` may be called once per process per module; a second
//! [`crate::Hsm`] or an admin call on the same module must share the first
//! context. The last user calls `C_Finalize` (after every session of it is
//! closed), so a later start re-reads the module's configuration: tests rely
//! on that to give each test its own SoftHSM2 token directory.
//!
//! The registry is keyed by the file the dynamic loader actually maps
//! ([`FileId`]): a symlink, a hard link and their target are one instance of
//! the module (the loader maps a file once), so they must share one context,
//! or the first to finish would `C_Finalize` the other's sessions. A *copy*
//! of the file is another instance with its own global state, and gets its
//! own context (`module_instances = "per_session"`, see [`super::instances`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};

use crate::HsmError;

/// An initialised module, finalised when the last holder drops it.
#[derive(Debug)]
pub(crate) struct Module {
    ctx: Pkcs11,
    key: FileId,
}

/// A file as the dynamic loader tells libraries apart: by device and inode
/// on Unix (glibc's `dlopen` returns the library already mapped from the
/// same file, whatever the path), by canonical path elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileId {
    #[cfg(unix)]
    device_inode: (u64, u64),
    #[cfg(not(unix))]
    canonical: std::path::PathBuf,
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<FileId> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path)?;
            Ok(FileId {
                device_inode: (meta.dev(), meta.ino()),
            })
        }
        #[cfg(not(unix))]
        {
            Ok(FileId {
                canonical: std::fs::canonicalize(path)?,
            })
        }
    }
}

type Registry = Mutex<HashMap<FileId, Weak<Module>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Module {
    /// Loads and initialises `path`, or shares the context already open on
    /// the same file.
    pub(crate) fn open(path: &Path) -> Result<Arc<Module>, HsmError> {
        let load_error = |reason: String| HsmError::ModuleLoad {
            path: path.to_owned(),
            reason,
        };
        if !path.is_file() {
            return Err(load_error("no such file".into()));
        }
        let key = FileId::of(path).map_err(|e| load_error(e.to_string()))?;
        // Poisoning: the map only holds Weak pointers, always consistent.
        let mut modules = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(module) = modules.get(&key).and_then(Weak::upgrade) {
            return Ok(module);
        }
        let ctx = Pkcs11::new(path).map_err(|e| load_error(e.to_string()))?;
        // OS locking: our worker threads call the module concurrently.
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(load_error(format!("C_Initialize failed: {e}"))),
        }
        let module = Arc::new(Module {
            ctx,
            key: key.clone(),
        });
        modules.insert(key, Arc::downgrade(&module));
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
            .get(&self.key)
            .is_some_and(|weak| weak.strong_count() == 0)
        {
            modules.remove(&self.key);
        }
        if let Err(e) = self.ctx.clone().finalize() {
            tracing::warn!(error = %e, "C_Finalize failed");
        }
    }
}
