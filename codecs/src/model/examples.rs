//! Example messages: the typical upstream credit transfer of DESIGN.md, for
//! tests, benchmarks, fuzz seeds and documentation, so they all measure and
//! check the same message.

use super::*;

/// The typical upstream 0200 credit transfer: fields 3, 4, 7, 11, 12, 13, 32,
/// 37, 41, 42, 49, 100, 102, 103 and 123 (so a secondary bitmap too).
pub fn credit_transfer() -> Transaction {
    // Every value below is a constant known to be valid: the parses cannot fail.
    let valid = "example values are valid";
    let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
    t.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
    t.amount = Some(AmountMinor::new(12_345).expect(valid));
    t.transmitted_at = Some(TransmissionDateTime::parse(b"1123093015").expect(valid));
    t.stan = Some(Stan::new(123).expect(valid));
    t.local_time = Some(LocalTime::parse(b"173015").expect(valid));
    t.local_date = Some(LocalDate::parse(b"1123").expect(valid));
    t.acquirer = Some(InstitutionId::parse(b"888001").expect(valid));
    t.rrn = Some(Rrn::parse(b"000000000123").expect(valid));
    t.terminal_id = Some(TerminalId::parse(b"TERM0001").expect(valid));
    t.merchant_id = Some(MerchantId::parse(b"MERCHANT0000001").expect(valid));
    t.currency = Some(Currency::HKD);
    t.receiving_bank = Some(BankCode::parse(b"004").expect(valid));
    t.debtor_account = Some(Account::parse(b"123456789001").expect(valid));
    t.creditor_account = Some(Account::parse(b"987654321001").expect(valid));
    t.idempotency_key = Some(IdempotencyKey::parse(b"gw-2026-11-23-000123").expect(valid));
    t
}
