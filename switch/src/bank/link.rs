//! One bank link: one TCP(+TLS) connection, a reader task and a writer task,
//! many requests in flight matched by [`MatchKey`].
//!
//! Life of an ISO 8583 link: sign-on (0800, F70 `001`), echo (`301`) when
//! quiet, and, when the pool closes it ([`Link::close`]: shutdown, or idle
//! above `pool.min`), no new requests, the ones in flight finish (bounded),
//! then sign-off (`002`) with a short wait for its 0810. With `auth`, every
//! network management request is MACed like a payment and every 0810
//! verified; one that fails ends the link (the pool reconnects after
//! backoff) and counts in `fps_switch_bank_auth_failures_total`.
//!
//! A request the bank itself sends on such a link is answered on it:
//! network management `00`, anything else `57` (banks originate payments
//! on the links they open to `[bank_inbound]`), counted in
//! `fps_switch_bank_unsolicited_requests_total`; with `auth` its MAC is
//! checked first (`63` when wrong) and the answer MACed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::model::{Mti, NetworkCode, ResponseCode, Transaction, TxnKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::pool::{BankShared, Framed};
use super::{MatchBy, MatchKey, SendError};
use crate::metrics as m;

/// Read buffer size to start with.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Longest wait for the 0810 of a sign-off before the link closes anyway.
pub(crate) const SIGN_OFF_TIMEOUT: Duration = Duration::from_secs(1);
/// Requests from the bank being authenticated at once on one link; more
/// are dropped (the bank repeats or drops the link).
const MAX_BANK_REQUEST_CHECKS: usize = 8;
/// Why a request was refused by a link that is closing: nothing was sent,
/// the pool tries another link.
pub(crate) const LINK_CLOSING: &str = "link closing";

/// A connected (and signed-on) link, shared by the pool and the requests on it.
#[derive(Debug)]
pub(crate) struct Link {
    bank: Arc<BankShared>,
    pub(crate) endpoint: String,
    writer: mpsc::Sender<BytesMut>,
    pending: Mutex<Pending>,
    in_flight: AtomicUsize,
    next_token: AtomicU64,
    epoch: Instant,
    last_read_ms: AtomicU64,
    /// When the last payment-side request started or ended (ms since
    /// `epoch`); network management does not count, so echoes do not keep
    /// an idle link open.
    last_busy_ms: AtomicU64,
    /// Woken when `in_flight` drops to zero.
    drained: Notify,
    /// Set once by [`Link::close`].
    close: watch::Sender<Option<CloseOrder>>,
    /// Bounds the bank's own network management requests being checked.
    bank_checks: Arc<Semaphore>,
}

/// The requests in flight, and whether new ones are still taken.
#[derive(Debug, Default)]
struct Pending {
    waiters: HashMap<MatchKey, Waiter>,
    /// No new payment-side requests: the link is being closed.
    closing: bool,
}

/// Why the pool closes a link on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The switch is stopping.
    Shutdown,
    /// Idle for `pool.idle_close_ms` with more than `pool.min` links up.
    Idle,
}

impl CloseReason {
    /// Metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseReason::Shutdown => "shutdown",
            CloseReason::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CloseOrder {
    reason: CloseReason,
    /// Requests in flight get until then to finish before the sign-off.
    drain_until: Instant,
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
    /// The MAC of a network management answer did not verify.
    AuthFailed,
    /// Closed by the pool ([`Link::close`]), signed off where the bank
    /// takes network management.
    Retired(CloseReason),
}

/// What became of one network management request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetOutcome {
    /// Answered `00` (and verified, with `auth`).
    Approved,
    /// Answered with another code.
    Refused,
    /// No answer in time, the link failed, or the HSM could not seal or
    /// check it.
    NoAnswer,
    /// The answer's MAC was missing or wrong.
    AuthFailed,
}

impl NetOutcome {
    fn label(self) -> &'static str {
        match self {
            NetOutcome::Approved => "approved",
            NetOutcome::Refused => "refused",
            NetOutcome::NoAnswer => "no_answer",
            NetOutcome::AuthFailed => "auth_failed",
        }
    }
}

impl Link {
    /// Requests in flight on this link.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Frames handed to this link's writer and not yet taken by it: the
    /// writer will send them together with any that join them first.
    pub(crate) fn queued_frames(&self) -> usize {
        self.writer.max_capacity() - self.writer.capacity()
    }

    /// Send `txn` (already carrying the switch's outbound ids) and wait for
    /// its answer until `deadline`.
    pub(crate) async fn request(
        &self,
        txn: &Transaction,
        deadline: Instant,
    ) -> Result<Transaction, SendError> {
        let mut framed = self.bank.frame(txn)?;
        self.request_framed(txn, &mut framed, deadline).await
    }

    /// [`Link::request`] with `txn` already framed for this bank (see
    /// [`BankShared::frame`]). The frame is taken only once the link has
    /// accepted the request: one refused as [`LINK_CLOSING`] leaves it to
    /// the caller for the next link.
    pub(crate) async fn request_framed(
        &self,
        txn: &Transaction,
        framed: &mut Framed,
        deadline: Instant,
    ) -> Result<Transaction, SendError> {
        let bank = &*self.bank;
        let key = MatchKey::of_request(bank.codec.match_by, txn)
            .ok_or(SendError::Rejected("request has no match key fields"))?;
        let (tx, rx) = oneshot::channel();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let payment = txn.mti.class() != Mti::NETWORK.class();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // Network management still goes out while closing (the sign-off).
            if pending.closing && payment {
                return Err(SendError::NotSent(LINK_CLOSING));
            }
            if pending.waiters.len() >= bank.max_in_flight {
                return Err(SendError::NotSent("link in-flight limit reached"));
            }
            if pending.waiters.contains_key(&key) {
                return Err(SendError::NotSent("match key already in flight"));
            }
            pending.waiters.insert(key, Waiter { token, tx });
            // Counted under the lock: once `closing` is set, the count only
            // falls, so a close waiting for zero cannot miss a request.
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        if payment {
            self.touch_busy();
        }
        let _guard = PendingGuard {
            link: self,
            key,
            token,
            payment,
        };
        bank.in_flight_gauge.increment(1.0);

        // The channel holds max_in_flight frames, and at most that many are
        // registered, so this only waits if the writer is stuck.
        let frame = std::mem::take(&mut framed.frame);
        match tokio::time::timeout_at(deadline, self.writer.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(SendError::NotSent("link closed")),
            Err(_) => return Err(SendError::NotSent("link writer stalled")),
        }
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => {
                bank.rtt.record(started.elapsed().as_secs_f64());
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

    /// Stop taking payment-side requests, let the ones in flight finish
    /// until `drain_until`, sign off (ISO 8583) and end the link. The pool
    /// takes the link out of its slot first, so nothing picks it any more;
    /// a request that picked it just before is refused with
    /// [`LINK_CLOSING`] (not sent) and tried on another link. Idempotent; a
    /// shutdown overrides an idle close under way.
    pub(crate) fn close(&self, reason: CloseReason, drain_until: Instant) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closing = true;
        self.close.send_if_modified(|order| match order {
            Some(o) if o.reason == CloseReason::Shutdown || reason == CloseReason::Idle => false,
            _ => {
                *order = Some(CloseOrder {
                    reason,
                    drain_until,
                });
                true
            }
        });
    }

    /// How long the link has had no payment-side request in flight; `None`
    /// while one is.
    pub(crate) fn quiet_for(&self) -> Option<Duration> {
        if self.in_flight() > 0 {
            return None;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        Some(Duration::from_millis(
            now.saturating_sub(self.last_busy_ms.load(Ordering::Relaxed)),
        ))
    }

    fn touch_busy(&self) {
        self.last_busy_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Until no request is in flight, or `until`.
    async fn drain(&self, until: Instant) {
        let _ = tokio::time::timeout_at(until, async {
            loop {
                let woken = self.drained.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                woken.await;
            }
        })
        .await;
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
                .waiters
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
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.closing = true;
        pending.waiters.clear();
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
    /// Not network management: counts as use of the link.
    payment: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self.link.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending
            .waiters
            .get(&self.key)
            .is_some_and(|w| w.token == self.token)
        {
            pending.waiters.remove(&self.key);
        }
        drop(pending);
        if self.payment {
            self.link.touch_busy();
        }
        if self.link.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.link.drained.notify_waiters();
        }
        self.link.bank.in_flight_gauge.decrement(1.0);
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
/// banks) and calls `on_ready` once the link may carry traffic; signs off
/// when the pool closes it ([`Link::close`]).
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
        pending: Mutex::new(Pending::default()),
        in_flight: AtomicUsize::new(0),
        next_token: AtomicU64::new(0),
        epoch: Instant::now(),
        last_read_ms: AtomicU64::new(0),
        last_busy_ms: AtomicU64::new(0),
        drained: Notify::new(),
        close: watch::Sender::new(None),
        bank_checks: Arc::new(Semaphore::new(MAX_BANK_REQUEST_CHECKS)),
    });
    let mut close_rx = link.close.subscribe();
    let mut reader = AbortOnDrop(tokio::spawn(read_loop(link.clone(), rd)));
    let mut writer = AbortOnDrop(tokio::spawn(write_loop(rx, wr)));

    let end = async {
        if bank.codec.network_management {
            let deadline = Instant::now() + bank.connect_timeout;
            let signed_on = tokio::select! {
                r = network(&link, NetworkCode::SignOn, deadline) => r,
                _ = &mut reader.0 => NetOutcome::NoAnswer,
                _ = &mut writer.0 => NetOutcome::NoAnswer,
            };
            match signed_on {
                NetOutcome::Approved => {}
                NetOutcome::AuthFailed => return LinkEnd::AuthFailed,
                other => {
                    tracing::warn!(bank = %bank.name, result = other.label(), "sign-on failed");
                    return LinkEnd::SignOnFailed;
                }
            }
        }
        on_ready(link.clone());
        tokio::select! {
            r = &mut reader.0 => return r.unwrap_or(LinkEnd::Closed),
            r = &mut writer.0 => return r.unwrap_or(LinkEnd::Closed),
            r = echo_loop(&link) => return r,
            _ = close_rx.wait_for(Option::is_some) => {}
        }
        // Closing: no new requests; the ones in flight finish (a shutdown
        // arriving during an idle close brings the deadline in).
        let reason = loop {
            let Some(order) = *close_rx.borrow_and_update() else {
                break CloseReason::Shutdown;
            };
            tokio::select! {
                r = &mut reader.0 => return r.unwrap_or(LinkEnd::Closed),
                r = &mut writer.0 => return r.unwrap_or(LinkEnd::Closed),
                () = link.drain(order.drain_until) => break order.reason,
                _ = close_rx.changed() => {}
            }
        };
        if bank.codec.network_management {
            let deadline = Instant::now() + SIGN_OFF_TIMEOUT;
            let signed_off = tokio::select! {
                r = network(&link, NetworkCode::SignOff, deadline) => r,
                _ = &mut reader.0 => NetOutcome::NoAnswer,
                _ = &mut writer.0 => NetOutcome::NoAnswer,
            };
            metrics::counter!(m::SIGN_OFFS, "bank" => bank.name.clone(), "result" => signed_off.label())
                .increment(1);
            tracing::info!(bank = %bank.name, reason = reason.label(), result = signed_off.label(), "bank link signed off");
        }
        metrics::counter!(m::LINKS_CLOSED, "bank" => bank.name.clone(), "reason" => reason.label())
            .increment(1);
        LinkEnd::Retired(reason)
    }
    .await;
    drop(reader);
    drop(writer);
    link.fail_all();
    end
}

/// Send a network management request (MACed, with `auth`) and check its
/// answer (its MAC verified first, with `auth`).
async fn network(link: &Link, code: NetworkCode, deadline: Instant) -> NetOutcome {
    let bank = &*link.bank;
    let mut txn = Transaction::new(Mti::NETWORK);
    txn.transmitted_at = Some(crate::clock::transmission_now());
    txn.stan = Some(bank.ids.next_stan());
    txn.network_code = Some(code);
    if let Some(auth) = &bank.auth {
        txn = match tokio::time::timeout_at(deadline, auth.seal(&txn)).await {
            Ok(Ok(sealed)) => sealed,
            Ok(Err(e)) => {
                tracing::warn!(bank = %bank.name, error = %e, "cannot MAC network management request");
                return NetOutcome::NoAnswer;
            }
            Err(_) => return NetOutcome::NoAnswer,
        };
    }
    let Ok(answer) = link.request(&txn, deadline).await else {
        return NetOutcome::NoAnswer;
    };
    if let Some(auth) = &bank.auth {
        // `check` counts and logs a forged answer (MTI and STAN only).
        match tokio::time::timeout_at(deadline, auth.check(&answer)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_forgery() => return NetOutcome::AuthFailed,
            Ok(Err(_)) | Err(_) => return NetOutcome::NoAnswer,
        }
    }
    if answer.response_code.is_some_and(|c| c.is_approved()) {
        NetOutcome::Approved
    } else {
        NetOutcome::Refused
    }
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
        match network(link, NetworkCode::Echo, deadline).await {
            NetOutcome::Approved => {}
            NetOutcome::AuthFailed => return LinkEnd::AuthFailed,
            other => {
                tracing::warn!(bank = %link.bank.name, result = other.label(), "echo failed");
                return LinkEnd::EchoFailed;
            }
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
                        Ok(txn) => answer_bank_request(&link, txn),
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

/// Requests a bank sends us on a link the switch opened. Network
/// management is answered `00`. Anything else is answered `57` (not
/// permitted): banks originate payments over the links they open to
/// `[bank_inbound]` (DESIGN.md), where they are identified, authenticated
/// and routed; here the bank at least gets its answer at once instead of
/// waiting out its own timeout on a request the switch dropped. With
/// `auth`, the request's MAC is checked first (`63` when it fails, `96`
/// when it cannot be checked) and the answer is MACed.
fn answer_bank_request(link: &Arc<Link>, txn: Transaction) {
    let bank = &*link.bank;
    let allowed = txn.kind() == Some(TxnKind::NetworkManagement);
    if !allowed {
        metrics::counter!(m::BANK_UNSOLICITED, "bank" => bank.name.clone()).increment(1);
        tracing::warn!(bank = %bank.name, mti = %txn.mti, "bank request on a link the switch opened: answered 57 (banks originate on their own links to [bank_inbound])");
    }
    let verdict = if allowed {
        ResponseCode::APPROVED
    } else {
        ResponseCode::NOT_PERMITTED
    };
    let Some(auth) = bank.auth.clone() else {
        write_answer(link, &own_answer(bank, &txn, verdict));
        return;
    };
    let Ok(permit) = link.bank_checks.clone().try_acquire_owned() else {
        tracing::warn!(bank = %bank.name, "too many requests from the bank being checked: dropped");
        return;
    };
    let link = link.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let code = match auth.check(&txn).await {
            Ok(()) => verdict,
            Err(e) if e.is_forgery() => ResponseCode::SECURITY_VIOLATION,
            Err(_) => ResponseCode::SYSTEM_MALFUNCTION,
        };
        match auth.seal(&own_answer(&link.bank, &txn, code)).await {
            Ok(answer) => write_answer(&link, &answer),
            Err(e) => {
                tracing::warn!(bank = %link.bank.name, error = %e, "cannot MAC the answer to a bank request")
            }
        }
    });
}

/// The answer to a bank's request: an ISO 20022 answer carries a message
/// id of the switch's own (and names the request in `OrgnlMsgId`).
fn own_answer(bank: &BankShared, req: &Transaction, code: ResponseCode) -> Transaction {
    let mut answer = req.response(code);
    if bank.codec.match_by == MatchBy::OriginalMessageId {
        answer.message_id = Some(bank.ids.next_message_id());
    }
    answer
}

fn write_answer(link: &Link, answer: &Transaction) {
    let bank = &*link.bank;
    let mut frame = BytesMut::with_capacity(128);
    let Ok(mark) = bank.framer.begin(&bank.frame_header, &mut frame) else {
        return;
    };
    if bank.codec.codec.encode(answer, &mut frame).is_err()
        || bank.framer.finish(mark, &mut frame).is_err()
    {
        tracing::warn!(bank = %bank.name, mti = %answer.mti, "cannot encode the answer to a bank request");
        return;
    }
    // Best effort: a full writer queue means the link is in trouble anyway.
    let _ = link.writer.try_send(frame);
}

async fn write_loop<S: AsyncWrite>(
    mut rx: mpsc::Receiver<BytesMut>,
    mut wr: WriteHalf<S>,
) -> LinkEnd {
    crate::conn::write_coalesced(&mut rx, &mut wr).await;
    LinkEnd::Closed
}
