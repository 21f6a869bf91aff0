//! Test helpers: a fresh SoftHSM2 token per test, known test keys.

#![allow(dead_code)] // Not every test binary uses every helper.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use fps_hsm::pkcs11::{init_token, TokenSession};
use fps_hsm::software::{SoftKey, SoftwareKeyStore};
use fps_hsm::{admin, HsmConfig, HsmError, Mechanism, Pin, PinSource};

/// The message every test signs or MACs (an ISO 8583 request's bytes).
pub const MESSAGE: &[u8] = b"0200F23A400108A18000000000001400000012345678901234400000000000012345";

/// The test key `base` (see [`add_known_keys`]) with its mechanism.
pub fn key(base: &str) -> fps_hsm::KeyRef {
    fps_hsm::KeyRef::new(base, mechanism_of(base)).unwrap()
}

/// A two-worker runtime for driving the async API from plain tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Token label every test token gets.
pub const TOKEN: &str = "fps-switch";
/// Development user PIN of test tokens.
pub const USER_PIN: &str = "1234";
/// Environment variable the test configs read the PIN from.
pub const PIN_ENV: &str = "FPS_HSM_TEST_PIN";
const SO_PIN: &str = "5678";

/// The SoftHSM2 module, or `None` (with a loud message) when it is not
/// installed. With `FPS_REQUIRE_HSM=1` a missing module fails the test.
pub fn softhsm_module() -> Option<PathBuf> {
    fps_hsm::devtoken::or_skip("PKCS#11 tests", fps_hsm::devtoken::softhsm2_module())
}

/// SoftHSM2 reads `SOFTHSM2_CONF` at C_Initialize and is one instance per
/// process, so tokens are used one test at a time.
static TOKEN_LOCK: Mutex<()> = Mutex::new(());

/// A fresh, initialised SoftHSM2 token in its own temporary directory.
/// Dropping it removes the directory; drop every `Hsm`/`TokenSession` of it
/// first (they are declared after it in tests, so they are).
pub struct TestToken {
    pub module: PathBuf,
    dir: tempfile::TempDir,
    _lock: MutexGuard<'static, ()>,
}

impl TestToken {
    /// `None` when SoftHSM2 is not installed (see [`softhsm_module`]).
    pub fn new() -> Option<TestToken> {
        let module = softhsm_module()?;
        let lock = TOKEN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        // Safe here: tests touching the environment hold TOKEN_LOCK.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::set_var(PIN_ENV, USER_PIN);
        init_token(
            &module,
            TOKEN,
            &Pin::new(SO_PIN.into()),
            &Pin::new(USER_PIN.into()),
        )
        .expect("init SoftHSM2 token");
        Some(TestToken {
            module,
            dir,
            _lock: lock,
        })
    }

    /// A pkcs11 config for this token (PIN from [`PIN_ENV`]).
    pub fn config(&self) -> HsmConfig {
        HsmConfig::pkcs11(&self.module, TOKEN, PinSource::Env(PIN_ENV.into()))
    }

    /// An admin session.
    pub fn admin(&self) -> TokenSession {
        TokenSession::open(&self.module, TOKEN, &Pin::new(USER_PIN.into())).expect("admin session")
    }

    /// The temporary directory (for extra files like a wrong PIN file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Somewhere keys can be put: the software store or a token.
pub trait KeySink {
    fn add(&self, label: &str, key: SoftKey);
}

impl KeySink for SoftwareKeyStore {
    fn add(&self, label: &str, key: SoftKey) {
        self.insert(label, key).expect("insert soft key");
    }
}

impl KeySink for TokenSession {
    fn add(&self, label: &str, key: SoftKey) {
        admin::import(self, label, &key).expect("import key into token");
    }
}

pub fn hex(text: &str) -> Vec<u8> {
    fps_hsm::software::decode_hex(&text.replace(' ', "")).expect("hex literal")
}

/// 32-byte test secret derived from a name (not a real key).
pub fn test_secret(name: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(name.as_bytes()).to_vec()
}

pub fn rsa_test_key() -> rsa::RsaPrivateKey {
    use rsa::pkcs8::DecodePrivateKey;
    rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../data/rsa2048-test-only.pem"))
        .expect("test RSA key")
}

/// The same known keys for every backend, under `<base>-v1`:
/// `t-hmac`, `t-cmac`, `t-ec`, `t-rsa`, and `t-ed` when `ed25519`.
pub fn add_known_keys(sink: &dyn KeySink, ed25519: bool) {
    sink.add(
        "t-hmac-v1",
        SoftKey::hmac_sha256(&test_secret("hmac")).unwrap(),
    );
    sink.add(
        "t-cmac-v1",
        SoftKey::aes_cmac(&test_secret("cmac")).unwrap(),
    );
    sink.add(
        "t-ec-v1",
        SoftKey::ecdsa_p256_private(&test_secret("ec")).unwrap(),
    );
    sink.add("t-rsa-v1", SoftKey::rsa_pss_private(rsa_test_key()));
    if ed25519 {
        sink.add(
            "t-ed-v1",
            SoftKey::ed25519_private(&test_secret("ed")).unwrap(),
        );
    }
}

/// The in-memory twin of a known key (the independent implementation).
pub fn known_key(base: &str) -> SoftKey {
    match base {
        "t-hmac" => SoftKey::hmac_sha256(&test_secret("hmac")).unwrap(),
        "t-cmac" => SoftKey::aes_cmac(&test_secret("cmac")).unwrap(),
        "t-ec" => SoftKey::ecdsa_p256_private(&test_secret("ec")).unwrap(),
        "t-rsa" => SoftKey::rsa_pss_private(rsa_test_key()),
        "t-ed" => SoftKey::ed25519_private(&test_secret("ed")).unwrap(),
        other => panic!("no known key {other}"),
    }
}

pub fn mechanism_of(base: &str) -> Mechanism {
    match base {
        "t-hmac" => Mechanism::HmacSha256,
        "t-cmac" => Mechanism::AesCmac,
        "t-ec" => Mechanism::EcdsaP256Sha256,
        "t-rsa" => Mechanism::RsaPssSha256,
        "t-ed" => Mechanism::Ed25519,
        other => panic!("no known key {other}"),
    }
}

/// Independent check of a signature with RustCrypto, not through fps-hsm.
pub fn independent_verify(base: &str, message: &[u8], signature: &[u8]) -> bool {
    match base {
        "t-ec" => {
            use p256::ecdsa::signature::Verifier;
            let sk = p256::ecdsa::SigningKey::from_slice(&test_secret("ec")).unwrap();
            let sig = p256::ecdsa::Signature::from_slice(signature).unwrap();
            sk.verifying_key().verify(message, &sig).is_ok()
        }
        "t-rsa" => {
            use rsa::signature::Verifier;
            let vk = rsa::pss::VerifyingKey::<sha2::Sha256>::new(rsa_test_key().to_public_key());
            let sig = rsa::pss::Signature::try_from(signature).unwrap();
            vk.verify(message, &sig).is_ok()
        }
        "t-ed" => {
            let sk = ed25519_dalek::SigningKey::from_bytes(&test_secret("ed").try_into().unwrap());
            let sig = ed25519_dalek::Signature::from_slice(signature).unwrap();
            sk.verifying_key().verify_strict(message, &sig).is_ok()
        }
        other => panic!("{other} is not a signature key"),
    }
}

/// Independent MAC with RustCrypto.
pub fn independent_mac(base: &str, message: &[u8]) -> Vec<u8> {
    match base {
        "t-hmac" => {
            use hmac::Mac;
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&test_secret("hmac")).unwrap();
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        "t-cmac" => {
            use cmac::Mac;
            let mut m = cmac::Cmac::<aes::Aes256>::new_from_slice(&test_secret("cmac")).unwrap();
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        other => panic!("{other} is not a MAC key"),
    }
}

/// Asserts an error is the expected variant, printing it otherwise.
#[track_caller]
pub fn assert_err<T: std::fmt::Debug>(
    result: Result<T, HsmError>,
    check: impl Fn(&HsmError) -> bool,
) -> HsmError {
    match result {
        Err(e) if check(&e) => e,
        other => panic!("unexpected result: {other:?}"),
    }
}
