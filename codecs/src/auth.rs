//! Where each codec carries a message's MAC or signature, and which bytes
//! it covers. The codecs only place and cut out the bytes; making and
//! checking MACs and signatures is the switch's job (through `fps-hsm`).
//!
//! | codec | carried in | covers |
//! |---|---|---|
//! | ISO 8583 | the field the dialect maps `mac` to (F128 in every shipped dialect), which must be the last field of the message; a binary field holds the MAC bytes, a text field their upper-case hex | the message as encoded (fixed header, MTI, bitmaps with the MAC bit set, every field) up to, not including, the MAC field |
//! | ISO 20022 | an envelope the codec adds: `<Envelope xmlns="urn:fps-switch:xsd:envelope"><Document …>…</Document><Sgntr>BASE64</Sgntr></Envelope>` | the exact bytes of the `Document` element, from `<Document` to `</Document>` inclusive |
//! | JSON | a last member `"signature":"BASE64"` written as `,"signature":"…"` just before the closing brace | the document with that text (comma to closing quote) removed: exactly what the sender encoded before adding it |
//!
//! "What is verified is what is parsed": a decoder fills the transaction
//! only from covered bytes (ISO 8583: the MAC is the last field; ISO 20022:
//! everything outside `Document` but `Sgntr` is skipped; JSON: the covered
//! text is what is parsed), so nothing unauthenticated can change a value.
//! Base64 is the standard alphabet with padding (RFC 4648 section 4).

use arrayvec::ArrayVec;

use crate::model::MacValue;
use crate::{CodecError, Location};

/// How a codec carries message authentication
/// ([`MessageCodec::auth_slot`](crate::MessageCodec::auth_slot)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthSlot {
    /// The codec carries neither a MAC nor a signature.
    None,
    /// ISO 8583: a MAC of `len` bytes in fixed-length field `field`,
    /// written as `2 * len` upper-case hex characters when `hex`.
    MacField {
        /// Field number (64 or 128 in practice).
        field: u8,
        /// MAC bytes the field holds (the MAC is truncated to this).
        len: usize,
        /// Whether the field is text holding the MAC in hex.
        hex: bool,
    },
    /// A detached signature in [`Transaction::signature`](crate::Transaction::signature).
    Signature,
}

impl AuthSlot {
    /// The `mac` field value carrying the leftmost `len` bytes of `tag` (a
    /// full HMAC or CMAC): the bytes themselves, or their upper-case hex.
    /// `None` unless this is a MAC field and `tag` is long enough.
    pub fn mac_value(self, tag: &[u8]) -> Option<MacValue> {
        let AuthSlot::MacField { len, hex, .. } = self else {
            return None;
        };
        let tag = tag.get(..len)?;
        if !hex {
            return MacValue::new(tag).ok();
        }
        let mut text = [0u8; 32];
        let text = text.get_mut(..2 * len)?;
        hex_upper(tag, text);
        MacValue::new(text).ok()
    }

    /// The MAC bytes a received `mac` value holds (hex decoded for a text
    /// field). `None` unless this is a MAC field and the value has its shape.
    pub fn mac_bytes(self, value: &MacValue) -> Option<ArrayVec<u8, 32>> {
        let AuthSlot::MacField { len, hex, .. } = self else {
            return None;
        };
        let v = value.as_bytes();
        if !hex {
            return (v.len() == len).then(|| v.iter().copied().collect());
        }
        let mut out = [0u8; 16];
        let out = out.get_mut(..len)?;
        unhex(v, out)?;
        Some(out.iter().copied().collect())
    }
}

/// Upper-case hex of `bytes` into `out` (which must be twice as long).
pub(crate) fn hex_upper(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

/// Decode hex text (either case) into `out`; `None` if not hex or the wrong length.
pub(crate) fn unhex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != 2 * out.len() {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Append the padded base64 of `bytes` to `out`.
pub(crate) fn base64_encode(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        out.push(B64[(n >> 18) as usize & 63]);
        out.push(B64[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63]
        } else {
            b'='
        });
    }
}

/// Decode padded base64 (no whitespace); `None` if malformed.
pub(crate) fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.is_empty() || text.len() % 4 != 0 {
        return None;
    }
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let quads = text.len() / 4;
    for (i, q) in text.chunks_exact(4).enumerate() {
        let last = i + 1 == quads;
        let pad = match (q[2], q[3]) {
            (b'=', b'=') if last => 2,
            (_, b'=') if last => 1,
            _ => 0,
        };
        let mut n = 0u32;
        for (j, c) in q.iter().enumerate() {
            let v = if j >= 4 - pad { 0 } else { value(*c)? };
            n = n << 6 | u32::from(v);
        }
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// Whether `c` may appear in padded base64 text.
pub(crate) fn is_base64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')
}

/// The error of a codec asked for authentication bytes it cannot produce.
pub(crate) fn no_slot(at: Location, reason: &'static str) -> CodecError {
    CodecError::Invalid { at, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_rfc4648() {
        for (plain, coded) in [
            (&b""[..], &b""[..]),
            (b"f", b"Zg=="),
            (b"fo", b"Zm8="),
            (b"foo", b"Zm9v"),
            (b"foob", b"Zm9vYg=="),
            (b"fooba", b"Zm9vYmE="),
            (b"foobar", b"Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            base64_encode(plain, &mut out);
            assert_eq!(out, coded);
            if !plain.is_empty() {
                assert_eq!(base64_decode(coded).unwrap(), plain);
            }
        }
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        base64_encode(&all, &mut out);
        assert_eq!(base64_decode(&out).unwrap(), all);
    }

    #[test]
    fn base64_refuses_malformed_text() {
        for bad in [&b"Zg="[..], b"Z===", b"Zg==Zg==", b"Zm9v\n", b"Zm9-", b""] {
            assert!(base64_decode(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let mut text = [0u8; 8];
        hex_upper(&[0xde, 0xad, 0x01, 0x2f], &mut text);
        assert_eq!(&text, b"DEAD012F");
        let mut back = [0u8; 4];
        unhex(b"dead012F", &mut back).unwrap();
        assert_eq!(back, [0xde, 0xad, 0x01, 0x2f]);
        assert!(unhex(b"DEAD012G", &mut back).is_none());
        assert!(unhex(b"DEAD01", &mut back).is_none());
    }
}

/// Placement round trips through every codec.
#[cfg(test)]
mod placement_tests {
    use bytes::BytesMut;

    use super::AuthSlot;
    use crate::iso20022::Iso20022Codec;
    use crate::iso8583::{Dialect, Iso8583Codec};
    use crate::json::JsonCodec;
    use crate::model::examples::credit_transfer;
    use crate::model::*;
    use crate::MessageCodec;

    fn bytes_of(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn every_shipped_dialect_has_a_mac_field_in_f128() {
        for name in crate::iso8583::builtin_names() {
            let slot = Iso8583Codec::builtin(name).unwrap().mac_slot();
            assert!(
                matches!(
                    slot,
                    AuthSlot::MacField {
                        field: 128,
                        len: 8,
                        ..
                    }
                ),
                "{name}: {slot:?}"
            );
        }
        assert_eq!(
            Iso8583Codec::builtin("canonical").unwrap().mac_slot(),
            AuthSlot::MacField {
                field: 128,
                len: 8,
                hex: true
            }
        );
    }

    #[test]
    fn iso8583_mac_covers_the_message_up_to_the_last_field() {
        let tag: Vec<u8> = (1..=32).collect();
        for name in ["canonical", "iso87-bcd-binary", "iso93-ebcdic"] {
            let codec = Iso8583Codec::builtin(name).unwrap();
            let slot = codec.auth_slot();
            let mut txn = credit_transfer();
            let input = bytes_of(|o| codec.encode_auth_input(&txn, o).unwrap());
            txn.mac = slot.mac_value(&tag);
            let wire = bytes_of(|o| codec.encode(&txn, o).unwrap());
            assert!(wire.starts_with(&input), "{name}");
            assert_eq!(
                wire.len() - input.len(),
                8 * if name == "canonical" { 2 } else { 1 }
            );
            let back = codec.decode_authenticated(&wire).unwrap();
            assert_eq!(back.auth_input.as_ref().unwrap().as_bytes(), &input[..]);
            assert_eq!(
                slot.mac_bytes(back.mac.as_ref().unwrap())
                    .unwrap()
                    .as_slice(),
                &tag[..8]
            );
            // Plain decode is unchanged: no covered bytes kept.
            assert!(codec.decode(&wire).unwrap().auth_input.is_none());
            // No MAC: nothing to cover.
            let mut plain = credit_transfer();
            plain.mac = None;
            let wire = bytes_of(|o| codec.encode(&plain, o).unwrap());
            assert!(codec
                .decode_authenticated(&wire)
                .unwrap()
                .auth_input
                .is_none());
        }
        let canonical = Iso8583Codec::builtin("canonical").unwrap();
        let mut txn = credit_transfer();
        txn.mac = canonical.auth_slot().mac_value(&[0xab; 8]);
        assert_eq!(txn.mac.as_ref().unwrap().as_bytes(), b"ABABABABABABABAB");
    }

    #[test]
    fn iso8583_mac_must_be_the_last_field() {
        let dialect = Dialect::from_toml(
            r#"
name = "mac64"
mti = "ascii"
bitmap = "hex"
[fields]
11 = { kind = "fixed", len = 6, class = "n" }
64 = { kind = "fixed", len = 8, class = "b" }
100 = { kind = "llvar", max = 11, class = "n" }
[map]
stan = 11
mac = 64
receiving_bank = 100
"#,
        )
        .unwrap();
        let codec = Iso8583Codec::new(dialect);
        let mut txn = Transaction::new(Mti::CREDIT_TRANSFER);
        txn.stan = Some(Stan::new(1).unwrap());
        assert!(codec.encode_auth_input(&txn, &mut BytesMut::new()).is_ok());
        txn.receiving_bank = Some(BankCode::parse(b"004").unwrap());
        let e = codec
            .encode_auth_input(&txn, &mut BytesMut::new())
            .unwrap_err();
        assert_eq!(e.location(), crate::Location::Field(64));
        // Received with a field after the MAC: it cannot be authenticated.
        txn.mac = MacValue::new(&[7; 8]).ok();
        let wire = bytes_of(|o| codec.encode(&txn, o).unwrap());
        let back = codec.decode_authenticated(&wire).unwrap();
        assert!(back.mac.is_some() && back.auth_input.is_none());
    }

    fn iso20022_transfer() -> Transaction {
        let mut t = credit_transfer();
        t.sending_bank = Some(BankCode::parse(b"950").unwrap());
        t.receiving_bank = Some(BankCode::parse(b"012").unwrap());
        t.settlement_date = Some(SettlementDate::parse(b"20261123").unwrap());
        t.message_id = Some(MessageId::parse(b"FPS012SIG1").unwrap());
        t.end_to_end_id = Some(EndToEndId::parse(b"FPS012SIG1").unwrap());
        t
    }

    /// Sign with a stand-in signature, decode, check what is covered.
    fn signed_round_trip(codec: &dyn MessageCodec, txn: Transaction) -> (Vec<u8>, Vec<u8>) {
        assert_eq!(codec.auth_slot(), AuthSlot::Signature);
        let unsigned = bytes_of(|o| codec.encode(&txn, o).unwrap());
        let input = bytes_of(|o| codec.encode_auth_input(&txn, o).unwrap());
        let mut signed = txn.clone();
        signed.signature = Some(SignatureValue::new(&[0x5a; 64]).unwrap());
        let wire = bytes_of(|o| codec.encode(&signed, o).unwrap());
        let back = codec.decode_authenticated(&wire).unwrap();
        assert_eq!(back.signature, signed.signature);
        assert_eq!(back.auth_input.as_ref().unwrap().as_bytes(), &input[..]);
        let plain = codec.decode(&wire).unwrap();
        assert_eq!(plain.signature, signed.signature);
        assert!(plain.auth_input.is_none());
        let mut again = back.clone();
        again.auth_input = None;
        assert_eq!(again, plain);
        // The unsigned message carries no signature and nothing to cover.
        let unsigned_back = codec.decode_authenticated(&unsigned).unwrap();
        assert!(unsigned_back.signature.is_none() && unsigned_back.auth_input.is_none());
        (wire, input)
    }

    #[test]
    fn iso20022_signature_covers_the_document_element() {
        let codec = Iso20022Codec::default();
        let (wire, input) = signed_round_trip(&codec, iso20022_transfer());
        let text = String::from_utf8(wire.clone()).unwrap();
        assert!(text.contains("<Envelope xmlns=\"urn:fps-switch:xsd:envelope\"><Document"));
        assert!(text.contains("</Document><Sgntr>WlpaWlpa"));
        assert!(text.ends_with("</Sgntr></Envelope>"));
        assert!(input.starts_with(b"<Document") && input.ends_with(b"</Document>"));
        // A second signature, or a broken one, is refused.
        let twice = text.replace("</Envelope>", "<Sgntr>AAAA</Sgntr></Envelope>");
        assert!(codec.decode(twice.as_bytes()).is_err());
        let broken = text.replace("<Sgntr>", "<Sgntr>*");
        assert!(codec.decode(broken.as_bytes()).is_err());
        // Pretty-printed by a peer: the covered bytes are still the Document's.
        let spaced = text
            .replace("<Document", "\n  <Document")
            .replace("<Sgntr>", "\n  <Sgntr>");
        let back = codec.decode_authenticated(spaced.as_bytes()).unwrap();
        assert_eq!(back.auth_input.unwrap().as_bytes(), &input[..]);
    }

    #[test]
    fn json_signature_is_the_last_member() {
        let codec = JsonCodec::new();
        let mut txn = credit_transfer();
        txn.message_id = Some(MessageId::parse(b"REQ-1").unwrap());
        let (wire, input) = signed_round_trip(&codec, txn);
        let text = String::from_utf8(wire).unwrap();
        assert!(text.ends_with("\"}"));
        assert!(text.contains(",\"signature\":\"WlpaWlpa"));
        assert_eq!(
            &text.as_bytes()[..input.len() - 1],
            &input[..input.len() - 1]
        );
        // Trailing whitespace is fine; elsewhere `signature` is unknown.
        let spaced = format!("{text} \n");
        let back = codec.decode_authenticated(spaced.as_bytes()).unwrap();
        assert!(back.signature.is_some());
        assert_eq!(
            back.auth_input.unwrap().as_bytes().trim_ascii_end(),
            &input[..]
        );
        let first = text.replacen("{", "{\"signature\":\"WlpaWlpa\",", 1);
        let first = &first[..first.rfind(",\"signature\"").unwrap()];
        assert!(codec.decode(format!("{first}}}").as_bytes()).is_err());
        let bad = text.replace(",\"signature\":\"", ",\"signature\":\"*");
        assert!(codec.decode(bad.as_bytes()).is_err());
    }
}
