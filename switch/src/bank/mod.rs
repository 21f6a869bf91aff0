//! Outbound links to banks: a pool of mTLS connections per bank
//! ([`BankPool`]), each link multiplexing many requests matched by a
//! [`MatchKey`], with the switch's own outbound STAN/RRN/message ids, and
//! each message MACed or signed (and each answer verified) through the HSM
//! when the bank has `auth` ([`auth`]). Links banks open to the switch
//! (bank-originated traffic) are served by [`inbound`].

pub mod auth;
pub mod ids;
pub mod inbound;
mod link;
mod pool;

use std::sync::Arc;

use fps_codecs::iso20022::{Iso20022Codec, Iso20022Config};
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::json::JsonCodec;
use fps_codecs::model::{MessageId, Rrn, Stan, TerminalId, Transaction};
use fps_codecs::MessageCodec;

use crate::config::CodecName;

pub use auth::{AuthError, BankAuth};
pub use ids::OutboundIds;
pub use inbound::{BankInbound, InboundError};
pub use pool::{
    BankPool, ClosingLinkStatus, Framed, LateAnswers, LinkStatus, PoolBuildError, PoolStatus,
};

/// Why a request to a bank has no answer. Says whether anything may have
/// reached the bank, which decides what is safe to do next (STYLE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Nothing left the switch: safe to retry elsewhere or decline with `91`.
    #[error("not sent: {0}")]
    NotSent(&'static str),
    /// Bytes may have reached the bank and no answer came: never resend as a
    /// new transaction; reverse or inquire.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(&'static str),
    /// Refused before or by the bank for good (e.g. the bank's codec cannot
    /// carry this transaction): final, not retried.
    #[error("rejected: {0}")]
    Rejected(&'static str),
}

impl SendError {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::NotSent(_) => "not_sent",
            SendError::OutcomeUnknown(_) => "outcome_unknown",
            SendError::Rejected(_) => "rejected",
        }
    }
}

/// How answers are matched to requests on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchBy {
    /// ISO 8583: MTI class, F11, F37, F41.
    IsoFields,
    /// JSON: the answer echoes the request's `request_id` (canonical `message_id`).
    MessageId,
    /// ISO 20022: the answer names the request in `OrgnlMsgId`.
    OriginalMessageId,
}

/// What identifies one request in flight on one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKey {
    /// ISO 8583 matching fields.
    Iso {
        /// MTI class digit (2 financial, 4 reversal, 8 network ...).
        class: u8,
        /// F11.
        stan: Stan,
        /// F37, when carried.
        rrn: Option<Rrn>,
        /// F41, when carried.
        terminal: Option<TerminalId>,
    },
    /// Message id of the request (ISO 20022, JSON).
    Id(MessageId),
}

impl MatchKey {
    /// The key a request registers under, if it carries the fields.
    pub fn of_request(by: MatchBy, txn: &Transaction) -> Option<MatchKey> {
        match by {
            MatchBy::IsoFields => Some(MatchKey::Iso {
                class: txn.mti.class(),
                stan: txn.stan?,
                rrn: txn.rrn,
                terminal: txn.terminal_id,
            }),
            MatchBy::MessageId | MatchBy::OriginalMessageId => txn.message_id.map(MatchKey::Id),
        }
    }

    /// The key of the request an answer belongs to.
    pub fn of_response(by: MatchBy, txn: &Transaction) -> Option<MatchKey> {
        match by {
            MatchBy::IsoFields | MatchBy::MessageId => Self::of_request(by, txn),
            MatchBy::OriginalMessageId => txn.original_message_id.map(MatchKey::Id),
        }
    }
}

/// A bank's codec and how its messages are matched.
#[derive(Debug, Clone)]
pub struct BankCodec {
    /// Encodes and decodes the bank's messages.
    pub codec: Arc<dyn MessageCodec>,
    /// How answers are matched.
    pub match_by: MatchBy,
    /// Whether the bank takes 0800 sign-on/echo (ISO 8583 banks).
    pub network_management: bool,
}

/// Why a bank's codec cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecBuildError {
    /// Not a known codec name or dialect.
    #[error("unknown codec {0:?}")]
    Unknown(String),
}

impl BankCodec {
    /// Build the codec a config names; an ISO 20022 codec takes `iso20022`
    /// (the bank's `iso20022` table, see `BankConfig::iso20022_config`),
    /// which the other codecs ignore.
    pub fn build(
        name: &CodecName,
        iso20022: &Iso20022Config,
    ) -> Result<BankCodec, CodecBuildError> {
        match name {
            CodecName::Iso8583(d) => {
                let codec = Iso8583Codec::builtin(d)
                    .ok_or_else(|| CodecBuildError::Unknown(format!("iso8583:{d}")))?;
                Ok(BankCodec {
                    codec: Arc::new(codec),
                    match_by: MatchBy::IsoFields,
                    network_management: true,
                })
            }
            CodecName::Json => Ok(BankCodec {
                codec: Arc::new(JsonCodec::new()),
                match_by: MatchBy::MessageId,
                network_management: false,
            }),
            CodecName::Iso20022 => Ok(BankCodec {
                codec: Arc::new(Iso20022Codec::new(iso20022.clone())),
                match_by: MatchBy::OriginalMessageId,
                network_management: false,
            }),
        }
    }

    /// The same codec, decoding every message with the bytes its MAC or
    /// signature covers (for [`BankAuth::check`]); encoding is unchanged.
    pub fn authenticating(self) -> BankCodec {
        BankCodec {
            codec: Arc::new(Authenticating(self.codec)),
            ..self
        }
    }
}

/// A codec whose `decode` keeps the covered bytes
/// ([`MessageCodec::decode_authenticated`]): the links only hand decoded
/// transactions on, so the bytes to verify must travel inside them.
#[derive(Debug)]
struct Authenticating(Arc<dyn MessageCodec>);

impl MessageCodec for Authenticating {
    fn decode(&self, payload: &[u8]) -> Result<Transaction, fps_codecs::CodecError> {
        self.0.decode_authenticated(payload)
    }

    fn encode(
        &self,
        txn: &Transaction,
        out: &mut bytes::BytesMut,
    ) -> Result<(), fps_codecs::CodecError> {
        self.0.encode(txn, out)
    }

    fn auth_slot(&self) -> fps_codecs::AuthSlot {
        self.0.auth_slot()
    }

    fn encode_auth_input(
        &self,
        txn: &Transaction,
        out: &mut bytes::BytesMut,
    ) -> Result<(), fps_codecs::CodecError> {
        self.0.encode_auth_input(txn, out)
    }

    fn decode_authenticated(&self, payload: &[u8]) -> Result<Transaction, fps_codecs::CodecError> {
        self.0.decode_authenticated(payload)
    }

    fn salvage_request(&self, payload: &[u8]) -> Option<Transaction> {
        self.0.salvage_request(payload)
    }
}
