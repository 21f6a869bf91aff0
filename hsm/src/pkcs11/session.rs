//! One worker's PKCS#11 session: key handle cache and the crypto calls.
//!
//! A key is used through a session copy of it (`C_CopyObject` with
//! `CKA_TOKEN = false`), made inside the HSM when the key is first used:
//! the copy keeps every other attribute (sensitive, not extractable,
//! private), so the key still never leaves the HSM, and it lives only as
//! long as this session. SoftHSM2 re-reads a token object's file (open,
//! lock, read, close of the object and of the token's generation file) on
//! every use, which cost more than the HMAC itself; a session object is
//! held in memory. A token that refuses the copy is used through the token
//! object as before.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cryptoki::error::{Error, RvError};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use sha2::Digest;

use super::keys::{ck_mechanism, find_key, key_type_fits, key_type_of, map_error, mechanism_type};
use crate::keyring::{split_version, KeyClass};
use crate::pool::Engine;
use crate::{HsmError, Mechanism};

/// Most handles cached per session (labels x classes in use); past it the
/// cache is cleared rather than grown.
const MAX_CACHED_HANDLES: usize = 1024;

pub(crate) struct Pkcs11Engine {
    session: Session,
    /// Checked handles (session copies where the token made one) by
    /// (class, mechanism), then label: nested so the per-request lookup
    /// borrows the label instead of allocating a key.
    handles: HashMap<(KeyClass, Mechanism), HashMap<String, ObjectHandle>>,
    /// The session copies among them, destroyed when the cache is cleared.
    copies: Vec<ObjectHandle>,
    /// Handles in `handles`, to hold it to `MAX_CACHED_HANDLES`.
    cached: usize,
    mechanisms: Arc<HashSet<Mechanism>>,
    store: String,
}

impl Pkcs11Engine {
    pub(crate) fn new(
        session: Session,
        mechanisms: Arc<HashSet<Mechanism>>,
        store: String,
    ) -> Self {
        Pkcs11Engine {
            session,
            handles: HashMap::new(),
            copies: Vec::new(),
            cached: 0,
            mechanisms,
            store,
        }
    }

    /// The handle of `label` as `class`, checked to fit `mechanism`; cached
    /// (handles stay valid for the session's life unless the key is deleted,
    /// which surfaces as `Unavailable` and a fresh session).
    fn key(
        &mut self,
        label: &str,
        class: KeyClass,
        mechanism: Mechanism,
    ) -> Result<ObjectHandle, HsmError> {
        if let Some(handle) = self
            .handles
            .get(&(class, mechanism))
            .and_then(|by_label| by_label.get(label))
        {
            // Only handles for mechanisms the token offers are cached.
            return Ok(*handle);
        }
        if !self.mechanisms.contains(&mechanism) {
            return Err(HsmError::UnsupportedMechanism {
                mechanism,
                reason: format!(
                    "{} does not offer {}",
                    self.store,
                    mechanism_type(mechanism)
                ),
            });
        }
        let mut found = find_key(&self.session, label, class, &self.store)?;
        if found.is_none() {
            // Private objects are invisible to a session whose login was
            // lost (C_Logout elsewhere in the process, token reset): that is
            // a session failure, not a missing key. The login is the
            // token's, so another session may have restored it since the
            // search (a worker or an inline session reopening): look again
            // once it is known to be there.
            self.check_logged_in()?;
            found = find_key(&self.session, label, class, &self.store)?;
        }
        let Some(handle) = found else {
            return Err(HsmError::KeyNotFound {
                label: split_version(label)
                    .map_or(label, |(base, _)| base)
                    .to_owned(),
                class: class.as_str(),
                store: self.store.clone(),
            });
        };
        match key_type_of(&self.session, handle)? {
            Some(key_type) if key_type_fits(mechanism, key_type) => {}
            found => {
                return Err(HsmError::KeyTypeMismatch {
                    label: label.to_owned(),
                    mechanism,
                    found: found.map_or_else(|| "untyped".to_owned(), |t| t.to_string()),
                })
            }
        }
        if self.cached >= MAX_CACHED_HANDLES {
            self.handles.clear();
            self.cached = 0;
            for copy in self.copies.drain(..) {
                // Best effort: it goes with the session anyway.
                let _ = self.session.destroy_object(copy);
            }
        }
        let handle = match self.session.copy_object(handle, &[Attribute::Token(false)]) {
            Ok(copy) => {
                self.copies.push(copy);
                copy
            }
            Err(e) => {
                tracing::debug!(store = %self.store, error = %e, "no session copy of the key: using the token object");
                handle
            }
        };
        let by_label = self.handles.entry((class, mechanism)).or_default();
        if by_label.insert(label.to_owned(), handle).is_none() {
            self.cached += 1;
        }
        Ok(handle)
    }
}

impl Pkcs11Engine {
    fn check_logged_in(&self) -> Result<(), HsmError> {
        let info = self.session.get_session_info().map_err(map_error)?;
        match info.session_state() {
            SessionState::RoUser | SessionState::RwUser => Ok(()),
            other => Err(HsmError::Unavailable {
                reason: format!("session is no longer logged in ({other:?})"),
            }),
        }
    }
}

/// What the token signs: ECDSA gets the SHA-256 digest (CKM_ECDSA, into
/// `digest`: no allocation), the others hash inside the mechanism.
fn signed_data<'a>(mechanism: Mechanism, message: &'a [u8], digest: &'a mut [u8; 32]) -> &'a [u8] {
    match mechanism {
        Mechanism::EcdsaP256Sha256 => {
            digest.copy_from_slice(&sha2::Sha256::digest(message));
            digest
        }
        _ => message,
    }
}

impl Engine for Pkcs11Engine {
    fn versions(&mut self, label: &str, class: KeyClass) -> Result<Vec<u32>, HsmError> {
        let versions = super::keys::versions(&self.session, label, class)?;
        if versions.is_empty() {
            // As in `key`: a lost login hides private objects, and one
            // restored meanwhile by another session shows them again.
            self.check_logged_in()?;
            return super::keys::versions(&self.session, label, class);
        }
        Ok(versions)
    }

    fn sign(
        &mut self,
        versioned: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let key = self.key(versioned, KeyClass::Private, mechanism)?;
        let mut digest = [0; 32];
        self.session
            .sign(
                &ck_mechanism(mechanism),
                key,
                signed_data(mechanism, message, &mut digest),
            )
            .map_err(map_error)
    }

    fn verify(
        &mut self,
        versioned: &str,
        mechanism: Mechanism,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, HsmError> {
        let key = self.key(versioned, KeyClass::Public, mechanism)?;
        let mut digest = [0; 32];
        match self.session.verify(
            &ck_mechanism(mechanism),
            key,
            signed_data(mechanism, message, &mut digest),
            signature,
        ) {
            Ok(()) => Ok(true),
            Err(Error::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
                Ok(false)
            }
            Err(e) => Err(map_error(e)),
        }
    }

    fn mac(
        &mut self,
        versioned: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let key = self.key(versioned, KeyClass::Secret, mechanism)?;
        self.session
            .sign(&ck_mechanism(mechanism), key, message)
            .map_err(map_error)
    }
}
