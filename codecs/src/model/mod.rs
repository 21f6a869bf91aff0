//! The canonical transaction: what every codec decodes into and encodes from.
//!
//! It follows the canonical upstream protocol of DESIGN.md (ISO 8583:1987
//! field meanings); bank dialects map their own fields onto it. All values are
//! inline, so a `Transaction` is `Copy`-free but allocation-free to build.

pub mod examples;
pub mod text;
pub mod types;

pub use text::{CharClass, ValueError};
pub use types::*;

/// What a message is, independent of any dialect's MTI numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnKind {
    /// Credit transfer (0200/0210; pacs.008/pacs.002).
    CreditTransfer,
    /// Reversal of an earlier transfer (0400/0410; camt.056).
    Reversal,
    /// Reversal advice: the sender has already reversed (0420/0430).
    ReversalAdvice,
    /// Payment status inquiry (0600/0610; pacs.028).
    StatusInquiry,
    /// Network management: sign-on, sign-off, echo (0800/0810).
    NetworkManagement,
    /// Return of funds (pacs.004): a 0200/0210 with processing code
    /// [`ProcessingCode::RETURN`]; only bank-side codecs produce it.
    Return,
}

impl TxnKind {
    /// The canonical (ISO 8583:1987) request MTI of this kind.
    pub fn request_mti(self) -> Mti {
        match self {
            TxnKind::CreditTransfer | TxnKind::Return => Mti::CREDIT_TRANSFER,
            TxnKind::Reversal => Mti::REVERSAL,
            TxnKind::ReversalAdvice => Mti::REVERSAL_ADVICE,
            TxnKind::StatusInquiry => Mti::STATUS_INQUIRY,
            TxnKind::NetworkManagement => Mti::NETWORK,
        }
    }

    /// The kind of a canonical MTI, if the switch handles that class.
    pub fn of_mti(mti: Mti) -> Option<TxnKind> {
        match (mti.class(), mti.function()) {
            (2, 0 | 1) => Some(TxnKind::CreditTransfer),
            (4, 0 | 1) => Some(TxnKind::Reversal),
            (4, 2 | 3) => Some(TxnKind::ReversalAdvice),
            (6, 0 | 1) => Some(TxnKind::StatusInquiry),
            (8, 0 | 1) => Some(TxnKind::NetworkManagement),
            _ => None,
        }
    }
}

/// One canonical message: a request or a response, with every field optional
/// so that each codec fills what its standard carries. Field numbers in the
/// docs are those of the canonical upstream protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Canonical (ISO 8583:1987) message type, e.g. `0200`.
    pub mti: Mti,
    /// F2 primary account number (card-style networks).
    pub pan: Option<Pan>,
    /// F3 processing code.
    pub processing_code: Option<ProcessingCode>,
    /// F4 amount in minor units.
    pub amount: Option<AmountMinor>,
    /// F7 transmission date and time (UTC).
    pub transmitted_at: Option<TransmissionDateTime>,
    /// F11 system trace audit number.
    pub stan: Option<Stan>,
    /// F12 local time.
    pub local_time: Option<LocalTime>,
    /// F13 local date.
    pub local_date: Option<LocalDate>,
    /// F32 acquiring institution (the upstream participant id).
    pub acquirer: Option<InstitutionId>,
    /// F33 forwarding institution.
    pub forwarder: Option<InstitutionId>,
    /// F37 retrieval reference number.
    pub rrn: Option<Rrn>,
    /// F38 authorization id (responses).
    pub auth_id: Option<AuthId>,
    /// F39 response code (responses).
    pub response_code: Option<ResponseCode>,
    /// F41 terminal id.
    pub terminal_id: Option<TerminalId>,
    /// F42 merchant id.
    pub merchant_id: Option<MerchantId>,
    /// F49 currency.
    pub currency: Option<Currency>,
    /// F70 network management code.
    pub network_code: Option<NetworkCode>,
    /// F90 original data elements (reversals, advices, inquiries).
    pub original: Option<OriginalData>,
    /// F100 destination bank code.
    pub receiving_bank: Option<BankCode>,
    /// Debtor's bank (ISO 20022 debtor agent); not carried upstream.
    pub sending_bank: Option<BankCode>,
    /// F102 debtor account.
    pub debtor_account: Option<Account>,
    /// F103 creditor account.
    pub creditor_account: Option<Account>,
    /// F120 FPS proxy id of the creditor.
    pub proxy: Option<ProxyId>,
    /// F123 idempotency key.
    pub idempotency_key: Option<IdempotencyKey>,
    /// F64/F128 MAC as its field's logical value (raw bytes for a binary
    /// field, hex text for a text field; see
    /// [`AuthSlot`](crate::AuthSlot)). Made and verified by the switch, never
    /// by the codec.
    pub mac: Option<MacValue>,
    /// Detached signature over the message body (ISO 20022 envelope `Sgntr`,
    /// JSON `signature`). Made and verified by the switch, never by the codec.
    pub signature: Option<SignatureValue>,
    /// Set only by
    /// [`MessageCodec::decode_authenticated`](crate::MessageCodec::decode_authenticated):
    /// the exact bytes the received `mac` or `signature` covers. Never encoded.
    pub auth_input: Option<AuthInput>,
    /// ISO 20022 message id / JSON request id.
    pub message_id: Option<MessageId>,
    /// ISO 20022 end-to-end id.
    pub end_to_end_id: Option<EndToEndId>,
    /// ISO 20022 transaction id.
    pub transaction_id: Option<EndToEndId>,
    /// ISO 20022 UETR.
    pub uetr: Option<Uetr>,
    /// Message id of the original message (pacs.002, pacs.028, camt.056, pacs.004).
    pub original_message_id: Option<MessageId>,
    /// Interbank settlement date.
    pub settlement_date: Option<SettlementDate>,
    /// Debtor name.
    pub debtor_name: Option<PartyName>,
    /// Creditor name.
    pub creditor_name: Option<PartyName>,
    /// ISO 20022 status reason code (e.g. `AC01`), alongside `response_code`.
    pub reason: Option<ReasonCode>,
}

impl Transaction {
    /// An empty message of the given MTI: fill the fields you need.
    pub fn new(mti: Mti) -> Self {
        Transaction {
            mti,
            pan: None,
            processing_code: None,
            amount: None,
            transmitted_at: None,
            stan: None,
            local_time: None,
            local_date: None,
            acquirer: None,
            forwarder: None,
            rrn: None,
            auth_id: None,
            response_code: None,
            terminal_id: None,
            merchant_id: None,
            currency: None,
            network_code: None,
            original: None,
            receiving_bank: None,
            sending_bank: None,
            debtor_account: None,
            creditor_account: None,
            proxy: None,
            idempotency_key: None,
            mac: None,
            signature: None,
            auth_input: None,
            message_id: None,
            end_to_end_id: None,
            transaction_id: None,
            uetr: None,
            original_message_id: None,
            settlement_date: None,
            debtor_name: None,
            creditor_name: None,
            reason: None,
        }
    }

    /// What this message is, if the switch handles its MTI class.
    pub fn kind(&self) -> Option<TxnKind> {
        match TxnKind::of_mti(self.mti)? {
            TxnKind::CreditTransfer if self.processing_code == Some(ProcessingCode::RETURN) => {
                Some(TxnKind::Return)
            }
            kind => Some(kind),
        }
    }

    /// Whether this message answers another.
    pub fn is_response(&self) -> bool {
        self.mti.is_response()
    }

    /// A response to this request carrying `code`: the response MTI and the
    /// fields a client matches on and expects echoed (DESIGN.md), no MAC or
    /// signature.
    pub fn response(&self, code: ResponseCode) -> Transaction {
        let mut r = Transaction::new(self.mti.response());
        r.processing_code = self.processing_code;
        r.amount = self.amount;
        r.transmitted_at = self.transmitted_at;
        r.stan = self.stan;
        r.local_time = self.local_time;
        r.local_date = self.local_date;
        r.acquirer = self.acquirer;
        r.forwarder = self.forwarder;
        r.rrn = self.rrn;
        r.response_code = Some(code);
        r.terminal_id = self.terminal_id;
        r.merchant_id = self.merchant_id;
        r.currency = self.currency;
        r.network_code = self.network_code;
        r.original = self.original;
        r.receiving_bank = self.receiving_bank;
        r.sending_bank = self.sending_bank;
        r.settlement_date = self.settlement_date;
        r.idempotency_key = self.idempotency_key;
        r.message_id = self.message_id;
        r.end_to_end_id = self.end_to_end_id;
        r.transaction_id = self.transaction_id;
        r.uetr = self.uetr;
        r.original_message_id = self.message_id;
        r
    }

    /// The original data elements (F90) that a reversal or inquiry of this
    /// request must carry.
    pub fn original_data(&self) -> Option<OriginalData> {
        Some(OriginalData {
            mti: self.mti.request(),
            stan: self.stan?,
            transmitted_at: self.transmitted_at?,
            acquirer: OriginalData::pad_institution(self.acquirer.as_ref()),
            forwarder: OriginalData::pad_institution(self.forwarder.as_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transaction is moved and cloned several times per request: its
    /// rare long fields (proxy id, party names) live on the heap so that it
    /// stays small. This guards against one creeping back inline.
    #[test]
    fn a_transaction_stays_small() {
        assert!(
            std::mem::size_of::<Transaction>() <= 800,
            "{} bytes",
            std::mem::size_of::<Transaction>()
        );
        assert!(std::mem::size_of::<ProxyId>() <= 24);
        assert!(std::mem::size_of::<PartyName>() <= 16);
    }

    #[test]
    fn kinds_follow_mti_class_and_function() {
        assert_eq!(
            TxnKind::of_mti(Mti::CREDIT_TRANSFER),
            Some(TxnKind::CreditTransfer)
        );
        assert_eq!(
            TxnKind::of_mti(Mti::REVERSAL.repeat()),
            Some(TxnKind::Reversal)
        );
        assert_eq!(
            TxnKind::of_mti(Mti::REVERSAL_ADVICE),
            Some(TxnKind::ReversalAdvice)
        );
        assert_eq!(
            TxnKind::of_mti(Mti::NETWORK_RESPONSE),
            Some(TxnKind::NetworkManagement)
        );
        assert_eq!(TxnKind::of_mti(Mti::parse(b"0100").unwrap()), None);
        for k in [
            TxnKind::CreditTransfer,
            TxnKind::Reversal,
            TxnKind::ReversalAdvice,
            TxnKind::StatusInquiry,
            TxnKind::NetworkManagement,
        ] {
            assert_eq!(TxnKind::of_mti(k.request_mti()), Some(k));
        }
    }

    #[test]
    fn response_echoes_matching_fields() {
        let mut req = Transaction::new(Mti::CREDIT_TRANSFER);
        req.stan = Some(Stan::new(42).unwrap());
        req.rrn = Some(Rrn::parse(b"000000000042").unwrap());
        req.terminal_id = Some(TerminalId::parse(b"TERM0001").unwrap());
        req.debtor_account = Some(Account::parse(b"12345678").unwrap());
        let resp = req.response(ResponseCode::APPROVED);
        assert_eq!(resp.mti, Mti::CREDIT_TRANSFER_RESPONSE);
        assert_eq!(resp.stan, req.stan);
        assert_eq!(resp.rrn, req.rrn);
        assert_eq!(resp.terminal_id, req.terminal_id);
        assert_eq!(resp.debtor_account, None);
        assert!(resp.response_code.unwrap().is_approved());
    }
}
