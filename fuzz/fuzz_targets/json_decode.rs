//! The JSON bank interface: `JsonCodec` through `MessageCodec::decode`.
//! The whole input is one document (framing header already removed).
//!
//! Undecodable documents also go through `salvage_request` (what the
//! switch answers `30` to on a bank's inbound link).
//!
//! Oracle, beyond "never panics": when a document decodes and its
//! transaction encodes, the encoder's output decodes to an equal
//! `Transaction`. (The encoder may refuse a decoded transaction only where the
//! module docs say so; that is not checked here.)

#![no_main]

use bytes::BytesMut;
use fps_codecs::json::JsonCodec;
use fps_codecs::MessageCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|doc: &[u8]| {
    let codec = JsonCodec::new();
    let Ok(txn) = codec.decode(doc) else {
        // What the switch answers `30` to must be answerable: a request
        // with a message id (and it never panics on anything).
        if let Some(req) = codec.salvage_request(doc) {
            assert!(!req.is_response() && req.message_id.is_some());
        }
        return;
    };
    let mut out = BytesMut::new();
    if codec.encode(&txn, &mut out).is_err() {
        return;
    }
    let again = codec.decode(&out).unwrap_or_else(|e| {
        panic!(
            "encoder output does not decode: {e}; {}",
            String::from_utf8_lossy(&out)
        )
    });
    assert_eq!(again, txn, "Transaction round trip differs");
});
