//! One-pass streaming decoder: quick-xml events over the borrowed input,
//! a stack of known tags, and a compiled path table per message.
//!
//! Values are converted to canonical types as each element closes, so the
//! only state kept is the transaction being built plus a few ISO-only items
//! (status, proxy parts). Text is borrowed from the input unless an element's
//! text is split by entity references, when it is joined in one reused buffer.

use std::borrow::Cow;
use std::ops::Range;

use arrayvec::{ArrayString, ArrayVec};
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;

use crate::error::{CodecError, Location};
use crate::model::{
    Account, BankCode, Currency, EndToEndId, IdempotencyKey, MessageId, Mti, PartyName,
    ProcessingCode, ProxyId, ProxyKind, ReasonCode, SettlementDate, SignatureValue, Transaction,
    Uetr,
};

use super::paths::{self, Field, Hit, Tag};
use super::status;
use super::values::{minor_digits, parse_amount, CreationDateTime, MessageVersion, StatusCode};
use super::{Decoded, Iso20022Config, MessageType, MAX_DEPTH, NAMESPACE_PREFIX, SIGNATURE_ELEMENT};

/// Envelope elements (e.g. `Envelope`, `DataPDU/Body`) allowed around `Document`.
pub(super) const MAX_ENVELOPE_DEPTH: usize = 4;

/// Longest element text looked at; every canonical value is far shorter.
pub(super) const MAX_VALUE_BYTES: usize = 1024;

/// Longest namespace URI of a message this codec knows.
pub(super) const MAX_NAMESPACE_LEN: usize = 64;

/// Where the reader is in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Before `Document`, possibly inside an envelope.
    Envelope,
    /// Inside `Document`, before the message element.
    Document,
    /// Inside the message element.
    Message,
    /// The message element closed; `Document` still open.
    DocumentEnd,
    /// `Document` closed; the rest of the envelope follows.
    After,
}

/// The value element being read.
#[derive(Debug, Clone, Copy)]
struct Leaf {
    hit: Hit,
    depth: usize,
}

/// Text of the current value element.
#[derive(Debug, Clone, Copy)]
enum Text<'i> {
    Empty,
    Borrowed(&'i str),
    /// In `Parser::owned`.
    Owned,
}

pub(crate) fn decode(config: &Iso20022Config, payload: &[u8]) -> Result<Decoded, CodecError> {
    decode_spanned(config, payload).map(|(d, _)| d)
}

/// Decode, and also return where the `Document` element lies in `payload`
/// (from `<` of its start tag to `>` of its end tag): what a signature in
/// the envelope covers (see [`crate::auth`]).
pub(crate) fn decode_spanned(
    config: &Iso20022Config,
    payload: &[u8],
) -> Result<(Decoded, Range<usize>), CodecError> {
    if payload.len() > config.max_message_bytes {
        return Err(CodecError::TooLong {
            at: Location::Message,
            len: payload.len(),
            max: config.max_message_bytes,
        });
    }
    let input = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
    let bom = payload.len() - input.len();
    let mut reader = NsReader::from_reader(input);
    let rc = reader.config_mut();
    rc.expand_empty_elements = true;
    rc.check_end_names = true;
    let mut p = Parser::new(config);
    let (mut doc_start, mut doc_end) = (0, 0);
    loop {
        // Positions fit in usize: they index `input`.
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| p.xml_error(&e))?;
        match event {
            Event::Start(e) => {
                let outside = matches!(p.phase, Phase::Envelope | Phase::After);
                if outside && e.local_name().as_ref() == SIGNATURE_ELEMENT {
                    let text = reader.read_text(e.name()).map_err(|e| p.xml_error(&e))?;
                    p.signature(text.into_inner().as_bytes())?;
                    continue;
                }
                if p.phase == Phase::Envelope {
                    doc_start = before;
                }
                p.start(&mut reader, e)?
            }
            Event::End(_) => {
                let closing_document = p.phase == Phase::DocumentEnd;
                p.end()?;
                if closing_document {
                    doc_end = reader.buffer_position() as usize;
                }
            }
            Event::Text(t) => p.text(t.into_inner())?,
            Event::CData(t) => p.text(t.into_inner())?,
            Event::GeneralRef(r) => p.general_ref(r)?,
            Event::DocType(_) => {
                // Entity declarations are a classic XML attack surface.
                return Err(CodecError::Invalid {
                    at: Location::Element("Document"),
                    reason: "document type declaration not allowed",
                });
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Empty(_) => {
                // Not produced: empty elements are expanded to Start + End.
            }
            Event::Eof => {
                let decoded = p.finish()?;
                return Ok((decoded, bom + doc_start..bom + doc_end));
            }
        }
    }
}

struct Parser<'i, 'c> {
    config: &'c Iso20022Config,
    phase: Phase,
    env_depth: usize,
    msg: Option<(MessageType, MessageVersion)>,
    ns: ArrayString<MAX_NAMESPACE_LEN>,
    path: ArrayVec<Tag, MAX_DEPTH>,
    leaf: Option<Leaf>,
    text: Text<'i>,
    owned: String,
    seen: u64,
    txn: Transaction,
    currency: Option<Currency>,
    proxy_kind: Option<ProxyKind>,
    proxy_id: ArrayString<{ ProxyId::MAX_WIRE_LEN }>,
    group_original_message_id: Option<MessageId>,
    /// `OrgnlMsgNmId` names a pacs.028 (transaction level, group level).
    answers_inquiry: (Option<bool>, Option<bool>),
    tx_status: Option<StatusCode>,
    cancellation_status: Option<StatusCode>,
    confirmation: Option<StatusCode>,
}

impl<'i, 'c> Parser<'i, 'c> {
    fn new(config: &'c Iso20022Config) -> Self {
        Parser {
            config,
            phase: Phase::Envelope,
            env_depth: 0,
            msg: None,
            ns: ArrayString::new(),
            path: ArrayVec::new(),
            leaf: None,
            text: Text::Empty,
            owned: String::new(),
            seen: 0,
            txn: Transaction::new(Mti::CREDIT_TRANSFER),
            currency: None,
            proxy_kind: None,
            proxy_id: ArrayString::new(),
            group_original_message_id: None,
            answers_inquiry: (None, None),
            tx_status: None,
            cancellation_status: None,
            confirmation: None,
        }
    }

    /// The innermost element known to be open, for error locations.
    fn here(&self) -> &'static str {
        match (self.phase, self.path.last(), self.msg) {
            (Phase::Message, Some(tag), _) => tag.name(),
            (Phase::Message, None, Some((m, _))) => m.root_element(),
            _ => "Document",
        }
    }

    fn xml_error(&self, e: &quick_xml::Error) -> CodecError {
        use quick_xml::Error as X;
        let reason = match e {
            X::Syntax(_) => "malformed XML",
            X::IllFormed(_) => "ill-formed XML: mismatched or unexpected tags",
            X::InvalidAttr(_) => "malformed attribute",
            X::Encoding(_) => "not valid UTF-8",
            X::Escape(_) => "bad entity or character reference",
            X::Namespace(_) => "bad namespace declaration",
            X::Io(_) => "unreadable input",
        };
        CodecError::Invalid {
            at: Location::Element(self.here()),
            reason,
        }
    }

    fn start(
        &mut self,
        reader: &mut NsReader<&'i [u8]>,
        e: BytesStart<'i>,
    ) -> Result<(), CodecError> {
        let (ns, local) = reader.resolver().resolve_element(e.name());
        let local = local.into_inner();
        match self.phase {
            Phase::Envelope if local == "Document" => {
                let (msg, version) = identify(self.config, &ns)?;
                if let ResolveResult::Bound(Namespace(uri)) = ns {
                    // `identify` accepted it, so it fits.
                    self.ns = ArrayString::from(uri).unwrap_or_default();
                }
                self.msg = Some((msg, version));
                self.phase = Phase::Document;
                Ok(())
            }
            Phase::Envelope if local == "AppHdr" => skip(reader, &e, "Document"),
            Phase::Envelope => {
                if self.env_depth >= MAX_ENVELOPE_DEPTH {
                    return Err(CodecError::Invalid {
                        at: Location::Element("Document"),
                        reason: "envelope nested too deep",
                    });
                }
                self.env_depth += 1;
                Ok(())
            }
            Phase::Document => {
                let in_ns = self.in_namespace(&ns);
                match self.msg {
                    Some((m, _)) if in_ns && local == m.root_element() => {
                        self.phase = Phase::Message;
                        Ok(())
                    }
                    _ => Err(CodecError::Invalid {
                        at: Location::Element("Document"),
                        reason: "unexpected element instead of the message of this namespace",
                    }),
                }
            }
            Phase::Message => {
                if let Some(leaf) = self.leaf {
                    return Err(CodecError::Invalid {
                        at: Location::Element(leaf.hit.path),
                        reason: "element inside a value",
                    });
                }
                let tag = if self.in_namespace(&ns) {
                    Tag::from_local(local)
                } else {
                    Tag::Other
                };
                if tag == Tag::Other {
                    // Nothing under an unknown element is captured.
                    let here = self.here();
                    return skip(reader, &e, here);
                }
                if self.path.try_push(tag).is_err() {
                    return Err(CodecError::Invalid {
                        at: Location::Element(self.here()),
                        reason: "elements nested too deep",
                    });
                }
                let Some((msg, _)) = self.msg else {
                    return Ok(());
                };
                if let Some(hit) = paths::lookup(msg, &self.path) {
                    self.enter(hit, &e)?;
                }
                Ok(())
            }
            Phase::DocumentEnd => Err(CodecError::Invalid {
                at: Location::Element("Document"),
                reason: "more than one message element",
            }),
            Phase::After if local == "Document" => Err(CodecError::Invalid {
                at: Location::Element("Document"),
                reason: "more than one Document",
            }),
            Phase::After => skip(reader, &e, "Document"),
        }
    }

    /// The envelope's `Sgntr`: base64 of the detached signature.
    fn signature(&mut self, text: &[u8]) -> Result<(), CodecError> {
        let at = Location::Element(SIGNATURE_ELEMENT);
        if self.txn.signature.is_some() {
            return Err(CodecError::Invalid {
                at,
                reason: "more than one signature",
            });
        }
        let trimmed = text.trim_ascii();
        if trimmed.len() > 4 * SignatureValue::MAX_LEN.div_ceil(3) {
            return Err(CodecError::TooLong {
                at,
                len: trimmed.len(),
                max: 4 * SignatureValue::MAX_LEN.div_ceil(3),
            });
        }
        let raw = crate::auth::base64_decode(trimmed).ok_or(CodecError::Invalid {
            at,
            reason: "not base64",
        })?;
        self.txn.signature = Some(SignatureValue::new(&raw).map_err(|e| CodecError::value(at, e))?);
        Ok(())
    }

    fn in_namespace(&self, ns: &ResolveResult<'_>) -> bool {
        matches!(ns, ResolveResult::Bound(Namespace(uri)) if *uri == self.ns.as_str())
    }

    /// Start of a captured element: refuse duplicates, note the currency.
    fn enter(&mut self, hit: Hit, e: &BytesStart<'i>) -> Result<(), CodecError> {
        let at = Location::Element(hit.path);
        if self.seen & hit.field.bit() != 0 {
            let reason = if matches!(hit.field, Field::TxBlock | Field::Underlying) {
                "more than one transaction: single-transaction messages only"
            } else {
                "duplicate element"
            };
            return Err(CodecError::Invalid { at, reason });
        }
        self.seen |= hit.field.bit();
        if hit.field.is_block() {
            return Ok(());
        }
        if hit.field == Field::Amount {
            self.currency = Some(read_currency(e, hit.path)?);
        }
        self.leaf = Some(Leaf {
            hit,
            depth: self.path.len(),
        });
        self.text = Text::Empty;
        Ok(())
    }

    fn end(&mut self) -> Result<(), CodecError> {
        match self.phase {
            Phase::Envelope | Phase::After => {
                self.env_depth = self.env_depth.saturating_sub(1);
                Ok(())
            }
            Phase::Document => Err(CodecError::Missing {
                at: Location::Element(self.msg.map_or("Document", |(m, _)| m.root_element())),
            }),
            Phase::Message => {
                if self.path.is_empty() {
                    self.phase = Phase::DocumentEnd;
                    return Ok(());
                }
                if let Some(leaf) = self.leaf {
                    if leaf.depth == self.path.len() {
                        self.leaf = None;
                        self.finish_leaf(leaf.hit)?;
                    }
                }
                self.path.pop();
                Ok(())
            }
            Phase::DocumentEnd => {
                self.phase = Phase::After;
                Ok(())
            }
        }
    }

    fn text(&mut self, piece: Cow<'i, str>) -> Result<(), CodecError> {
        if self.leaf.is_none() {
            let outside =
                matches!(self.phase, Phase::Envelope | Phase::After) && self.env_depth == 0;
            if outside && !piece.bytes().all(is_xml_space) {
                return Err(CodecError::Invalid {
                    at: Location::Element("Document"),
                    reason: "content outside any element",
                });
            }
            return Ok(());
        }
        self.check_len(piece.len())?;
        self.text = match (self.text, piece) {
            (Text::Empty, Cow::Borrowed(s)) => Text::Borrowed(s),
            (Text::Empty, Cow::Owned(s)) => {
                self.owned.clear();
                self.owned.push_str(&s);
                Text::Owned
            }
            (Text::Borrowed(prev), s) => {
                self.owned.clear();
                self.owned.push_str(prev);
                self.owned.push_str(&s);
                Text::Owned
            }
            (Text::Owned, s) => {
                self.owned.push_str(&s);
                Text::Owned
            }
        };
        Ok(())
    }

    fn text_len(&self) -> usize {
        match self.text {
            Text::Empty => 0,
            Text::Borrowed(s) => s.len(),
            Text::Owned => self.owned.len(),
        }
    }

    fn general_ref(&mut self, r: BytesRef<'i>) -> Result<(), CodecError> {
        let bad = |reason| CodecError::Invalid {
            at: Location::Element(self.here()),
            reason,
        };
        let ch = resolve_reference(&r).ok_or_else(|| {
            bad(if r.is_char_ref() {
                "bad character reference"
            } else {
                "unknown entity"
            })
        })?;
        if self.leaf.is_none() {
            return Ok(());
        }
        let mut buf = [0u8; 4];
        self.append_owned(ch.encode_utf8(&mut buf))
    }

    /// Append text that does not live in the input (a resolved reference).
    fn append_owned(&mut self, piece: &str) -> Result<(), CodecError> {
        self.check_len(piece.len())?;
        match self.text {
            Text::Empty => self.owned.clear(),
            Text::Borrowed(prev) => {
                self.owned.clear();
                self.owned.push_str(prev);
            }
            Text::Owned => {}
        }
        self.owned.push_str(piece);
        self.text = Text::Owned;
        Ok(())
    }

    /// Refuse a value growing past [`MAX_VALUE_BYTES`].
    fn check_len(&self, more: usize) -> Result<(), CodecError> {
        let len = self.text_len() + more;
        match self.leaf {
            Some(leaf) if len > MAX_VALUE_BYTES => Err(CodecError::TooLong {
                at: Location::Element(leaf.hit.path),
                len,
                max: MAX_VALUE_BYTES,
            }),
            _ => Ok(()),
        }
    }

    /// End of a captured element: convert its text to the canonical value.
    fn finish_leaf(&mut self, hit: Hit) -> Result<(), CodecError> {
        let raw: &str = match self.text {
            Text::Empty => "",
            Text::Borrowed(s) => s,
            Text::Owned => &self.owned,
        };
        // Identifiers and names are strings whose spaces are content
        // (xs:string preserves whitespace); codes, numbers and dates are
        // tokens, trimmed as pretty-printers may wrap them.
        let v = if hit.field.keeps_whitespace() {
            raw
        } else {
            raw.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
        };
        let b = v.as_bytes();
        let at = Location::Element(hit.path);
        let val = |e| CodecError::value(at, e);
        let t = &mut self.txn;
        match hit.field {
            Field::GrpHdr | Field::TxBlock | Field::Underlying => {}
            Field::MsgId => t.message_id = Some(MessageId::parse(b).map_err(val)?),
            Field::CreDtTm => {
                let c = CreationDateTime::parse(b).map_err(val)?;
                t.transmitted_at = Some(c.to_transmission(self.config.default_utc_offset_minutes));
            }
            Field::NbOfTxs => {
                if b != b"1" {
                    return Err(CodecError::Invalid {
                        at,
                        reason: "must be 1: single-transaction messages only",
                    });
                }
            }
            Field::SttlmMtd => {
                if b != b"CLRG" {
                    return Err(CodecError::Invalid {
                        at,
                        reason: "settlement method must be CLRG",
                    });
                }
            }
            Field::EndToEndId => t.end_to_end_id = Some(EndToEndId::parse(b).map_err(val)?),
            Field::TxId => t.transaction_id = Some(EndToEndId::parse(b).map_err(val)?),
            Field::Uetr => t.uetr = Some(Uetr::parse(b).map_err(val)?),
            Field::Amount => {
                // `enter` read the currency before any text.
                let Some(ccy) = self.currency else {
                    return Err(CodecError::Missing { at });
                };
                let amount = parse_amount(b, minor_digits(ccy))
                    .map_err(|reason| CodecError::Invalid { at, reason })?;
                t.amount = Some(amount);
                t.currency = Some(ccy);
            }
            Field::SettlementDate => {
                t.settlement_date = Some(SettlementDate::parse_iso(b).map_err(val)?)
            }
            Field::DebtorName => t.debtor_name = Some(PartyName::parse(v).map_err(val)?),
            Field::CreditorName => t.creditor_name = Some(PartyName::parse(v).map_err(val)?),
            Field::DebtorAccount => t.debtor_account = Some(Account::parse(b).map_err(val)?),
            Field::CreditorAccount => t.creditor_account = Some(Account::parse(b).map_err(val)?),
            Field::SendingBank => t.sending_bank = Some(BankCode::parse(b).map_err(val)?),
            Field::ReceivingBank => t.receiving_bank = Some(BankCode::parse(b).map_err(val)?),
            Field::ProxyType => {
                let kind = proxy_kind(self.config, b).ok_or(CodecError::Invalid {
                    at,
                    reason: "unknown proxy type",
                })?;
                self.proxy_kind = Some(kind);
            }
            Field::ProxyId => {
                self.proxy_id = ArrayString::from(v).map_err(|_| CodecError::TooLong {
                    at,
                    len: v.len(),
                    max: ProxyId::MAX_WIRE_LEN,
                })?;
            }
            Field::OrgnlMsgId => t.original_message_id = Some(MessageId::parse(b).map_err(val)?),
            Field::GroupOrgnlMsgId => {
                self.group_original_message_id = Some(MessageId::parse(b).map_err(val)?)
            }
            Field::OrgnlMsgNmId => self.answers_inquiry.0 = Some(b.starts_with(b"pacs.028")),
            Field::GroupOrgnlMsgNmId => self.answers_inquiry.1 = Some(b.starts_with(b"pacs.028")),
            Field::TxStatus => self.tx_status = Some(StatusCode::parse(b).map_err(val)?),
            Field::CancellationStatus => {
                self.cancellation_status = Some(StatusCode::parse(b).map_err(val)?)
            }
            Field::Confirmation => self.confirmation = Some(StatusCode::parse(b).map_err(val)?),
            Field::Reason => t.reason = Some(ReasonCode::parse(b).map_err(val)?),
            Field::CaseId => t.idempotency_key = Some(IdempotencyKey::parse(b).map_err(val)?),
        }
        Ok(())
    }

    fn has(&self, f: Field) -> bool {
        self.seen & f.bit() != 0
    }

    /// End of input: check completeness and settle the MTI and outcome.
    fn finish(mut self) -> Result<Decoded, CodecError> {
        let truncated = |at: &'static str| CodecError::Truncated {
            at: Location::Element(at),
            needed: 1,
            available: 0,
        };
        let (msg, version) = match (self.phase, self.msg) {
            (Phase::Envelope, _) | (_, None) => {
                return Err(CodecError::Missing {
                    at: Location::Element("Document"),
                })
            }
            (Phase::After, Some(m)) if self.env_depth == 0 => m,
            (Phase::After, _) => {
                return Err(CodecError::Truncated {
                    at: Location::Message,
                    needed: 1,
                    available: 0,
                })
            }
            _ => return Err(truncated(self.here())),
        };
        for (field, path) in paths::mandatory(msg) {
            if !self.has(*field) {
                return Err(CodecError::Missing {
                    at: Location::Element(path),
                });
            }
        }
        self.settle_proxy()?;
        if msg == MessageType::Pacs008
            && self.txn.creditor_account.is_none()
            && self.txn.proxy.is_none()
        {
            return Err(CodecError::Missing {
                at: Location::Element("CdtTrfTxInf/CdtrAcct"),
            });
        }
        let t = &self.txn;
        if t.end_to_end_id.is_none() && t.transaction_id.is_none() && t.uetr.is_none() {
            return Err(CodecError::Missing {
                at: Location::Element(paths::reference_path(msg)),
            });
        }
        if self.txn.original_message_id.is_none() {
            self.txn.original_message_id = self.group_original_message_id;
        }
        let mut status = None;
        match msg {
            MessageType::Pacs008 => {
                self.txn.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
            }
            MessageType::Pacs004 => {
                self.txn.processing_code = Some(ProcessingCode::RETURN);
            }
            MessageType::Pacs028 => self.txn.mti = Mti::STATUS_INQUIRY,
            MessageType::Camt056 => self.txn.mti = Mti::REVERSAL,
            MessageType::Pacs002 => {
                let inquiry = self.answers_inquiry.0.or(self.answers_inquiry.1);
                self.txn.mti = if inquiry == Some(true) {
                    Mti::STATUS_INQUIRY_RESPONSE
                } else {
                    Mti::CREDIT_TRANSFER_RESPONSE
                };
                // Mandatory, checked above.
                let s = self.tx_status.ok_or(CodecError::Missing {
                    at: Location::Element("TxInfAndSts/TxSts"),
                })?;
                let code = status::response_for_payment_status(&s, self.txn.reason.as_ref())
                    .map_err(|_| CodecError::Invalid {
                        at: Location::Element("TxInfAndSts/TxSts"),
                        reason: "unknown transaction status",
                    })?;
                self.txn.response_code = Some(code);
                status = Some(s);
            }
            MessageType::Camt029 => {
                self.txn.mti = Mti::REVERSAL_RESPONSE;
                let (s, at) = match (self.cancellation_status, self.confirmation) {
                    (Some(s), _) => (s, "CxlDtls/TxInfAndSts/TxCxlSts"),
                    (None, Some(s)) => (s, "Sts/Conf"),
                    (None, None) => {
                        return Err(CodecError::Missing {
                            at: Location::Element("CxlDtls/TxInfAndSts/TxCxlSts"),
                        })
                    }
                };
                let code = status::response_for_cancellation_status(&s, self.txn.reason.as_ref())
                    .map_err(|_| CodecError::Invalid {
                    at: Location::Element(at),
                    reason: "unknown cancellation status",
                })?;
                self.txn.response_code = Some(code);
                status = Some(s);
            }
        }
        Ok(Decoded {
            message: msg,
            version,
            status,
            transaction: self.txn,
        })
    }

    /// Combine `Prxy/Tp` and `Prxy/Id`, which come as a pair.
    fn settle_proxy(&mut self) -> Result<(), CodecError> {
        const TP: &str = "CdtTrfTxInf/CdtrAcct/Prxy/Tp";
        const ID: &str = "CdtTrfTxInf/CdtrAcct/Prxy/Id";
        match (self.has(Field::ProxyType), self.has(Field::ProxyId)) {
            (false, false) => Ok(()),
            (true, false) => Err(CodecError::Missing {
                at: Location::Element(ID),
            }),
            (false, true) => Err(CodecError::Missing {
                at: Location::Element(TP),
            }),
            (true, true) => {
                let kind = self.proxy_kind.ok_or(CodecError::Missing {
                    at: Location::Element(TP),
                })?;
                let proxy = ProxyId::new(kind, self.proxy_id.as_bytes())
                    .map_err(|e| CodecError::value(Location::Element(ID), e))?;
                self.txn.proxy = Some(proxy);
                Ok(())
            }
        }
    }
}

/// Skip the subtree of `e` (already started), mapping errors to `here`.
fn skip(
    reader: &mut NsReader<&[u8]>,
    e: &BytesStart<'_>,
    here: &'static str,
) -> Result<(), CodecError> {
    reader
        .read_to_end(e.name())
        .map(|_| ())
        .map_err(|_| CodecError::Invalid {
            at: Location::Element(here),
            reason: "element not closed properly",
        })
}

/// The character of a reference in text: a character reference to a
/// non-control character (tab, CR and LF allowed), or one of XML's five
/// predefined entities. `None` for anything else (no DTD, so no other
/// entity exists).
pub(super) fn resolve_reference(r: &BytesRef<'_>) -> Option<char> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) if !c.is_control() || matches!(c, '\t' | '\n' | '\r') => Some(c),
            _ => None,
        };
    }
    match &**r {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

/// The message type and version of a `Document` namespace.
pub(super) fn identify(
    config: &Iso20022Config,
    ns: &ResolveResult<'_>,
) -> Result<(MessageType, MessageVersion), CodecError> {
    let err = |reason| CodecError::Invalid {
        at: Location::Element("Document"),
        reason,
    };
    let ResolveResult::Bound(Namespace(uri)) = ns else {
        return Err(err("Document has no ISO 20022 namespace"));
    };
    let rest = uri
        .as_bytes()
        .strip_prefix(NAMESPACE_PREFIX.as_bytes())
        .ok_or(err("not an ISO 20022 message namespace"))?;
    // `pacs.008.001.08`: identifier, dot, version.
    if rest.len() != 15 || rest[8] != b'.' {
        return Err(err("unsupported ISO 20022 message"));
    }
    let id = std::str::from_utf8(&rest[..8]).map_err(|_| err("unsupported ISO 20022 message"))?;
    let msg = MessageType::from_id(id).ok_or(err("unsupported ISO 20022 message"))?;
    let version =
        MessageVersion::parse(&rest[9..]).map_err(|_| err("unsupported ISO 20022 message"))?;
    if version != config.versions.of(msg) && !config.accept_other_versions {
        return Err(err("unsupported message version"));
    }
    if uri.len() > MAX_NAMESPACE_LEN {
        return Err(err("unsupported ISO 20022 message"));
    }
    Ok((msg, version))
}

/// The `Ccy` attribute of an amount element.
fn read_currency(e: &BytesStart<'_>, amount_path: &'static str) -> Result<Currency, CodecError> {
    let at = Location::Element(paths::currency_path(amount_path));
    let attr = e
        .try_get_attribute("Ccy")
        .map_err(|_| CodecError::Invalid {
            at,
            reason: "malformed attribute",
        })?;
    let Some(attr) = attr else {
        return Err(CodecError::Missing { at });
    };
    let code = attr
        .value
        .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
    Currency::from_alpha(code).map_err(|e| CodecError::value(at, e))
}

/// The proxy kind of a `Prxy/Tp/Cd` code: the configured codes and aliases.
fn proxy_kind(config: &Iso20022Config, code: &[u8]) -> Option<ProxyKind> {
    let c = &config.proxy_codes;
    let is = |k: &super::ProxyTypeCode| k.as_str().as_bytes() == code;
    if is(&c.mobile) || code == b"MOBN" || code == b"MBNO" {
        Some(ProxyKind::Mobile)
    } else if is(&c.email) || code == b"EMAL" {
        Some(ProxyKind::Email)
    } else if is(&c.fps_id) || code == b"SVID" || code == b"FPID" {
        Some(ProxyKind::FpsId)
    } else if is(&c.hkid) || code == b"HKID" {
        Some(ProxyKind::Hkid)
    } else {
        None
    }
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}
