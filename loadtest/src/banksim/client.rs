//! Client mode of a simulated bank (`[banks.client]`): it opens persistent
//! mTLS links to the switch's `[bank_inbound]` listener, signs on (ISO
//! 8583), sends payments it originates in its own dialect (MACed or signed
//! with its `auth`), and checks that each gets exactly one matching answer
//! whose MAC or signature verifies. Counts are served on `GET /client`.
//!
//! Every link is bounded: at most `max_in_flight` payments wait for an
//! answer, each at most `timeout_ms` (then it counts as an error), and a
//! broken link is reopened with a capped backoff; payments in flight on it
//! count as errors (their outcome is the switch's to settle).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::BytesMut;
use fps_codecs::model::{
    Account, AmountMinor, BankCode, Currency, EndToEndId, IdempotencyKey, InstitutionId, MessageId,
    Mti, NetworkCode, ProcessingCode, ResponseCode, Rrn, Stan, TerminalId, Transaction,
};
use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::config::ClientConfig;
use super::ledger::Style;
use super::server::Bank;

/// First delay before reopening a link.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest delay before reopening a link.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Time allowed for TCP connect, TLS handshake and sign-on.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often expired payments are swept.
const SWEEP_EVERY: Duration = Duration::from_millis(50);
/// Default creditor account (approved by the simulator's rules).
const DEFAULT_CREDITOR: &str = "987654321098";

/// What a client has seen, as `GET /client` serves it.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Payments written on a link.
    pub sent: AtomicU64,
    /// Answered `00`, MAC/signature verified.
    pub approved: AtomicU64,
    /// Answered with another code, verified.
    pub declined: AtomicU64,
    /// No usable answer: timed out, link lost, or MAC/signature wrong.
    pub errors: AtomicU64,
    /// ... of which timed out.
    pub timeouts: AtomicU64,
    /// ... of which the answer's MAC/signature did not verify.
    pub auth_failures: AtomicU64,
    /// Answers matching no payment in flight (a second answer included).
    pub unmatched: AtomicU64,
    /// Links opened (signed on).
    pub links_opened: AtomicU64,
    /// Attempts to open a link that failed.
    pub link_failures: AtomicU64,
}

/// A snapshot of [`ClientStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientCounts {
    /// See [`ClientStats::sent`].
    pub sent: u64,
    /// See [`ClientStats::approved`].
    pub approved: u64,
    /// See [`ClientStats::declined`].
    pub declined: u64,
    /// See [`ClientStats::errors`].
    pub errors: u64,
    /// See [`ClientStats::timeouts`].
    pub timeouts: u64,
    /// See [`ClientStats::auth_failures`].
    pub auth_failures: u64,
    /// See [`ClientStats::unmatched`].
    pub unmatched: u64,
    /// See [`ClientStats::links_opened`].
    pub links_opened: u64,
    /// See [`ClientStats::link_failures`].
    pub link_failures: u64,
    /// Payments still waiting for an answer.
    pub in_flight: u64,
    /// Whether every configured payment is settled (sent and answered,
    /// or counted as an error).
    pub done: bool,
}

/// One simulated bank's client side.
pub struct Client {
    bank: Arc<Bank>,
    cfg: ClientConfig,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    stats: ClientStats,
    /// Payments handed out so far (the budget when `count` is set).
    issued: AtomicU64,
    /// Payments settled (answered or counted as errors).
    settled: AtomicU64,
    boot_ms: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bank", &self.bank.name)
            .field("switch", &self.cfg.switch)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The client of `bank` (TLS files read now; nothing connects yet).
    pub fn new(bank: Arc<Bank>, cfg: &ClientConfig) -> anyhow::Result<Client> {
        let tls = crate::tls::client_config(&cfg.tls.ca, Some((&cfg.tls.cert, &cfg.tls.key)))
            .context("tls")?;
        let server_name =
            crate::tls::server_name(&cfg.tls.server_name).context("tls.server_name")?;
        Ok(Client {
            bank,
            cfg: cfg.clone(),
            connector: TlsConnector::from(tls),
            server_name,
            stats: ClientStats::default(),
            issued: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            boot_ms: super::server::unix_ms(),
        })
    }

    /// The bank's config name.
    pub fn name(&self) -> &str {
        &self.bank.name
    }

    /// The counts so far.
    pub fn counts(&self) -> ClientCounts {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let settled = get(&self.settled);
        ClientCounts {
            sent: get(&s.sent),
            approved: get(&s.approved),
            declined: get(&s.declined),
            errors: get(&s.errors),
            timeouts: get(&s.timeouts),
            auth_failures: get(&s.auth_failures),
            unmatched: get(&s.unmatched),
            links_opened: get(&s.links_opened),
            link_failures: get(&s.link_failures),
            in_flight: get(&s.sent).saturating_sub(settled),
            done: self.cfg.count > 0 && settled >= self.cfg.count,
        }
    }

    /// Open the links and send until the budget is spent and settled, or
    /// until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let mut stop = shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(self.cfg.start_delay_ms)) => {}
            _ = stop.changed() => return,
        }
        let links: Vec<_> = (0..self.cfg.links)
            .map(|i| tokio::spawn(self.clone().keep_link(i, shutdown.clone())))
            .collect();
        for l in links {
            let _ = l.await;
        }
    }

    fn budget_left(&self) -> bool {
        self.cfg.count == 0 || self.issued.load(Ordering::Relaxed) < self.cfg.count
    }

    /// Take the next payment number, if the budget allows one.
    fn take(&self) -> Option<u64> {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.cfg.count > 0 && n >= self.cfg.count {
            self.issued.store(self.cfg.count, Ordering::Relaxed);
            return None;
        }
        Some(n)
    }

    fn settle(&self, n: u64) {
        self.settled.fetch_add(n, Ordering::Relaxed);
    }

    /// Keep link `index` open (reopening it) while there is work.
    async fn keep_link(self: Arc<Self>, index: usize, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_START;
        while !*shutdown.borrow() && self.budget_left() {
            let opened = tokio::time::timeout(CONNECT_TIMEOUT, self.open()).await;
            match opened {
                Ok(Ok(stream)) => {
                    self.stats.links_opened.fetch_add(1, Ordering::Relaxed);
                    backoff = BACKOFF_START;
                    self.clone().drive(index, stream, shutdown.clone()).await;
                }
                Ok(Err(e)) => {
                    self.stats.link_failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("bank-sim: {}: client link {index}: {e:#}", self.bank.name);
                }
                Err(_) => {
                    self.stats.link_failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "bank-sim: {}: client link {index}: connect timed out",
                        self.bank.name
                    );
                }
            }
            if !self.budget_left() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Connect, handshake and (ISO 8583) sign on.
    async fn open(&self) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(&self.cfg.switch)
            .await
            .with_context(|| format!("connect {}", self.cfg.switch))?;
        tcp.set_nodelay(true)?;
        let mut tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        if self.bank.style == Style::Iso8583 {
            let mut sign_on = Transaction::new(Mti::NETWORK);
            sign_on.transmitted_at = Some(super::server::utc_now_fields().0);
            sign_on.stan = Stan::new(999_999).ok();
            sign_on.network_code = Some(NetworkCode::SignOn);
            let frame = self.frame(&sign_on).context("encode sign-on")?;
            tls.write_all(&frame).await?;
            let mut buf = BytesMut::new();
            let answer = loop {
                if let Some(f) = self
                    .bank
                    .framer
                    .decode(&mut buf)
                    .context("sign-on answer")?
                {
                    break self
                        .bank
                        .codec
                        .decode(&f.message)
                        .context("sign-on answer")?;
                }
                if tls.read_buf(&mut buf).await? == 0 {
                    anyhow::bail!(
                        "closed by the switch before the sign-on answer (certificate refused?)"
                    );
                }
            };
            if answer.response_code != Some(ResponseCode::APPROVED) {
                anyhow::bail!("sign-on refused");
            }
        }
        Ok(tls)
    }

    /// Send payments on one open link and check their answers, until the
    /// budget is settled, the link breaks or `shutdown`.
    async fn drive<S>(self: Arc<Self>, index: usize, stream: S, mut shutdown: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let pending: Arc<Mutex<HashMap<Key, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
        let room = Arc::new(Semaphore::new(self.cfg.max_in_flight));
        let reader = {
            let (me, pending, room) = (self.clone(), pending.clone(), room.clone());
            tokio::spawn(async move {
                let mut buf = BytesMut::with_capacity(16 * 1024);
                loop {
                    loop {
                        match me.bank.framer.decode(&mut buf) {
                            Ok(Some(f)) => me.answer(&f.message, &pending, &room).await,
                            Ok(None) => break,
                            Err(_) => return,
                        }
                    }
                    match rd.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
        };
        let mut reader = AbortOnDrop(reader);
        // Per-link pacing: each link sends rate / links per second.
        let period = (self.cfg.rate > 0.0)
            .then(|| Duration::from_secs_f64(self.cfg.links as f64 / self.cfg.rate));
        let mut pace = period.map(|p| {
            let mut i = tokio::time::interval(p);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let mut sending = true;
        loop {
            if !sending && lock(&pending).is_empty() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = &mut reader.0 => break,
                _ = sweep.tick() => self.sweep(&pending, &room),
                permit = room.clone().acquire_owned(), if sending => {
                    let Ok(permit) = permit else { break };
                    if let Some(p) = pace.as_mut() {
                        p.tick().await;
                    }
                    let Some(n) = self.take() else {
                        sending = false;
                        continue;
                    };
                    let payment = self.payment(n);
                    let Some(key) = Key::of_request(self.bank.style, &payment) else {
                        self.fail(1);
                        continue;
                    };
                    let frame = match self.seal_and_frame(payment).await {
                        Some(f) => f,
                        None => {
                            self.fail(1);
                            continue;
                        }
                    };
                    lock(&pending).insert(key, Instant::now() + timeout);
                    permit.forget();
                    if wr.write_all(&frame).await.is_err() {
                        break;
                    }
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // What is still pending on a broken (or stopped) link has no answer.
        let lost = std::mem::take(&mut *lock(&pending)).len() as u64;
        if lost > 0 {
            eprintln!(
                "bank-sim: {}: client link {index}: {lost} payment(s) without an answer",
                self.bank.name
            );
            self.fail(lost);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    }

    fn fail(&self, n: u64) {
        self.stats.errors.fetch_add(n, Ordering::Relaxed);
        self.settle(n);
    }

    fn sweep(&self, pending: &Mutex<HashMap<Key, Instant>>, room: &Semaphore) {
        let now = Instant::now();
        let mut p = lock(pending);
        let before = p.len();
        p.retain(|_, deadline| *deadline > now);
        let expired = (before - p.len()) as u64;
        drop(p);
        if expired > 0 {
            self.stats.timeouts.fetch_add(expired, Ordering::Relaxed);
            self.fail(expired);
            room.add_permits(expired as usize);
        }
    }

    /// One frame from the switch: match it, verify it, count it.
    async fn answer(
        &self,
        message: &[u8],
        pending: &Mutex<HashMap<Key, Instant>>,
        room: &Semaphore,
    ) {
        let decoded = match &self.bank.auth {
            Some(_) => self.bank.codec.decode_authenticated(message),
            None => self.bank.codec.decode(message),
        };
        let Ok(a) = decoded else {
            self.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let matched =
            Key::of_answer(self.bank.style, &a).is_some_and(|k| lock(pending).remove(&k).is_some());
        if !matched || !a.is_response() {
            self.stats.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        }
        room.add_permits(1);
        self.settle(1);
        if let Some(auth) = &self.bank.auth {
            if auth.verify(&a).await.is_err() {
                self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let counter = if a.response_code == Some(ResponseCode::APPROVED) {
            &self.stats.approved
        } else {
            &self.stats.declined
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Payment number `n`: to the targets in turn.
    fn payment(&self, n: u64) -> Transaction {
        let target = &self.cfg.targets[(n % self.cfg.targets.len() as u64) as usize];
        let (f7, date) = super::server::utc_now_fields();
        let code = &self.bank.code;
        let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
        t.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
        t.amount = AmountMinor::new(self.cfg.amount_minor).ok();
        t.currency = Some(Currency::HKD);
        t.transmitted_at = Some(f7);
        t.stan = Stan::new((n % 999_998) as u32 + 1).ok();
        // Unique per run and payment: the boot time keeps restarts apart.
        t.rrn = Rrn::parse(
            format!("{code}{:09}", (self.boot_ms / 1000 + n) % 1_000_000_000).as_bytes(),
        )
        .ok();
        t.acquirer = InstitutionId::parse(code.as_bytes()).ok();
        t.terminal_id = TerminalId::parse(format!("BSIM{code}0").as_bytes()).ok();
        t.sending_bank = BankCode::parse(code.as_bytes()).ok();
        t.receiving_bank = BankCode::parse(target.bank.as_bytes()).ok();
        t.debtor_account = Account::parse(format!("{code}000000100").as_bytes()).ok();
        let creditor = target.account.as_deref().unwrap_or(DEFAULT_CREDITOR);
        t.creditor_account = Account::parse(creditor.as_bytes()).ok();
        let id = format!("BSIMC{code}{}{n}", self.boot_ms % 10_000_000_000);
        t.idempotency_key = IdempotencyKey::parse(id.as_bytes()).ok();
        if self.bank.style != Style::Iso8583 {
            t.message_id = MessageId::parse(id.as_bytes()).ok();
            t.end_to_end_id = EndToEndId::parse(id.as_bytes()).ok();
            t.settlement_date = Some(date);
        }
        t
    }

    async fn seal_and_frame(&self, mut t: Transaction) -> Option<BytesMut> {
        if let Some(auth) = &self.bank.auth {
            auth.seal(&*self.bank.codec, &mut t, false).await.ok()?;
        }
        self.frame(&t).ok()
    }

    fn frame(&self, t: &Transaction) -> anyhow::Result<BytesMut> {
        let mut out = BytesMut::with_capacity(512);
        let header = vec![0u8; self.bank.framer.config().header_len];
        let mark = self.bank.framer.begin(&header, &mut out)?;
        self.bank.codec.encode(t, &mut out)?;
        self.bank.framer.finish(mark, &mut out)?;
        Ok(out)
    }
}

/// What matches an answer to a payment on one link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Iso { stan: u32, rrn: String },
    Id(String),
}

impl Key {
    fn of_request(style: Style, t: &Transaction) -> Option<Key> {
        match style {
            Style::Iso8583 => Some(Key::Iso {
                stan: t.stan?.value(),
                rrn: t.rrn?.as_str().to_owned(),
            }),
            Style::Iso20022 | Style::Json => Some(Key::Id(t.message_id?.as_str().to_owned())),
        }
    }

    fn of_answer(style: Style, t: &Transaction) -> Option<Key> {
        match style {
            Style::Iso8583 | Style::Json => Self::of_request(style, t),
            Style::Iso20022 => Some(Key::Id(t.original_message_id?.as_str().to_owned())),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
