//! The canonical fields a dialect can map to field numbers, and how each is
//! read from and written to a [`Transaction`] as logical (ASCII) values.

use crate::model::*;

/// A field of the canonical model that an ISO 8583 dialect can carry.
/// Names are the keys of a dialect file's `[map]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CanonicalField {
    /// `pan` (canonical F2).
    Pan,
    /// `processing_code` (F3).
    ProcessingCode,
    /// `amount` (F4).
    Amount,
    /// `transmitted_at` (F7).
    TransmittedAt,
    /// `stan` (F11).
    Stan,
    /// `local_time` (F12).
    LocalTime,
    /// `local_date` (F13).
    LocalDate,
    /// `acquirer` (F32).
    Acquirer,
    /// `forwarder` (F33).
    Forwarder,
    /// `rrn` (F37).
    Rrn,
    /// `auth_id` (F38).
    AuthId,
    /// `response_code` (F39).
    ResponseCode,
    /// `terminal_id` (F41).
    TerminalId,
    /// `merchant_id` (F42).
    MerchantId,
    /// `currency` (F49).
    Currency,
    /// `network_code` (F70).
    NetworkCode,
    /// `original` (F90).
    Original,
    /// `receiving_bank` (F100).
    ReceivingBank,
    /// `sending_bank` (no canonical field number; bank dialects may carry it).
    SendingBank,
    /// `debtor_account` (F102).
    DebtorAccount,
    /// `creditor_account` (F103).
    CreditorAccount,
    /// `proxy` (F120).
    Proxy,
    /// `idempotency_key` (F123).
    IdempotencyKey,
    /// `mac` (F64 or F128).
    Mac,
}

const NAMES: &[(&str, CanonicalField)] = &[
    ("pan", CanonicalField::Pan),
    ("processing_code", CanonicalField::ProcessingCode),
    ("amount", CanonicalField::Amount),
    ("transmitted_at", CanonicalField::TransmittedAt),
    ("stan", CanonicalField::Stan),
    ("local_time", CanonicalField::LocalTime),
    ("local_date", CanonicalField::LocalDate),
    ("acquirer", CanonicalField::Acquirer),
    ("forwarder", CanonicalField::Forwarder),
    ("rrn", CanonicalField::Rrn),
    ("auth_id", CanonicalField::AuthId),
    ("response_code", CanonicalField::ResponseCode),
    ("terminal_id", CanonicalField::TerminalId),
    ("merchant_id", CanonicalField::MerchantId),
    ("currency", CanonicalField::Currency),
    ("network_code", CanonicalField::NetworkCode),
    ("original", CanonicalField::Original),
    ("receiving_bank", CanonicalField::ReceivingBank),
    ("sending_bank", CanonicalField::SendingBank),
    ("debtor_account", CanonicalField::DebtorAccount),
    ("creditor_account", CanonicalField::CreditorAccount),
    ("proxy", CanonicalField::Proxy),
    ("idempotency_key", CanonicalField::IdempotencyKey),
    ("mac", CanonicalField::Mac),
];

/// Scratch space for one logical value: the largest canonical value is a
/// proxy id's wire form.
pub(crate) const SCRATCH_BYTES: usize = ProxyId::MAX_WIRE_LEN + 5;

impl CanonicalField {
    /// Every canonical field, in declaration order.
    pub fn all() -> impl Iterator<Item = CanonicalField> {
        NAMES.iter().map(|(_, f)| *f)
    }

    /// The field's name in dialect files.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    /// Look a field up by its dialect-file name.
    pub fn from_name(name: &str) -> Option<Self> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// Set this field of `txn` from its logical wire value.
    #[inline]
    pub(crate) fn set(self, txn: &mut Transaction, v: &[u8]) -> Result<(), ValueError> {
        use CanonicalField as C;
        match self {
            C::Pan => txn.pan = Some(Pan::parse(v)?),
            C::ProcessingCode => txn.processing_code = Some(ProcessingCode::parse(v)?),
            C::Amount => txn.amount = Some(AmountMinor::parse(v)?),
            C::TransmittedAt => txn.transmitted_at = Some(TransmissionDateTime::parse(v)?),
            C::Stan => txn.stan = Some(Stan::parse(v)?),
            C::LocalTime => txn.local_time = Some(LocalTime::parse(v)?),
            C::LocalDate => txn.local_date = Some(LocalDate::parse(v)?),
            C::Acquirer => txn.acquirer = Some(InstitutionId::parse(v)?),
            C::Forwarder => txn.forwarder = Some(InstitutionId::parse(v)?),
            C::Rrn => txn.rrn = Some(Rrn::parse(v)?),
            C::AuthId => txn.auth_id = Some(AuthId::parse(v)?),
            C::ResponseCode => txn.response_code = Some(ResponseCode::parse(v)?),
            C::TerminalId => txn.terminal_id = Some(TerminalId::parse(v)?),
            C::MerchantId => txn.merchant_id = Some(MerchantId::parse(v)?),
            C::Currency => txn.currency = Some(Currency::parse(v)?),
            C::NetworkCode => txn.network_code = Some(NetworkCode::parse(v)?),
            C::Original => txn.original = Some(OriginalData::parse(v)?),
            C::ReceivingBank => txn.receiving_bank = Some(BankCode::parse(v)?),
            C::SendingBank => txn.sending_bank = Some(BankCode::parse(v)?),
            C::DebtorAccount => txn.debtor_account = Some(Account::parse(v)?),
            C::CreditorAccount => txn.creditor_account = Some(Account::parse(v)?),
            C::Proxy => txn.proxy = Some(ProxyId::parse(v)?),
            C::IdempotencyKey => txn.idempotency_key = Some(IdempotencyKey::parse(v)?),
            C::Mac => txn.mac = Some(MacValue::new(v)?),
        }
        Ok(())
    }

    /// Whether `txn` carries this field.
    #[inline]
    pub(crate) fn present(self, txn: &Transaction) -> bool {
        use CanonicalField as C;
        match self {
            C::Pan => txn.pan.is_some(),
            C::ProcessingCode => txn.processing_code.is_some(),
            C::Amount => txn.amount.is_some(),
            C::TransmittedAt => txn.transmitted_at.is_some(),
            C::Stan => txn.stan.is_some(),
            C::LocalTime => txn.local_time.is_some(),
            C::LocalDate => txn.local_date.is_some(),
            C::Acquirer => txn.acquirer.is_some(),
            C::Forwarder => txn.forwarder.is_some(),
            C::Rrn => txn.rrn.is_some(),
            C::AuthId => txn.auth_id.is_some(),
            C::ResponseCode => txn.response_code.is_some(),
            C::TerminalId => txn.terminal_id.is_some(),
            C::MerchantId => txn.merchant_id.is_some(),
            C::Currency => txn.currency.is_some(),
            C::NetworkCode => txn.network_code.is_some(),
            C::Original => txn.original.is_some(),
            C::ReceivingBank => txn.receiving_bank.is_some(),
            C::SendingBank => txn.sending_bank.is_some(),
            C::DebtorAccount => txn.debtor_account.is_some(),
            C::CreditorAccount => txn.creditor_account.is_some(),
            C::Proxy => txn.proxy.is_some(),
            C::IdempotencyKey => txn.idempotency_key.is_some(),
            C::Mac => txn.mac.is_some(),
        }
    }

    /// Write this field's logical wire value into `buf`, returning its
    /// length, or `None` when `txn` does not carry it.
    #[inline]
    pub(crate) fn write(self, txn: &Transaction, buf: &mut [u8; SCRATCH_BYTES]) -> Option<usize> {
        use CanonicalField as C;
        fn put(buf: &mut [u8], v: &[u8]) -> usize {
            buf[..v.len()].copy_from_slice(v);
            v.len()
        }
        Some(match self {
            C::Pan => put(buf, txn.pan?.expose().as_bytes()),
            C::ProcessingCode => put(buf, txn.processing_code?.as_bytes()),
            C::Amount => put(buf, &txn.amount?.to_digits()),
            C::TransmittedAt => put(buf, txn.transmitted_at?.as_bytes()),
            C::Stan => put(buf, &txn.stan?.to_digits()),
            C::LocalTime => put(buf, txn.local_time?.as_bytes()),
            C::LocalDate => put(buf, txn.local_date?.as_bytes()),
            C::Acquirer => put(buf, txn.acquirer.as_ref()?.as_str().as_bytes()),
            C::Forwarder => put(buf, txn.forwarder.as_ref()?.as_str().as_bytes()),
            C::Rrn => put(buf, txn.rrn.as_ref()?.as_str().as_bytes()),
            C::AuthId => put(buf, txn.auth_id.as_ref()?.as_str().as_bytes()),
            C::ResponseCode => put(buf, txn.response_code?.as_bytes()),
            C::TerminalId => put(buf, txn.terminal_id.as_ref()?.as_str().as_bytes()),
            C::MerchantId => put(buf, txn.merchant_id.as_ref()?.as_str().as_bytes()),
            C::Currency => put(buf, &txn.currency?.to_digits()),
            C::NetworkCode => put(buf, &txn.network_code?.to_digits()),
            C::Original => put(buf, &txn.original?.to_digits()),
            C::ReceivingBank => put(buf, txn.receiving_bank?.as_bytes()),
            C::SendingBank => put(buf, txn.sending_bank?.as_bytes()),
            C::DebtorAccount => put(buf, txn.debtor_account.as_ref()?.expose().as_bytes()),
            C::CreditorAccount => put(buf, txn.creditor_account.as_ref()?.expose().as_bytes()),
            C::Proxy => txn.proxy.as_ref()?.write_wire(buf),
            C::IdempotencyKey => put(buf, txn.idempotency_key.as_ref()?.as_str().as_bytes()),
            C::Mac => put(buf, txn.mac.as_ref()?.as_bytes()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for f in CanonicalField::all() {
            assert_eq!(CanonicalField::from_name(f.name()), Some(f));
        }
        assert_eq!(CanonicalField::all().count(), NAMES.len());
    }
}
