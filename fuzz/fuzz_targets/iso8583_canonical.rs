//! The canonical upstream protocol (DESIGN.md): the first thing the switch
//! does with bytes from the gateway. The whole input is one message.
//!
//! Oracle, beyond "never panics": when `decode` succeeds, `encode` succeeds
//! and decoding its output gives an equal `Transaction`; and encoding that
//! transaction again gives the same bytes (the encoder is deterministic and
//! its output is a fixed point).

#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use fps_codecs::iso8583::Iso8583Codec;
use libfuzzer_sys::fuzz_target;

fn codec() -> &'static Iso8583Codec {
    static CODEC: OnceLock<Iso8583Codec> = OnceLock::new();
    CODEC.get_or_init(|| Iso8583Codec::builtin("canonical").expect("canonical dialect is shipped"))
}

fuzz_target!(|msg: &[u8]| {
    let codec = codec();
    let Ok(txn) = codec.decode(msg) else {
        return;
    };
    let mut out = BytesMut::new();
    codec
        .encode(&txn, &mut out)
        .unwrap_or_else(|e| panic!("decoded transaction does not re-encode: {e}; {txn:?}"));
    let again = codec
        .decode(&out)
        .unwrap_or_else(|e| panic!("re-encoded transaction does not decode: {e}; {txn:?}"));
    assert_eq!(again, txn, "Transaction round trip differs");
    let mut out2 = BytesMut::new();
    codec
        .encode(&again, &mut out2)
        .expect("encoded once already");
    assert_eq!(out, out2, "encoding is not a fixed point");
});
