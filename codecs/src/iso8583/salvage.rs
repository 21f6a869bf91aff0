//! Answering a canonical message that does not decode: walk the canonical
//! layout without content checks and keep the matching fields that parse,
//! so that the sender can be answered `30` matched to its request (the
//! switch's upstream listener and inbound bank links, and the bank
//! simulator, all do).
//!
//! Only a message whose *layout* is sound is salvaged: every field the
//! bitmaps announce is there with a readable length within its maximum, and
//! the last one ends exactly where the message ends. Then only values are
//! wrong, and the matching fields were read where the client wrote them. A
//! broken layout (a bitmap or length that cannot be right, a field cut
//! short, bytes left over) means every offset after the fault may be wrong,
//! and an answer could echo a STAN the client never sent, so the caller
//! closes the connection instead.

use super::spec::FieldLength;
use super::Iso8583Codec;
use crate::model::{
    InstitutionId, Mti, ProcessingCode, Rrn, Stan, TerminalId, Transaction, TransmissionDateTime,
};

/// The dialect whose layout [`Iso8583Codec::salvage_request`] walks.
const CANONICAL: &str = "canonical";

impl Iso8583Codec {
    /// The skeleton of a request in the canonical dialect that failed to
    /// decode: its MTI and the matching fields that parse (F3, F7, F11,
    /// F32, F37, F41), enough to answer it with a format error matched to
    /// it. `None` when its layout is broken, its MTI or F11 cannot be read,
    /// it is a response (never answered), or the codec is not the canonical
    /// dialect: then the stream cannot be trusted.
    pub fn salvage_request(&self, msg: &[u8]) -> Option<Transaction> {
        if self.dialect.name != CANONICAL {
            return None;
        }
        let mti = Mti::parse(msg.get(..4)?).ok()?;
        if mti.is_response() {
            return None;
        }
        let mut req = Transaction::new(mti);
        let mut pos = 4;
        let mut bitmap = hex_u64(msg.get(pos..pos + 16)?)? as u128;
        bitmap <<= 64;
        pos += 16;
        if bitmap & (1u128 << 127) != 0 {
            bitmap |= u128::from(hex_u64(msg.get(pos..pos + 16)?)?);
            pos += 16;
        }
        for n in 2u8..=128 {
            if bitmap & (1u128 << (128 - u32::from(n))) == 0 {
                continue;
            }
            let spec = self.dialect.field(n)?;
            let len = match spec.length {
                FieldLength::Fixed(len) => usize::from(len),
                FieldLength::Var { digits, max } => {
                    let d = usize::from(digits);
                    let len = msg.get(pos..pos + d).and_then(ascii_usize)?;
                    if len > usize::from(max) {
                        return None;
                    }
                    pos += d;
                    len
                }
            };
            let value = msg.get(pos..pos + len)?;
            pos += len;
            match n {
                3 => req.processing_code = ProcessingCode::parse(value).ok(),
                7 => req.transmitted_at = TransmissionDateTime::parse(value).ok(),
                11 => req.stan = Stan::parse(value).ok(),
                32 => req.acquirer = InstitutionId::parse(value).ok(),
                37 => req.rrn = Rrn::parse(value).ok(),
                41 => req.terminal_id = TerminalId::parse(value).ok(),
                _ => {}
            }
        }
        if pos != msg.len() {
            return None;
        }
        req.stan?;
        Some(req)
    }
}

/// Exactly 16 hex digits (`from_str_radix` alone would take a `+` sign).
fn hex_u64(text: &[u8]) -> Option<u64> {
    if text.len() != 16 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

fn ascii_usize(text: &[u8]) -> Option<usize> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::IsoMessage;
    use crate::model::ResponseCode;
    use bytes::BytesMut;

    /// The `30` answer to `msg`, as the switch and the simulator make it.
    fn format_error_answer(codec: &Iso8583Codec, msg: &[u8]) -> Option<Transaction> {
        codec
            .salvage_request(msg)
            .map(|req| req.response(ResponseCode::FORMAT_ERROR))
    }

    fn canonical() -> Iso8583Codec {
        Iso8583Codec::builtin("canonical").unwrap()
    }

    #[test]
    fn bad_amount_is_answered_with_matching_fields() {
        let codec = canonical();
        let mut m = IsoMessage {
            mti: *b"0200",
            ..Default::default()
        };
        m.fields.insert(4, b"000000010000".to_vec());
        m.fields.insert(7, b"0102030405".to_vec());
        m.fields.insert(11, b"123456".to_vec());
        m.fields.insert(37, b"RRN000000001".to_vec());
        m.fields.insert(41, b"TERM0001".to_vec());
        m.fields.insert(100, b"004".to_vec());
        let mut out = BytesMut::new();
        codec.encode_message(&m, &mut out).unwrap();
        // Corrupt F4 (a letter in a numeric field) after encoding.
        let at = 4 + 32 + 2;
        out[at] = b'X';
        assert!(codec.decode(&out).is_err());
        let a = format_error_answer(&codec, &out).unwrap();
        assert_eq!(a.mti, Mti::CREDIT_TRANSFER_RESPONSE);
        assert_eq!(a.response_code, Some(ResponseCode::FORMAT_ERROR));
        assert_eq!(a.stan.unwrap().value(), 123456);
        assert_eq!(a.rrn.unwrap().as_str(), "RRN000000001");
        assert_eq!(a.terminal_id.unwrap().as_str(), "TERM0001");
        assert_eq!(a.transmitted_at.unwrap().as_str(), "0102030405");
    }

    #[test]
    fn a_var_length_over_its_maximum_stops_the_walk() {
        let codec = canonical();
        let mut m = IsoMessage {
            mti: *b"0200",
            ..Default::default()
        };
        m.fields.insert(2, b"4761739001010010".to_vec());
        m.fields.insert(3, b"400000".to_vec());
        m.fields.insert(11, b"123456".to_vec());
        m.fields.insert(37, b"654321ABCDEF".to_vec());
        let mut out = BytesMut::new();
        codec.encode_message(&m, &mut out).unwrap();
        // F2 is LLVAR max 19: claiming 22 swallows F3, and walking on
        // would read F11 from the RRN and echo STAN 654321.
        // Primary bitmap only (no field over 64).
        let at = 4 + 16;
        assert_eq!(&out[at..at + 2], b"16");
        out[at..at + 2].copy_from_slice(b"22");
        assert!(format_error_answer(&codec, &out).is_none());
    }

    #[test]
    fn a_broken_layout_gets_no_answer() {
        let codec = canonical();
        let mut m = IsoMessage {
            mti: *b"0200",
            ..Default::default()
        };
        m.fields.insert(3, b"400000".to_vec());
        m.fields.insert(4, b"000000010000".to_vec());
        m.fields.insert(7, b"0102030405".to_vec());
        m.fields.insert(11, b"123456".to_vec());
        m.fields.insert(32, b"1234".to_vec());
        m.fields.insert(37, b"RRN000000001".to_vec());
        let mut sound = BytesMut::new();
        codec.encode_message(&m, &mut sound).unwrap();
        let f4 = 4 + 16 + 6;
        let f32 = f4 + 12 + 10 + 6;
        assert_eq!(&sound[f32..f32 + 2], b"04");
        let broken: [(&str, Vec<u8>); 5] = [
            // F4 one digit short: every later field shifts.
            (
                "short fixed field",
                [&sound[..f4 + 11], &sound[f4 + 12..]].concat(),
            ),
            ("LLVAR length not digits", {
                let mut b = sound.to_vec();
                b[f32 + 1] = b'X';
                b
            }),
            (
                "cut inside the last field",
                sound[..sound.len() - 1].to_vec(),
            ),
            (
                "bytes after the last field",
                [&sound[..], b"TERM0001"].concat(),
            ),
            ("primary bitmap of 4 characters then data", {
                let mut b = b"02007230".to_vec();
                b.extend_from_slice(&sound[20..]);
                b
            }),
        ];
        for (what, msg) in broken {
            assert!(codec.decode(&msg).is_err(), "{what}");
            assert!(format_error_answer(&codec, &msg).is_none(), "{what}");
        }
    }

    #[test]
    fn a_signed_bitmap_is_not_hex() {
        let codec = canonical();
        // Read with its sign, "+020..." would announce F11 and echo a STAN.
        let msg = b"0200+020000000000000123456";
        assert!(codec.decode(msg).is_err());
        assert!(format_error_answer(&codec, msg).is_none());
    }

    #[test]
    fn garbage_gets_no_answer() {
        let codec = canonical();
        for junk in [
            &b""[..],
            b"\x00\x01\x02",
            b"0200ZZZZ",
            b"0210000000000000000000",
        ] {
            assert!(format_error_answer(&codec, junk).is_none());
        }
    }

    #[test]
    fn only_the_canonical_dialect_is_walked() {
        // A BCD dialect's bytes are not the canonical layout: even a
        // message that happens to walk as canonical text is not salvaged.
        let canonical = canonical();
        let msg = b"02000020000000000000123456";
        assert!(canonical.salvage_request(msg).is_some());
        for name in super::super::builtin_names().filter(|n| *n != CANONICAL) {
            let other = Iso8583Codec::builtin(name).unwrap();
            assert!(other.salvage_request(msg).is_none(), "{name}");
        }
    }
}
