//! The simulated banks' side of message authentication, mirroring the
//! switch's (`fps_switch::bank::auth`, placement in `fps_codecs::auth`):
//! each request's MAC or signature is checked, each answer MACed or signed,
//! with keys in an HSM through `fps-hsm`.
//!
//! - ISO 8583 banks (`auth = { mac = KEY }`): the key is shared with the
//!   switch; MAC = HMAC-SHA256 or AES-CMAC over the message up to the MAC
//!   field, truncated to the field's 8 bytes.
//! - ISO 20022 and JSON banks (`auth = { sign = KEY, verify = KEY }`): the
//!   bank signs its answers with `sign` (its private key) and checks the
//!   switch's requests with `verify` (the switch's public key).
//!
//! In development the banks' keys live in the switch's own SoftHSM2 token
//! (`scripts/softhsm-init`): one process per side, one token, so the dev
//! configs can name the same labels on both sides. A real bank holds its
//! keys in its own HSM and has only the switch's public key.
//!
//! A request whose MAC or signature is missing or wrong is answered `63`
//! (security violation: ISO 8583 F39 and JSON `code`; ISO 20022 has no such
//! status, so it goes out as `RJCT`, which the switch reads as `05`) and
//! is never booked; it counts in the ledger's `auth_failures`. Network
//! management (sign-on, echo, sign-off) is checked and MACed too, as on
//! the switch.
//! The `bad_mac` fault corrupts an answer's MAC or signature after it is
//! made (one bit flipped), so tests can prove the switch refuses it.

use anyhow::{anyhow, Context as _};
use bytes::{Bytes, BytesMut};
use fps_codecs::model::{SignatureValue, Transaction};
use fps_codecs::{AuthSlot, MessageCodec};
use fps_hsm::{Hsm, KeyRef, Operation};

use super::config::SimAuthConfig;

/// One simulated bank's keys and where its codec carries the tag.
#[derive(Debug)]
pub struct SimAuth {
    hsm: Hsm,
    slot: AuthSlot,
    keys: Keys,
}

#[derive(Debug)]
enum Keys {
    Mac(KeyRef),
    Signature { sign: KeyRef, verify: KeyRef },
}

/// Why a request did not authenticate, or an answer could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimAuthError {
    /// No MAC or signature, or nothing it covers.
    Missing,
    /// It does not verify.
    Invalid,
    /// The HSM or the codec failed.
    Failed,
}

impl SimAuth {
    /// The auth of a bank speaking `codec` (config already validated).
    pub fn new(hsm: Hsm, codec: &dyn MessageCodec, cfg: &SimAuthConfig) -> anyhow::Result<SimAuth> {
        let slot = codec.auth_slot();
        let keys = match (&cfg.mac, &cfg.sign, &cfg.verify, slot) {
            (Some(k), None, None, AuthSlot::MacField { .. }) => Keys::Mac(k.clone()),
            (None, Some(s), Some(v), AuthSlot::Signature) => Keys::Signature {
                sign: s.clone(),
                verify: v.clone(),
            },
            _ => return Err(anyhow!("auth does not fit the bank's codec")),
        };
        Ok(SimAuth { hsm, slot, keys })
    }

    /// Check a request decoded with `decode_authenticated`.
    pub async fn verify(&self, req: &Transaction) -> Result<(), SimAuthError> {
        let covered = req.auth_input.as_ref().ok_or(SimAuthError::Missing)?;
        match &self.keys {
            Keys::Mac(key) => {
                let mac = req.mac.as_ref().ok_or(SimAuthError::Missing)?;
                let received = self.slot.mac_bytes(mac).ok_or(SimAuthError::Invalid)?;
                let full = self
                    .hsm
                    .mac(key, covered.bytes())
                    .await
                    .map_err(|_| SimAuthError::Failed)?;
                let expected = full.get(..received.len()).ok_or(SimAuthError::Invalid)?;
                let diff = expected
                    .iter()
                    .zip(received.iter())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b));
                if diff == 0 {
                    Ok(())
                } else {
                    Err(SimAuthError::Invalid)
                }
            }
            Keys::Signature { verify, .. } => {
                let sig = req.signature.as_ref().ok_or(SimAuthError::Missing)?;
                self.hsm
                    .verify(
                        verify,
                        covered.bytes(),
                        Bytes::copy_from_slice(sig.as_bytes()),
                    )
                    .await
                    .map_err(|e| {
                        if e.is_verification_failure() {
                            SimAuthError::Invalid
                        } else {
                            SimAuthError::Failed
                        }
                    })
            }
        }
    }

    /// MAC or sign `answer` in place; `corrupt` flips one bit of the tag.
    pub async fn seal(
        &self,
        codec: &dyn MessageCodec,
        answer: &mut Transaction,
        corrupt: bool,
    ) -> Result<(), SimAuthError> {
        let mut covered = BytesMut::with_capacity(512);
        codec
            .encode_auth_input(answer, &mut covered)
            .map_err(|_| SimAuthError::Failed)?;
        let covered = covered.freeze();
        match &self.keys {
            Keys::Mac(key) => {
                let mut tag = self
                    .hsm
                    .mac(key, covered)
                    .await
                    .map_err(|_| SimAuthError::Failed)?;
                if corrupt {
                    tag[0] ^= 0x01;
                }
                answer.mac = Some(self.slot.mac_value(&tag).ok_or(SimAuthError::Failed)?);
            }
            Keys::Signature { sign, .. } => {
                let mut sig = self
                    .hsm
                    .sign(sign, covered)
                    .await
                    .map_err(|_| SimAuthError::Failed)?;
                if corrupt {
                    sig[0] ^= 0x01;
                }
                answer.signature =
                    Some(SignatureValue::new(&sig).map_err(|_| SimAuthError::Failed)?);
            }
        }
        Ok(())
    }
}

/// Start the simulator's `[hsm]` and check every bank key is there.
pub async fn start_hsm(
    config: fps_hsm::HsmConfig,
    keys: &[(KeyRef, Operation)],
) -> anyhow::Result<Hsm> {
    // Opening sessions blocks (PKCS#11 C_OpenSession, C_Login).
    let hsm = tokio::task::spawn_blocking(move || Hsm::builder(config).start())
        .await
        .context("hsm: start-up task failed")?
        .map_err(|e| anyhow!("hsm: {e}"))?;
    if let Err(errors) = hsm.check_keys(keys).await {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(anyhow!("hsm: {}", all.join("; ")));
    }
    Ok(hsm)
}
