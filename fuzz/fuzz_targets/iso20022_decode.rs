//! ISO 20022 XML (pacs.008/002/028/004, camt.056/029): `Iso20022Codec`
//! decode of random bytes. The whole input is one message.
//!
//! Two codecs run on every input: the default configuration and a lenient
//! one (`accept_other_versions`), so that version checks do not hide the
//! rest of the decoder from the fuzzer.
//!
//! Oracles, beyond "never panics":
//! - the lenient codec accepts everything the default one accepts;
//! - when a message decodes and `MessageCodec::encode` accepts the
//!   transaction (it needs `transmitted_at` and `settlement_date`), the
//!   encoder's output decodes to an equal `Transaction`.

#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use fps_codecs::iso20022::{Iso20022Codec, Iso20022Config};
use fps_codecs::MessageCodec;
use libfuzzer_sys::fuzz_target;

fn codecs() -> &'static (Iso20022Codec, Iso20022Codec) {
    static CODECS: OnceLock<(Iso20022Codec, Iso20022Codec)> = OnceLock::new();
    CODECS.get_or_init(|| {
        let lenient = Iso20022Config {
            accept_other_versions: true,
            ..Iso20022Config::default()
        };
        (Iso20022Codec::default(), Iso20022Codec::new(lenient))
    })
}

fuzz_target!(|msg: &[u8]| {
    let (strict, lenient) = codecs();
    let lenient_result = lenient.decode_message(msg);
    let Ok(decoded) = strict.decode_message(msg) else {
        return;
    };
    assert_eq!(
        lenient_result.as_ref().ok(),
        Some(&decoded),
        "lenient codec differs from the default one"
    );
    let txn = decoded.transaction;
    let mut out = BytesMut::new();
    if strict.encode(&txn, &mut out).is_err() {
        return;
    }
    let again = strict.decode(&out).unwrap_or_else(|e| {
        panic!(
            "encoder output does not decode: {e}; {}",
            String::from_utf8_lossy(&out)
        )
    });
    assert_eq!(again, txn, "Transaction round trip differs");
});
