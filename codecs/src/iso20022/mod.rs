//! ISO 20022 messages of Hong Kong FPS (CBPR+/HVPS-style element subset):
//! pacs.008, pacs.002, pacs.028, pacs.004, camt.056 and camt.029, mapped to
//! and from the canonical [`Transaction`].
//!
//! Decoding is one streaming pass of quick-xml's [`NsReader`](quick_xml::NsReader)
//! over the borrowed input: no DOM, no copy of element text unless it holds
//! entity references. The message is recognised by the namespace URI of its
//! `Document` element (`urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08`), never
//! by a prefix; an envelope around it (e.g. a business application header
//! `AppHdr` next to the `Document`) is skipped. Only single-transaction
//! messages are accepted (`NbOfTxs` = 1, one transaction block). Errors name
//! the element path (`Location::Element("CdtTrfTxInf/IntrBkSttlmAmt")`) and a
//! static reason; they never contain a value.
//!
//! # Messages and MTIs
//!
//! | canonical | ISO 20022 | notes |
//! |---|---|---|
//! | `0200`, F3 `400000` | pacs.008 `FIToFICstmrCdtTrf` | credit transfer |
//! | `0200`, F3 `200000` | pacs.004 `PmtRtr` | [`TxnKind::Return`](crate::model::TxnKind::Return): told apart from a transfer by [`ProcessingCode::RETURN`](crate::model::ProcessingCode::RETURN) |
//! | `0210` | pacs.002 `FIToFIPmtStsRpt` | answer to pacs.008 |
//! | `0600` | pacs.028 `FIToFIPmtStsReq` | status inquiry |
//! | `0610` | pacs.002 | answer to pacs.028: decoded as `0610` when `OrgnlMsgNmId` starts with `pacs.028`; use [`Iso20022Codec::decode_answer`] when the caller knows what was asked |
//! | `0400` | camt.056 `FIToFIPmtCxlReq` | reversal = cancellation request |
//! | `0410` | camt.029 `RsltnOfInvstgtn` | answer to camt.056 |
//!
//! # Fields
//!
//! | canonical | pacs.008 | pacs.002 / pacs.028 | pacs.004 | camt.056 / camt.029 |
//! |---|---|---|---|---|
//! | `message_id` | `GrpHdr/MsgId` | `GrpHdr/MsgId` | `GrpHdr/MsgId` | `Assgnmt/Id` |
//! | `transmitted_at` (UTC) | `GrpHdr/CreDtTm` | `GrpHdr/CreDtTm` | `GrpHdr/CreDtTm` | `Assgnmt/CreDtTm` |
//! | `end_to_end_id` | `PmtId/EndToEndId` | `OrgnlEndToEndId` | `OrgnlEndToEndId` | `OrgnlEndToEndId` |
//! | `transaction_id` | `PmtId/TxId` | `OrgnlTxId` | `OrgnlTxId` | `OrgnlTxId` |
//! | `uetr` | `PmtId/UETR` | `OrgnlUETR` | `OrgnlUETR` | `OrgnlUETR` |
//! | `original_message_id` | — | `OrgnlGrpInf/OrgnlMsgId` | `OrgnlGrpInf/OrgnlMsgId` | `OrgnlGrpInf/OrgnlMsgId` |
//! | `amount`, `currency` | `IntrBkSttlmAmt` + `@Ccy` | `OrgnlTxRef/IntrBkSttlmAmt` | `RtrdIntrBkSttlmAmt` | `OrgnlIntrBkSttlmAmt` |
//! | `settlement_date` | `IntrBkSttlmDt` | `OrgnlTxRef/IntrBkSttlmDt` | `IntrBkSttlmDt` | `OrgnlIntrBkSttlmDt` |
//! | `sending_bank` | `DbtrAgt/…/MmbId` | `OrgnlTxRef/DbtrAgt/…/MmbId` | `InstgAgt/…/MmbId` | 056: `Assgnr/Agt/…`; 029: `Assgne/Agt/…` |
//! | `receiving_bank` | `CdtrAgt/…/MmbId` | `OrgnlTxRef/CdtrAgt/…/MmbId` | `InstdAgt/…/MmbId` | 056: `Assgne/Agt/…`; 029: `Assgnr/Agt/…` |
//! | `debtor_name`, `debtor_account` | `Dbtr/Nm`, `DbtrAcct/Id/(Othr/Id\|IBAN)` | — | — | — |
//! | `creditor_name`, `creditor_account` | `Cdtr/Nm`, `CdtrAcct/Id/(Othr/Id\|IBAN)` | — | — | — |
//! | `proxy` | `CdtrAcct/Prxy/Tp/Cd` + `CdtrAcct/Prxy/Id` | — | — | — |
//! | `reason` | — | `StsRsnInf/Rsn/Cd` | `RtrRsnInf/Rsn/Cd` | `CxlRsnInf` / `CxlStsRsnInf/Rsn/Cd` |
//! | `idempotency_key` | — | — | `RtrId` | 056: `CxlId` |
//! | `response_code` | — | from `TxSts` + reason | — | 029: from `TxCxlSts` + reason |
//!
//! `…/MmbId` is `FinInstnId/ClrSysMmbId/MmbId`, the 3-digit HK bank code.
//! STAN, RRN, terminal and the other card-style fields are not carried (the
//! switch maps ids); encoding ignores them.
//!
//! Proxy types: `MOBN` mobile, `EMAL` e-mail, `SVID` FPS id, `HKID` identity
//! card by default ([`ProxyTypeCodes`]); decoding also accepts `MBNO` and
//! `FPID`.
//!
//! # Status and reason codes
//!
//! | ISO 20022 | canonical F39 |
//! |---|---|
//! | `TxSts` `ACSC`, `ACCP`, `ACSP`, `ACCC`, `ACWC` | `00` |
//! | `TxSts` `PDNG`, `ACTC`, `RCVD`, `ACWP`, `ACFC`, `PATC`, `PART` | `09` pending (not final: the switch treats it as outcome unknown) |
//! | `RJCT`/`BLCK` + `AC01`, `AC03`, `AC04`, `AC06`, `BE01` | `14` |
//! | `RJCT` + `AM04` | `51` |
//! | `RJCT` + `AM02`, `AM09` | `13` |
//! | `RJCT` + `AG01` | `57` |
//! | `RJCT` + `DUPL`, `AM05` | `94` |
//! | `RJCT` + `FF01` | `30` |
//! | `RJCT` + `AB05`..`AB08` | `91` |
//! | `RJCT` + any other reason or none | `05` |
//! | camt.029 `TxCxlSts` `ACCR` (or `Sts/Conf` `CNCL`) | `00` |
//! | camt.029 `RJCR` + `NOOR` | `25` |
//! | camt.029 `RJCR` + other | `05` |
//! | camt.029 `PDCR` | `09` |
//!
//! Encoding picks the inverse: `00` -> `ACSC` (camt.029: `CNCL`/`ACCR`),
//! `09` -> `PDNG` (`PDCR`), a refusal -> `RJCT` (`RJCR`) with the
//! transaction's `reason` if that reason maps back to the same code, else the
//! first reason of the table for the code (`14` -> `AC01`, `51` -> `AM04`,
//! `13` -> `AM09`, `57` -> `AG01`, `94` -> `DUPL`, `30` -> `FF01`,
//! `91` -> `AB08`, `25` -> `NOOR`), else `MS03` (camt.029: `AGNT`), which
//! decodes as `05`. Decoding always keeps the reason code in `reason`. The
//! raw status is in [`Decoded::status`]. A pacs.002 or camt.029 always
//! decodes with a response code; encoding one without a code is an error.
//!
//! # Amounts
//!
//! `1234.56` with `Ccy="HKD"` is 123456 minor units; the number of minor
//! digits comes from the currency ([`minor_digits`]: JPY 0, others 2). A sign,
//! an exponent, more significant decimals than the currency has, or more than
//! 12 digits of minor units is an error.
//!
//! # Salvage
//!
//! [`Iso20022Codec::salvage_request`] reads, from a request that does not
//! decode but is well-formed XML, just its kind and the ids its answer is
//! matched by (message id, end-to-end id, transaction id, UETR), so that a
//! bank's link can answer it with a format error (`30`: pacs.002 `RJCT` +
//! `FF01`) instead of being closed. pacs.028 is never salvaged.
//!
//! # Creation time (`CreDtTm`)
//!
//! Codecs have no clock. [`Iso20022Codec::encode_at`] takes the creation time
//! as an argument; [`MessageCodec::encode`] derives it from the transaction:
//! `transmitted_at` (F7, UTC) with the year of `settlement_date` (one less when
//! F7 is in December and the settlement in January), written with `Z`. Without
//! both fields `encode` fails with `Missing(GrpHdr/CreDtTm)`. Decoding sets
//! `transmitted_at` to `CreDtTm` in UTC; a time without a zone is read at
//! [`Iso20022Config::default_utc_offset_minutes`] (HKT, +08:00, by default).

use bytes::BytesMut;

use crate::error::{CodecError, Location};
use crate::model::{AuthInput, Mti, ProcessingCode, Transaction};
use crate::{AuthSlot, MessageCodec};

mod decode;
mod encode;
mod paths;
mod salvage;
pub mod settings;
pub mod status;
mod values;

pub use settings::{Iso20022ProxyCodeSettings, Iso20022Settings, Iso20022VersionSettings};
pub use values::{
    minor_digits, Bic, ClearingSystemCode, CreationDateTime, MessageVersion, ProxyTypeCode,
    StatusCode,
};

/// Prefix of every ISO 20022 message namespace URI.
pub const NAMESPACE_PREFIX: &str = "urn:iso:std:iso:20022:tech:xsd:";

/// Default bound on one message's size (an FPS pacs.008 with an AppHdr and
/// signature is well under 16 KiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Deepest element nesting accepted, envelope included.
pub const MAX_DEPTH: usize = 32;

/// Namespace of the envelope the codec writes around a signed `Document`
/// (see [`crate::auth`]).
pub const ENVELOPE_NAMESPACE: &str = "urn:fps-switch:xsd:envelope";

/// Envelope element carrying the base64 detached signature of the `Document`.
pub const SIGNATURE_ELEMENT: &str = "Sgntr";

/// The ISO 20022 messages this codec reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// pacs.008 FI-to-FI customer credit transfer.
    Pacs008,
    /// pacs.002 FI-to-FI payment status report.
    Pacs002,
    /// pacs.028 FI-to-FI payment status request.
    Pacs028,
    /// pacs.004 payment return.
    Pacs004,
    /// camt.056 FI-to-FI payment cancellation request.
    Camt056,
    /// camt.029 resolution of investigation.
    Camt029,
}

impl MessageType {
    /// Every message type, for iteration.
    pub const ALL: [MessageType; 6] = [
        MessageType::Pacs008,
        MessageType::Pacs002,
        MessageType::Pacs028,
        MessageType::Pacs004,
        MessageType::Camt056,
        MessageType::Camt029,
    ];

    /// The message identifier without version, e.g. `pacs.008`.
    pub fn id(self) -> &'static str {
        match self {
            MessageType::Pacs008 => "pacs.008",
            MessageType::Pacs002 => "pacs.002",
            MessageType::Pacs028 => "pacs.028",
            MessageType::Pacs004 => "pacs.004",
            MessageType::Camt056 => "camt.056",
            MessageType::Camt029 => "camt.029",
        }
    }

    /// The message element under `Document`, e.g. `FIToFICstmrCdtTrf`.
    pub fn root_element(self) -> &'static str {
        match self {
            MessageType::Pacs008 => "FIToFICstmrCdtTrf",
            MessageType::Pacs002 => "FIToFIPmtStsRpt",
            MessageType::Pacs028 => "FIToFIPmtStsReq",
            MessageType::Pacs004 => "PmtRtr",
            MessageType::Camt056 => "FIToFIPmtCxlReq",
            MessageType::Camt029 => "RsltnOfInvstgtn",
        }
    }

    /// The message type of an identifier such as `pacs.008`.
    pub fn from_id(id: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|m| m.id() == id)
    }

    /// Whether this message answers another (pacs.002, camt.029).
    pub fn is_response(self) -> bool {
        matches!(self, MessageType::Pacs002 | MessageType::Camt029)
    }
}

/// The namespace version written for each message (and accepted on decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// pacs.008 (default `001.08`).
    pub pacs008: MessageVersion,
    /// pacs.002 (default `001.10`).
    pub pacs002: MessageVersion,
    /// pacs.028 (default `001.03`).
    pub pacs028: MessageVersion,
    /// pacs.004 (default `001.09`).
    pub pacs004: MessageVersion,
    /// camt.056 (default `001.08`).
    pub camt056: MessageVersion,
    /// camt.029 (default `001.09`).
    pub camt029: MessageVersion,
}

impl Versions {
    /// The configured version of `msg`.
    pub fn of(&self, msg: MessageType) -> MessageVersion {
        match msg {
            MessageType::Pacs008 => self.pacs008,
            MessageType::Pacs002 => self.pacs002,
            MessageType::Pacs028 => self.pacs028,
            MessageType::Pacs004 => self.pacs004,
            MessageType::Camt056 => self.camt056,
            MessageType::Camt029 => self.camt029,
        }
    }
}

impl Default for Versions {
    fn default() -> Self {
        let v = |s: &str| MessageVersion::parse(s.as_bytes()).expect("constant versions parse");
        Versions {
            pacs008: v("001.08"),
            pacs002: v("001.10"),
            pacs028: v("001.03"),
            pacs004: v("001.09"),
            camt056: v("001.08"),
            camt029: v("001.09"),
        }
    }
}

/// The `Prxy/Tp/Cd` codes written for each kind of FPS proxy (and accepted
/// on decode, besides the aliases `MBNO` and `FPID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyTypeCodes {
    /// Mobile number (default `MOBN`).
    pub mobile: ProxyTypeCode,
    /// E-mail address (default `EMAL`).
    pub email: ProxyTypeCode,
    /// FPS identifier (default `SVID`).
    pub fps_id: ProxyTypeCode,
    /// HKID number (default `HKID`).
    pub hkid: ProxyTypeCode,
}

impl Default for ProxyTypeCodes {
    fn default() -> Self {
        let c = |s: &str| ProxyTypeCode::parse(s.as_bytes()).expect("constant codes parse");
        ProxyTypeCodes {
            mobile: c("MOBN"),
            email: c("EMAL"),
            fps_id: c("SVID"),
            hkid: c("HKID"),
        }
    }
}

/// How an [`Iso20022Codec`] reads and writes messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iso20022Config {
    /// Namespace versions written, and accepted on decode.
    pub versions: Versions,
    /// Also accept other versions of the six messages on decode (the element
    /// subset used here is the same from pacs.008.001.08 onwards).
    pub accept_other_versions: bool,
    /// Largest message accepted by `decode`, in bytes.
    pub max_message_bytes: usize,
    /// The switch's own BIC: written as `GrpHdr/InstgAgt` (pacs.*) when set,
    /// and as a camt `Assgnr`/`Assgne` when the bank code is unknown.
    pub own_bic: Option<Bic>,
    /// Clearing system written in `ClrSysMmbId/ClrSysId/Cd` (default `HKNCC`).
    pub clearing_system: Option<ClearingSystemCode>,
    /// Proxy type codes.
    pub proxy_codes: ProxyTypeCodes,
    /// UTC offset assumed for a `CreDtTm` without a zone (default +480, HKT).
    pub default_utc_offset_minutes: i16,
}

impl Default for Iso20022Config {
    fn default() -> Self {
        Iso20022Config {
            versions: Versions::default(),
            accept_other_versions: false,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            own_bic: None,
            clearing_system: Some(
                ClearingSystemCode::parse(b"HKNCC").expect("constant code parses"),
            ),
            proxy_codes: ProxyTypeCodes::default(),
            default_utc_offset_minutes: 480,
        }
    }
}

/// A decoded message with the ISO 20022 details the canonical model has no
/// field for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Which message it was.
    pub message: MessageType,
    /// Its namespace version.
    pub version: MessageVersion,
    /// The raw status (pacs.002 `TxSts`; camt.029 `TxCxlSts`, else `Sts/Conf`).
    pub status: Option<StatusCode>,
    /// The canonical transaction.
    pub transaction: Transaction,
}

/// The ISO 20022 codec: stateless apart from its configuration, so one value
/// serves every link of a bank.
#[derive(Debug, Clone, Default)]
pub struct Iso20022Codec {
    config: Iso20022Config,
}

impl Iso20022Codec {
    /// A codec with this configuration.
    pub fn new(config: Iso20022Config) -> Self {
        Iso20022Codec { config }
    }

    /// The configuration.
    pub fn config(&self) -> &Iso20022Config {
        &self.config
    }

    /// Decode one message with its ISO 20022 details.
    pub fn decode_message(&self, payload: &[u8]) -> Result<Decoded, CodecError> {
        decode::decode(&self.config, payload)
    }

    /// Decode the answer to a request of MTI `request` (which the caller knows
    /// from its match key): a pacs.002 becomes `0210` or `0610` after the
    /// request, a camt.029 `0410`. A request message or an answer of the
    /// wrong family is an error at [`Location::Mti`].
    pub fn decode_answer(&self, payload: &[u8], request: Mti) -> Result<Transaction, CodecError> {
        let mut d = self.decode_message(payload)?;
        let fits = match d.message {
            MessageType::Pacs002 => matches!(request.class(), 2 | 6),
            MessageType::Camt029 => request.class() == 4,
            _ => false,
        };
        if !fits || request.is_response() {
            return Err(CodecError::Invalid {
                at: Location::Mti,
                reason: "message does not answer a request of this MTI",
            });
        }
        d.transaction.mti = request.response();
        Ok(d.transaction)
    }

    /// The message that carries `txn`, from its MTI (and F3 for class 2).
    pub fn message_type_for(txn: &Transaction) -> Result<MessageType, CodecError> {
        let mti = txn.mti;
        let msg = match (mti.class(), mti.function()) {
            (2, 0) if txn.processing_code == Some(ProcessingCode::RETURN) => MessageType::Pacs004,
            (2, 0) => MessageType::Pacs008,
            (2, 1) | (6, 1) => MessageType::Pacs002,
            (6, 0) => MessageType::Pacs028,
            (4, 0) => MessageType::Camt056,
            (4, 1) => MessageType::Camt029,
            _ => {
                return Err(CodecError::Invalid {
                    at: Location::Mti,
                    reason: "no ISO 20022 message for this MTI",
                })
            }
        };
        Ok(msg)
    }

    /// The creation time [`MessageCodec::encode`] writes for `txn`:
    /// `transmitted_at` in the year of `settlement_date` (see the module docs).
    pub fn creation_time_for(txn: &Transaction) -> Result<CreationDateTime, CodecError> {
        let at = Location::Element("GrpHdr/CreDtTm");
        let (Some(f7), Some(date)) = (txn.transmitted_at, txn.settlement_date) else {
            return Err(CodecError::Missing { at });
        };
        let d = date.as_bytes();
        let year = d[..4]
            .iter()
            .fold(0u16, |a, b| a * 10 + u16::from(b - b'0'));
        let (f7_month, sttl_month) = (&f7.as_bytes()[..2], &d[4..6]);
        let year = match (f7_month, sttl_month) {
            (b"12", b"01") => year.saturating_sub(1),
            (b"01", b"12") => year.saturating_add(1),
            _ => year,
        };
        CreationDateTime::from_transmission(year, &f7).map_err(|e| CodecError::value(at, e))
    }

    /// Encode `txn` as the message its MTI calls for, created at `created_at`.
    /// Returns which message was written. On error nothing is appended.
    pub fn encode_at(
        &self,
        txn: &Transaction,
        created_at: &CreationDateTime,
        out: &mut BytesMut,
    ) -> Result<MessageType, CodecError> {
        let msg = Self::message_type_for(txn)?;
        self.encode_as(msg, txn, created_at, out)?;
        Ok(msg)
    }

    /// Encode `txn` as `msg` regardless of its MTI. On error nothing is appended.
    pub fn encode_as(
        &self,
        msg: MessageType,
        txn: &Transaction,
        created_at: &CreationDateTime,
        out: &mut BytesMut,
    ) -> Result<(), CodecError> {
        let start = out.len();
        let r = encode::encode(&self.config, msg, txn, created_at, out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }
}

impl MessageCodec for Iso20022Codec {
    fn decode(&self, payload: &[u8]) -> Result<Transaction, CodecError> {
        self.decode_message(payload).map(|d| d.transaction)
    }

    fn salvage_request(&self, payload: &[u8]) -> Option<Transaction> {
        Iso20022Codec::salvage_request(self, payload)
    }

    fn encode(&self, txn: &Transaction, out: &mut BytesMut) -> Result<(), CodecError> {
        let created_at = Self::creation_time_for(txn)?;
        self.encode_at(txn, &created_at, out).map(|_| ())
    }

    fn auth_slot(&self) -> AuthSlot {
        AuthSlot::Signature
    }

    /// The `Document` element of the message `encode` writes.
    fn encode_auth_input(&self, txn: &Transaction, out: &mut BytesMut) -> Result<(), CodecError> {
        let created_at = Self::creation_time_for(txn)?;
        let msg = Self::message_type_for(txn)?;
        let start = out.len();
        let r = encode::document(&self.config, msg, txn, &created_at, out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn decode_authenticated(&self, payload: &[u8]) -> Result<Transaction, CodecError> {
        let (decoded, document) = decode::decode_spanned(&self.config, payload)?;
        let mut txn = decoded.transaction;
        if txn.signature.is_some() {
            // The span lies inside `payload`: the parser saw both its ends.
            let covered = payload.get(document).unwrap_or_default();
            txn.auth_input = Some(AuthInput::new(bytes::Bytes::copy_from_slice(covered)));
        }
        Ok(txn)
    }
}
