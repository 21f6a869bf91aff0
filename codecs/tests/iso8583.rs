//! ISO 8583 engine: shipped dialects, known wire forms, round trips of every
//! dialect (property-based) and known-bad inputs.

use bytes::BytesMut;
use fps_codecs::iso8583::{self, Iso8583Codec, IsoMessage};
use fps_codecs::model::*;
use fps_codecs::{CodecError, Location};
use proptest::prelude::*;

fn codec(name: &str) -> Iso8583Codec {
    Iso8583Codec::builtin(name).unwrap()
}

use fps_codecs::model::examples::credit_transfer;

#[test]
fn shipped_dialects_load() {
    for name in iso8583::builtin_names() {
        iso8583::builtin(name)
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn canonical_wire_form_is_the_pyiso8583_default_ascii_layout() {
    let c = codec("canonical");
    let mut out = BytesMut::new();
    c.encode(&credit_transfer(), &mut out).unwrap();
    let expected = concat!(
        "0200",
        // Bitmaps (as pyiso8583 writes them): 1 3 4 7 11 12 13 32 37 41 42 49 / 100 102 103 123.
        "B238000108C08000",
        "0000000016000020",
        "400000",
        "000000012345",
        "1123093015",
        "000123",
        "173015",
        "1123",
        "06888001",
        "000000000123",
        "TERM0001",
        "MERCHANT0000001",
        "344",
        "03004",
        "12123456789001",
        "12987654321001",
        "020gw-2026-11-23-000123",
    );
    assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
    assert_eq!(c.decode(&out).unwrap(), credit_transfer());
}

#[test]
fn every_dialect_round_trips_a_credit_transfer_and_its_response() {
    for name in iso8583::builtin_names() {
        let c = codec(name);
        let mut req = credit_transfer();
        if name != "canonical" && name != "iso87-ascii-binary-bitmap" && name != "iso93-ebcdic" {
            req.idempotency_key = None; // this bank does not take it
        }
        if name == "iso93-ebcdic" {
            req.local_time = None;
            req.local_date = None;
        }
        let mut resp = req.response(ResponseCode::INSUFFICIENT_FUNDS);
        resp.auth_id = Some(AuthId::parse(b"A1B2C3").unwrap());
        for t in [req, resp] {
            let mut out = BytesMut::new();
            c.encode(&t, &mut out)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                c.decode(&out).unwrap_or_else(|e| panic!("{name}: {e}")),
                t,
                "{name}"
            );
        }
    }
}

#[test]
fn iso93_renumbers_mtis_and_translates_action_codes() {
    let c = codec("iso93-ebcdic");
    let mut resp = credit_transfer().response(ResponseCode::INSUFFICIENT_FUNDS);
    resp.idempotency_key = None;
    resp.local_time = None;
    resp.local_date = None;
    let mut out = BytesMut::new();
    c.encode(&resp, &mut out).unwrap();
    assert_eq!(&out[..4], &[0xf1, 0xf2, 0xf1, 0xf0], "MTI 1210 in EBCDIC");
    let m = c.decode_message(&out).unwrap();
    assert_eq!(&m.mti, b"1210");
    assert_eq!(m.fields[&39], b"116");
    // An action code the table does not list decodes as do-not-honour.
    let mut m2 = m.clone();
    m2.fields.insert(39, b"999".to_vec());
    let mut out2 = BytesMut::new();
    c.encode_message(&m2, &mut out2).unwrap();
    assert_eq!(
        c.decode(&out2).unwrap().response_code,
        Some(ResponseCode::DO_NOT_HONOUR)
    );
    // Network management: 0800 echo is 1804 with function code 831.
    let mut echo = Transaction::new(Mti::NETWORK);
    echo.transmitted_at = Some(TransmissionDateTime::parse(b"1123093015").unwrap());
    echo.stan = Some(Stan::new(7).unwrap());
    echo.network_code = Some(NetworkCode::Echo);
    out.clear();
    c.encode(&echo, &mut out).unwrap();
    let m = c.decode_message(&out).unwrap();
    assert_eq!((&m.mti, &m.fields[&24][..]), (b"1804", &b"831"[..]));
    assert_eq!(c.decode(&out).unwrap(), echo);
}

#[test]
fn bcd_dialect_packs_numerics_and_carries_a_tpdu() {
    let c = codec("iso87-bcd-binary");
    let mut t = credit_transfer();
    t.idempotency_key = None;
    let mut out = BytesMut::new();
    c.encode(&t, &mut out).unwrap();
    assert_eq!(&out[..5], &[0x60, 0x00, 0x01, 0x00, 0x00], "TPDU");
    assert_eq!(&out[5..7], &[0x02, 0x00], "MTI in BCD");
    // A message this dialect does not lay out (the idempotency key field) is refused.
    let mut m = c.decode_message(&out).unwrap();
    m.fields.insert(123, b"x".to_vec());
    assert!(matches!(
        c.encode_message(&m, &mut BytesMut::new()),
        Err(CodecError::UndefinedField {
            at: Location::Field(123)
        })
    ));
}

fn decode_err(c: &Iso8583Codec, input: &[u8]) -> CodecError {
    c.decode(input).expect_err("must be refused")
}

#[test]
fn known_bad_inputs_are_refused_with_the_field_named() {
    let c = codec("canonical");
    let mut good = BytesMut::new();
    c.encode(&credit_transfer(), &mut good).unwrap();
    // Inputs shorter than 4 bytes, and every truncation of a good message.
    for n in 0..good.len() {
        let e = decode_err(&c, &good[..n]);
        assert!(matches!(e, CodecError::Truncated { .. }), "cut at {n}: {e}");
    }
    // Trailing bytes.
    let mut long = good.clone();
    long.extend_from_slice(b"X");
    assert!(matches!(
        decode_err(&c, &long),
        CodecError::Invalid {
            at: Location::Message,
            ..
        }
    ));
    // Non-digit MTI, non-hex bitmap.
    assert_eq!(
        decode_err(&c, b"02a0B238000100C00000").location(),
        Location::Mti
    );
    assert_eq!(
        decode_err(&c, b"0200G238000100C00000").location(),
        Location::Bitmap
    );
    // A letter in the amount.
    let s = std::str::from_utf8(&good).unwrap();
    let bad_amount = s.replacen("000000012345", "00000001234X", 1);
    assert_eq!(
        decode_err(&c, bad_amount.as_bytes()),
        CodecError::BadContent {
            at: Location::Field(4),
            class: "n"
        }
    );
    // Non-digit and negative LLVAR lengths, and a length past the buffer.
    for (from, to) in [
        ("06888001", "0x888001"),
        ("06888001", "-6888001"),
        ("020gw-", "999gw-"),
    ] {
        let bad = s.replacen(from, to, 1);
        let e = decode_err(&c, bad.as_bytes());
        assert!(
            matches!(e.location(), Location::Field(32 | 123)),
            "{to}: {e}"
        );
    }
    // LLVAR over its maximum (F32 max 11).
    let bad = s.replacen("06888001", "12888001888001", 1);
    assert_eq!(
        decode_err(&c, bad.as_bytes()),
        CodecError::TooLong {
            at: Location::Field(32),
            len: 12,
            max: 11
        }
    );
    // A field the canonical type refuses: month 13.
    let bad = s.replacen("1123093015", "1323093015", 1);
    assert!(matches!(
        decode_err(&c, bad.as_bytes()),
        CodecError::Value {
            at: Location::Field(7),
            ..
        }
    ));
    // Secondary bitmap announced but empty.
    assert_eq!(
        decode_err(&c, b"0200800000000000000000000000000000000").location(),
        Location::Bitmap
    );
}

#[test]
fn invalid_bcd_nibbles_are_refused() {
    let c = codec("iso87-bcd-binary");
    let mut t = credit_transfer();
    t.idempotency_key = None;
    let mut out = BytesMut::new();
    c.encode(&t, &mut out).unwrap();
    // Header 5, MTI 2, bitmap 16, F3 3 bytes, then F4: corrupt a nibble of the amount.
    let mut bad = out.to_vec();
    bad[5 + 2 + 16 + 3] = 0x0a;
    assert_eq!(
        decode_err(&c, &bad),
        CodecError::BadBcd {
            at: Location::Field(4)
        }
    );
    // A BCD MTI nibble above 9.
    let mut bad = out.to_vec();
    bad[5] = 0x0f;
    assert_eq!(decode_err(&c, &bad).location(), Location::Mti);
}

#[test]
fn bitmap_bits_the_dialect_does_not_define_are_refused() {
    let c = codec("iso87-bcd-binary");
    // MTI 0200, primary bitmap with only field 5 (not laid out by this dialect).
    let mut msg = vec![0x60, 0, 1, 0, 0, 0x02, 0x00];
    msg.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 0, 0]);
    msg.extend_from_slice(&[0; 6]);
    assert_eq!(
        decode_err(&c, &msg),
        CodecError::UndefinedField {
            at: Location::Field(5)
        }
    );
    // Field 22 is laid out but not mapped: this dialect rejects unmapped fields.
    let mut m = IsoMessage {
        mti: *b"0200",
        ..Default::default()
    };
    m.fields.insert(22, b"051".to_vec());
    let mut out = BytesMut::new();
    c.encode_message(&m, &mut out).unwrap();
    assert_eq!(
        decode_err(&c, &out),
        CodecError::UndefinedField {
            at: Location::Field(22)
        }
    );
    // The canonical dialect checks and ignores laid-out extra fields.
    let canonical = codec("canonical");
    let mut m = IsoMessage {
        mti: *b"0200",
        ..Default::default()
    };
    m.fields.insert(22, b"051".to_vec());
    m.fields.insert(11, b"000001".to_vec());
    out.clear();
    canonical.encode_message(&m, &mut out).unwrap();
    assert_eq!(
        canonical.decode(&out).unwrap().stan,
        Some(Stan::new(1).unwrap())
    );
}

fn arb_text(class: &'static str, min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{class}{{{min},{max}}}")).unwrap()
}

prop_compose! {
    fn arb_transaction()(
        mti in prop::sample::select(vec![
            Mti::CREDIT_TRANSFER, Mti::CREDIT_TRANSFER_RESPONSE, Mti::REVERSAL, Mti::REVERSAL.repeat(),
            Mti::REVERSAL_RESPONSE, Mti::REVERSAL_ADVICE, Mti::NETWORK, Mti::NETWORK_RESPONSE,
        ]),
        pan in prop::option::of(arb_text("[0-9]", 12, 19)),
        amount in prop::option::of(0u64..=AmountMinor::MAX),
        stan in prop::option::of(0u32..=Stan::MAX),
        acquirer in prop::option::of(arb_text("[0-9]", 1, 11)),
        rrn in prop::option::of(arb_text("[A-Z0-9]", 12, 12)),
        code in prop::option::of(prop::sample::select(vec!["00", "05", "14", "51", "68", "91", "96"])),
        terminal in prop::option::of(arb_text("[A-Z0-9 ]", 8, 8)),
        bank in prop::option::of(arb_text("[0-9]", 3, 3)),
        debtor in prop::option::of(arb_text("[A-Z0-9]", 1, 28)),
        creditor in prop::option::of(arb_text("[0-9]", 1, 28)),
        proxy in prop::option::of(prop_oneof![
            arb_text("[0-9]", 8, 8).prop_map(|d| format!("MOBN:+852-{d}")),
            arb_text("[a-z0-9.]", 1, 20).prop_map(|l| format!("EMAL:{l}@example.com")),
            arb_text("[0-9]", 7, 9).prop_map(|d| format!("FPID:{d}")),
        ]),
        network in prop::option::of(prop::sample::select(vec![NetworkCode::SignOn, NetworkCode::SignOff, NetworkCode::Echo])),
        with_original in any::<bool>(),
    ) -> Transaction {
        let mut t = Transaction::new(mti);
        t.pan = pan.map(|p| Pan::parse(p.as_bytes()).unwrap());
        t.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
        t.amount = amount.map(|a| AmountMinor::new(a).unwrap());
        t.transmitted_at = Some(TransmissionDateTime::parse(b"0229235959").unwrap());
        t.stan = stan.map(|s| Stan::new(s).unwrap());
        t.acquirer = acquirer.map(|a| InstitutionId::parse(a.as_bytes()).unwrap());
        t.rrn = rrn.map(|r| Rrn::parse(r.as_bytes()).unwrap());
        t.response_code = code.map(|c| ResponseCode::parse(c.as_bytes()).unwrap());
        t.terminal_id = terminal.map(|v| TerminalId::parse(v.as_bytes()).unwrap());
        t.currency = Some(Currency::CNY);
        t.receiving_bank = bank.map(|b| BankCode::parse(b.as_bytes()).unwrap());
        t.debtor_account = debtor.map(|a| Account::parse(a.as_bytes()).unwrap());
        t.creditor_account = creditor.map(|a| Account::parse(a.as_bytes()).unwrap());
        t.proxy = proxy.map(|p| ProxyId::parse(p.as_bytes()).unwrap());
        t.network_code = network;
        if with_original {
            let mut o = credit_transfer();
            o.stan = t.stan.or(o.stan);
            t.original = o.original_data();
        }
        t
    }
}

proptest! {
    #[test]
    fn round_trip_every_dialect(t in arb_transaction()) {
        for name in iso8583::builtin_names() {
            let c = codec(name);
            let mut out = BytesMut::new();
            c.encode(&t, &mut out).unwrap();
            let back = c.decode(&out).unwrap();
            // Fields a dialect does not map are not sent: compare what it maps.
            let mut expected = t.clone();
            if c.dialect().field_of(iso8583::CanonicalField::Proxy).is_none() { expected.proxy = None; }
            prop_assert_eq!(back, expected, "dialect {}", name);
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        for name in iso8583::builtin_names() {
            let c = codec(name);
            let _ = c.decode(&bytes);
            let _ = c.decode_message(&bytes);
        }
    }

    #[test]
    fn decoding_mutated_messages_never_panics(t in arb_transaction(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        for name in iso8583::builtin_names() {
            let c = codec(name);
            let mut out = BytesMut::new();
            c.encode(&t, &mut out).unwrap();
            let i = pos.index(out.len());
            out[i] = byte;
            let _ = c.decode(&out);
            let _ = c.decode(&out[..i]);
        }
    }
}
