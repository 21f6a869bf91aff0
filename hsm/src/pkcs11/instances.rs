//! Private copies of the PKCS#11 module file, for
//! `module_instances = "per_session"`.
//!
//! The dynamic loader maps a file once per process, so every session opened
//! through one module path shares that module's process-wide state. SoftHSM2
//! guards its state with global locks, which holds two pool sessions of one
//! instance to 1.3-1.5x one (2 cores). A copy of the file under another path
//! is mapped again, with its own globals and locks: 1.7-1.8x.
//!
//! The copies live in one new directory per [`crate::Hsm`],
//! `<base>/fps-hsm-<pid>-<n>/`, created with mode 0700 and refused if it
//! already exists, so no other user can plant or swap the code we load.
//! [`ModuleCopies`] deletes the files and the directory when dropped (after
//! the instances loaded from them are finalised, see `Pkcs11Factory`). A
//! process killed outright (`kill -9`, as `scripts/chaos` does) leaves its
//! directory behind; the next start under the same base removes those of
//! processes that no longer exist (Linux; see [`sweep_stale`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::HsmError;

/// Directory names tried before giving up: a name already taken (left
/// behind by a killed process with our pid, or planted) is skipped.
const MAX_DIR_ATTEMPTS: usize = 16;

/// Makes directory names unique within the process.
static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// Most entries of the base directory looked at for stale copies (it may be
/// a busy `/tmp`).
const MAX_SWEPT_ENTRIES: usize = 10_000;

/// Directory name prefix, followed by `<pid>-<n>`.
const DIR_PREFIX: &str = "fps-hsm-";

/// A private directory of copies of one module file; removed on drop.
#[derive(Debug)]
pub(crate) struct ModuleCopies {
    dir: PathBuf,
    files: Vec<PathBuf>,
}

impl ModuleCopies {
    /// Copies `module` `count` times into a new private directory under
    /// `base`. Every failure (directory not creatable, disk full) is an
    /// [`HsmError::ModuleCopy`] naming the path at fault; whatever was
    /// created is removed again.
    pub(crate) fn create(module: &Path, count: usize, base: &Path) -> Result<Self, HsmError> {
        let failed = |path: &Path, what: &str, e: std::io::Error| HsmError::ModuleCopy {
            path: path.to_owned(),
            reason: format!("{what}: {e}"),
        };
        let dir = create_private_dir(base, &NEXT_DIR)
            .map_err(|(path, e)| failed(&path, "cannot create the directory", e))?;
        sweep_stale(base, &dir);
        let mut copies = ModuleCopies {
            dir,
            files: Vec::with_capacity(count),
        };
        let name = module
            .file_name()
            .map_or_else(|| "module.so".into(), |n| n.to_string_lossy().into_owned());
        for index in 1..=count {
            let copy = copies.dir.join(format!("{index}-{name}"));
            // Recorded before copying so a partial file is removed too.
            copies.files.push(copy.clone());
            std::fs::copy(module, &copy).map_err(|e| {
                failed(
                    &copy,
                    &format!("cannot copy {} there for worker {index}", module.display()),
                    e,
                )
            })?;
        }
        Ok(copies)
    }

    /// The copies, one per worker after the first.
    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl Drop for ModuleCopies {
    fn drop(&mut self) {
        for file in &self.files {
            match std::fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %file.display(), error = %e, "cannot remove hsm module copy")
                }
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "cannot remove hsm module copy directory");
        }
    }
}

/// Creates `<base>/fps-hsm-<pid>-<n>` with mode 0700, `n` from `next`,
/// never reusing an existing directory.
fn create_private_dir(
    base: &Path,
    next: &AtomicUsize,
) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    let pid = std::process::id();
    let mut last = None;
    for _ in 0..MAX_DIR_ATTEMPTS {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{DIR_PREFIX}{pid}-{n}"));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((dir, e)),
            Err(e) => return Err((dir, e)),
        }
    }
    // MAX_DIR_ATTEMPTS > 0, so at least one attempt failed and set `last`.
    Err(last.expect("at least one attempt"))
}

/// Removes the copy directories under `base` left by processes that no
/// longer exist (killed before they could clean up). Only directories named
/// like ours, not symlinks, owned by the same user as `ours` (just created),
/// whose pid has no `/proc` entry. A process in another pid namespace
/// sharing `base` looks dead from here: removing its copies does not disturb
/// it (its instances are mapped already; its own cleanup ignores files that
/// are gone). Best effort: failures are logged, never fatal.
#[cfg(target_os = "linux")]
fn sweep_stale(base: &Path, ours: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata(ours).map(|m| m.uid()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten().take(MAX_SWEPT_ENTRIES) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(stale_pid) else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        // Not followed if a symlink: only a real directory of ours goes.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        // remove_dir_all does not follow symlinks inside the directory.
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), pid, "removed hsm module copies left by an exited process")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove stale hsm module copies")
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn sweep_stale(_base: &Path, _ours: &Path) {}

/// The pid in a directory name `fps-hsm-<pid>-<n>`, if it is one.
fn stale_pid(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(DIR_PREFIX)?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_live_in_a_private_directory_removed_on_drop() {
        let base = tempfile::tempdir().unwrap();
        let module = base.path().join("libfake.so");
        std::fs::write(&module, b"not really a library").unwrap();
        let copies = ModuleCopies::create(&module, 2, base.path()).unwrap();
        let dir = copies.dir.clone();
        assert_eq!(copies.files().len(), 2);
        for file in copies.files() {
            assert_eq!(file.parent(), Some(dir.as_path()));
            assert_eq!(std::fs::read(file).unwrap(), b"not really a library");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        }
        drop(copies);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(module.exists(), "the original is never touched");
    }

    #[test]
    fn a_failed_copy_names_the_path_and_leaves_nothing() {
        let base = tempfile::tempdir().unwrap();
        let missing = base.path().join("no-such-module.so");
        let e = ModuleCopies::create(&missing, 1, base.path()).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, HsmError::ModuleCopy { .. }) && text.contains("no-such-module.so"),
            "{text}"
        );
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0);
        // A base directory that does not exist.
        let e = ModuleCopies::create(&missing, 1, &base.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn directory_names_parse() {
        assert_eq!(stale_pid("fps-hsm-4242-0"), Some(4242));
        assert_eq!(stale_pid("fps-hsm-4242-17"), Some(4242));
        for other in [
            "fps-hsm-4242",
            "fps-hsm-4242-",
            "fps-hsm--1",
            "fps-hsm-42a-1",
            "fps-hsm-bench-42",
            "fps-hsm-1-2-3",
            "fps-hsm-pin-42",
        ] {
            assert_eq!(stale_pid(other), None, "{other}");
        }
    }

    /// Copies left by a process that no longer exists are removed at the
    /// next start; those of live processes, and anything not ours, stay.
    #[cfg(target_os = "linux")]
    #[test]
    fn copies_of_exited_processes_are_swept() {
        let base = tempfile::tempdir().unwrap();
        let module = base.path().join("libfake.so");
        std::fs::write(&module, b"x").unwrap();
        // Pids above the kernel's pid_max (4194304 at most) never exist.
        let dead = base.path().join("fps-hsm-4999999-0");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("1-libfake.so"), b"x").unwrap();
        let live = base
            .path()
            .join(format!("fps-hsm-{}-999", std::process::id()));
        std::fs::create_dir(&live).unwrap();
        let init = base.path().join("fps-hsm-1-0"); // pid 1 always exists
        std::fs::create_dir(&init).unwrap();
        let unrelated = base.path().join("fps-hsm-notes");
        std::fs::create_dir(&unrelated).unwrap();
        let copies = ModuleCopies::create(&module, 1, base.path()).unwrap();
        assert!(!dead.exists(), "stale copies kept");
        for kept in [&live, &init, &unrelated, &copies.dir] {
            assert!(kept.exists(), "{} removed", kept.display());
        }
    }

    #[test]
    fn an_existing_directory_is_never_reused() {
        let base = tempfile::tempdir().unwrap();
        let pid = std::process::id();
        let planted = base.path().join(format!("fps-hsm-{pid}-0"));
        std::fs::create_dir(&planted).unwrap();
        let next = AtomicUsize::new(0);
        let dir = create_private_dir(base.path(), &next).unwrap();
        assert_eq!(dir, base.path().join(format!("fps-hsm-{pid}-1")));
        // Every name taken: a clear error naming the last one tried.
        let next = AtomicUsize::new(0);
        for n in 2..MAX_DIR_ATTEMPTS {
            std::fs::create_dir(base.path().join(format!("fps-hsm-{pid}-{n}"))).unwrap();
        }
        let (path, e) = create_private_dir(base.path(), &next).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(path.starts_with(base.path()), "{}", path.display());
    }
}
