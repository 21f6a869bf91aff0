//! `fps-loadtest chaos`: a gateway that never gives up on a payment, for
//! fault-injection runs against the real switch (`scripts/chaos`).
//!
//! Unlike [`crate::load`], which measures, this client keeps every request
//! until it has a final answer: when its connection drops (the switch was
//! killed), when no answer comes in time, or when the answer says nothing
//! happened (`91` bank unavailable, `96` system malfunction), it sends the
//! request again with the same idempotency key (F123) and content and fresh
//! F11/F37, as a real gateway retries. The switch's promise is that such
//! retries never debit twice and that a key, once final, keeps its answer.
//!
//! Every request's history is written as one JSON line ([`RequestRecord`]);
//! [`crate::reconcile`] then checks it against the bank simulators' ledger.
//!
//! State lives in one [`Book`] behind a mutex; connection tasks take work
//! from its queue and hand answers back. Everything is bounded: the run
//! ends at `duration + settle` whatever happens.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::BytesMut;
use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::model::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::load::{self, Stream, TlsTarget};
use crate::schedule::{Destination, Mix, OpenLoop};

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait between reconnect attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// Wait before resending a request answered "nothing happened" (91/96).
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Most requests one connection writes in one go.
const BATCH: usize = 64;
/// The terminal id of every request (F41).
const TERMINAL: &[u8] = b"CHAOS001";

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosPlan {
    /// The switch's upstream listener.
    pub target: SocketAddr,
    /// TLS to the target; `None` = plaintext.
    pub tls: Option<TlsTarget>,
    /// New requests per second.
    pub rate: u64,
    /// How long new requests are offered.
    pub duration: Duration,
    /// Upstream connections.
    pub connections: u64,
    /// Destination banks (F100), round-robin.
    pub banks: Vec<BankCode>,
    /// Proxies and declines (duplicates are ignored: every retry is one).
    pub mix: Mix,
    /// Proxy -> bank, to record which bank a proxied request went to.
    pub proxy_directory: HashMap<String, BankCode>,
    /// After the schedule, how long retries may go on.
    pub settle: Duration,
    /// A request with no answer after this long is sent again.
    pub answer_timeout: Duration,
    /// A progress line on stderr every second.
    pub progress: bool,
}

/// One request's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestRecord {
    /// F123.
    pub key: String,
    /// The bank it was addressed to (F100, or the proxy's bank), or `proxy`
    /// when the directory does not name one.
    pub bank: String,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// The code its accounts ask the bank for.
    pub expected: String,
    /// Every answer, in arrival order.
    pub answers: Vec<String>,
    /// The final answer: the first that is not "nothing happened", or the
    /// last one when retries ran out. `None`: never answered.
    pub final_code: Option<String>,
    /// Times sent.
    pub sends: u32,
    /// The debtor account sent (F102), so a run's logs can be scanned for
    /// it (`scripts/scan-logs`); empty in records of older runs.
    #[serde(default)]
    pub debtor: String,
    /// The creditor account sent (F103), likewise.
    #[serde(default)]
    pub creditor: String,
}

/// What a run ends with.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// Requests offered.
    pub requests: u64,
    /// Sends (first sends and retries).
    pub sends: u64,
    /// Final answers by code.
    pub finals: BTreeMap<String, u64>,
    /// Requests with no answer at all by the end.
    pub unanswered: u64,
    /// Requests whose final code is neither the expected one, nor 68
    /// (outcome unknown, reversed), nor a retried-out 91/96.
    pub unexpected: u64,
    /// Requests answered two different final codes (must be 0).
    pub inconsistent: u64,
    /// Answers whose F4/F49/F123 did not echo the request (must be 0).
    pub not_echoed: u64,
    /// Answers matching no request sent.
    pub unmatched: u64,
    /// Connections lost (the switch restarting shows here).
    pub connections_lost: u64,
    /// Seconds from the first send to the last final answer.
    pub elapsed_s: f64,
}

impl ChaosReport {
    /// Every request has a correct final answer.
    pub fn clean(&self) -> bool {
        self.unanswered == 0
            && self.unexpected == 0
            && self.inconsistent == 0
            && self.not_echoed == 0
            && self.unmatched == 0
    }
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "requests {}  sends {}  connections lost {}  elapsed {:.1} s",
            self.requests, self.sends, self.connections_lost, self.elapsed_s
        )?;
        let finals: Vec<String> = self
            .finals
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(f, "final answers: {}", finals.join(" "))?;
        write!(
            f,
            "unanswered {}  unexpected {}  inconsistent {}  not echoed {}  unmatched {}",
            self.unanswered, self.unexpected, self.inconsistent, self.not_echoed, self.unmatched
        )
    }
}

/// Codes that mean "nothing happened, try again".
/// An account's digits for the records (empty when absent).
fn account(a: Option<&Account>) -> String {
    a.map_or_else(String::new, |a| a.expose().to_owned())
}

fn retryable(code: ResponseCode) -> bool {
    code == ResponseCode::BANK_UNAVAILABLE || code == ResponseCode::SYSTEM_MALFUNCTION
}

/// Whether `final_code` is an acceptable end for a request expecting `expected`.
pub fn acceptable(expected: &str, final_code: &str) -> bool {
    final_code == expected || final_code == "68" || final_code == "91" || final_code == "96"
}

struct Req {
    template: Transaction,
    bank: String,
    expected: ResponseCode,
    answers: Vec<ResponseCode>,
    final_code: Option<ResponseCode>,
    inconsistent: bool,
    sends: u32,
    /// RRN and send time of the send being waited for.
    outstanding: Option<(u64, Instant)>,
    retry_at: Option<Instant>,
}

#[derive(Default)]
struct Book {
    reqs: Vec<Req>,
    /// Requests without a final answer.
    open: BTreeSet<usize>,
    /// Every send's RRN -> (request, connection).
    sends: HashMap<u64, (usize, u64)>,
    queue: VecDeque<usize>,
    next_rrn: u64,
    schedule_done: bool,
    not_echoed: u64,
    unmatched: u64,
    connections_lost: u64,
    last_final: Option<Instant>,
}

impl Book {
    /// Take up to `BATCH` requests to send on connection `conn`: each a copy
    /// of its template with fresh F7/F11/F37.
    fn take(&mut self, conn: u64, now: Instant) -> Vec<Transaction> {
        let mut out = Vec::new();
        while out.len() < BATCH {
            let Some(i) = self.queue.pop_front() else {
                break;
            };
            let r = &mut self.reqs[i];
            if r.final_code.is_some() || r.outstanding.is_some() {
                continue;
            }
            self.next_rrn += 1;
            let rrn = self.next_rrn;
            let mut t = r.template.clone();
            t.stan = Stan::new((rrn % 999_999) as u32 + 1).ok();
            t.rrn = Rrn::parse(format!("{rrn:012}").as_bytes()).ok();
            let (f7, _, _) = load::clock_fields(SystemTime::now());
            t.transmitted_at = TransmissionDateTime::parse(&f7).ok();
            r.outstanding = Some((rrn, now));
            r.retry_at = None;
            r.sends += 1;
            self.sends.insert(rrn, (i, conn));
            out.push(t);
        }
        out
    }

    fn answer(&mut self, resp: &Transaction, now: Instant) {
        let rrn = resp
            .rrn
            .as_ref()
            .and_then(|r| r.as_str().parse::<u64>().ok());
        let Some(&(i, _)) = rrn.as_ref().and_then(|r| self.sends.get(r)) else {
            self.unmatched += 1;
            return;
        };
        let rrn = rrn.unwrap_or_default();
        self.sends.remove(&rrn);
        let r = &mut self.reqs[i];
        if r.outstanding.is_some_and(|(o, _)| o == rrn) {
            r.outstanding = None;
        }
        let echoed = resp.amount == r.template.amount
            && resp.currency == r.template.currency
            && resp.idempotency_key == r.template.idempotency_key
            && resp.mti == Mti::CREDIT_TRANSFER_RESPONSE;
        let Some(code) = resp.response_code.filter(|_| echoed) else {
            self.not_echoed += 1;
            return;
        };
        r.answers.push(code);
        if retryable(code) {
            if r.final_code.is_none() && r.outstanding.is_none() {
                r.retry_at = Some(now + RETRY_AFTER);
            }
            return;
        }
        match r.final_code {
            None => {
                r.final_code = Some(code);
                r.retry_at = None;
                self.open.remove(&i);
                self.last_final = Some(now);
            }
            Some(c) if c != code => r.inconsistent = true,
            Some(_) => {}
        }
    }

    /// Connection `conn` is gone: what was waited for on it is sent again.
    fn lost(&mut self, conn: u64, now: Instant) {
        self.connections_lost += 1;
        for &i in &self.open {
            let r = &mut self.reqs[i];
            if let Some((rrn, _)) = r.outstanding {
                if self.sends.get(&rrn).is_some_and(|&(_, c)| c == conn) {
                    r.outstanding = None;
                    r.retry_at = Some(now + RECONNECT_MIN);
                }
            }
        }
    }

    /// Queue what is due: retries whose time came, sends unanswered too long.
    fn tick(&mut self, now: Instant, answer_timeout: Duration) {
        for &i in &self.open {
            let r = &mut self.reqs[i];
            if let Some((_, at)) = r.outstanding {
                if now.saturating_duration_since(at) >= answer_timeout {
                    // A late answer to it still counts (its RRN stays known).
                    r.outstanding = None;
                    self.queue.push_back(i);
                }
            } else if r.retry_at.is_some_and(|t| t <= now) {
                r.retry_at = None;
                self.queue.push_back(i);
            }
        }
    }

    fn done(&self) -> bool {
        self.schedule_done && self.open.is_empty()
    }
}

struct Shared {
    book: Mutex<Book>,
    work: Notify,
    plan: ChaosPlan,
    end: Instant,
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Run the plan; the report and every request's record.
pub async fn run(plan: ChaosPlan) -> anyhow::Result<(ChaosReport, Vec<RequestRecord>)> {
    anyhow::ensure!(
        !plan.banks.is_empty(),
        "--banks: at least one bank code is needed"
    );
    plan.mix.validate().map_err(anyhow::Error::msg)?;
    let mut schedule = OpenLoop::new(plan.rate, plan.duration)
        .context("--rate and --duration must be positive")?;
    let run_id = load::run_id();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        book: Mutex::new(Book::default()),
        work: Notify::new(),
        end: start + plan.duration + plan.settle,
        plan,
    });
    let conns: Vec<_> = (0..shared.plan.connections.max(1))
        .map(|c| tokio::spawn(connection(shared.clone(), c)))
        .collect();
    let plan = &shared.plan;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut last_progress = start;
    loop {
        tick.tick().await;
        let now = Instant::now();
        {
            let mut book = shared.book();
            for seq in schedule.due(now - start) {
                let pick = plan.mix.pick(seq, plan.banks.len());
                let mut t = load::request(
                    &run_id,
                    0,
                    seq,
                    seq,
                    pick.destination,
                    pick.outcome,
                    &plan.banks,
                )?;
                t.terminal_id = Some(TerminalId::parse(TERMINAL)?);
                let bank = match pick.destination {
                    Destination::Bank(i) => plan.banks[i].as_str().to_owned(),
                    Destination::Proxy(k) => plan
                        .proxy_directory
                        .get(&load::proxy_wire(k))
                        .map_or_else(|| "proxy".to_owned(), |b| b.as_str().to_owned()),
                };
                let i = book.reqs.len();
                book.reqs.push(Req {
                    template: t,
                    bank,
                    expected: ResponseCode::parse(pick.outcome.expected_code().as_bytes())?,
                    answers: Vec::new(),
                    final_code: None,
                    inconsistent: false,
                    sends: 0,
                    outstanding: None,
                    retry_at: None,
                });
                book.open.insert(i);
                book.queue.push_back(i);
            }
            book.schedule_done = schedule.finished();
            book.tick(now, plan.answer_timeout);
            if !book.queue.is_empty() {
                shared.work.notify_waiters();
            }
            if plan.progress && now - last_progress >= Duration::from_secs(1) {
                last_progress = now;
                eprintln!(
                    "chaos {:>5.1} s: requests {} open {} sends {} connections lost {}",
                    (now - start).as_secs_f64(),
                    book.reqs.len(),
                    book.open.len(),
                    book.next_rrn,
                    book.connections_lost
                );
            }
            if book.done() || now >= shared.end {
                break;
            }
        }
    }
    for c in conns {
        c.abort();
    }
    let book = shared.book();
    let mut report = ChaosReport {
        requests: book.reqs.len() as u64,
        sends: book.next_rrn,
        finals: BTreeMap::new(),
        unanswered: 0,
        unexpected: 0,
        inconsistent: 0,
        not_echoed: book.not_echoed,
        unmatched: book.unmatched,
        connections_lost: book.connections_lost,
        elapsed_s: book.last_final.map_or(0.0, |t| (t - start).as_secs_f64()),
    };
    let mut records = Vec::with_capacity(book.reqs.len());
    for r in &book.reqs {
        // Retries ran out on "nothing happened": that answer is final.
        let final_code = r.final_code.or_else(|| r.answers.last().copied());
        match final_code {
            None => report.unanswered += 1,
            Some(c) => {
                *report.finals.entry(c.as_str().to_owned()).or_default() += 1;
                if !acceptable(r.expected.as_str(), c.as_str()) {
                    report.unexpected += 1;
                }
            }
        }
        report.inconsistent += u64::from(r.inconsistent);
        records.push(RequestRecord {
            key: r
                .template
                .idempotency_key
                .as_ref()
                .map_or_else(String::new, |k| k.as_str().to_owned()),
            bank: r.bank.clone(),
            amount_minor: r.template.amount.map_or(0, |a| a.minor()),
            expected: r.expected.as_str().to_owned(),
            answers: r.answers.iter().map(|c| c.as_str().to_owned()).collect(),
            final_code: final_code.map(|c| c.as_str().to_owned()),
            sends: r.sends,
            debtor: account(r.template.debtor_account.as_ref()),
            creditor: account(r.template.creditor_account.as_ref()),
        });
    }
    Ok((report, records))
}

/// One upstream connection, reconnected until the run ends.
async fn connection(shared: Arc<Shared>, conn: u64) {
    let mut backoff = RECONNECT_MIN;
    while Instant::now() < shared.end {
        let plan = &shared.plan;
        match load::connect_to(plan.target, plan.tls.as_ref(), HANDSHAKE_TIMEOUT).await {
            Ok(io) => {
                backoff = RECONNECT_MIN;
                let why = serve(&shared, conn, io).await;
                shared.book().lost(conn, Instant::now());
                if shared.plan.progress {
                    eprintln!("chaos: connection {conn} lost: {why:#}");
                }
            }
            Err(_) => backoff = (backoff * 2).min(RECONNECT_MAX),
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Send queued work and read answers until the connection fails.
async fn serve(shared: &Shared, conn: u64, io: Box<dyn Stream>) -> anyhow::Error {
    let codec = match Iso8583Codec::builtin("canonical") {
        Some(c) => c,
        None => return anyhow::anyhow!("the canonical dialect is not built in"),
    };
    let framer = match Framer::new(FrameConfig::default()) {
        Ok(f) => f,
        Err(e) => return e.into(),
    };
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let batch = shared.book().take(conn, Instant::now());
        for t in &batch {
            let mark = match framer.begin(&[], &mut out) {
                Ok(m) => m,
                Err(e) => return e.into(),
            };
            if let Err(e) = codec.encode(t, &mut out) {
                return e.into();
            }
            if let Err(e) = framer.finish(mark, &mut out) {
                return e.into();
            }
        }
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                return e.into();
            }
            out.clear();
            continue;
        }
        tokio::select! {
            n = rd.read_buf(&mut inbuf) => {
                match n {
                    Ok(0) => return anyhow::anyhow!("closed by the switch"),
                    Ok(_) => {}
                    Err(e) => return e.into(),
                }
                loop {
                    match framer.decode(&mut inbuf) {
                        Ok(Some(frame)) => {
                            let now = Instant::now();
                            match codec.decode(&frame.message) {
                                Ok(resp) => shared.book().answer(&resp, now),
                                Err(_) => shared.book().unmatched += 1,
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return e.into(),
                    }
                }
            }
            _ = shared.work.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if Instant::now() >= shared.end {
            return anyhow::anyhow!("run over");
        }
    }
}

/// `fps-loadtest chaos` options.
#[derive(clap::Args, Debug)]
pub struct ChaosArgs {
    /// The switch's upstream listener.
    #[arg(long)]
    pub target: SocketAddr,
    /// New requests per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Seconds during which new requests are offered.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seconds after that during which unfinished requests are retried.
    #[arg(long, default_value_t = 60)]
    pub settle: u64,
    /// A send with no answer after this many milliseconds is repeated (same
    /// F123, fresh F11/F37); above the switch's bank deadlines.
    #[arg(long, default_value_t = 15_000)]
    pub answer_timeout_ms: u64,
    /// Upstream connections.
    #[arg(long, default_value_t = 4)]
    pub connections: u64,
    /// Destination bank codes (F100), round-robin.
    #[arg(long, value_delimiter = ',', default_value = "003,004,012,024")]
    pub banks: Vec<String>,
    /// Distinct proxies MOBN:+852-9000NNNN for --proxy-share.
    #[arg(long, default_value_t = 0)]
    pub proxies: u32,
    /// Share (0..1) of requests addressed by proxy.
    #[arg(long, default_value_t = 0.0)]
    pub proxy_share: f64,
    /// Share (0..1) of requests built to be declined.
    #[arg(long, default_value_t = 0.1)]
    pub decline_share: f64,
    /// The switch's proxy directory, to record each proxied request's bank.
    #[arg(long)]
    pub proxy_directory: Option<std::path::PathBuf>,
    /// CA certificate (PEM) that signed the switch's certificate: enables TLS.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --key).
    #[arg(long, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Client private key (PEM) for mutual TLS (with --cert).
    #[arg(long, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Name the switch's certificate must carry (default: the target's IP).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Where to write every request's record (JSON lines).
    #[arg(long)]
    pub records: std::path::PathBuf,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Run `fps-loadtest chaos`: true when every request got a correct final answer.
pub async fn main(a: ChaosArgs) -> anyhow::Result<bool> {
    if a.ca.is_none() && (a.cert.is_some() || a.server_name.is_some()) {
        anyhow::bail!("--cert/--key/--server-name need --ca (TLS)");
    }
    let tls = match &a.ca {
        None => None,
        Some(ca) => Some(TlsTarget::from_files(
            a.target,
            ca,
            a.cert.as_deref().zip(a.key.as_deref()),
            a.server_name.as_deref(),
        )?),
    };
    let proxy_directory = match &a.proxy_directory {
        Some(p) => load::load_proxy_directory(p)?,
        None => HashMap::new(),
    };
    let plan = ChaosPlan {
        target: a.target,
        tls,
        rate: a.rate,
        duration: Duration::from_secs(a.duration),
        connections: a.connections.max(1),
        banks: load::parse_banks(&a.banks)?,
        mix: Mix {
            proxies: a.proxies,
            proxy_share: a.proxy_share,
            decline_share: a.decline_share,
            duplicate_share: 0.0,
        },
        proxy_directory,
        settle: Duration::from_secs(a.settle),
        answer_timeout: Duration::from_millis(a.answer_timeout_ms.max(1)),
        progress: !a.quiet,
    };
    let (report, records) = run(plan).await?;
    let mut out = String::with_capacity(records.len() * 160);
    for r in &records {
        out.push_str(&serde_json::to_string(r)?);
        out.push('\n');
    }
    std::fs::write(&a.records, out)
        .with_context(|| format!("--records: writing {}", a.records.display()))?;
    println!("{report}");
    Ok(report.clean())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book_with(n: usize) -> Book {
        let mut b = Book::default();
        for i in 0..n {
            let mut t = fps_codecs::model::examples::credit_transfer();
            t.idempotency_key = IdempotencyKey::parse(format!("k{i}").as_bytes()).ok();
            b.reqs.push(Req {
                template: t,
                bank: "003".into(),
                expected: ResponseCode::APPROVED,
                answers: vec![],
                final_code: None,
                inconsistent: false,
                sends: 0,
                outstanding: None,
                retry_at: None,
            });
            b.open.insert(i);
            b.queue.push_back(i);
        }
        b
    }

    fn answer_to(t: &Transaction, code: ResponseCode) -> Transaction {
        t.response(code)
    }

    #[test]
    fn a_request_is_final_on_its_first_real_answer_and_retried_on_91() {
        let now = Instant::now();
        let mut b = book_with(1);
        let sent = b.take(0, now);
        assert_eq!(sent.len(), 1);
        b.answer(&answer_to(&sent[0], ResponseCode::BANK_UNAVAILABLE), now);
        assert!(b.reqs[0].final_code.is_none());
        b.tick(now + RETRY_AFTER, Duration::from_secs(30));
        let again = b.take(0, now + RETRY_AFTER);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].rrn, sent[0].rrn, "a resend has its own F37");
        assert_eq!(again[0].idempotency_key, sent[0].idempotency_key);
        b.answer(&answer_to(&again[0], ResponseCode::APPROVED), now);
        assert_eq!(b.reqs[0].final_code, Some(ResponseCode::APPROVED));
        assert!(b.done() || !b.schedule_done);
        assert_eq!(b.reqs[0].sends, 2);
    }

    #[test]
    fn a_lost_connection_resends_and_differing_finals_are_flagged() {
        let now = Instant::now();
        let mut b = book_with(2);
        let first = b.take(7, now);
        assert_eq!(first.len(), 2);
        b.lost(7, now);
        b.tick(now + RECONNECT_MIN, Duration::from_secs(30));
        let again = b.take(8, now + RECONNECT_MIN);
        assert_eq!(again.len(), 2);
        // The answer to the first send arrives late, then the retry's differs.
        b.answer(&answer_to(&first[0], ResponseCode::APPROVED), now);
        b.answer(&answer_to(&again[0], ResponseCode::LATE), now);
        assert!(b.reqs[0].inconsistent);
        b.answer(&answer_to(&again[1], ResponseCode::APPROVED), now);
        assert!(!b.reqs[1].inconsistent);
        assert_eq!(b.unmatched, 0);
    }

    #[test]
    fn an_unanswered_send_is_repeated_after_the_answer_timeout() {
        let now = Instant::now();
        let mut b = book_with(1);
        assert_eq!(b.take(0, now).len(), 1);
        b.tick(now + Duration::from_secs(1), Duration::from_secs(2));
        assert!(b.take(0, now).is_empty());
        b.tick(now + Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(b.take(0, now).len(), 1);
    }

    #[test]
    fn answers_not_echoing_the_request_are_counted() {
        let now = Instant::now();
        let mut b = book_with(1);
        let sent = b.take(0, now);
        let mut a = answer_to(&sent[0], ResponseCode::APPROVED);
        a.amount = AmountMinor::new(1).ok();
        b.answer(&a, now);
        assert_eq!(b.not_echoed, 1);
        assert!(b.reqs[0].final_code.is_none());
        let mut stray = answer_to(&sent[0], ResponseCode::APPROVED);
        stray.rrn = Rrn::parse(b"999999999999").ok();
        b.answer(&stray, now);
        assert_eq!(b.unmatched, 1);
    }

    #[test]
    fn acceptable_finals() {
        assert!(acceptable("00", "00"));
        assert!(acceptable("51", "68"));
        assert!(acceptable("00", "91"));
        assert!(!acceptable("00", "51"));
        assert!(!acceptable("00", "94"));
        assert!(!acceptable("00", "30"));
    }
}
