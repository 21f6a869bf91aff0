//! The load run: each connection (plaintext or TLS) has its own share of
//! the schedule, a writer that sends each request when it is due (open
//! loop: at its intended time; closed loop: when a slot is free) and a
//! reader that matches answers on (MTI class, F11, F37, F41), checks them
//! and records latency. Every request must get exactly one correct answer;
//! what does not is counted as an error by kind.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::pacer::Pacer;
use crate::report::{Progress, Recorder, Report};
use crate::schedule::{ClosedLoop, Destination, Mix, OpenLoop, Outcome};
use anyhow::{bail, Context};
use bytes::BytesMut;
use fps_codecs::calendar::civil_from_days;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::*;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Most requests one connection keeps waiting for an answer.
pub const MAX_PENDING_PER_CONNECTION: usize = 100_000;

/// Most requests one connection sends in a run: RRNs and idempotency keys
/// are unique below it (duplicates use the upper half of the RRN space).
pub const MAX_REQUESTS_PER_CONNECTION: u64 = 1_000_000_000;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The switch's upstream listener.
    pub target: SocketAddr,
    /// TLS to the target; `None` = plaintext.
    pub tls: Option<TlsTarget>,
    /// Open (rate) or closed (concurrency) loop.
    pub mode: Mode,
    /// Length of the run.
    pub duration: Duration,
    /// Upstream connections.
    pub connections: u64,
    /// Destination banks (F100), used round-robin.
    pub banks: Vec<BankCode>,
    /// Proxies, declines and duplicates.
    pub mix: Mix,
    /// Proxy -> bank, to report proxied requests by bank (else `proxy`).
    pub proxy_directory: HashMap<String, BankCode>,
    /// How long to wait for the last answers.
    pub drain: Duration,
    /// Print a progress line on stderr once per second.
    pub progress: bool,
}

/// How requests are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A constant arrival rate (requests per second over all connections).
    Open {
        /// Requests per second.
        rate: u64,
    },
    /// A fixed number of outstanding requests over all connections.
    Closed {
        /// Outstanding requests.
        concurrency: u64,
    },
}

/// TLS to the target.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// Client config (trusted CA, optional client certificate).
    pub config: Arc<ClientConfig>,
    /// Name the server's certificate must carry (SNI).
    pub server_name: ServerName<'static>,
}

impl TlsTarget {
    /// TLS to `target` trusting `ca`, with an optional client certificate
    /// and key, checking the server's name `server_name` (default: the
    /// target's IP). The options are named as on the command line.
    pub fn from_files(
        target: SocketAddr,
        ca: &Path,
        cert_key: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> anyhow::Result<TlsTarget> {
        let config = crate::tls::client_config(ca, cert_key)?;
        let name = server_name.map_or_else(|| target.ip().to_string(), str::to_owned);
        Ok(TlsTarget {
            config,
            server_name: crate::tls::server_name(&name)?,
        })
    }
}

/// Parse the destination bank list.
pub fn parse_banks(banks: &[String]) -> anyhow::Result<Vec<BankCode>> {
    if banks.is_empty() {
        bail!("--banks: at least one bank code is needed");
    }
    banks
        .iter()
        .map(|b| BankCode::parse(b.as_bytes()).map_err(|e| anyhow::anyhow!("--banks: {e}")))
        .collect()
}

/// Read a proxy directory (`proxy,bank_code[,name]` lines, `#` comments and
/// a `proxy,...` header skipped), as the switch does.
pub fn load_proxy_directory(path: &Path) -> anyhow::Result<HashMap<String, BankCode>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--proxy-directory: reading {}", path.display()))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("proxy,") {
            continue;
        }
        let mut cols = line.split(',');
        let (Some(proxy), Some(bank)) = (cols.next(), cols.next()) else {
            bail!(
                "--proxy-directory: {}:{}: not proxy,bank_code",
                path.display(),
                i + 1
            );
        };
        let bank = BankCode::parse(bank.trim().as_bytes())
            .map_err(|e| anyhow::anyhow!("--proxy-directory: {}:{}: {e}", path.display(), i + 1))?;
        out.insert(proxy.trim().to_owned(), bank);
    }
    Ok(out)
}

/// Run the plan and return the merged report.
pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    if plan.banks.is_empty() {
        bail!("--banks: at least one bank code is needed");
    }
    plan.mix.validate().map_err(anyhow::Error::msg)?;
    let connections = plan.connections.max(1);
    let run_id = run_id();
    let progress = Arc::new(Progress::new());
    let (offered_tps, concurrency) = match plan.mode {
        Mode::Open { rate } => (rate as f64, None),
        Mode::Closed { concurrency } => (0.0, Some(concurrency)),
    };
    // Connect them all before the clock starts: a refused connection is a
    // set-up error, not a load result.
    let mut streams = Vec::new();
    for _ in 0..connections {
        streams.push(connect(&plan).await?);
    }
    let start = Instant::now();
    let plan = Arc::new(plan);
    let mut tasks = Vec::new();
    for (conn, io) in (0..connections).zip(streams) {
        let share = share_of(plan.mode, connections, conn);
        // Open loop: spread the connections' first sends over one interval
        // so they do not all fire together.
        let offset = match plan.mode {
            Mode::Open { rate } if rate > 0 => Duration::from_nanos(1_000_000_000 / rate * conn),
            _ => Duration::ZERO,
        };
        let c = Conn {
            plan: plan.clone(),
            conn,
            share,
            start: start + offset,
            run_id: run_id.clone(),
            progress: progress.clone(),
        };
        tasks.push(tokio::spawn(c.run(io)));
    }
    let ticker = plan.progress.then(|| {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut last = Instant::now();
            let mut tick =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                tick.tick().await;
                let now = Instant::now();
                eprintln!("{}", progress.tick(now - start, now - last));
                last = now;
            }
        })
    });
    let mut total = Recorder::new();
    let mut offered = 0;
    let mut last_answer = start;
    for t in tasks {
        let done = t.await.context("load task")??;
        total.merge(&done.recorder);
        offered += done.sent;
        last_answer = last_answer.max(done.last_answer);
    }
    if let Some(t) = ticker {
        t.abort();
    }
    // Achieved rate over the run or up to the last answer, whichever is
    // longer: waiting for answers that never come does not dilute it.
    let elapsed = (last_answer - start).max(plan.duration);
    let offered_tps = match plan.mode {
        Mode::Open { .. } => offered_tps,
        Mode::Closed { .. } => offered as f64 / plan.duration.as_secs_f64().max(1e-9),
    };
    let mut report = total.report(offered, offered_tps, elapsed);
    report.mode = match plan.mode {
        Mode::Open { .. } => "open",
        Mode::Closed { .. } => "closed",
    }
    .to_owned();
    report.connections = connections;
    report.concurrency = concurrency;
    Ok(report)
}

/// A connection's share of the rate or the concurrency (the remainder goes
/// to the first connections).
fn share_of(mode: Mode, connections: u64, conn: u64) -> u64 {
    let total = match mode {
        Mode::Open { rate } => rate,
        Mode::Closed { concurrency } => concurrency,
    };
    total / connections + u64::from(conn < total % connections)
}

/// A byte stream to the target, plaintext or TLS.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

async fn connect(plan: &Plan) -> anyhow::Result<Box<dyn Stream>> {
    connect_to(plan.target, plan.tls.as_ref(), HANDSHAKE_TIMEOUT).await
}

/// A stream to `target`, TLS when `tls` is set (the handshake bounded by
/// `handshake_timeout`).
pub(crate) async fn connect_to(
    target: SocketAddr,
    tls: Option<&TlsTarget>,
    handshake_timeout: Duration,
) -> anyhow::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    tcp.set_nodelay(true)?;
    Ok(match tls {
        None => Box::new(tcp),
        Some(tls) => {
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            let s = tokio::time::timeout(
                handshake_timeout,
                connector.connect(tls.server_name.clone(), tcp),
            )
            .await
            .map_err(|_| anyhow::anyhow!("TLS handshake with {target}: timed out"))?
            .with_context(|| format!("TLS handshake with {target}"))?;
            Box::new(s)
        }
    })
}

/// What a connection reports at the end.
struct ConnDone {
    recorder: Recorder,
    sent: u64,
    last_answer: Instant,
}

/// The matching key of an answer: (MTI class, F11, F37, F41).
type MatchKey = (u8, u32, [u8; 12], [u8; 8]);

/// A request waiting for its answer.
struct Pending {
    sent_at: Instant,
    bank: Option<BankCode>,
    amount: Option<AmountMinor>,
    currency: Option<Currency>,
    expect: Option<ResponseCode>,
    kind: PendingKind,
}

enum PendingKind {
    /// A request of the schedule; `Some` when it is to be resent.
    Original { resend: Option<Box<Transaction>> },
    /// A duplicate: the original's outcome and its own identifiers.
    Duplicate {
        code: ResponseCode,
        auth_id: Option<AuthId>,
        transmitted_at: Option<TransmissionDateTime>,
    },
}

/// What the reader tells the writer.
enum Event {
    /// A closed-loop slot is free.
    Free,
    /// Resend this request as a duplicate (then free the slot).
    Resend(Box<Transaction>, ResponseCode, Option<AuthId>),
}

/// State shared by a connection's writer and reader.
struct State {
    pending: HashMap<MatchKey, Pending>,
    answered: HashSet<MatchKey>,
    recorder: Recorder,
    /// Duplicates promised by answered originals and not yet sent.
    resends_owed: u64,
    /// Scheduled requests registered (sent or about to be).
    sent: u64,
    writer_done: bool,
    last_answer: Option<Instant>,
}

struct Conn {
    plan: Arc<Plan>,
    conn: u64,
    share: u64,
    start: Instant,
    run_id: String,
    progress: Arc<Progress>,
}

struct Shared {
    state: Mutex<State>,
    writer_done: Notify,
    progress: Arc<Progress>,
}

impl Shared {
    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| anyhow::anyhow!("a load task panicked"))
    }
}

fn error(st: &mut State, progress: &Progress, kind: &'static str) {
    st.recorder.error(kind);
    progress.error();
}

impl Conn {
    async fn run(self, io: Box<dyn Stream>) -> anyhow::Result<ConnDone> {
        let (rd, wr) = tokio::io::split(io);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: HashMap::new(),
                answered: HashSet::new(),
                recorder: Recorder::new(),
                resends_owed: 0,
                sent: 0,
                writer_done: false,
                last_answer: None,
            }),
            writer_done: Notify::new(),
            progress: self.progress.clone(),
        });
        let (tx, rx) = mpsc::channel(MAX_PENDING_PER_CONNECTION);
        let reader = tokio::spawn(read_answers(rd, shared.clone(), tx));
        let written = self.write_requests(wr, &shared, rx).await;
        {
            let mut st = shared.lock()?;
            st.writer_done = true;
            if let Err(e) = &written {
                eprintln!("fps-loadtest: connection {}: {e:#}", self.conn);
                error(&mut st, &self.progress, "connection_lost");
            }
        }
        shared.writer_done.notify_one();
        // What has not come by the drain deadline is a timeout.
        let abort = reader.abort_handle();
        match tokio::time::timeout(self.plan.drain, reader).await {
            Ok(r) => {
                if let Err(e) = r.context("reader task")? {
                    eprintln!("fps-loadtest: connection {}: {e:#}", self.conn);
                    // Reported once, as a kind; what it left pending are
                    // timeouts below.
                    let mut st = shared.lock()?;
                    error(&mut st, &self.progress, "connection_lost");
                }
            }
            Err(_) => abort.abort(),
        }
        let mut st = shared.lock()?;
        let unanswered = st.pending.len();
        for _ in 0..unanswered {
            st.recorder.error("timeout");
        }
        // Open loop: the schedule's requests are offered whether or not a
        // broken connection let them out.
        let offered = match self.plan.mode {
            Mode::Open { .. } if self.share > 0 => {
                OpenLoop::new(self.share, self.plan.duration).map_or(st.sent, |o| o.total())
            }
            _ => st.sent,
        };
        for _ in st.sent..offered {
            st.recorder.error("not_sent");
        }
        Ok(ConnDone {
            recorder: std::mem::take(&mut st.recorder),
            sent: offered,
            last_answer: st.last_answer.unwrap_or(self.start),
        })
    }

    /// Send the schedule and the duplicates (counted in the shared state).
    async fn write_requests(
        &self,
        mut wr: impl AsyncWrite + Unpin,
        shared: &Shared,
        mut rx: mpsc::Receiver<Event>,
    ) -> anyhow::Result<()> {
        let codec = Iso8583Codec::builtin("canonical").context("canonical dialect")?;
        let framer = Framer::new(FrameConfig::default())?;
        let plan = &*self.plan;
        let mut open = match plan.mode {
            Mode::Open { .. } => Some(
                OpenLoop::new(self.share.max(1), plan.duration).context("rate must be positive")?,
            ),
            Mode::Closed { .. } => None,
        };
        let mut closed = match plan.mode {
            Mode::Closed { .. } => Some(
                ClosedLoop::new(self.share.max(1), plan.duration)
                    .context("concurrency must be positive")?,
            ),
            Mode::Open { .. } => None,
        };
        // A connection whose share rounds to zero sends nothing.
        if self.share == 0 {
            open = OpenLoop::new(1, Duration::ZERO);
            closed = None;
        }
        let hard_end = self.start + plan.duration + plan.drain;
        // Sub-millisecond waits: tokio's sleep would release a whole
        // millisecond of requests at once (see `pacer`).
        let pacer = Pacer::new();
        let mut out = BytesMut::with_capacity(64 * 1024);
        let mut dup_seq = 0u64;
        loop {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(self.start);
            let due = match (&mut open, &mut closed) {
                (Some(o), _) => o.due(elapsed),
                (_, Some(c)) => c.due(elapsed),
                _ => 0..0,
            };
            for seq in due {
                if seq >= MAX_REQUESTS_PER_CONNECTION {
                    bail!("more than {MAX_REQUESTS_PER_CONNECTION} requests on one connection");
                }
                let intended = match &open {
                    Some(o) => self.start + o.intended(seq),
                    None => Instant::now(),
                };
                self.queue_original(seq, intended, shared, &codec, &framer, &mut out)?;
            }
            if !out.is_empty() {
                wr.write_all(&out).await.context("sending requests")?;
                out.clear();
            }
            let schedule_done = match (&open, &closed) {
                (Some(o), _) => o.finished(),
                (_, Some(c)) => c.finished(elapsed),
                _ => true,
            };
            if schedule_done && shared.lock()?.resends_owed == 0 {
                break;
            }
            let next_due = match (&open, &closed) {
                (Some(o), _) => o.until_next(elapsed).map(|d| Instant::now() + d),
                (_, Some(c)) if !c.finished(elapsed) => Some(self.start + plan.duration),
                _ => None,
            };
            let wake = next_due.unwrap_or(hard_end).min(hard_end);
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(Event::Free) => {
                        if let Some(c) = &mut closed {
                            c.answered();
                        }
                    }
                    Some(Event::Resend(txn, code, auth_id)) => {
                        let n = dup_seq;
                        dup_seq += 1;
                        self.queue_duplicate(*txn, n, code, auth_id, shared, &codec, &framer, &mut out)?;
                    }
                    // The reader stopped (connection lost): nothing more will be answered.
                    None => break,
                },
                _ = pacer.sleep_until(wake) => {
                    if Instant::now() >= hard_end {
                        break;
                    }
                }
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await.context("sending requests")?;
        }
        wr.flush().await.context("sending requests")?;
        Ok(())
    }

    /// Build request `seq`, register it and encode it into `out`.
    fn queue_original(
        &self,
        seq: u64,
        intended: Instant,
        shared: &Shared,
        codec: &Iso8583Codec,
        framer: &Framer,
        out: &mut BytesMut,
    ) -> anyhow::Result<()> {
        let plan = &*self.plan;
        // Unique per request; n % banks cycles with seq on every connection.
        let n = self.conn * MAX_REQUESTS_PER_CONNECTION + seq;
        let pick = plan.mix.pick(n, plan.banks.len());
        let txn = request(
            &self.run_id,
            self.conn,
            seq,
            n,
            pick.destination,
            pick.outcome,
            &plan.banks,
        )?;
        let bank = match pick.destination {
            Destination::Bank(i) => Some(plan.banks[i]),
            Destination::Proxy(k) => plan.proxy_directory.get(&proxy_wire(k)).copied(),
        };
        let expect = ResponseCode::parse(pick.outcome.expected_code().as_bytes()).ok();
        let pending = Pending {
            sent_at: intended,
            bank,
            amount: txn.amount,
            currency: txn.currency,
            expect,
            kind: PendingKind::Original {
                resend: pick.duplicate.then(|| Box::new(txn.clone())),
            },
        };
        self.register(&txn, pending, pick.duplicate, shared)?;
        shared.lock()?.sent += 1;
        encode(&txn, codec, framer, out)
    }

    /// Resend `original` (same F123 and content) with its own identifiers.
    #[allow(clippy::too_many_arguments)]
    fn queue_duplicate(
        &self,
        original: Transaction,
        n: u64,
        code: ResponseCode,
        auth_id: Option<AuthId>,
        shared: &Shared,
        codec: &Iso8583Codec,
        framer: &Framer,
        out: &mut BytesMut,
    ) -> anyhow::Result<()> {
        let mut txn = original;
        txn.stan = Some(Stan::new(((n + 500_000) % 999_999) as u32 + 1)?);
        // Originals use RRN digits below 10^9, duplicates from 10^9 up.
        txn.rrn = Some(Rrn::parse(
            stack_fmt::<12>(format_args!(
                "{:02}{:010}",
                self.conn % 100,
                MAX_REQUESTS_PER_CONNECTION + n
            ))?
            .as_slice(),
        )?);
        txn.terminal_id = Some(TerminalId::parse(
            stack_fmt::<8>(format_args!("DUPL{:04}", self.conn % 10_000))?.as_slice(),
        )?);
        let (f7, _, _) = clock_fields(SystemTime::now());
        txn.transmitted_at = Some(TransmissionDateTime::parse(&f7)?);
        let pending = Pending {
            sent_at: Instant::now(),
            bank: None,
            amount: txn.amount,
            currency: txn.currency,
            expect: Some(code),
            kind: PendingKind::Duplicate {
                code,
                auth_id,
                transmitted_at: txn.transmitted_at,
            },
        };
        {
            let mut st = shared.lock()?;
            st.resends_owed = st.resends_owed.saturating_sub(1);
            st.recorder.duplicate_sent();
        }
        self.register(&txn, pending, false, shared)?;
        encode(&txn, codec, framer, out)
    }

    fn register(
        &self,
        txn: &Transaction,
        pending: Pending,
        owes_resend: bool,
        shared: &Shared,
    ) -> anyhow::Result<()> {
        let key = match_key(txn).context("a request without F11/F37/F41")?;
        let mut st = shared.lock()?;
        if st.pending.len() >= MAX_PENDING_PER_CONNECTION {
            bail!("more than {MAX_PENDING_PER_CONNECTION} requests unanswered on one connection");
        }
        if owes_resend {
            st.resends_owed += 1;
        }
        st.pending.insert(key, pending);
        Ok(())
    }
}

fn encode(
    txn: &Transaction,
    codec: &Iso8583Codec,
    framer: &Framer,
    out: &mut BytesMut,
) -> anyhow::Result<()> {
    let mark = framer.begin(&[], out)?;
    codec.encode(txn, out)?;
    framer.finish(mark, out)?;
    Ok(())
}

/// Read answers until the writer is done and nothing is pending.
async fn read_answers(
    mut rd: impl AsyncRead + Unpin,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let codec = Iso8583Codec::builtin("canonical").context("canonical dialect")?;
    let framer = Framer::new(FrameConfig::default())?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(frame) = framer.decode(&mut buf)? {
            let now = Instant::now();
            let events = {
                let mut st = shared.lock()?;
                check_answer(&mut st, &shared.progress, codec.decode(&frame.message), now)
            };
            if let Some(ev) = events {
                // Capacity equals the pending bound, so this never waits long;
                // a closed writer just means the run is over.
                let _ = tx.send(ev).await;
            }
        }
        {
            let st = shared.lock()?;
            if st.writer_done && st.pending.is_empty() {
                return Ok(());
            }
        }
        tokio::select! {
            n = rd.read_buf(&mut buf) => {
                if n.context("reading answers")? == 0 {
                    let st = shared.lock()?;
                    if st.pending.is_empty() {
                        return Ok(());
                    }
                    bail!("the peer closed the connection with {} requests unanswered", st.pending.len());
                }
            }
            _ = shared.writer_done.notified() => {}
        }
    }
}

/// Check one answer against its request; record it; say what the writer
/// must do next.
fn check_answer(
    st: &mut State,
    progress: &Progress,
    decoded: Result<Transaction, fps_codecs::CodecError>,
    now: Instant,
) -> Option<Event> {
    let Ok(resp) = decoded else {
        error(st, progress, "undecodable_answer");
        return None;
    };
    let Some(key) = match_key(&resp) else {
        error(st, progress, "unmatched");
        return None;
    };
    let Some(p) = st.pending.remove(&key) else {
        let kind = if st.answered.contains(&key) {
            "duplicate_answer"
        } else {
            "unmatched"
        };
        error(st, progress, kind);
        return None;
    };
    st.answered.insert(key);
    st.last_answer = Some(now);
    let latency = now.saturating_duration_since(p.sent_at);
    let free = || Some(Event::Free);
    let problem = if resp.mti != Mti::CREDIT_TRANSFER_RESPONSE {
        Some("wrong_mti")
    } else if resp.amount != p.amount || resp.currency != p.currency {
        Some("not_echoed")
    } else if resp.response_code.is_none() {
        Some("no_response_code")
    } else {
        None
    };
    let code = resp.response_code;
    match p.kind {
        PendingKind::Original { resend } => {
            if let Some(kind) = problem {
                error(st, progress, kind);
                if resend.is_some() {
                    st.resends_owed = st.resends_owed.saturating_sub(1);
                }
                return free();
            }
            let code = code?;
            let bank = p.bank.as_ref().map_or("proxy", |b| b.as_str());
            st.recorder.answer(latency, code.as_str(), bank);
            progress.answer(latency);
            if p.expect.is_some_and(|e| e != code) {
                error(st, progress, "unexpected_code");
            }
            match resend {
                Some(txn) => Some(Event::Resend(txn, code, resp.auth_id)),
                None => free(),
            }
        }
        PendingKind::Duplicate {
            code: first,
            auth_id,
            transmitted_at,
        } => {
            if let Some(kind) = problem {
                error(st, progress, kind);
            } else if code != Some(first) || resp.auth_id != auth_id {
                error(st, progress, "duplicate_outcome_differs");
            } else if resp.transmitted_at != transmitted_at {
                error(st, progress, "duplicate_not_echoed");
            } else {
                st.recorder.duplicate_consistent();
            }
            free()
        }
    }
}

fn match_key(t: &Transaction) -> Option<MatchKey> {
    let mut rrn = [b' '; 12];
    rrn.copy_from_slice(t.rrn.as_ref()?.as_str().as_bytes());
    let mut tid = [b' '; 8];
    tid.copy_from_slice(t.terminal_id.as_ref()?.as_str().as_bytes());
    Some((t.mti.class(), t.stan?.value(), rrn, tid))
}

/// A run id for idempotency keys, so that runs against the same switch
/// (which remembers keys) never collide.
pub(crate) fn run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}{:04x}", now.as_secs(), now.subsec_micros() & 0xffff)
}

/// The canonical 0200 credit transfer number `seq` of connection `conn`
/// (`n` over the whole run): F100 or F120 as picked, accounts asking for
/// `outcome`. F11, F37 and F41 are unique per connection over a run.
pub(crate) fn request(
    run_id: &str,
    conn: u64,
    seq: u64,
    n: u64,
    destination: Destination,
    outcome: Outcome,
    banks: &[BankCode],
) -> anyhow::Result<Transaction> {
    let (f7, f12, f13) = clock_fields(SystemTime::now());
    let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
    t.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
    t.amount = Some(AmountMinor::new(100 + (n % 100_000 + conn * 7) % 100_000)?);
    t.transmitted_at = Some(TransmissionDateTime::parse(&f7)?);
    t.stan = Some(Stan::new((seq % 999_999) as u32 + 1)?);
    t.local_time = Some(LocalTime::parse(&f12)?);
    t.local_date = Some(LocalDate::parse(&f13)?);
    t.acquirer = Some(InstitutionId::parse(b"888001")?);
    t.rrn = Some(Rrn::parse(
        stack_fmt::<12>(format_args!("{:02}{:010}", conn % 100, seq))?.as_slice(),
    )?);
    t.terminal_id = Some(TerminalId::parse(
        stack_fmt::<8>(format_args!("LOAD{:04}", conn % 10_000))?.as_slice(),
    )?);
    t.merchant_id = Some(MerchantId::parse(b"LOADTEST0000001")?);
    t.currency = Some(Currency::HKD);
    match destination {
        Destination::Bank(i) => t.receiving_bank = Some(banks[i]),
        Destination::Proxy(k) => t.proxy = Some(ProxyId::parse(proxy_wire(k).as_bytes())?),
    }
    let (debtor_end, creditor_end) = outcome.account_endings();
    // Distinct per connection and request (up to a million), so a
    // ledger's weak identity (accounts, amount) does not see false repeats.
    let (c, s) = (conn % 1000, seq % 1_000_000);
    t.debtor_account = Some(Account::parse(
        stack_fmt::<12>(format_args!("1{c:03}{s:06}{debtor_end}"))?.as_slice(),
    )?);
    t.creditor_account = Some(Account::parse(
        stack_fmt::<12>(format_args!("2{c:03}{s:06}{creditor_end}"))?.as_slice(),
    )?);
    t.idempotency_key = Some(IdempotencyKey::parse(
        stack_fmt::<64>(format_args!("load-{run_id}-{conn}-{seq}"))?.as_slice(),
    )?);
    Ok(t)
}

/// Text of at most `N` bytes formatted on the stack: the generator builds
/// several ids per request, and a `format!` each was a heap allocation
/// each on the core whose ceiling `compare-relay` measures.
struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `args` formatted into a [`StackText`]; an error if it needs more than
/// `N` bytes.
fn stack_fmt<const N: usize>(args: std::fmt::Arguments<'_>) -> anyhow::Result<StackText<N>> {
    use std::io::Write as _;
    let mut buf = [0u8; N];
    let mut rest = &mut buf[..];
    rest.write_fmt(args)
        .map_err(|_| anyhow::anyhow!("a generated id is longer than {N} bytes"))?;
    let len = N - rest.len();
    Ok(StackText { buf, len })
}

/// The wire form of proxy number `k` (1-based): `MOBN:+852-9000kkkk`.
pub(crate) fn proxy_wire(k: u32) -> String {
    format!("MOBN:+852-9000{k:04}")
}

/// F7 (`MMDDhhmmss`, UTC) and F12/F13 (`hhmmss`/`MMDD`, Hong Kong time)
/// for the wall-clock time `now`.
pub(crate) fn clock_fields(now: SystemTime) -> ([u8; 10], [u8; 6], [u8; 4]) {
    let utc = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let f7 = *TransmissionDateTime::at_unix_secs(utc).as_bytes();
    // Made for every request: digits written in place, no formatting.
    let (_, lmo, ld, lh, lmi, ls) = civil(utc + 8 * 3600);
    let mut f12 = [0u8; 6];
    write_padded(lh * 10_000 + lmi * 100 + ls, &mut f12);
    let mut f13 = [0u8; 4];
    write_padded(lmo * 100 + ld, &mut f13);
    (f7, f12, f13)
}

/// (year, month, day, hour, minute, second) of a Unix time (proleptic
/// Gregorian, UTC).
fn civil(unix_s: u64) -> (u64, u64, u64, u64, u64, u64) {
    let rem = unix_s % 86_400;
    // A u64 of seconds has under 2^47 days, so the count fits an i64, and a
    // day on or after 1970-01-01 has a year that fits a u64.
    let (y, m, d) = civil_from_days((unix_s / 86_400) as i64);
    (
        y as u64,
        u64::from(m),
        u64::from(d),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_formatted_on_the_stack_and_too_long_ones_refused() {
        let t = stack_fmt::<12>(format_args!("{:02}{:010}", 7, 42)).unwrap();
        assert_eq!(t.as_slice(), b"070000000042");
        assert!(stack_fmt::<11>(format_args!("{:02}{:010}", 7, 42)).is_err());
        let t = request(
            "r1",
            3,
            5,
            5,
            Destination::Bank(0),
            Outcome::InsufficientFunds,
            &[BankCode::parse(b"003").unwrap()],
        )
        .unwrap();
        assert_eq!(t.rrn.unwrap().as_str(), "030000000005");
        assert_eq!(t.terminal_id.unwrap().as_str(), "LOAD0003");
        assert_eq!(t.debtor_account.unwrap().expose(), "100300000551");
        assert_eq!(t.idempotency_key.unwrap().as_str(), "load-r1-3-5");
    }

    #[test]
    fn civil_dates_and_clock_fields() {
        // 2024-02-29 23:59:58 UTC = 2024-03-01 07:59:58 in Hong Kong.
        assert_eq!(civil(1_709_251_198), (2024, 2, 29, 23, 59, 58));
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_198);
        let (f7, f12, f13) = clock_fields(t);
        assert_eq!(&f7, b"0229235958");
        assert_eq!(&f12, b"075958");
        assert_eq!(&f13, b"0301");
    }

    #[test]
    fn requests_carry_the_pick() {
        let banks = parse_banks(&["003".into(), "004".into()]).unwrap();
        let t = request(
            "r1",
            3,
            7,
            31,
            Destination::Proxy(42),
            Outcome::DoNotHonour,
            &banks,
        )
        .unwrap();
        assert_eq!(t.proxy.unwrap().expose(), "+852-90000042");
        assert!(t.receiving_bank.is_none());
        assert!(t.debtor_account.unwrap().expose().ends_with("05"));
        assert_eq!(t.idempotency_key.unwrap().as_str(), "load-r1-3-7");
        let t = request(
            "r1",
            0,
            1,
            1,
            Destination::Bank(1),
            Outcome::NoSuchAccount,
            &banks,
        )
        .unwrap();
        assert_eq!(t.receiving_bank, Some(banks[1]));
        assert!(t.creditor_account.unwrap().expose().ends_with("14"));
    }

    #[test]
    fn shares_spread_the_remainder() {
        let m = Mode::Closed { concurrency: 10 };
        let s: Vec<u64> = (0..4).map(|c| share_of(m, 4, c)).collect();
        assert_eq!(s, vec![3, 3, 2, 2]);
        assert_eq!(share_of(Mode::Open { rate: 1 }, 2, 1), 0);
    }

    #[test]
    fn proxy_directory_lines() {
        let dir = std::env::temp_dir().join(format!("fps-proxies-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# c\nproxy,bank_code,display_name\nMOBN:+852-90000001,003\nEMAL:a@b.c,004,A\n",
        )
        .unwrap();
        let d = load_proxy_directory(&dir).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d["MOBN:+852-90000001"].as_str(), "003");
        std::fs::write(&dir, "MOBN:+852-90000001\n").unwrap();
        assert!(load_proxy_directory(&dir).is_err());
        let _ = std::fs::remove_file(&dir);
    }
}
