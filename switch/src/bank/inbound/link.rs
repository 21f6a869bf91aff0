//! One inbound bank link: the handshake and identification, then served by
//! [`crate::conn::serve_framed`] as upstream connections are (a reader that
//! frames, a writer fed by a bounded channel, a per-link semaphore bounding
//! requests in flight, which pushes back on the bank through TCP when it is
//! empty, and the idle rule); this file decodes each frame in the bank's
//! dialect and answers it from a task per request.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use fps_codecs::framing::Frame;
use fps_codecs::model::{
    IdempotencyKey, InstitutionId, MessageId, NetworkCode, ResponseCode, Rrn, Stan, TerminalId,
    Transaction, TxnKind,
};
use fps_codecs::CodecError;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_rustls::TlsAcceptor;

use super::identity::{identify, CertIdentity};
use super::{InboundBank, LinkSettings};
use crate::bank::MatchBy;
use crate::conn::{serve_framed, Close, FrameHandler, FramedConn, Slot};
use crate::metrics as m;
use crate::pipeline::{class_label, Pipeline};

/// `side` label of frame errors on inbound links.
const SIDE: &str = "bank_inbound";

/// Starting capacity of a link's read buffer: twice an upstream
/// connection's, as a bank's ISO 20022 or JSON messages are larger than
/// ISO 8583 ones.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Handshake, identify the bank, then serve the link.
pub(super) async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    banks: Arc<Vec<Arc<InboundBank>>>,
    settings: Arc<LinkSettings>,
    pipeline: Arc<Pipeline>,
    shutdown: watch::Receiver<bool>,
) {
    let refuse = |reason: &'static str| {
        metrics::counter!(m::BANK_INBOUND_REFUSED, "reason" => reason).increment(1);
    };
    let stream = match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = crate::tls::handshake_refusal_reason(&e);
            refuse(reason);
            tracing::warn!(%peer, reason, error = %e, "bank inbound TLS handshake failed");
            return;
        }
        Err(_) => {
            refuse("handshake_timeout");
            tracing::warn!(%peer, "bank inbound TLS handshake timed out");
            return;
        }
    };
    let id = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| CertIdentity::of(leaf.as_ref()));
    let Some(id) = id else {
        // The verifier requires a certificate: only one we cannot parse.
        refuse("bad_certificate");
        tracing::warn!(%peer, "bank inbound certificate cannot be parsed: closing");
        return;
    };
    let bank = match identify(&banks, &id) {
        Ok(i) => banks[i].clone(),
        Err(r) => {
            refuse(r.label());
            // The subject only: never the rest of the certificate.
            tracing::warn!(%peer, subject = %id.subject, reason = r.label(), "bank inbound link refused: certificate names no bank accepted here");
            close_quietly(stream).await;
            return;
        }
    };
    let Ok(link_permit) = bank.links.clone().try_acquire_owned() else {
        refuse("bank_max_links");
        tracing::warn!(%peer, bank = %bank.name, "bank inbound link refused: the bank's max_links are open");
        close_quietly(stream).await;
        return;
    };
    serve(stream, peer, bank, settings, pipeline, shutdown).await;
    drop(link_permit);
}

async fn close_quietly<S: AsyncWrite + Unpin>(mut s: S) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), s.shutdown()).await;
}

/// Serve one identified bank's link: count it open, let [`serve_framed`]
/// run it with [`Frames`], and log how it ended.
async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    bank: Arc<InboundBank>,
    settings: Arc<LinkSettings>,
    pipeline: Arc<Pipeline>,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let gauge = metrics::gauge!(m::BANK_INBOUND_LINKS, "bank" => bank.name.clone());
    gauge.increment(1.0);
    tracing::info!(%peer, bank = %bank.name, "bank inbound link open");
    let conn = FramedConn {
        side: SIDE,
        framer: bank.framer,
        read_buffer_bytes: READ_BUFFER_BYTES,
        idle_timeout: settings.idle_timeout,
        max_in_flight: settings.max_in_flight,
    };
    let frames = Frames {
        peer,
        bank,
        pipeline,
    };
    let served = serve_framed(stream, conn, &frames, shutdown).await;
    gauge.decrement(1.0);
    tracing::info!(%peer, bank = %frames.bank.name, reason = served.close.label(), requests = served.requests, "bank inbound link closed");
}

/// What an inbound link does with each frame: decode it in the bank's
/// dialect and answer a request from its own task, echoing the frame header.
struct Frames {
    peer: SocketAddr,
    bank: Arc<InboundBank>,
    pipeline: Arc<Pipeline>,
}

impl FrameHandler for Frames {
    async fn frame(&self, frame: Frame, slot: Slot<'_>) -> Result<(), Close> {
        // Echoed in front of the answer.
        let header = frame.header.to_vec();
        let (peer, bank) = (self.peer, &self.bank);
        match bank.codec.codec.decode(&frame.message) {
            Ok(req) if req.is_response() => {
                // Nothing is sent to the bank on its own link: no request
                // to match this to. Counted and dropped; the stream is sound.
                metrics::counter!(m::FRAME_ERRORS, "side" => SIDE, "reason" => "unexpected_response")
                    .increment(1);
                tracing::warn!(%peer, bank = %bank.name, mti = %req.mti, "response message on a bank inbound link: dropped");
                drop(slot.permit);
            }
            Ok(req) => {
                tokio::spawn(handle(
                    req,
                    header,
                    bank.clone(),
                    slot.permit,
                    slot.tx.clone(),
                    self.pipeline.clone(),
                ));
            }
            Err(e) => {
                metrics::counter!(m::FRAME_ERRORS, "side" => SIDE, "reason" => "decode")
                    .increment(1);
                let salvaged = bank.codec.codec.salvage_request(&frame.message);
                match salvaged.map(|req| req.response(ResponseCode::FORMAT_ERROR)) {
                    Some(answer) => {
                        let answer = salvaged_answer(bank, answer);
                        metrics::counter!(m::BANK_INBOUND_REQUESTS, "bank" => bank.name.clone(), "class" => class_label(answer.mti.class()))
                            .increment(1);
                        // Codec errors name a field and a static reason, never a value.
                        tracing::info!(%peer, bank = %bank.name, error = %e, stan = ?answer.stan.map(|s| s.value()), "undecodable bank request: answered 30");
                        let sealed = seal(bank, answer).await;
                        send(bank, &header, &sealed, slot.tx).await;
                        drop(slot.permit);
                    }
                    None => {
                        tracing::warn!(%peer, bank = %bank.name, error = %e, "undecodable message on bank inbound link: closing it");
                        return Err(Close::Undecodable);
                    }
                }
            }
        }
        Ok(())
    }

    fn bad_frame(&self, error: &CodecError) {
        tracing::warn!(peer = %self.peer, bank = %self.bank.name, error = %error, "bad frame on bank inbound link: closing it");
    }

    fn truncated(&self, close: Close, pending_bytes: usize) {
        tracing::warn!(peer = %self.peer, bank = %self.bank.name, reason = close.label(), pending_bytes, "bank inbound link ended inside a frame");
    }

    fn closed(&self, close: Close) {
        metrics::counter!(m::BANK_INBOUND_CLOSED, "bank" => self.bank.name.clone(), "reason" => close.label())
            .increment(1);
    }
}

/// One request from a bank to its one answer on the same link.
async fn handle(
    req: Transaction,
    header: Vec<u8>,
    bank: Arc<InboundBank>,
    permit: OwnedSemaphorePermit,
    tx: mpsc::Sender<BytesMut>,
    pipeline: Arc<Pipeline>,
) {
    let gauge = metrics::gauge!(m::BANK_INBOUND_IN_FLIGHT, "bank" => bank.name.clone());
    gauge.increment(1.0);
    metrics::counter!(m::BANK_INBOUND_REQUESTS, "bank" => bank.name.clone(), "class" => class_label(req.mti.class()))
        .increment(1);
    if let Some(answer) = answer(&req, &bank, &pipeline).await {
        send(&bank, &header, &answer, &tx).await;
    }
    gauge.decrement(1.0);
    drop(permit);
}

/// The sealed answer to one request, or `None` when nothing is to be sent.
async fn answer(req: &Transaction, bank: &InboundBank, pipeline: &Pipeline) -> Option<Transaction> {
    if req.kind() == Some(TxnKind::NetworkManagement) {
        // Sign-on, echo and sign-off are answered here, unauthenticated
        // (as on outbound links).
        let code = match req.network_code {
            Some(NetworkCode::Echo | NetworkCode::SignOn | NetworkCode::SignOff) => {
                ResponseCode::APPROVED
            }
            _ => ResponseCode::INVALID_TRANSACTION,
        };
        return Some(req.response(code));
    }
    if let Some(auth) = &bank.auth {
        if let Err(e) = auth.check(req).await {
            let code = if e.is_forgery() {
                tracing::warn!(bank = %bank.name, mti = %req.mti, stan = ?req.stan.map(|s| s.value()), reason = %e, "bank request failed MAC/signature verification: answered 63, not routed");
                ResponseCode::SECURITY_VIOLATION
            } else {
                tracing::warn!(bank = %bank.name, reason = %e, "bank request could not be verified: answered 96, not routed");
                ResponseCode::SYSTEM_MALFUNCTION
            };
            return Some(seal(bank, own_ids(bank, req.response(code))).await);
        }
    }
    let (fwd, filled) = normalise(bank, req);
    let mut answer = pipeline.handle(&fwd, &bank.scope).await?;
    restore(&mut answer, req, filled);
    Some(seal(bank, own_ids(bank, answer)).await)
}

/// What [`normalise`] filled in (and [`restore`] takes out of the answer).
#[derive(Debug, Clone, Copy, Default)]
struct Filled {
    stan: bool,
    rrn: bool,
    terminal: bool,
    acquirer: bool,
}

/// The pipeline's copy of a bank request: the bank's own MAC or signature
/// removed (the destination gets the switch's), and the canonical fields
/// an ISO 20022 or JSON request does not carry filled in: F123 from its
/// message id (so a resend is a duplicate), F11/F37 from the switch's own
/// counter, F41 and F32 naming the bank.
fn normalise(bank: &InboundBank, req: &Transaction) -> (Transaction, Filled) {
    let mut t = req.clone();
    t.mac = None;
    t.signature = None;
    t.auth_input = None;
    let mut filled = Filled::default();
    if t.idempotency_key.is_none() && bank.codec.match_by != MatchBy::IsoFields {
        let id = t
            .message_id
            .map(|m| m.as_str().to_owned())
            .or_else(|| t.end_to_end_id.map(|e| e.as_str().to_owned()));
        t.idempotency_key = id.and_then(|s| IdempotencyKey::parse(s.as_bytes()).ok());
    }
    if t.stan.is_none() || t.rrn.is_none() {
        let seq = bank.seq.fetch_add(1, Ordering::Relaxed);
        if t.stan.is_none() {
            t.stan = Stan::new((seq % 999_999) as u32 + 1).ok();
            filled.stan = true;
        }
        if t.rrn.is_none() {
            t.rrn = Rrn::parse(format!("{:012}", seq % 1_000_000_000_000).as_bytes()).ok();
            filled.rrn = true;
        }
    }
    if t.terminal_id.is_none() {
        // Padded as a `str`: `BankCode`'s `Display` ignores width and fill
        // (a 7-character id would not parse, leaving F41 missing: `30`).
        let code = bank.code.as_str();
        t.terminal_id = TerminalId::parse(format!("BANK{code:0>4}").as_bytes()).ok();
        filled.terminal = true;
    }
    if t.acquirer.is_none() {
        t.acquirer = InstitutionId::parse(bank.code.to_string().as_bytes()).ok();
        filled.acquirer = true;
    }
    if t.transmitted_at.is_none() {
        t.transmitted_at = Some(crate::clock::transmission_now());
    }
    (t, filled)
}

/// Take out of the answer what [`normalise`] made up, and put back what
/// the bank sent under its own names.
fn restore(answer: &mut Transaction, req: &Transaction, filled: Filled) {
    if filled.stan {
        answer.stan = None;
    }
    if filled.rrn {
        answer.rrn = None;
    }
    if filled.terminal {
        answer.terminal_id = None;
    }
    if filled.acquirer {
        answer.acquirer = None;
    }
    answer.transmitted_at = req.transmitted_at.or(answer.transmitted_at);
    answer.idempotency_key = req.idempotency_key;
    answer.message_id = req.message_id;
    answer.original_message_id = req.message_id;
}

/// ISO 20022 answers carry the switch's own message id and name the
/// request in `OrgnlMsgId`.
fn own_ids(bank: &InboundBank, mut answer: Transaction) -> Transaction {
    if bank.codec.match_by == MatchBy::OriginalMessageId {
        let seq = bank.seq.fetch_add(1, Ordering::Relaxed);
        let text = format!(
            "FPSI{}{}{}",
            bank.code,
            bank.boot_ms % 10_000_000_000_000,
            seq % 10_000_000_000_000_000
        );
        answer.message_id = MessageId::parse(text.as_bytes()).ok();
    }
    if answer.settlement_date.is_none() && bank.codec.match_by != MatchBy::IsoFields {
        answer.settlement_date = Some(crate::clock::settlement_date_today());
    }
    answer
}

/// A salvaged `30` made sendable as [`answer`]'s are: an ISO 20022 answer
/// needs a message id of the switch's own ([`own_ids`]) and a creation
/// time (`CreDtTm`, from F7 and the settlement date), which a salvaged
/// request does not carry. ISO 8583 and JSON answers go as salvaged.
fn salvaged_answer(bank: &InboundBank, mut answer: Transaction) -> Transaction {
    if bank.codec.match_by != MatchBy::OriginalMessageId {
        return answer;
    }
    if answer.transmitted_at.is_none() {
        answer.transmitted_at = Some(crate::clock::transmission_now());
    }
    own_ids(bank, answer)
}

/// `answer` with the bank's MAC or signature (when it has `auth`). An
/// answer the HSM cannot seal goes unsealed: the bank will refuse it as
/// unverified, which is what an unauthenticated answer deserves, and the
/// request still gets exactly one answer.
async fn seal(bank: &InboundBank, answer: Transaction) -> Transaction {
    let Some(auth) = &bank.auth else {
        return answer;
    };
    if answer.kind() == Some(TxnKind::NetworkManagement) {
        return answer;
    }
    match auth.seal(&answer).await {
        Ok(sealed) => sealed,
        Err(e) => {
            tracing::warn!(bank = %bank.name, error = %e, "answer to a bank request not sealed");
            answer
        }
    }
}

/// Encode, frame (echoing the request's frame header) and queue one
/// answer. If it cannot be encoded, a bare `96` with the matching fields
/// goes instead: every request gets exactly one answer.
async fn send(
    bank: &InboundBank,
    header: &[u8],
    answer: &Transaction,
    tx: &mpsc::Sender<BytesMut>,
) {
    let mut frame = BytesMut::with_capacity(512);
    let mut sent = answer;
    let bare;
    if !encode(bank, header, answer, &mut frame) {
        tracing::error!(bank = %bank.name, mti = %answer.mti, "cannot encode the answer to a bank request: sending 96");
        let mut b = Transaction::new(answer.mti);
        b.transmitted_at = answer.transmitted_at;
        b.stan = answer.stan;
        b.rrn = answer.rrn;
        b.terminal_id = answer.terminal_id;
        b.message_id = answer.message_id;
        b.original_message_id = answer.original_message_id;
        b.settlement_date = answer.settlement_date;
        b.response_code = Some(ResponseCode::SYSTEM_MALFUNCTION);
        bare = b;
        sent = &bare;
        frame.clear();
        if !encode(bank, header, sent, &mut frame) {
            return;
        }
    }
    let code = sent
        .response_code
        .map_or_else(|| "none".to_owned(), |c| c.as_str().to_owned());
    metrics::counter!(m::BANK_INBOUND_ANSWERS, "bank" => bank.name.clone(), "code" => code)
        .increment(1);
    // Fails only when the writer is gone (link broken): nothing to do.
    let _ = tx.send(frame).await;
}

fn encode(bank: &InboundBank, header: &[u8], answer: &Transaction, out: &mut BytesMut) -> bool {
    let Ok(mark) = bank.framer.begin(header, out) else {
        return false;
    };
    bank.codec.codec.encode(answer, out).is_ok() && bank.framer.finish(mark, out).is_ok()
}
