//! One upstream connection: a reader that frames and decodes, a task per
//! request, and a writer fed by a bounded channel. A per-connection
//! semaphore bounds requests in flight; when it is empty the reader stops
//! reading, which pushes back on the gateway through TCP.
//!
//! Idleness is measured from the last *complete* frame, so a peer dripping
//! the bytes of a frame that never completes (slowloris) is closed after
//! `idle_timeout` like a silent one.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use fps_codecs::model::{ResponseCode, Transaction};
use fps_routing::idempotency::ClientScope;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::{salvage, ConnSettings};
use crate::conn::{linger, read_more, write_loop, Close, Read};
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

async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    scope: ClientScope,
    settings: Arc<ConnSettings>,
    pipeline: Arc<Pipeline>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let gauge = metrics::gauge!(m::UPSTREAM_CONNECTIONS);
    gauge.increment(1.0);
    tracing::info!(%peer, "upstream connection open");
    let (mut rd, wr) = tokio::io::split(stream);
    // Every request task holds a permit while it may send, so the channel
    // never holds more than max_in_flight answers.
    let (tx, rx) = mpsc::channel::<BytesMut>(settings.max_in_flight);
    let writer = tokio::spawn(write_loop(rx, wr));
    let in_flight = Arc::new(Semaphore::new(settings.max_in_flight));
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut requests: u64 = 0;
    // When the last complete frame was read (or the connection opened).
    let mut quiet_since = Instant::now();

    let close = 'conn: loop {
        loop {
            let frame = match settings.framer.decode(&mut buf) {
                Ok(Some(frame)) => {
                    quiet_since = Instant::now();
                    frame
                }
                Ok(None) => break,
                Err(e) => {
                    metrics::counter!(m::FRAME_ERRORS, "side" => "upstream", "reason" => "framing")
                        .increment(1);
                    tracing::warn!(%peer, error = %e, "bad upstream frame: closing connection");
                    break 'conn Close::BadFrame;
                }
            };
            // Backpressure: no more reading until a request finishes.
            let permit = tokio::select! {
                p = in_flight.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break 'conn Close::Shutdown,
                },
                _ = shutdown.changed() => break 'conn Close::Shutdown,
            };
            requests += 1;
            match settings.codec.decode(&frame.message) {
                Ok(req) if req.is_response() => {
                    // The gateway must not answer us: nothing to match it
                    // to, so it is counted and dropped; the stream is sound.
                    metrics::counter!(m::FRAME_ERRORS, "side" => "upstream", "reason" => "unexpected_response")
                        .increment(1);
                    tracing::warn!(%peer, mti = %req.mti, "upstream sent a response message: dropped");
                    drop(permit);
                }
                Ok(req) => {
                    tokio::spawn(handle(
                        req,
                        scope.clone(),
                        permit,
                        tx.clone(),
                        settings.clone(),
                        pipeline.clone(),
                    ));
                }
                Err(e) => {
                    metrics::counter!(m::FRAME_ERRORS, "side" => "upstream", "reason" => "decode")
                        .increment(1);
                    match salvage::format_error_answer(&settings.codec, &frame.message) {
                        Some(answer) => {
                            // Answered like any request, so error ratios see it.
                            let class = crate::pipeline::class_label(answer.mti.class());
                            metrics::counter!(m::REQUESTS, "bank" => "none", "class" => class, "code" => "30")
                                .increment(1);
                            tracing::info!(%peer, error = %e, stan = ?answer.stan.map(|s| s.value()), "undecodable upstream request: answered 30");
                            send(&answer, &settings, &tx).await;
                            drop(permit);
                        }
                        None => {
                            tracing::warn!(%peer, error = %e, "undecodable upstream message: closing connection");
                            break 'conn Close::Undecodable;
                        }
                    }
                }
            }
        }
        if *shutdown.borrow() {
            break Close::Shutdown;
        }
        let idle_at = quiet_since + settings.idle_timeout;
        let idle = || in_flight.available_permits() == settings.max_in_flight;
        match read_more(&mut rd, &mut buf, idle_at, idle, &mut shutdown).await {
            Ok(Read::Data) => {}
            // Requests are still being answered: not idle, wait again.
            Ok(Read::Busy) => quiet_since = Instant::now(),
            Err(close) => break close,
        }
    };
    if !buf.is_empty() && close.may_truncate() {
        // A frame was begun and never finished.
        metrics::counter!(m::FRAME_ERRORS, "side" => "upstream", "reason" => "truncated")
            .increment(1);
        tracing::warn!(%peer, reason = close.label(), pending_bytes = buf.len(), "upstream connection ended inside a frame");
    }
    metrics::counter!(m::UPSTREAM_CLOSED, "reason" => close.label()).increment(1);
    // In-flight requests still answer; the writer ends when the last one has.
    drop(tx);
    let _ = writer.await;
    if close.needs_linger() {
        linger(&mut rd).await;
    }
    gauge.decrement(1.0);
    tracing::info!(%peer, reason = close.label(), requests, "upstream connection closed");
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
    let answer = Box::pin(pipeline.handle(req, &scope)).await;
    if let Some(answer) = answer {
        send(&answer, &settings, &tx).await;
    }
    settings.in_flight.decrement(1.0);
    drop(permit);
}

/// Encode and queue one answer. If the full answer cannot be encoded, a
/// bare `96` carrying only the matching fields goes instead: every request
/// gets exactly one answer.
async fn send(answer: &Transaction, settings: &ConnSettings, tx: &mpsc::Sender<BytesMut>) {
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
            return;
        }
    }
    // Fails only when the writer is gone (connection broken): nothing to do.
    let _ = tx.send(frame).await;
}

fn encode(answer: &Transaction, settings: &ConnSettings, out: &mut BytesMut) -> bool {
    let Ok(mark) = settings.framer.begin(&[], out) else {
        return false;
    };
    settings.codec.encode(answer, out).is_ok() && settings.framer.finish(mark, out).is_ok()
}
