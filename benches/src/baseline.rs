//! The iso8583_rs crate (0.1.10, 2020) as a differential oracle and a speed
//! baseline, on `data/iso8583_rs_iso87_ascii_binary_bitmap.yaml`: the
//! `iso87-ascii-binary-bitmap` layout (iso8583_rs only reads binary bitmaps,
//! so it cannot express the hex bitmaps of `canonical`).
//!
//! iso8583_rs loads its spec once per process from the file named by the
//! `SPEC_FILE` environment variable (a `lazy_static`), and prints two lines
//! to stdout when it does; [`spec`] sets the variable on first use.

use std::collections::BTreeMap;
use std::sync::Once;

use fps_codecs::iso8583::{Dialect, IsoMessage};
use fps_codecs::model::CharClass;
use iso8583_rs::iso8583::iso_spec::{self, IsoMsg, Spec};

/// The iso8583_rs spec file.
pub const SPEC_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/iso8583_rs_iso87_ascii_binary_bitmap.yaml"
);

/// Our dialect with the same layout.
pub const DIALECT: &str = crate::fixtures::BINARY_BITMAP_DIALECT;

/// Field 65 is iso8583_rs's tertiary-bitmap indicator: not in its spec.
pub const UNEXPRESSIBLE: [u8; 1] = [65];

/// The iso8583_rs spec (loaded on first call).
pub fn spec() -> &'static Spec {
    static SET: Once = Once::new();
    SET.call_once(|| std::env::set_var("SPEC_FILE", SPEC_PATH));
    iso_spec::spec("")
}

/// Parse with iso8583_rs. Its errors are `String`s. Note that iso8583_rs
/// panics on some malformed input (e.g. non-digit length prefixes).
pub fn parse(wire: &mut Vec<u8>) -> Result<IsoMsg, String> {
    spec().parse(wire).map_err(|e| e.msg)
}

/// An iso8583_rs message as MTI and fields (raw bytes: text as is, binary
/// fields as bytes), comparable with our [`IsoMessage`].
pub fn to_iso_message(msg: &IsoMsg) -> Result<IsoMessage, String> {
    let mti_raw = msg.fd_map.get("message_type").ok_or("no message_type")?;
    let mti: [u8; 4] = mti_raw
        .as_slice()
        .try_into()
        .map_err(|_| "MTI is not 4 bytes")?;
    let mut fields = BTreeMap::new();
    for n in 2u8..=128 {
        if n == 65 || !msg.bmp.is_on(u32::from(n)) {
            continue;
        }
        let v = msg
            .fd_map
            .get(&format!("f{n}"))
            .ok_or_else(|| format!("bit {n} set but no value"))?;
        fields.insert(n, v.clone());
    }
    Ok(IsoMessage { mti, fields })
}

/// Build an iso8583_rs message from ours (values given as iso8583_rs
/// wants them: text, or hex for the dialect's binary fields).
pub fn from_iso_message(m: &IsoMessage, dialect: &Dialect) -> Result<IsoMsg, String> {
    let spec = spec();
    let mti = std::str::from_utf8(&m.mti).map_err(|_| "MTI is not ASCII")?;
    let segment = spec.get_message_from_header(mti).map_err(|e| e.msg)?;
    let mut msg = iso_spec::new_msg(spec, segment);
    msg.set("message_type", mti).map_err(|e| e.msg)?;
    for (n, v) in &m.fields {
        if UNEXPRESSIBLE.contains(n) {
            return Err(format!("field {n} cannot be expressed in iso8583_rs"));
        }
        let binary = dialect.field(*n).is_some_and(|s| s.class == CharClass::B);
        let text = if binary {
            v.iter().map(|b| format!("{b:02x}")).collect()
        } else {
            String::from_utf8(v.clone()).map_err(|_| format!("field {n} is not text"))?
        };
        msg.set_on(u32::from(*n), &text).map_err(|e| e.msg)?;
    }
    Ok(msg)
}

/// Assemble with iso8583_rs.
pub fn assemble(msg: &IsoMsg) -> Result<Vec<u8>, String> {
    msg.assemble().map_err(|e| e.msg)
}
