//! The `danger_software` backend: keys in process memory, RustCrypto
//! algorithms. **Development and tests only** — keys can leak through a core
//! dump or a memory bug; production uses the PKCS#11 backend.
//!
//! It runs on the same worker pool as the PKCS#11 backend, so queueing,
//! rotation and metrics behave identically.
//!
//! Key files for [`SoftwareKeyStore::load_dir`] are named
//! `<label>-v<N>.<kind>.<format>`:
//!
//! | file suffix | content |
//! |---|---|
//! | `.hmac.hex` | HMAC-SHA256 secret, hex |
//! | `.cmac.hex` | AES-128/192/256 key, hex |
//! | `.ec.pem` | P-256 key, PKCS#8 private or SPKI public PEM |
//! | `.rsa.pem` | RSA key, PKCS#8 private or SPKI public PEM |
//! | `.ed25519.pem` | Ed25519 key, PKCS#8 private or SPKI public PEM |

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

use crate::keyring::{split_version, KeyClass};
use crate::pool::{Engine, EngineFactory};
use crate::{HsmError, Mechanism};

/// A key held in memory by the software backend. `Debug` shows only its kind.
pub struct SoftKey {
    material: KeyMaterial,
}

pub(crate) enum KeyMaterial {
    Hmac(Zeroizing<Vec<u8>>),
    Cmac(Zeroizing<Vec<u8>>),
    EcdsaPrivate(p256::ecdsa::SigningKey),
    EcdsaPublic(p256::ecdsa::VerifyingKey),
    RsaPrivate(Box<rsa::RsaPrivateKey>),
    RsaPublic(Box<rsa::RsaPublicKey>),
    Ed25519Private(Box<ed25519_dalek::SigningKey>),
    Ed25519Public(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for SoftKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SoftKey({} {}, ****)",
            self.mechanism(),
            self.class().as_str()
        )
    }
}

fn bad(reason: impl Into<String>) -> HsmError {
    HsmError::InvalidInput {
        reason: reason.into(),
    }
}

impl SoftKey {
    /// An HMAC-SHA256 secret (any length; PKCS#11 tokens often want >= 32 bytes).
    pub fn hmac_sha256(secret: &[u8]) -> Result<Self, HsmError> {
        if secret.is_empty() {
            return Err(bad("empty HMAC key"));
        }
        Ok(Self::from(KeyMaterial::Hmac(Zeroizing::new(
            secret.to_vec(),
        ))))
    }

    /// An AES key (16, 24 or 32 bytes) for AES-CMAC.
    pub fn aes_cmac(key: &[u8]) -> Result<Self, HsmError> {
        if ![16, 24, 32].contains(&key.len()) {
            return Err(bad("AES key must be 16, 24 or 32 bytes"));
        }
        Ok(Self::from(KeyMaterial::Cmac(Zeroizing::new(key.to_vec()))))
    }

    /// A P-256 private key from its 32-byte big-endian scalar.
    pub fn ecdsa_p256_private(scalar: &[u8]) -> Result<Self, HsmError> {
        let key = p256::ecdsa::SigningKey::from_slice(scalar)
            .map_err(|_| bad("invalid P-256 private scalar"))?;
        Ok(Self::from(KeyMaterial::EcdsaPrivate(key)))
    }

    /// A P-256 public key from its SEC1 encoding (`04 || x || y` or compressed).
    pub fn ecdsa_p256_public(sec1: &[u8]) -> Result<Self, HsmError> {
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
            .map_err(|_| bad("invalid P-256 public point"))?;
        Ok(Self::from(KeyMaterial::EcdsaPublic(key)))
    }

    /// An RSA private key (for RSA-PSS).
    pub fn rsa_pss_private(key: rsa::RsaPrivateKey) -> Self {
        Self::from(KeyMaterial::RsaPrivate(Box::new(key)))
    }

    /// An RSA public key from big-endian modulus and exponent.
    pub fn rsa_pss_public(modulus: &[u8], exponent: &[u8]) -> Result<Self, HsmError> {
        let key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(modulus),
            rsa::BigUint::from_bytes_be(exponent),
        )
        .map_err(|e| bad(format!("invalid RSA public key: {e}")))?;
        Ok(Self::from(KeyMaterial::RsaPublic(Box::new(key))))
    }

    /// An Ed25519 private key from its 32-byte seed.
    pub fn ed25519_private(seed: &[u8]) -> Result<Self, HsmError> {
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| bad("Ed25519 seed must be 32 bytes"))?;
        Ok(Self::from(KeyMaterial::Ed25519Private(Box::new(
            ed25519_dalek::SigningKey::from_bytes(&seed),
        ))))
    }

    /// An Ed25519 public key (32 bytes).
    pub fn ed25519_public(bytes: &[u8]) -> Result<Self, HsmError> {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("Ed25519 public key must be 32 bytes"))?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| bad("invalid Ed25519 public key"))?;
        Ok(Self::from(KeyMaterial::Ed25519Public(key)))
    }

    /// Parses a PKCS#8 private or SPKI public PEM for `mechanism`.
    pub fn from_pem(mechanism: Mechanism, pem: &str) -> Result<Self, HsmError> {
        use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let private = pem.contains("PRIVATE KEY");
        let material = match (mechanism, private) {
            (Mechanism::EcdsaP256Sha256, true) => KeyMaterial::EcdsaPrivate(
                p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
                    .map_err(|_| bad("invalid P-256 PKCS#8 PEM"))?,
            ),
            (Mechanism::EcdsaP256Sha256, false) => KeyMaterial::EcdsaPublic(
                p256::ecdsa::VerifyingKey::from_public_key_pem(pem)
                    .map_err(|_| bad("invalid P-256 public key PEM"))?,
            ),
            (Mechanism::RsaPssSha256, true) => KeyMaterial::RsaPrivate(Box::new(
                rsa::RsaPrivateKey::from_pkcs8_pem(pem)
                    .map_err(|_| bad("invalid RSA PKCS#8 PEM"))?,
            )),
            (Mechanism::RsaPssSha256, false) => KeyMaterial::RsaPublic(Box::new(
                rsa::RsaPublicKey::from_public_key_pem(pem)
                    .map_err(|_| bad("invalid RSA public key PEM"))?,
            )),
            (Mechanism::Ed25519, true) => KeyMaterial::Ed25519Private(Box::new(
                ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
                    .map_err(|_| bad("invalid Ed25519 PKCS#8 PEM"))?,
            )),
            (Mechanism::Ed25519, false) => KeyMaterial::Ed25519Public(
                ed25519_dalek::VerifyingKey::from_public_key_pem(pem)
                    .map_err(|_| bad("invalid Ed25519 public key PEM"))?,
            ),
            (m, _) => return Err(bad(format!("{m} keys are not PEM; use a .hex file"))),
        };
        Ok(Self::from(material))
    }

    /// The mechanism this key serves.
    pub fn mechanism(&self) -> Mechanism {
        match &self.material {
            KeyMaterial::Hmac(_) => Mechanism::HmacSha256,
            KeyMaterial::Cmac(_) => Mechanism::AesCmac,
            KeyMaterial::EcdsaPrivate(_) | KeyMaterial::EcdsaPublic(_) => {
                Mechanism::EcdsaP256Sha256
            }
            KeyMaterial::RsaPrivate(_) | KeyMaterial::RsaPublic(_) => Mechanism::RsaPssSha256,
            KeyMaterial::Ed25519Private(_) | KeyMaterial::Ed25519Public(_) => Mechanism::Ed25519,
        }
    }

    /// Secret, private or public.
    pub fn class(&self) -> KeyClass {
        match &self.material {
            KeyMaterial::Hmac(_) | KeyMaterial::Cmac(_) => KeyClass::Secret,
            KeyMaterial::EcdsaPrivate(_)
            | KeyMaterial::RsaPrivate(_)
            | KeyMaterial::Ed25519Private(_) => KeyClass::Private,
            _ => KeyClass::Public,
        }
    }

    /// The public half of a private key (None for secret and public keys).
    pub fn public_key(&self) -> Option<SoftKey> {
        let material = match &self.material {
            KeyMaterial::EcdsaPrivate(k) => KeyMaterial::EcdsaPublic(*k.verifying_key()),
            KeyMaterial::RsaPrivate(k) => KeyMaterial::RsaPublic(Box::new(k.to_public_key())),
            KeyMaterial::Ed25519Private(k) => KeyMaterial::Ed25519Public(k.verifying_key()),
            _ => return None,
        };
        Some(Self::from(material))
    }

    pub(crate) fn material(&self) -> &KeyMaterial {
        &self.material
    }

    fn serves(&self, class: KeyClass) -> bool {
        // A private key also answers for its public half.
        self.class() == class || (class == KeyClass::Public && self.class() == KeyClass::Private)
    }

    fn check(&self, label: &str, mechanism: Mechanism) -> Result<(), HsmError> {
        if self.mechanism() == mechanism {
            Ok(())
        } else {
            Err(HsmError::KeyTypeMismatch {
                label: label.to_owned(),
                mechanism,
                found: self.mechanism().to_string(),
            })
        }
    }

    /// Computes a MAC (secret keys).
    pub fn mac(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        use hmac::Mac as _;
        match &self.material {
            KeyMaterial::Hmac(secret) => {
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
                    .map_err(|_| bad("invalid HMAC key"))?;
                mac.update(message);
                Ok(mac.finalize().into_bytes().to_vec())
            }
            KeyMaterial::Cmac(key) => {
                fn cmac<
                    C: aes::cipher::KeyInit
                        + aes::cipher::BlockCipher
                        + aes::cipher::BlockEncrypt
                        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
                        + Clone,
                >(
                    key: &[u8],
                    message: &[u8],
                ) -> Result<Vec<u8>, HsmError> {
                    let mut mac = <cmac::Cmac<C> as cmac::Mac>::new_from_slice(key)
                        .map_err(|_| bad("invalid AES key"))?;
                    cmac::Mac::update(&mut mac, message);
                    Ok(cmac::Mac::finalize(mac).into_bytes().to_vec())
                }
                match key.len() {
                    16 => cmac::<aes::Aes128>(key, message),
                    24 => cmac::<aes::Aes192>(key, message),
                    _ => cmac::<aes::Aes256>(key, message),
                }
            }
            _ => Err(bad("not a MAC key")),
        }
    }

    /// Signs (private keys). ECDSA output is raw `r || s`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        match &self.material {
            KeyMaterial::EcdsaPrivate(key) => {
                use p256::ecdsa::signature::Signer as _;
                let signature: p256::ecdsa::Signature = key.sign(message);
                Ok(signature.to_bytes().to_vec())
            }
            KeyMaterial::RsaPrivate(key) => {
                use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
                let signer = rsa::pss::BlindedSigningKey::<sha2::Sha256>::new((**key).clone());
                let signature = signer.sign_with_rng(&mut rsa::rand_core::OsRng, message);
                Ok(signature.to_vec())
            }
            KeyMaterial::Ed25519Private(key) => {
                use ed25519_dalek::Signer as _;
                Ok(key.sign(message).to_bytes().to_vec())
            }
            _ => Err(bad("not a private key")),
        }
    }

    /// Verifies a signature (public or private keys); `Ok(false)` if invalid.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<bool, HsmError> {
        let public;
        let key = match self.class() {
            KeyClass::Private => {
                public = self.public_key();
                public.as_ref().unwrap_or(self)
            }
            _ => self,
        };
        Ok(match &key.material {
            KeyMaterial::EcdsaPublic(key) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            KeyMaterial::RsaPublic(key) => {
                use rsa::signature::Verifier as _;
                let verifier = rsa::pss::VerifyingKey::<sha2::Sha256>::new((**key).clone());
                rsa::pss::Signature::try_from(signature)
                    .is_ok_and(|sig| verifier.verify(message, &sig).is_ok())
            }
            KeyMaterial::Ed25519Public(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
            _ => return Err(bad("not a signature key")),
        })
    }
}

impl From<KeyMaterial> for SoftKey {
    fn from(material: KeyMaterial) -> Self {
        SoftKey { material }
    }
}

/// The software backend's keys, by full label (`mac-hmac-v1`). Cheap to
/// clone (shared); insertions are seen by a running [`crate::Hsm`] at the
/// next version re-scan.
#[derive(Debug, Clone, Default)]
pub struct SoftwareKeyStore {
    keys: Arc<RwLock<HashMap<String, Arc<SoftKey>>>>,
}

impl SoftwareKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` under `label`, which must carry a version (`mac-hmac-v1`).
    pub fn insert(&self, label: &str, key: SoftKey) -> Result<(), HsmError> {
        let Some((base, _)) = split_version(label) else {
            return Err(bad(format!("label `{label}` needs a -vN version suffix")));
        };
        crate::config::check_base_label(base)?;
        self.write().insert(label.to_owned(), Arc::new(key));
        Ok(())
    }

    /// Removes the key stored under `label`.
    pub fn remove(&self, label: &str) {
        self.write().remove(label);
    }

    /// Loads every key file of `dir` (see the module doc for names).
    pub fn load_dir(&self, dir: &Path) -> Result<(), HsmError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| bad(format!("cannot read danger_key_dir {}: {e}", dir.display())))?;
        for entry in entries {
            let path = entry
                .map_err(|e| bad(format!("reading {}: {e}", dir.display())))?
                .path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some((label, mechanism, pem)) = parse_key_file_name(name) else {
                tracing::warn!(file = %path.display(), "ignoring unrecognised file in danger_key_dir");
                continue;
            };
            let text = Zeroizing::new(
                std::fs::read_to_string(&path)
                    .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?,
            );
            let key = if pem {
                SoftKey::from_pem(mechanism, &text)?
            } else {
                let bytes = Zeroizing::new(
                    decode_hex(text.trim())
                        .ok_or_else(|| bad(format!("{} is not hex", path.display())))?,
                );
                match mechanism {
                    Mechanism::HmacSha256 => SoftKey::hmac_sha256(&bytes)?,
                    _ => SoftKey::aes_cmac(&bytes)?,
                }
            };
            self.insert(label, key)?;
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<SoftKey>>> {
        // The map is never left half-updated (single insert/remove calls).
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<SoftKey>>> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, label: &str, class: KeyClass) -> Result<Arc<SoftKey>, HsmError> {
        match self.read().get(label) {
            Some(key) if key.serves(class) => Ok(Arc::clone(key)),
            _ => Err(HsmError::KeyNotFound {
                label: split_version(label)
                    .map_or(label, |(base, _)| base)
                    .to_owned(),
                class: class.as_str(),
                store: "danger_software key store".to_owned(),
            }),
        }
    }
}

fn parse_key_file_name(name: &str) -> Option<(&str, Mechanism, bool)> {
    const SUFFIXES: [(&str, Mechanism, bool); 5] = [
        (".hmac.hex", Mechanism::HmacSha256, false),
        (".cmac.hex", Mechanism::AesCmac, false),
        (".ec.pem", Mechanism::EcdsaP256Sha256, true),
        (".rsa.pem", Mechanism::RsaPssSha256, true),
        (".ed25519.pem", Mechanism::Ed25519, true),
    ];
    SUFFIXES
        .iter()
        .find_map(|(suffix, m, pem)| name.strip_suffix(suffix).map(|label| (label, *m, *pem)))
}

/// Decodes lowercase or uppercase hex; `None` if malformed.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) struct SoftwareFactory {
    store: SoftwareKeyStore,
}

impl SoftwareFactory {
    pub(crate) fn new(store: SoftwareKeyStore) -> Self {
        SoftwareFactory { store }
    }
}

impl EngineFactory for SoftwareFactory {
    fn open(&self, _worker: usize) -> Result<Box<dyn Engine>, HsmError> {
        Ok(Box::new(SoftwareEngine {
            store: self.store.clone(),
        }))
    }
}

struct SoftwareEngine {
    store: SoftwareKeyStore,
}

impl Engine for SoftwareEngine {
    fn versions(&mut self, label: &str, class: KeyClass) -> Result<Vec<u32>, HsmError> {
        Ok(self
            .store
            .read()
            .iter()
            .filter(|(_, key)| key.serves(class))
            .filter_map(|(name, _)| split_version(name))
            .filter(|(base, _)| *base == label)
            .map(|(_, version)| version)
            .collect())
    }

    fn sign(
        &mut self,
        versioned: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let key = self.store.get(versioned, KeyClass::Private)?;
        key.check(versioned, mechanism)?;
        key.sign(message)
    }

    fn verify(
        &mut self,
        versioned: &str,
        mechanism: Mechanism,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, HsmError> {
        let key = self.store.get(versioned, KeyClass::Public)?;
        key.check(versioned, mechanism)?;
        key.verify(message, signature)
    }

    fn mac(
        &mut self,
        versioned: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let key = self.store.get(versioned, KeyClass::Secret)?;
        key.check(versioned, mechanism)?;
        key.mac(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_material() {
        let key = SoftKey::hmac_sha256(b"super secret key material").unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "SoftKey(hmac_sha256 secret, ****)");
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(decode_hex("00fFa1"), Some(vec![0, 255, 0xa1]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn key_file_names() {
        assert_eq!(
            parse_key_file_name("mac-hmac-v1.hmac.hex"),
            Some(("mac-hmac-v1", Mechanism::HmacSha256, false))
        );
        assert_eq!(parse_key_file_name("README.md"), None);
    }
}
