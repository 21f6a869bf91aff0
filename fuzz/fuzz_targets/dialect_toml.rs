//! Dialect files (`configs/dialects/*.toml`): random text into
//! `Dialect::from_toml` never panics. When the text is a valid dialect, the
//! codec it makes is exercised too: the input itself is decoded as a message
//! under that dialect, and a typical credit transfer is encoded and, when the
//! dialect can carry it, decoded back to an equal transaction.

#![no_main]

use bytes::BytesMut;
use fps_codecs::iso8583::{Dialect, Iso8583Codec};
use fps_codecs::model::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(dialect) = Dialect::from_toml(text) else {
        return;
    };
    let codec = Iso8583Codec::new(dialect);
    let _ = codec.decode(data);
    let _ = codec.decode_message(data);
    let txn = credit_transfer();
    let mut out = BytesMut::new();
    if codec.encode(&txn, &mut out).is_ok() {
        // The dialect may drop fields it does not map and translate values;
        // only require that its own output is readable and stable.
        let back = codec
            .decode(&out)
            .unwrap_or_else(|e| panic!("dialect cannot read its own encoding: {e}"));
        let mut out2 = BytesMut::new();
        codec
            .encode(&back, &mut out2)
            .expect("encoded once already");
        assert_eq!(
            out, out2,
            "encode(decode(encode(t))) differs from encode(t)"
        );
    }
});

/// The shared example credit transfer without local time, local date and
/// merchant id: fewer fields for a random dialect to lay out.
fn credit_transfer() -> Transaction {
    let mut t = fps_codecs::model::examples::credit_transfer();
    t.local_time = None;
    t.local_date = None;
    t.merchant_id = None;
    t
}
