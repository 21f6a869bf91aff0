//! The JSON bank dialect: documented examples, round trips of every message
//! type, malformed documents, and robustness against arbitrary input.

use bytes::BytesMut;
use fps_codecs::json::{
    JsonCodec, MAX_MESSAGE_BYTES, PENDING_RESPONSE_CODE, RETURN_PROCESSING_CODE,
};
use fps_codecs::model::{
    Account, AmountMinor, AuthId, BankCode, Currency, EndToEndId, IdempotencyKey, InstitutionId,
    MerchantId, MessageId, Mti, NetworkCode, OriginalData, PartyName, ProcessingCode, ProxyId,
    ProxyKind, ReasonCode, ResponseCode, Rrn, SettlementDate, Stan, TerminalId, Transaction,
    TransmissionDateTime, Uetr,
};
use fps_codecs::{CodecError, Location, MessageCodec};
use proptest::prelude::*;
use serde_json::Value;

/// The documented examples (the same files are included in the module docs).
const EXAMPLES: [(&str, &str); 12] = [
    (
        "credit_transfer",
        include_str!("data/json/credit_transfer.json"),
    ),
    (
        "credit_transfer_result",
        include_str!("data/json/credit_transfer_result.json"),
    ),
    ("cancel", include_str!("data/json/cancel.json")),
    (
        "cancel_result",
        include_str!("data/json/cancel_result.json"),
    ),
    (
        "reversal_advice",
        include_str!("data/json/reversal_advice.json"),
    ),
    (
        "reversal_advice_result",
        include_str!("data/json/reversal_advice_result.json"),
    ),
    (
        "status_inquiry",
        include_str!("data/json/status_inquiry.json"),
    ),
    (
        "status_inquiry_result",
        include_str!("data/json/status_inquiry_result.json"),
    ),
    ("network", include_str!("data/json/network.json")),
    (
        "network_result",
        include_str!("data/json/network_result.json"),
    ),
    ("return", include_str!("data/json/return.json")),
    (
        "return_result",
        include_str!("data/json/return_result.json"),
    ),
];

fn decode(doc: &[u8]) -> Result<Transaction, CodecError> {
    JsonCodec.decode(doc)
}

fn encode(t: &Transaction) -> Result<Vec<u8>, CodecError> {
    let mut out = BytesMut::new();
    JsonCodec.encode(t, &mut out)?;
    Ok(out.to_vec())
}

fn at(path: &'static str) -> Location {
    Location::Element(path)
}

// ---------------------------------------------------------------------------
// Examples

fn s<T: std::str::FromStr>(v: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    v.parse().unwrap()
}

fn return_code() -> ProcessingCode {
    ProcessingCode::parse(RETURN_PROCESSING_CODE).unwrap()
}

fn hkd(minor: u64, t: &mut Transaction) {
    t.amount = Some(AmountMinor::new(minor).unwrap());
    t.currency = Some(Currency::HKD);
}

fn original_of_123(forwarder: &[u8; 11]) -> OriginalData {
    OriginalData {
        mti: Mti::CREDIT_TRANSFER,
        stan: Stan::new(123).unwrap(),
        transmitted_at: TransmissionDateTime::parse(b"1123093000").unwrap(),
        acquirer: *b"00000012345",
        forwarder: *forwarder,
    }
}

/// What each example must decode to, written out by hand.
fn expected(name: &str) -> Transaction {
    let code = |c: &[u8]| Some(ResponseCode::parse(c).unwrap());
    let mut t;
    match name {
        "credit_transfer" => {
            t = Transaction::new(Mti::CREDIT_TRANSFER);
            t.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
            t.message_id = Some(s("FPSW20231123000123"));
            t.end_to_end_id = Some(s("E2E-7f3a9c21"));
            t.uetr = Some(Uetr::parse(b"eb6305c9-1f7f-49de-aed0-16487c27b42d").unwrap());
            hkd(12345, &mut t);
            t.debtor_account = Some(s("012345678901"));
            t.debtor_name = Some(PartyName::parse("Chan Tai Man").unwrap());
            t.sending_bank = Some(BankCode::parse(b"003").unwrap());
            t.proxy = Some(ProxyId::parse(b"MOBN:+852-91234567").unwrap());
            t.creditor_name = Some(PartyName::parse("Lee Siu Ming").unwrap());
            t.receiving_bank = Some(BankCode::parse(b"004").unwrap());
            t.settlement_date = Some(SettlementDate::parse(b"20231123").unwrap());
            t.transmitted_at = Some(TransmissionDateTime::parse(b"1123093000").unwrap());
            t.stan = Some(Stan::new(123).unwrap());
            t.rrn = Some(s("332709000123"));
            t.acquirer = Some(s("12345"));
            t.terminal_id = Some(s("TERM0001"));
            t.merchant_id = Some(s("MERCHANT0000001"));
            t.idempotency_key = Some(s("shop-42/order-2023-11-23-0007"));
        }
        "credit_transfer_result" => {
            t = Transaction::new(Mti::CREDIT_TRANSFER_RESPONSE);
            t.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
            t.message_id = Some(s("FPSW20231123000123"));
            t.response_code = Some(ResponseCode::INSUFFICIENT_FUNDS);
            t.reason = Some(s("AM04"));
            t.end_to_end_id = Some(s("E2E-7f3a9c21"));
            t.transaction_id = Some(s("BNK4-20231123-88812"));
            hkd(12345, &mut t);
            t.receiving_bank = Some(BankCode::parse(b"004").unwrap());
            t.transmitted_at = Some(TransmissionDateTime::parse(b"1123093000").unwrap());
            t.stan = Some(Stan::new(123).unwrap());
            t.rrn = Some(s("332709000123"));
        }
        "cancel" => {
            t = Transaction::new(Mti::REVERSAL);
            t.message_id = Some(s("FPSW20231123000124"));
            t.reason = Some(s("TECH"));
            t.original_message_id = Some(s("FPSW20231123000123"));
            t.original = Some(original_of_123(&[b'0'; 11]));
            t.end_to_end_id = Some(s("E2E-7f3a9c21"));
            hkd(12345, &mut t);
            t.transmitted_at = Some(TransmissionDateTime::parse(b"1123093100").unwrap());
            t.stan = Some(Stan::new(124).unwrap());
            t.rrn = Some(s("332709000123"));
            t.acquirer = Some(s("12345"));
        }
        "cancel_result" => {
            t = Transaction::new(Mti::REVERSAL_RESPONSE);
            t.message_id = Some(s("FPSW20231123000124"));
            t.response_code = Some(ResponseCode::APPROVED);
            t.original_message_id = Some(s("FPSW20231123000123"));
            t.transmitted_at = Some(TransmissionDateTime::parse(b"1123093100").unwrap());
            t.stan = Some(Stan::new(124).unwrap());
        }
        "reversal_advice" => {
            t = Transaction::new(Mti::REVERSAL_ADVICE.repeat());
            t.message_id = Some(s("FPSW20231123000125"));
            t.reason = Some(s("TECH"));
            t.original_message_id = Some(s("FPSW20231123000123"));
            t.original = Some(original_of_123(b"00000000678"));
            hkd(12345, &mut t);
            t.transmitted_at = Some(TransmissionDateTime::parse(b"1123094500").unwrap());
            t.stan = Some(Stan::new(125).unwrap());
        }
        "reversal_advice_result" => {
            t = Transaction::new(Mti::REVERSAL_ADVICE_RESPONSE);
            t.message_id = Some(s("FPSW20231123000125"));
            t.response_code = Some(ResponseCode::APPROVED);
            t.stan = Some(Stan::new(125).unwrap());
        }
        "status_inquiry" => {
            t = Transaction::new(Mti::STATUS_INQUIRY);
            t.message_id = Some(s("FPSW20231123000126"));
            t.original_message_id = Some(s("FPSW20231123000123"));
            t.end_to_end_id = Some(s("E2E-7f3a9c21"));
            t.transmitted_at = Some(TransmissionDateTime::parse(b"1123093500").unwrap());
            t.stan = Some(Stan::new(126).unwrap());
        }
        "status_inquiry_result" => {
            t = Transaction::new(Mti::STATUS_INQUIRY_RESPONSE);
            t.message_id = Some(s("FPSW20231123000126"));
            t.response_code = code(PENDING_RESPONSE_CODE);
            t.original_message_id = Some(s("FPSW20231123000123"));
            t.end_to_end_id = Some(s("E2E-7f3a9c21"));
            t.stan = Some(Stan::new(126).unwrap());
        }
        "network" | "network_result" => {
            let result = name == "network_result";
            t = Transaction::new(if result {
                Mti::NETWORK_RESPONSE
            } else {
                Mti::NETWORK
            });
            t.message_id = Some(s("NET-000201"));
            t.network_code = Some(NetworkCode::Echo);
            t.response_code = result.then_some(ResponseCode::APPROVED);
            t.transmitted_at = Some(TransmissionDateTime::parse(b"1123093000").unwrap());
            t.stan = Some(Stan::new(201).unwrap());
        }
        "return" => {
            t = Transaction::new(Mti::CREDIT_TRANSFER);
            t.processing_code = Some(return_code());
            t.message_id = Some(s("BNK4RTN20231124000001"));
            t.reason = Some(s("AC04"));
            t.original_message_id = Some(s("FPSW20231123000123"));
            t.end_to_end_id = Some(s("E2E-7f3a9c21"));
            hkd(12345, &mut t);
            t.debtor_account = Some(s("012345678901"));
            t.debtor_name = Some(PartyName::parse("Chan Tai Man").unwrap());
            t.sending_bank = Some(BankCode::parse(b"003").unwrap());
            t.creditor_account = Some(s("004998877665"));
            t.creditor_name = Some(PartyName::parse("Lee Siu Ming").unwrap());
            t.receiving_bank = Some(BankCode::parse(b"004").unwrap());
            t.settlement_date = Some(SettlementDate::parse(b"20231124").unwrap());
        }
        "return_result" => {
            t = Transaction::new(Mti::CREDIT_TRANSFER_RESPONSE);
            t.processing_code = Some(return_code());
            t.message_id = Some(s("BNK4RTN20231124000001"));
            t.response_code = Some(ResponseCode::APPROVED);
            t.original_message_id = Some(s("FPSW20231123000123"));
            t.end_to_end_id = Some(s("E2E-7f3a9c21"));
        }
        other => panic!("no expected value for {other}"),
    }
    t
}

#[test]
fn examples_decode_to_expected_values() {
    for (name, doc) in EXAMPLES {
        let t = decode(doc.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t, expected(name), "{name}");
        let v: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(v["type"], name, "{name}: file and type agree");
    }
}

#[test]
fn examples_are_in_canonical_form() {
    // Re-encoding gives the same document (member order and whitespace aside):
    // the examples show exactly what the encoder writes.
    for (name, doc) in EXAMPLES {
        let bytes = encode(&expected(name)).unwrap();
        let ours: Value = serde_json::from_slice(&bytes).unwrap();
        let theirs: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(ours, theirs, "{name}");
        // And member order too, once whitespace is gone.
        assert_eq!(String::from_utf8(bytes).unwrap(), minify(doc), "{name}");
    }
}

/// The document without whitespace outside strings.
fn minify(doc: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in doc.chars() {
        if in_string {
            in_string = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c.is_ascii_whitespace() {
            continue;
        } else {
            in_string = c == '"';
        }
        out.push(c);
    }
    out
}

#[test]
fn the_examples_cover_every_type_once() {
    let mut names: Vec<_> = EXAMPLES.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 12);
}

#[test]
fn a_minimal_result_derives_its_code_from_status() {
    for (status, code) in [
        ("approved", ResponseCode::APPROVED),
        ("declined", ResponseCode::DO_NOT_HONOUR),
        (
            "pending",
            ResponseCode::parse(PENDING_RESPONSE_CODE).unwrap(),
        ),
    ] {
        let doc =
            format!(r#"{{"type":"credit_transfer_result","request_id":"R1","status":"{status}"}}"#);
        let t = decode(doc.as_bytes()).unwrap();
        assert_eq!(t.response_code, Some(code), "{status}");
        assert_eq!(t.mti, Mti::CREDIT_TRANSFER_RESPONSE);
    }
}

#[test]
fn a_response_built_by_the_model_encodes_and_decodes() {
    // What a bank simulator does: answer a decoded request with `response()`.
    let (_, doc) = EXAMPLES[0];
    let req = decode(doc.as_bytes()).unwrap();
    let resp = req.response(ResponseCode::APPROVED);
    let back = decode(&encode(&resp).unwrap()).unwrap();
    assert_eq!(back.message_id, req.message_id);
    assert_eq!(back.original_message_id, req.message_id);
    assert_eq!(back.response_code, Some(ResponseCode::APPROVED));
    assert_eq!(back.stan, req.stan);
    assert_eq!(back.amount, req.amount);
    assert_eq!(back.receiving_bank, req.receiving_bank);
}

#[test]
fn encoding_appends_and_is_compact() {
    // Whatever the caller already wrote (e.g. room for a length header) stays.
    let mut out = BytesMut::from(&b"\x00\x10"[..]);
    JsonCodec.encode(&expected("network"), &mut out).unwrap();
    let (header, doc) = out.split_at(2);
    assert_eq!(header, b"\x00\x10");
    assert_eq!(
        std::str::from_utf8(doc).unwrap(),
        r#"{"type":"network","request_id":"NET-000201","action":"echo","transmitted_at":"1123093000","stan":"000201"}"#
    );
}

#[test]
fn fields_a_type_does_not_carry_are_not_written() {
    let mut t = expected("network");
    t.pan = Some(fps_codecs::model::Pan::parse(b"4761739001010010").unwrap());
    t.debtor_account = Some(s("12345678"));
    t.auth_id = Some(s("ABC123"));
    let back = decode(&encode(&t).unwrap()).unwrap();
    assert_eq!(back, expected("network"));
}

#[test]
fn encode_refuses_what_the_dialect_cannot_say() {
    let cases: Vec<(Transaction, CodecError)> = vec![
        (
            Transaction::new(Mti::parse(b"0100").unwrap()),
            CodecError::Invalid {
                at: Location::Mti,
                reason: "no JSON message type for this MTI",
            },
        ),
        (
            {
                let mut t = expected("credit_transfer");
                t.processing_code = Some(ProcessingCode::PURCHASE);
                t
            },
            CodecError::Invalid {
                at: Location::Field(3),
                reason: "processing code has no JSON message type",
            },
        ),
        (
            {
                let mut t = expected("credit_transfer");
                t.currency = None;
                t
            },
            CodecError::Missing {
                at: at("amount.currency"),
            },
        ),
        (
            {
                let mut t = expected("credit_transfer");
                t.currency = Some(Currency::parse(b"999").unwrap());
                t
            },
            CodecError::Invalid {
                at: at("amount.currency"),
                reason: "currency has no alphabetic code",
            },
        ),
        (
            {
                let mut t = expected("credit_transfer");
                t.proxy = None;
                t
            },
            CodecError::Missing {
                at: at("creditor.account"),
            },
        ),
        (
            {
                let mut t = expected("cancel");
                t.original_message_id = None;
                t
            },
            CodecError::Missing {
                at: at("original.request_id"),
            },
        ),
        (
            {
                let mut t = expected("cancel");
                t.original.as_mut().unwrap().mti = Mti::parse(b"0100").unwrap();
                t
            },
            CodecError::Invalid {
                at: at("original.type"),
                reason: "no JSON message type for this MTI",
            },
        ),
        (
            {
                let mut t = expected("cancel_result");
                t.response_code = None;
                t
            },
            CodecError::Missing { at: at("status") },
        ),
    ];
    for (t, want) in cases {
        let mut out = BytesMut::new();
        assert_eq!(JsonCodec.encode(&t, &mut out), Err(want));
        assert!(out.is_empty());
    }
}

#[test]
fn the_largest_document_fits_the_limit() {
    let mut t = expected("credit_transfer");
    let quotes = "\"".repeat(PartyName::MAX_LEN);
    t.debtor_name = Some(PartyName::parse(&quotes).unwrap());
    t.creditor_name = t.debtor_name.clone();
    let local = "\"".repeat(126);
    let email = format!("{local}@{local}");
    t.proxy = Some(ProxyId::new(ProxyKind::Email, email.as_bytes()).unwrap());
    t.creditor_account = Some(s(&"9".repeat(Account::MAX_LEN)));
    t.debtor_account = t.creditor_account;
    t.message_id = Some(s(&"\\".repeat(MessageId::MAX_LEN)));
    t.end_to_end_id = Some(s(&"\\".repeat(EndToEndId::MAX_LEN)));
    t.transaction_id = t.end_to_end_id;
    t.idempotency_key = Some(s(&"\\".repeat(IdempotencyKey::MAX_LEN)));
    t.original_message_id = t.message_id;
    t.original = Some(original_of_123(b"99999999999"));
    t.amount = Some(AmountMinor::new(AmountMinor::MAX).unwrap());
    let bytes = encode(&t).unwrap();
    assert!(bytes.len() < 4 * 1024, "{}", bytes.len());
    assert!(bytes.len() < MAX_MESSAGE_BYTES);
    assert_eq!(decode(&bytes).unwrap(), t);
}

// ---------------------------------------------------------------------------
// Malformed documents

const CT: &str = r#""type":"credit_transfer","request_id":"R1","amount":{"minor":100,"currency":"HKD"},"debtor":{"account":"111122223333"},"creditor":{"account":"444455556666"}"#;

fn ct_with(extra: &str) -> String {
    format!("{{{CT}{extra}}}")
}

fn ct_replacing(from: &str, to: &str) -> String {
    let doc = format!("{{{CT}}}");
    assert!(doc.contains(from), "{from}");
    doc.replacen(from, to, 1)
}

fn invalid(at: Location, reason: &'static str) -> CodecError {
    CodecError::Invalid { at, reason }
}

fn missing(path: &'static str) -> CodecError {
    CodecError::Missing { at: at(path) }
}

/// The location of a value error, with its reason discarded.
fn value_at(e: &CodecError) -> Option<Location> {
    match e {
        CodecError::Value { at, .. } => Some(*at),
        _ => None,
    }
}

#[test]
fn the_valid_base_document_decodes() {
    let t = decode(ct_with("").as_bytes()).unwrap();
    assert_eq!(t.amount.unwrap().minor(), 100);
}

#[test]
fn malformed_members_are_refused_with_their_path() {
    // (document, expected location of a `Value` error)
    let value_errors: Vec<(String, &'static str)> = vec![
        (ct_replacing("credit_transfer", "wire_transfer"), "type"),
        (ct_replacing("100", "123.45"), "amount.minor"),
        (ct_replacing("100", "1e3"), "amount.minor"),
        (ct_replacing("100", "-100"), "amount.minor"),
        (ct_replacing("100", "1234567890123"), "amount.minor"),
        (ct_replacing("100", "99999999999999999999999"), "amount.minor"),
        (ct_replacing("HKD", "XYZ"), "amount.currency"),
        (ct_replacing("HKD", "hkd"), "amount.currency"),
        (ct_replacing("444455556666", "4444-5555"), "creditor.account"),
        (ct_replacing("111122223333", ""), "debtor.account"),
        (ct_replacing("R1", &"R".repeat(36)), "request_id"),
        (ct_with(r#","stan":"123""#), "stan"),
        (ct_with(r#","transmitted_at":"1323093000""#), "transmitted_at"),
        (ct_with(r#","settlement_date":"20231123""#), "settlement_date"),
        (ct_with(r#","uetr":"not-a-uuid""#), "uetr"),
        (ct_with(r#","acquirer":"12a""#), "acquirer"),
        (
            ct_replacing(
                r#"{"account":"444455556666"}"#,
                r#"{"proxy":{"type":"MOBN","id":"91234567"}}"#,
            ),
            "creditor.proxy.id",
        ),
        (
            ct_replacing(
                r#"{"account":"444455556666"}"#,
                r#"{"proxy":{"id":"+852-91234567","type":"PHON"}}"#,
            ),
            "creditor.proxy.type",
        ),
        (
            ct_replacing(r#"{"account":"111122223333"}"#, r#"{"account":"1","name":"a\u0007b"}"#),
            "debtor.name",
        ),
        (
            ct_replacing(r#"{"account":"111122223333"}"#, r#"{"account":"1","bank":"04"}"#),
            "debtor.bank",
        ),
        (
            r#"{"type":"cancel","request_id":"C1","original":{"request_id":"R1","type":"credit_transfer_result","stan":"000001","transmitted_at":"1123093000"}}"#.into(),
            "original.type",
        ),
        (
            r#"{"type":"cancel","request_id":"C1","original":{"request_id":"R1","type":"credit_transfer","stan":"000001","transmitted_at":"1123093000","acquirer":"123456789012"}}"#.into(),
            "original.acquirer",
        ),
        (r#"{"type":"network","request_id":"N1","action":"reboot"}"#.into(), "action"),
        (
            r#"{"type":"network_result","request_id":"N1","status":"ok"}"#.into(),
            "status",
        ),
        (
            r#"{"type":"network_result","request_id":"N1","status":"approved","code":"0"}"#.into(),
            "code",
        ),
    ];
    for (doc, path) in &value_errors {
        let e = decode(doc.as_bytes()).expect_err(doc);
        assert_eq!(value_at(&e), Some(at(path)), "{doc}: {e}");
        assert_eq!(e.response_code(), ResponseCode::FORMAT_ERROR);
    }

    let other_errors: Vec<(String, CodecError)> = vec![
        (ct_replacing("100", r#""100""#), invalid(at("amount.minor"), "wrong JSON type")),
        (ct_replacing(r#""R1""#, "null"), invalid(at("request_id"), "wrong JSON type")),
        (ct_replacing(r#""R1""#, "17"), invalid(at("request_id"), "wrong JSON type")),
        (ct_replacing(r#"{"minor":100,"currency":"HKD"}"#, "[100]"), invalid(at("amount"), "wrong JSON type")),
        (ct_with(r#","repeat":"yes""#), invalid(at("repeat"), "wrong JSON type")),
        (ct_with(r#","colour":"blue""#), invalid(Location::Message, "unknown member")),
        (
            ct_replacing(r#"{"account":"111122223333"}"#, r#"{"account":"1","iban":"x"}"#),
            invalid(at("debtor"), "unknown member"),
        ),
        (ct_with(r#","request_id":"R2""#), invalid(at("request_id"), "duplicate member")),
        (ct_with(r#","type":"credit_transfer""#), invalid(at("type"), "duplicate member")),
        (
            ct_replacing(r#""minor":100"#, r#""minor":100,"minor":1"#),
            invalid(at("amount.minor"), "duplicate member"),
        ),
        (ct_with(r#","auth_id":"ABC123""#), invalid(at("auth_id"), "not allowed for this type")),
        (ct_with(r#","status":"approved""#), invalid(at("status"), "not allowed for this type")),
        (ct_with(r#","action":"echo""#), invalid(at("action"), "not allowed for this type")),
        (ct_replacing(r#""type":"credit_transfer","#, ""), missing("type")),
        (ct_replacing(r#""request_id":"R1","#, ""), missing("request_id")),
        (ct_replacing(r#","amount":{"minor":100,"currency":"HKD"}"#, ""), missing("amount")),
        (ct_replacing(r#","currency":"HKD""#, ""), missing("amount.currency")),
        (ct_replacing(r#""minor":100,"#, ""), missing("amount.minor")),
        (ct_replacing(r#"{"account":"111122223333"}"#, "{}"), missing("debtor.account")),
        (
            ct_replacing(r#"{"account":"444455556666"}"#, r#"{"name":"Lee","bank":"004"}"#),
            missing("creditor.account"),
        ),
        (
            ct_replacing(r#"{"account":"444455556666"}"#, r#"{"proxy":{"type":"MOBN"}}"#),
            missing("creditor.proxy.id"),
        ),
        (
            r#"{"type":"credit_transfer_result","request_id":"R1","code":"00"}"#.into(),
            missing("status"),
        ),
        (
            r#"{"type":"credit_transfer_result","request_id":"R1","status":"approved","code":"51"}"#.into(),
            invalid(at("code"), "disagrees with status"),
        ),
        (
            r#"{"type":"credit_transfer_result","request_id":"R1","status":"approved","repeat":true}"#.into(),
            invalid(at("repeat"), "not allowed for this type"),
        ),
        (r#"{"type":"cancel","request_id":"C1"}"#.into(), missing("original.request_id")),
        (r#"{"type":"cancel","request_id":"C1","original":{}}"#.into(), missing("original.request_id")),
        (
            r#"{"type":"cancel","request_id":"C1","original":{"request_id":"R1","stan":"000001"}}"#.into(),
            missing("original.type"),
        ),
        (
            r#"{"type":"status_inquiry","request_id":"C1","original":{"request_id":"R1","type":"credit_transfer","stan":"000001"}}"#.into(),
            missing("original.transmitted_at"),
        ),
        (
            r#"{"type":"return","request_id":"B1","original":{"request_id":"R1"},"amount":{"minor":1,"currency":"HKD"}}"#.into(),
            missing("reason"),
        ),
        (r#"{"type":"network","request_id":"N1"}"#.into(), missing("action")),
        (
            r#"{"type":"network","request_id":"N1","action":"echo","amount":{"minor":1,"currency":"HKD"}}"#.into(),
            invalid(at("amount"), "not allowed for this type"),
        ),
        (format!("{} x", ct_with("")), invalid(Location::Message, "trailing bytes after the object")),
        (format!("{0}{0}", ct_with("")), invalid(Location::Message, "trailing bytes after the object")),
        (String::new(), invalid(Location::Message, "JSON ends early")),
        ("   ".into(), invalid(Location::Message, "JSON ends early")),
        (format!("[{}]", ct_with("")), invalid(Location::Message, "wrong JSON type")),
        ("\"credit_transfer\"".into(), invalid(Location::Message, "wrong JSON type")),
        (format!("\u{feff}{}", ct_with("")), invalid(Location::Message, "malformed JSON")),
        (ct_replacing(r#""minor":100"#, r#""minor" 100"#), invalid(at("amount.minor"), "malformed JSON")),
        (ct_replacing(r#""minor":100"#, r#""minor":0100"#), invalid(at("amount.minor"), "malformed JSON")),
        (ct_replacing(r#""R1""#, "'R1'"), invalid(at("request_id"), "malformed JSON")),
        (ct_with(",}").replace(",}}", ",}"), invalid(Location::Message, "malformed JSON")),
        {
            let doc = ct_with("");
            (doc[..doc.find("minor").unwrap()].to_string(), invalid(at("amount"), "JSON ends early"))
        },
        {
            let doc = ct_with("");
            (doc[..doc.find("R1").unwrap()].to_string(), invalid(at("request_id"), "JSON ends early"))
        },
    ];
    for (doc, want) in other_errors {
        assert_eq!(decode(doc.as_bytes()), Err(want), "{doc}");
    }
}

#[test]
fn frames_that_are_not_json_text_are_refused_up_front() {
    let mut doc = ct_with("").into_bytes();
    doc[30] = 0xff;
    assert_eq!(decode(&doc), Err(invalid(Location::Message, "not UTF-8")));
    let big = ct_with(&" ".repeat(MAX_MESSAGE_BYTES));
    assert_eq!(
        decode(big.as_bytes()),
        Err(CodecError::TooLong {
            at: Location::Message,
            len: big.len(),
            max: MAX_MESSAGE_BYTES,
        })
    );
    // Whitespace up to the limit is fine.
    let padded = format!("{:<1$}", ct_with(""), MAX_MESSAGE_BYTES);
    assert!(decode(padded.as_bytes()).is_ok());
}

#[test]
fn errors_never_echo_the_value() {
    let secrets = [
        ("444455556666", "4444-5555-6666!"),
        (
            r#"{"account":"444455556666"}"#,
            r#"{"proxy":{"type":"MOBN","id":"98765432"}}"#,
        ),
        ("111122223333", &"7".repeat(40)),
        (
            r#"{"account":"111122223333"}"#,
            r#"{"account":"1","name":"Secret\u0001Name"}"#,
        ),
    ];
    for (from, to) in secrets {
        let e = decode(ct_replacing(from, to).as_bytes()).unwrap_err();
        let shown = format!("{e} {e:?}");
        for needle in ["4444", "98765432", "7777777", "Secret"] {
            assert!(!shown.contains(needle), "{shown}");
        }
    }
}

// ---------------------------------------------------------------------------
// Round trips of every type

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    CreditTransfer,
    CreditTransferResult,
    Cancel,
    CancelResult,
    ReversalAdvice,
    ReversalAdviceResult,
    StatusInquiry,
    StatusInquiryResult,
    Network,
    NetworkResult,
    Return,
    ReturnResult,
}

impl Ty {
    fn mti(self) -> Mti {
        match self {
            Ty::CreditTransfer | Ty::Return => Mti::CREDIT_TRANSFER,
            Ty::CreditTransferResult | Ty::ReturnResult => Mti::CREDIT_TRANSFER_RESPONSE,
            Ty::Cancel => Mti::REVERSAL,
            Ty::CancelResult => Mti::REVERSAL_RESPONSE,
            Ty::ReversalAdvice => Mti::REVERSAL_ADVICE,
            Ty::ReversalAdviceResult => Mti::REVERSAL_ADVICE_RESPONSE,
            Ty::StatusInquiry => Mti::STATUS_INQUIRY,
            Ty::StatusInquiryResult => Mti::STATUS_INQUIRY_RESPONSE,
            Ty::Network => Mti::NETWORK,
            Ty::NetworkResult => Mti::NETWORK_RESPONSE,
        }
    }

    fn processing_code(self) -> Option<ProcessingCode> {
        match self {
            Ty::CreditTransfer | Ty::CreditTransferResult => Some(ProcessingCode::CREDIT_TRANSFER),
            Ty::Return | Ty::ReturnResult => Some(return_code()),
            _ => None,
        }
    }

    fn result(self) -> bool {
        self.mti().is_response()
    }

    fn network(self) -> bool {
        matches!(self, Ty::Network | Ty::NetworkResult)
    }
}

/// Fit an arbitrary transaction to what type `ty` carries, per the schema
/// table in the module docs, filling required members that are absent.
fn shape(ty: Ty, mut t: Transaction, repeat: bool) -> Transaction {
    t.mti = if repeat && !ty.result() {
        ty.mti().repeat()
    } else {
        ty.mti()
    };
    t.processing_code = ty.processing_code();
    // Never carried.
    t.pan = None;
    t.local_time = None;
    t.local_date = None;
    t.forwarder = None;
    t.mac = None;
    if ty.result() {
        t.response_code.get_or_insert(ResponseCode::APPROVED);
    } else {
        t.response_code = None;
        if !matches!(ty, Ty::Cancel | Ty::ReversalAdvice | Ty::Return) {
            t.reason = None;
        }
    }
    if !ty.result() || ty.network() {
        t.auth_id = None;
    }
    if ty.network() {
        let keep = t.clone();
        t = Transaction::new(t.mti);
        t.message_id = keep.message_id;
        t.transmitted_at = keep.transmitted_at;
        t.stan = keep.stan;
        t.rrn = keep.rrn;
        t.acquirer = keep.acquirer;
        t.network_code = keep.network_code;
        t.response_code = keep.response_code;
        t.reason = keep.reason;
        if ty == Ty::Network {
            t.network_code.get_or_insert(NetworkCode::SignOn);
        }
        return t;
    }
    t.network_code = None;
    if t.amount.is_some() {
        t.currency.get_or_insert(Currency::HKD);
    } else {
        t.currency = None;
    }
    if t.original.is_some() {
        t.original_message_id.get_or_insert(s("ORIG-1"));
    }
    match ty {
        Ty::CreditTransfer => {
            t.amount.get_or_insert(AmountMinor::new(1).unwrap());
            t.currency.get_or_insert(Currency::HKD);
            t.debtor_account.get_or_insert(s("1"));
            if t.proxy.is_none() {
                t.creditor_account.get_or_insert(s("2"));
            }
        }
        Ty::Return => {
            t.amount.get_or_insert(AmountMinor::new(1).unwrap());
            t.currency.get_or_insert(Currency::CNY);
            t.original_message_id.get_or_insert(s("ORIG-2"));
            t.reason.get_or_insert(s("AC04"));
        }
        Ty::Cancel | Ty::ReversalAdvice | Ty::StatusInquiry => {
            t.original_message_id.get_or_insert(s("ORIG-3"));
        }
        _ => {}
    }
    t
}

fn text(re: &str) -> impl Strategy<Value = String> {
    proptest::string::string_regex(re).unwrap()
}

fn parsed<T: std::fmt::Debug>(
    re: &str,
    parse: fn(&[u8]) -> Result<T, fps_codecs::model::ValueError>,
) -> impl Strategy<Value = T> {
    text(re).prop_map(move |v| parse(v.as_bytes()).unwrap())
}

fn opt<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
    proptest::option::of(s)
}

fn date_time() -> impl Strategy<Value = TransmissionDateTime> {
    (1..=12u8, 1..=31u8, 0..24u8, 0..60u8, 0..60u8).prop_map(|(mo, d, h, mi, s)| {
        TransmissionDateTime::parse(format!("{mo:02}{d:02}{h:02}{mi:02}{s:02}").as_bytes()).unwrap()
    })
}

fn stan() -> impl Strategy<Value = Stan> {
    (0..=Stan::MAX).prop_map(|v| Stan::new(v).unwrap())
}

fn party_name() -> impl Strategy<Value = PartyName> {
    text("\\PC{1,35}").prop_map(|v| PartyName::parse(&v).unwrap())
}

fn proxy() -> impl Strategy<Value = ProxyId> {
    prop_oneof![
        text("\\+[0-9]{1,3}-[0-9]{6,15}").prop_map(|v| (ProxyKind::Mobile, v)),
        text("[!-?A-~]{1,40}@[!-?A-~]{1,40}").prop_map(|v| (ProxyKind::Email, v)),
        text("[0-9]{7,9}").prop_map(|v| (ProxyKind::FpsId, v)),
        text("[A-Z][A-Z0-9]{7,8}").prop_map(|v| (ProxyKind::Hkid, v)),
    ]
    .prop_map(|(kind, v)| ProxyId::new(kind, v.as_bytes()).unwrap())
}

fn institution_slot() -> impl Strategy<Value = [u8; 11]> {
    prop_oneof![Just(0u64), 0..100_000_000_000u64].prop_map(|v| {
        let mut out = [0u8; 11];
        out.copy_from_slice(format!("{v:011}").as_bytes());
        out
    })
}

fn original_data() -> impl Strategy<Value = OriginalData> {
    (
        prop::sample::select(vec![
            Mti::CREDIT_TRANSFER,
            Mti::REVERSAL,
            Mti::REVERSAL_ADVICE,
            Mti::STATUS_INQUIRY,
            Mti::NETWORK,
        ]),
        stan(),
        date_time(),
        institution_slot(),
        institution_slot(),
    )
        .prop_map(
            |(mti, stan, transmitted_at, acquirer, forwarder)| OriginalData {
                mti,
                stan,
                transmitted_at,
                acquirer,
                forwarder,
            },
        )
}

fn any_transaction() -> impl Strategy<Value = Transaction> {
    let ids = (
        parsed("[ -~]{1,35}", MessageId::parse),
        opt(parsed("[ -~]{1,35}", EndToEndId::parse)),
        opt(parsed("[ -~]{1,35}", EndToEndId::parse)),
        opt(any::<[u8; 16]>().prop_map(Uetr::from_bytes)),
        opt(parsed("[ -~]{1,35}", MessageId::parse)),
        opt(original_data()),
        opt(parsed("[ -~]{1,64}", IdempotencyKey::parse)),
        opt(parsed("[ -~]{12}", Rrn::parse)),
        opt(stan()),
        opt(date_time()),
        opt(parsed("[0-9]{1,11}", InstitutionId::parse)),
        opt(parsed("[ -~]{8}", TerminalId::parse)),
    );
    let payment = (
        opt((0..=AmountMinor::MAX).prop_map(|v| AmountMinor::new(v).unwrap())),
        opt(
            prop::sample::select(vec!["HKD", "CNY", "USD", "EUR", "GBP", "JPY", "SGD", "MOP"])
                .prop_map(|c| Currency::from_alpha(c).unwrap()),
        ),
        opt(parsed("[A-Za-z0-9]{1,34}", Account::parse)),
        opt(party_name()),
        opt(parsed("[0-9]{3}", BankCode::parse)),
        opt(parsed("[A-Za-z0-9]{1,34}", Account::parse)),
        opt(proxy()),
        opt(party_name()),
        opt(parsed("[0-9]{3}", BankCode::parse)),
        opt((0..=9999u16, 1..=12u8, 1..=31u8).prop_map(|(y, m, d)| {
            SettlementDate::parse(format!("{y:04}{m:02}{d:02}").as_bytes()).unwrap()
        })),
        opt(parsed("[ -~]{15}", MerchantId::parse)),
    );
    let result = (
        opt(parsed("[A-Za-z0-9]{2}", ResponseCode::parse)),
        opt(parsed("[A-Za-z0-9]{1,4}", ReasonCode::parse)),
        opt(parsed("[ -~]{6}", AuthId::parse)),
        opt(prop::sample::select(vec![
            NetworkCode::SignOn,
            NetworkCode::SignOff,
            NetworkCode::Echo,
            NetworkCode::KeyChange,
        ])),
    );
    (ids, payment, result).prop_map(|(ids, payment, result)| {
        let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
        (
            t.message_id,
            t.end_to_end_id,
            t.transaction_id,
            t.uetr,
            t.original_message_id,
            t.original,
            t.idempotency_key,
            t.rrn,
            t.stan,
            t.transmitted_at,
            t.acquirer,
            t.terminal_id,
        ) = (
            Some(ids.0),
            ids.1,
            ids.2,
            ids.3,
            ids.4,
            ids.5,
            ids.6,
            ids.7,
            ids.8,
            ids.9,
            ids.10,
            ids.11,
        );
        (
            t.amount,
            t.currency,
            t.debtor_account,
            t.debtor_name,
            t.sending_bank,
            t.creditor_account,
            t.proxy,
            t.creditor_name,
            t.receiving_bank,
            t.settlement_date,
            t.merchant_id,
        ) = payment;
        (t.response_code, t.reason, t.auth_id, t.network_code) = result;
        t
    })
}

fn check_round_trip(t: &Transaction) -> Result<(), TestCaseError> {
    let bytes = encode(t).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    prop_assert!(bytes.len() <= MAX_MESSAGE_BYTES);
    let back = decode(&bytes).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(&back, t);
    // Encoding is a function of the value: same bytes again.
    prop_assert_eq!(encode(&back).unwrap(), bytes);
    Ok(())
}

macro_rules! round_trips {
    ($($name:ident => $ty:expr),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]
            $(
                #[test]
                fn $name(t in any_transaction(), repeat in any::<bool>()) {
                    check_round_trip(&shape($ty, t, repeat))?;
                }
            )*
        }
    };
}

round_trips! {
    round_trip_credit_transfer => Ty::CreditTransfer,
    round_trip_credit_transfer_result => Ty::CreditTransferResult,
    round_trip_cancel => Ty::Cancel,
    round_trip_cancel_result => Ty::CancelResult,
    round_trip_reversal_advice => Ty::ReversalAdvice,
    round_trip_reversal_advice_result => Ty::ReversalAdviceResult,
    round_trip_status_inquiry => Ty::StatusInquiry,
    round_trip_status_inquiry_result => Ty::StatusInquiryResult,
    round_trip_network => Ty::Network,
    round_trip_network_result => Ty::NetworkResult,
    round_trip_return => Ty::Return,
    round_trip_return_result => Ty::ReturnResult,
}

// ---------------------------------------------------------------------------
// Arbitrary input never panics, and what is accepted is stable

/// Whatever decodes re-encodes, and decodes again to the same value.
fn accepted_is_stable(doc: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(t) = decode(doc) {
        let bytes = encode(&t).map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
        prop_assert_eq!(decode(&bytes).unwrap(), t);
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        prop::sample::select(b"{}[]\":,.-+0123456789eE \\nultrfase".to_vec()),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(doc: &mut Vec<u8>, m: &Mutation) {
    let len = doc.len().max(1);
    match *m {
        Mutation::Set(i, b) => {
            if !doc.is_empty() {
                doc[i % len] = b;
            }
        }
        Mutation::Insert(i, b) => doc.insert(i % (doc.len() + 1), b),
        Mutation::Remove(i, n) => {
            let start = i % len;
            let end = (start + n).min(doc.len());
            doc.drain(start.min(end)..end);
        }
        Mutation::Truncate(i) => doc.truncate(i % len),
    }
}

/// Any JSON value, to put where a member's value belongs.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text("[ -~]{0,40}").prop_map(Value::from),
        text("[0-9]{1,15}").prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec!["account", "minor", "type", "id", "request_id", "x"]),
                inner,
                0..4,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(doc in prop::collection::vec(any::<u8>(), 0..512)) {
        accepted_is_stable(&doc)?;
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0..EXAMPLES.len(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut doc = EXAMPLES[which].1.as_bytes().to_vec();
        for m in &mutations {
            mutate(&mut doc, m);
        }
        accepted_is_stable(&doc)?;
    }

    #[test]
    fn any_value_in_any_member_never_panics(
        which in 0..EXAMPLES.len(),
        member in any::<prop::sample::Index>(),
        nested in any::<prop::sample::Index>(),
        value in any_json(),
    ) {
        let mut doc: Value = serde_json::from_str(EXAMPLES[which].1).unwrap();
        let top = doc.as_object_mut().unwrap();
        let key = member.get(&top.keys().cloned().collect::<Vec<_>>()).clone();
        match top.get_mut(&key) {
            Some(Value::Object(inner)) if !inner.is_empty() => {
                let k = nested.get(&inner.keys().cloned().collect::<Vec<_>>()).clone();
                inner.insert(k, value);
            }
            Some(slot) => *slot = value,
            None => unreachable!("key taken from the object"),
        }
        let bytes = serde_json::to_vec(&doc).unwrap();
        // A damaged member is named, or a member inside it. (A changed `type`
        // can make any other member wrong.)
        if let (Err(e), false) = (decode(&bytes), key == "type") {
            match e.location() {
                Location::Element(path) => prop_assert!(path.starts_with(key.as_str()), "{key}: {e}"),
                other => prop_assert!(false, "{key}: {other}: {e}"),
            }
        }
        accepted_is_stable(&bytes)?;
    }
}
