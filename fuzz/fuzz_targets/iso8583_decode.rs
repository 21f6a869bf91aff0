//! Every shipped ISO 8583 dialect: `decode` and `decode_message` of random
//! bytes, with round-trip oracles.
//!
//! Input layout: byte 0 selects the dialect (`builtin_names()` order, modulo
//! their count: 0 canonical, 1 iso87-ascii-binary-bitmap, 2 iso87-bcd-binary,
//! 3 iso93-ebcdic); the rest is one message, framing header already removed.
//!
//! Oracles, beyond "never panics":
//! - `decode` accepting a message implies `decode_message` accepts it (the
//!   canonical decode checks everything the field decode checks, and more);
//! - when `decode_message` succeeds, `encode_message` of the result succeeds
//!   and decodes to the same `IsoMessage`;
//! - when `decode` succeeds, `encode` of the transaction succeeds and decodes
//!   to the same `Transaction`.

#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use fps_codecs::iso8583::{self, Iso8583Codec};
use libfuzzer_sys::fuzz_target;

fn codecs() -> &'static [(&'static str, Iso8583Codec)] {
    static CODECS: OnceLock<Vec<(&'static str, Iso8583Codec)>> = OnceLock::new();
    CODECS.get_or_init(|| {
        iso8583::builtin_names()
            .map(|n| (n, Iso8583Codec::builtin(n).expect("listed dialect exists")))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let [sel, msg @ ..] = data else {
        return;
    };
    let all = codecs();
    let (name, codec) = &all[usize::from(*sel) % all.len()];

    let fields = codec.decode_message(msg);
    if let Ok(m) = &fields {
        let mut out = BytesMut::new();
        codec
            .encode_message(m, &mut out)
            .unwrap_or_else(|e| panic!("{name}: decoded message does not re-encode: {e}; {m:?}"));
        let again = codec
            .decode_message(&out)
            .unwrap_or_else(|e| panic!("{name}: re-encoded message does not decode: {e}; {m:?}"));
        assert_eq!(&again, m, "{name}: IsoMessage round trip differs");
    }

    let txn = codec.decode(msg);
    if let Ok(t) = &txn {
        assert!(
            fields.is_ok(),
            "{name}: decode accepts what decode_message refuses ({:?})",
            fields.as_ref().err()
        );
        let mut out = BytesMut::new();
        codec.encode(t, &mut out).unwrap_or_else(|e| {
            panic!("{name}: decoded transaction does not re-encode: {e}; {t:?}")
        });
        let again = codec.decode(&out).unwrap_or_else(|e| {
            panic!("{name}: re-encoded transaction does not decode: {e}; {t:?}")
        });
        assert_eq!(&again, t, "{name}: Transaction round trip differs");
    }
});
