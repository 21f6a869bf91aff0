//! JSON -> canonical transaction.
//!
//! serde_json drives hand-written visitors that parse every member straight
//! into its canonical newtype (inline storage: no `String` per member, even
//! for escaped strings, which serde_json hands over from its scratch buffer).
//! Visitors know which member they are in, so every error names its path:
//! the first error is kept in a [`Ctx`], and a placeholder serde error only
//! unwinds the parse.

use std::cell::Cell;
use std::fmt;

use arrayvec::ArrayString;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::schema::{check_required, Member, Members, MsgType, Status};
use crate::model::{
    Account, AmountMinor, AuthId, BankCode, Currency, EndToEndId, IdempotencyKey, InstitutionId,
    MerchantId, MessageId, Mti, NetworkCode, OriginalData, PartyName, ProxyId, ProxyKind,
    ReasonCode, ResponseCode, Rrn, SettlementDate, Stan, TerminalId, Transaction,
    TransmissionDateTime, Uetr, ValueError,
};
use crate::{CodecError, Location};

/// Decode one document (size and UTF-8 already checked by the caller).
pub(super) fn decode_str(text: &str) -> Result<Transaction, CodecError> {
    let ctx = Ctx {
        at: Cell::new(Location::Message),
        err: Cell::new(None),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let doc = Root(&ctx).deserialize(&mut de).map_err(|e| ctx.error(&e))?;
    de.end().map_err(|_| CodecError::Invalid {
        at: Location::Message,
        reason: "trailing bytes after the object",
    })?;
    doc.finish()
}

/// Where the parse is, and the first error a visitor found.
struct Ctx {
    at: Cell<Location>,
    err: Cell<Option<CodecError>>,
}

impl Ctx {
    /// Record `e` and return a serde error that unwinds the parse.
    fn fail<E: de::Error>(&self, e: CodecError) -> E {
        if self.err.get().is_none() {
            self.err.set(Some(e));
        }
        E::custom("see the JSON codec context")
    }

    fn value<E: de::Error>(&self, at: &'static str, source: ValueError) -> E {
        self.fail(CodecError::Value {
            at: Location::Element(at),
            source,
        })
    }

    /// The codec error for a failed parse: the one a visitor recorded, else
    /// serde_json's category at the member being read.
    fn error(&self, e: &serde_json::Error) -> CodecError {
        if let Some(recorded) = self.err.get() {
            return recorded;
        }
        let reason = match e.classify() {
            serde_json::error::Category::Eof => "JSON ends early",
            serde_json::error::Category::Data => "wrong JSON type",
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
                "malformed JSON"
            }
        };
        CodecError::Invalid {
            at: self.at.get(),
            reason,
        }
    }

    /// Read the value of member `path` with `seed`, tracking the location.
    fn member<'de, A, S>(
        &self,
        map: &mut A,
        path: &'static str,
        parent: Location,
        seed: S,
    ) -> Result<S::Value, A::Error>
    where
        A: MapAccess<'de>,
        S: DeserializeSeed<'de>,
    {
        self.at.set(Location::Element(path));
        let v = map.next_value_seed(seed)?;
        self.at.set(parent);
        Ok(v)
    }

    /// A string member parsed by `parse`.
    fn text<'de, A, T>(
        &self,
        map: &mut A,
        path: &'static str,
        parent: Location,
        parse: fn(&str) -> Result<T, ValueError>,
    ) -> Result<T, A::Error>
    where
        A: MapAccess<'de>,
    {
        self.member(
            map,
            path,
            parent,
            Text {
                ctx: self,
                at: path,
                parse,
            },
        )
    }

    /// The next key of an object with members `names`, as an index; refuses
    /// unknown and repeated members (`seen` is a bit set over `names`).
    fn key<'de, A>(
        &self,
        map: &mut A,
        names: &'static [&'static str],
        paths: &'static [&'static str],
        object: Location,
        seen: &mut u32,
    ) -> Result<Option<usize>, A::Error>
    where
        A: MapAccess<'de>,
    {
        let Some(i) = map.next_key_seed(Key {
            ctx: self,
            names,
            object,
        })?
        else {
            return Ok(None);
        };
        if *seen & (1 << i) != 0 {
            return Err(self.fail(CodecError::Invalid {
                at: Location::Element(paths[i]),
                reason: "duplicate member",
            }));
        }
        *seen |= 1 << i;
        Ok(Some(i))
    }
}

/// The top-level object as read, before the per-type checks.
struct Decoded {
    txn: Transaction,
    ty: Option<MsgType>,
    repeat: bool,
    status: Option<Status>,
    seen: Members,
}

impl Decoded {
    /// Apply the type: allowed and required members, status, MTI.
    fn finish(self) -> Result<Transaction, CodecError> {
        let Decoded {
            mut txn,
            ty,
            repeat,
            status,
            seen,
        } = self;
        let ty = ty.ok_or(CodecError::Missing {
            at: Location::Element("type"),
        })?;
        if let Some(m) = seen.first_outside(ty.allowed()) {
            return Err(CodecError::Invalid {
                at: Location::Element(m.name()),
                reason: "not allowed for this type",
            });
        }
        if ty.is_result() {
            let status = status.ok_or(CodecError::Missing {
                at: Location::Element("status"),
            })?;
            txn.response_code = Some(status.response_code(txn.response_code)?);
        }
        txn.mti = if repeat { ty.mti().repeat() } else { ty.mti() };
        txn.processing_code = ty.processing_code();
        check_required(ty, &txn)?;
        Ok(txn)
    }
}

/// The top-level object.
struct Root<'c>(&'c Ctx);

impl<'de> DeserializeSeed<'de> for Root<'_> {
    type Value = Decoded;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Decoded, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Root<'_> {
    type Value = Decoded;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decoded, A::Error> {
        const HERE: Location = Location::Message;
        let ctx = self.0;
        let mut doc = Decoded {
            txn: Transaction::new(Mti::CREDIT_TRANSFER),
            ty: None,
            repeat: false,
            status: None,
            seen: Members::default(),
        };
        let mut seen = 0u32;
        while let Some(i) = ctx.key(&mut map, &Member::NAMES, &Member::NAMES, HERE, &mut seen)? {
            let member = Member::ALL[i];
            doc.seen.insert(member);
            let at = member.name();
            let t = &mut doc.txn;
            match member {
                Member::Type => doc.ty = Some(ctx.text(&mut map, at, HERE, MsgType::parse)?),
                Member::RequestId => {
                    t.message_id =
                        Some(ctx.text(&mut map, at, HERE, |s| MessageId::parse(s.as_bytes()))?)
                }
                Member::Repeat => doc.repeat = ctx.member(&mut map, at, HERE, Flag)?,
                Member::EndToEndId => {
                    t.end_to_end_id =
                        Some(ctx.text(&mut map, at, HERE, |s| EndToEndId::parse(s.as_bytes()))?)
                }
                Member::TransactionId => {
                    t.transaction_id =
                        Some(ctx.text(&mut map, at, HERE, |s| EndToEndId::parse(s.as_bytes()))?)
                }
                Member::Uetr => {
                    t.uetr = Some(ctx.text(&mut map, at, HERE, |s| Uetr::parse(s.as_bytes()))?)
                }
                Member::Amount => {
                    let (amount, currency) = ctx.member(&mut map, at, HERE, AmountObj(ctx))?;
                    t.amount = Some(amount);
                    t.currency = Some(currency);
                }
                Member::Debtor => {
                    let p = ctx.member(&mut map, at, HERE, PartyObj::debtor(ctx))?;
                    t.debtor_account = p.account;
                    t.debtor_name = p.name;
                    t.sending_bank = p.bank;
                }
                Member::Creditor => {
                    let p = ctx.member(&mut map, at, HERE, PartyObj::creditor(ctx))?;
                    t.creditor_account = p.account;
                    t.creditor_name = p.name;
                    t.receiving_bank = p.bank;
                    t.proxy = p.proxy;
                }
                Member::SettlementDate => {
                    t.settlement_date = Some(ctx.text(&mut map, at, HERE, |s| {
                        SettlementDate::parse_iso(s.as_bytes())
                    })?)
                }
                Member::TransmittedAt => {
                    t.transmitted_at = Some(ctx.text(&mut map, at, HERE, |s| {
                        TransmissionDateTime::parse(s.as_bytes())
                    })?)
                }
                Member::Stan => {
                    t.stan = Some(ctx.text(&mut map, at, HERE, |s| Stan::parse(s.as_bytes()))?)
                }
                Member::Rrn => {
                    t.rrn = Some(ctx.text(&mut map, at, HERE, |s| Rrn::parse(s.as_bytes()))?)
                }
                Member::Acquirer => {
                    t.acquirer =
                        Some(ctx.text(&mut map, at, HERE, |s| InstitutionId::parse(s.as_bytes()))?)
                }
                Member::TerminalId => {
                    t.terminal_id =
                        Some(ctx.text(&mut map, at, HERE, |s| TerminalId::parse(s.as_bytes()))?)
                }
                Member::MerchantId => {
                    t.merchant_id =
                        Some(ctx.text(&mut map, at, HERE, |s| MerchantId::parse(s.as_bytes()))?)
                }
                Member::IdempotencyKey => {
                    t.idempotency_key =
                        Some(ctx.text(&mut map, at, HERE, |s| IdempotencyKey::parse(s.as_bytes()))?)
                }
                Member::Original => {
                    let (id, data) = ctx.member(&mut map, at, HERE, OriginalObj(ctx))?;
                    t.original_message_id = Some(id);
                    t.original = data;
                }
                Member::Action => {
                    t.network_code = Some(ctx.text(&mut map, at, HERE, parse_action)?)
                }
                Member::Status => doc.status = Some(ctx.text(&mut map, at, HERE, Status::parse)?),
                Member::Code => {
                    t.response_code =
                        Some(ctx.text(&mut map, at, HERE, |s| ResponseCode::parse(s.as_bytes()))?)
                }
                Member::Reason => {
                    t.reason =
                        Some(ctx.text(&mut map, at, HERE, |s| ReasonCode::parse(s.as_bytes()))?)
                }
                Member::AuthId => {
                    t.auth_id = Some(ctx.text(&mut map, at, HERE, |s| AuthId::parse(s.as_bytes()))?)
                }
            }
        }
        Ok(doc)
    }
}

/// The `action` member of network messages.
pub(super) fn parse_action(s: &str) -> Result<NetworkCode, ValueError> {
    match s {
        "sign_on" => Ok(NetworkCode::SignOn),
        "sign_off" => Ok(NetworkCode::SignOff),
        "echo" => Ok(NetworkCode::Echo),
        "key_change" => Ok(NetworkCode::KeyChange),
        _ => Err(ValueError::new("action", "unknown action")),
    }
}

/// A member name, looked up without allocating.
struct Key<'c> {
    ctx: &'c Ctx,
    names: &'static [&'static str],
    object: Location,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.names.iter().position(|n| *n == v).ok_or_else(|| {
            // The unknown name is not static (and is peer input): report
            // the object that holds it.
            self.ctx.fail(CodecError::Invalid {
                at: self.object,
                reason: "unknown member",
            })
        })
    }
}

/// A string member, parsed into its canonical type by `parse`.
struct Text<'c, T> {
    ctx: &'c Ctx,
    at: &'static str,
    parse: fn(&str) -> Result<T, ValueError>,
}

impl<'de, T> DeserializeSeed<'de> for Text<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, T> Visitor<'de> for Text<'_, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(|source| self.ctx.value(self.at, source))
    }
}

/// The `repeat` flag.
struct Flag;

impl<'de> DeserializeSeed<'de> for Flag {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_bool(self)
    }
}

impl<'de> Visitor<'de> for Flag {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
}

/// `amount.minor`: a non-negative JSON integer of at most 12 digits.
struct Minor<'c>(&'c Ctx);

const MINOR: &str = "amount.minor";

impl<'de> DeserializeSeed<'de> for Minor<'_> {
    type Value = AmountMinor;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AmountMinor, D::Error> {
        d.deserialize_u64(self)
    }
}

impl<'de> Visitor<'de> for Minor<'_> {
    type Value = AmountMinor;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer amount in minor units")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<AmountMinor, E> {
        AmountMinor::new(v).map_err(|source| self.0.value(MINOR, source))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<AmountMinor, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(self.0.value(MINOR, ValueError::new("amount", "negative"))),
        }
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<AmountMinor, E> {
        // Also where integers beyond u64 land: serde_json reads them as floats.
        Err(self
            .0
            .value(MINOR, ValueError::new("amount", "not an integer")))
    }
}

/// `amount`: `{"minor": integer, "currency": "HKD"}`, both required.
struct AmountObj<'c>(&'c Ctx);

impl<'de> DeserializeSeed<'de> for AmountObj<'_> {
    type Value = (AmountMinor, Currency);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AmountObj<'_> {
    type Value = (AmountMinor, Currency);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an amount object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        const HERE: Location = Location::Element("amount");
        const NAMES: &[&str] = &["minor", "currency"];
        const PATHS: &[&str] = &[MINOR, "amount.currency"];
        let ctx = self.0;
        let (mut minor, mut currency) = (None, None);
        let mut seen = 0;
        while let Some(i) = ctx.key(&mut map, NAMES, PATHS, HERE, &mut seen)? {
            match i {
                0 => minor = Some(ctx.member(&mut map, MINOR, HERE, Minor(ctx))?),
                _ => currency = Some(ctx.text(&mut map, PATHS[1], HERE, Currency::from_alpha)?),
            }
        }
        match (minor, currency) {
            (Some(m), Some(c)) => Ok((m, c)),
            (None, _) => Err(ctx.fail(missing(MINOR))),
            (_, None) => Err(ctx.fail(missing(PATHS[1]))),
        }
    }
}

fn missing(path: &'static str) -> CodecError {
    CodecError::Missing {
        at: Location::Element(path),
    }
}

/// A debtor or creditor as read; every member optional (each type's
/// requirements are checked on the whole transaction).
struct Party {
    account: Option<Account>,
    name: Option<PartyName>,
    bank: Option<BankCode>,
    proxy: Option<ProxyId>,
}

/// `debtor` (`account`, `name`, `bank`) or `creditor` (those and `proxy`).
struct PartyObj<'c> {
    ctx: &'c Ctx,
    here: Location,
    names: &'static [&'static str],
    paths: &'static [&'static str],
}

impl<'c> PartyObj<'c> {
    fn debtor(ctx: &'c Ctx) -> Self {
        PartyObj {
            ctx,
            here: Location::Element("debtor"),
            names: &["account", "name", "bank"],
            paths: &["debtor.account", "debtor.name", "debtor.bank"],
        }
    }

    fn creditor(ctx: &'c Ctx) -> Self {
        PartyObj {
            ctx,
            here: Location::Element("creditor"),
            names: &["account", "name", "bank", "proxy"],
            paths: &[
                "creditor.account",
                "creditor.name",
                "creditor.bank",
                "creditor.proxy",
            ],
        }
    }
}

impl<'de> DeserializeSeed<'de> for PartyObj<'_> {
    type Value = Party;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Party, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PartyObj<'_> {
    type Value = Party;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a party object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Party, A::Error> {
        let ctx = self.ctx;
        let mut p = Party {
            account: None,
            name: None,
            bank: None,
            proxy: None,
        };
        let mut seen = 0;
        while let Some(i) = ctx.key(&mut map, self.names, self.paths, self.here, &mut seen)? {
            let at = self.paths[i];
            match i {
                0 => {
                    p.account =
                        Some(ctx.text(&mut map, at, self.here, |s| Account::parse(s.as_bytes()))?)
                }
                1 => p.name = Some(ctx.text(&mut map, at, self.here, PartyName::parse)?),
                2 => {
                    p.bank =
                        Some(ctx.text(&mut map, at, self.here, |s| BankCode::parse(s.as_bytes()))?)
                }
                _ => p.proxy = Some(ctx.member(&mut map, at, self.here, ProxyObj(ctx))?),
            }
        }
        Ok(p)
    }
}

/// `creditor.proxy`: `{"type": "MOBN", "id": "+852-91234567"}`, both required.
struct ProxyObj<'c>(&'c Ctx);

impl<'de> DeserializeSeed<'de> for ProxyObj<'_> {
    type Value = ProxyId;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ProxyId, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ProxyObj<'_> {
    type Value = ProxyId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a proxy object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProxyId, A::Error> {
        const HERE: Location = Location::Element("creditor.proxy");
        const NAMES: &[&str] = &["type", "id"];
        const PATHS: &[&str] = &["creditor.proxy.type", "creditor.proxy.id"];
        let ctx = self.0;
        let (mut kind, mut id) = (None, None);
        let mut seen = 0;
        while let Some(i) = ctx.key(&mut map, NAMES, PATHS, HERE, &mut seen)? {
            match i {
                0 => kind = Some(ctx.text(&mut map, PATHS[0], HERE, parse_proxy_kind)?),
                // Held inline until the kind is known (members come in any order).
                _ => {
                    id = Some(ctx.text(&mut map, PATHS[1], HERE, |s| {
                        ArrayString::<254>::from(s)
                            .map_err(|_| ValueError::new("proxy id", "too long"))
                    })?)
                }
            }
        }
        match (kind, id) {
            (Some(kind), Some(id)) => {
                ProxyId::new(kind, id.as_bytes()).map_err(|source| ctx.value(PATHS[1], source))
            }
            (None, _) => Err(ctx.fail(missing(PATHS[0]))),
            (_, None) => Err(ctx.fail(missing(PATHS[1]))),
        }
    }
}

fn parse_proxy_kind(s: &str) -> Result<ProxyKind, ValueError> {
    match s {
        "MOBN" => Ok(ProxyKind::Mobile),
        "EMAL" => Ok(ProxyKind::Email),
        "FPID" => Ok(ProxyKind::FpsId),
        "HKID" => Ok(ProxyKind::Hkid),
        _ => Err(ValueError::new(
            "proxy type",
            "not MOBN, EMAL, FPID or HKID",
        )),
    }
}

/// The `original.type` names: request types with distinct canonical MTIs.
pub(super) const ORIGINAL_TYPES: [(&str, Mti); 5] = [
    ("credit_transfer", Mti::CREDIT_TRANSFER),
    ("cancel", Mti::REVERSAL),
    ("reversal_advice", Mti::REVERSAL_ADVICE),
    ("status_inquiry", Mti::STATUS_INQUIRY),
    ("network", Mti::NETWORK),
];

fn parse_original_type(s: &str) -> Result<Mti, ValueError> {
    ORIGINAL_TYPES
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, m)| *m)
        .ok_or(ValueError::new("original type", "not a request type"))
}

/// An `original.acquirer`/`original.forwarder`: 1 to 11 digits, right-aligned
/// into the zero-padded F90 slot.
fn parse_institution(s: &str) -> Result<[u8; 11], ValueError> {
    let id = InstitutionId::parse(s.as_bytes())?;
    Ok(OriginalData::pad_institution(Some(&id)))
}

/// `original`: the request this one refers to. `request_id` is required; the
/// F90 members `type`, `stan`, `transmitted_at` come together, with optional
/// `acquirer` and `forwarder`.
struct OriginalObj<'c>(&'c Ctx);

impl<'de> DeserializeSeed<'de> for OriginalObj<'_> {
    type Value = (MessageId, Option<OriginalData>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OriginalObj<'_> {
    type Value = (MessageId, Option<OriginalData>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an original object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        const HERE: Location = Location::Element("original");
        const NAMES: &[&str] = &[
            "request_id",
            "type",
            "stan",
            "transmitted_at",
            "acquirer",
            "forwarder",
        ];
        const PATHS: &[&str] = &[
            "original.request_id",
            "original.type",
            "original.stan",
            "original.transmitted_at",
            "original.acquirer",
            "original.forwarder",
        ];
        let ctx = self.0;
        let mut id = None;
        let (mut mti, mut stan, mut at) = (None, None, None);
        let (mut acquirer, mut forwarder) = (None, None);
        let mut seen = 0;
        while let Some(i) = ctx.key(&mut map, NAMES, PATHS, HERE, &mut seen)? {
            let path = PATHS[i];
            match i {
                0 => id = Some(ctx.text(&mut map, path, HERE, |s| MessageId::parse(s.as_bytes()))?),
                1 => mti = Some(ctx.text(&mut map, path, HERE, parse_original_type)?),
                2 => stan = Some(ctx.text(&mut map, path, HERE, |s| Stan::parse(s.as_bytes()))?),
                3 => {
                    at = Some(ctx.text(&mut map, path, HERE, |s| {
                        TransmissionDateTime::parse(s.as_bytes())
                    })?)
                }
                4 => acquirer = Some(ctx.text(&mut map, path, HERE, parse_institution)?),
                _ => forwarder = Some(ctx.text(&mut map, path, HERE, parse_institution)?),
            }
        }
        let id = id.ok_or_else(|| ctx.fail(missing(PATHS[0])))?;
        // Any F90 member present: the three identifying ones are required.
        if seen & !1 == 0 {
            return Ok((id, None));
        }
        let mti = mti.ok_or_else(|| ctx.fail(missing(PATHS[1])))?;
        let stan = stan.ok_or_else(|| ctx.fail(missing(PATHS[2])))?;
        let transmitted_at = at.ok_or_else(|| ctx.fail(missing(PATHS[3])))?;
        let data = OriginalData {
            mti,
            stan,
            transmitted_at,
            acquirer: acquirer.unwrap_or([b'0'; 11]),
            forwarder: forwarder.unwrap_or([b'0'; 11]),
        };
        Ok((id, Some(data)))
    }
}
