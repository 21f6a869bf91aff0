//! The pool of links to one bank: `min` kept open by supervisors that
//! reconnect with exponential backoff and jitter, more opened under load up
//! to `max` (when the least-loaded link is three quarters full),
//! least-loaded selection, except that a request joins a link whose writer
//! already holds frames while it is within a small slack of the least
//! loaded (one write for requests that arrive together, [`BankPool`]'s
//! `pick`). A link above `min` with nothing in flight for
//! `pool.idle_close_ms` is taken out of selection, then closed and signed
//! off; at shutdown every link is ([`BankPool::close`]). With `auth`, every
//! request is MACed or signed before it goes to a link and every answer
//! (late ones included) verified before anyone sees it ([`super::auth`]).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::framing::Framer;
use fps_codecs::model::{BankCode, EndToEndId, Transaction};
use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::auth::BankAuth;
use super::link::{run_link, CloseReason, Link, LinkEnd, LINK_CLOSING, SIGN_OFF_TIMEOUT};
use super::{BankCodec, MatchBy, OutboundIds, SendError};
use crate::config::{BankConfig, CodecName};
use crate::metrics as m;
use crate::tls;

/// First reconnect delay.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Fresh outbound ids tried when a match key is already in flight.
const MAX_KEY_ATTEMPTS: usize = 3;
/// Late answers of one bank being verified at once; more are dropped (the
/// reversal they would settle goes on by itself).
const MAX_LATE_CHECKS: usize = 256;
/// Links a request tries when the one picked is closing at that instant.
const MAX_LINK_ATTEMPTS: usize = 3;
/// How many more requests in flight than the least-loaded link a link may
/// have and still take a request to join frames already waiting for its
/// writer (see `BankPool::pick`): an eighth of a link's
/// bound, at most 32.
fn join_slack(max_in_flight: usize) -> usize {
    (max_in_flight / 8).min(32)
}

/// How often idle links are looked for, at most and at least.
const IDLE_CHECK_MAX: Duration = Duration::from_secs(1);
const IDLE_CHECK_MIN: Duration = Duration::from_millis(10);
/// Beyond the drain deadline and the sign-off wait, how long a closing pool
/// waits for its supervisors before aborting them.
const CLOSE_MARGIN: Duration = Duration::from_millis(500);

/// A slot with no supervisor.
const SLOT_FREE: u8 = 0;
/// A supervisor keeps the slot's link up.
const SLOT_ACTIVE: u8 = 1;
/// The slot's link is being closed for idleness; the supervisor frees the
/// slot when it ends.
const SLOT_RETIRING: u8 = 2;

/// What every link of a bank shares.
#[derive(Debug)]
pub(crate) struct BankShared {
    pub(crate) name: String,
    pub(crate) code: BankCode,
    pub(crate) codec: BankCodec,
    pub(crate) framer: Framer,
    /// Zero bytes of the framing's `header_len` (a configured header value
    /// comes with the dialects that need one).
    pub(crate) frame_header: Vec<u8>,
    pub(crate) ids: OutboundIds,
    pub(crate) max_in_flight: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) echo_interval: Duration,
    pub(crate) connect_timeout: Duration,
    /// MACs of this bank's network management messages (the pool's own
    /// [`BankAuth`]), when it has `auth`.
    pub(crate) auth: Option<Arc<BankAuth>>,
    endpoints: Vec<String>,
    tls: Option<BankTls>,
    reversal_advice: bool,
    /// Where answers nobody waits for go (the reversal machinery); set
    /// once at build time, before the links start.
    pub(crate) late: std::sync::OnceLock<Arc<dyn LateAnswers>>,
    /// This bank's per-request series, registered once (a lookup with a
    /// label allocation per request otherwise).
    pub(crate) in_flight_gauge: metrics::Gauge,
    pub(crate) rtt: metrics::Histogram,
}

/// A request in a bank's framing, encoded once for both the journal (its
/// message) and the link (the whole frame).
#[derive(Debug)]
pub struct Framed {
    pub(crate) frame: BytesMut,
    body_at: usize,
}

impl Framed {
    /// The message in the bank's codec, without length prefix or header.
    pub fn message(&self) -> &[u8] {
        &self.frame[self.body_at..]
    }
}

impl BankShared {
    /// `txn` framed for this bank's links. Codec errors are logged by
    /// field and reason, never a value.
    pub(crate) fn frame(&self, txn: &Transaction) -> Result<Framed, SendError> {
        let mut frame = BytesMut::with_capacity(crate::conn::ENCODE_BUFFER_BYTES);
        let mark = self
            .framer
            .begin(&self.frame_header, &mut frame)
            .map_err(|_| SendError::Rejected("frame header"))?;
        let body_at = frame.len();
        self.codec.codec.encode(txn, &mut frame).map_err(|e| {
            tracing::info!(bank = %self.name, error = %e, "cannot encode for the bank");
            SendError::Rejected("the bank's codec cannot carry this transaction")
        })?;
        self.framer
            .finish(mark, &mut frame)
            .map_err(|_| SendError::Rejected("message over the link's max_frame_bytes"))?;
        Ok(Framed { frame, body_at })
    }
}

/// Takes bank answers that arrived after their request's deadline
/// (DESIGN.md invariant 4: settle the reversal, never forward upstream).
pub trait LateAnswers: Send + Sync + std::fmt::Debug {
    /// `answer` came from `bank` (pool name) with no request waiting.
    fn late_answer(&self, bank: &str, answer: Transaction);
}

/// The TLS client side of a bank's links.
struct BankTls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for BankTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankTls")
            .field("server_name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The links to one bank.
#[derive(Debug)]
pub struct BankPool {
    shared: Arc<BankShared>,
    slots: Vec<Slot>,
    min: usize,
    connects: AtomicU64,
    shutdown: watch::Receiver<bool>,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
    /// MACs/signatures of this bank's messages, when it has `auth`.
    auth: Option<Arc<BankAuth>>,
    /// `pool.idle_close_ms`, unless 0 (never).
    idle_close: Option<Duration>,
    /// Serializes idle closes, so two never take the pool below `min`.
    shrinking: Mutex<()>,
    /// Looks for idle links.
    reaper: Mutex<Option<JoinHandle<()>>>,
    /// Links being closed for idleness (out of their slots), so a shutdown
    /// can bring their deadline in. At most `max` alive at once.
    retiring: Mutex<Vec<std::sync::Weak<Link>>>,
    /// [`BankPool::close`] was called: nothing is picked or opened.
    closing: AtomicBool,
}

/// One place for a link: its supervisor's state and the link when up.
#[derive(Debug)]
struct Slot {
    link: RwLock<Option<Arc<Link>>>,
    state: AtomicU8,
}

/// One slot of a pool in `/links`.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    /// Slot number.
    pub slot: usize,
    /// Whether a signed-on link is there.
    pub up: bool,
    /// The endpoint it is connected to.
    pub endpoint: Option<String>,
    /// Requests in flight on it.
    pub in_flight: usize,
}

/// A pool in `/links`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// Bank name.
    pub bank: String,
    /// Bank code.
    pub code: String,
    /// Links up.
    pub up: usize,
    /// Configured minimum.
    pub min: usize,
    /// Configured maximum.
    pub max: usize,
    /// Connection attempts so far.
    pub connects: u64,
    /// Every started slot.
    pub links: Vec<LinkStatus>,
    /// Links out of their slots, finishing their requests and signing off
    /// before they close (idle above `min`).
    pub closing: Vec<ClosingLinkStatus>,
}

/// A link being closed, in `/links`.
#[derive(Debug, Clone, Serialize)]
pub struct ClosingLinkStatus {
    /// The endpoint it is connected to.
    pub endpoint: String,
    /// Requests still in flight on it.
    pub in_flight: usize,
}

/// Why a pool cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolBuildError {
    /// TLS material.
    #[error("bank {bank}: {source}")]
    Tls {
        /// Bank name.
        bank: String,
        /// Why.
        source: tls::TlsError,
    },
    /// Settings the validation should have refused.
    #[error("bank {bank}: {reason}")]
    Invalid {
        /// Bank name.
        bank: String,
        /// Why.
        reason: String,
    },
}

impl BankPool {
    /// A pool for a validated bank config; `hsm` holds the keys of its
    /// `auth` (required when it has one). Starts nothing: see [`BankPool::start`].
    pub fn new(
        cfg: &BankConfig,
        hsm: Option<&fps_hsm::Hsm>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, PoolBuildError> {
        let invalid = |reason: String| PoolBuildError::Invalid {
            bank: cfg.name.clone(),
            reason,
        };
        let code = BankCode::parse(cfg.code.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let codec_name = CodecName::parse(&cfg.codec).ok_or_else(|| invalid("codec".into()))?;
        let iso20022 = cfg.iso20022_config().map_err(|errors| {
            let (key, reason) = errors.into_iter().next().unwrap_or_default();
            invalid(format!("iso20022.{key}: {reason}"))
        })?;
        let mut codec =
            BankCodec::build(&codec_name, &iso20022).map_err(|e| invalid(e.to_string()))?;
        let auth = match &cfg.auth {
            None => None,
            Some(a) => {
                let keys = a.keys().map_err(|errors| {
                    let (key, reason) = errors.into_iter().next().unwrap_or_default();
                    invalid(format!("auth.{key}: {reason}"))
                })?;
                let hsm = hsm.ok_or_else(|| invalid("auth needs an [hsm] section".into()))?;
                codec = codec.authenticating();
                let auth = BankAuth::new(hsm.clone(), codec.codec.clone(), keys, &cfg.name)
                    .map_err(invalid)?;
                Some(Arc::new(auth))
            }
        };
        let framer = Framer::new(cfg.framing).map_err(|e| invalid(e.to_string()))?;
        let tls = match &cfg.tls {
            Some(t) => {
                let client = tls::bank_client_config(&t.cert, &t.key, &t.ca).map_err(|source| {
                    PoolBuildError::Tls {
                        bank: cfg.name.clone(),
                        source,
                    }
                })?;
                let name =
                    tls::server_name(&t.server_name).map_err(|source| PoolBuildError::Tls {
                        bank: cfg.name.clone(),
                        source,
                    })?;
                Some(BankTls {
                    connector: TlsConnector::from(client),
                    name,
                })
            }
            None => None,
        };
        let shared = Arc::new(BankShared {
            name: cfg.name.clone(),
            code,
            codec,
            framer,
            frame_header: vec![0; cfg.framing.header_len],
            ids: OutboundIds::new(code),
            max_in_flight: cfg.max_in_flight,
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            echo_interval: Duration::from_millis(cfg.echo_interval_ms),
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            auth: auth.clone(),
            endpoints: cfg.endpoints.clone(),
            tls,
            late: std::sync::OnceLock::new(),
            in_flight_gauge: metrics::gauge!(m::BANK_IN_FLIGHT, "bank" => cfg.name.clone()),
            rtt: metrics::histogram!(m::BANK_RTT_SECONDS, "bank" => cfg.name.clone()),
            reversal_advice: cfg.reversal_advice,
        });
        metrics::gauge!(m::POOL_LINKS, "bank" => cfg.name.clone()).set(0.0);
        Ok(Arc::new(BankPool {
            shared,
            slots: (0..cfg.pool.max)
                .map(|_| Slot {
                    link: RwLock::new(None),
                    state: AtomicU8::new(SLOT_FREE),
                })
                .collect(),
            min: cfg.pool.min,
            connects: AtomicU64::new(0),
            shutdown,
            supervisors: Mutex::new(Vec::new()),
            auth,
            idle_close: (cfg.pool.idle_close_ms > 0)
                .then(|| Duration::from_millis(cfg.pool.idle_close_ms)),
            shrinking: Mutex::new(()),
            reaper: Mutex::new(None),
            retiring: Mutex::new(Vec::new()),
            closing: AtomicBool::new(false),
        }))
    }

    /// How this bank's messages are authenticated, if they are.
    pub fn auth(&self) -> Option<&Arc<BankAuth>> {
        self.auth.as_ref()
    }

    /// The bank's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The bank's code.
    pub fn code(&self) -> BankCode {
        self.shared.code
    }

    /// The deadline of one request to this bank.
    pub fn request_timeout(&self) -> Duration {
        self.shared.request_timeout
    }

    /// Start the supervisors of the `min` links (and the task that closes
    /// idle links above `min`).
    pub fn start(self: &Arc<Self>) {
        for _ in 0..self.min {
            self.grow();
        }
        if let (Some(idle), true) = (self.idle_close, self.slots.len() > self.min) {
            let task = tokio::spawn(reap_idle(self.clone(), idle));
            *self.reaper.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
    }

    /// Stop every supervisor and link at once (no sign-off; see
    /// [`BankPool::close`]).
    pub fn stop(&self) {
        self.closing.store(true, Ordering::SeqCst);
        if let Some(t) = self.reaper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        for h in self
            .supervisors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }

    /// Close every link gracefully (the switch is stopping, after its
    /// drain): nothing new is picked; requests in flight get until
    /// `drain_until`; then each ISO 8583 link signs off and waits up to
    /// [`SIGN_OFF_TIMEOUT`] for the 0810. Supervisors still running after
    /// that (and a margin) are aborted, so this is bounded.
    pub async fn close(&self, drain_until: Instant) {
        self.closing.store(true, Ordering::SeqCst);
        if let Some(t) = self.reaper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        for slot in 0..self.slots.len() {
            if let Some(link) = self.set_slot(slot, None) {
                link.close(CloseReason::Shutdown, drain_until);
            }
        }
        let retiring =
            std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        for link in retiring.iter().filter_map(std::sync::Weak::upgrade) {
            link.close(CloseReason::Shutdown, drain_until);
        }
        let handles: Vec<_> = self
            .supervisors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        let limit = drain_until.max(Instant::now()) + SIGN_OFF_TIMEOUT + CLOSE_MARGIN;
        for mut h in handles {
            if tokio::time::timeout_at(limit, &mut h).await.is_err() {
                tracing::warn!(bank = %self.shared.name, "bank link did not close in time: aborted");
                h.abort();
            }
        }
    }

    /// Whether at least one link is up.
    pub fn is_ready(&self) -> bool {
        self.live_links().next().is_some()
    }

    /// Status for `/links`.
    pub fn status(&self) -> PoolStatus {
        let links: Vec<LinkStatus> = (0..self.slots.len())
            .filter(|&slot| self.slots[slot].state.load(Ordering::Relaxed) != SLOT_FREE)
            .map(|slot| {
                let link = self.slots[slot]
                    .link
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                LinkStatus {
                    slot,
                    up: link.is_some(),
                    endpoint: link.as_ref().map(|l| l.endpoint.clone()),
                    in_flight: link.as_ref().map_or(0, |l| l.in_flight()),
                }
            })
            .collect();
        let closing = self
            .retiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|l| ClosingLinkStatus {
                endpoint: l.endpoint.clone(),
                in_flight: l.in_flight(),
            })
            .collect();
        PoolStatus {
            bank: self.shared.name.clone(),
            code: self.shared.code.to_string(),
            up: links.iter().filter(|l| l.up).count(),
            min: self.min,
            max: self.slots.len(),
            connects: self.connects.load(Ordering::Relaxed),
            links,
            closing,
        }
    }

    /// Send a request to the bank on the least-loaded link. `txn` is the
    /// bank-bound transaction without ids: the pool assigns the switch's
    /// outbound STAN, RRN and message id. Returns what was sent (for the
    /// reversal machinery) with the outcome.
    pub async fn send(
        self: &Arc<Self>,
        mut txn: Transaction,
        deadline: Instant,
    ) -> (Transaction, Result<Transaction, SendError>) {
        let mut result = Err(SendError::NotSent("match key already in flight"));
        for _ in 0..MAX_KEY_ATTEMPTS {
            self.prepare(&mut txn);
            result = match self.frame(&txn) {
                Ok(framed) => self.send_prepared(&txn, framed, deadline).await,
                Err(e) => Err(e),
            };
            if result != Err(SendError::NotSent("match key already in flight")) {
                break;
            }
        }
        (txn, result)
    }

    /// Send a transaction that [`BankPool::prepare`] gave its outbound ids
    /// (and that the caller journaled) on the least-loaded link; `framed`
    /// is [`BankPool::frame`] of it. A bank with `auth` frames the sealed
    /// message instead.
    pub async fn send_prepared(
        self: &Arc<Self>,
        txn: &Transaction,
        mut framed: Framed,
        deadline: Instant,
    ) -> Result<Transaction, SendError> {
        let mut why = "no link up";
        // A link the idle reaper takes away between the pick and the send
        // refuses the request before anything leaves: try another. Only
        // the reason is kept across the awaits, not a transaction: this
        // future is part of every request's.
        for _ in 0..MAX_LINK_ATTEMPTS {
            let result = match (self.pick(), &self.auth) {
                (Some(link), None) => link.request_framed(txn, &mut framed, deadline).await,
                // Boxed: MACs and signatures take HSM calls anyway, and the
                // HSM's future inline would double this one's size for
                // every bank.
                (Some(link), Some(auth)) => {
                    Box::pin(authenticated(&link, auth, txn, deadline)).await
                }
                (None, _) => Err(SendError::NotSent("no link up")),
            };
            match result {
                Err(SendError::NotSent(LINK_CLOSING)) => why = LINK_CLOSING,
                other => return self.counted(other),
            }
        }
        self.counted(Err(SendError::NotSent(why)))
    }

    /// `result`, a failure counted by kind.
    fn counted(&self, result: Result<Transaction, SendError>) -> Result<Transaction, SendError> {
        if let Err(e) = &result {
            metrics::counter!(m::SEND_FAILURES, "bank" => self.shared.name.clone(), "kind" => e.kind())
                .increment(1);
        }
        result
    }

    /// Give a bank-bound transaction the switch's outbound STAN, RRN and
    /// message id for this bank.
    pub fn prepare(&self, txn: &mut Transaction) {
        self.assign_ids(txn);
    }

    /// `txn` framed for this bank's links, its message also what the
    /// journal keeps. Refused (nothing sent) when the codec cannot carry it.
    pub fn frame(&self, txn: &Transaction) -> Result<Framed, SendError> {
        self.shared.frame(txn)
    }

    /// The transaction in this bank's codec (for the journal).
    pub fn encode_wire(
        &self,
        txn: &Transaction,
        out: &mut bytes::BytesMut,
    ) -> Result<(), fps_codecs::CodecError> {
        self.shared.codec.codec.encode(txn, out)
    }

    /// A journaled message of this bank back to a transaction.
    pub fn decode_wire(&self, wire: &[u8]) -> Result<Transaction, fps_codecs::CodecError> {
        self.shared.codec.codec.decode(wire)
    }

    /// The key a request's answer is matched by on this bank's links.
    pub fn match_key(&self, txn: &Transaction) -> Option<super::MatchKey> {
        super::MatchKey::of_request(self.shared.codec.match_by, txn)
    }

    /// The key of the request an answer from this bank belongs to.
    pub fn answer_key(&self, answer: &Transaction) -> Option<super::MatchKey> {
        super::MatchKey::of_response(self.shared.codec.match_by, answer)
    }

    /// How this bank settles unknown outcomes.
    pub fn reversal_style(&self) -> fps_routing::reversal::ReversalStyle {
        use fps_routing::reversal::ReversalStyle;
        match self.shared.codec.match_by {
            MatchBy::IsoFields if self.shared.reversal_advice => ReversalStyle::Iso8583Advice,
            MatchBy::IsoFields => ReversalStyle::Iso8583Reversal,
            MatchBy::OriginalMessageId => ReversalStyle::Iso20022InquiryThenCancel,
            MatchBy::MessageId => ReversalStyle::JsonCancel,
        }
    }

    /// Where late answers go (set once, before [`BankPool::start`]). With
    /// `auth`, only answers whose MAC or signature verifies get there.
    pub fn set_late_answers(&self, sink: Arc<dyn LateAnswers>) {
        let sink = match &self.auth {
            None => sink,
            Some(auth) => Arc::new(VerifiedLate {
                inner: sink,
                auth: auth.clone(),
                checks: Arc::new(tokio::sync::Semaphore::new(MAX_LATE_CHECKS)),
            }),
        };
        let _ = self.shared.late.set(sink);
    }

    /// Continue the outbound STAN and RRN counters after these values (from
    /// the journal at start-up).
    pub fn resume_ids(&self, last_stan: u32, last_rrn: u64) {
        self.shared.ids.resume(last_stan, last_rrn);
    }

    /// The next block of outbound ids to journal, when one is due (see
    /// [`super::ids::OutboundIds`]).
    pub fn ids_reservation_due(&self) -> Option<super::ids::Reservation> {
        self.shared.ids.reservation_due()
    }

    /// A block of outbound ids is journaled (durable).
    pub fn ids_reserved(&self, r: &super::ids::Reservation) {
        self.shared.ids.reserved(r);
    }

    fn assign_ids(&self, txn: &mut Transaction) {
        let ids = &self.shared.ids;
        txn.stan = Some(ids.next_stan());
        txn.rrn = Some(ids.next_rrn());
        if self.shared.codec.match_by != MatchBy::IsoFields {
            let id = ids.next_message_id();
            txn.message_id = Some(id);
            if txn.end_to_end_id.is_none() {
                txn.end_to_end_id = EndToEndId::parse(id.as_str().as_bytes()).ok();
            }
        }
    }

    fn live_links(&self) -> impl Iterator<Item = Arc<Link>> + '_ {
        self.slots
            .iter()
            .filter_map(|s| s.link.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// The least-loaded live link, or one whose writer already holds frames
    /// when that one is within [`join_slack`] of the least loaded; opens one
    /// more link (up to `max`) when the least loaded is three quarters full
    /// or none is up.
    ///
    /// Least-loaded alone sent the requests of one scheduler pass round
    /// robin over every link, one write each; joining the link whose writer
    /// has frames waiting lets them leave in one write (a TCP send costs
    /// the switch's core several microseconds, more than the rest of its
    /// work on a frame), while the slack keeps the links' loads within a
    /// few requests (at most 32) of each other.
    fn pick(self: &Arc<Self>) -> Option<Arc<Link>> {
        if self.closing.load(Ordering::Relaxed) {
            return None;
        }
        let mut best: Option<(Arc<Link>, usize)> = None;
        let mut queued: Option<(Arc<Link>, usize)> = None;
        for link in self.live_links() {
            let load = link.in_flight();
            if link.queued_frames() > 0 && queued.as_ref().is_none_or(|(_, q)| load < *q) {
                queued = Some((Arc::clone(&link), load));
            }
            if best.as_ref().is_none_or(|(_, b)| load < *b) {
                best = Some((link, load));
            }
        }
        let max = self.shared.max_in_flight;
        let busy = best.as_ref().is_none_or(|(_, load)| load * 4 >= max * 3);
        if busy {
            self.grow();
        }
        let (least, least_load) = best?;
        match queued {
            Some((link, load)) if load <= least_load + join_slack(max) && load < max => Some(link),
            _ => Some(least),
        }
    }

    /// Start one more link supervisor, if a slot is free.
    fn grow(self: &Arc<Self>) {
        if self.closing.load(Ordering::Relaxed) {
            return;
        }
        let Some(slot) = self.slots.iter().position(|s| {
            s.state
                .compare_exchange(SLOT_FREE, SLOT_ACTIVE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            return;
        };
        let handle = tokio::spawn(supervise(self.clone(), slot));
        let mut supervisors = self.supervisors.lock().unwrap_or_else(|p| p.into_inner());
        // Supervisors of closed idle links are done: keep the list bounded.
        supervisors.retain(|h| !h.is_finished());
        supervisors.push(handle);
    }

    /// Close links above `min` that have had nothing in flight for `idle`:
    /// out of selection first, then closed (and signed off) once empty.
    fn retire_idle(&self, idle: Duration) {
        let _one_at_a_time = self.shrinking.lock().unwrap_or_else(|p| p.into_inner());
        let mut active = self
            .slots
            .iter()
            .filter(|s| s.state.load(Ordering::Acquire) == SLOT_ACTIVE)
            .count();
        // Highest slots first, so the low ones stay the long-lived links.
        for (i, slot) in self.slots.iter().enumerate().rev() {
            if active <= self.min || self.closing.load(Ordering::Relaxed) {
                return;
            }
            if slot.state.load(Ordering::Acquire) != SLOT_ACTIVE {
                continue;
            }
            let quiet = slot
                .link
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(|l| l.quiet_for());
            if quiet.is_none_or(|q| q < idle) {
                continue;
            }
            slot.state.store(SLOT_RETIRING, Ordering::Release);
            active -= 1;
            if let Some(link) = self.set_slot(i, None) {
                tracing::info!(bank = %self.shared.name, slot = i, idle_ms = idle.as_millis() as u64, "closing idle bank link");
                link.close(
                    CloseReason::Idle,
                    Instant::now() + self.shared.request_timeout,
                );
                let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
                retiring.retain(|l| l.strong_count() > 0);
                retiring.push(Arc::downgrade(&link));
            }
        }
    }

    /// Put `link` in `slot` (or empty it); returns what was there.
    fn set_slot(&self, slot: usize, link: Option<Arc<Link>>) -> Option<Arc<Link>> {
        let up = link.is_some();
        let old = std::mem::replace(
            &mut *self.slots[slot]
                .link
                .write()
                .unwrap_or_else(|p| p.into_inner()),
            link,
        );
        let gauge = metrics::gauge!(m::POOL_LINKS, "bank" => self.shared.name.clone());
        match (old.is_some(), up) {
            (false, true) => gauge.increment(1.0),
            (true, false) => gauge.decrement(1.0),
            _ => {}
        }
        old
    }
}

/// Look for idle links to close until the pool stops (aborted then).
async fn reap_idle(pool: Arc<BankPool>, idle: Duration) {
    let every = (idle / 4).clamp(IDLE_CHECK_MIN, IDLE_CHECK_MAX);
    let mut shutdown = pool.shutdown.clone();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => pool.retire_idle(idle),
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// Seal `txn`, send it on `link`, check the answer. Nothing leaves if the
/// HSM cannot seal it (`NotSent`); an answer that does not verify, or
/// cannot be verified before the deadline, is an unknown outcome: never
/// approved, reversed by the caller.
async fn authenticated(
    link: &Link,
    auth: &BankAuth,
    txn: &Transaction,
    deadline: Instant,
) -> Result<Transaction, SendError> {
    let sealed = match tokio::time::timeout_at(deadline, auth.seal(txn)).await {
        Ok(Ok(sealed)) => sealed,
        Ok(Err(super::AuthError::Encode)) => {
            return Err(SendError::Rejected(
                "the bank's codec cannot authenticate this transaction",
            ))
        }
        Ok(Err(_)) => return Err(SendError::NotSent("hsm could not MAC or sign the request")),
        Err(_) => {
            return Err(SendError::NotSent(
                "hsm too slow to MAC or sign the request",
            ))
        }
    };
    let answer = link.request(&sealed, deadline).await?;
    match tokio::time::timeout_at(deadline, auth.check(&answer)).await {
        Ok(Ok(())) => Ok(answer),
        Ok(Err(e)) if e.is_forgery() => Err(SendError::OutcomeUnknown(
            "bank answer failed MAC/signature verification",
        )),
        Ok(Err(_)) => Err(SendError::OutcomeUnknown(
            "hsm could not verify the bank answer",
        )),
        Err(_) => Err(SendError::OutcomeUnknown(
            "bank answer not verified before the deadline",
        )),
    }
}

/// Checks late answers before they may settle a reversal (a forged late
/// "approved" must not close one).
#[derive(Debug)]
struct VerifiedLate {
    inner: Arc<dyn LateAnswers>,
    auth: Arc<BankAuth>,
    checks: Arc<tokio::sync::Semaphore>,
}

impl LateAnswers for VerifiedLate {
    fn late_answer(&self, bank: &str, answer: Transaction) {
        let (Ok(permit), Ok(runtime)) = (
            self.checks.clone().try_acquire_owned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            tracing::warn!(bank, "too many late answers being verified: dropped");
            return;
        };
        let (inner, auth, bank) = (self.inner.clone(), self.auth.clone(), bank.to_owned());
        runtime.spawn(async move {
            let _permit = permit;
            match auth.check(&answer).await {
                Ok(()) => inner.late_answer(&bank, answer),
                Err(e) => {
                    tracing::warn!(bank = %bank, reason = %e, "late bank answer not verified: dropped")
                }
            }
        });
    }
}

/// Keep slot `slot` connected until shutdown, or until its link is closed
/// for idleness (then the slot is free again).
async fn supervise(pool: Arc<BankPool>, slot: usize) {
    let bank = pool.shared.clone();
    let mut shutdown = pool.shutdown.clone();
    let mut backoff = Backoff::new(slot as u64);
    let mut attempt = slot;
    let state = &pool.slots[slot].state;
    while !*shutdown.borrow() && state.load(Ordering::Acquire) == SLOT_ACTIVE {
        let endpoint = bank.endpoints[attempt % bank.endpoints.len()].clone();
        attempt = attempt.wrapping_add(1);
        pool.connects.fetch_add(1, Ordering::Relaxed);
        let pool2 = pool.clone();
        let on_ready = |link: Arc<Link>| {
            tracing::info!(bank = %bank.name, slot, endpoint = %link.endpoint, "bank link up");
            pool2.set_slot(slot, Some(link));
            // Checked after the link is in its slot: either this sees the
            // pool closing, or the close finds the link there.
            if pool2.closing.load(Ordering::SeqCst) {
                if let Some(link) = pool2.set_slot(slot, None) {
                    link.close(CloseReason::Shutdown, Instant::now());
                }
            }
        };
        let end = match tokio::time::timeout(bank.connect_timeout, dial(&bank, &endpoint)).await {
            Ok(Ok(Stream::Tls(s))) => {
                Some(run_link(bank.clone(), endpoint.clone(), s, on_ready).await)
            }
            Ok(Ok(Stream::Plain(s))) => {
                Some(run_link(bank.clone(), endpoint.clone(), s, on_ready).await)
            }
            Ok(Err(e)) => {
                tracing::warn!(bank = %bank.name, slot, endpoint = %endpoint, error = %e, "bank connect failed");
                None
            }
            Err(_) => {
                tracing::warn!(bank = %bank.name, slot, endpoint = %endpoint, "bank connect timed out");
                None
            }
        };
        let was_up = pool.slots[slot]
            .link
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        pool.set_slot(slot, None);
        if let Some(LinkEnd::Retired(reason)) = end {
            tracing::info!(bank = %bank.name, slot, endpoint = %endpoint, reason = reason.label(), "bank link closed");
            break;
        }
        let result = match end {
            None => "connect_failed",
            Some(LinkEnd::SignOnFailed) => "sign_on_failed",
            Some(LinkEnd::AuthFailed) => "auth_failed",
            Some(_) => "ended",
        };
        metrics::counter!(m::RECONNECTS, "bank" => bank.name.clone(), "result" => result)
            .increment(1);
        if let Some(end) = end {
            tracing::warn!(bank = %bank.name, slot, endpoint = %endpoint, reason = ?end, "bank link down");
        }
        if was_up {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
    state.store(SLOT_FREE, Ordering::Release);
}

enum Stream {
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Plain(TcpStream),
}

async fn dial(bank: &BankShared, endpoint: &str) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(endpoint).await?;
    tcp.set_nodelay(true)?;
    match &bank.tls {
        Some(t) => {
            let s = t.connector.connect(t.name.clone(), tcp).await?;
            Ok(Stream::Tls(Box::new(s)))
        }
        None => Ok(Stream::Plain(tcp)),
    }
}

/// Exponential backoff with jitter: each delay is drawn in `cap/2..=cap`.
#[derive(Debug)]
struct Backoff {
    cap: Duration,
    rng: u64,
}

impl Backoff {
    fn new(seed: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        Backoff {
            cap: BACKOFF_START,
            rng: nanos ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        }
    }

    fn reset(&mut self) {
        self.cap = BACKOFF_START;
    }

    fn next_delay(&mut self) -> Duration {
        // SplitMix64 step: good enough to spread reconnects apart.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let cap_ms = self.cap.as_millis() as u64;
        let delay = Duration::from_millis(cap_ms / 2 + z % (cap_ms / 2 + 1));
        self.cap = (self.cap * 2).min(BACKOFF_MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(7);
        let mut last_cap = Duration::ZERO;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= BACKOFF_MAX);
            last_cap = b.cap;
        }
        assert_eq!(last_cap, BACKOFF_MAX);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_START);
    }
}
