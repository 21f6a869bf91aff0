//! One bank link: one TCP(+TLS) connection, a reader task and a writer task,
//! many requests in flight matched by [`MatchKey`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::model::{Mti, NetworkCode, ResponseCode, Transaction, TxnKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::pool::BankShared;
use super::{MatchKey, SendError};
use crate::metrics as m;

/// Most bytes the writer gathers from queued frames into one write.
const MAX_WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Read buffer size to start with.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// A connected (and signed-on) link, shared by the pool and the requests on it.
#[derive(Debug)]
pub(crate) struct Link {
    bank: Arc<BankShared>,
    pub(crate) endpoint: String,
    writer: mpsc::Sender<BytesMut>,
    pending: Mutex<HashMap<MatchKey, Waiter>>,
    in_flight: AtomicUsize,
    next_token: AtomicU64,
    epoch: Instant,
    last_read_ms: AtomicU64,
}

#[derive(Debug)]
struct Waiter {
    token: u64,
    tx: oneshot::Sender<Transaction>,
}

/// Why a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkEnd {
    /// The peer closed or the socket failed.
    Closed,
    /// The stream was out of step (bad length prefix, oversize frame).
    FrameError,
    /// Sign-on was refused or not answered.
    SignOnFailed,
    /// An idle echo was not answered.
    EchoFailed,
}

impl Link {
    /// Requests in flight on this link.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Send `txn` (already carrying the switch's outbound ids) and wait for
    /// its answer until `deadline`.
    pub(crate) async fn request(
        &self,
        txn: &Transaction,
        deadline: Instant,
    ) -> Result<Transaction, SendError> {
        let bank = &*self.bank;
        let key = MatchKey::of_request(bank.codec.match_by, txn)
            .ok_or(SendError::Rejected("request has no match key fields"))?;
        let mut frame = BytesMut::with_capacity(512);
        let mark = bank
            .framer
            .begin(&bank.frame_header, &mut frame)
            .map_err(|_| SendError::Rejected("frame header"))?;
        bank.codec.codec.encode(txn, &mut frame).map_err(|e| {
            // Codec errors name the field and a static reason, never a value.
            tracing::info!(bank = %bank.name, error = %e, "cannot encode for the bank");
            SendError::Rejected("the bank's codec cannot carry this transaction")
        })?;
        bank.framer
            .finish(mark, &mut frame)
            .map_err(|_| SendError::Rejected("message over the link's max_frame_bytes"))?;

        let (tx, rx) = oneshot::channel();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= bank.max_in_flight {
                return Err(SendError::NotSent("link in-flight limit reached"));
            }
            if pending.contains_key(&key) {
                return Err(SendError::NotSent("match key already in flight"));
            }
            pending.insert(key, Waiter { token, tx });
        }
        let _guard = PendingGuard {
            link: self,
            key,
            token,
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(m::BANK_IN_FLIGHT, "bank" => bank.name.clone()).increment(1.0);

        // The channel holds max_in_flight frames, and at most that many are
        // registered, so this only waits if the writer is stuck.
        match tokio::time::timeout_at(deadline, self.writer.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(SendError::NotSent("link closed")),
            Err(_) => return Err(SendError::NotSent("link writer stalled")),
        }
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => {
                metrics::histogram!(m::BANK_RTT_SECONDS, "bank" => bank.name.clone())
                    .record(started.elapsed().as_secs_f64());
                Ok(answer)
            }
            Ok(Err(_)) => Err(SendError::OutcomeUnknown(
                "link lost with the request in flight",
            )),
            Err(_) => {
                metrics::counter!(m::TIMEOUTS, "bank" => bank.name.clone()).increment(1);
                Err(SendError::OutcomeUnknown("no answer before the deadline"))
            }
        }
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_read_ms.load(Ordering::Relaxed)))
    }

    /// Hand an answer to its waiter; an answer nobody waits for is late.
    fn deliver(&self, answer: Transaction) {
        let bank = &*self.bank;
        let waiter = MatchKey::of_response(bank.codec.match_by, &answer).and_then(|key| {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key)
        });
        match waiter {
            Some(w) => {
                // The requester may have given up this instant: then it is late.
                if let Err(answer) = w.tx.send(answer) {
                    late(bank, answer);
                }
            }
            None => late(bank, answer),
        }
    }

    /// Drop every waiter: their requests end as `OutcomeUnknown`.
    fn fail_all(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// A late answer is counted, logged and handed to the reversal machinery
/// (DESIGN.md invariant 4); it never reaches upstream.
fn late(bank: &BankShared, answer: Transaction) {
    metrics::counter!(m::LATE_RESPONSES, "bank" => bank.name.clone()).increment(1);
    tracing::warn!(
        bank = %bank.name,
        mti = %answer.mti,
        stan = ?answer.stan.map(|s| s.value()),
        rrn = ?answer.rrn.as_ref().map(|r| r.as_str().to_owned()),
        code = ?answer.response_code.map(|c| c.as_str().to_owned()),
        "late bank answer with no waiter: not forwarded"
    );
    if let Some(sink) = bank.late.get() {
        sink.late_answer(&bank.name, answer);
    }
}

/// Removes a request's waiter (if still there) and its in-flight count on
/// every exit path, including cancellation.
struct PendingGuard<'a> {
    link: &'a Link,
    key: MatchKey,
    token: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self.link.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending
            .get(&self.key)
            .is_some_and(|w| w.token == self.token)
        {
            pending.remove(&self.key);
        }
        drop(pending);
        self.link.in_flight.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(m::BANK_IN_FLIGHT, "bank" => self.link.bank.name.clone()).decrement(1.0);
    }
}

/// Aborts a task when dropped, so a cancelled link leaves no task behind.
struct AbortOnDrop(JoinHandle<LinkEnd>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run a connected stream as a link until it ends. Signs on first (ISO 8583
/// banks) and calls `on_ready` once the link may carry traffic.
pub(crate) async fn run_link<S>(
    bank: Arc<BankShared>,
    endpoint: String,
    stream: S,
    on_ready: impl FnOnce(Arc<Link>),
) -> LinkEnd
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(bank.max_in_flight + 8);
    let link = Arc::new(Link {
        bank: bank.clone(),
        endpoint,
        writer: tx,
        pending: Mutex::new(HashMap::new()),
        in_flight: AtomicUsize::new(0),
        next_token: AtomicU64::new(0),
        epoch: Instant::now(),
        last_read_ms: AtomicU64::new(0),
    });
    let mut reader = AbortOnDrop(tokio::spawn(read_loop(link.clone(), rd)));
    let mut writer = AbortOnDrop(tokio::spawn(write_loop(rx, wr)));

    let end = async {
        if bank.codec.network_management {
            let deadline = Instant::now() + bank.connect_timeout;
            let signed_on = tokio::select! {
                r = network(&link, NetworkCode::SignOn, deadline) => r,
                _ = &mut reader.0 => false,
                _ = &mut writer.0 => false,
            };
            if !signed_on {
                return LinkEnd::SignOnFailed;
            }
        }
        on_ready(link.clone());
        tokio::select! {
            r = &mut reader.0 => r.unwrap_or(LinkEnd::Closed),
            r = &mut writer.0 => r.unwrap_or(LinkEnd::Closed),
            r = echo_loop(&link) => r,
        }
    }
    .await;
    drop(reader);
    drop(writer);
    link.fail_all();
    end
}

/// Send a network management request and report whether it was approved.
async fn network(link: &Link, code: NetworkCode, deadline: Instant) -> bool {
    let mut txn = Transaction::new(Mti::NETWORK);
    txn.transmitted_at = Some(crate::clock::transmission_now());
    txn.stan = Some(link.bank.ids.next_stan());
    txn.network_code = Some(code);
    matches!(
        link.request(&txn, deadline).await,
        Ok(answer) if answer.response_code.is_some_and(|c| c.is_approved())
    )
}

/// Echo when the link has been quiet for `echo_interval`; end the link when
/// an echo fails. Returns only on failure.
async fn echo_loop(link: &Link) -> LinkEnd {
    if !link.bank.codec.network_management {
        return std::future::pending().await;
    }
    let interval = link.bank.echo_interval;
    loop {
        let idle = link.idle_for();
        if idle < interval {
            tokio::time::sleep(interval - idle).await;
            continue;
        }
        let deadline = Instant::now() + link.bank.request_timeout;
        if !network(link, NetworkCode::Echo, deadline).await {
            return LinkEnd::EchoFailed;
        }
    }
}

async fn read_loop<S: AsyncRead>(link: Arc<Link>, mut rd: ReadHalf<S>) -> LinkEnd {
    let bank = link.bank.clone();
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    loop {
        loop {
            match bank.framer.decode(&mut buf) {
                Ok(Some(frame)) => {
                    link.last_read_ms
                        .store(link.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    match bank.codec.codec.decode(&frame.message) {
                        Ok(txn) if txn.is_response() => link.deliver(txn),
                        Ok(txn) => answer_bank_request(&link, &txn),
                        Err(e) => {
                            metrics::counter!(m::FRAME_ERRORS, "side" => "bank", "reason" => "decode")
                                .increment(1);
                            tracing::warn!(bank = %bank.name, error = %e, "undecodable message from bank dropped");
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    metrics::counter!(m::FRAME_ERRORS, "side" => "bank", "reason" => "framing")
                        .increment(1);
                    tracing::warn!(bank = %bank.name, error = %e, "bad frame from bank: closing link");
                    return LinkEnd::FrameError;
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return LinkEnd::Closed,
            Ok(_) => {}
        }
    }
}

/// Requests a bank sends us on an outbound link: network management is
/// answered; the rest waits for bank-originated traffic support.
fn answer_bank_request(link: &Link, txn: &Transaction) {
    let bank = &*link.bank;
    if txn.kind() != Some(TxnKind::NetworkManagement) {
        // TODO(bank-originated): route inbound payments from banks.
        tracing::warn!(bank = %bank.name, mti = %txn.mti, "unsolicited request from bank ignored");
        return;
    }
    let answer = txn.response(ResponseCode::APPROVED);
    let mut frame = BytesMut::with_capacity(128);
    let Ok(mark) = bank.framer.begin(&bank.frame_header, &mut frame) else {
        return;
    };
    if bank.codec.codec.encode(&answer, &mut frame).is_err()
        || bank.framer.finish(mark, &mut frame).is_err()
    {
        tracing::warn!(bank = %bank.name, "cannot encode network management answer");
        return;
    }
    // Best effort: a full writer queue means the link is in trouble anyway.
    let _ = link.writer.try_send(frame);
}

async fn write_loop<S: AsyncWrite>(
    mut rx: mpsc::Receiver<BytesMut>,
    mut wr: WriteHalf<S>,
) -> LinkEnd {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < MAX_WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if wr.write_all(&batch).await.is_err() || wr.flush().await.is_err() {
            return LinkEnd::Closed;
        }
    }
    LinkEnd::Closed
}
