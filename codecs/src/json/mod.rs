//! The JSON interface some banks expose over a persistent (m)TLS TCP link:
//! one JSON object per frame (the length header is [`crate::framing`]'s job).
//! [`JsonCodec`] maps each document to and from a canonical [`Transaction`].
//!
//! # Conventions
//!
//! - A document is one UTF-8 JSON object of at most [`MAX_MESSAGE_BYTES`]
//!   bytes; only whitespace may follow it.
//! - Member names are snake_case and stable. Unknown members, members the
//!   message type does not carry, repeated members and `null` values are
//!   refused: absent members are simply omitted.
//! - Identifiers, codes, dates and digit strings are JSON strings (their
//!   leading zeros matter). The only number is `amount.minor`.
//! - `request_id` is the **match key**: the sender of a request assigns it
//!   (the switch, for the requests it sends; the bank, for a `return`), and
//!   the `*_result` answer echoes it.
//! - Every decode error names the member path (e.g. `creditor.proxy.id`) and
//!   a static reason, never the value. An unknown member is reported at the
//!   object holding it (the whole message for the top level).
//!
//! # Message types
//!
//! | `type` | canonical MTI | meaning |
//! |---|---|---|
//! | `credit_transfer` / `credit_transfer_result` | `0200` / `0210`, processing code `400000` | FPS credit transfer |
//! | `cancel` / `cancel_result` | `0400` / `0410` | reversal of an earlier request |
//! | `reversal_advice` / `reversal_advice_result` | `0420` / `0430` | the sender has already reversed |
//! | `status_inquiry` / `status_inquiry_result` | `0600` / `0610` | status of an earlier request; the result's `status` is that request's |
//! | `network` / `network_result` | `0800` / `0810` | sign-on, sign-off, echo, key change |
//! | `return` / `return_result` | `0200` / `0210`, processing code [`RETURN_PROCESSING_CODE`] | return of funds of an earlier transfer (pacs.004) |
//!
//! A request with `"repeat": true` is the canonical repeat MTI (`0201`,
//! `0401`, `0421`, ...). Decoding a `credit_transfer`/`return` (and results)
//! sets the processing code; encoding picks `return` for processing code
//! [`RETURN_PROCESSING_CODE`] and `credit_transfer` for `400000` or none, and
//! refuses other MTIs and processing codes.
//!
//! # Members
//!
//! "Payment types" are every type except `network` and `network_result`;
//! "results" are the `*_result` types. *Carried by* lists the types that may
//! hold a member: the decoder refuses it elsewhere, and the encoder leaves the
//! canonical field out of other types.
//!
//! | member | JSON type | canonical field | carried by | required by |
//! |---|---|---|---|---|
//! | `type` | string, see above | `mti`, `processing_code` | all | all |
//! | `request_id` | string, 1–35 printable ASCII | `message_id` | all | all |
//! | `repeat` | boolean, default `false` | `mti` origin digit `1` | requests | — |
//! | `status` | `"approved"`, `"declined"`, `"pending"` | class of `response_code` | results | results |
//! | `code` | string, 2 letters/digits | `response_code` | results | — (see below) |
//! | `reason` | string, 1–4 letters/digits (ISO 20022 reason, e.g. `AM04`) | `reason` | results, `cancel`, `reversal_advice`, `return` | `return` |
//! | `auth_id` | string, 6 printable ASCII | `auth_id` | payment results | — |
//! | `action` | `"sign_on"`, `"sign_off"`, `"echo"`, `"key_change"` | `network_code` | `network`, `network_result` | `network` |
//! | `original` | object: the request this one refers to | | payment types | `cancel`, `reversal_advice`, `status_inquiry`, `return` |
//! | `original.request_id` | string, 1–35 printable ASCII | `original_message_id` | | whenever `original` is present |
//! | `original.type` | a request type with its own MTI: `credit_transfer` (also for a return), `cancel`, `reversal_advice`, `status_inquiry`, `network` | `original.mti` (F90) | | with `original.stan` and `original.transmitted_at`: all three or none |
//! | `original.stan` | string, 6 digits | `original.stan` | | as above |
//! | `original.transmitted_at` | string `MMDDhhmmss` (UTC) | `original.transmitted_at` | | as above |
//! | `original.acquirer` | string, 1–11 digits | `original.acquirer` (zero-padded; absent = all zeros) | | — (only with the three above) |
//! | `original.forwarder` | string, 1–11 digits | `original.forwarder` (likewise) | | — (likewise) |
//! | `end_to_end_id` | string, 1–35 printable ASCII | `end_to_end_id` | payment types | — |
//! | `transaction_id` | string, 1–35 printable ASCII | `transaction_id` | payment types | — |
//! | `uetr` | string, UUID `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` | `uetr` | payment types | — |
//! | `amount` | object `{"minor", "currency"}`, both required | | payment types | `credit_transfer`, `return` |
//! | `amount.minor` | integer, 0 ..= 999 999 999 999 (no sign, fraction or exponent) | `amount` | | with `amount` |
//! | `amount.currency` | string, ISO 4217 alphabetic (`HKD`, `CNY`, `USD`, `EUR`, `GBP`, `JPY`, `SGD`, `MOP`) | `currency` | | with `amount` |
//! | `debtor` | object | | payment types | `credit_transfer` (its `account`) |
//! | `debtor.account` | string, 1–34 letters/digits | `debtor_account` | | `credit_transfer` |
//! | `debtor.name` | string, 1–140 bytes of UTF-8, no control characters | `debtor_name` | | — |
//! | `debtor.bank` | string, 3 digits | `sending_bank` | | — |
//! | `creditor` | object | | payment types | `credit_transfer` (its `account` or `proxy`) |
//! | `creditor.account` | string, 1–34 letters/digits | `creditor_account` | | `credit_transfer`, unless `creditor.proxy` |
//! | `creditor.proxy` | object `{"type", "id"}`, both required | `proxy` | | — |
//! | `creditor.proxy.type` | `"MOBN"`, `"EMAL"`, `"FPID"`, `"HKID"` | proxy kind | | with `creditor.proxy` |
//! | `creditor.proxy.id` | string, shaped by its type (`+852-91234567`, `a@b.hk`, 7–9 digits, `A1234567`) | proxy value | | with `creditor.proxy` |
//! | `creditor.name` | as `debtor.name` | `creditor_name` | | — |
//! | `creditor.bank` | string, 3 digits | `receiving_bank` | | — |
//! | `settlement_date` | string `YYYY-MM-DD` | `settlement_date` | payment types | — |
//! | `transmitted_at` | string `MMDDhhmmss` (UTC) | `transmitted_at` (F7) | all | — |
//! | `stan` | string, 6 digits | `stan` (F11) | all | — |
//! | `rrn` | string, 12 printable ASCII | `rrn` (F37) | all | — |
//! | `acquirer` | string, 1–11 digits | `acquirer` (F32) | all | — |
//! | `terminal_id` | string, 8 printable ASCII | `terminal_id` (F41) | payment types | — |
//! | `merchant_id` | string, 15 printable ASCII | `merchant_id` (F42) | payment types | — |
//! | `idempotency_key` | string, 1–64 printable ASCII | `idempotency_key` (F123) | payment types | — |
//!
//! In a `return`, `debtor` and `creditor` are the parties of the original
//! transfer (the funds flow back to the debtor).
//!
//! Canonical fields the dialect does not carry: `pan`, `local_time`,
//! `local_date`, `forwarder` (outside `original`), `mac`, and any
//! processing code other than those above. A `currency` without an
//! `amount` is not written.
//!
//! # Signature
//!
//! A signed document ends with the member `"signature"`: the padded base64
//! of [`Transaction::signature`], written compactly as
//! `,"signature":"<base64>"` right before the closing brace. It signs the
//! document with exactly that text removed, i.e. the bytes the sender
//! encoded before adding it ([`MessageCodec::encode_auth_input`]). The
//! decoder recognises the member only in that place and form (trailing
//! whitespace allowed), parses the document without it, and
//! [`MessageCodec::decode_authenticated`] keeps those bytes in
//! [`Transaction::auth_input`]. Anywhere else `signature` is an unknown
//! member. See [`crate::auth`].
//!
//! ## Status and code
//!
//! `status` is required in results; `code` is the canonical response code and
//! must agree with it: `approved` is `00`, `pending` is
//! [`PENDING_RESPONSE_CODE`] (`09`, request in progress), `declined` is any
//! other code. A result without `code` decodes as `00`, `09` or `05` (do not
//! honour) respectively; the encoder always writes both. `reason` carries the
//! bank's ISO 20022 reason alongside, for the switch to map.
//!
//! # Examples
//!
//! One per message type. They are the files in `codecs/tests/data/json/`,
//! which the tests decode, compare with expected values and re-encode.
//!
//! `credit_transfer` (creditor addressed by FPS proxy):
//! ```json
#![doc = include_str!("../../tests/data/json/credit_transfer.json")]
//! ```
//! `credit_transfer_result` (declined, insufficient funds):
//! ```json
#![doc = include_str!("../../tests/data/json/credit_transfer_result.json")]
//! ```
//! `cancel`:
//! ```json
#![doc = include_str!("../../tests/data/json/cancel.json")]
//! ```
//! `cancel_result`:
//! ```json
#![doc = include_str!("../../tests/data/json/cancel_result.json")]
//! ```
//! `reversal_advice` (a repeat):
//! ```json
#![doc = include_str!("../../tests/data/json/reversal_advice.json")]
//! ```
//! `reversal_advice_result`:
//! ```json
#![doc = include_str!("../../tests/data/json/reversal_advice_result.json")]
//! ```
//! `status_inquiry`:
//! ```json
#![doc = include_str!("../../tests/data/json/status_inquiry.json")]
//! ```
//! `status_inquiry_result` (the original is still pending):
//! ```json
#![doc = include_str!("../../tests/data/json/status_inquiry_result.json")]
//! ```
//! `network` (echo):
//! ```json
#![doc = include_str!("../../tests/data/json/network.json")]
//! ```
//! `network_result`:
//! ```json
#![doc = include_str!("../../tests/data/json/network_result.json")]
//! ```
//! `return` (sent by the creditor's bank):
//! ```json
#![doc = include_str!("../../tests/data/json/return.json")]
//! ```
//! `return_result`:
//! ```json
#![doc = include_str!("../../tests/data/json/return_result.json")]
//! ```
//!
//! # Duplicate members
//!
//! serde_json's own maps keep the last of two equal keys; this codec reads
//! objects with its own visitors and refuses a repeated member
//! (`"duplicate member"` at its path), so two parties cannot disagree about
//! which value counts.

mod decode;
mod encode;
mod schema;

pub use schema::{PENDING_RESPONSE_CODE, RETURN_PROCESSING_CODE};

use bytes::BytesMut;

use crate::model::{AuthInput, MessageId, SignatureValue, Transaction};
use crate::{AuthSlot, CodecError, Location, MessageCodec};

/// Largest document accepted, in bytes. The largest document the encoder can
/// write (every member at its maximum, names full of escaped quotes) is about
/// 3 KiB; the rest is room for a peer's whitespace.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The JSON bank dialect. Stateless: one value serves every link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonCodec;

impl JsonCodec {
    /// The codec.
    pub fn new() -> Self {
        JsonCodec
    }
}

impl JsonCodec {
    /// The skeleton of a request that did not decode but is a well-formed
    /// JSON object with a readable request `type` and `request_id`: its
    /// MTI, processing code and message id, enough to answer it with a
    /// format error matched to it. `None` for anything else (not JSON, a
    /// result, no usable `request_id`): such a message cannot be answered.
    pub fn salvage_request(&self, payload: &[u8]) -> Option<Transaction> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let ty = schema::MsgType::parse(doc.get("type")?.as_str()?).ok()?;
        if ty.is_result() {
            return None;
        }
        let id = MessageId::parse(doc.get("request_id")?.as_str()?.as_bytes()).ok()?;
        let mut req = Transaction::new(ty.mti());
        req.processing_code = ty.processing_code();
        req.message_id = Some(id);
        Some(req)
    }
}

/// The text in front of a signature's base64 (see the module docs).
const SIGNATURE_MARKER: &[u8] = b",\"signature\":\"";

impl JsonCodec {
    /// Decode; with `keep_covered`, a signed document's covered bytes go to
    /// `auth_input`.
    fn decode_checked(
        &self,
        payload: &[u8],
        keep_covered: bool,
    ) -> Result<Transaction, CodecError> {
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(CodecError::TooLong {
                at: Location::Message,
                len: payload.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        // Checked once up front so that serde_json can skip it per string.
        let text = std::str::from_utf8(payload).map_err(|_| CodecError::Invalid {
            at: Location::Message,
            reason: "not UTF-8",
        })?;
        let Some((covered, signature)) = split_signature(payload)? else {
            return decode::decode_str(text);
        };
        // Only ASCII was cut out of valid UTF-8, at ASCII boundaries.
        let covered_text = std::str::from_utf8(&covered).map_err(|_| CodecError::Invalid {
            at: Location::Message,
            reason: "not UTF-8",
        })?;
        let mut txn = decode::decode_str(covered_text)?;
        txn.signature = Some(signature);
        if keep_covered {
            txn.auth_input = Some(AuthInput::new(bytes::Bytes::from(covered)));
        }
        Ok(txn)
    }
}

/// A signed document: (the document without its signature member, the
/// signature). `None` when the document carries no signature in the one
/// place it may.
fn split_signature(payload: &[u8]) -> Result<Option<(Vec<u8>, SignatureValue)>, CodecError> {
    let at = Location::Element("signature");
    let doc = payload.trim_ascii_end();
    let Some(before_brace) = doc.strip_suffix(b"\"}") else {
        return Ok(None);
    };
    let value_start = before_brace
        .iter()
        .rposition(|c| !crate::auth::is_base64(*c))
        .map_or(0, |i| i + 1);
    if !before_brace[..value_start].ends_with(SIGNATURE_MARKER) {
        return Ok(None);
    }
    let raw =
        crate::auth::base64_decode(&before_brace[value_start..]).ok_or(CodecError::Invalid {
            at,
            reason: "not base64",
        })?;
    let signature = SignatureValue::new(&raw).map_err(|e| CodecError::value(at, e))?;
    let comma = value_start - SIGNATURE_MARKER.len();
    // From the closing brace on: `}` and any trailing whitespace.
    let brace = before_brace.len() + 1;
    let mut covered = Vec::with_capacity(comma + payload.len() - brace);
    covered.extend_from_slice(&payload[..comma]);
    covered.extend_from_slice(&payload[brace..]);
    Ok(Some((covered, signature)))
}

impl MessageCodec for JsonCodec {
    fn decode(&self, payload: &[u8]) -> Result<Transaction, CodecError> {
        self.decode_checked(payload, false)
    }

    fn salvage_request(&self, payload: &[u8]) -> Option<Transaction> {
        JsonCodec::salvage_request(self, payload)
    }

    fn encode(&self, txn: &Transaction, out: &mut BytesMut) -> Result<(), CodecError> {
        let start = out.len();
        encode::encode(txn, out)?;
        let Some(signature) = &txn.signature else {
            return Ok(());
        };
        // serde_json writes a compact object: its last byte is the brace.
        if out.len() == start || out[out.len() - 1] != b'}' {
            out.truncate(start);
            return Err(CodecError::Invalid {
                at: Location::Message,
                reason: "JSON serialisation failed",
            });
        }
        out.truncate(out.len() - 1);
        let mut b64 = Vec::with_capacity(signature.as_bytes().len().div_ceil(3) * 4);
        crate::auth::base64_encode(signature.as_bytes(), &mut b64);
        out.extend_from_slice(SIGNATURE_MARKER);
        out.extend_from_slice(&b64);
        out.extend_from_slice(b"\"}");
        Ok(())
    }

    fn auth_slot(&self) -> AuthSlot {
        AuthSlot::Signature
    }

    /// The document without a signature member.
    fn encode_auth_input(&self, txn: &Transaction, out: &mut BytesMut) -> Result<(), CodecError> {
        encode::encode(txn, out)
    }

    fn decode_authenticated(&self, payload: &[u8]) -> Result<Transaction, CodecError> {
        self.decode_checked(payload, true)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_request_that_does_not_decode_is_salvaged_by_type_and_id() {
        let codec = super::JsonCodec::new();
        // Three decimals for HKD: refused by the decoder, yet answerable.
        let bad = br#"{"type":"credit_transfer","request_id":"R-1","amount":{"minor":1.005,"currency":"HKD"}}"#;
        assert!(crate::MessageCodec::decode(&codec, bad).is_err());
        let req = codec.salvage_request(bad).unwrap();
        assert_eq!(req.mti, crate::model::Mti::CREDIT_TRANSFER);
        assert_eq!(
            req.processing_code,
            Some(crate::model::ProcessingCode::CREDIT_TRANSFER)
        );
        assert_eq!(req.message_id.unwrap().as_str(), "R-1");
        let cancel = br#"{"type":"cancel","request_id":"C-1","x":1}"#;
        assert_eq!(
            codec.salvage_request(cancel).unwrap().mti,
            crate::model::Mti::REVERSAL
        );
        // Nothing to answer: not JSON, a result, no or a bad request_id.
        for hopeless in [
            &br#"{"type":"credit_transfer","request_id":"R-1""#[..],
            br#"{"type":"credit_transfer_result","request_id":"R-1"}"#,
            br#"{"type":"credit_transfer"}"#,
            br#"{"type":"credit_transfer","request_id":""}"#,
            br#"{"type":"wire","request_id":"R-1"}"#,
            br#"[1,2]"#,
            b"\xff",
        ] {
            assert!(codec.salvage_request(hopeless).is_none());
        }
    }

    use super::*;
    use crate::model::{Mti, ResponseCode};

    fn decode(doc: &str) -> Result<Transaction, CodecError> {
        JsonCodec.decode(doc.as_bytes())
    }

    fn at(path: &'static str) -> Location {
        Location::Element(path)
    }

    #[test]
    fn escaped_strings_decode_without_borrowing() {
        let t = decode(r#"{"type":"network","request_id":"N\u0031\"\\","action":"echo"}"#).unwrap();
        assert_eq!(t.message_id.unwrap().as_str(), "N1\"\\");
        assert_eq!(t.mti, Mti::NETWORK);
    }

    #[test]
    fn errors_name_the_member() {
        let e = decode(r#"{"type":"network","request_id":"N1","action":7}"#).unwrap_err();
        assert_eq!(
            e,
            CodecError::Invalid {
                at: at("action"),
                reason: "wrong JSON type"
            }
        );
        let e = decode(r#"{"type":"network","request_id":"N1"}"#).unwrap_err();
        assert_eq!(e, CodecError::Missing { at: at("action") });
        let e =
            decode(r#"{"type":"network","request_id":"N1","action":"echo","x":1}"#).unwrap_err();
        assert_eq!(e.location(), Location::Message);
        let e = decode(r#"{"type":"network","request_id":"N1","action":"echo""#).unwrap_err();
        assert_eq!(
            e,
            CodecError::Invalid {
                at: Location::Message,
                reason: "JSON ends early"
            }
        );
    }

    #[test]
    fn result_code_derives_from_status() {
        let t =
            decode(r#"{"type":"network_result","request_id":"N1","status":"declined"}"#).unwrap();
        assert_eq!(t.response_code, Some(ResponseCode::DO_NOT_HONOUR));
        assert_eq!(t.mti, Mti::NETWORK_RESPONSE);
    }

    #[test]
    fn refused_encode_leaves_the_buffer_alone() {
        let mut out = BytesMut::from(&b"prefix"[..]);
        let t = Transaction::new(Mti::CREDIT_TRANSFER);
        let e = JsonCodec.encode(&t, &mut out).unwrap_err();
        assert_eq!(
            e,
            CodecError::Missing {
                at: at("request_id")
            }
        );
        assert_eq!(&out[..], b"prefix");
    }
}
