//! PKCS#11 vocabulary: mechanisms, key types, object templates and lookups.

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism as CkMechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::keyring::{split_version, KeyClass};
use crate::{HsmError, Mechanism};

/// DER OID of the P-256 curve (prime256v1), the CKA_EC_PARAMS value.
pub(crate) const P256_PARAMS: [u8; 10] =
    [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER OID of Ed25519 (1.3.101.112), the CKA_EC_PARAMS value.
pub(crate) const ED25519_PARAMS: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// The PKCS#11 mechanism used to perform `mechanism`. ECDSA is `CKM_ECDSA`
/// over a SHA-256 digest made here: every token offers it (SoftHSM2 has no
/// `CKM_ECDSA_SHA256`) and the digest is not secret.
pub(crate) fn mechanism_type(mechanism: Mechanism) -> MechanismType {
    match mechanism {
        Mechanism::HmacSha256 => MechanismType::SHA256_HMAC,
        Mechanism::AesCmac => MechanismType::AES_CMAC,
        Mechanism::EcdsaP256Sha256 => MechanismType::ECDSA,
        Mechanism::RsaPssSha256 => MechanismType::SHA256_RSA_PKCS_PSS,
        Mechanism::Ed25519 => MechanismType::EDDSA,
    }
}

/// The cryptoki mechanism value for an operation.
pub(crate) fn ck_mechanism(mechanism: Mechanism) -> CkMechanism<'static> {
    match mechanism {
        Mechanism::HmacSha256 => CkMechanism::Sha256Hmac,
        Mechanism::AesCmac => CkMechanism::AesCMac,
        Mechanism::EcdsaP256Sha256 => CkMechanism::Ecdsa,
        Mechanism::RsaPssSha256 => CkMechanism::Sha256RsaPkcsPss(PkcsPssParams {
            hash_alg: MechanismType::SHA256,
            mgf: PkcsMgfType::MGF1_SHA256,
            s_len: 32.into(),
        }),
        Mechanism::Ed25519 => CkMechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Ed25519)),
    }
}

/// Whether a key of `key_type` can serve `mechanism`.
pub(crate) fn key_type_fits(mechanism: Mechanism, key_type: KeyType) -> bool {
    match mechanism {
        Mechanism::HmacSha256 => {
            key_type == KeyType::GENERIC_SECRET || key_type == KeyType::SHA256_HMAC
        }
        Mechanism::AesCmac => key_type == KeyType::AES,
        Mechanism::EcdsaP256Sha256 => key_type == KeyType::EC,
        Mechanism::RsaPssSha256 => key_type == KeyType::RSA,
        Mechanism::Ed25519 => key_type == KeyType::EC_EDWARDS,
    }
}

/// The mechanism a key type is used with (for `rotate`, which keeps the kind).
pub(crate) fn mechanism_for(key_type: KeyType) -> Option<Mechanism> {
    [
        Mechanism::HmacSha256,
        Mechanism::AesCmac,
        Mechanism::EcdsaP256Sha256,
        Mechanism::RsaPssSha256,
        Mechanism::Ed25519,
    ]
    .into_iter()
    .find(|m| key_type_fits(*m, key_type))
}

pub(crate) fn object_class(class: KeyClass) -> ObjectClass {
    match class {
        KeyClass::Secret => ObjectClass::SECRET_KEY,
        KeyClass::Private => ObjectClass::PRIVATE_KEY,
        KeyClass::Public => ObjectClass::PUBLIC_KEY,
    }
}

/// Finds the one token (persistent) object of `class` labelled exactly
/// `label`; a session's working copies (see `session.rs`) do not count.
///
/// Session objects are visible to every session of the process, and
/// SoftHSM2 builds a copy (`C_CopyObject`) attribute by attribute: for a
/// moment another worker's new copy still carries the original's
/// `CKA_TOKEN = true` and matches this search (seen as "2 objects labelled
/// `t-hmac-v1`" with two workers on one module instance). So when more than
/// one matches, the ones that are not token objects by now are dropped and
/// the search is repeated a few times before duplicates count as real.
pub(crate) fn find_key(
    session: &Session,
    label: &str,
    class: KeyClass,
    store: &str,
) -> Result<Option<ObjectHandle>, HsmError> {
    let template = [
        Attribute::Token(true),
        Attribute::Class(object_class(class)),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let mut found = Vec::new();
    for attempt in 0..FIND_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(FIND_RETRY_PAUSE);
        }
        found = session.find_objects(&template).map_err(map_error)?;
        if found.len() > 1 {
            found = only_token_objects(session, found)?;
        }
        if found.len() <= 1 {
            return Ok(found.first().copied());
        }
    }
    Err(HsmError::Pkcs11 {
        function: "C_FindObjects".into(),
        rv: format!(
            "{} {} objects labelled `{label}` in {store}; labels must be unique",
            found.len(),
            class.as_str()
        ),
    })
}

/// Searches [`find_key`] makes before two objects with one label are an
/// error (a copy in progress settles within microseconds).
const FIND_ATTEMPTS: usize = 3;
/// Pause between those searches.
const FIND_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// The handles whose `CKA_TOKEN` is true when read now (a handle that
/// vanished meanwhile is dropped too).
fn only_token_objects(
    session: &Session,
    handles: Vec<ObjectHandle>,
) -> Result<Vec<ObjectHandle>, HsmError> {
    let mut kept = Vec::with_capacity(handles.len());
    for handle in handles {
        let attrs = match session.get_attributes(handle, &[AttributeType::Token]) {
            Ok(attrs) => attrs,
            Err(Error::Pkcs11(RvError::ObjectHandleInvalid, _)) => continue,
            Err(e) => return Err(map_error(e)),
        };
        if attrs.contains(&Attribute::Token(true)) {
            kept.push(handle);
        }
    }
    Ok(kept)
}

/// The versions `<base>-vN` present as `class` token objects.
pub(crate) fn versions(
    session: &Session,
    base: &str,
    class: KeyClass,
) -> Result<Vec<u32>, HsmError> {
    let handles = session
        .find_objects(&[
            Attribute::Token(true),
            Attribute::Class(object_class(class)),
        ])
        .map_err(map_error)?;
    let mut versions = Vec::new();
    for handle in handles {
        if let Some(label) = label_of(session, handle)? {
            if let Some((b, v)) = split_version(&label) {
                if b == base {
                    versions.push(v);
                }
            }
        }
    }
    // Another worker's session copy being made can match for a moment
    // (see `find_key`): one entry per version.
    versions.sort_unstable();
    versions.dedup();
    Ok(versions)
}

/// CKA_LABEL of an object, if it is valid UTF-8.
pub(crate) fn label_of(
    session: &Session,
    handle: ObjectHandle,
) -> Result<Option<String>, HsmError> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::Label])
        .map_err(map_error)?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::Label(bytes) => String::from_utf8(bytes).ok(),
        _ => None,
    }))
}

/// CKA_KEY_TYPE of an object.
pub(crate) fn key_type_of(
    session: &Session,
    handle: ObjectHandle,
) -> Result<Option<KeyType>, HsmError> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::KeyType])
        .map_err(map_error)?;
    Ok(attrs.into_iter().find_map(|a| match a {
        Attribute::KeyType(t) => Some(t),
        _ => None,
    }))
}

/// Attributes every secret and private key gets: in the token, sensitive,
/// never extractable, only usable after login (invariant 7).
pub(crate) fn protected_key_attributes(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// Attributes of a public key object.
pub(crate) fn public_key_attributes(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// Maps a cryptoki error. Session-level failures become `Unavailable`, which
/// makes the worker reopen its session.
pub(crate) fn map_error(error: Error) -> HsmError {
    match error {
        Error::Pkcs11(rv, function) => match rv {
            RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
            | RvError::GeneralError
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid => HsmError::Unavailable {
                reason: format!("C_{function:?} returned {rv:?}"),
            },
            _ => HsmError::Pkcs11 {
                function: format!("C_{function:?}"),
                rv: format!("{rv:?}"),
            },
        },
        other => HsmError::Pkcs11 {
            function: "cryptoki".into(),
            rv: other.to_string(),
        },
    }
}

/// DER OCTET STRING around `bytes` (CKA_EC_POINT encoding), for short values.
pub(crate) fn der_octet_string(bytes: &[u8]) -> Vec<u8> {
    debug_assert!(bytes.len() < 128, "short-form DER length only");
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(0x04);
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
    out
}

/// Strips the DER OCTET STRING around a CKA_EC_POINT value, if present.
pub(crate) fn strip_octet_string(value: &[u8]) -> &[u8] {
    match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_string_round_trip() {
        let point = [0x04u8; 65];
        let der = der_octet_string(&point);
        assert_eq!(&der[..2], &[0x04, 65]);
        assert_eq!(strip_octet_string(&der), &point);
    }

    #[test]
    fn rotate_keeps_kind() {
        assert_eq!(mechanism_for(KeyType::AES), Some(Mechanism::AesCmac));
        assert_eq!(
            mechanism_for(KeyType::GENERIC_SECRET),
            Some(Mechanism::HmacSha256)
        );
        assert_eq!(mechanism_for(KeyType::DES3), None);
    }
}
