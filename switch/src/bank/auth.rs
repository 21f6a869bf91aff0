//! MACs and signatures of one bank's messages, through `fps-hsm` (DESIGN.md:
//! "map to bank dialect -> MAC/sign (HSM) -> ... -> verify MAC/signature").
//!
//! # Where the tag goes (the codecs place it, see `fps_codecs::auth`)
//!
//! | bank | config | outbound | inbound |
//! |---|---|---|---|
//! | ISO 8583 | `auth = { mac = { label, mechanism = "hmac_sha256" \| "aes_cmac" } }` | MAC over the encoded message (header, MTI, bitmaps with the MAC bit set, fields) up to the MAC field, placed in the field the dialect maps `mac` to (F128 in every shipped dialect; it must be the last field). HMAC-SHA256 or AES-CMAC truncated to the field's 8 bytes (leftmost), as raw bytes in a binary field or 16 upper-case hex characters in a text field (`canonical`) | the same MAC over the received bytes up to the MAC field, compared in constant time |
//! | ISO 20022 | `auth = { sign = KEY, verify = KEY }` | detached signature (ECDSA P-256 raw `r‖s`, RSA-PSS, Ed25519) over the exact bytes of the `Document` element, base64 in `<Sgntr>` of an envelope the codec adds | the bank's signature over the received `Document` bytes, with the bank's public key |
//! | JSON | as ISO 20022 | over the document as encoded without the signature; base64 in a last member `"signature"` | over the received document without that member |
//!
//! The same key signs and verifies MACs (shared with the bank); signatures
//! use the switch's private key out and the bank's public key in. Network
//! management (0800 sign-on, echo, sign-off) is sealed the same way by the
//! link itself, and its 0810 checked: one that fails verification counts in
//! [`AUTH_FAILURES`] and ends the link (reconnected after backoff), so a
//! link whose sign-on answer is forged never carries payments.
//!
//! # What a failed check means
//!
//! An answer whose MAC or signature is missing, wrong or not delimitable may
//! be forged: it is never treated as approved (nor as declined). The send
//! ends as [`SendError::OutcomeUnknown`](super::SendError::OutcomeUnknown),
//! so the pipeline journals "reversing", answers `68` upstream and queues the
//! reversal (DESIGN.md invariant 3); the reversal's own answer is checked the
//! same way. Each such answer counts in [`AUTH_FAILURES`]. A late answer
//! that fails is dropped before it can settle a reversal. When the HSM
//! itself fails (busy, down, timed out) nothing is counted as forged: a
//! request is not sent (`NotSent`), an answer that cannot be checked is an
//! unknown outcome.
//!
//! # Cost
//!
//! One HSM call out and one in per message (plus one encode of the covered
//! bytes out and one copy of them in); [`AUTH_SECONDS`] has the time per
//! bank, `fps_hsm_op_seconds` per mechanism.
//!
//! Key rotation: signatures and truncated MACs (fps-hsm's
//! `verify_mac_leftmost`, at least 8 bytes) verify under the current and
//! the previous key version during fps-hsm's overlap, so a bank may switch
//! to a rotated key at any time within it.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use fps_codecs::model::{SignatureValue, Transaction};
use fps_codecs::{AuthSlot, MessageCodec};
use fps_hsm::{Hsm, HsmError, KeyRef, Operation};

use crate::config::AuthKeys;

/// Bank answers whose MAC or signature was missing or wrong, by `bank`.
pub const AUTH_FAILURES: &str = "fps_switch_bank_auth_failures_total";
/// Time to MAC/sign a request (`op="seal"`) or check an answer
/// (`op="check"`), HSM queue included, seconds, by `bank`.
pub const AUTH_SECONDS: &str = "fps_switch_bank_auth_seconds";

/// Why a message could not be sealed or an answer did not check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The codec cannot produce the covered bytes of this transaction.
    #[error("the bank's codec cannot authenticate this transaction")]
    Encode,
    /// The HSM failed (not the message): busy, unavailable, timed out.
    #[error("hsm failed ({})", .0.as_str())]
    Hsm(fps_hsm::ErrorKind),
    /// The answer carries no MAC or signature.
    #[error("answer carries no MAC or signature")]
    Missing,
    /// The MAC or signature is there but what it covers is not (e.g. a
    /// field after the MAC field).
    #[error("answer's MAC or signature covers an unknown part of it")]
    Undelimited,
    /// The MAC or signature does not verify.
    #[error("answer's MAC or signature does not verify")]
    Invalid,
}

impl AuthError {
    /// True when the answer itself failed authentication (possibly forged),
    /// false when the HSM could not do its part.
    pub fn is_forgery(self) -> bool {
        matches!(
            self,
            AuthError::Missing | AuthError::Undelimited | AuthError::Invalid
        )
    }

    fn of(e: &HsmError) -> AuthError {
        if e.is_verification_failure() {
            AuthError::Invalid
        } else {
            AuthError::Hsm(e.kind())
        }
    }
}

/// Authenticates one bank's messages. Shared by the bank's links.
#[derive(Debug)]
pub struct BankAuth {
    hsm: Hsm,
    codec: Arc<dyn MessageCodec>,
    slot: AuthSlot,
    keys: AuthKeys,
    bank: String,
    /// [`AUTH_SECONDS`] of this bank's seals and checks, registered once
    /// (not looked up in the registry per message).
    seal_seconds: metrics::Histogram,
    check_seconds: metrics::Histogram,
}

impl BankAuth {
    /// For bank `bank` speaking `codec`, with `keys` in `hsm`. Refuses a
    /// codec that cannot carry these keys' tags (validation says so first).
    pub fn new(
        hsm: Hsm,
        codec: Arc<dyn MessageCodec>,
        keys: AuthKeys,
        bank: &str,
    ) -> Result<BankAuth, String> {
        let slot = codec.auth_slot();
        match (&keys, slot) {
            (AuthKeys::Mac(_), AuthSlot::MacField { .. })
            | (AuthKeys::Signature { .. }, AuthSlot::Signature) => {}
            (AuthKeys::Mac(_), _) => {
                return Err("auth.mac: the bank's codec has no fixed-length MAC field".into())
            }
            (AuthKeys::Signature { .. }, _) => {
                return Err("auth.sign: the bank's codec carries no signature".into())
            }
        }
        metrics::describe_counter!(
            AUTH_FAILURES,
            "Bank answers whose MAC or signature was missing or wrong (never approved)"
        );
        metrics::describe_histogram!(
            AUTH_SECONDS,
            metrics::Unit::Seconds,
            "Time to MAC/sign a bank request or check a bank answer"
        );
        // The series exists from the start, so an alert on its rate sees 0.
        metrics::counter!(AUTH_FAILURES, "bank" => bank.to_owned()).increment(0);
        let seconds = |op: &'static str| metrics::histogram!(AUTH_SECONDS, "bank" => bank.to_owned(), "op" => op);
        Ok(BankAuth {
            hsm,
            codec,
            slot,
            keys,
            bank: bank.to_owned(),
            seal_seconds: seconds("seal"),
            check_seconds: seconds("check"),
        })
    }

    /// The keys and what is done with them (for `Hsm::check_keys`).
    pub fn key_uses(&self) -> Vec<(KeyRef, Operation)> {
        match &self.keys {
            AuthKeys::Mac(k) => vec![
                (k.clone(), Operation::Mac),
                (k.clone(), Operation::VerifyMac),
            ],
            AuthKeys::Signature { sign, verify } => {
                vec![
                    (sign.clone(), Operation::Sign),
                    (verify.clone(), Operation::Verify),
                ]
            }
        }
    }

    /// `txn` with its MAC or signature, ready for the link to encode.
    pub async fn seal(&self, txn: &Transaction) -> Result<Transaction, AuthError> {
        let started = Instant::now();
        let mut covered = BytesMut::with_capacity(512);
        self.codec
            .encode_auth_input(txn, &mut covered)
            .map_err(|e| {
                // Codec errors name a field and a static reason, never a value.
                tracing::info!(bank = %self.bank, error = %e, "cannot build the bytes to authenticate");
                AuthError::Encode
            })?;
        let covered = covered.freeze();
        let mut sealed = txn.clone();
        match &self.keys {
            AuthKeys::Mac(key) => {
                let tag = self
                    .hsm
                    .mac(key, covered)
                    .await
                    .map_err(|e| self.hsm_failed(&e, "mac"))?;
                sealed.mac = Some(self.slot.mac_value(&tag).ok_or(AuthError::Encode)?);
            }
            AuthKeys::Signature { sign, .. } => {
                let sig = self
                    .hsm
                    .sign(sign, covered)
                    .await
                    .map_err(|e| self.hsm_failed(&e, "sign"))?;
                sealed.signature = Some(SignatureValue::new(&sig).map_err(|_| AuthError::Encode)?);
            }
        }
        self.seal_seconds.record(started.elapsed().as_secs_f64());
        Ok(sealed)
    }

    /// Whether `answer` (decoded with its covered bytes) carries a valid MAC
    /// or signature. A failure that [`AuthError::is_forgery`] is counted in
    /// [`AUTH_FAILURES`] and logged (MTI and STAN only).
    pub async fn check(&self, answer: &Transaction) -> Result<(), AuthError> {
        let started = Instant::now();
        let result = self.verify(answer).await;
        self.check_seconds.record(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            if e.is_forgery() {
                metrics::counter!(AUTH_FAILURES, "bank" => self.bank.clone()).increment(1);
                tracing::warn!(
                    bank = %self.bank,
                    mti = %answer.mti,
                    stan = ?answer.stan.map(|s| s.value()),
                    reason = %e,
                    "bank answer failed authentication: treated as outcome unknown"
                );
            }
        }
        result
    }

    async fn verify(&self, answer: &Transaction) -> Result<(), AuthError> {
        match &self.keys {
            AuthKeys::Mac(key) => {
                let received = answer.mac.as_ref().ok_or(AuthError::Missing)?;
                let covered = answer.auth_input.as_ref().ok_or(AuthError::Undelimited)?;
                let received = self.slot.mac_bytes(received).ok_or(AuthError::Invalid)?;
                // The leftmost bytes of the MAC under the current key
                // version, or the previous one during a rotation overlap.
                match self
                    .hsm
                    .verify_mac_leftmost(key, covered.bytes(), Bytes::copy_from_slice(&received))
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(e) if e.is_verification_failure() => Err(AuthError::Invalid),
                    Err(e) => Err(self.hsm_failed(&e, "verify_mac")),
                }
            }
            AuthKeys::Signature { verify, .. } => {
                let signature = answer.signature.as_ref().ok_or(AuthError::Missing)?;
                let covered = answer.auth_input.as_ref().ok_or(AuthError::Undelimited)?;
                self.hsm
                    .verify(
                        verify,
                        covered.bytes(),
                        Bytes::copy_from_slice(signature.as_bytes()),
                    )
                    .await
                    .map_err(|e| {
                        if e.is_verification_failure() {
                            AuthError::Invalid
                        } else {
                            self.hsm_failed(&e, "verify")
                        }
                    })
            }
        }
    }

    fn hsm_failed(&self, e: &HsmError, op: &'static str) -> AuthError {
        // HsmError messages never hold key material or message bytes.
        tracing::warn!(bank = %self.bank, op, error = %e, "hsm could not authenticate");
        AuthError::of(e)
    }
}

#[cfg(test)]
mod tests {
    use fps_codecs::model::examples::credit_transfer;
    use fps_codecs::model::{BankCode, EndToEndId, MessageId, SettlementDate};
    use fps_hsm::software::{SoftKey, SoftwareKeyStore};
    use fps_hsm::{HsmConfig, Mechanism};

    use super::*;
    use crate::bank::BankCodec;
    use crate::config::CodecName;

    fn hsm() -> Hsm {
        let store = SoftwareKeyStore::new();
        store
            .insert("t-hmac-v1", SoftKey::hmac_sha256(&[7; 32]).unwrap())
            .unwrap();
        store
            .insert("t-cmac-v1", SoftKey::aes_cmac(&[9; 16]).unwrap())
            .unwrap();
        store
            .insert("t-ec-v1", SoftKey::ecdsa_p256_private(&[3; 32]).unwrap())
            .unwrap();
        Hsm::builder(HsmConfig::danger_software())
            .software_keys(store)
            .start()
            .unwrap()
    }

    fn auth(codec: &str, keys: AuthKeys) -> (BankAuth, Arc<dyn MessageCodec>) {
        let codec = BankCodec::build(&CodecName::parse(codec).unwrap(), &Default::default())
            .unwrap()
            .authenticating()
            .codec;
        let auth = BankAuth::new(hsm(), codec.clone(), keys, "test").unwrap();
        (auth, codec)
    }

    fn key(label: &str, m: Mechanism) -> KeyRef {
        KeyRef::new(label, m).unwrap()
    }

    fn transfer(codec: &str) -> Transaction {
        let mut t = credit_transfer();
        if codec == "iso20022" || codec == "json" {
            t.sending_bank = BankCode::parse(b"950").ok();
            t.receiving_bank = BankCode::parse(b"012").ok();
            t.settlement_date = SettlementDate::parse(b"20261123").ok();
            t.message_id = MessageId::parse(b"FPS012AUTH1").ok();
            t.end_to_end_id = EndToEndId::parse(b"FPS012AUTH1").ok();
        }
        t
    }

    /// Seal, put on the wire, read back as a link does, check.
    async fn round_trip(codec_name: &str, keys: AuthKeys) {
        let (auth, codec) = auth(codec_name, keys);
        let sealed = auth.seal(&transfer(codec_name)).await.unwrap();
        let mut wire = BytesMut::new();
        codec.encode(&sealed, &mut wire).unwrap();
        let received = codec.decode(&wire).unwrap();
        assert_eq!(auth.check(&received).await, Ok(()), "{codec_name}");
        // One changed digit of the amount or the debtor account: refused.
        let text = String::from_utf8_lossy(&wire).into_owned();
        let at = text
            .find("12345")
            .or_else(|| text.find("123456789001"))
            .expect("the amount or the account is in the message as text");
        let mut forged = wire.to_vec();
        forged[at] = b'9';
        let forged = codec.decode(&forged).expect("still well-formed");
        assert_eq!(
            auth.check(&forged).await,
            Err(AuthError::Invalid),
            "{codec_name}"
        );
        // Without its tag: missing.
        let mut bare = received.clone();
        bare.mac = None;
        bare.signature = None;
        assert_eq!(auth.check(&bare).await, Err(AuthError::Missing));
        // Decoded without the covered bytes: cannot be checked.
        let mut blind = received;
        blind.auth_input = None;
        assert_eq!(auth.check(&blind).await, Err(AuthError::Undelimited));
    }

    #[tokio::test]
    async fn macs_and_signatures_round_trip_and_forgeries_fail() {
        round_trip(
            "iso8583:canonical",
            AuthKeys::Mac(key("t-hmac", Mechanism::HmacSha256)),
        )
        .await;
        round_trip(
            "iso8583:iso87-bcd-binary",
            AuthKeys::Mac(key("t-cmac", Mechanism::AesCmac)),
        )
        .await;
        for codec in ["iso20022", "json"] {
            let ec = key("t-ec", Mechanism::EcdsaP256Sha256);
            round_trip(
                codec,
                AuthKeys::Signature {
                    sign: ec.clone(),
                    verify: ec,
                },
            )
            .await;
        }
    }

    #[tokio::test]
    async fn a_mac_made_with_another_key_fails() {
        let (auth, codec) = auth(
            "iso8583:canonical",
            AuthKeys::Mac(key("t-hmac", Mechanism::HmacSha256)),
        );
        let mut txn = transfer("iso8583:canonical");
        let mut covered = BytesMut::new();
        codec.encode_auth_input(&txn, &mut covered).unwrap();
        let other = SoftKey::hmac_sha256(&[8; 32])
            .unwrap()
            .mac(&covered)
            .unwrap();
        txn.mac = codec.auth_slot().mac_value(&other);
        let mut wire = BytesMut::new();
        codec.encode(&txn, &mut wire).unwrap();
        let received = codec.decode(&wire).unwrap();
        assert_eq!(auth.check(&received).await, Err(AuthError::Invalid));
        // And the right key, computed independently, passes.
        let right = SoftKey::hmac_sha256(&[7; 32])
            .unwrap()
            .mac(&covered)
            .unwrap();
        txn.mac = codec.auth_slot().mac_value(&right);
        let mut wire = BytesMut::new();
        codec.encode(&txn, &mut wire).unwrap();
        assert_eq!(auth.check(&codec.decode(&wire).unwrap()).await, Ok(()));
    }

    /// A bank still MACing with the previous key version during the
    /// rotation overlap is accepted (8-byte truncated tags in F128); the
    /// switch seals with the newest one.
    #[tokio::test]
    async fn truncated_macs_of_the_previous_key_verify_during_the_overlap() {
        let store = SoftwareKeyStore::new();
        store
            .insert("t-rot-v1", SoftKey::hmac_sha256(&[7; 32]).unwrap())
            .unwrap();
        store
            .insert("t-rot-v2", SoftKey::hmac_sha256(&[8; 32]).unwrap())
            .unwrap();
        let hsm = Hsm::builder(HsmConfig::danger_software())
            .software_keys(store)
            .start()
            .unwrap();
        let codec = BankCodec::build(
            &CodecName::parse("iso8583:canonical").unwrap(),
            &Default::default(),
        )
        .unwrap()
        .authenticating()
        .codec;
        let auth = BankAuth::new(
            hsm,
            codec.clone(),
            AuthKeys::Mac(key("t-rot", Mechanism::HmacSha256)),
            "rot",
        )
        .unwrap();
        let mut txn = transfer("iso8583:canonical");
        let mut covered = BytesMut::new();
        codec.encode_auth_input(&txn, &mut covered).unwrap();
        let with = |secret: u8| {
            SoftKey::hmac_sha256(&[secret; 32])
                .unwrap()
                .mac(&covered)
                .unwrap()
        };
        // The switch's own MAC is the newest version's.
        let sealed = auth.seal(&txn).await.unwrap();
        assert_eq!(sealed.mac, codec.auth_slot().mac_value(&with(8)));
        for (secret, want) in [(8, Ok(())), (7, Ok(())), (9, Err(AuthError::Invalid))] {
            txn.mac = codec.auth_slot().mac_value(&with(secret));
            let mut wire = BytesMut::new();
            codec.encode(&txn, &mut wire).unwrap();
            assert_eq!(
                auth.check(&codec.decode(&wire).unwrap()).await,
                want,
                "answer MACed with key {secret}"
            );
        }
    }

    #[test]
    fn keys_must_fit_the_codec() {
        let codec = BankCodec::build(&CodecName::Json, &Default::default())
            .unwrap()
            .codec;
        let e = BankAuth::new(
            hsm(),
            codec,
            AuthKeys::Mac(key("t-hmac", Mechanism::HmacSha256)),
            "x",
        )
        .unwrap_err();
        assert!(e.contains("MAC field"), "{e}");
    }
}
