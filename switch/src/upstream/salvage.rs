//! Answering a canonical message that does not decode: walk the canonical
//! layout without content checks, keep the matching fields that parse, and
//! answer `30` so the gateway can match the decline to its request.

use fps_codecs::iso8583::{FieldLength, Iso8583Codec};
use fps_codecs::model::{
    InstitutionId, Mti, ProcessingCode, ResponseCode, Rrn, Stan, TerminalId, Transaction,
    TransmissionDateTime,
};

/// The `30` answer to a canonical request that failed to decode, or `None`
/// when not even its MTI and F11 can be read (then the stream cannot be
/// trusted and the connection is closed). Responses are never answered.
pub fn format_error_answer(codec: &Iso8583Codec, msg: &[u8]) -> Option<Transaction> {
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
        // Stop at the first field whose extent cannot be known.
        let Some(spec) = codec.dialect().field(n) else {
            break;
        };
        let len = match spec.length {
            FieldLength::Fixed(len) => usize::from(len),
            FieldLength::Var { digits, .. } => {
                let d = usize::from(digits);
                let Some(len) = msg.get(pos..pos + d).and_then(ascii_usize) else {
                    break;
                };
                pos += d;
                len
            }
        };
        let Some(value) = msg.get(pos..pos + len) else {
            break;
        };
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
    req.stan?;
    Some(req.response(ResponseCode::FORMAT_ERROR))
}

fn hex_u64(text: &[u8]) -> Option<u64> {
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
    use bytes::BytesMut;
    use fps_codecs::iso8583::IsoMessage;

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
}
