//! One upstream connection: served by [`crate::conn::serve_framed`] (a
//! reader that frames, a writer fed by a bounded channel, a per-connection
//! semaphore bounding requests in flight, which pushes back on the gateway
//! through TCP when it is empty, and the idle rule); this file decodes each
//! frame as canonical ISO 8583 and answers it from a task per request.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use fps_codecs::framing::Frame;
use fps_codecs::model::{ResponseCode, Transaction};
use fps_codecs::CodecError;
use fps_routing::idempotency::ClientScope;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_rustls::TlsAcceptor;

use super::ConnSettings;
use crate::conn::{serve_framed, Close, FrameHandler, FramedConn, Slot};
use crate::metrics as m;
use crate::pipeline::Pipeline;

/// Run the TLS handshake (if any), then serve the connection.
pub(super) async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    settings: Arc<ConnSettings>,
    pipeline: Arc<Pipeline>,
    shutdown: watch::Receiver<bool>,
) {
    let Some(acceptor) = tls else {
        let scope = plaintext_scope();
        serve(tcp, peer, scope, settings, pipeline, shutdown).await;
        return;
    };
    match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let scope = match client_scope(stream.get_ref().1.peer_certificates()) {
                Some(s) => s,
                None => {
                    // The verifier requires a certificate, so this is only
                    // reachable with a certificate we cannot parse.
                    metrics::counter!(m::UPSTREAM_REFUSED, "reason" => "client_identity")
                        .increment(1);
                    tracing::warn!(%peer, "upstream client certificate has no usable identity: closing");
                    return;
                }
            };
            serve(stream, peer, scope, settings, pipeline, shutdown).await
        }
        Ok(Err(e)) => {
            // A bounded word: no client certificate, unknown CA, expired...
            let reason = crate::tls::handshake_refusal_reason(&e);
            metrics::counter!(m::UPSTREAM_REFUSED, "reason" => reason).increment(1);
            tracing::warn!(%peer, reason, error = %e, "upstream TLS handshake failed");
        }
        Err(_) => {
            metrics::counter!(m::UPSTREAM_REFUSED, "reason" => "handshake_timeout").increment(1);
            tracing::warn!(%peer, "upstream TLS handshake timed out");
        }
    }
}

/// The idempotency scope of a client: the subject of its certificate
/// (RFC 4514 text), so keys survive a certificate renewal with the same
/// subject. Longer subjects than a scope allows are cut at a char boundary.
fn client_scope(certs: Option<&[rustls_pki_types::CertificateDer<'_>]>) -> Option<ClientScope> {
    let leaf = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let mut subject = cert.subject().to_string();
    if subject.is_empty() {
        return None;
    }
    let mut cut = subject.len().min(fps_routing::idempotency::MAX_SCOPE_LEN);
    while !subject.is_char_boundary(cut) {
        cut -= 1;
    }
    subject.truncate(cut);
    ClientScope::new(&subject).ok()
}

/// Every plaintext client shares one scope (plaintext is for local tests).
fn plaintext_scope() -> ClientScope {
    ClientScope::new("plaintext").expect("a short, non-empty scope")
}

/// `side` label of frame errors on upstream connections.
const SIDE: &str = "upstream";

/// Starting capacity of a connection's read buffer: room for one frame of
/// the default maximum (8 KiB).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Serve one upstream connection (TLS done): count it open, let
/// [`serve_framed`] run it with [`Frames`], and log how it ended.
async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    scope: ClientScope,
    settings: Arc<ConnSettings>,
    pipeline: Arc<Pipeline>,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let gauge = metrics::gauge!(m::UPSTREAM_CONNECTIONS);
    gauge.increment(1.0);
    tracing::info!(%peer, "upstream connection open");
    let conn = FramedConn {
        side: SIDE,
        framer: settings.framer,
        read_buffer_bytes: READ_BUFFER_BYTES,
        idle_timeout: settings.idle_timeout,
        max_in_flight: settings.max_in_flight,
    };
    let frames = Frames {
        peer,
        scope,
        settings,
        pipeline,
    };
    let served = serve_framed(stream, conn, &frames, shutdown).await;
    gauge.decrement(1.0);
    tracing::info!(%peer, reason = served.close.label(), requests = served.requests, "upstream connection closed");
}

/// What an upstream connection does with each frame: decode it as
/// canonical ISO 8583 and hand a request to the pipeline in its own task.
struct Frames {
    peer: SocketAddr,
    scope: ClientScope,
    settings: Arc<ConnSettings>,
    pipeline: Arc<Pipeline>,
}

impl FrameHandler for Frames {
    async fn frame(&self, frame: Frame, slot: Slot<'_>) -> Result<(), Close> {
        let (peer, settings) = (self.peer, &self.settings);
        match settings.codec.decode(&frame.message) {
            Ok(req) if req.is_response() => {
                // The gateway must not answer us: nothing to match it
                // to, so it is counted and dropped; the stream is sound.
                metrics::counter!(m::FRAME_ERRORS, "side" => SIDE, "reason" => "unexpected_response")
                    .increment(1);
                tracing::warn!(%peer, mti = %req.mti, "upstream sent a response message: dropped");
                drop(slot.permit);
            }
            Ok(req) => {
                tokio::spawn(handle(
                    req,
                    self.scope.clone(),
                    slot.permit,
                    slot.tx.clone(),
                    settings.clone(),
                    self.pipeline.clone(),
                ));
            }
            Err(e) => {
                metrics::counter!(m::FRAME_ERRORS, "side" => SIDE, "reason" => "decode")
                    .increment(1);
                let salvaged = settings.codec.salvage_request(&frame.message);
                match salvaged.map(|req| req.response(ResponseCode::FORMAT_ERROR)) {
                    Some(answer) => {
                        // Answered like any request, so error ratios see it.
                        let class = crate::pipeline::class_label(answer.mti.class());
                        metrics::counter!(m::REQUESTS, "bank" => "none", "class" => class, "code" => "30")
                            .increment(1);
                        tracing::info!(%peer, error = %e, stan = ?answer.stan.map(|s| s.value()), "undecodable upstream request: answered 30");
                        send(&answer, settings, slot.tx).await;
                        drop(slot.permit);
                    }
                    None => {
                        tracing::warn!(%peer, error = %e, "undecodable upstream message: closing connection");
                        return Err(Close::Undecodable);
                    }
                }
            }
        }
        Ok(())
    }

    fn bad_frame(&self, error: &CodecError) {
        tracing::warn!(peer = %self.peer, error = %error, "bad upstream frame: closing connection");
    }

    fn truncated(&self, close: Close, pending_bytes: usize) {
        tracing::warn!(peer = %self.peer, reason = close.label(), pending_bytes, "upstream connection ended inside a frame");
    }

    fn closed(&self, close: Close) {
        metrics::counter!(m::UPSTREAM_CLOSED, "reason" => close.label()).increment(1);
    }
}

async fn handle(
    req: Transaction,
    scope: ClientScope,
    permit: OwnedSemaphorePermit,
    tx: mpsc::Sender<BytesMut>,
    settings: Arc<ConnSettings>,
    pipeline: Arc<Pipeline>,
) {
    settings.in_flight.increment(1.0);
    // Boxed: the pipeline's future is kilobytes, and an unboxed one would
    // be copied several times on its way into the spawned task.
    // Encoded before the channel's await, so that the answer is not part
    // of this task's future (moved into the task at every spawn).
    let frame = match Box::pin(pipeline.handle(&req, &scope)).await {
        Some(answer) => answer_frame(&answer, &settings),
        None => None,
    };
    if let Some(frame) = frame {
        // Fails only when the writer is gone (connection broken).
        let _ = tx.send(frame).await;
    }
    settings.in_flight.decrement(1.0);
    drop(permit);
}

/// Encode and queue one answer. If the full answer cannot be encoded, a
/// bare `96` carrying only the matching fields goes instead: every request
/// gets exactly one answer.
async fn send(answer: &Transaction, settings: &ConnSettings, tx: &mpsc::Sender<BytesMut>) {
    if let Some(frame) = answer_frame(answer, settings) {
        // Fails only when the writer is gone (connection broken): nothing to do.
        let _ = tx.send(frame).await;
    }
}

/// The frame of `answer`, or of a bare `96` with its matching fields when
/// it cannot be encoded; `None` only if neither can.
fn answer_frame(answer: &Transaction, settings: &ConnSettings) -> Option<BytesMut> {
    let mut frame = BytesMut::with_capacity(crate::conn::ENCODE_BUFFER_BYTES);
    if !encode(answer, settings, &mut frame) {
        tracing::error!(mti = %answer.mti, "cannot encode upstream answer: sending 96");
        let mut bare = Transaction::new(answer.mti);
        bare.transmitted_at = answer.transmitted_at;
        bare.stan = answer.stan;
        bare.rrn = answer.rrn;
        bare.terminal_id = answer.terminal_id;
        bare.response_code = Some(ResponseCode::SYSTEM_MALFUNCTION);
        frame.clear();
        if !encode(&bare, settings, &mut frame) {
            return None;
        }
    }
    Some(frame)
}

fn encode(answer: &Transaction, settings: &ConnSettings, out: &mut BytesMut) -> bool {
    let Ok(mark) = settings.framer.begin(&[], out) else {
        return false;
    };
    settings.codec.encode(answer, out).is_ok() && settings.framer.finish(mark, out).is_ok()
}
