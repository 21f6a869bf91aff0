//! Dialect files (`configs/dialects/*.toml`): random text into
//! `Dialect::from_toml` never panics. When the text is a valid dialect, the
//! codec it makes is exercised too: the input itself is decoded as a message
//! under that dialect, and a typical credit transfer is encoded and, when the
//! dialect can carry it, decoded back to an equal transaction.

#![no_main]

use bytes::BytesMut;
use fps_codecs::iso8583::{Dialect, Iso8583Codec};
use fps_codecs::model::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(dialect) = Dialect::from_toml(text) else {
        return;
    };
    let codec = Iso8583Codec::new(dialect);
    let _ = codec.decode(data);
    let _ = codec.decode_message(data);
    let txn = credit_transfer();
    let mut out = BytesMut::new();
    if codec.encode(&txn, &mut out).is_ok() {
        // The dialect may drop fields it does not map and translate values;
        // only require that its own output is readable and stable.
        let back = codec
            .decode(&out)
            .unwrap_or_else(|e| panic!("dialect cannot read its own encoding: {e}"));
        let mut out2 = BytesMut::new();
        codec
            .encode(&back, &mut out2)
            .expect("encoded once already");
        assert_eq!(
            out, out2,
            "encode(decode(encode(t))) differs from encode(t)"
        );
    }
});

fn credit_transfer() -> Transaction {
    let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
    t.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
    t.amount = AmountMinor::new(12_345).ok();
    t.transmitted_at = TransmissionDateTime::parse(b"1123093015").ok();
    t.stan = Stan::new(123).ok();
    t.acquirer = InstitutionId::parse(b"888001").ok();
    t.rrn = Rrn::parse(b"000000000123").ok();
    t.terminal_id = TerminalId::parse(b"TERM0001").ok();
    t.currency = Some(Currency::HKD);
    t.receiving_bank = BankCode::parse(b"004").ok();
    t.debtor_account = Account::parse(b"123456789001").ok();
    t.creditor_account = Account::parse(b"987654321001").ok();
    t.idempotency_key = IdempotencyKey::parse(b"gw-2026-11-23-000123").ok();
    t
}
