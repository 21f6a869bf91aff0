//! `module_instances = "per_session"` against SoftHSM2: each worker's
//! session in its own instance of the module (a private copy of the .so).
//! Results must be the same as with one shared instance, keys generated
//! after start (through the original instance) must reach every instance,
//! and the copies must exist exactly while the pool runs.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fps_hsm::clock::ManualClock;
use fps_hsm::pkcs11::TokenSession;
use fps_hsm::software::SoftKey;
use fps_hsm::{admin, Hsm, HsmConfig, HsmError, KeyRef, Mechanism, ModuleInstances, Pin};

/// A `per_session` config with two workers whose module copies go under
/// `<token dir>/copies` (inside the test's temp dir: nothing can outlive it).
fn per_session(token: &TestToken) -> (HsmConfig, PathBuf) {
    let base = token.dir().join("copies");
    std::fs::create_dir_all(&base).unwrap();
    let mut config = token.config();
    config.threads = 2;
    config.queue_bound = 512;
    config.module_instances = ModuleInstances::PerSession;
    config.module_copy_dir = Some(base.clone());
    (config, base)
}

/// The module copies under `base`: one `fps-hsm-<pid>-<n>` directory of ours
/// holding them, or none.
fn copies_under(base: &Path) -> Vec<PathBuf> {
    let prefix = format!("fps-hsm-{}-", std::process::id());
    let mut files = Vec::new();
    for dir in std::fs::read_dir(base).unwrap().flatten() {
        if !dir.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = dir.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}: mode {mode:o}", dir.path().display());
        }
        for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
            files.push(file.path());
        }
    }
    files
}

/// Whether this process has `path` mapped (loaded as a library).
fn is_mapped(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.contains(path.to_str().unwrap())
}

/// Mixed concurrent load through every worker: MACs, signatures and their
/// verification, each checked by an independent implementation; and each
/// signature cross-checked by `other` (a pool on the other instance layout).
async fn mixed_load(hsm: &Hsm, other: &Hsm) {
    let mut tasks = Vec::new();
    for i in 0..240u32 {
        let (hsm, other) = (hsm.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            let message = Bytes::from(format!("message {i}").into_bytes());
            match i % 4 {
                0 | 1 => {
                    let base = if i % 4 == 0 { "t-hmac" } else { "t-cmac" };
                    let tag = hsm.mac(&key(base), message.clone()).await.unwrap();
                    assert_eq!(tag, independent_mac(base, &message), "request {i}");
                    hsm.verify_mac(&key(base), message.clone(), tag.clone().into())
                        .await
                        .unwrap();
                    other
                        .verify_mac(&key(base), message, tag.into())
                        .await
                        .unwrap();
                }
                2 => {
                    let signature = hsm.sign(&key("t-ec"), message.clone()).await.unwrap();
                    assert!(independent_verify("t-ec", &message, &signature), "{i}");
                    other
                        .verify(&key("t-ec"), message.clone(), signature.clone().into())
                        .await
                        .unwrap();
                    hsm.verify(&key("t-ec"), message, signature.into())
                        .await
                        .unwrap();
                }
                _ => {
                    // Signed by the other layout, verified by this one.
                    let signature = other.sign(&key("t-ec"), message.clone()).await.unwrap();
                    hsm.verify(&key("t-ec"), message.clone(), signature.clone().into())
                        .await
                        .unwrap();
                    let mut bad = signature;
                    bad[3] ^= 1;
                    let e = hsm.verify(&key("t-ec"), message, bad.into()).await;
                    assert!(matches!(e, Err(HsmError::SignatureInvalid)), "{e:?}");
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[test]
fn per_session_results_match_the_shared_instance_and_copies_go_on_drop() {
    let Some(token) = TestToken::new() else {
        return;
    };
    add_known_keys(&token.admin(), false);
    let (config, base) = per_session(&token);
    let apart = Hsm::builder(config).start().unwrap();
    let copies = copies_under(&base);
    assert_eq!(
        copies.len(),
        1,
        "one copy for the second worker: {copies:?}"
    );
    assert!(
        is_mapped(&copies[0]),
        "the copy is loaded as its own library"
    );

    let mut shared_config = token.config();
    shared_config.threads = 2;
    shared_config.queue_bound = 512;
    let shared = Hsm::builder(shared_config).start().unwrap();
    let rt = runtime();
    rt.block_on(mixed_load(&apart, &shared));
    rt.block_on(mixed_load(&shared, &apart));
    assert_eq!(apart.queue_len(), 0);

    drop(apart);
    // Its instance was finalised and unloaded (C_Finalize, then dlclose).
    assert!(!is_mapped(&copies[0]), "the copy is still loaded");
    assert!(copies_under(&base).is_empty(), "copies left behind");
    assert_eq!(
        std::fs::read_dir(&base).unwrap().count(),
        0,
        "directory left behind"
    );
    // The shared pool is untouched by the other's C_Finalize.
    rt.block_on(async {
        let tag = shared
            .mac(&key("t-hmac"), Bytes::from_static(MESSAGE))
            .await
            .unwrap();
        assert_eq!(tag, independent_mac("t-hmac", MESSAGE));
    });
}

/// Keys are found by label in each session's own instance. Key versions
/// made after start, by the `fps-hsm` tool in another process and through
/// the admin functions on the original instance, must reach the copy too
/// once the pool re-scans: SoftHSM2 re-reads its token files when they
/// change. (The in-process write happens while the pool is idle: two
/// instances in one process do not lock each other out of token files.)
#[test]
fn per_session_pool_picks_up_keys_made_after_start() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let admin = token.admin();
    admin.add(
        "mac-rot-v1",
        SoftKey::hmac_sha256(&test_secret("rot-1")).unwrap(),
    );
    admin::generate(&admin, "sign-rot", Mechanism::EcdsaP256Sha256).unwrap();
    let (mut config, base) = per_session(&token);
    config.key_rotation_overlap_secs = 100;
    config.key_refresh_secs = 10;
    let clock = Arc::new(ManualClock::new());
    let hsm = Hsm::builder(config).clock(clock.clone()).start().unwrap();
    let mac_key = KeyRef::new("mac-rot", Mechanism::HmacSha256).unwrap();
    let ec_key = KeyRef::new("sign-rot", Mechanism::EcdsaP256Sha256).unwrap();
    let v1 = SoftKey::hmac_sha256(&test_secret("rot-1")).unwrap();
    let v2 = SoftKey::hmac_sha256(&test_secret("rot-2")).unwrap();
    let (tag1, tag2) = (v1.mac(MESSAGE).unwrap(), v2.mac(MESSAGE).unwrap());

    let rt = runtime();
    // Enough concurrent requests that both workers serve (and cache v1).
    let burst = |expected: Vec<u8>| {
        let hsm = hsm.clone();
        let mac_key = mac_key.clone();
        rt.block_on(async move {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let (hsm, k) = (hsm.clone(), mac_key.clone());
                    tokio::spawn(async move { hsm.mac(&k, Bytes::from_static(MESSAGE)).await })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await.unwrap().unwrap(), expected);
            }
        })
    };
    burst(tag1.clone());

    admin.add("mac-rot-v2", v2);
    let rotated = std::process::Command::new(env!("CARGO_BIN_EXE_fps-hsm"))
        .args(["--module", token.module.to_str().unwrap()])
        .args(["--token", TOKEN, "--pin-env", PIN_ENV])
        .args(["rotate", "--label", "sign-rot"])
        .output()
        .unwrap();
    assert!(
        rotated.status.success(),
        "fps-hsm rotate: {}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(String::from_utf8_lossy(&rotated.stdout).contains("sign-rot-v2"));
    // The copy's own instance sees both new objects.
    let copy = copies_under(&base).pop().expect("one copy");
    let via_copy = TokenSession::open(&copy, TOKEN, &Pin::new(USER_PIN.into())).unwrap();
    let labels: Vec<_> = admin::list_keys(&via_copy)
        .unwrap()
        .into_iter()
        .map(|k| k.label)
        .collect();
    assert!(
        labels.iter().any(|l| l == "mac-rot-v2") && labels.iter().any(|l| l == "sign-rot-v2"),
        "{labels:?}"
    );
    drop(via_copy);

    // Not used before the re-scan; used by every worker after it.
    burst(tag1.clone());
    clock.advance(Duration::from_secs(11));
    burst(tag2.clone());
    let public_v2 = admin::public_key(&admin, "sign-rot-v2").unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (hsm, mac_key, ec_key) = (hsm.clone(), mac_key.clone(), ec_key.clone());
                let (tag1, tag2) = (tag1.clone(), tag2.clone());
                tokio::spawn(async move {
                    let message = Bytes::from_static(MESSAGE);
                    // Both versions verify during the overlap, on every worker.
                    let tag = if i % 2 == 0 { tag1 } else { tag2 };
                    hsm.verify_mac(&mac_key, message.clone(), tag.into())
                        .await
                        .unwrap();
                    hsm.sign(&ec_key, message).await.unwrap()
                })
            })
            .collect();
        for task in tasks {
            let signature = task.await.unwrap();
            assert!(
                public_v2.verify(MESSAGE, &signature).unwrap(),
                "signed with sign-rot-v2"
            );
        }
    });
    drop(hsm);
    assert!(copies_under(&base).is_empty(), "copies left behind");
}

#[test]
fn per_session_with_one_thread_copies_nothing() {
    let Some(token) = TestToken::new() else {
        return;
    };
    add_known_keys(&token.admin(), false);
    let (mut config, base) = per_session(&token);
    config.threads = 1;
    let hsm = Hsm::builder(config).start().unwrap();
    assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
    assert_macs_right(&hsm, "t-hmac");
}

/// The default copy directory is the system temp directory.
#[test]
fn per_session_copies_default_to_the_temp_dir() {
    let Some(token) = TestToken::new() else {
        return;
    };
    add_known_keys(&token.admin(), false);
    let (mut config, _) = per_session(&token);
    config.module_copy_dir = None;
    let before = copies_under(&std::env::temp_dir());
    let hsm = Hsm::builder(config).start().unwrap();
    let during = copies_under(&std::env::temp_dir());
    let new: Vec<_> = during.iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(new.len(), 1, "{during:?}");
    assert_macs_right(&hsm, "t-cmac");
    drop(hsm);
    assert!(!new[0].exists(), "{} left behind", new[0].display());
    assert!(!new[0].parent().unwrap().exists());
}

/// Start-up errors are the same as with one shared instance, and a copy that
/// cannot be made is a clear error naming the path, with nothing left behind.
#[test]
fn per_session_start_up_errors_name_the_path() {
    let Some(token) = TestToken::new() else {
        return;
    };
    let (good, base) = per_session(&token);
    let layouts = [ModuleInstances::Shared, ModuleInstances::PerSession];

    // A module path that does not exist: the same validation error.
    let errors: Vec<String> = layouts
        .iter()
        .map(|&layout| {
            let mut config = good.clone();
            config.module_instances = layout;
            config.module_copy_dir = None;
            config.module_path = Some(token.dir().join("nope.so"));
            let e = assert_err(Hsm::builder(config).start(), |e| {
                matches!(
                    e,
                    HsmError::InvalidConfig {
                        field: "module_path",
                        ..
                    }
                )
            });
            e.to_string()
        })
        .collect();
    assert_eq!(errors[0], errors[1]);
    assert!(errors[0].contains("nope.so"), "{}", errors[0]);

    // A file that is not a library: the same load error, before any copy.
    let not_a_library = token.dir().join("not-a-library.so");
    std::fs::write(&not_a_library, b"not ELF").unwrap();
    let errors: Vec<String> = layouts
        .iter()
        .map(|&layout| {
            let mut config = good.clone();
            config.module_instances = layout;
            config.module_copy_dir = None;
            config.module_path = Some(not_a_library.clone());
            let e = assert_err(Hsm::builder(config).start(), |e| {
                matches!(e, HsmError::ModuleLoad { .. })
            });
            e.to_string()
        })
        .collect();
    assert_eq!(errors[0], errors[1]);
    assert!(errors[0].contains("not-a-library.so"), "{}", errors[0]);
    assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);

    // Copies that cannot be written (no directory can be made in /proc).
    let mut config = good.clone();
    config.module_copy_dir = Some("/proc".into());
    let e = assert_err(Hsm::builder(config).start(), |e| {
        matches!(e, HsmError::ModuleCopy { .. })
    });
    let text = e.to_string();
    assert!(
        text.contains("/proc/fps-hsm-") && text.contains("per_session"),
        "{text}"
    );

    // And the good config still starts afterwards.
    let hsm = Hsm::builder(good).start().unwrap();
    assert_eq!(copies_under(&base).len(), 1);
    drop(hsm);
    assert!(copies_under(&base).is_empty());
}

/// `hsm` MACs [`MESSAGE`] with test key `base` as an independent
/// implementation does.
fn assert_macs_right(hsm: &Hsm, base: &str) {
    let tag = runtime()
        .block_on(hsm.mac(&key(base), Bytes::from_static(MESSAGE)))
        .unwrap();
    assert_eq!(tag, independent_mac(base, MESSAGE), "{base}");
}
