//! # fps-codecs
//!
//! Owns the **canonical transaction model** ([`model::Transaction`]) and the
//! codecs that translate it to and from every bank's interface standard:
//!
//! - [`iso8583`]: an ISO 8583 engine driven by dialect files
//!   (`configs/dialects/*.toml`): ASCII / EBCDIC / packed BCD / binary data,
//!   hex or binary bitmaps, fixed headers, per-dialect field maps;
//! - [`iso20022`]: pacs.008, pacs.002, pacs.028, pacs.004 and camt.056;
//! - [`json`]: the JSON API some banks expose;
//! - [`framing`]: length headers in front of each message on a stream;
//! - [`auth`]: where each codec carries a MAC or signature and which bytes
//!   it covers (the switch makes and checks them through `fps-hsm`);
//! - [`CodecName`]: the `codec = "..."` name a config picks a codec by;
//! - [`calendar`]: day counts to calendar dates and back, for the date
//!   fields the codecs own.
//!
//! No I/O, no clock, no tokio: bytes in, values out. Decoders never panic on
//! any input and name the field and the reason in every error.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod calendar;
mod codec_name;
pub mod error;
pub mod framing;
pub mod iso20022;
pub mod iso8583;
pub mod json;
pub mod model;

pub use auth::AuthSlot;
pub use codec_name::CodecName;
pub use error::{CodecError, Location};
pub use model::Transaction;

/// A bank's interface standard: turns one message payload (framing header
/// already removed) into a canonical transaction and back.
pub trait MessageCodec: Send + Sync + std::fmt::Debug {
    /// Decode one whole message.
    fn decode(&self, payload: &[u8]) -> Result<Transaction, CodecError>;

    /// Encode `txn`, appending the message to `out`.
    fn encode(&self, txn: &Transaction, out: &mut bytes::BytesMut) -> Result<(), CodecError>;

    /// Where this codec carries a MAC or signature (see [`auth`]).
    fn auth_slot(&self) -> AuthSlot {
        AuthSlot::None
    }

    /// Append the exact bytes a MAC or signature of `txn` covers (see
    /// [`auth`]); `txn.mac` and `txn.signature` are ignored. Encoding `txn`
    /// with its MAC or signature set then writes a message whose covered
    /// bytes are exactly these. On error `out` is left as it was.
    fn encode_auth_input(
        &self,
        _txn: &Transaction,
        _out: &mut bytes::BytesMut,
    ) -> Result<(), CodecError> {
        Err(auth::no_slot(
            Location::Message,
            "this codec carries no MAC or signature",
        ))
    }

    /// As [`MessageCodec::decode`], and when the message carries a MAC or a
    /// signature, [`Transaction::auth_input`] holds the bytes it covers
    /// (left `None` when they cannot be delimited, e.g. fields after the MAC
    /// field: such a message cannot be authenticated). Allocates once for
    /// the covered bytes.
    fn decode_authenticated(&self, payload: &[u8]) -> Result<Transaction, CodecError> {
        self.decode(payload)
    }

    /// The skeleton of a request that failed to decode, when enough of it
    /// is readable to answer it with a format error (`30`) matched to it:
    /// its MTI and match key fields. `None` when it cannot be matched
    /// safely (then the stream cannot be trusted: close the connection) or
    /// the codec cannot tell (the default).
    fn salvage_request(&self, _payload: &[u8]) -> Option<Transaction> {
        None
    }
}
