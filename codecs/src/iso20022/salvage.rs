//! Salvage of a request that does not decode: enough of it to refuse it
//! with a format error (`30`) matched to it, instead of closing the link
//! it came on.
//!
//! One more streaming pass over the input, on the error path only. It is
//! as strict as the decoder about form (the whole input well-formed XML,
//! the message recognised by its `Document` namespace and version, no DTD,
//! the same envelope and depth limits) and about the values it keeps, but
//! reads nothing else: a bad amount, an unknown currency, a missing or
//! repeated element elsewhere do not matter. What it keeps is read with
//! the decoder's own paths, so it is what a decode would have set.
//!
//! Kept: the message id (`GrpHdr/MsgId`, camt.056 `Assgnmt/Id`), which the
//! answer names in `OrgnlMsgId`; the transaction references (end-to-end
//! id, transaction id, UETR), which it echoes; and for a camt.056 the two
//! banks, the parties of the camt.029 answer. Every one of them present
//! must parse and occur once, the message id and at least one reference
//! must be there: otherwise there is nothing trustworthy to answer.

use arrayvec::{ArrayString, ArrayVec};
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;

use crate::model::{BankCode, EndToEndId, MessageId, Mti, ProcessingCode, Transaction, Uetr};

use super::decode::{
    identify, resolve_reference, Phase, MAX_ENVELOPE_DEPTH, MAX_NAMESPACE_LEN, MAX_VALUE_BYTES,
};
use super::paths::{self, Field, Tag};
use super::{Iso20022Codec, Iso20022Config, MessageType, MAX_DEPTH, SIGNATURE_ELEMENT};

impl Iso20022Codec {
    /// The skeleton of a request that did not decode but is well-formed
    /// XML of a request message this codec reads, with a readable message
    /// id and transaction reference: its MTI, processing code, message id,
    /// references (and for a camt.056 its banks), enough to answer it with
    /// a format error matched to it. The answer is
    /// `req.response(ResponseCode::FORMAT_ERROR)`: a pacs.002 `RJCT` +
    /// `FF01` (camt.056: a camt.029 `RJCR`, which has no format-error
    /// reason). `None` for anything else: not XML, a response, an id
    /// missing, repeated or not valid.
    ///
    /// A pacs.028 is never salvaged: the pacs.002 answering it states the
    /// *inquired* payment's status, and a `RJCT` there would tell the bank
    /// that payment failed.
    pub fn salvage_request(&self, payload: &[u8]) -> Option<Transaction> {
        salvage(&self.config, payload)
    }
}

/// The request skeleton of each message type that can be salvaged.
fn skeleton(msg: MessageType) -> Option<Transaction> {
    let (mti, processing_code) = match msg {
        MessageType::Pacs008 => (Mti::CREDIT_TRANSFER, Some(ProcessingCode::CREDIT_TRANSFER)),
        MessageType::Pacs004 => (Mti::CREDIT_TRANSFER, Some(ProcessingCode::RETURN)),
        MessageType::Camt056 => (Mti::REVERSAL, None),
        // See `salvage_request`: a refusal would read as the inquired
        // payment's status.
        MessageType::Pacs028 => return None,
        MessageType::Pacs002 | MessageType::Camt029 => return None,
    };
    let mut t = Transaction::new(mti);
    t.processing_code = processing_code;
    Some(t)
}

/// Whether salvage keeps `field` of `msg`.
fn kept(msg: MessageType, field: Field) -> bool {
    match field {
        Field::MsgId | Field::EndToEndId | Field::TxId | Field::Uetr => true,
        // The camt.029 answer names both banks (or the switch's own BIC).
        Field::SendingBank | Field::ReceivingBank => msg == MessageType::Camt056,
        _ => false,
    }
}

fn salvage(config: &Iso20022Config, payload: &[u8]) -> Option<Transaction> {
    if payload.len() > config.max_message_bytes {
        return None;
    }
    let input = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
    let mut reader = NsReader::from_reader(input);
    let rc = reader.config_mut();
    rc.expand_empty_elements = true;
    rc.check_end_names = true;
    let mut s = Scan {
        phase: Phase::Envelope,
        env_depth: 0,
        msg: MessageType::Pacs008,
        ns: ArrayString::new(),
        path: ArrayVec::new(),
        leaf: None,
        text: String::new(),
        seen: 0,
        txn: Transaction::new(Mti::CREDIT_TRANSFER),
    };
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) => {
                let (ns, local) = reader.resolver().resolve_element(e.name());
                let local = local.into_inner();
                match s.phase {
                    Phase::Envelope if local == "Document" => {
                        let (msg, _) = identify(config, &ns).ok()?;
                        let ResolveResult::Bound(Namespace(uri)) = ns else {
                            return None;
                        };
                        s.ns = ArrayString::from(uri).ok()?;
                        s.txn = skeleton(msg)?;
                        s.msg = msg;
                        s.phase = Phase::Document;
                    }
                    // Neither holds anything salvage reads.
                    Phase::Envelope | Phase::After
                        if local == "AppHdr" || local == SIGNATURE_ELEMENT =>
                    {
                        reader.read_to_end(e.name()).ok()?;
                    }
                    Phase::Envelope => {
                        s.env_depth += 1;
                        if s.env_depth > MAX_ENVELOPE_DEPTH {
                            return None;
                        }
                    }
                    Phase::Document => {
                        let in_ns = s.in_namespace(&ns);
                        if !in_ns || local != s.msg.root_element() {
                            return None;
                        }
                        s.phase = Phase::Message;
                    }
                    Phase::Message => {
                        if s.leaf.is_some() {
                            // An element inside a value.
                            return None;
                        }
                        let tag = if s.in_namespace(&ns) {
                            Tag::from_local(local)
                        } else {
                            Tag::Other
                        };
                        if tag == Tag::Other {
                            // Nothing under an unknown element is read
                            // (as by the decoder).
                            reader.read_to_end(e.name()).ok()?;
                        } else {
                            s.start(tag)?;
                        }
                    }
                    Phase::DocumentEnd => return None,
                    Phase::After if local == "Document" => return None,
                    Phase::After => {
                        reader.read_to_end(e.name()).ok()?;
                    }
                }
            }
            Event::End(_) => s.end()?,
            Event::Text(t) => s.text(&t.into_inner())?,
            Event::CData(t) => s.text(&t.into_inner())?,
            Event::GeneralRef(r) => {
                let ch = resolve_reference(&r)?;
                let mut buf = [0u8; 4];
                s.text(ch.encode_utf8(&mut buf))?;
            }
            // Entity declarations are refused as by the decoder.
            Event::DocType(_) => return None,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::Empty(_) => {}
            Event::Eof => return s.finish(config),
        }
    }
}

struct Scan {
    phase: Phase,
    env_depth: usize,
    /// Meaningful from `Phase::Document` on.
    msg: MessageType,
    ns: ArrayString<MAX_NAMESPACE_LEN>,
    /// Open known elements under the message element.
    path: ArrayVec<Tag, MAX_DEPTH>,
    /// The kept element being read and its depth.
    leaf: Option<(Field, usize)>,
    text: String,
    /// Kept fields seen, by [`Field::bit`].
    seen: u64,
    txn: Transaction,
}

impl Scan {
    fn in_namespace(&self, ns: &ResolveResult<'_>) -> bool {
        matches!(ns, ResolveResult::Bound(Namespace(uri)) if *uri == self.ns.as_str())
    }

    /// A known element opens under the message element.
    fn start(&mut self, tag: Tag) -> Option<()> {
        self.path.try_push(tag).ok()?;
        let Some(hit) = paths::lookup(self.msg, &self.path) else {
            return Some(());
        };
        if !kept(self.msg, hit.field) {
            return Some(());
        }
        if self.seen & hit.field.bit() != 0 {
            // Two values: which one the bank means is unknown.
            return None;
        }
        self.seen |= hit.field.bit();
        self.leaf = Some((hit.field, self.path.len()));
        self.text.clear();
        Some(())
    }

    fn end(&mut self) -> Option<()> {
        match self.phase {
            Phase::Envelope | Phase::After => {
                self.env_depth = self.env_depth.saturating_sub(1);
            }
            // The message element is missing.
            Phase::Document => return None,
            Phase::Message if self.path.is_empty() => self.phase = Phase::DocumentEnd,
            Phase::Message => {
                if let Some((field, depth)) = self.leaf {
                    if depth == self.path.len() {
                        self.leaf = None;
                        self.keep(field)?;
                    }
                }
                self.path.pop();
            }
            Phase::DocumentEnd => self.phase = Phase::After,
        }
        Some(())
    }

    /// Text of the kept element being read; other text is ignored.
    fn text(&mut self, piece: &str) -> Option<()> {
        if self.leaf.is_none() {
            return Some(());
        }
        if self.text.len() + piece.len() > MAX_VALUE_BYTES {
            return None;
        }
        self.text.push_str(piece);
        Some(())
    }

    /// A kept element closed: its value, parsed as the decoder does.
    fn keep(&mut self, field: Field) -> Option<()> {
        let v = if field.keeps_whitespace() {
            self.text.as_str()
        } else {
            self.text
                .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
        };
        let b = v.as_bytes();
        let t = &mut self.txn;
        match field {
            Field::MsgId => t.message_id = Some(MessageId::parse(b).ok()?),
            Field::EndToEndId => t.end_to_end_id = Some(EndToEndId::parse(b).ok()?),
            Field::TxId => t.transaction_id = Some(EndToEndId::parse(b).ok()?),
            Field::Uetr => t.uetr = Some(Uetr::parse(b).ok()?),
            Field::SendingBank => t.sending_bank = Some(BankCode::parse(b).ok()?),
            Field::ReceivingBank => t.receiving_bank = Some(BankCode::parse(b).ok()?),
            // `kept` lets no other field through.
            _ => {}
        }
        Some(())
    }

    /// End of input: a whole document with what an answer needs.
    fn finish(self, config: &Iso20022Config) -> Option<Transaction> {
        if self.phase != Phase::After || self.env_depth != 0 {
            return None;
        }
        let t = self.txn;
        t.message_id?;
        if t.end_to_end_id.is_none() && t.transaction_id.is_none() && t.uetr.is_none() {
            return None;
        }
        if self.msg == MessageType::Camt056
            && config.own_bic.is_none()
            && (t.sending_bank.is_none() || t.receiving_bank.is_none())
        {
            return None;
        }
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::iso20022::{CreationDateTime, Decoded};
    use crate::model::ResponseCode;
    use crate::MessageCodec;

    const PACS008: &str = include_str!("../../tests/data/iso20022/pacs008_plain.xml");
    const PACS008_APPHDR: &str = include_str!("../../tests/data/iso20022/pacs008_apphdr_proxy.xml");
    const PACS004: &str = include_str!("../../tests/data/iso20022/pacs004.xml");
    const PACS028: &str = include_str!("../../tests/data/iso20022/pacs028.xml");
    const CAMT056: &str = include_str!("../../tests/data/iso20022/camt056.xml");
    const PACS002: &str = include_str!("../../tests/data/iso20022/pacs002_accepted.xml");

    const MSG_ID: &str = "FPS20240501004000000123";
    const E2E: &str = "E2E-20240501-0001";
    const TX_ID: &str = "TX-20240501-0001";
    const UETR: &str = "eb6305c9-1f7f-49de-aed0-16487c27b42d";

    fn codec() -> Iso20022Codec {
        Iso20022Codec::default()
    }

    fn replace(doc: &str, from: &str, to: &str) -> String {
        assert!(doc.contains(from), "sample lacks {from:?}");
        doc.replacen(from, to, 1)
    }

    /// Salvage a document that must not decode.
    fn salvage(doc: &str) -> Option<Transaction> {
        let c = codec();
        assert!(c.decode(doc.as_bytes()).is_err(), "decodes: {doc}");
        c.salvage_request(doc.as_bytes())
    }

    /// The switch's answer to `req` (a format error), encoded and decoded
    /// back, with its text.
    fn answer(req: &Transaction) -> (Decoded, String) {
        let c = codec();
        let created = CreationDateTime::parse(b"2024-05-01T02:15:31Z").unwrap();
        let mut out = BytesMut::new();
        c.encode_at(
            &req.response(ResponseCode::FORMAT_ERROR),
            &created,
            &mut out,
        )
        .expect("the answer encodes");
        let text = String::from_utf8(out.to_vec()).unwrap();
        let d = c.decode_message(&out).expect("the answer decodes");
        (d, text)
    }

    fn ids(t: &Transaction) -> (Option<&str>, Option<&str>, Option<&str>, Option<String>) {
        (
            t.message_id.as_ref().map(|m| m.as_str()),
            t.end_to_end_id.as_ref().map(|e| e.as_str()),
            t.transaction_id.as_ref().map(|e| e.as_str()),
            t.uetr
                .map(|u| String::from_utf8(u.to_text().to_vec()).unwrap()),
        )
    }

    #[test]
    fn a_pacs008_that_does_not_decode_is_salvaged_by_its_ids() {
        let broken = [
            (
                "non-numeric amount",
                replace(PACS008, ">1234.56<", ">12x4.56<"),
            ),
            (
                "bad currency",
                replace(PACS008, "Ccy=\"HKD\"", "Ccy=\"HKX\""),
            ),
            (
                "missing amount",
                replace(
                    PACS008,
                    "<IntrBkSttlmAmt Ccy=\"HKD\">1234.56</IntrBkSttlmAmt>",
                    "",
                ),
            ),
            (
                "two transactions",
                replace(PACS008, "<NbOfTxs>1</NbOfTxs>", "<NbOfTxs>2</NbOfTxs>"),
            ),
            (
                "element inside a value elsewhere",
                replace(PACS008, "<Nm>Chan", "<Nm><b/>Chan"),
            ),
        ];
        for (what, doc) in broken {
            let req = salvage(&doc).unwrap_or_else(|| panic!("{what}: not salvaged"));
            assert_eq!(req.mti, Mti::CREDIT_TRANSFER, "{what}");
            assert_eq!(
                req.processing_code,
                Some(ProcessingCode::CREDIT_TRANSFER),
                "{what}"
            );
            assert_eq!(
                ids(&req),
                (Some(MSG_ID), Some(E2E), Some(TX_ID), Some(UETR.to_owned())),
                "{what}"
            );
            // Just the ids: nothing else is read.
            let mut bare = Transaction::new(Mti::CREDIT_TRANSFER);
            bare.processing_code = req.processing_code;
            bare.message_id = req.message_id;
            bare.end_to_end_id = req.end_to_end_id;
            bare.transaction_id = req.transaction_id;
            bare.uetr = req.uetr;
            assert_eq!(req, bare, "{what}");

            let (d, text) = answer(&req);
            assert_eq!(d.message, MessageType::Pacs002, "{what}");
            assert_eq!(
                d.status.as_ref().map(|s| s.as_str()),
                Some("RJCT"),
                "{what}"
            );
            let t = &d.transaction;
            assert_eq!(t.response_code, Some(ResponseCode::FORMAT_ERROR), "{what}");
            assert_eq!(
                t.reason.as_ref().map(|r| r.as_str()),
                Some("FF01"),
                "{what}"
            );
            assert_eq!(
                t.original_message_id.as_ref().map(|m| m.as_str()),
                Some(MSG_ID),
                "{what}"
            );
            assert_eq!(
                (ids(t).1, ids(t).2, ids(t).3),
                (Some(E2E), Some(TX_ID), Some(UETR.to_owned())),
                "{what}"
            );
            assert!(text.contains("<OrgnlMsgNmId>pacs.008.001.08<"), "{text}");
        }
    }

    #[test]
    fn ids_are_read_as_the_decoder_reads_them() {
        // Through an envelope with an AppHdr, prefixed names, one reference,
        // and an element of another namespace named `MsgId`.
        let doc = replace(PACS008_APPHDR, "Ccy=\"CNY\"", "Ccy=\"\"");
        let req = salvage(&doc).unwrap();
        assert_eq!(
            ids(&req),
            (
                Some("024FPS0000000099"),
                Some("NOTPROVIDED"),
                Some("024FPS0000000099-1"),
                None
            )
        );
        // References resolved; spaces of an id kept, of a UETR trimmed.
        let doc = replace(PACS008, MSG_ID, "A&amp;B&#x43; ");
        let doc = replace(&doc, UETR, &format!("\n  {UETR}\n"));
        let doc = replace(&doc, ">1234.56<", ">-1<");
        let req = salvage(&doc).unwrap();
        assert_eq!(ids(&req).0, Some("A&BC "));
        assert_eq!(ids(&req).3, Some(UETR.to_owned()));
        // A message that decodes has the same skeleton.
        let req = codec().salvage_request(PACS008.as_bytes()).unwrap();
        let full = codec().decode(PACS008.as_bytes()).unwrap();
        assert_eq!(ids(&req), ids(&full));
        // A reference of its own is enough.
        let doc = replace(PACS008, &format!("<EndToEndId>{E2E}</EndToEndId>"), "");
        let doc = replace(&doc, &format!("<TxId>{TX_ID}</TxId>"), "");
        let req = salvage(&doc).unwrap();
        assert_eq!(ids(&req).1, None);
        assert_eq!(ids(&req).3, Some(UETR.to_owned()));
    }

    #[test]
    fn a_return_and_a_cancellation_are_salvaged_to_their_answers() {
        let doc = replace(
            PACS004,
            "<RtrdIntrBkSttlmAmt Ccy=\"HKD\">",
            "<RtrdIntrBkSttlmAmt>",
        );
        let req = salvage(&doc).unwrap();
        assert_eq!(
            (req.mti, req.processing_code),
            (Mti::CREDIT_TRANSFER, Some(ProcessingCode::RETURN))
        );
        assert_eq!(ids(&req).0, Some("012RTN0000000001"));
        let (d, _) = answer(&req);
        assert_eq!(d.message, MessageType::Pacs002);
        assert_eq!(
            d.transaction.response_code,
            Some(ResponseCode::FORMAT_ERROR)
        );
        assert_eq!(
            d.transaction
                .original_message_id
                .map(|m| m.as_str().to_owned()),
            Some("012RTN0000000001".to_owned())
        );

        let doc = replace(CAMT056, ">1234.56<", ">1234.567<");
        let req = salvage(&doc).unwrap();
        assert_eq!((req.mti, req.processing_code), (Mti::REVERSAL, None));
        assert_eq!(
            ids(&req),
            (
                Some("SW-CXL-000001"),
                Some(E2E),
                Some(TX_ID),
                Some(UETR.to_owned())
            )
        );
        assert_eq!(
            (req.sending_bank, req.receiving_bank),
            (BankCode::parse(b"004").ok(), BankCode::parse(b"012").ok())
        );
        let (d, text) = answer(&req);
        assert_eq!(d.message, MessageType::Camt029);
        assert_eq!(
            d.status.as_ref().map(|s| s.as_str()),
            Some("RJCR"),
            "{text}"
        );
        assert!(!d.transaction.response_code.unwrap().is_approved());
        assert_eq!(
            d.transaction
                .original_message_id
                .map(|m| m.as_str().to_owned()),
            Some("SW-CXL-000001".to_owned())
        );
        // Without the assignee there is no one to address the camt.029
        // to, unless the switch has a BIC of its own.
        let doc = replace(&doc, "<c:MmbId>012</c:MmbId>", "<c:MmbId>12</c:MmbId>");
        assert!(salvage(&doc).is_none());
        let own = Iso20022Codec::new(Iso20022Config {
            own_bic: Some(crate::iso20022::Bic::parse(b"FPSWHKHHXXX").unwrap()),
            ..Iso20022Config::default()
        });
        let doc = replace(&doc, "<c:MmbId>12</c:MmbId>", "");
        assert!(own.salvage_request(doc.as_bytes()).is_some());
    }

    #[test]
    fn hopeless_messages_are_not_salvaged() {
        let long_id = "X".repeat(MessageId::MAX_LEN + 1);
        let hopeless = [
            ("empty", String::new()),
            ("not XML", "credit transfer, please".to_owned()),
            (
                "JSON",
                r#"{"type":"credit_transfer","request_id":"R-1"}"#.to_owned(),
            ),
            (
                "truncated before MsgId",
                PACS008[..PACS008.find("<MsgId>").unwrap()].to_owned(),
            ),
            (
                "truncated after the ids",
                PACS008[..PACS008.find("<IntrBkSttlmAmt").unwrap()].to_owned(),
            ),
            ("over-long MsgId", replace(PACS008, MSG_ID, &long_id)),
            ("empty MsgId", replace(PACS008, MSG_ID, "")),
            (
                "MsgId missing",
                replace(PACS008, &format!("<MsgId>{MSG_ID}</MsgId>"), ""),
            ),
            (
                "MsgId twice",
                replace(PACS008, "<NbOfTxs>", "<MsgId>OTHER</MsgId><NbOfTxs>"),
            ),
            (
                "EndToEndId too long",
                replace(PACS008, E2E, &"E".repeat(EndToEndId::MAX_LEN + 1)),
            ),
            ("bad UETR", replace(PACS008, UETR, "not-a-uuid")),
            (
                "no reference",
                replace(
                    &replace(
                        &replace(PACS008, &format!("<EndToEndId>{E2E}</EndToEndId>"), ""),
                        &format!("<TxId>{TX_ID}</TxId>"),
                        "",
                    ),
                    &format!("<UETR>{UETR}</UETR>"),
                    "",
                ),
            ),
            (
                "element inside the MsgId",
                replace(PACS008, MSG_ID, &format!("<b/>{MSG_ID}")),
            ),
            (
                "unknown entity in an id",
                replace(PACS008, MSG_ID, "A&nbsp;B"),
            ),
            (
                "mismatched tags",
                replace(PACS008, "</ChrgBr>", "</ChrgBrr>"),
            ),
            (
                "unsupported version",
                replace(PACS008, "pacs.008.001.08", "pacs.008.001.12"),
            ),
            (
                "unknown message",
                replace(PACS008, "pacs.008.001.08", "pacs.009.001.08"),
            ),
            ("no namespace", replace(PACS008, "xmlns=", "xmlns:x=")),
            (
                "document type declaration",
                replace(PACS008, "<Document", "<!DOCTYPE Document []><Document"),
            ),
            ("two documents", {
                let document = PACS008.split_once('\n').unwrap().1;
                format!("<E>{document}{document}</E>")
            }),
            ("a status request", replace(PACS028, ">10.00<", ">ten<")),
            ("a response", PACS002.to_owned()),
        ];
        for (what, doc) in hopeless {
            assert!(
                codec().salvage_request(doc.as_bytes()).is_none(),
                "{what}: salvaged"
            );
        }
        let huge = format!(
            "{PACS008}{}",
            " ".repeat(codec().config().max_message_bytes)
        );
        assert!(codec().salvage_request(huge.as_bytes()).is_none());
    }

    #[test]
    fn no_prefix_of_a_message_is_salvaged_and_none_panics() {
        let doc = replace(PACS008, ">1234.56<", ">bad<");
        let end = doc.find("</Document>").unwrap() + "</Document>".len();
        for cut in 0..doc.len() {
            let Some(prefix) = doc.as_bytes().get(..cut) else {
                continue;
            };
            let got = codec().salvage_request(prefix);
            assert_eq!(got.is_some(), cut >= end, "cut at {cut}");
        }
        // Every byte flipped in turn: no panic.
        let mut bytes = doc.into_bytes();
        for i in 0..bytes.len() {
            let was = bytes[i];
            for b in [0u8, b'<', b'>', b'&', 0xff] {
                bytes[i] = b;
                let _ = codec().salvage_request(&bytes);
            }
            bytes[i] = was;
        }
    }
}
