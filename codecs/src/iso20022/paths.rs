//! Element names and the paths the decoder captures, per message.
//!
//! Paths are relative to the message element (`FIToFICstmrCdtTrf`, ...) and
//! matched as slices of [`Tag`]s, so the lookup is a compiled `match`, not a
//! string comparison per element. Every path also has a static text form used
//! in errors (`Location::Element`).

use super::MessageType;

/// Declares the element names the codec knows, with `Tag::from_local`.
macro_rules! tags {
    ($($name:ident),* $(,)?) => {
        /// An ISO 20022 element local name the codec knows; `Other` for the rest.
        #[allow(clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Tag { $($name,)* Other }

        impl Tag {
            /// The tag of a local name in the message namespace.
            pub(crate) fn from_local(local: &str) -> Tag {
                match local { $(stringify!($name) => Tag::$name,)* _ => Tag::Other }
            }

            /// The local name, for error locations.
            pub(crate) fn name(self) -> &'static str {
                match self { $(Tag::$name => stringify!($name),)* Tag::Other => "(unknown element)" }
            }
        }
    };
}

tags!(
    FIToFICstmrCdtTrf,
    FIToFIPmtStsRpt,
    FIToFIPmtStsReq,
    PmtRtr,
    FIToFIPmtCxlReq,
    RsltnOfInvstgtn,
    GrpHdr,
    MsgId,
    CreDtTm,
    NbOfTxs,
    SttlmInf,
    SttlmMtd,
    CdtTrfTxInf,
    PmtId,
    EndToEndId,
    TxId,
    UETR,
    IntrBkSttlmAmt,
    IntrBkSttlmDt,
    Dbtr,
    Nm,
    DbtrAcct,
    Id,
    Othr,
    IBAN,
    DbtrAgt,
    FinInstnId,
    ClrSysMmbId,
    MmbId,
    CdtrAgt,
    Cdtr,
    CdtrAcct,
    Prxy,
    Tp,
    Cd,
    Prtry,
    TxInfAndSts,
    OrgnlGrpInf,
    OrgnlGrpInfAndSts,
    OrgnlMsgId,
    OrgnlMsgNmId,
    OrgnlEndToEndId,
    OrgnlTxId,
    OrgnlUETR,
    TxSts,
    StsRsnInf,
    Rsn,
    OrgnlTxRef,
    TxInf,
    Assgnmt,
    Assgnr,
    Assgne,
    Agt,
    Undrlyg,
    CxlId,
    OrgnlIntrBkSttlmAmt,
    OrgnlIntrBkSttlmDt,
    CxlRsnInf,
    Sts,
    Conf,
    CxlDtls,
    TxCxlSts,
    CxlStsRsnInf,
    RtrId,
    RtrdIntrBkSttlmAmt,
    RtrRsnInf,
    InstgAgt,
    InstdAgt,
);

/// What a captured element means. Each field may occur once per message
/// (a bit in the decoder's `seen` set), which is how duplicates are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Field {
    /// The group header block.
    GrpHdr,
    /// The single transaction block (`CdtTrfTxInf`, `TxInfAndSts`, `TxInf`, ...).
    TxBlock,
    /// camt.056 `Undrlyg` / camt.029 `CxlDtls`: one per message.
    Underlying,
    MsgId,
    CreDtTm,
    NbOfTxs,
    SttlmMtd,
    EndToEndId,
    TxId,
    Uetr,
    /// An amount with a `Ccy` attribute; the transaction's amount.
    Amount,
    SettlementDate,
    DebtorName,
    DebtorAccount,
    /// The debtor's bank (`sending_bank`).
    SendingBank,
    /// The creditor's / destination bank (`receiving_bank`).
    ReceivingBank,
    CreditorName,
    CreditorAccount,
    ProxyType,
    ProxyId,
    OrgnlMsgId,
    OrgnlMsgNmId,
    /// Group-level original message id (fallback for the transaction-level one).
    GroupOrgnlMsgId,
    GroupOrgnlMsgNmId,
    /// pacs.002 `TxSts`.
    TxStatus,
    /// camt.029 `TxCxlSts`.
    CancellationStatus,
    /// camt.029 `Sts/Conf`.
    Confirmation,
    /// Status, cancellation or return reason code.
    Reason,
    /// pacs.004 `RtrId` / camt.056 `CxlId`: the idempotency key.
    CaseId,
}

impl Field {
    /// The bit of this field in the `seen` set.
    pub(crate) fn bit(self) -> u64 {
        1u64 << (self as u8)
    }

    /// Whether the element's text is kept verbatim (identifiers, names).
    pub(crate) fn keeps_whitespace(self) -> bool {
        matches!(
            self,
            Field::MsgId
                | Field::EndToEndId
                | Field::TxId
                | Field::OrgnlMsgId
                | Field::GroupOrgnlMsgId
                | Field::CaseId
                | Field::DebtorName
                | Field::CreditorName
        )
    }

    /// Whether the field is a block (no text of its own).
    pub(crate) fn is_block(self) -> bool {
        matches!(self, Field::GrpHdr | Field::TxBlock | Field::Underlying)
    }
}

/// A path the decoder captures: what it is and its text for errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub field: Field,
    pub path: &'static str,
}

const fn hit(field: Field, path: &'static str) -> Option<Hit> {
    Some(Hit { field, path })
}

/// Which field, if any, the element at `path` (under the message element) is.
pub(crate) fn lookup(msg: MessageType, path: &[Tag]) -> Option<Hit> {
    match msg {
        MessageType::Pacs008 => pacs008(path),
        MessageType::Pacs002 => pacs002(path),
        MessageType::Pacs028 => pacs028(path),
        MessageType::Pacs004 => pacs004(path),
        MessageType::Camt056 => camt056(path),
        MessageType::Camt029 => camt029(path),
    }
}

use Field as F;
use Tag::*;

fn pacs008(path: &[Tag]) -> Option<Hit> {
    match path {
        [GrpHdr] => hit(F::GrpHdr, "GrpHdr"),
        [GrpHdr, MsgId] => hit(F::MsgId, "GrpHdr/MsgId"),
        [GrpHdr, CreDtTm] => hit(F::CreDtTm, "GrpHdr/CreDtTm"),
        [GrpHdr, NbOfTxs] => hit(F::NbOfTxs, "GrpHdr/NbOfTxs"),
        [GrpHdr, SttlmInf, SttlmMtd] => hit(F::SttlmMtd, "GrpHdr/SttlmInf/SttlmMtd"),
        [CdtTrfTxInf] => hit(F::TxBlock, "CdtTrfTxInf"),
        [CdtTrfTxInf, rest @ ..] => match rest {
            [PmtId, EndToEndId] => hit(F::EndToEndId, "CdtTrfTxInf/PmtId/EndToEndId"),
            [PmtId, TxId] => hit(F::TxId, "CdtTrfTxInf/PmtId/TxId"),
            [PmtId, UETR] => hit(F::Uetr, "CdtTrfTxInf/PmtId/UETR"),
            [IntrBkSttlmAmt] => hit(F::Amount, "CdtTrfTxInf/IntrBkSttlmAmt"),
            [IntrBkSttlmDt] => hit(F::SettlementDate, "CdtTrfTxInf/IntrBkSttlmDt"),
            [Dbtr, Nm] => hit(F::DebtorName, "CdtTrfTxInf/Dbtr/Nm"),
            [DbtrAcct, Id, Othr, Id] | [DbtrAcct, Id, IBAN] => {
                hit(F::DebtorAccount, "CdtTrfTxInf/DbtrAcct/Id")
            }
            [DbtrAgt, FinInstnId, ClrSysMmbId, MmbId] => hit(
                F::SendingBank,
                "CdtTrfTxInf/DbtrAgt/FinInstnId/ClrSysMmbId/MmbId",
            ),
            [CdtrAgt, FinInstnId, ClrSysMmbId, MmbId] => hit(
                F::ReceivingBank,
                "CdtTrfTxInf/CdtrAgt/FinInstnId/ClrSysMmbId/MmbId",
            ),
            [Cdtr, Nm] => hit(F::CreditorName, "CdtTrfTxInf/Cdtr/Nm"),
            [CdtrAcct, Id, Othr, Id] | [CdtrAcct, Id, IBAN] => {
                hit(F::CreditorAccount, "CdtTrfTxInf/CdtrAcct/Id")
            }
            [CdtrAcct, Prxy, Tp, Cd | Prtry] => hit(F::ProxyType, "CdtTrfTxInf/CdtrAcct/Prxy/Tp"),
            [CdtrAcct, Prxy, Id] => hit(F::ProxyId, "CdtTrfTxInf/CdtrAcct/Prxy/Id"),
            _ => None,
        },
        _ => None,
    }
}

fn pacs002(path: &[Tag]) -> Option<Hit> {
    match path {
        [GrpHdr] => hit(F::GrpHdr, "GrpHdr"),
        [GrpHdr, MsgId] => hit(F::MsgId, "GrpHdr/MsgId"),
        [GrpHdr, CreDtTm] => hit(F::CreDtTm, "GrpHdr/CreDtTm"),
        [OrgnlGrpInfAndSts, OrgnlMsgId] => hit(F::GroupOrgnlMsgId, "OrgnlGrpInfAndSts/OrgnlMsgId"),
        [OrgnlGrpInfAndSts, OrgnlMsgNmId] => {
            hit(F::GroupOrgnlMsgNmId, "OrgnlGrpInfAndSts/OrgnlMsgNmId")
        }
        [TxInfAndSts] => hit(F::TxBlock, "TxInfAndSts"),
        [TxInfAndSts, rest @ ..] => match rest {
            [OrgnlGrpInf, OrgnlMsgId] => hit(F::OrgnlMsgId, "TxInfAndSts/OrgnlGrpInf/OrgnlMsgId"),
            [OrgnlGrpInf, OrgnlMsgNmId] => {
                hit(F::OrgnlMsgNmId, "TxInfAndSts/OrgnlGrpInf/OrgnlMsgNmId")
            }
            [OrgnlEndToEndId] => hit(F::EndToEndId, "TxInfAndSts/OrgnlEndToEndId"),
            [OrgnlTxId] => hit(F::TxId, "TxInfAndSts/OrgnlTxId"),
            [OrgnlUETR] => hit(F::Uetr, "TxInfAndSts/OrgnlUETR"),
            [TxSts] => hit(F::TxStatus, "TxInfAndSts/TxSts"),
            [StsRsnInf, Rsn, Cd | Prtry] => hit(F::Reason, "TxInfAndSts/StsRsnInf/Rsn"),
            [OrgnlTxRef, rest @ ..] => original_tx_ref(rest, TX_REF_PACS002),
            _ => None,
        },
        _ => None,
    }
}

fn pacs028(path: &[Tag]) -> Option<Hit> {
    match path {
        [GrpHdr] => hit(F::GrpHdr, "GrpHdr"),
        [GrpHdr, MsgId] => hit(F::MsgId, "GrpHdr/MsgId"),
        [GrpHdr, CreDtTm] => hit(F::CreDtTm, "GrpHdr/CreDtTm"),
        [OrgnlGrpInf, OrgnlMsgId] => hit(F::GroupOrgnlMsgId, "OrgnlGrpInf/OrgnlMsgId"),
        [TxInf] => hit(F::TxBlock, "TxInf"),
        [TxInf, rest @ ..] => match rest {
            [OrgnlGrpInf, OrgnlMsgId] => hit(F::OrgnlMsgId, "TxInf/OrgnlGrpInf/OrgnlMsgId"),
            [OrgnlGrpInf, OrgnlMsgNmId] => hit(F::OrgnlMsgNmId, "TxInf/OrgnlGrpInf/OrgnlMsgNmId"),
            [OrgnlEndToEndId] => hit(F::EndToEndId, "TxInf/OrgnlEndToEndId"),
            [OrgnlTxId] => hit(F::TxId, "TxInf/OrgnlTxId"),
            [OrgnlUETR] => hit(F::Uetr, "TxInf/OrgnlUETR"),
            [OrgnlTxRef, rest @ ..] => original_tx_ref(rest, TX_REF_PACS028),
            _ => None,
        },
        _ => None,
    }
}

fn pacs004(path: &[Tag]) -> Option<Hit> {
    match path {
        [GrpHdr] => hit(F::GrpHdr, "GrpHdr"),
        [GrpHdr, MsgId] => hit(F::MsgId, "GrpHdr/MsgId"),
        [GrpHdr, CreDtTm] => hit(F::CreDtTm, "GrpHdr/CreDtTm"),
        [GrpHdr, NbOfTxs] => hit(F::NbOfTxs, "GrpHdr/NbOfTxs"),
        [GrpHdr, SttlmInf, SttlmMtd] => hit(F::SttlmMtd, "GrpHdr/SttlmInf/SttlmMtd"),
        [OrgnlGrpInf, OrgnlMsgId] => hit(F::GroupOrgnlMsgId, "OrgnlGrpInf/OrgnlMsgId"),
        [TxInf] => hit(F::TxBlock, "TxInf"),
        [TxInf, rest @ ..] => match rest {
            [RtrId] => hit(F::CaseId, "TxInf/RtrId"),
            [OrgnlGrpInf, OrgnlMsgId] => hit(F::OrgnlMsgId, "TxInf/OrgnlGrpInf/OrgnlMsgId"),
            [OrgnlGrpInf, OrgnlMsgNmId] => hit(F::OrgnlMsgNmId, "TxInf/OrgnlGrpInf/OrgnlMsgNmId"),
            [OrgnlEndToEndId] => hit(F::EndToEndId, "TxInf/OrgnlEndToEndId"),
            [OrgnlTxId] => hit(F::TxId, "TxInf/OrgnlTxId"),
            [OrgnlUETR] => hit(F::Uetr, "TxInf/OrgnlUETR"),
            [RtrdIntrBkSttlmAmt] => hit(F::Amount, "TxInf/RtrdIntrBkSttlmAmt"),
            [IntrBkSttlmDt] => hit(F::SettlementDate, "TxInf/IntrBkSttlmDt"),
            [InstgAgt, FinInstnId, ClrSysMmbId, MmbId] => hit(
                F::SendingBank,
                "TxInf/InstgAgt/FinInstnId/ClrSysMmbId/MmbId",
            ),
            [InstdAgt, FinInstnId, ClrSysMmbId, MmbId] => hit(
                F::ReceivingBank,
                "TxInf/InstdAgt/FinInstnId/ClrSysMmbId/MmbId",
            ),
            [RtrRsnInf, Rsn, Cd | Prtry] => hit(F::Reason, "TxInf/RtrRsnInf/Rsn"),
            _ => None,
        },
        _ => None,
    }
}

fn camt056(path: &[Tag]) -> Option<Hit> {
    match path {
        [Assgnmt] => hit(F::GrpHdr, "Assgnmt"),
        [Assgnmt, Id] => hit(F::MsgId, "Assgnmt/Id"),
        [Assgnmt, CreDtTm] => hit(F::CreDtTm, "Assgnmt/CreDtTm"),
        [Assgnmt, Assgnr, Agt, FinInstnId, ClrSysMmbId, MmbId] => hit(
            F::SendingBank,
            "Assgnmt/Assgnr/Agt/FinInstnId/ClrSysMmbId/MmbId",
        ),
        [Assgnmt, Assgne, Agt, FinInstnId, ClrSysMmbId, MmbId] => hit(
            F::ReceivingBank,
            "Assgnmt/Assgne/Agt/FinInstnId/ClrSysMmbId/MmbId",
        ),
        [Undrlyg] => hit(F::Underlying, "Undrlyg"),
        [Undrlyg, TxInf] => hit(F::TxBlock, "Undrlyg/TxInf"),
        [Undrlyg, TxInf, rest @ ..] => match rest {
            [CxlId] => hit(F::CaseId, "Undrlyg/TxInf/CxlId"),
            [OrgnlGrpInf, OrgnlMsgId] => hit(F::OrgnlMsgId, "Undrlyg/TxInf/OrgnlGrpInf/OrgnlMsgId"),
            [OrgnlGrpInf, OrgnlMsgNmId] => {
                hit(F::OrgnlMsgNmId, "Undrlyg/TxInf/OrgnlGrpInf/OrgnlMsgNmId")
            }
            [OrgnlEndToEndId] => hit(F::EndToEndId, "Undrlyg/TxInf/OrgnlEndToEndId"),
            [OrgnlTxId] => hit(F::TxId, "Undrlyg/TxInf/OrgnlTxId"),
            [OrgnlUETR] => hit(F::Uetr, "Undrlyg/TxInf/OrgnlUETR"),
            [OrgnlIntrBkSttlmAmt] => hit(F::Amount, "Undrlyg/TxInf/OrgnlIntrBkSttlmAmt"),
            [OrgnlIntrBkSttlmDt] => hit(F::SettlementDate, "Undrlyg/TxInf/OrgnlIntrBkSttlmDt"),
            [CxlRsnInf, Rsn, Cd | Prtry] => hit(F::Reason, "Undrlyg/TxInf/CxlRsnInf/Rsn"),
            _ => None,
        },
        _ => None,
    }
}

fn camt029(path: &[Tag]) -> Option<Hit> {
    match path {
        [Assgnmt] => hit(F::GrpHdr, "Assgnmt"),
        [Assgnmt, Id] => hit(F::MsgId, "Assgnmt/Id"),
        [Assgnmt, CreDtTm] => hit(F::CreDtTm, "Assgnmt/CreDtTm"),
        // The assigner of a resolution is the bank that was asked to cancel.
        [Assgnmt, Assgnr, Agt, FinInstnId, ClrSysMmbId, MmbId] => hit(
            F::ReceivingBank,
            "Assgnmt/Assgnr/Agt/FinInstnId/ClrSysMmbId/MmbId",
        ),
        [Assgnmt, Assgne, Agt, FinInstnId, ClrSysMmbId, MmbId] => hit(
            F::SendingBank,
            "Assgnmt/Assgne/Agt/FinInstnId/ClrSysMmbId/MmbId",
        ),
        [Sts, Conf] => hit(F::Confirmation, "Sts/Conf"),
        [CxlDtls] => hit(F::Underlying, "CxlDtls"),
        [CxlDtls, TxInfAndSts] => hit(F::TxBlock, "CxlDtls/TxInfAndSts"),
        [CxlDtls, TxInfAndSts, rest @ ..] => match rest {
            [OrgnlGrpInf, OrgnlMsgId] => {
                hit(F::OrgnlMsgId, "CxlDtls/TxInfAndSts/OrgnlGrpInf/OrgnlMsgId")
            }
            [OrgnlGrpInf, OrgnlMsgNmId] => hit(
                F::OrgnlMsgNmId,
                "CxlDtls/TxInfAndSts/OrgnlGrpInf/OrgnlMsgNmId",
            ),
            [OrgnlEndToEndId] => hit(F::EndToEndId, "CxlDtls/TxInfAndSts/OrgnlEndToEndId"),
            [OrgnlTxId] => hit(F::TxId, "CxlDtls/TxInfAndSts/OrgnlTxId"),
            [OrgnlUETR] => hit(F::Uetr, "CxlDtls/TxInfAndSts/OrgnlUETR"),
            [TxCxlSts] => hit(F::CancellationStatus, "CxlDtls/TxInfAndSts/TxCxlSts"),
            [CxlStsRsnInf, Rsn, Cd | Prtry] => {
                hit(F::Reason, "CxlDtls/TxInfAndSts/CxlStsRsnInf/Rsn")
            }
            [OrgnlIntrBkSttlmAmt] => hit(F::Amount, "CxlDtls/TxInfAndSts/OrgnlIntrBkSttlmAmt"),
            [OrgnlIntrBkSttlmDt] => {
                hit(F::SettlementDate, "CxlDtls/TxInfAndSts/OrgnlIntrBkSttlmDt")
            }
            _ => None,
        },
        _ => None,
    }
}

/// Static paths of the `OrgnlTxRef` elements of one message.
struct TxRefPaths {
    amount: &'static str,
    date: &'static str,
    debtor_agent: &'static str,
    creditor_agent: &'static str,
}

const TX_REF_PACS002: TxRefPaths = TxRefPaths {
    amount: "TxInfAndSts/OrgnlTxRef/IntrBkSttlmAmt",
    date: "TxInfAndSts/OrgnlTxRef/IntrBkSttlmDt",
    debtor_agent: "TxInfAndSts/OrgnlTxRef/DbtrAgt/FinInstnId/ClrSysMmbId/MmbId",
    creditor_agent: "TxInfAndSts/OrgnlTxRef/CdtrAgt/FinInstnId/ClrSysMmbId/MmbId",
};

const TX_REF_PACS028: TxRefPaths = TxRefPaths {
    amount: "TxInf/OrgnlTxRef/IntrBkSttlmAmt",
    date: "TxInf/OrgnlTxRef/IntrBkSttlmDt",
    debtor_agent: "TxInf/OrgnlTxRef/DbtrAgt/FinInstnId/ClrSysMmbId/MmbId",
    creditor_agent: "TxInf/OrgnlTxRef/CdtrAgt/FinInstnId/ClrSysMmbId/MmbId",
};

fn original_tx_ref(rest: &[Tag], p: TxRefPaths) -> Option<Hit> {
    match rest {
        [IntrBkSttlmAmt] => hit(F::Amount, p.amount),
        [IntrBkSttlmDt] => hit(F::SettlementDate, p.date),
        [DbtrAgt, FinInstnId, ClrSysMmbId, MmbId] => hit(F::SendingBank, p.debtor_agent),
        [CdtrAgt, FinInstnId, ClrSysMmbId, MmbId] => hit(F::ReceivingBank, p.creditor_agent),
        _ => None,
    }
}

/// The `Ccy` attribute path of an amount element, for errors.
pub(crate) fn currency_path(amount_path: &'static str) -> &'static str {
    match amount_path {
        "CdtTrfTxInf/IntrBkSttlmAmt" => "CdtTrfTxInf/IntrBkSttlmAmt/@Ccy",
        "TxInfAndSts/OrgnlTxRef/IntrBkSttlmAmt" => "TxInfAndSts/OrgnlTxRef/IntrBkSttlmAmt/@Ccy",
        "TxInf/OrgnlTxRef/IntrBkSttlmAmt" => "TxInf/OrgnlTxRef/IntrBkSttlmAmt/@Ccy",
        "TxInf/RtrdIntrBkSttlmAmt" => "TxInf/RtrdIntrBkSttlmAmt/@Ccy",
        "Undrlyg/TxInf/OrgnlIntrBkSttlmAmt" => "Undrlyg/TxInf/OrgnlIntrBkSttlmAmt/@Ccy",
        "CxlDtls/TxInfAndSts/OrgnlIntrBkSttlmAmt" => "CxlDtls/TxInfAndSts/OrgnlIntrBkSttlmAmt/@Ccy",
        other => other,
    }
}

/// Elements a message must have for the codec to decode it, with the path
/// named in the `Missing` error.
pub(crate) fn mandatory(msg: MessageType) -> &'static [(Field, &'static str)] {
    match msg {
        MessageType::Pacs008 => &[
            (F::GrpHdr, "GrpHdr"),
            (F::MsgId, "GrpHdr/MsgId"),
            (F::CreDtTm, "GrpHdr/CreDtTm"),
            (F::NbOfTxs, "GrpHdr/NbOfTxs"),
            (F::SttlmMtd, "GrpHdr/SttlmInf/SttlmMtd"),
            (F::TxBlock, "CdtTrfTxInf"),
            (F::EndToEndId, "CdtTrfTxInf/PmtId/EndToEndId"),
            (F::Amount, "CdtTrfTxInf/IntrBkSttlmAmt"),
            (
                F::SendingBank,
                "CdtTrfTxInf/DbtrAgt/FinInstnId/ClrSysMmbId/MmbId",
            ),
            (
                F::ReceivingBank,
                "CdtTrfTxInf/CdtrAgt/FinInstnId/ClrSysMmbId/MmbId",
            ),
        ],
        MessageType::Pacs002 => &[
            (F::GrpHdr, "GrpHdr"),
            (F::MsgId, "GrpHdr/MsgId"),
            (F::CreDtTm, "GrpHdr/CreDtTm"),
            (F::TxBlock, "TxInfAndSts"),
            (F::TxStatus, "TxInfAndSts/TxSts"),
        ],
        MessageType::Pacs028 => &[
            (F::GrpHdr, "GrpHdr"),
            (F::MsgId, "GrpHdr/MsgId"),
            (F::CreDtTm, "GrpHdr/CreDtTm"),
            (F::TxBlock, "TxInf"),
        ],
        MessageType::Pacs004 => &[
            (F::GrpHdr, "GrpHdr"),
            (F::MsgId, "GrpHdr/MsgId"),
            (F::CreDtTm, "GrpHdr/CreDtTm"),
            (F::NbOfTxs, "GrpHdr/NbOfTxs"),
            (F::SttlmMtd, "GrpHdr/SttlmInf/SttlmMtd"),
            (F::TxBlock, "TxInf"),
            (F::Amount, "TxInf/RtrdIntrBkSttlmAmt"),
        ],
        MessageType::Camt056 => &[
            (F::GrpHdr, "Assgnmt"),
            (F::MsgId, "Assgnmt/Id"),
            (F::CreDtTm, "Assgnmt/CreDtTm"),
            (F::Underlying, "Undrlyg"),
            (F::TxBlock, "Undrlyg/TxInf"),
        ],
        MessageType::Camt029 => &[
            (F::GrpHdr, "Assgnmt"),
            (F::MsgId, "Assgnmt/Id"),
            (F::CreDtTm, "Assgnmt/CreDtTm"),
            (F::Underlying, "CxlDtls"),
            (F::TxBlock, "CxlDtls/TxInfAndSts"),
        ],
    }
}

/// The path named when a transaction-level reference (end-to-end id,
/// transaction id or UETR) is required and none is present.
pub(crate) fn reference_path(msg: MessageType) -> &'static str {
    match msg {
        MessageType::Pacs008 => "CdtTrfTxInf/PmtId/EndToEndId",
        MessageType::Pacs002 => "TxInfAndSts/OrgnlEndToEndId",
        MessageType::Pacs028 | MessageType::Pacs004 => "TxInf/OrgnlEndToEndId",
        MessageType::Camt056 => "Undrlyg/TxInf/OrgnlEndToEndId",
        MessageType::Camt029 => "CxlDtls/TxInfAndSts/OrgnlEndToEndId",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_fit_the_seen_set() {
        assert!((Field::CaseId as u8) < 64);
    }

    #[test]
    fn tags_round_trip_their_names() {
        for name in ["GrpHdr", "UETR", "RtrdIntrBkSttlmAmt", "InstdAgt"] {
            assert_eq!(Tag::from_local(name).name(), name);
        }
        assert_eq!(Tag::from_local("RmtInf"), Tag::Other);
    }
}
