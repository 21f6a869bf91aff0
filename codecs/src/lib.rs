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
//! - [`framing`]: length headers in front of each message on a stream.
//!
//! No I/O, no clock, no tokio: bytes in, values out. Decoders never panic on
//! any input and name the field and the reason in every error.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod framing;
pub mod iso20022;
pub mod iso8583;
pub mod json;
pub mod model;

pub use error::{CodecError, Location};
pub use model::Transaction;

/// A bank's interface standard: turns one message payload (framing header
/// already removed) into a canonical transaction and back.
pub trait MessageCodec: Send + Sync + std::fmt::Debug {
    /// Decode one whole message.
    fn decode(&self, payload: &[u8]) -> Result<Transaction, CodecError>;

    /// Encode `txn`, appending the message to `out`.
    fn encode(&self, txn: &Transaction, out: &mut bytes::BytesMut) -> Result<(), CodecError>;
}
