//! The messages every codec benchmark measures: one FPS credit transfer,
//! in each shipped ISO 8583 dialect, as pacs.008 and as JSON, and framed.

use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso20022::Iso20022Codec;
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::json::JsonCodec;
use fps_codecs::model::*;
use fps_codecs::{CodecError, MessageCodec};

/// The typical upstream 0200 credit transfer of DESIGN.md (shared with the
/// codec tests).
pub use fps_codecs::model::examples::credit_transfer;

/// The dialect with iso8583_rs's layout (ASCII fields, binary bitmaps).
pub const BINARY_BITMAP_DIALECT: &str = "iso87-ascii-binary-bitmap";

/// The credit transfer in one ISO 8583 dialect: the codec, the wire bytes,
/// and the transaction as that dialect carries it (fields it does not map
/// are dropped, so decode(wire) == txn).
#[derive(Debug, Clone)]
pub struct IsoCase {
    /// Dialect name.
    pub dialect: &'static str,
    /// Its codec.
    pub codec: Iso8583Codec,
    /// The encoded message.
    pub wire: Vec<u8>,
    /// What decoding `wire` gives.
    pub txn: Transaction,
}

/// [`credit_transfer`] in every shipped dialect.
pub fn iso8583_cases() -> Result<Vec<IsoCase>, CodecError> {
    fps_codecs::iso8583::builtin_names()
        .map(|dialect| {
            let codec = Iso8583Codec::builtin(dialect).expect("listed by builtin_names");
            let mut out = BytesMut::new();
            codec.encode(&credit_transfer(), &mut out)?;
            let txn = codec.decode(&out)?;
            Ok(IsoCase {
                dialect,
                codec,
                wire: out.to_vec(),
                txn,
            })
        })
        .collect()
}

/// A richer credit transfer (names, proxy, UETR, settlement date) as the
/// JSON bank API sends it; also the source of the pacs.008.
pub const JSON_CREDIT_TRANSFER: &[u8] = include_bytes!("../data/credit_transfer.json");

/// The JSON credit transfer decoded.
pub fn json_transaction() -> Result<Transaction, CodecError> {
    JsonCodec::new().decode(JSON_CREDIT_TRANSFER)
}

/// The JSON credit transfer as a pacs.008 document, with its codec.
pub fn pacs008() -> Result<(Iso20022Codec, Vec<u8>), CodecError> {
    let codec = Iso20022Codec::default();
    let mut out = BytesMut::new();
    codec.encode(&json_transaction()?, &mut out)?;
    Ok((codec, out.to_vec()))
}

/// The upstream framer (2-byte binary length, DESIGN.md) and `n` canonical
/// credit transfers framed back to back.
pub fn framed_stream(n: usize) -> (Framer, BytesMut) {
    let framer = Framer::new(FrameConfig::default()).expect("the default frame config is valid");
    let codec = Iso8583Codec::builtin("canonical").expect("shipped");
    let mut out = BytesMut::new();
    for _ in 0..n {
        let mark = framer.begin(&[], &mut out).expect("no header");
        codec
            .encode(&credit_transfer(), &mut out)
            .expect("valid transaction");
        framer.finish(mark, &mut out).expect("small frame");
    }
    (framer, out)
}
