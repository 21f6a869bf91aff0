//! The sockets of one simulated bank: the (m)TLS listener, one task per
//! connection reading frames, and the answers written now, later, twice,
//! never, or replaced by a disconnect or a garbage frame.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use fps_codecs::calendar::civil_from_days;
use fps_codecs::framing::Framer;
use fps_codecs::model::{
    MessageId, NetworkCode, ResponseCode, SettlementDate, Transaction, TransmissionDateTime,
};
use fps_codecs::MessageCodec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::auth::SimAuth;
use super::config::{Faults, Latency};
use super::draw::{Fault, SplitMix64};
use super::ledger::{BankIndex, Ledger, Style};

/// Most connections one bank serves at once; more are closed on accept.
pub const MAX_CONNECTIONS_PER_BANK: usize = 256;
/// Most answers waiting for their delay on one connection; beyond it the
/// connection stops reading until one goes out (back-pressure).
pub const MAX_PENDING_ANSWERS: usize = 8_192;
/// Answer channel of a connection: room for every pending answer twice
/// (a duplicate), so a delayed answer never waits for the channel.
const ANSWER_CHANNEL: usize = 2 * MAX_PENDING_ANSWERS + 2;
/// Time a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to write one frame before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Initial read buffer of a connection.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Everything one simulated bank needs at run time.
pub struct Bank {
    /// Index in config order (the ledger's bank index).
    pub index: BankIndex,
    /// Config name.
    pub name: String,
    /// 3-digit code, used in the bank's own message ids.
    pub code: String,
    /// How its messages are identified.
    pub style: Style,
    /// Its interface.
    pub codec: Arc<dyn MessageCodec>,
    /// Its framing.
    pub framer: Framer,
    /// `None` for plaintext.
    pub tls: Option<TlsAcceptor>,
    /// Latency distribution.
    pub latency: Latency,
    /// Fault percentages.
    pub faults: Faults,
    /// The bank's seeded draws.
    pub rng: Mutex<SplitMix64>,
    /// Shared ledger.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Sequence of the bank's own message ids (ISO 20022 answers).
    pub answer_seq: std::sync::atomic::AtomicU64,
    /// MACs/signatures checked on requests and made on answers.
    pub auth: Option<SimAuth>,
    /// Bumped to restart the bank: every connection drops and the
    /// listener is closed for `down_ms`, then bound again (the ledger, the
    /// bank's books, is kept).
    pub restart: watch::Sender<u64>,
    /// How long the next restart keeps the port closed.
    pub down_ms: std::sync::atomic::AtomicU64,
}

impl Bank {
    /// Restart the bank: drop its connections, close its port for `down`.
    pub fn restart(&self, down: Duration) {
        self.down_ms.store(
            down.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.restart.send_modify(|g| *g += 1);
    }
}

/// Attempts to bind the port again after a restart (100 ms apart).
const REBIND_ATTEMPTS: u32 = 100;

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank")
            .field("name", &self.name)
            .field("code", &self.code)
            .field("style", &self.style)
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

/// What a connection's writer is asked to do.
#[derive(Debug)]
enum Out {
    Frame(BytesMut),
    Close,
}

/// What to do with one request.
#[derive(Debug)]
struct Plan {
    frame: Option<BytesMut>,
    delay: Duration,
    fault: Option<Fault>,
}

/// Lock the ledger; a panic elsewhere while holding it leaves counters
/// that are still usable, so poisoning is ignored.
pub fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// Accept connections until `shutdown` turns true.
pub async fn serve(bank: Arc<Bank>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_BANK));
    let addr = listener.local_addr().ok();
    let mut listener = listener;
    let mut restart = bank.restart.subscribe();
    while !*shutdown.borrow() {
        let tcp = tokio::select! {
            a = listener.accept() => match a {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
            _ = restart.changed() => {
                // The port closes with the listener; connections see the
                // same signal and drop.
                let Some(addr) = addr else { break };
                drop(listener);
                lock(&bank.ledger).stats_mut(bank.index).restarts += 1;
                let down = Duration::from_millis(
                    bank.down_ms.load(std::sync::atomic::Ordering::Relaxed),
                );
                tokio::select! {
                    _ = tokio::time::sleep(down) => {}
                    _ = shutdown.changed() => break,
                }
                let mut again = None;
                for _ in 0..REBIND_ATTEMPTS {
                    if let Ok(l) = TcpListener::bind(addr).await {
                        again = Some(l);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                match again {
                    Some(l) => listener = l,
                    None => {
                        eprintln!("bank-sim: {}: cannot bind {addr} again after a restart", bank.name);
                        break;
                    }
                }
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        lock(&bank.ledger).stats_mut(bank.index).connections += 1;
        let bank = bank.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match bank.tls.clone() {
                None => connection(bank, tcp, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(bank, tls, shutdown).await,
                        _ => {
                            lock(&bank.ledger).stats_mut(bank.index).handshake_failures += 1;
                        }
                    }
                }
            }
        });
    }
}

/// Serve one connection: read frames, answer each as planned.
async fn connection<S>(bank: Arc<Bank>, mut stream: S, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (tx, mut rx) = mpsc::channel::<Out>(ANSWER_CHANNEL);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_ANSWERS));
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut restart = bank.restart.subscribe();
    'conn: loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            _ = restart.changed() => break,
            out = rx.recv() => match out {
                Some(Out::Frame(f)) => {
                    if !write(&mut stream, &f).await {
                        break;
                    }
                }
                // `tx` lives in this task, so `None` cannot happen.
                Some(Out::Close) | None => break,
            },
            r = stream.read_buf(&mut buf) => {
                if !matches!(r, Ok(n) if n > 0) {
                    break;
                }
                // Bounded: each pass removes one whole frame from `buf`,
                // which holds at most what one read added.
                loop {
                    let frame = match bank.framer.decode(&mut buf) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(_) => {
                            // Out of step with the peer: only this connection ends.
                            lock(&bank.ledger).stats_mut(bank.index).bad_frames += 1;
                            break 'conn;
                        }
                    };
                    let plan = plan(&bank, &frame.header, &frame.message).await;
                    let Some(answer) = plan.frame else { continue };
                    let copies = if plan.fault == Some(Fault::Duplicate) { 2 } else { 1 };
                    if plan.delay.is_zero() {
                        if plan.fault == Some(Fault::Disconnect) {
                            break 'conn;
                        }
                        for _ in 0..copies {
                            if !write(&mut stream, &answer).await {
                                break 'conn;
                            }
                        }
                        continue;
                    }
                    // Wait for room among the pending answers; the channel
                    // holds them all, so the ones pending can always finish.
                    let Ok(permit) = pending.clone().acquire_owned().await else {
                        break 'conn;
                    };
                    let out = if plan.fault == Some(Fault::Disconnect) {
                        vec![Out::Close]
                    } else {
                        (0..copies).map(|_| Out::Frame(answer.clone())).collect()
                    };
                    tokio::spawn(later(plan.delay, out, tx.clone(), permit));
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

async fn later(
    delay: Duration,
    out: Vec<Out>,
    tx: mpsc::Sender<Out>,
    permit: OwnedSemaphorePermit,
) {
    tokio::time::sleep(delay).await;
    for o in out {
        if tx.send(o).await.is_err() {
            break;
        }
    }
    drop(permit);
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, async {
            stream.write_all(frame).await?;
            stream.flush().await
        })
        .await,
        Ok(Ok(()))
    )
}

/// Decode, authenticate, decide, book, seal and encode the answer to one
/// message, and draw its latency and fault. Never panics on any input.
async fn plan(bank: &Bank, header: &[u8], message: &[u8]) -> Plan {
    let none = Plan {
        frame: None,
        delay: Duration::ZERO,
        fault: None,
    };
    let decoded = match &bank.auth {
        Some(_) => bank.codec.decode_authenticated(message),
        None => bank.codec.decode(message),
    };
    let req = match decoded {
        Ok(req) => req,
        // The error names a field, never a value; the counts are enough here.
        Err(_) => {
            return format_error_plan(bank, header, message)
                .await
                .unwrap_or(none)
        }
    };
    let network = req.mti.class() == 8;
    // Network management is authenticated like payments (sign-on, echo and
    // sign-off carry a MAC; the 0810 is MACed), as on the switch's links.
    let auth = bank.auth.as_ref();
    let authentic = match auth {
        Some(a) if !req.is_response() => a.verify(&req).await.is_ok(),
        _ => true,
    };
    if !authentic {
        // Possibly forged: refused, never booked.
        {
            let mut ledger = lock(&bank.ledger);
            let stats = ledger.stats_mut(bank.index);
            stats.requests += 1;
            stats.auth_failures += 1;
        }
        let mut answer = req.response(ResponseCode::SECURITY_VIOLATION);
        finish_answer(bank, &req, &mut answer);
        if let Some(a) = auth {
            if a.seal(&*bank.codec, &mut answer, false).await.is_err() {
                return none;
            }
        }
        return encode_plan(bank, header, &answer, Duration::ZERO, None, message.len());
    }
    let (draw, mut answer) = {
        let mut ledger = lock(&bank.ledger);
        if network && !req.is_response() {
            let stats = ledger.stats_mut(bank.index);
            match req.network_code {
                Some(NetworkCode::SignOn) => stats.sign_ons += 1,
                Some(NetworkCode::SignOff) => stats.sign_offs += 1,
                _ => {}
            }
        }
        let Some(answer) = ledger.handle(bank.index, &req, unix_ms()) else {
            return none;
        };
        // Network management keeps links up: no faults, no latency.
        let draw = (!network).then(|| {
            let mut rng = bank.rng.lock().unwrap_or_else(|p| p.into_inner());
            rng.draw(&bank.latency, &bank.faults)
        });
        if let Some(f) = draw.and_then(|d| d.fault) {
            ledger.record_fault(bank.index, f);
        }
        (draw, answer)
    };
    finish_answer(bank, &req, &mut answer);
    let (delay, fault) = draw.map_or((Duration::ZERO, None), |d| (d.delay, d.fault));
    if fault == Some(Fault::Drop) {
        return none;
    }
    if let Some(a) = auth {
        let corrupt = fault == Some(Fault::BadMac);
        if a.seal(&*bank.codec, &mut answer, corrupt).await.is_err() {
            lock(&bank.ledger).stats_mut(bank.index).encode_errors += 1;
            return none;
        }
    }
    encode_plan(bank, header, &answer, delay, fault, message.len())
}

/// The answer to a message that did not decode: `30` format error when the
/// codec can still read enough of the request to match the answer to it
/// (as a bank's host does, and as the switch does upstream), sealed like
/// every answer; never booked, never faulted or delayed. `None` (no
/// answer) for anything else: a response, or a message whose ids cannot
/// be read.
async fn format_error_plan(bank: &Bank, header: &[u8], message: &[u8]) -> Option<Plan> {
    let salvaged = bank.codec.salvage_request(message);
    {
        let mut ledger = lock(&bank.ledger);
        let stats = ledger.stats_mut(bank.index);
        stats.bad_messages += 1;
        if salvaged.is_some() {
            stats.format_errors += 1;
        }
    }
    let req = salvaged?;
    let mut answer = req.response(ResponseCode::FORMAT_ERROR);
    finish_answer(bank, &req, &mut answer);
    if let Some(a) = &bank.auth {
        if a.seal(&*bank.codec, &mut answer, false).await.is_err() {
            lock(&bank.ledger).stats_mut(bank.index).encode_errors += 1;
            return None;
        }
    }
    Some(encode_plan(
        bank,
        header,
        &answer,
        Duration::ZERO,
        None,
        message.len(),
    ))
}

/// Frame `answer` (or garbage, for that fault) with `header`.
fn encode_plan(
    bank: &Bank,
    header: &[u8],
    answer: &Transaction,
    delay: Duration,
    fault: Option<Fault>,
    request_len: usize,
) -> Plan {
    let none = Plan {
        frame: None,
        delay: Duration::ZERO,
        fault: None,
    };
    let mut out = BytesMut::with_capacity(request_len + 64);
    let framed = bank.framer.begin(header, &mut out).and_then(|mark| {
        if fault == Some(Fault::Garbage) {
            out.extend_from_slice(&garbage(&bank.rng));
            Ok(mark)
        } else {
            bank.codec.encode(answer, &mut out).map(|()| mark)
        }
    });
    match framed.and_then(|mark| bank.framer.finish(mark, &mut out)) {
        Ok(()) => Plan {
            frame: Some(out),
            delay,
            fault,
        },
        Err(_) => {
            lock(&bank.ledger).stats_mut(bank.index).encode_errors += 1;
            none
        }
    }
}

/// Fill what the bank's own answer needs beyond the request's echo: ISO
/// 20022 answers carry the bank's own message id (they name the request in
/// `OrgnlMsgId`) and need a creation time and settlement date.
fn finish_answer(bank: &Bank, req: &Transaction, answer: &mut Transaction) {
    if bank.style != Style::Iso20022 {
        return;
    }
    let seq = bank
        .answer_seq
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("BSIM{}{:016}", bank.code, seq % 10_000_000_000_000_000);
    answer.message_id = MessageId::parse(id.as_bytes()).ok();
    let (f7, date) = utc_now_fields();
    if answer.transmitted_at.is_none() || answer.settlement_date.is_none() {
        answer.transmitted_at = Some(f7);
    }
    if answer.settlement_date.is_none() {
        answer.settlement_date = req.settlement_date.or(Some(date));
    }
}

/// 16 bytes no codec accepts as a message (0xFF starts no ISO 8583 MTI,
/// JSON document or XML declaration), the rest random.
fn garbage(rng: &Mutex<SplitMix64>) -> [u8; 16] {
    let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    out[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    out[0] = 0xff;
    out
}

/// Milliseconds since the Unix epoch (ledger times).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Now as F7 (`MMDDhhmmss`, UTC) and as a settlement date (`YYYYMMDD`).
pub(crate) fn utc_now_fields() -> (TransmissionDateTime, SettlementDate) {
    let secs = unix_ms() / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    (
        TransmissionDateTime::at_unix_secs(secs),
        // A calendar date of a Unix time in u64 milliseconds.
        SettlementDate::from_civil(y, m, d).expect("valid date from the clock"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_fields_come_from_the_clock() {
        // The calendar itself is tested in fps_codecs::calendar; this checks
        // that the clock's fields always parse (the expects do not fire).
        let _ = utc_now_fields();
    }
}
