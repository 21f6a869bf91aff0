//! Every codec measurement as a pair of boxed closures (decode one message,
//! encode one message), for the allocation counts printed by the benches
//! and for the codec report. The criterion benches call the codecs
//! directly instead, so boxing never shows in their timings.

use std::hint::black_box;

use bytes::BytesMut;
use fps_codecs::json::JsonCodec;
use fps_codecs::MessageCodec;

#[cfg(feature = "iso8583-rs")]
use crate::baseline;
use crate::fixtures;

/// One codec on one message.
pub struct Case {
    /// Codec and layout, e.g. "ISO 8583 canonical".
    pub codec: String,
    /// The message measured.
    pub message: &'static str,
    /// Its size on the wire.
    pub bytes: usize,
    /// Decode the message once.
    pub decode: Box<dyn FnMut()>,
    /// Encode the message once (into a reused buffer).
    pub encode: Box<dyn FnMut()>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("codec", &self.codec)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// Name of the iso8583_rs case.
pub const ISO8583_RS: &str = "iso8583_rs 0.1.10 (iso87-ascii-binary-bitmap layout)";

/// All cases, plus a note for each codec that could not be set up (e.g. a
/// codec still being written): the report prints those instead of failing.
pub fn all() -> (Vec<Case>, Vec<String>) {
    let mut cases = Vec::new();
    let mut missing = Vec::new();
    match fixtures::iso8583_cases() {
        Ok(iso) => {
            for c in iso {
                cases.push(iso8583(c));
            }
        }
        Err(e) => missing.push(format!("ISO 8583: credit transfer does not encode: {e}")),
    }
    #[cfg(feature = "iso8583-rs")]
    match iso8583_rs() {
        Ok(c) => cases.push(c),
        Err(e) => missing.push(format!("iso8583_rs: {e}")),
    }
    #[cfg(not(feature = "iso8583-rs"))]
    missing
        .push("iso8583_rs: built without the `iso8583-rs` feature (see benches/Cargo.toml)".into());
    // Our own codecs' cases always build: a failure is a bug, not a gap.
    cases.push(pacs008().expect("the ISO 20022 pacs.008 case builds"));
    cases.push(json().expect("the JSON case builds"));
    cases.push(framer());
    (cases, missing)
}

fn iso8583(c: fixtures::IsoCase) -> Case {
    let fixtures::IsoCase {
        dialect,
        codec,
        wire,
        txn,
    } = c;
    let enc_codec = codec.clone();
    let mut out = BytesMut::with_capacity(1024);
    Case {
        codec: format!("ISO 8583 {dialect}"),
        message: "0200 credit transfer",
        bytes: wire.len(),
        decode: Box::new(move || {
            black_box(codec.decode(black_box(&wire)).expect("decodes"));
        }),
        encode: Box::new(move || {
            out.clear();
            enc_codec
                .encode(black_box(&txn), &mut out)
                .expect("encodes");
        }),
    }
}

#[cfg(feature = "iso8583-rs")]
/// iso8583_rs on the same 0200 in the binary-bitmap layout. Decode is
/// `Spec::parse`; encode is what a caller does per message: a new message,
/// `set`/`set_on` of every field from text, `assemble`.
fn iso8583_rs() -> Result<Case, String> {
    let case = fixtures::iso8583_cases()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| c.dialect == baseline::DIALECT)
        .ok_or("dialect not shipped")?;
    let m = case
        .codec
        .decode_message(&case.wire)
        .map_err(|e| e.to_string())?;
    let mut wire = case.wire.clone();
    let parsed = baseline::parse(&mut wire)?;
    if baseline::to_iso_message(&parsed)? != m {
        return Err("iso8583_rs parses the 0200 differently".into());
    }
    let mti = String::from_utf8(m.mti.to_vec()).map_err(|e| e.to_string())?;
    let fields: Vec<(u32, String)> = m
        .fields
        .iter()
        .map(|(n, v)| {
            (
                u32::from(*n),
                String::from_utf8(v.clone()).expect("the 0200 is all text"),
            )
        })
        .collect();
    let spec = baseline::spec();
    let segment = spec.get_message_from_header(&mti).map_err(|e| e.msg)?;
    Ok(Case {
        codec: ISO8583_RS.into(),
        message: "0200 credit transfer",
        bytes: wire.len(),
        decode: Box::new(move || {
            black_box(baseline::parse(black_box(&mut wire)).expect("parses"));
        }),
        encode: Box::new(move || {
            let mut msg = iso8583_rs::iso8583::iso_spec::new_msg(spec, segment);
            msg.set("message_type", &mti).expect("defined");
            for (n, v) in &fields {
                msg.set_on(*n, v).expect("defined");
            }
            black_box(msg.assemble().expect("assembles"));
        }),
    })
}

fn pacs008() -> Result<Case, String> {
    let (codec, doc) = fixtures::pacs008().map_err(|e| e.to_string())?;
    let txn = codec.decode(&doc).map_err(|e| e.to_string())?;
    let enc_codec = codec.clone();
    let mut out = BytesMut::with_capacity(8192);
    Ok(Case {
        codec: "ISO 20022".into(),
        message: "pacs.008 credit transfer",
        bytes: doc.len(),
        decode: Box::new(move || {
            black_box(codec.decode(black_box(&doc)).expect("decodes"));
        }),
        encode: Box::new(move || {
            out.clear();
            enc_codec
                .encode(black_box(&txn), &mut out)
                .expect("encodes");
        }),
    })
}

fn json() -> Result<Case, String> {
    let txn = fixtures::json_transaction().map_err(|e| e.to_string())?;
    let doc = fixtures::JSON_CREDIT_TRANSFER;
    let mut out = BytesMut::with_capacity(4096);
    Ok(Case {
        codec: "JSON".into(),
        message: "credit transfer",
        bytes: doc.len(),
        decode: Box::new(move || {
            black_box(JsonCodec.decode(black_box(doc)).expect("decodes"));
        }),
        encode: Box::new(move || {
            out.clear();
            JsonCodec
                .encode(black_box(&txn), &mut out)
                .expect("encodes");
        }),
    })
}

/// The upstream framer: decode = one frame's bytes arrive in the read
/// buffer and are split off; encode = reserve the length, copy the
/// message, write the length.
fn framer() -> Case {
    let (framer, one) = fixtures::framed_stream(1);
    let message = one[2..].to_vec();
    let mut src = BytesMut::with_capacity(8192);
    let mut out = BytesMut::with_capacity(1024);
    Case {
        codec: "framer (2-byte binary length)".into(),
        message: "canonical 0200 frame",
        bytes: one.len(),
        decode: Box::new(move || {
            src.extend_from_slice(&one);
            black_box(
                framer
                    .decode(&mut src)
                    .expect("valid frame")
                    .expect("whole frame"),
            );
        }),
        encode: Box::new(move || {
            out.clear();
            let mark = framer.begin(&[], &mut out).expect("no header");
            out.extend_from_slice(black_box(&message));
            framer.finish(mark, &mut out).expect("small frame");
        }),
    }
}
