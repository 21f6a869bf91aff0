//! The message types and members of the JSON dialect, which members each type
//! carries, and the checks both directions share (so that the encoder never
//! writes a document its own decoder would refuse).

use crate::model::{Mti, ProcessingCode, ResponseCode, Transaction, TxnKind, ValueError};
use crate::{CodecError, Location};

/// ISO 8583 processing code of a return of funds (class `20`, "returns"). A
/// canonical `0200`/`0210` carrying it is a JSON `return` / `return_result`.
pub const RETURN_PROCESSING_CODE: &[u8; 6] = b"200000";

/// ISO 8583 response code `09` "request in progress": what a `pending` status
/// maps to.
pub const PENDING_RESPONSE_CODE: &[u8; 2] = b"09";

/// The processing code of a return.
pub(super) fn return_processing_code() -> ProcessingCode {
    // Six ASCII digits, which `ProcessingCode::parse` always accepts.
    ProcessingCode::parse(RETURN_PROCESSING_CODE).expect("six digits")
}

fn pending_code() -> ResponseCode {
    // Two ASCII digits, which `ResponseCode::parse` always accepts.
    ResponseCode::parse(PENDING_RESPONSE_CODE).expect("two digits")
}

/// The `type` member: one per canonical kind and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MsgType {
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

impl MsgType {
    /// Every type, requests and results alternating.
    #[cfg(test)]
    pub(super) const ALL: [MsgType; 12] = [
        MsgType::CreditTransfer,
        MsgType::CreditTransferResult,
        MsgType::Cancel,
        MsgType::CancelResult,
        MsgType::ReversalAdvice,
        MsgType::ReversalAdviceResult,
        MsgType::StatusInquiry,
        MsgType::StatusInquiryResult,
        MsgType::Network,
        MsgType::NetworkResult,
        MsgType::Return,
        MsgType::ReturnResult,
    ];

    /// The wire name.
    pub(super) fn name(self) -> &'static str {
        match self {
            MsgType::CreditTransfer => "credit_transfer",
            MsgType::CreditTransferResult => "credit_transfer_result",
            MsgType::Cancel => "cancel",
            MsgType::CancelResult => "cancel_result",
            MsgType::ReversalAdvice => "reversal_advice",
            MsgType::ReversalAdviceResult => "reversal_advice_result",
            MsgType::StatusInquiry => "status_inquiry",
            MsgType::StatusInquiryResult => "status_inquiry_result",
            MsgType::Network => "network",
            MsgType::NetworkResult => "network_result",
            MsgType::Return => "return",
            MsgType::ReturnResult => "return_result",
        }
    }

    /// Parse the wire name.
    pub(super) fn parse(name: &str) -> Result<MsgType, ValueError> {
        Ok(match name {
            "credit_transfer" => MsgType::CreditTransfer,
            "credit_transfer_result" => MsgType::CreditTransferResult,
            "cancel" => MsgType::Cancel,
            "cancel_result" => MsgType::CancelResult,
            "reversal_advice" => MsgType::ReversalAdvice,
            "reversal_advice_result" => MsgType::ReversalAdviceResult,
            "status_inquiry" => MsgType::StatusInquiry,
            "status_inquiry_result" => MsgType::StatusInquiryResult,
            "network" => MsgType::Network,
            "network_result" => MsgType::NetworkResult,
            "return" => MsgType::Return,
            "return_result" => MsgType::ReturnResult,
            _ => return Err(ValueError::new("message type", "unknown type")),
        })
    }

    /// Whether this type answers a request.
    pub(super) fn is_result(self) -> bool {
        matches!(
            self,
            MsgType::CreditTransferResult
                | MsgType::CancelResult
                | MsgType::ReversalAdviceResult
                | MsgType::StatusInquiryResult
                | MsgType::NetworkResult
                | MsgType::ReturnResult
        )
    }

    /// The canonical MTI (origin digit 0).
    pub(super) fn mti(self) -> Mti {
        match self {
            MsgType::CreditTransfer | MsgType::Return => Mti::CREDIT_TRANSFER,
            MsgType::CreditTransferResult | MsgType::ReturnResult => Mti::CREDIT_TRANSFER_RESPONSE,
            MsgType::Cancel => Mti::REVERSAL,
            MsgType::CancelResult => Mti::REVERSAL_RESPONSE,
            MsgType::ReversalAdvice => Mti::REVERSAL_ADVICE,
            MsgType::ReversalAdviceResult => Mti::REVERSAL_ADVICE_RESPONSE,
            MsgType::StatusInquiry => Mti::STATUS_INQUIRY,
            MsgType::StatusInquiryResult => Mti::STATUS_INQUIRY_RESPONSE,
            MsgType::Network => Mti::NETWORK,
            MsgType::NetworkResult => Mti::NETWORK_RESPONSE,
        }
    }

    /// The canonical processing code the type implies (class 2 only).
    pub(super) fn processing_code(self) -> Option<ProcessingCode> {
        match self {
            MsgType::CreditTransfer | MsgType::CreditTransferResult => {
                Some(ProcessingCode::CREDIT_TRANSFER)
            }
            MsgType::Return | MsgType::ReturnResult => Some(return_processing_code()),
            _ => None,
        }
    }

    /// The type of a canonical message, refusing MTIs and processing codes
    /// this dialect cannot express.
    pub(super) fn of(txn: &Transaction) -> Result<MsgType, CodecError> {
        const NO_TYPE: CodecError = CodecError::Invalid {
            at: Location::Mti,
            reason: "no JSON message type for this MTI",
        };
        let result = txn.is_response();
        let pick = |request, response| if result { response } else { request };
        let ty = match txn.kind().ok_or(NO_TYPE)? {
            TxnKind::CreditTransfer | TxnKind::Return => match txn.processing_code {
                None | Some(ProcessingCode::CREDIT_TRANSFER) => {
                    pick(MsgType::CreditTransfer, MsgType::CreditTransferResult)
                }
                Some(pc) if pc.as_bytes() == RETURN_PROCESSING_CODE => {
                    pick(MsgType::Return, MsgType::ReturnResult)
                }
                Some(_) => {
                    return Err(CodecError::Invalid {
                        at: Location::Field(3),
                        reason: "processing code has no JSON message type",
                    })
                }
            },
            TxnKind::Reversal => pick(MsgType::Cancel, MsgType::CancelResult),
            TxnKind::ReversalAdvice => pick(MsgType::ReversalAdvice, MsgType::ReversalAdviceResult),
            TxnKind::StatusInquiry => pick(MsgType::StatusInquiry, MsgType::StatusInquiryResult),
            TxnKind::NetworkManagement => pick(MsgType::Network, MsgType::NetworkResult),
        };
        // Only ISO 8583:1987 MTIs, with the repeat flag on requests.
        let base = ty.mti();
        if txn.mti == base || (!result && txn.mti == base.repeat()) {
            Ok(ty)
        } else {
            Err(NO_TYPE)
        }
    }

    /// The members this type may carry. The decoder refuses others; the
    /// encoder does not write canonical fields outside this set.
    pub(super) fn allowed(self) -> Members {
        use Member as M;
        const IDS: Members = Members::of(&[
            M::Type,
            M::RequestId,
            M::EndToEndId,
            M::TransactionId,
            M::Uetr,
            M::TransmittedAt,
            M::Stan,
            M::Rrn,
            M::Acquirer,
            M::TerminalId,
            M::MerchantId,
            M::IdempotencyKey,
            M::Original,
        ]);
        const PAYMENT: Members =
            Members::of(&[M::Amount, M::Debtor, M::Creditor, M::SettlementDate]);
        const RESULT: Members = Members::of(&[M::Status, M::Code, M::Reason, M::AuthId]);
        const NETWORK: Members = Members::of(&[
            M::Type,
            M::RequestId,
            M::TransmittedAt,
            M::Stan,
            M::Rrn,
            M::Acquirer,
            M::Action,
        ]);
        const REPEAT: Members = Members::of(&[M::Repeat]);
        const REASON: Members = Members::of(&[M::Reason]);
        match self {
            MsgType::CreditTransfer | MsgType::StatusInquiry => IDS.with(PAYMENT).with(REPEAT),
            MsgType::Cancel | MsgType::ReversalAdvice | MsgType::Return => {
                IDS.with(PAYMENT).with(REPEAT).with(REASON)
            }
            MsgType::Network => NETWORK.with(REPEAT),
            MsgType::NetworkResult => NETWORK.with(Members::of(&[M::Status, M::Code, M::Reason])),
            MsgType::CreditTransferResult
            | MsgType::CancelResult
            | MsgType::ReversalAdviceResult
            | MsgType::StatusInquiryResult
            | MsgType::ReturnResult => IDS.with(PAYMENT).with(RESULT),
        }
    }
}

/// What a result says happened, the `status` member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Approved,
    Declined,
    Pending,
}

impl Status {
    pub(super) fn name(self) -> &'static str {
        match self {
            Status::Approved => "approved",
            Status::Declined => "declined",
            Status::Pending => "pending",
        }
    }

    pub(super) fn parse(name: &str) -> Result<Status, ValueError> {
        match name {
            "approved" => Ok(Status::Approved),
            "declined" => Ok(Status::Declined),
            "pending" => Ok(Status::Pending),
            _ => Err(ValueError::new(
                "status",
                "not approved, declined or pending",
            )),
        }
    }

    /// The status a canonical response code reports.
    pub(super) fn of(code: ResponseCode) -> Status {
        if code.is_approved() {
            Status::Approved
        } else if code == pending_code() {
            Status::Pending
        } else {
            Status::Declined
        }
    }

    /// The response code of a result: `code` when present (it must agree with
    /// the status), else `00`, `09` or `05` for approved, pending, declined.
    pub(super) fn response_code(
        self,
        code: Option<ResponseCode>,
    ) -> Result<ResponseCode, CodecError> {
        match code {
            Some(c) if Status::of(c) == self => Ok(c),
            Some(_) => Err(CodecError::Invalid {
                at: Location::Element("code"),
                reason: "disagrees with status",
            }),
            None => Ok(match self {
                Status::Approved => ResponseCode::APPROVED,
                Status::Pending => pending_code(),
                Status::Declined => ResponseCode::DO_NOT_HONOUR,
            }),
        }
    }
}

/// A member of the top-level object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Member {
    Type,
    RequestId,
    Repeat,
    EndToEndId,
    TransactionId,
    Uetr,
    Amount,
    Debtor,
    Creditor,
    SettlementDate,
    TransmittedAt,
    Stan,
    Rrn,
    Acquirer,
    TerminalId,
    MerchantId,
    IdempotencyKey,
    Original,
    Action,
    Status,
    Code,
    Reason,
    AuthId,
}

impl Member {
    /// Every member, in bit order.
    pub(super) const ALL: [Member; 23] = [
        Member::Type,
        Member::RequestId,
        Member::Repeat,
        Member::EndToEndId,
        Member::TransactionId,
        Member::Uetr,
        Member::Amount,
        Member::Debtor,
        Member::Creditor,
        Member::SettlementDate,
        Member::TransmittedAt,
        Member::Stan,
        Member::Rrn,
        Member::Acquirer,
        Member::TerminalId,
        Member::MerchantId,
        Member::IdempotencyKey,
        Member::Original,
        Member::Action,
        Member::Status,
        Member::Code,
        Member::Reason,
        Member::AuthId,
    ];

    /// Member names in bit order, for key lookup.
    pub(super) const NAMES: [&'static str; 23] = [
        "type",
        "request_id",
        "repeat",
        "end_to_end_id",
        "transaction_id",
        "uetr",
        "amount",
        "debtor",
        "creditor",
        "settlement_date",
        "transmitted_at",
        "stan",
        "rrn",
        "acquirer",
        "terminal_id",
        "merchant_id",
        "idempotency_key",
        "original",
        "action",
        "status",
        "code",
        "reason",
        "auth_id",
    ];

    /// The wire name, which is also its path in errors.
    pub(super) const fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// A set of top-level members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Members(u32);

impl Members {
    pub(super) const fn of(members: &[Member]) -> Members {
        let mut bits = 0;
        let mut i = 0;
        while i < members.len() {
            bits |= members[i].bit();
            i += 1;
        }
        Members(bits)
    }

    const fn with(self, other: Members) -> Members {
        Members(self.0 | other.0)
    }

    pub(super) fn contains(self, m: Member) -> bool {
        self.0 & m.bit() != 0
    }

    pub(super) fn insert(&mut self, m: Member) {
        self.0 |= m.bit();
    }

    /// The first member of `self` outside `allowed`, in bit order.
    pub(super) fn first_outside(self, allowed: Members) -> Option<Member> {
        let extra = self.0 & !allowed.0;
        Member::ALL.iter().copied().find(|m| extra & m.bit() != 0)
    }
}

/// The members each type requires, checked on the canonical values so that
/// decode and encode agree. Paths name the JSON member to fill in.
pub(super) fn check_required(ty: MsgType, txn: &Transaction) -> Result<(), CodecError> {
    let need = |present: bool, path: &'static str| {
        if present {
            Ok(())
        } else {
            Err(CodecError::Missing {
                at: Location::Element(path),
            })
        }
    };
    need(txn.message_id.is_some(), "request_id")?;
    if ty.is_result() {
        need(txn.response_code.is_some(), "status")?;
    }
    match ty {
        MsgType::CreditTransfer => {
            need(txn.amount.is_some(), "amount")?;
            need(txn.debtor_account.is_some(), "debtor.account")?;
            need(
                txn.creditor_account.is_some() || txn.proxy.is_some(),
                "creditor.account",
            )
        }
        MsgType::Return => {
            need(txn.amount.is_some(), "amount")?;
            need(txn.original_message_id.is_some(), "original.request_id")?;
            need(txn.reason.is_some(), "reason")
        }
        MsgType::Cancel | MsgType::ReversalAdvice | MsgType::StatusInquiry => {
            need(txn.original_message_id.is_some(), "original.request_id")
        }
        MsgType::Network => need(txn.network_code.is_some(), "action"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for ty in MsgType::ALL {
            assert_eq!(MsgType::parse(ty.name()), Ok(ty));
            assert_eq!(ty.is_result(), ty.mti().is_response(), "{ty:?}");
            assert!(ty.allowed().contains(Member::Type));
            assert!(ty.allowed().contains(Member::RequestId));
            assert_eq!(ty.allowed().contains(Member::Status), ty.is_result());
            assert_eq!(ty.allowed().contains(Member::Repeat), !ty.is_result());
        }
        for (i, m) in Member::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
            assert_eq!(Member::NAMES.iter().filter(|n| **n == m.name()).count(), 1);
        }
        assert!(MsgType::parse("CREDIT_TRANSFER").is_err());
    }

    #[test]
    fn type_of_canonical_messages() {
        let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
        assert_eq!(MsgType::of(&t), Ok(MsgType::CreditTransfer));
        t.processing_code = Some(return_processing_code());
        assert_eq!(MsgType::of(&t), Ok(MsgType::Return));
        t.mti = t.mti.repeat();
        assert_eq!(MsgType::of(&t), Ok(MsgType::Return));
        t.processing_code = Some(ProcessingCode::PURCHASE);
        assert_eq!(MsgType::of(&t).unwrap_err().location(), Location::Field(3));
        for mti in [&b"0100"[..], b"1200", b"0211", b"0402", b"0220"] {
            let t = Transaction::new(Mti::parse(mti).unwrap());
            assert_eq!(MsgType::of(&t).unwrap_err().location(), Location::Mti);
        }
    }

    #[test]
    fn status_and_code_must_agree() {
        let declined = Status::Declined.response_code(None).unwrap();
        assert_eq!(declined, ResponseCode::DO_NOT_HONOUR);
        assert_eq!(Status::of(pending_code()), Status::Pending);
        assert!(Status::Approved
            .response_code(Some(ResponseCode::INSUFFICIENT_FUNDS))
            .is_err());
        assert!(Status::Declined
            .response_code(Some(ResponseCode::APPROVED))
            .is_err());
        assert_eq!(
            Status::Declined.response_code(Some(ResponseCode::INSUFFICIENT_FUNDS)),
            Ok(ResponseCode::INSUFFICIENT_FUNDS)
        );
    }
}
