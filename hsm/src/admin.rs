//! Key administration: list keys with their protection attributes, generate
//! keys inside the token, rotate (new `-vN` version), import known key
//! material (tests, migrations), import a MAC key a bank provides as the
//! next version of a label ([`import_secret`]), delete one key version
//! ([`destroy_key`]). Used by the `fps-hsm` binary.
//!
//! Secret and private keys are always created with CKA_TOKEN, CKA_PRIVATE
//! and CKA_SENSITIVE true and CKA_EXTRACTABLE false (invariant 7). Nothing
//! here prints or returns key material, and the copies of key material made
//! for a C_CreateObject template are wiped once the call returns.

use cryptoki::mechanism::Mechanism as CkMechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use zeroize::Zeroize as _;

use crate::config::check_base_label;
use crate::keyring::{split_version, versioned_label, KeyClass, MAX_VERSION};
use crate::pkcs11::{
    der_octet_string, find_key, key_type_fits, key_type_of, map_error, mechanism_for, object_class,
    protected_key_attributes, public_key_attributes, strip_octet_string, versions, TokenSession,
    ED25519_PARAMS, P256_PARAMS,
};
use crate::software::{KeyMaterial, SoftKey};
use crate::{HsmError, Mechanism};

/// Size of generated HMAC-SHA256 secrets and AES-CMAC keys (AES-256).
pub const SECRET_KEY_BYTES: u64 = 32;
/// Modulus size of generated RSA keys.
pub const RSA_BITS: u64 = 2048;
/// Most objects `list_keys` reports (bounded output on a huge token).
pub const MAX_LISTED: usize = 10_000;
/// Shortest HMAC-SHA256 key [`import_secret`] takes: the MAC's own length,
/// as RFC 2104 advises. SoftHSM2 would store a shorter key, then refuse to
/// MAC with it (C_SignInit: CKR_KEY_SIZE_RANGE): refused here, at import.
pub const MIN_HMAC_KEY_BYTES: usize = 32;
/// Longest HMAC-SHA256 key [`import_secret`] takes. A key longer than the
/// SHA-256 block (64 bytes) is first hashed to 32 bytes (RFC 2104), so more
/// adds no strength; the bound keeps the input sane while admitting RFC
/// 4231's 131-byte test key.
pub const MAX_HMAC_KEY_BYTES: usize = 256;
/// AES key sizes (AES-128, -192, -256) [`import_secret`] takes for AES-CMAC.
pub const AES_KEY_BYTES: [usize; 3] = [16, 24, 32];

/// One key object as `list` shows it. Attributes a class does not have (or
/// the token will not reveal) are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// CKA_LABEL.
    pub label: String,
    /// `secret`, `private` or `public`.
    pub class: &'static str,
    /// CKA_KEY_TYPE, e.g. `CKK_AES`.
    pub key_type: String,
    /// CKA_SENSITIVE.
    pub sensitive: Option<bool>,
    /// CKA_EXTRACTABLE.
    pub extractable: Option<bool>,
    /// CKA_PRIVATE.
    pub private: Option<bool>,
}

/// Lists every secret, private and public key of the token, by label.
pub fn list_keys(token: &TokenSession) -> Result<Vec<KeyInfo>, HsmError> {
    let session = token.session();
    let mut keys = Vec::new();
    for class in [KeyClass::Secret, KeyClass::Private, KeyClass::Public] {
        let handles = session
            .find_objects(&[Attribute::Class(object_class(class))])
            .map_err(map_error)?;
        for handle in handles.into_iter().take(MAX_LISTED) {
            keys.push(key_info(token, handle, class)?);
        }
    }
    keys.sort_by(|a, b| (&a.label, a.class).cmp(&(&b.label, b.class)));
    keys.truncate(MAX_LISTED);
    Ok(keys)
}

fn key_info(
    token: &TokenSession,
    handle: ObjectHandle,
    class: KeyClass,
) -> Result<KeyInfo, HsmError> {
    let attrs = token
        .session()
        .get_attributes(
            handle,
            &[
                AttributeType::Label,
                AttributeType::KeyType,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Private,
            ],
        )
        .map_err(map_error)?;
    let mut info = KeyInfo {
        label: String::new(),
        class: class.as_str(),
        key_type: "?".into(),
        sensitive: None,
        extractable: None,
        private: None,
    };
    for attr in attrs {
        match attr {
            Attribute::Label(l) => info.label = String::from_utf8_lossy(&l).into_owned(),
            Attribute::KeyType(t) => info.key_type = t.to_string(),
            Attribute::Sensitive(b) if class != KeyClass::Public => info.sensitive = Some(b),
            Attribute::Extractable(b) if class != KeyClass::Public => info.extractable = Some(b),
            Attribute::Private(b) => info.private = Some(b),
            _ => {}
        }
    }
    Ok(info)
}

/// Generates version 1 of a new key `base_label` for `mechanism` inside the
/// token; fails with [`HsmError::KeyExists`] if any version exists.
/// Returns the full label (`<base>-v1`).
pub fn generate(
    token: &TokenSession,
    base_label: &str,
    mechanism: Mechanism,
) -> Result<String, HsmError> {
    check_base_label(base_label)?;
    if let Some(version) = newest_version(token, base_label)? {
        return Err(HsmError::KeyExists {
            label: versioned_label(base_label, version),
        });
    }
    let label = versioned_label(base_label, 1);
    generate_labelled(token, &label, mechanism, None)?;
    Ok(label)
}

/// Generates the next version of `base_label`, of the same kind (and size)
/// as the newest one. Returns the new full label. Running switches pick it
/// up at their next key re-scan; the previous version keeps verifying for
/// the configured overlap.
pub fn rotate(token: &TokenSession, base_label: &str) -> Result<String, HsmError> {
    check_base_label(base_label)?;
    let missing = || HsmError::KeyNotFound {
        label: base_label.to_owned(),
        class: "secret or private",
        store: format!("token `{}`", token.token_label()),
    };
    let newest = newest_version(token, base_label)?.ok_or_else(missing)?;
    let next = next_version(base_label, newest)?;
    let current = versioned_label(base_label, newest);
    let session = token.session();
    let store = format!("token `{}`", token.token_label());
    let (handle, class) = match find_key(session, &current, KeyClass::Secret, &store)? {
        Some(h) => (h, KeyClass::Secret),
        None => (
            find_key(session, &current, KeyClass::Private, &store)?.ok_or_else(missing)?,
            KeyClass::Private,
        ),
    };
    let key_type = key_type_of(session, handle)?.ok_or_else(missing)?;
    let mechanism = mechanism_for(key_type).ok_or_else(|| HsmError::InvalidInput {
        reason: format!("`{current}` is a {key_type} key, which fps-hsm does not rotate"),
    })?;
    // Keep the size of the key being replaced.
    let size = match class {
        KeyClass::Secret => ulong_attr(token, handle, AttributeType::ValueLen)?,
        _ if key_type == KeyType::RSA => find_key(session, &current, KeyClass::Public, &store)?
            .map(|public| ulong_attr(token, public, AttributeType::ModulusBits))
            .transpose()?
            .flatten(),
        _ => None,
    };
    let label = versioned_label(base_label, next);
    generate_labelled(token, &label, mechanism, size)?;
    Ok(label)
}

/// The version after `newest` of `base_label`, unless that was the last.
fn next_version(base_label: &str, newest: u32) -> Result<u32, HsmError> {
    if newest >= MAX_VERSION {
        return Err(HsmError::InvalidInput {
            reason: format!("`{base_label}` already at the last version {MAX_VERSION}"),
        });
    }
    Ok(newest + 1)
}

/// The base of a full label (`<base>-vN`), checked.
fn check_versioned_label(label: &str) -> Result<&str, HsmError> {
    let Some((base, _)) = split_version(label) else {
        return Err(HsmError::InvalidInput {
            reason: format!("label `{label}` needs a -vN version suffix"),
        });
    };
    check_base_label(base)?;
    Ok(base)
}

/// Imports known key material under the full `label` (`<base>-vN`) as a
/// sensitive, non-extractable token object; a private key also gets its
/// public key object under the same label. For tests and migrations only:
/// production keys are generated inside the HSM.
pub fn import(token: &TokenSession, label: &str, key: &SoftKey) -> Result<(), HsmError> {
    check_versioned_label(label)?;
    let session = token.session();
    let store = format!("token `{}`", token.token_label());
    for class in [KeyClass::Secret, KeyClass::Private, KeyClass::Public] {
        if find_key(session, label, class, &store)?.is_some() {
            return Err(HsmError::KeyExists {
                label: label.to_owned(),
            });
        }
    }
    let mut private = WipedTemplate(protected_key_attributes(label));
    let mut public = public_key_attributes(label);
    let public_only = match key.material() {
        KeyMaterial::Hmac(secret) => {
            private.extend(secret_attributes(KeyType::GENERIC_SECRET, secret));
            return create(token, &private);
        }
        KeyMaterial::Cmac(secret) => {
            private.extend(secret_attributes(KeyType::AES, secret));
            return create(token, &private);
        }
        KeyMaterial::EcdsaPrivate(k) => {
            private.extend([
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(P256_PARAMS.to_vec()),
                Attribute::Value(k.to_bytes().to_vec()),
                Attribute::Sign(true),
            ]);
            public.extend(ec_public(
                KeyType::EC,
                &P256_PARAMS,
                k.verifying_key().to_encoded_point(false).as_bytes(),
            ));
            false
        }
        KeyMaterial::EcdsaPublic(k) => {
            public.extend(ec_public(
                KeyType::EC,
                &P256_PARAMS,
                k.to_encoded_point(false).as_bytes(),
            ));
            true
        }
        KeyMaterial::RsaPrivate(k) => {
            use rsa::traits::{PrivateKeyParts, PublicKeyParts};
            let mut k = (**k).clone();
            k.precompute().map_err(|e| HsmError::InvalidInput {
                reason: format!("RSA key: {e}"),
            })?;
            let [p, q] = k.primes() else {
                return Err(HsmError::InvalidInput {
                    reason: "only two-prime RSA keys can be imported".into(),
                });
            };
            let crt = |v: Option<&rsa::BigUint>| v.map(|n| n.to_bytes_be()).unwrap_or_default();
            let coefficient = k
                .crt_coefficient()
                .map(|n| n.to_bytes_be())
                .unwrap_or_default();
            private.extend([
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Modulus(k.n().to_bytes_be()),
                Attribute::PublicExponent(k.e().to_bytes_be()),
                Attribute::PrivateExponent(k.d().to_bytes_be()),
                Attribute::Prime1(p.to_bytes_be()),
                Attribute::Prime2(q.to_bytes_be()),
                Attribute::Exponent1(crt(k.dp())),
                Attribute::Exponent2(crt(k.dq())),
                Attribute::Coefficient(coefficient),
                Attribute::Sign(true),
            ]);
            public.extend(rsa_public(k.n().to_bytes_be(), k.e().to_bytes_be()));
            false
        }
        KeyMaterial::RsaPublic(k) => {
            use rsa::traits::PublicKeyParts;
            public.extend(rsa_public(k.n().to_bytes_be(), k.e().to_bytes_be()));
            true
        }
        KeyMaterial::Ed25519Private(k) => {
            private.extend([
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::EcParams(ED25519_PARAMS.to_vec()),
                Attribute::Value(k.to_bytes().to_vec()),
                Attribute::Sign(true),
            ]);
            public.extend(ec_public(
                KeyType::EC_EDWARDS,
                &ED25519_PARAMS,
                k.verifying_key().as_bytes(),
            ));
            false
        }
        KeyMaterial::Ed25519Public(k) => {
            public.extend(ec_public(
                KeyType::EC_EDWARDS,
                &ED25519_PARAMS,
                k.as_bytes(),
            ));
            true
        }
    };
    if !public_only {
        create(token, &private)?;
    }
    create(token, &public)
}

/// Imports a MAC key a bank provides (`value`, the raw key bytes) as the
/// next version of `base_label`: `<base>-v1` when there is none, else the
/// newest version + 1, as [`rotate`] numbers them. The key is created with
/// C_CreateObject as a token secret key with CKA_SENSITIVE, CKA_PRIVATE,
/// CKA_SIGN and CKA_VERIFY true and CKA_EXTRACTABLE false, of key type
/// CKK_GENERIC_SECRET (HMAC-SHA256) or CKK_AES (AES-CMAC): the attributes
/// [`generate`] gives MAC keys, so the pool uses both alike. Running
/// switches pick the new version up at their next key re-scan.
///
/// Only MAC mechanisms are taken ([`HsmError::UnsupportedMechanism`]
/// otherwise); lengths as [`check_secret_len`]. Returns the full label.
pub fn import_secret(
    token: &TokenSession,
    base_label: &str,
    mechanism: Mechanism,
    value: &[u8],
) -> Result<String, HsmError> {
    check_secret_len(mechanism, value.len())?;
    check_base_label(base_label)?;
    if !token.supports(mechanism) {
        return Err(HsmError::UnsupportedMechanism {
            mechanism,
            reason: format!("token `{}` does not offer it", token.token_label()),
        });
    }
    let version = match newest_version(token, base_label)? {
        None => 1,
        Some(newest) => {
            check_same_kind(token, &versioned_label(base_label, newest), mechanism)?;
            next_version(base_label, newest)?
        }
    };
    // check_secret_len let only the two MAC mechanisms through. SoftKey
    // keeps its copy in Zeroizing; `import` wipes the template's.
    let key = match mechanism {
        Mechanism::HmacSha256 => SoftKey::hmac_sha256(value)?,
        _ => SoftKey::aes_cmac(value)?,
    };
    let label = versioned_label(base_label, version);
    import(token, &label, &key)?;
    Ok(label)
}

/// Whether `len` bytes make a key [`import_secret`] takes for `mechanism`:
/// AES-CMAC 16, 24 or 32 bytes; HMAC-SHA256 [`MIN_HMAC_KEY_BYTES`] to
/// [`MAX_HMAC_KEY_BYTES`]. Signature mechanisms are refused with
/// [`HsmError::UnsupportedMechanism`]. The message names lengths only.
pub fn check_secret_len(mechanism: Mechanism, len: usize) -> Result<(), HsmError> {
    let problem = match mechanism {
        Mechanism::HmacSha256 if len < MIN_HMAC_KEY_BYTES => {
            format!("{len} bytes, HMAC-SHA256 keys need at least {MIN_HMAC_KEY_BYTES}")
        }
        Mechanism::HmacSha256 if len > MAX_HMAC_KEY_BYTES => {
            format!("{len} bytes, HMAC-SHA256 keys are at most {MAX_HMAC_KEY_BYTES}")
        }
        Mechanism::HmacSha256 => return Ok(()),
        Mechanism::AesCmac if AES_KEY_BYTES.contains(&len) => return Ok(()),
        Mechanism::AesCmac => format!("{len} bytes, AES-CMAC keys are 16, 24 or 32"),
        other => {
            return Err(HsmError::UnsupportedMechanism {
                mechanism: other,
                reason: "only MAC keys (hmac_sha256, aes_cmac) are imported as secrets; \
                         signature keys are key pairs"
                    .into(),
            })
        }
    };
    Err(HsmError::InvalidInput { reason: problem })
}

/// Deletes one key version: every token object (secret, private, public)
/// labelled exactly `label` (`<base>-vN`). Other versions stay. Fails with
/// [`HsmError::KeyNotFound`] when there is none. A process still using the
/// version may hold its own working copy until its session ends; delete a
/// version only once no one uses it (after the rotation overlap).
pub fn destroy_key(token: &TokenSession, label: &str) -> Result<(), HsmError> {
    let base = check_versioned_label(label)?;
    let session = token.session();
    let store = format!("token `{}`", token.token_label());
    let mut handles = Vec::new();
    for class in [KeyClass::Secret, KeyClass::Private, KeyClass::Public] {
        handles.extend(find_key(session, label, class, &store)?);
    }
    if handles.is_empty() {
        return Err(HsmError::KeyNotFound {
            label: base.to_owned(),
            class: "secret, private or public",
            store,
        });
    }
    for handle in handles {
        session.destroy_object(handle).map_err(map_error)?;
    }
    Ok(())
}

/// A new version of a label must serve the same mechanism as the newest,
/// or the pool would find a key of the wrong type under the label.
fn check_same_kind(
    token: &TokenSession,
    current: &str,
    mechanism: Mechanism,
) -> Result<(), HsmError> {
    let store = format!("token `{}`", token.token_label());
    let session = token.session();
    let key_type = match find_key(session, current, KeyClass::Secret, &store)? {
        Some(handle) => key_type_of(session, handle)?,
        None => None,
    };
    match key_type {
        Some(t) if key_type_fits(mechanism, t) => Ok(()),
        Some(t) => Err(HsmError::InvalidInput {
            reason: format!(
                "`{current}` is a {t} key; a new version for {mechanism} needs a label of its own"
            ),
        }),
        None => Err(HsmError::InvalidInput {
            reason: format!(
                "`{current}` is not a secret key; a {mechanism} key needs a label of its own"
            ),
        }),
    }
}

/// The public key stored under the full `label` (to hand to a bank, or to
/// verify with another implementation). Public keys are not secret.
pub fn public_key(token: &TokenSession, label: &str) -> Result<SoftKey, HsmError> {
    let store = format!("token `{}`", token.token_label());
    let handle = find_key(token.session(), label, KeyClass::Public, &store)?.ok_or_else(|| {
        HsmError::KeyNotFound {
            label: split_version(label).map_or(label, |(b, _)| b).to_owned(),
            class: "public",
            store: store.clone(),
        }
    })?;
    let attrs = token
        .session()
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::EcPoint,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
            ],
        )
        .map_err(map_error)?;
    let (mut key_type, mut point, mut modulus, mut exponent) = (None, None, None, None);
    for attr in attrs {
        match attr {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcPoint(p) => point = Some(p),
            Attribute::Modulus(n) => modulus = Some(n),
            Attribute::PublicExponent(e) => exponent = Some(e),
            _ => {}
        }
    }
    let incomplete = || HsmError::InvalidInput {
        reason: format!("public key `{label}` lacks its key attributes"),
    };
    match key_type {
        Some(t) if t == KeyType::EC => {
            SoftKey::ecdsa_p256_public(strip_octet_string(&point.ok_or_else(incomplete)?))
        }
        Some(t) if t == KeyType::EC_EDWARDS => {
            SoftKey::ed25519_public(strip_octet_string(&point.ok_or_else(incomplete)?))
        }
        Some(t) if t == KeyType::RSA => SoftKey::rsa_pss_public(
            &modulus.ok_or_else(incomplete)?,
            &exponent.ok_or_else(incomplete)?,
        ),
        _ => Err(incomplete()),
    }
}

/// A C_CreateObject template holding key material: cryptoki's attributes
/// are plain `Vec<u8>`s, so the secret values are wiped when it drops.
struct WipedTemplate(Vec<Attribute>);

impl std::ops::Deref for WipedTemplate {
    type Target = Vec<Attribute>;
    fn deref(&self) -> &Vec<Attribute> {
        &self.0
    }
}

impl std::ops::DerefMut for WipedTemplate {
    fn deref_mut(&mut self) -> &mut Vec<Attribute> {
        &mut self.0
    }
}

impl WipedTemplate {
    /// Zeroes the values of the attributes that hold key material.
    fn wipe(template: &mut [Attribute]) {
        for attribute in template {
            match attribute {
                Attribute::Value(v)
                | Attribute::PrivateExponent(v)
                | Attribute::Prime1(v)
                | Attribute::Prime2(v)
                | Attribute::Exponent1(v)
                | Attribute::Exponent2(v)
                | Attribute::Coefficient(v) => v.zeroize(),
                _ => {}
            }
        }
    }
}

impl Drop for WipedTemplate {
    fn drop(&mut self) {
        Self::wipe(&mut self.0);
    }
}

fn secret_attributes(key_type: KeyType, secret: &[u8]) -> [Attribute; 5] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Value(secret.to_vec()),
        Attribute::Sign(true),
        Attribute::Verify(true),
    ]
}

fn ec_public(key_type: KeyType, params: &[u8], point: &[u8]) -> [Attribute; 4] {
    [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(key_type),
        Attribute::EcParams(params.to_vec()),
        Attribute::EcPoint(der_octet_string(point)),
    ]
}

fn rsa_public(modulus: Vec<u8>, exponent: Vec<u8>) -> [Attribute; 4] {
    [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Modulus(modulus),
        Attribute::PublicExponent(exponent),
    ]
}

fn create(token: &TokenSession, template: &[Attribute]) -> Result<(), HsmError> {
    token
        .session()
        .create_object(template)
        .map(drop)
        .map_err(map_error)
}

/// The newest version of `base` among secret and private keys.
fn newest_version(token: &TokenSession, base: &str) -> Result<Option<u32>, HsmError> {
    let mut newest = None;
    for class in [KeyClass::Secret, KeyClass::Private, KeyClass::Public] {
        newest = newest.max(versions(token.session(), base, class)?.into_iter().max());
    }
    Ok(newest)
}

fn ulong_attr(
    token: &TokenSession,
    handle: ObjectHandle,
    which: AttributeType,
) -> Result<Option<u64>, HsmError> {
    let attrs = token
        .session()
        .get_attributes(handle, &[which])
        .map_err(map_error)?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::ValueLen(n) | Attribute::ModulusBits(n) => Some(u64::from(n)),
        _ => None,
    }))
}

/// Generates a key labelled exactly `label` inside the token.
/// `size`: bytes for secret keys, modulus bits for RSA (defaults otherwise).
fn generate_labelled(
    token: &TokenSession,
    label: &str,
    mechanism: Mechanism,
    size: Option<u64>,
) -> Result<(), HsmError> {
    if !token.supports(mechanism) {
        return Err(HsmError::UnsupportedMechanism {
            mechanism,
            reason: format!("token `{}` does not offer it", token.token_label()),
        });
    }
    let session = token.session();
    let mut private = protected_key_attributes(label);
    let mut public = public_key_attributes(label);
    let pair = match mechanism {
        Mechanism::HmacSha256 | Mechanism::AesCmac => {
            let (gen, key_type) = if mechanism == Mechanism::HmacSha256 {
                (CkMechanism::GenericSecretKeyGen, KeyType::GENERIC_SECRET)
            } else {
                (CkMechanism::AesKeyGen, KeyType::AES)
            };
            private.extend([
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(key_type),
                Attribute::ValueLen(size.unwrap_or(SECRET_KEY_BYTES).into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ]);
            session.generate_key(&gen, &private).map_err(map_error)?;
            return Ok(());
        }
        Mechanism::EcdsaP256Sha256 => {
            public.push(Attribute::EcParams(P256_PARAMS.to_vec()));
            CkMechanism::EccKeyPairGen
        }
        Mechanism::Ed25519 => {
            public.push(Attribute::EcParams(ED25519_PARAMS.to_vec()));
            CkMechanism::EccEdwardsKeyPairGen
        }
        Mechanism::RsaPssSha256 => {
            public.extend([
                Attribute::ModulusBits(size.unwrap_or(RSA_BITS).into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ]);
            CkMechanism::RsaPkcsKeyPairGen
        }
    };
    private.push(Attribute::Sign(true));
    session
        .generate_key_pair(&pair, &public, &private)
        .map(drop)
        .map_err(map_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_lengths_per_mechanism() {
        for len in [16, 24, 32] {
            assert!(check_secret_len(Mechanism::AesCmac, len).is_ok());
        }
        for len in [0, 15, 17, 31, 33, 64] {
            let e = check_secret_len(Mechanism::AesCmac, len).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid input: {len} bytes, AES-CMAC keys are 16, 24 or 32")
            );
        }
        for len in [MIN_HMAC_KEY_BYTES, 64, 131, MAX_HMAC_KEY_BYTES] {
            assert!(check_secret_len(Mechanism::HmacSha256, len).is_ok());
        }
        assert!(check_secret_len(Mechanism::HmacSha256, 31)
            .unwrap_err()
            .to_string()
            .contains("31 bytes, HMAC-SHA256 keys need at least 32"));
        assert!(check_secret_len(Mechanism::HmacSha256, 257)
            .unwrap_err()
            .to_string()
            .contains("257 bytes, HMAC-SHA256 keys are at most 256"));
        for m in [
            Mechanism::EcdsaP256Sha256,
            Mechanism::RsaPssSha256,
            Mechanism::Ed25519,
        ] {
            assert!(matches!(
                check_secret_len(m, 32),
                Err(HsmError::UnsupportedMechanism { .. })
            ));
        }
    }

    #[test]
    fn templates_are_wiped() {
        let mut template = vec![Attribute::Sign(true), Attribute::Label(b"k-v1".to_vec())];
        template.extend(secret_attributes(KeyType::AES, &[0x5a; 16]));
        template.push(Attribute::PrivateExponent(vec![0x5a; 8]));
        WipedTemplate::wipe(&mut template);
        let mut wiped = 0;
        for a in &template {
            match a {
                // Vec::zeroize zeroes the whole allocation, then clears.
                Attribute::Value(v) | Attribute::PrivateExponent(v) => {
                    assert!(v.is_empty(), "{a:?}");
                    wiped += 1;
                }
                Attribute::Label(l) => assert_eq!(l, b"k-v1", "labels are kept"),
                _ => {}
            }
        }
        assert_eq!(wiped, 2);
    }
}
