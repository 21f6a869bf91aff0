//! Writing the six messages: compact XML (no indentation) straight into the
//! caller's buffer, elements in schema order, text escaped.

use bytes::BytesMut;

use crate::error::{CodecError, Location};
use crate::model::{AmountMinor, BankCode, Currency, ProxyKind, Transaction};

use super::status;
use super::values::{format_amount, minor_digits, CreationDateTime};
use super::{Iso20022Config, MessageType, ENVELOPE_NAMESPACE, NAMESPACE_PREFIX, SIGNATURE_ELEMENT};

pub(crate) fn encode(
    config: &Iso20022Config,
    msg: MessageType,
    txn: &Transaction,
    created_at: &CreationDateTime,
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    out.extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let Some(signature) = &txn.signature else {
        return document(config, msg, txn, created_at, out);
    };
    // Signed: the envelope of crate::auth around the Document.
    out.extend_from_slice(b"<Envelope xmlns=\"");
    out.extend_from_slice(ENVELOPE_NAMESPACE.as_bytes());
    out.extend_from_slice(b"\">");
    document(config, msg, txn, created_at, out)?;
    let mut b64 = Vec::with_capacity(signature.as_bytes().len().div_ceil(3) * 4);
    crate::auth::base64_encode(signature.as_bytes(), &mut b64);
    out.extend_from_slice(b"<");
    out.extend_from_slice(SIGNATURE_ELEMENT.as_bytes());
    out.extend_from_slice(b">");
    out.extend_from_slice(&b64);
    out.extend_from_slice(b"</");
    out.extend_from_slice(SIGNATURE_ELEMENT.as_bytes());
    out.extend_from_slice(b"></Envelope>");
    Ok(())
}

/// The `Document` element alone: what a signature covers.
pub(crate) fn document(
    config: &Iso20022Config,
    msg: MessageType,
    txn: &Transaction,
    created_at: &CreationDateTime,
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    let mut w = Writer { out, config };
    w.raw("<Document xmlns=\"");
    w.raw(NAMESPACE_PREFIX);
    w.raw(msg.id());
    w.raw(".");
    w.raw(config.versions.of(msg).as_str());
    w.raw("\">");
    w.open(msg.root_element());
    match msg {
        MessageType::Pacs008 => pacs008(&mut w, txn, created_at)?,
        MessageType::Pacs002 => pacs002(&mut w, txn, created_at)?,
        MessageType::Pacs028 => pacs028(&mut w, txn, created_at)?,
        MessageType::Pacs004 => pacs004(&mut w, txn, created_at)?,
        MessageType::Camt056 => camt056(&mut w, txn, created_at)?,
        MessageType::Camt029 => camt029(&mut w, txn, created_at)?,
    }
    w.close(msg.root_element());
    w.raw("</Document>");
    Ok(())
}

fn missing(path: &'static str) -> CodecError {
    CodecError::Missing {
        at: Location::Element(path),
    }
}

fn pacs008(w: &mut Writer<'_>, t: &Transaction, at: &CreationDateTime) -> Result<(), CodecError> {
    let msg_id = t.message_id.ok_or(missing("GrpHdr/MsgId"))?;
    let e2e = t
        .end_to_end_id
        .ok_or(missing("CdtTrfTxInf/PmtId/EndToEndId"))?;
    let amount = t.amount.ok_or(missing("CdtTrfTxInf/IntrBkSttlmAmt"))?;
    let debtor_agent = t
        .sending_bank
        .ok_or(missing("CdtTrfTxInf/DbtrAgt/FinInstnId/ClrSysMmbId/MmbId"))?;
    let creditor_agent = t
        .receiving_bank
        .ok_or(missing("CdtTrfTxInf/CdtrAgt/FinInstnId/ClrSysMmbId/MmbId"))?;
    if t.creditor_account.is_none() && t.proxy.is_none() {
        return Err(missing("CdtTrfTxInf/CdtrAcct"));
    }

    w.open("GrpHdr");
    w.leaf("MsgId", msg_id.as_str());
    w.leaf("CreDtTm", at.as_str());
    w.leaf("NbOfTxs", "1");
    w.raw("<SttlmInf><SttlmMtd>CLRG</SttlmMtd></SttlmInf>");
    w.own_instructing_agent();
    w.close("GrpHdr");

    w.open("CdtTrfTxInf");
    w.open("PmtId");
    w.leaf("EndToEndId", e2e.as_str());
    if let Some(id) = t.transaction_id {
        w.leaf("TxId", id.as_str());
    }
    w.uetr("UETR", t);
    w.close("PmtId");
    w.amount(
        "IntrBkSttlmAmt",
        "CdtTrfTxInf/IntrBkSttlmAmt/@Ccy",
        amount,
        t.currency,
    )?;
    w.date("IntrBkSttlmDt", t);
    w.leaf("ChrgBr", "SLEV");
    w.open("Dbtr");
    if let Some(n) = &t.debtor_name {
        w.leaf("Nm", xml_text(n.expose(), "CdtTrfTxInf/Dbtr/Nm")?);
    }
    w.close("Dbtr");
    if let Some(a) = t.debtor_account {
        w.raw("<DbtrAcct><Id><Othr>");
        w.leaf("Id", a.expose());
        w.raw("</Othr></Id></DbtrAcct>");
    }
    w.agent("DbtrAgt", &debtor_agent);
    w.agent("CdtrAgt", &creditor_agent);
    w.open("Cdtr");
    if let Some(n) = &t.creditor_name {
        w.leaf("Nm", xml_text(n.expose(), "CdtTrfTxInf/Cdtr/Nm")?);
    }
    w.close("Cdtr");
    w.open("CdtrAcct");
    if let Some(a) = t.creditor_account {
        w.raw("<Id><Othr>");
        w.leaf("Id", a.expose());
        w.raw("</Othr></Id>");
    }
    if let Some(p) = &t.proxy {
        let codes = &w.config.proxy_codes;
        let code = match p.kind() {
            ProxyKind::Mobile => codes.mobile,
            ProxyKind::Email => codes.email,
            ProxyKind::FpsId => codes.fps_id,
            ProxyKind::Hkid => codes.hkid,
        };
        w.raw("<Prxy><Tp>");
        w.leaf("Cd", code.as_str());
        w.raw("</Tp>");
        w.leaf("Id", p.expose());
        w.raw("</Prxy>");
    }
    w.close("CdtrAcct");
    w.close("CdtTrfTxInf");
    Ok(())
}

fn pacs002(w: &mut Writer<'_>, t: &Transaction, at: &CreationDateTime) -> Result<(), CodecError> {
    let msg_id = t.message_id.ok_or(missing("GrpHdr/MsgId"))?;
    let original = if t.mti.class() == 6 {
        MessageType::Pacs028
    } else {
        MessageType::Pacs008
    };
    let code = t.response_code.ok_or(missing("TxInfAndSts/TxSts"))?;
    let (sts, reason) = status::payment_status_for_response(code, t.reason);

    w.open("GrpHdr");
    w.leaf("MsgId", msg_id.as_str());
    w.leaf("CreDtTm", at.as_str());
    w.own_instructing_agent();
    w.close("GrpHdr");
    w.open("TxInfAndSts");
    w.original_group(t, original);
    w.original_ids(t);
    w.leaf("TxSts", sts.as_str());
    if let Some(r) = reason {
        w.raw("<StsRsnInf><Rsn>");
        w.leaf("Cd", r.as_str());
        w.raw("</Rsn></StsRsnInf>");
    }
    w.original_tx_ref(t, "TxInfAndSts/OrgnlTxRef/IntrBkSttlmAmt/@Ccy")?;
    w.close("TxInfAndSts");
    Ok(())
}

fn pacs028(w: &mut Writer<'_>, t: &Transaction, at: &CreationDateTime) -> Result<(), CodecError> {
    let msg_id = t.message_id.ok_or(missing("GrpHdr/MsgId"))?;
    require_reference(t, "TxInf/OrgnlEndToEndId")?;
    w.open("GrpHdr");
    w.leaf("MsgId", msg_id.as_str());
    w.leaf("CreDtTm", at.as_str());
    w.own_instructing_agent();
    w.close("GrpHdr");
    w.open("TxInf");
    w.original_group(t, MessageType::Pacs008);
    w.original_ids(t);
    w.original_tx_ref(t, "TxInf/OrgnlTxRef/IntrBkSttlmAmt/@Ccy")?;
    w.close("TxInf");
    Ok(())
}

fn pacs004(w: &mut Writer<'_>, t: &Transaction, at: &CreationDateTime) -> Result<(), CodecError> {
    let msg_id = t.message_id.ok_or(missing("GrpHdr/MsgId"))?;
    let amount = t.amount.ok_or(missing("TxInf/RtrdIntrBkSttlmAmt"))?;
    require_reference(t, "TxInf/OrgnlEndToEndId")?;
    let return_id = case_id(t, "TxInf/RtrId")?;

    w.open("GrpHdr");
    w.leaf("MsgId", msg_id.as_str());
    w.leaf("CreDtTm", at.as_str());
    w.leaf("NbOfTxs", "1");
    w.raw("<SttlmInf><SttlmMtd>CLRG</SttlmMtd></SttlmInf>");
    w.own_instructing_agent();
    w.close("GrpHdr");
    w.open("TxInf");
    if let Some(k) = return_id {
        w.leaf("RtrId", k);
    }
    w.original_group(t, MessageType::Pacs008);
    w.original_ids(t);
    w.amount(
        "RtrdIntrBkSttlmAmt",
        "TxInf/RtrdIntrBkSttlmAmt/@Ccy",
        amount,
        t.currency,
    )?;
    w.date("IntrBkSttlmDt", t);
    if let Some(b) = t.sending_bank {
        w.agent("InstgAgt", &b);
    }
    if let Some(b) = t.receiving_bank {
        w.agent("InstdAgt", &b);
    }
    if let Some(r) = t.reason {
        w.raw("<RtrRsnInf><Rsn>");
        w.leaf("Cd", r.as_str());
        w.raw("</Rsn></RtrRsnInf>");
    }
    w.close("TxInf");
    Ok(())
}

fn camt056(w: &mut Writer<'_>, t: &Transaction, at: &CreationDateTime) -> Result<(), CodecError> {
    let id = t.message_id.ok_or(missing("Assgnmt/Id"))?;
    require_reference(t, "Undrlyg/TxInf/OrgnlEndToEndId")?;
    if t.sending_bank.is_none() && w.config.own_bic.is_none() {
        return Err(missing("Assgnmt/Assgnr"));
    }
    if t.receiving_bank.is_none() && w.config.own_bic.is_none() {
        return Err(missing("Assgnmt/Assgne"));
    }
    let case_id = case_id(t, "Undrlyg/TxInf/CxlId")?;
    w.assignment(&id, t.sending_bank, t.receiving_bank, at);
    w.raw("<Undrlyg><TxInf>");
    if let Some(k) = case_id {
        w.leaf("CxlId", k);
    }
    w.original_group(t, MessageType::Pacs008);
    w.original_ids(t);
    if let Some(a) = t.amount {
        w.amount(
            "OrgnlIntrBkSttlmAmt",
            "Undrlyg/TxInf/OrgnlIntrBkSttlmAmt/@Ccy",
            a,
            t.currency,
        )?;
    }
    w.date("OrgnlIntrBkSttlmDt", t);
    if let Some(r) = t.reason {
        w.raw("<CxlRsnInf><Rsn>");
        w.leaf("Cd", r.as_str());
        w.raw("</Rsn></CxlRsnInf>");
    }
    w.raw("</TxInf></Undrlyg>");
    Ok(())
}

fn camt029(w: &mut Writer<'_>, t: &Transaction, at: &CreationDateTime) -> Result<(), CodecError> {
    let id = t.message_id.ok_or(missing("Assgnmt/Id"))?;
    require_reference(t, "CxlDtls/TxInfAndSts/OrgnlEndToEndId")?;
    // The resolution goes back: assigner is the bank asked to cancel.
    if t.receiving_bank.is_none() && w.config.own_bic.is_none() {
        return Err(missing("Assgnmt/Assgnr"));
    }
    if t.sending_bank.is_none() && w.config.own_bic.is_none() {
        return Err(missing("Assgnmt/Assgne"));
    }
    let code = t
        .response_code
        .ok_or(missing("CxlDtls/TxInfAndSts/TxCxlSts"))?;
    let (conf, tx_status, reason) = status::cancellation_status_for_response(code, t.reason);
    w.assignment(&id, t.receiving_bank, t.sending_bank, at);
    w.raw("<Sts>");
    w.leaf("Conf", conf.as_str());
    w.raw("</Sts><CxlDtls><TxInfAndSts>");
    w.original_group(t, MessageType::Camt056);
    w.original_ids(t);
    w.leaf("TxCxlSts", tx_status.as_str());
    if let Some(r) = reason {
        w.raw("<CxlStsRsnInf><Rsn>");
        w.leaf("Cd", r.as_str());
        w.raw("</Rsn></CxlStsRsnInf>");
    }
    if let Some(a) = t.amount {
        w.amount(
            "OrgnlIntrBkSttlmAmt",
            "CxlDtls/TxInfAndSts/OrgnlIntrBkSttlmAmt/@Ccy",
            a,
            t.currency,
        )?;
    }
    w.date("OrgnlIntrBkSttlmDt", t);
    w.raw("</TxInfAndSts></CxlDtls>");
    Ok(())
}

/// Refuse the two characters a party name may hold that XML 1.0 may not
/// (the model already refuses control characters).
fn xml_text<'t>(text: &'t str, path: &'static str) -> Result<&'t str, CodecError> {
    if text.chars().any(|c| matches!(c, '\u{FFFE}' | '\u{FFFF}')) {
        return Err(CodecError::Invalid {
            at: Location::Element(path),
            reason: "character not allowed in XML",
        });
    }
    Ok(text)
}

fn require_reference(t: &Transaction, path: &'static str) -> Result<(), CodecError> {
    if t.end_to_end_id.is_none() && t.transaction_id.is_none() && t.uetr.is_none() {
        return Err(missing(path));
    }
    Ok(())
}

/// The idempotency key as a Max35Text case id (`CxlId`, `RtrId`).
fn case_id<'t>(t: &'t Transaction, path: &'static str) -> Result<Option<&'t str>, CodecError> {
    match &t.idempotency_key {
        Some(k) if k.as_str().len() > 35 => Err(CodecError::TooLong {
            at: Location::Element(path),
            len: k.as_str().len(),
            max: 35,
        }),
        Some(k) => Ok(Some(k.as_str())),
        None => Ok(None),
    }
}

struct Writer<'a> {
    out: &'a mut BytesMut,
    config: &'a Iso20022Config,
}

impl Writer<'_> {
    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    fn open(&mut self, tag: &str) {
        self.raw("<");
        self.raw(tag);
        self.raw(">");
    }

    fn close(&mut self, tag: &str) {
        self.raw("</");
        self.raw(tag);
        self.raw(">");
    }

    /// `<tag>text</tag>` with `&`, `<` and `>` escaped; other UTF-8 as is.
    fn leaf(&mut self, tag: &str, text: &str) {
        self.open(tag);
        self.escaped(text);
        self.close(tag);
    }

    fn escaped(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let mut from = 0;
        for (i, b) in bytes.iter().enumerate() {
            let rep: &[u8] = match b {
                b'&' => b"&amp;",
                b'<' => b"&lt;",
                b'>' => b"&gt;",
                b'"' => b"&quot;",
                b'\'' => b"&apos;",
                _ => continue,
            };
            self.out.extend_from_slice(&bytes[from..i]);
            self.out.extend_from_slice(rep);
            from = i + 1;
        }
        self.out.extend_from_slice(&bytes[from..]);
    }

    fn amount(
        &mut self,
        tag: &str,
        ccy_path: &'static str,
        amount: AmountMinor,
        currency: Option<Currency>,
    ) -> Result<(), CodecError> {
        let ccy = currency.ok_or(missing(ccy_path))?;
        let alpha = ccy.alpha().ok_or(CodecError::Invalid {
            at: Location::Element(ccy_path),
            reason: "currency has no alphabetic code known to the switch",
        })?;
        let mut buf = [0u8; 24];
        let n = format_amount(amount, minor_digits(ccy), &mut buf);
        self.raw("<");
        self.raw(tag);
        self.raw(" Ccy=\"");
        self.raw(alpha);
        self.raw("\">");
        self.out.extend_from_slice(&buf[..n]);
        self.close(tag);
        Ok(())
    }

    fn date(&mut self, tag: &str, t: &Transaction) {
        if let Some(d) = t.settlement_date {
            self.open(tag);
            self.out.extend_from_slice(&d.to_iso());
            self.close(tag);
        }
    }

    fn uetr(&mut self, tag: &str, t: &Transaction) {
        if let Some(u) = t.uetr {
            self.open(tag);
            self.out.extend_from_slice(&u.to_text());
            self.close(tag);
        }
    }

    /// `<tag><FinInstnId><ClrSysMmbId>[ClrSysId]<MmbId>..</MmbId></ClrSysMmbId></FinInstnId></tag>`
    fn agent(&mut self, tag: &str, bank: &BankCode) {
        self.open(tag);
        self.raw("<FinInstnId><ClrSysMmbId>");
        if let Some(c) = self.config.clearing_system {
            self.raw("<ClrSysId><Cd>");
            self.raw(c.as_str());
            self.raw("</Cd></ClrSysId>");
        }
        self.leaf("MmbId", bank.as_str());
        self.raw("</ClrSysMmbId></FinInstnId>");
        self.close(tag);
    }

    /// A camt party: the bank by clearing code, else the switch's own BIC.
    fn party_agent(&mut self, tag: &str, bank: Option<BankCode>) {
        self.open(tag);
        match (bank, self.config.own_bic) {
            (Some(b), _) => self.agent("Agt", &b),
            (None, Some(bic)) => {
                self.raw("<Agt><FinInstnId>");
                self.leaf("BICFI", bic.as_str());
                self.raw("</FinInstnId></Agt>");
            }
            // Callers check that one of the two is present.
            (None, None) => {}
        }
        self.close(tag);
    }

    fn assignment(
        &mut self,
        id: &crate::model::MessageId,
        assigner: Option<BankCode>,
        assignee: Option<BankCode>,
        at: &CreationDateTime,
    ) {
        self.open("Assgnmt");
        self.leaf("Id", id.as_str());
        self.party_agent("Assgnr", assigner);
        self.party_agent("Assgne", assignee);
        self.leaf("CreDtTm", at.as_str());
        self.close("Assgnmt");
    }

    fn own_instructing_agent(&mut self) {
        if let Some(bic) = self.config.own_bic {
            self.raw("<InstgAgt><FinInstnId>");
            self.leaf("BICFI", bic.as_str());
            self.raw("</FinInstnId></InstgAgt>");
        }
    }

    /// `OrgnlGrpInf` naming the original message, when its id is known.
    fn original_group(&mut self, t: &Transaction, original: MessageType) {
        if let Some(id) = t.original_message_id {
            self.raw("<OrgnlGrpInf>");
            self.leaf("OrgnlMsgId", id.as_str());
            self.raw("<OrgnlMsgNmId>");
            self.raw(original.id());
            self.raw(".");
            self.raw(self.config.versions.of(original).as_str());
            self.raw("</OrgnlMsgNmId></OrgnlGrpInf>");
        }
    }

    /// `OrgnlEndToEndId`, `OrgnlTxId`, `OrgnlUETR` in schema order.
    fn original_ids(&mut self, t: &Transaction) {
        if let Some(id) = t.end_to_end_id {
            self.leaf("OrgnlEndToEndId", id.as_str());
        }
        if let Some(id) = t.transaction_id {
            self.leaf("OrgnlTxId", id.as_str());
        }
        self.uetr("OrgnlUETR", t);
    }

    /// `OrgnlTxRef` with amount, date and agents, when any is known.
    fn original_tx_ref(
        &mut self,
        t: &Transaction,
        ccy_path: &'static str,
    ) -> Result<(), CodecError> {
        if t.amount.is_none()
            && t.settlement_date.is_none()
            && t.sending_bank.is_none()
            && t.receiving_bank.is_none()
        {
            return Ok(());
        }
        self.open("OrgnlTxRef");
        if let Some(a) = t.amount {
            self.amount("IntrBkSttlmAmt", ccy_path, a, t.currency)?;
        }
        self.date("IntrBkSttlmDt", t);
        if let Some(b) = t.sending_bank {
            self.agent("DbtrAgt", &b);
        }
        if let Some(b) = t.receiving_bank {
            self.agent("CdtrAgt", &b);
        }
        self.close("OrgnlTxRef");
        Ok(())
    }
}
