//! ISO 20022 XML (pacs.008/002/028/004, camt.056/029): `Iso20022Codec`
//! decode of random bytes. The whole input is one message.
//!
//! Two codecs run on every input: the default configuration and a lenient
//! one (`accept_other_versions`), so that version checks do not hide the
//! rest of the decoder from the fuzzer. Every input also goes through
//! `salvage_request` (what the switch answers `30` to on a bank's inbound
//! link when it does not decode).
//!
//! Oracles, beyond "never panics":
//! - the lenient codec accepts everything the default one accepts;
//! - when a message decodes and `MessageCodec::encode` accepts the
//!   transaction (it needs `transmitted_at` and `settlement_date`), the
//!   encoder's output decodes to an equal `Transaction`;
//! - a salvaged request is a request with a message id and a reference,
//!   and its format-error answer encodes, decodes as the answer to it,
//!   names it in `OrgnlMsgId` and echoes its references (pacs.002: as
//!   `30`);
//! - salvage agrees with decode: a pacs.008 or pacs.004 that decodes is
//!   salvaged, and whatever is salvaged from a message that decodes has
//!   its kind and ids.

#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use fps_codecs::iso20022::{CreationDateTime, Decoded, Iso20022Codec, Iso20022Config, MessageType};
use fps_codecs::model::{ResponseCode, Transaction};
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
    let salvaged = strict.salvage_request(msg);
    if let Some(req) = &salvaged {
        check_salvaged(strict, req);
    }
    let lenient_result = lenient.decode_message(msg);
    let Ok(decoded) = strict.decode_message(msg) else {
        return;
    };
    assert_eq!(
        lenient_result.as_ref().ok(),
        Some(&decoded),
        "lenient codec differs from the default one"
    );
    check_salvage_agrees(&decoded, salvaged.as_ref());
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

/// The ids an answer is matched by.
fn ids(t: &Transaction) -> impl PartialEq + std::fmt::Debug {
    (t.message_id, t.end_to_end_id, t.transaction_id, t.uetr)
}

fn check_salvaged(codec: &Iso20022Codec, req: &Transaction) {
    assert!(!req.is_response(), "salvaged a response");
    assert!(req.message_id.is_some(), "salvaged without a message id");
    assert!(
        req.end_to_end_id.is_some() || req.transaction_id.is_some() || req.uetr.is_some(),
        "salvaged without a reference"
    );
    // The switch adds its own MsgId and creation time; the ids matched on
    // are the request's either way.
    let answer = req.response(ResponseCode::FORMAT_ERROR);
    let created = CreationDateTime::parse(b"2024-05-01T02:15:31Z").expect("constant time parses");
    let mut out = BytesMut::new();
    if let Err(e) = codec.encode_at(&answer, &created, &mut out) {
        panic!("the answer to a salvaged request does not encode: {e}");
    }
    let back = codec.decode_answer(&out, req.mti).unwrap_or_else(|e| {
        panic!(
            "the answer to a salvaged request does not decode: {e}; {}",
            String::from_utf8_lossy(&out)
        )
    });
    assert_eq!(back.original_message_id, req.message_id, "OrgnlMsgId");
    assert_eq!(
        (back.end_to_end_id, back.transaction_id, back.uetr),
        (req.end_to_end_id, req.transaction_id, req.uetr),
        "references echoed"
    );
    let code = back.response_code.expect("an answer has a code");
    if req.mti.class() == 2 {
        assert_eq!(code, ResponseCode::FORMAT_ERROR, "pacs.002 RJCT + FF01");
    } else {
        // camt.029 has no format-error reason: a refusal all the same.
        assert!(!code.is_approved() && code != ResponseCode::PENDING);
    }
}

fn check_salvage_agrees(decoded: &Decoded, salvaged: Option<&Transaction>) {
    let must = matches!(decoded.message, MessageType::Pacs008 | MessageType::Pacs004);
    assert!(
        salvaged.is_some() || !must,
        "a {} that decodes is not salvaged",
        decoded.message.id()
    );
    if let Some(req) = salvaged {
        let t = &decoded.transaction;
        assert_eq!(
            (req.mti, req.processing_code),
            (t.mti, t.processing_code),
            "salvaged kind"
        );
        assert_eq!(ids(req), ids(t), "salvaged ids");
    }
}
