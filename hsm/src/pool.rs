//! The bounded worker pool shared by both backends (see the crate doc).
//!
//! A backend provides an [`EngineFactory`]; each worker thread owns one
//! [`Engine`] (a logged-in PKCS#11 session, or a handle to the software key
//! store). Key versions, MAC comparison, timeouts, session recovery and
//! metrics live here, once, so both backends behave the same.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::keyring::{write_versioned_label, Accepted, KeyClass, KeyRing, KeyRingView, Lookup};
use crate::metrics::WorkerMetrics;
use crate::{metrics, HsmError, KeyRef, Mechanism, Operation};

/// First wait before reopening a lost session.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest wait between reopen attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Polls of an empty queue before a worker parks. Requests often arrive a
/// few microseconds apart (a caller woken by the previous reply resubmits),
/// and catching them without a futex sleep/wake pair saves a context switch
/// per request; bounded so an idle worker parks after a few microseconds.
const SPIN_BEFORE_PARK: u32 = 64;
/// Most finished replies a worker holds back to send together.
///
/// Sending a reply wakes the caller's thread, and when that thread is parked
/// the wake (futex + an inter-processor interrupt to an idle CPU) costs the
/// worker about 5 us on a 2-vCPU KVM guest: 15% of an HMAC on SoftHSM2, paid
/// on the thread that owns the session. Replies sent back to back share one
/// wake (the caller is still running when the second arrives). So while more
/// requests are queued behind it, a worker holds finished replies, within
/// these bounds, and sends them together: at most 32, fewer when that
/// would keep the oldest past [`REPLY_HOLD_MAX`] (about 28 HMACs, 4
/// ECDSA signatures).
const MAX_HELD_REPLIES: usize = 32;
/// Longest a finished reply is held, counting the next operation (predicted
/// from the last one): a reply is never held for an operation slower than
/// this (RSA), and latency grows by at most this under backlog only.
const REPLY_HOLD_MAX: Duration = Duration::from_micros(200);
/// Replies are held only while at least this many requests are still queued,
/// so that when they go out the worker still has work for the time callers
/// take to submit their next requests: holding must never idle the worker.
const HOLD_WHILE_QUEUED: usize = 2;
/// ... and while the queued work would take at least this long: a caller
/// woken by the replies takes that long to come back with more (a wake-up
/// of a parked thread on another vCPU: 20-45 us on this project's VM,
/// `fps-benches --bin wake-latency`), and the worker must not run dry
/// meanwhile.
const WAKE_COVER: Duration = Duration::from_micros(50);
const _: () = assert!(MAX_HELD_REPLIES >= 1 && HOLD_WHILE_QUEUED >= 1);

/// Whether `queued` requests of about `op` each keep a worker busy while
/// the caller it would wake now comes back with more ([`WAKE_COVER`]).
fn queue_covers_a_wake(queued: usize, op: Duration) -> bool {
    queued >= HOLD_WHILE_QUEUED
        && op.saturating_mul(u32::try_from(queued).unwrap_or(u32::MAX)) >= WAKE_COVER
}

/// One worker's handle on the key store. Calls may block.
pub(crate) trait Engine: Send {
    /// Versions of `label` present as `class` objects.
    fn versions(&mut self, label: &str, class: KeyClass) -> Result<Vec<u32>, HsmError>;
    /// Signs with the private key `versioned` (full label).
    fn sign(
        &mut self,
        versioned: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError>;
    /// `Ok(true)` if `signature` verifies under the public key `versioned`.
    fn verify(
        &mut self,
        versioned: &str,
        mechanism: Mechanism,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, HsmError>;
    /// The MAC of `message` under the secret key `versioned`.
    fn mac(
        &mut self,
        versioned: &str,
        mechanism: Mechanism,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError>;
}

/// Opens engines; called at start and whenever a session must be reopened.
pub(crate) trait EngineFactory: Send + Sync + 'static {
    /// Opens one engine for worker `worker` (0-based; a worker reopens with
    /// its own index, so a backend may give each worker its own resources,
    /// like a module instance). For PKCS#11: open a session and log in.
    fn open(&self, worker: usize) -> Result<Box<dyn Engine>, HsmError>;
}

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Job {
    /// A crypto operation.
    Crypto(Operation),
    /// [`Operation::VerifyMac`] of a truncated tag: its bytes must equal
    /// the leftmost bytes of the MAC, and there must be at least
    /// [`MIN_TRUNCATED_MAC_BYTES`] of them.
    VerifyMacLeftmost,
    /// Re-scan the key's versions as `class` and report them.
    Scan(KeyClass),
}

impl Job {
    /// The label of the job in metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Job::Crypto(op) => op.as_str(),
            Job::VerifyMacLeftmost => Operation::VerifyMac.as_str(),
            Job::Scan(_) => "scan",
        }
    }
}

/// Shortest truncated MAC [`Job::VerifyMacLeftmost`] accepts: 8 bytes, the
/// MAC field of ISO 8583 (F64/F128) and ISO 9797-1, and the least NIST SP
/// 800-38B allows for CMAC without a special risk analysis.
pub const MIN_TRUNCATED_MAC_BYTES: usize = 8;

/// What a worker answers.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A MAC or signature.
    Bytes(Vec<u8>),
    /// A verification succeeded.
    Verified,
    /// A scan's result.
    Versions(Accepted),
}

/// What one operation needs, wherever it runs (a worker, or the caller's
/// own thread through an inline session, see `inline.rs`).
#[derive(Debug)]
pub(crate) struct Work {
    pub job: Job,
    pub key: KeyRef,
    pub message: Bytes,
    /// The signature or tag to check (empty otherwise).
    pub expected: Bytes,
}

/// One queued request.
#[derive(Debug)]
pub(crate) struct Request {
    pub work: Work,
    pub enqueued_at: Instant,
    pub reply: oneshot::Sender<Result<Reply, HsmError>>,
}

/// State every worker reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub keyring: KeyRing,
    pub clock: Arc<dyn Clock>,
    pub request_timeout: Duration,
    /// Where keys live, for error messages (`token fps-switch`).
    pub store_name: String,
}

/// The worker threads and the queue feeding them.
pub(crate) struct Pool {
    queue: Option<Sender<Request>>,
    workers: Vec<JoinHandle<()>>,
    queue_bound: usize,
    queue_depth: ::metrics::Gauge,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers.len())
            .field("queue_bound", &self.queue_bound)
            .field("queued", &self.queue_len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Opens `threads` engines on the calling thread (so start-up errors such
    /// as a wrong PIN are returned here), then starts one worker per engine.
    pub fn start(
        factory: Arc<dyn EngineFactory>,
        shared: Arc<Shared>,
        threads: usize,
        queue_bound: usize,
    ) -> Result<Pool, HsmError> {
        let mut engines = Vec::with_capacity(threads);
        for index in 0..threads {
            engines.push(factory.open(index)?);
        }
        let (queue, rx) = crossbeam_channel::bounded(queue_bound);
        let mut workers = Vec::with_capacity(threads);
        for (index, engine) in engines.into_iter().enumerate() {
            metrics::session_opened();
            let worker = Worker {
                index,
                engine: Some(engine),
                rx: rx.clone(),
                factory: Arc::clone(&factory),
                shared: Arc::clone(&shared),
                backoff: Backoff::new(),
                last_error: String::new(),
                scratch: Scratch::default(),
                held: Vec::with_capacity(MAX_HELD_REPLIES),
                held_since: None,
                last_ready: None,
                last_op: Duration::ZERO,
                metrics: WorkerMetrics::new(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("fps-hsm-{index}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(e) => {
                    // Workers already started exit when `queue` drops here.
                    return Err(HsmError::Unavailable {
                        reason: format!("cannot start hsm worker thread: {e}"),
                    });
                }
            }
        }
        Ok(Pool {
            queue: Some(queue),
            workers,
            queue_bound,
            queue_depth: metrics::queue_depth_gauge(),
        })
    }

    /// Queues a request, or fails at once with `Busy` when the queue is full.
    pub fn submit(&self, request: Request) -> Result<(), HsmError> {
        let Some(queue) = &self.queue else {
            return Err(HsmError::ShutDown);
        };
        match queue.try_send(request) {
            Ok(()) => {
                self.queue_depth.set(queue.len() as f64);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(HsmError::Busy {
                queue_bound: self.queue_bound,
            }),
            Err(TrySendError::Disconnected(_)) => Err(HsmError::ShutDown),
        }
    }

    /// Requests waiting for a worker now.
    pub fn queue_len(&self) -> usize {
        self.queue.as_ref().map_or(0, Sender::len)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue makes every worker finish its current request,
        // answer nothing more, close its session and exit.
        self.queue = None;
        for worker in self.workers.drain(..) {
            // A worker that panicked already dropped its requests' senders,
            // so their callers saw ShutDown; nothing more to do here.
            let _ = worker.join();
        }
    }
}

struct Worker {
    /// This worker's index: it reopens its engine with it.
    index: usize,
    engine: Option<Box<dyn Engine>>,
    rx: Receiver<Request>,
    factory: Arc<dyn EngineFactory>,
    shared: Arc<Shared>,
    backoff: Backoff,
    last_error: String,
    /// State `execute` reuses from one request to the next.
    scratch: Scratch,
    /// Finished replies not sent yet (see [`MAX_HELD_REPLIES`]); capacity
    /// `MAX_HELD_REPLIES`, never grown.
    held: Vec<(ReplyTo, Result<Reply, HsmError>)>,
    /// When the oldest reply in `held` was ready.
    held_since: Option<Instant>,
    /// When the newest reply in `held` was ready (just now, when `may_hold`
    /// asks: it saves a clock read).
    last_ready: Option<Instant>,
    /// How long the last HSM operation took: the prediction for the next.
    last_op: Duration,
    metrics: WorkerMetrics,
}

/// What one worker keeps between requests so the hot path neither locks
/// shared state nor allocates.
#[derive(Default)]
pub(crate) struct Scratch {
    /// The key versions of the keys this worker used.
    keys: KeyRingView,
    /// The versioned label of the last key used.
    label: VersionedLabel,
}

/// A reused buffer holding `<base>-v<version>` (`mac-hmac-v2`), rewritten
/// only when the key or the version changes.
#[derive(Default)]
struct VersionedLabel {
    text: String,
    base_len: usize,
    /// 0 (never a valid version) until the first `set`.
    version: u32,
}

impl VersionedLabel {
    fn set(&mut self, base: &str, version: u32) -> &str {
        let same = self.version == version
            && self.base_len == base.len()
            && self.text.get(..self.base_len) == Some(base);
        if !same {
            write_versioned_label(&mut self.text, base, version);
            self.base_len = base.len();
            self.version = version;
        }
        &self.text
    }
}

type ReplyTo = oneshot::Sender<Result<Reply, HsmError>>;

impl Worker {
    fn run(mut self) {
        loop {
            let request = if self.engine.is_some() {
                match self.next_request() {
                    Ok(r) => Some(r),
                    Err(_) => break,
                }
            } else {
                // Session down: wake up when the next reopen is due even
                // without traffic, so capacity comes back on its own.
                match self.rx.recv_timeout(self.backoff.until_due(Instant::now())) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            self.metrics.queue_depth(self.rx.len());
            if self.engine.is_none() && self.backoff.is_due(Instant::now()) {
                self.send_held();
                self.reopen();
            }
            if let Some(request) = request {
                self.serve(request);
            }
            if self.engine.is_none() || !self.may_hold() {
                self.send_held();
            }
        }
        self.send_held();
        if self.engine.take().is_some() {
            metrics::session_closed();
        }
    }

    /// The next request: at once if one is queued; otherwise, after sending
    /// the held replies (no one may wait on an idle worker), a bounded spin
    /// on the queue, then a blocking wait.
    fn next_request(&mut self) -> Result<Request, crossbeam_channel::RecvError> {
        match self.rx.try_recv() {
            Ok(r) => return Ok(r),
            Err(crossbeam_channel::TryRecvError::Empty) => self.send_held(),
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                return Err(crossbeam_channel::RecvError)
            }
        }
        for _ in 0..SPIN_BEFORE_PARK {
            match self.rx.try_recv() {
                Ok(r) => return Ok(r),
                Err(crossbeam_channel::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return Err(crossbeam_channel::RecvError)
                }
            }
        }
        self.rx.recv()
    }

    fn serve(&mut self, request: Request) {
        // One clock read for the queue wait and the operation's start.
        let started = Instant::now();
        let waited = started.saturating_duration_since(request.enqueued_at);
        let op_label = request.work.job.label();
        self.metrics.queue_wait(waited);
        if waited > self.shared.request_timeout {
            let err = HsmError::Timeout {
                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            };
            metrics::error(&err, op_label);
            self.hold(request.reply, Err(err), started);
            return;
        }
        let mut result = self.attempt(&request);
        if matches!(result, Err(HsmError::Unavailable { .. })) && self.engine.is_some() {
            // The session was lost (closed handle, device error): reopen at
            // once and retry; every operation here is idempotent. Reopening
            // may be slow: answer the held replies first.
            self.send_held();
            self.drop_engine(&result);
            metrics::session_reopen();
            self.reopen();
            if self.engine.is_some() {
                result = self.attempt(&request);
                if matches!(result, Err(HsmError::Unavailable { .. })) {
                    self.drop_engine(&result);
                }
            }
        }
        let finished = Instant::now();
        let took = finished.saturating_duration_since(started);
        self.last_op = took;
        self.metrics
            .outcome(request.work.key.mechanism(), op_label, took, &result);
        self.hold(request.reply, result, finished);
    }

    /// Keeps a reply that was ready at `ready` to send with the next ones
    /// (see [`MAX_HELD_REPLIES`]); the caller of `serve` decides when they go.
    fn hold(&mut self, reply: ReplyTo, result: Result<Reply, HsmError>, ready: Instant) {
        if self.held.len() == MAX_HELD_REPLIES {
            self.send_held();
        }
        if self.held.is_empty() {
            self.held_since = Some(ready);
        }
        self.last_ready = Some(ready);
        self.held.push((reply, result));
    }

    /// Whether the held replies may wait for one more operation: room for
    /// another, enough queued work to keep this worker busy after they go,
    /// and the oldest would still be answered within `REPLY_HOLD_MAX`.
    fn may_hold(&self) -> bool {
        let (Some(since), Some(now)) = (self.held_since, self.last_ready) else {
            return true;
        };
        self.held.len() < MAX_HELD_REPLIES
            && queue_covers_a_wake(self.rx.len(), self.last_op)
            && now.saturating_duration_since(since) + self.last_op <= REPLY_HOLD_MAX
    }

    /// Sends every held reply, back to back (one wake of a parked caller
    /// thread serves them all), in the order the requests were served.
    fn send_held(&mut self) {
        for (reply, result) in self.held.drain(..) {
            // The caller may have given up (its own deadline): nothing to do.
            let _ = reply.send(result);
        }
        self.held_since = None;
        self.last_ready = None;
    }

    fn attempt(&mut self, request: &Request) -> Result<Reply, HsmError> {
        let Some(engine) = self.engine.as_mut() else {
            return Err(HsmError::Unavailable {
                reason: format!(
                    "hsm session down, reopening with backoff (last error: {})",
                    self.last_error
                ),
            });
        };
        execute(
            engine.as_mut(),
            &self.shared,
            &request.work,
            &mut self.scratch,
        )
    }

    fn drop_engine(&mut self, cause: &Result<Reply, HsmError>) {
        if let Err(e) = cause {
            self.last_error = e.to_string();
        }
        if self.engine.take().is_some() {
            metrics::session_closed();
            tracing::warn!(error = %self.last_error, "hsm session lost; reopening");
        }
    }

    fn reopen(&mut self) {
        match self.factory.open(self.index) {
            Ok(engine) => {
                self.engine = Some(engine);
                self.backoff.reset();
                metrics::session_opened();
                tracing::info!("hsm session reopened");
            }
            Err(e) => {
                self.last_error = e.to_string();
                let wait = self.backoff.fail(Instant::now());
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "hsm session reopen failed");
            }
        }
    }
}

/// Runs one operation on an engine: version lookup, then the operation.
pub(crate) fn execute(
    engine: &mut dyn Engine,
    shared: &Shared,
    work: &Work,
    scratch: &mut Scratch,
) -> Result<Reply, HsmError> {
    let key = &work.key;
    let mechanism = key.mechanism();
    let (op, leftmost) = match work.job {
        Job::Scan(class) => {
            let now = shared.clock.now();
            return scan(engine, shared, key, class, now).map(Reply::Versions);
        }
        Job::Crypto(op) => (op, false),
        Job::VerifyMacLeftmost => (Operation::VerifyMac, true),
    };
    if !mechanism.supports(op) {
        return Err(HsmError::UnsupportedMechanism {
            mechanism,
            reason: format!(
                "key `{}` is a {} key; {} needs a {} mechanism",
                key.label(),
                if mechanism.is_mac() {
                    "MAC"
                } else {
                    "signature"
                },
                op,
                if op == Operation::Mac || op == Operation::VerifyMac {
                    "MAC"
                } else {
                    "signature"
                }
            ),
        });
    }
    let class = class_for(op);
    let now = shared.clock.now();
    let accepted = match shared
        .keyring
        .lookup_in(&mut scratch.keys, key.label(), class, now)
    {
        Lookup::Fresh(accepted) => accepted,
        Lookup::NeedsScan => scan(engine, shared, key, class, now)?,
    };
    match op {
        Operation::Sign => {
            let label = scratch.label.set(key.label(), accepted.current);
            engine
                .sign(label, mechanism, &work.message)
                .map(Reply::Bytes)
        }
        Operation::Mac => {
            let label = scratch.label.set(key.label(), accepted.current);
            engine
                .mac(label, mechanism, &work.message)
                .map(Reply::Bytes)
        }
        Operation::VerifyMac => {
            for version in accepted.verify_order() {
                let label = scratch.label.set(key.label(), version);
                let tag = match engine.mac(label, mechanism, &work.message) {
                    Ok(tag) => tag,
                    // A previous version deleted before the overlap ended.
                    Err(HsmError::KeyNotFound { .. }) if version != accepted.current => continue,
                    Err(e) => return Err(e),
                };
                let expected = &work.expected[..];
                let compared = if leftmost {
                    // The length is public (it is the field's size), so
                    // refusing a short tag early leaks nothing.
                    if expected.len() < MIN_TRUNCATED_MAC_BYTES {
                        return Err(HsmError::MacMismatch);
                    }
                    tag.get(..expected.len())
                } else {
                    Some(tag.as_slice())
                };
                if compared.is_some_and(|t| bool::from(t.ct_eq(expected))) {
                    return Ok(Reply::Verified);
                }
            }
            Err(HsmError::MacMismatch)
        }
        Operation::Verify => {
            for version in accepted.verify_order() {
                let label = scratch.label.set(key.label(), version);
                match engine.verify(label, mechanism, &work.message, &work.expected) {
                    Ok(true) => return Ok(Reply::Verified),
                    Ok(false) => {}
                    Err(HsmError::KeyNotFound { .. }) if version != accepted.current => {}
                    Err(e) => return Err(e),
                }
            }
            Err(HsmError::SignatureInvalid)
        }
    }
}

fn scan(
    engine: &mut dyn Engine,
    shared: &Shared,
    key: &KeyRef,
    class: KeyClass,
    now: Instant,
) -> Result<Accepted, HsmError> {
    let versions = engine.versions(key.label(), class)?;
    shared
        .keyring
        .observe(key.label(), class, &versions, now)
        .ok_or_else(|| HsmError::KeyNotFound {
            label: key.label().to_owned(),
            class: class.as_str(),
            store: shared.store_name.clone(),
        })
}

/// The object class an operation uses.
pub(crate) fn class_for(op: Operation) -> KeyClass {
    match op {
        Operation::Sign => KeyClass::Private,
        Operation::Verify => KeyClass::Public,
        Operation::Mac | Operation::VerifyMac => KeyClass::Secret,
    }
}

/// Exponential backoff between session reopen attempts.
#[derive(Debug)]
pub(crate) struct Backoff {
    next_wait: Duration,
    due_at: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next_wait: BACKOFF_INITIAL,
            due_at: None,
        }
    }

    fn reset(&mut self) {
        *self = Backoff::new();
    }

    /// Records a failed attempt; returns the wait before the next one.
    pub(crate) fn fail(&mut self, now: Instant) -> Duration {
        let wait = self.next_wait;
        self.due_at = Some(now + wait);
        self.next_wait = (self.next_wait * 2).min(BACKOFF_MAX);
        wait
    }

    fn is_due(&self, now: Instant) -> bool {
        self.due_at.is_none_or(|due| now >= due)
    }

    fn until_due(&self, now: Instant) -> Duration {
        self.due_at
            .map_or(Duration::ZERO, |due| due.saturating_duration_since(now))
            .max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::testing::{fake_shared, FakeFactory};

    fn pool(factory: Arc<FakeFactory>) -> Pool {
        pool_with(factory, 1, 4)
    }

    fn pool_with(factory: Arc<FakeFactory>, threads: usize, queue_bound: usize) -> Pool {
        Pool::start(factory, fake_shared(), threads, queue_bound).unwrap()
    }

    fn submit_mac(
        pool: &Pool,
        message: &'static [u8],
    ) -> Result<oneshot::Receiver<Result<Reply, HsmError>>, HsmError> {
        let (tx, rx) = oneshot::channel();
        pool.submit(Request {
            work: Work {
                job: Job::Crypto(Operation::Mac),
                key: KeyRef::new("k", Mechanism::HmacSha256).unwrap(),
                message: Bytes::from_static(message),
                expected: Bytes::new(),
            },
            enqueued_at: Instant::now(),
            reply: tx,
        })?;
        Ok(rx)
    }

    fn mac(pool: &Pool, message: &'static [u8]) -> Result<Reply, HsmError> {
        submit_mac(pool, message)?
            .blocking_recv()
            .map_err(|_| HsmError::ShutDown)?
    }

    #[test]
    fn lost_session_is_reopened_and_retried_transparently() {
        let factory = FakeFactory::new(1, 0);
        let pool = pool(Arc::clone(&factory));
        assert!(matches!(mac(&pool, b"ab"), Ok(Reply::Bytes(v)) if v == b"ba"));
        assert_eq!(factory.opens.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn replies_are_held_only_while_the_queue_covers_a_wake() {
        let us = Duration::from_micros;
        // An HMAC on SoftHSM2 (7 us): 8 queued cover a 50 us wake-up, 4 not.
        assert!(queue_covers_a_wake(8, us(7)));
        assert!(!queue_covers_a_wake(4, us(7)));
        // ECDSA (45 us): two queued are enough; one never is.
        assert!(queue_covers_a_wake(2, us(45)));
        assert!(!queue_covers_a_wake(1, us(500)));
        assert!(!queue_covers_a_wake(0, us(45)));
    }

    /// Requests queued behind a busy worker are answered together (replies
    /// held, then sent back to back): each caller still gets its own result,
    /// a failing request fails alone, and a session lost in the middle of
    /// the run is reopened without losing the replies already held.
    #[test]
    fn replies_sent_together_each_reach_their_own_caller() {
        const MESSAGES: [&[u8]; 10] = [
            b"m0", b"m1", b"m2", b"bad", b"m4", b"m5", b"m6", b"m7", b"m8", b"m9",
        ];
        let factory = FakeFactory::new(0, 0);
        let pool = pool_with(Arc::clone(&factory), 1, 16);
        let gate = submit_mac(&pool, b"gate").unwrap();
        let queued: Vec<_> = MESSAGES
            .iter()
            .map(|m| submit_mac(&pool, m).unwrap())
            .collect();
        // The gate request is past its failure check (the worker took it
        // before any other): the next operation after it (m0) loses the
        // session, which is reopened and m0 retried.
        while pool.queue_len() != MESSAGES.len() {
            std::thread::yield_now();
        }
        factory.fail_next.store(1, Ordering::SeqCst);
        factory.gate.open();
        assert!(matches!(gate.blocking_recv(), Ok(Ok(Reply::Bytes(v))) if v == b"etag"));
        for (message, rx) in MESSAGES.iter().zip(queued) {
            match rx.blocking_recv().expect("every request is answered") {
                Ok(Reply::Bytes(v)) => {
                    let reversed: Vec<u8> = message.iter().rev().copied().collect();
                    assert_eq!(v, reversed, "reply for {message:?}");
                }
                Err(HsmError::Pkcs11 { rv, .. }) => {
                    assert_eq!(*message, b"bad", "only `bad` fails");
                    assert_eq!(rv, "CKR_DATA_INVALID");
                }
                other => panic!("{message:?} answered {other:?}"),
            }
        }
        assert_eq!(factory.opens.load(Ordering::SeqCst), 2);
        assert_eq!(pool.queue_len(), 0);
    }

    /// With two workers and more requests than the queue holds, every
    /// accepted request is answered exactly once with its own result.
    #[test]
    fn two_workers_answer_every_accepted_request_once() {
        const MESSAGES: [&[u8]; 6] = [b"a0", b"a1", b"a2", b"bad", b"a4", b"a5"];
        let factory = FakeFactory::new(0, 0);
        let pool = pool_with(factory, 2, 8);
        let mut pending = std::collections::VecDeque::new();
        let (mut answered, mut busy) = (0, 0);
        for round in 0..2_000 {
            let message = MESSAGES[round % MESSAGES.len()];
            match submit_mac(&pool, message) {
                Ok(rx) => pending.push_back((message, rx)),
                Err(HsmError::Busy { queue_bound: 8 }) => busy += 1,
                Err(e) => panic!("unexpected {e}"),
            }
            // Keep up to 24 in flight (more than queue + workers).
            while pending.len() > 24 || (round == 1_999 && !pending.is_empty()) {
                let (message, rx) = pending.pop_front().unwrap();
                let got = rx.blocking_recv().expect("answered");
                if message == b"bad" {
                    assert!(matches!(got, Err(HsmError::Pkcs11 { .. })), "{got:?}");
                } else {
                    let reversed: Vec<u8> = message.iter().rev().copied().collect();
                    assert!(matches!(got, Ok(Reply::Bytes(v)) if v == reversed));
                }
                answered += 1;
            }
        }
        assert_eq!(answered + busy, 2_000);
    }

    /// A worker reopens its session through the factory with its own index
    /// (with `module_instances = "per_session"`, in its own module instance).
    #[test]
    fn a_lost_session_is_reopened_for_the_same_worker() {
        let factory = FakeFactory::new(0, 0);
        let pool = pool_with(Arc::clone(&factory), 2, 8);
        assert_eq!(*factory.opened_for.lock().unwrap(), [0, 1]);
        for round in 0..4 {
            factory.fail_next.store(1, Ordering::SeqCst);
            assert!(matches!(mac(&pool, b"ab"), Ok(Reply::Bytes(v)) if v == b"ba"));
            let failed = factory.failed_by.lock().unwrap().clone();
            let opened = factory.opened_for.lock().unwrap().clone();
            assert_eq!(failed.len(), round + 1);
            assert_eq!(
                opened[2..],
                failed[..],
                "reopened for the worker that lost it"
            );
        }
    }

    #[test]
    fn token_down_gives_clear_error_then_recovers() {
        let factory = FakeFactory::new(1, 2);
        // The first open (at start) succeeds only because open_failures is
        // consumed after: make start succeed by opening before arming.
        factory.open_failures.store(0, Ordering::SeqCst);
        let pool = pool(Arc::clone(&factory));
        factory.open_failures.store(2, Ordering::SeqCst);
        let err = mac(&pool, b"ab").unwrap_err();
        assert!(matches!(err, HsmError::Unavailable { .. }), "{err}");
        // While down, requests are answered at once with Unavailable.
        let err = mac(&pool, b"ab").unwrap_err();
        assert!(err.to_string().contains("fake token removed"), "{err}");
        // Background retries with backoff bring the session back.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match mac(&pool, b"xy") {
                Ok(Reply::Bytes(v)) => {
                    assert_eq!(v, b"yx");
                    break;
                }
                Err(HsmError::Unavailable { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn backoff_doubles_up_to_max() {
        let mut b = Backoff::new();
        let now = Instant::now();
        assert!(b.is_due(now));
        assert_eq!(b.fail(now), BACKOFF_INITIAL);
        assert!(!b.is_due(now));
        assert_eq!(b.fail(now), BACKOFF_INITIAL * 2);
        for _ in 0..20 {
            b.fail(now);
        }
        assert_eq!(b.fail(now), BACKOFF_MAX);
        b.reset();
        assert!(b.is_due(now));
    }
}
