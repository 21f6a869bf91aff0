//! Canonical transaction -> JSON.
//!
//! The document is a borrowed view of the transaction (`&str` into its inline
//! values, digit arrays on the stack) serialised straight into the caller's
//! buffer: no intermediate `String`. Everything is checked before the first
//! byte is written, so a refused message leaves `out` untouched.

use bytes::{BufMut, BytesMut};
use serde::ser::{Error as _, Serialize, Serializer};

use super::decode::ORIGINAL_TYPES;
use super::schema::{check_required, Member, MsgType, Status};
use crate::model::{NetworkCode, Transaction};
use crate::{CodecError, Location};

/// Append the JSON document of `txn` to `out`.
pub(super) fn encode(txn: &Transaction, out: &mut BytesMut) -> Result<(), CodecError> {
    let doc = Doc::of(txn)?;
    let start = out.len();
    serde_json::to_writer(BufMut::writer(&mut *out), &doc).map_err(|_| {
        out.truncate(start);
        CodecError::Invalid {
            at: Location::Message,
            reason: "JSON serialisation failed",
        }
    })
}

/// ASCII bytes from a canonical newtype's wire form, written as a string.
struct Ascii<const N: usize>([u8; N]);

impl<const N: usize> Serialize for Ascii<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.0).map_err(S::Error::custom)?)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The top-level object. Member order here is the order on the wire.
#[derive(serde::Serialize)]
struct Doc<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "is_false")]
    repeat: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<Original<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_to_end_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uetr: Option<Ascii<36>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    debtor: Option<Party<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    creditor: Option<Party<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settlement_date: Option<Ascii<10>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transmitted_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stan: Option<Ascii<6>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rrn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acquirer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    terminal_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Amount {
    minor: u64,
    currency: &'static str,
}

#[derive(serde::Serialize)]
struct Party<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<Proxy<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bank: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Proxy<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
}

#[derive(serde::Serialize)]
struct Original<'a> {
    request_id: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    ty: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stan: Option<Ascii<6>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transmitted_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acquirer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    forwarder: Option<&'a str>,
}

impl<'a> Doc<'a> {
    /// The view of `txn`, or why the dialect cannot express it.
    fn of(txn: &'a Transaction) -> Result<Doc<'a>, CodecError> {
        let ty = MsgType::of(txn)?;
        check_required(ty, txn)?;
        let allowed = ty.allowed();
        // A canonical field outside the type's members is not written.
        let keep = |m: Member| allowed.contains(m);
        let pick = |m: Member, v: Option<&'a str>| v.filter(|_| keep(m));
        let request_id = txn
            .message_id
            .as_ref()
            .map(|m| m.as_str())
            .ok_or(missing("request_id"))?;
        Ok(Doc {
            ty: ty.name(),
            request_id,
            repeat: txn.mti.is_repeat(),
            status: txn
                .response_code
                .filter(|_| keep(Member::Status))
                .map(|c| Status::of(c).name()),
            code: pick(Member::Code, txn.response_code.as_ref().map(|c| c.as_str())),
            reason: pick(Member::Reason, txn.reason.as_ref().map(|r| r.as_str())),
            auth_id: pick(Member::AuthId, txn.auth_id.as_ref().map(|a| a.as_str())),
            action: txn
                .network_code
                .filter(|_| keep(Member::Action))
                .map(action_name),
            original: if keep(Member::Original) {
                original(txn)?
            } else {
                None
            },
            end_to_end_id: pick(
                Member::EndToEndId,
                txn.end_to_end_id.as_ref().map(|e| e.as_str()),
            ),
            transaction_id: pick(
                Member::TransactionId,
                txn.transaction_id.as_ref().map(|e| e.as_str()),
            ),
            uetr: txn
                .uetr
                .filter(|_| keep(Member::Uetr))
                .map(|u| Ascii(u.to_text())),
            amount: if keep(Member::Amount) {
                amount(txn)?
            } else {
                None
            },
            debtor: Some(Party {
                account: txn.debtor_account.as_ref().map(|a| a.expose()),
                proxy: None,
                name: txn.debtor_name.as_ref().map(|n| n.expose()),
                bank: txn.sending_bank.as_ref().map(|b| b.as_str()),
            })
            .filter(|p| keep(Member::Debtor) && !p.is_empty()),
            creditor: Some(Party {
                account: txn.creditor_account.as_ref().map(|a| a.expose()),
                proxy: txn.proxy.as_ref().map(|p| Proxy {
                    kind: p.kind().prefix(),
                    id: p.expose(),
                }),
                name: txn.creditor_name.as_ref().map(|n| n.expose()),
                bank: txn.receiving_bank.as_ref().map(|b| b.as_str()),
            })
            .filter(|p| keep(Member::Creditor) && !p.is_empty()),
            settlement_date: txn
                .settlement_date
                .filter(|_| keep(Member::SettlementDate))
                .map(|d| Ascii(d.to_iso())),
            transmitted_at: pick(
                Member::TransmittedAt,
                txn.transmitted_at.as_ref().map(|t| t.as_str()),
            ),
            stan: txn
                .stan
                .filter(|_| keep(Member::Stan))
                .map(|s| Ascii(s.to_digits())),
            rrn: pick(Member::Rrn, txn.rrn.as_ref().map(|r| r.as_str())),
            acquirer: pick(Member::Acquirer, txn.acquirer.as_ref().map(|a| a.as_str())),
            terminal_id: pick(
                Member::TerminalId,
                txn.terminal_id.as_ref().map(|t| t.as_str()),
            ),
            merchant_id: pick(
                Member::MerchantId,
                txn.merchant_id.as_ref().map(|m| m.as_str()),
            ),
            idempotency_key: pick(
                Member::IdempotencyKey,
                txn.idempotency_key.as_ref().map(|k| k.as_str()),
            ),
        })
    }
}

impl Party<'_> {
    fn is_empty(&self) -> bool {
        self.account.is_none() && self.proxy.is_none() && self.name.is_none() && self.bank.is_none()
    }
}

fn missing(path: &'static str) -> CodecError {
    CodecError::Missing {
        at: Location::Element(path),
    }
}

fn action_name(code: NetworkCode) -> &'static str {
    match code {
        NetworkCode::SignOn => "sign_on",
        NetworkCode::SignOff => "sign_off",
        NetworkCode::Echo => "echo",
        NetworkCode::KeyChange => "key_change",
    }
}

/// `amount`: written with its currency or not at all. A currency without an
/// amount carries nothing and is dropped.
fn amount(txn: &Transaction) -> Result<Option<Amount>, CodecError> {
    let Some(minor) = txn.amount else {
        return Ok(None);
    };
    let currency = txn.currency.ok_or(missing("amount.currency"))?;
    let currency = currency.alpha().ok_or(CodecError::Invalid {
        at: Location::Element("amount.currency"),
        reason: "currency has no alphabetic code",
    })?;
    Ok(Some(Amount {
        minor: minor.minor(),
        currency,
    }))
}

/// `original`: present when either the original request id or the F90 data
/// is; the request id is then required (it is how the bank finds the original).
fn original(txn: &Transaction) -> Result<Option<Original<'_>>, CodecError> {
    if txn.original_message_id.is_none() && txn.original.is_none() {
        return Ok(None);
    }
    let request_id = txn
        .original_message_id
        .as_ref()
        .ok_or(missing("original.request_id"))?
        .as_str();
    let mut out = Original {
        request_id,
        ty: None,
        stan: None,
        transmitted_at: None,
        acquirer: None,
        forwarder: None,
    };
    if let Some(data) = &txn.original {
        out.ty = Some(
            ORIGINAL_TYPES
                .iter()
                .find(|(_, mti)| *mti == data.mti)
                .map(|(name, _)| *name)
                .ok_or(CodecError::Invalid {
                    at: Location::Element("original.type"),
                    reason: "no JSON message type for this MTI",
                })?,
        );
        out.stan = Some(Ascii(data.stan.to_digits()));
        out.transmitted_at = Some(data.transmitted_at.as_str());
        out.acquirer = institution(&data.acquirer, "original.acquirer")?;
        out.forwarder = institution(&data.forwarder, "original.forwarder")?;
    }
    Ok(Some(out))
}

/// An F90 institution slot without its zero padding; all zeros is "absent".
fn institution<'a>(slot: &'a [u8; 11], path: &'static str) -> Result<Option<&'a str>, CodecError> {
    let bad = CodecError::BadContent {
        at: Location::Element(path),
        class: "n",
    };
    if !slot.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    let Some(first) = slot.iter().position(|b| *b != b'0') else {
        return Ok(None);
    };
    std::str::from_utf8(&slot[first..])
        .map(Some)
        .map_err(|_| bad)
}
