//! The simulated switch core: the real routing state machines composed the
//! way the daemon composes them (routing/README.md "How the switch drives
//! it"), quinn-style: events in (`on_*`), effects out ([`Output`]), timers
//! through `poll_timeout` / `on_timeout`. It never reads a clock: the world
//! passes the switch's clock (which may jump) in [`Env::now`].
//!
//! Journal discipline: `Sent` before a credit goes out, `Final` before its
//! answer goes upstream, `Reversing` before 68 goes upstream,
//! `ReversalSent` before a reversal's STAN is used. A failed append of a new
//! transaction's `Sent` answers 96 (nothing happened); a failed `Final` or
//! `Reversing` or `ReversalDone` stops the process (fail-stop: recovery
//! settles it).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use fps_codecs::model::{AuthId, BankCode, Currency, Mti, ResponseCode, Stan, Transaction};
use fps_routing::{
    Attempt, AttemptResult, Claim, ClientScope, HealthTable, IdempotencyIndex, Lease, LinkId,
    LinkOutcome, Lookup, LookupTicket, Millis, Outcome, ProxyDirectory, RequestKey, RetryDecision,
    ReversalAttempt, ReversalConfig, ReversalId, ReversalItem, ReversalQueue, ReversalStatus,
    ReversalStyle, Router, RoutingConfig, SendFailure, SplitMix64, StoredKey, Ticket,
};

use super::journal::{Journal, JournalError, Record};
use super::{
    BankReply, Bugs, MatchKey, Origin, ReqId, ToBank, ToSwitch, TxnId, ATTEMPT_TIMEOUT_MS,
    BANK_CODES, CLIENTS, INDEX_CAPACITY, LINKS, RETENTION_MS, REVERSAL_TIMEOUT_MS,
};

/// Reversal attempts handed out per bank per timer tick.
const REVERSALS_PER_TICK: usize = 16;
/// Expired idempotency keys dropped per timer tick.
const EXPIRE_PER_TICK: usize = 64;

/// An effect of the core.
#[derive(Debug, Clone)]
pub enum Output {
    /// The final answer to an upstream request.
    Answer {
        req: ReqId,
        code: ResponseCode,
        auth: Option<AuthId>,
        /// The bank transaction it reports on, when it is the original's.
        txn: Option<TxnId>,
    },
    /// Write a message on a link (the link registers its match key).
    Send { link: usize, msg: ToBank },
    /// Stop waiting for an answer with this match key on this link.
    Forget { link: usize, key: MatchKey },
    /// Read the durable key store for an evicted key.
    Lookup {
        token: u64,
        scope: usize,
        key: RequestKey,
    },
}

/// What the world lends the core for one call.
pub struct Env<'a> {
    /// The switch's clock.
    pub now: Millis,
    pub journal: &'a mut Journal,
    pub out: &'a mut Vec<Output>,
    pub rng: &'a mut SplitMix64,
    /// HSM failure chances (per thousand) in force now.
    pub hsm_sign_permille: u64,
    pub hsm_verify_permille: u64,
    pub bugs: Bugs,
}

impl Env<'_> {
    fn emit(&mut self, o: Output) {
        // Effects after the process died never happen.
        if !self.journal.is_dead() {
            self.out.push(o);
        }
    }

    fn roll(&mut self, permille: u64) -> bool {
        permille > 0 && self.rng.next_u64() % 1000 < permille
    }
}

/// A request as the switch holds it until claimed or answered.
#[derive(Debug, Clone)]
pub struct Pending {
    pub req: ReqId,
    pub scope: usize,
    pub origin: Origin,
    pub tx: Transaction,
    /// The switch's deadline for it (its clock).
    pub deadline: Millis,
}

#[derive(Debug)]
struct Txn {
    ticket: Option<Ticket>,
    pending: Pending,
    bank: usize,
    candidates: Vec<LinkId>,
    /// A `Sent` record made its id durable (ids not journaled are reused
    /// after a restart, so answers only name journaled ones).
    journaled: bool,
}

#[derive(Debug)]
struct Active {
    txn: TxnId,
    lease: Lease,
    attempt: Attempt,
    timer: (Millis, u64),
}

#[derive(Debug)]
struct RevActive {
    bank: usize,
    attempt: ReversalAttempt,
    timer: (Millis, u64),
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Attempt { link: usize, stan: u32 },
    Retry { txn: TxnId, attempt: Attempt },
    Reversal { link: usize, stan: u32 },
}

/// Counters of interesting paths, for coverage.
#[derive(Debug, Default, Clone)]
pub struct CoreStats {
    pub lookups: u64,
    pub lookup_hits: u64,
    pub lookups_failed: u64,
    pub waiters: u64,
    pub verify_failed: u64,
    pub sign_failed: u64,
    pub late_responses: u64,
    pub late_closed: u64,
    pub unmatched: u64,
    pub parked: u64,
    pub reversal_acks: u64,
    pub reversal_closed: u64,
    pub recovered_reversals: u64,
    pub journal_96: u64,
}

/// Resources held; all zero (but `parked`) when idle.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resources {
    pub txns: usize,
    pub attempts: usize,
    pub reversal_attempts: usize,
    pub late_entries: usize,
    pub waiters: usize,
    pub lookups: usize,
    pub index_in_flight: usize,
    pub permits: u32,
    pub reversal_items: usize,
    pub parked: usize,
    pub timers: usize,
    pub work: usize,
}

/// The routing configuration of the simulated switch.
pub fn router() -> Router {
    let cfg: RoutingConfig = toml::from_str(
        r#"
        [[routes]]
        bank_code = "004"
        primary = "hsbc"
        secondaries = ["hsbc-dr"]

        [[routes]]
        bank_code = "012"
        primary = "boc"
        secondaries = ["boc-2"]

        [[routes]]
        bank_code = "024"
        primary = "hase"

        [breaker]
        failure_threshold = 3
        cool_down_ms = 200
        max_cool_down_ms = 1600
        half_open_probes = 2

        [retry]
        max_attempts = 3
        base_backoff_ms = 20
        max_backoff_ms = 200
        min_attempt_ms = 800

        [max_in_flight]
        hsbc = 8
        hsbc-dr = 4
        boc = 6
        boc-2 = 4
        hase = 6
        "#,
    )
    .expect("the simulation's routing config parses");
    let names: Vec<&str> = LINKS.iter().map(|(n, _)| *n).collect();
    cfg.build(&names)
        .expect("the simulation's routing config builds")
}

/// How each bank wants unknown outcomes settled.
pub fn style(bank: usize) -> ReversalStyle {
    [
        ReversalStyle::Iso8583Reversal,
        ReversalStyle::Iso20022InquiryThenCancel,
        ReversalStyle::Iso8583Advice,
    ][bank]
}

/// The switch core.
pub struct SwitchCore {
    router: Router,
    health: HealthTable,
    proxies: ProxyDirectory,
    index: IdempotencyIndex,
    reversals: Vec<ReversalQueue>,
    scopes: Vec<ClientScope>,
    txns: BTreeMap<TxnId, Txn>,
    /// Credit attempts awaiting an answer, by (link, STAN).
    attempts: BTreeMap<(usize, u32), Active>,
    /// Reversal attempts awaiting an answer, by (link, STAN).
    rev_attempts: BTreeMap<(usize, u32), RevActive>,
    /// Timed-out attempts whose late answer settles a reversal:
    /// (link, STAN) -> (txn, bank).
    late: BTreeMap<(usize, u32), (TxnId, usize)>,
    /// Only with `Bugs::forward_late_answers`: whom to forward a late answer to.
    late_reqs: BTreeMap<TxnId, ReqId>,
    waiters: BTreeMap<u64, Pending>,
    lookups: BTreeMap<u64, (LookupTicket, Pending)>,
    timers: BTreeMap<(Millis, u64), Timer>,
    timer_seq: u64,
    next_lookup: u64,
    /// Next STAN per bank.
    stans: Vec<u32>,
    next_txn: u64,
    link_up: Vec<bool>,
    work: VecDeque<Pending>,
    pub stats: CoreStats,
}

impl SwitchCore {
    /// A fresh core (empty journal).
    pub fn new(seed: u64) -> Self {
        let router = router();
        let health = router.new_health();
        SwitchCore {
            router,
            health,
            proxies: ProxyDirectory::default(),
            index: IdempotencyIndex::new(INDEX_CAPACITY, Duration::from_millis(RETENTION_MS)),
            reversals: (0..BANK_CODES.len())
                .map(|b| {
                    ReversalQueue::new(
                        ReversalConfig {
                            max_attempts: 5,
                            base_backoff_ms: 100,
                            max_backoff_ms: 800,
                            capacity: 10_000,
                        },
                        seed ^ b as u64,
                    )
                })
                .collect(),
            scopes: (0..CLIENTS)
                .map(|c| {
                    ClientScope::new(&format!("CN=gateway-{c}")).expect("a short scope is valid")
                })
                .collect(),
            txns: BTreeMap::new(),
            attempts: BTreeMap::new(),
            rev_attempts: BTreeMap::new(),
            late: BTreeMap::new(),
            late_reqs: BTreeMap::new(),
            waiters: BTreeMap::new(),
            lookups: BTreeMap::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            next_lookup: 0,
            stans: vec![1; BANK_CODES.len()],
            next_txn: 1,
            link_up: vec![true; LINKS.len()],
            work: VecDeque::new(),
            stats: CoreStats::default(),
        }
    }

    /// Restart: rebuild from the journal. Keys are looked up in storage for a
    /// retention; every transaction sent without a final answer is journaled
    /// "reversing" and queued; reversals under way resume; STANs and txn ids
    /// resume past the journal's.
    pub fn recover(seed: u64, env: &mut Env<'_>, link_up: &[bool]) -> Self {
        let mut core = SwitchCore::new(seed);
        core.link_up = link_up.to_vec();
        #[derive(Default)]
        struct Seen {
            bank: usize,
            stan: u32,
            origin: Option<Origin>,
            amount: u64,
            open_sends: u32,
            settled: bool,
            reversing: bool,
            done: bool,
        }
        let mut seen: BTreeMap<TxnId, Seen> = BTreeMap::new();
        for r in env.journal.replay() {
            match r {
                Record::Sent {
                    txn,
                    bank,
                    stan,
                    origin,
                    amount,
                    ..
                } => {
                    let s = seen.entry(*txn).or_default();
                    s.bank = *bank;
                    s.stan = *stan;
                    s.origin = Some(*origin);
                    s.amount = *amount;
                    s.open_sends += 1;
                    core.stans[*bank] = core.stans[*bank].max(stan + 1);
                    core.next_txn = core.next_txn.max(txn.0 + 1);
                }
                Record::NotSent { txn, .. } => {
                    let s = seen.entry(*txn).or_default();
                    s.open_sends = s.open_sends.saturating_sub(1);
                }
                Record::Final { txn, .. } | Record::Abandoned { txn } => {
                    seen.entry(*txn).or_default().settled = true;
                }
                Record::Reversing { txn } => seen.entry(*txn).or_default().reversing = true,
                Record::ReversalSent { bank, stan, .. } => {
                    core.stans[*bank] = core.stans[*bank].max(stan + 1);
                }
                Record::ReversalDone { txn, .. } => seen.entry(*txn).or_default().done = true,
                Record::LateResponse { .. } | Record::Parked { .. } => {}
            }
        }
        if env.bugs.forget_stans_on_restart {
            core.stans = vec![1; BANK_CODES.len()];
        }
        core.index
            .require_lookup_until(env.now.plus_ms(RETENTION_MS));
        for (txn, s) in &seen {
            if s.origin.is_none() {
                continue;
            }
            let needs = if s.reversing {
                !s.done
            } else if !s.settled && s.open_sends > 0 {
                // Sent, answer unknown: settle it like a timeout.
                if env.journal.append(Record::Reversing { txn: *txn }).is_err() {
                    env.journal.kill();
                    return core;
                }
                true
            } else {
                if !s.settled {
                    // Never left: nothing to settle; best effort.
                    let _ = env.journal.append(Record::Abandoned { txn: *txn });
                }
                false
            };
            if needs {
                core.stats.recovered_reversals += 1;
                let item = reversal_item(*txn, s.bank, s.stan, s.amount);
                core.reversals[s.bank]
                    .enqueue(item, env.now)
                    .expect("the reversal queue's capacity exceeds the simulation's volume");
            }
        }
        core
    }

    /// An upstream request arrived.
    pub fn on_request(&mut self, env: &mut Env<'_>, p: Pending) {
        self.work.push_back(p);
        self.drain_work(env);
    }

    /// The storage lookup `token` failed (read error): release the key,
    /// answer 96 (the client may retry), re-claim whoever waited on it.
    pub fn on_lookup_failed(&mut self, env: &mut Env<'_>, token: u64) {
        let Some((ticket, p)) = self.lookups.remove(&token) else {
            return;
        };
        self.stats.lookups_failed += 1;
        let waiters = self.index.abandon_lookup(ticket);
        let o = Outcome::new(ResponseCode::SYSTEM_MALFUNCTION);
        answer(env, p.req, &o, None);
        self.requeue(waiters);
        self.drain_work(env);
    }

    /// The storage lookup `token` found `stored`.
    pub fn on_lookup(&mut self, env: &mut Env<'_>, token: u64, stored: Option<StoredKey>) {
        let Some((ticket, p)) = self.lookups.remove(&token) else {
            return;
        };
        if stored.is_some() {
            self.stats.lookup_hits += 1;
        }
        match self.index.resolve_lookup(ticket, stored, env.now) {
            Lookup::New(t) => self.start(env, t, p),
            Lookup::Duplicate { outcome, waiters } => {
                answer(env, p.req, &outcome, None);
                for w in waiters {
                    if let Some(wp) = self.waiters.remove(&w.id()) {
                        answer(env, wp.req, &outcome, None);
                    }
                }
            }
            Lookup::Mismatch { waiters } => {
                let o = Outcome::new(ResponseCode::DUPLICATE);
                answer(env, p.req, &o, None);
                for w in waiters {
                    if let Some(wp) = self.waiters.remove(&w.id()) {
                        answer(env, wp.req, &o, None);
                    }
                }
            }
        }
        self.drain_work(env);
    }

    /// A message from a bank on `link`.
    pub fn on_bank(&mut self, env: &mut Env<'_>, link: usize, msg: ToSwitch) {
        if env.roll(env.hsm_verify_permille) {
            // Not trusted: as if never received. Never approved.
            self.stats.verify_failed += 1;
            return;
        }
        match msg {
            ToSwitch::Credit {
                stan,
                txn,
                code,
                auth,
            } => {
                if let Some(a) = self.attempts.remove(&(link, stan)) {
                    self.timers.remove(&a.timer);
                    env.emit(Output::Forget {
                        link,
                        key: MatchKey { class: 2, stan },
                    });
                    self.health.settle(a.lease, LinkOutcome::Answered, env.now);
                    debug_assert_eq!(a.txn, txn);
                    let outcome = Outcome {
                        auth_id: auth,
                        ..Outcome::new(code)
                    };
                    self.finish(env, a.txn, outcome);
                } else if let Some(&(txn, bank)) = self.late.get(&(link, stan)) {
                    self.stats.late_responses += 1;
                    if env.bugs.forward_late_answers {
                        if let Some(req) = self.late_req(txn) {
                            answer(env, req, &Outcome::new(code), Some(txn));
                        }
                    }
                    let _ = env.journal.append(Record::LateResponse {
                        txn,
                        approved: code.is_approved(),
                    });
                    let status = self.reversals[bank].on_late_response(
                        ReversalId(txn.0),
                        code.is_approved(),
                        env.now,
                    );
                    if status == ReversalStatus::ClosedNothingToReverse {
                        self.stats.late_closed += 1;
                    }
                    self.reversal_status(env, txn, status);
                } else {
                    // A duplicate of an answer already matched.
                    self.stats.unmatched += 1;
                }
            }
            ToSwitch::Reversal { stan, txn, reply } => {
                let Some(r) = self.rev_attempts.remove(&(link, stan)) else {
                    self.stats.unmatched += 1;
                    return;
                };
                self.timers.remove(&r.timer);
                env.emit(Output::Forget {
                    link,
                    key: ToBank::Reversal {
                        stan,
                        txn,
                        message: r.attempt.message,
                    }
                    .match_key(),
                });
                let result = match reply {
                    BankReply::Acknowledged => AttemptResult::Acknowledged,
                    BankReply::Rejected => AttemptResult::Rejected,
                    BankReply::NotExecuted => AttemptResult::StatusSaysNotExecuted,
                    BankReply::Executed => AttemptResult::StatusSaysExecuted,
                    // A failed inquiry says nothing about the original: it
                    // must not read as "original rejected".
                    BankReply::InquiryFailed => AttemptResult::Timeout,
                };
                let status = self.reversals[r.bank].on_result(r.attempt, result, env.now);
                self.reversal_status(env, txn, status);
            }
        }
        self.drain_work(env);
    }

    /// The link refused the message with `key` (nothing was sent).
    pub fn on_send_failed(&mut self, env: &mut Env<'_>, link: usize, key: MatchKey) {
        if let Some(a) = self.attempts.remove(&(link, key.stan)) {
            self.timers.remove(&a.timer);
            self.health
                .settle(a.lease, SendFailure::NotSent.link_outcome(), env.now);
            let _ = env.journal.append(Record::NotSent {
                txn: a.txn,
                stan: key.stan,
            });
            self.not_sent(env, a.txn, a.attempt);
        } else if let Some(r) = self.rev_attempts.remove(&(link, key.stan)) {
            self.timers.remove(&r.timer);
            let txn = TxnId(r.attempt.id.0);
            let status =
                self.reversals[r.bank].on_result(r.attempt, AttemptResult::Timeout, env.now);
            self.reversal_status(env, txn, status);
        }
        self.drain_work(env);
    }

    /// The link lost its connection: whatever was written on it has an
    /// unknown outcome now.
    pub fn on_link_down(&mut self, env: &mut Env<'_>, link: usize) {
        self.link_up[link] = false;
        let keys: Vec<(usize, u32)> = self
            .attempts
            .range((link, 0)..=(link, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(a) = self.attempts.remove(&k) {
                self.timers.remove(&a.timer);
                self.health.settle(a.lease, LinkOutcome::Failed, env.now);
                self.unknown(env, a.txn, k, a.attempt);
            }
        }
        let keys: Vec<(usize, u32)> = self
            .rev_attempts
            .range((link, 0)..=(link, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(r) = self.rev_attempts.remove(&k) {
                self.timers.remove(&r.timer);
                let txn = TxnId(r.attempt.id.0);
                let status =
                    self.reversals[r.bank].on_result(r.attempt, AttemptResult::Timeout, env.now);
                self.reversal_status(env, txn, status);
            }
        }
        self.drain_work(env);
    }

    /// The link is connected again.
    pub fn on_link_up(&mut self, link: usize) {
        self.link_up[link] = true;
    }

    /// When `on_timeout` should run next (switch clock).
    pub fn poll_timeout(&self) -> Option<Millis> {
        let timers = self.timers.keys().next().map(|(t, _)| *t);
        let queues = self.reversals.iter().filter_map(|q| q.poll_timeout()).min();
        [timers, queues, self.index.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Run everything due by `env.now`.
    pub fn on_timeout(&mut self, env: &mut Env<'_>) {
        // Bounded: each pass removes one timer; handlers add only timers
        // due later (backoff > 0 or a timeout) or none.
        while let Some((&key, _)) = self.timers.iter().next() {
            if key.0 > env.now || env.journal.is_dead() {
                break;
            }
            let Some(timer) = self.timers.remove(&key) else {
                break;
            };
            match timer {
                Timer::Attempt { link, stan } => {
                    if let Some(a) = self.attempts.remove(&(link, stan)) {
                        env.emit(Output::Forget {
                            link,
                            key: MatchKey { class: 2, stan },
                        });
                        self.health.settle(a.lease, LinkOutcome::Failed, env.now);
                        self.unknown(env, a.txn, (link, stan), a.attempt);
                    }
                }
                Timer::Retry { txn, attempt } => self.attempt(env, txn, attempt),
                Timer::Reversal { link, stan } => {
                    if let Some(r) = self.rev_attempts.remove(&(link, stan)) {
                        let txn = TxnId(r.attempt.id.0);
                        env.emit(Output::Forget {
                            link,
                            key: ToBank::Reversal {
                                stan,
                                txn,
                                message: r.attempt.message,
                            }
                            .match_key(),
                        });
                        let status = self.reversals[r.bank].on_result(
                            r.attempt,
                            AttemptResult::Timeout,
                            env.now,
                        );
                        self.reversal_status(env, txn, status);
                    }
                }
            }
        }
        for bank in 0..self.reversals.len() {
            if env.journal.is_dead() {
                break;
            }
            for a in self.reversals[bank].poll_due(env.now, REVERSALS_PER_TICK) {
                self.send_reversal(env, bank, a);
            }
        }
        self.index.expire(env.now, EXPIRE_PER_TICK);
        self.drain_work(env);
    }

    /// The operator re-arms every parked reversal (heal phase).
    pub fn rearm_parked(&mut self, now: Millis) -> usize {
        let mut n = 0;
        for q in &mut self.reversals {
            let ids: Vec<ReversalId> = q.parked().map(|i| i.id).collect();
            for id in ids {
                n += usize::from(q.retry_parked(id, now));
            }
        }
        n
    }

    /// What the core holds now.
    pub fn resources(&self) -> Resources {
        Resources {
            txns: self.txns.len(),
            attempts: self.attempts.len(),
            reversal_attempts: self.rev_attempts.len(),
            late_entries: self.late.len(),
            waiters: self.waiters.len(),
            lookups: self.lookups.len(),
            index_in_flight: self.index.in_flight(),
            permits: self.health.iter().map(|(_, h)| h.limit().in_flight()).sum(),
            reversal_items: self.reversals.iter().map(|q| q.len()).sum(),
            parked: self.reversals.iter().map(|q| q.parked_len()).sum(),
            timers: self.timers.len(),
            work: self.work.len(),
        }
    }

    /// Idempotency keys evicted from memory so far.
    pub fn evicted(&self) -> u64 {
        self.index.evicted()
    }

    fn drain_work(&mut self, env: &mut Env<'_>) {
        // Bounded: each pass pops one request; pushes come only from
        // `give_up`, at most MAX_WAITERS_PER_KEY per abandoned key.
        while let Some(p) = self.work.pop_front() {
            if env.journal.is_dead() {
                self.work.clear();
                return;
            }
            match self.index.claim(&self.scopes[p.scope], &p.tx, env.now) {
                Err(e) => answer(env, p.req, &Outcome::new(e.response_code()), None),
                Ok(Claim::Mismatch) => {
                    answer(env, p.req, &Outcome::new(ResponseCode::DUPLICATE), None)
                }
                Ok(Claim::Duplicate(o)) => answer(env, p.req, &o, None),
                Ok(Claim::InFlight(w)) => {
                    self.stats.waiters += 1;
                    self.waiters.insert(w.id(), p);
                }
                Ok(Claim::NeedsLookup(l)) => {
                    self.stats.lookups += 1;
                    self.next_lookup += 1;
                    let token = self.next_lookup;
                    env.emit(Output::Lookup {
                        token,
                        scope: p.scope,
                        key: l.key().clone(),
                    });
                    self.lookups.insert(token, (l, p));
                }
                Ok(Claim::New(t)) => self.start(env, t, p),
            }
        }
    }

    fn start(&mut self, env: &mut Env<'_>, ticket: Ticket, p: Pending) {
        let (bank, candidates) = match self.router.resolve(&p.tx, &self.proxies) {
            Ok(d) => {
                let code = d.bank();
                let bank = BANK_CODES
                    .iter()
                    .position(|c| c.as_slice() == code.as_bytes())
                    .expect("routes only to simulated banks");
                (bank, d.candidates().to_vec())
            }
            Err(e) => {
                let waiters = self.index.abandon(ticket);
                answer(env, p.req, &Outcome::new(e.response_code()), None);
                self.requeue(waiters);
                return;
            }
        };
        let id = TxnId(self.next_txn);
        self.next_txn += 1;
        let n = candidates.len();
        self.txns.insert(
            id,
            Txn {
                ticket: Some(ticket),
                pending: p,
                bank,
                candidates,
                journaled: false,
            },
        );
        self.attempt(env, id, Attempt::first(0, n));
    }

    fn attempt(&mut self, env: &mut Env<'_>, id: TxnId, attempt: Attempt) {
        let Some(txn) = self.txns.get(&id) else {
            return;
        };
        let lease = match self
            .health
            .acquire(&txn.candidates, attempt.candidate, env.now)
        {
            Ok(l) => l,
            Err(_) => return self.not_sent(env, id, attempt),
        };
        let attempt = Attempt {
            candidate: lease.candidate(),
            ..attempt
        };
        if env.roll(env.hsm_sign_permille) {
            self.stats.sign_failed += 1;
            self.health
                .settle(lease, LinkOutcome::NotAttempted, env.now);
            return self.not_sent(env, id, attempt);
        }
        let link = lease.link().index();
        let bank = txn.bank;
        let stan = self.stans[bank];
        let p = &txn.pending;
        let ticket = txn
            .ticket
            .as_ref()
            .expect("a txn being sent holds its ticket");
        let record = Record::Sent {
            txn: id,
            req: p.req,
            scope: p.scope,
            key: ticket.key().clone(),
            fingerprint: ticket.fingerprint(),
            origin: p.origin,
            amount: p.tx.amount.map_or(0, |a| a.minor()),
            bank,
            link,
            stan,
        };
        let (origin, amount, deadline) =
            (p.origin, p.tx.amount.map_or(0, |a| a.minor()), p.deadline);
        self.stans[bank] += 1;
        match env.journal.append(record) {
            Ok(()) => {}
            Err(JournalError::Dead) => {
                self.health
                    .settle(lease, LinkOutcome::NotAttempted, env.now);
                return;
            }
            Err(JournalError::WriteFailed) => {
                self.health
                    .settle(lease, LinkOutcome::NotAttempted, env.now);
                self.stats.journal_96 += 1;
                return self.give_up(env, id, ResponseCode::SYSTEM_MALFUNCTION);
            }
        }
        if let Some(t) = self.txns.get_mut(&id) {
            t.journaled = true;
        }
        let due = env
            .now
            .plus_ms(ATTEMPT_TIMEOUT_MS)
            .min(deadline)
            .max(env.now);
        let timer = self.set_timer(due, Timer::Attempt { link, stan });
        self.attempts.insert(
            (link, stan),
            Active {
                txn: id,
                lease,
                attempt,
                timer,
            },
        );
        env.emit(Output::Send {
            link,
            msg: ToBank::Credit {
                stan,
                txn: id,
                origin,
                amount,
            },
        });
    }

    fn not_sent(&mut self, env: &mut Env<'_>, id: TxnId, attempt: Attempt) {
        let Some(txn) = self.txns.get(&id) else {
            return;
        };
        let deadline = txn.pending.deadline;
        let jitter = env.rng.next_u64();
        match self.router.retry_policy().decide(
            attempt,
            SendFailure::NotSent,
            env.now,
            deadline,
            jitter,
        ) {
            RetryDecision::RetryOn(r) => {
                self.set_timer(
                    r.not_before,
                    Timer::Retry {
                        txn: id,
                        attempt: r.attempt,
                    },
                );
            }
            RetryDecision::GiveUp(code) => self.give_up(env, id, code),
            RetryDecision::Reverse => unreachable!("NotSent is never reversed"),
        }
    }

    /// Nothing reached the bank: free the key, answer `code`, re-claim the
    /// duplicates that waited.
    fn give_up(&mut self, env: &mut Env<'_>, id: TxnId, code: ResponseCode) {
        let Some(mut txn) = self.txns.remove(&id) else {
            return;
        };
        let _ = env.journal.append(Record::Abandoned { txn: id });
        let waiters = match txn.ticket.take() {
            Some(t) => self.index.abandon(t),
            None => Vec::new(),
        };
        let named = txn.journaled.then_some(id);
        answer(env, txn.pending.req, &Outcome::new(code), named);
        self.requeue(waiters);
    }

    fn requeue(&mut self, waiters: Vec<fps_routing::WaiterToken>) {
        for w in waiters {
            if let Some(p) = self.waiters.remove(&w.id()) {
                self.work.push_back(p);
            }
        }
    }

    /// The bank answered in time: journal, then answer everyone.
    fn finish(&mut self, env: &mut Env<'_>, id: TxnId, outcome: Outcome) {
        if env
            .journal
            .append(Record::Final {
                txn: id,
                code: outcome.response_code,
                auth: outcome.auth_id,
            })
            .is_err()
        {
            // Fail-stop: the answer must not go upstream undurable.
            env.journal.kill();
            return;
        }
        let Some(mut txn) = self.txns.remove(&id) else {
            return;
        };
        let waiters = match txn.ticket.take() {
            Some(t) => self.index.complete(t, outcome.clone(), env.now),
            None => Vec::new(),
        };
        answer(env, txn.pending.req, &outcome, Some(id));
        for w in waiters {
            if let Some(p) = self.waiters.remove(&w.id()) {
                answer(env, p.req, &outcome, None);
            }
        }
    }

    /// The attempt at (link, STAN) has an unknown outcome.
    fn unknown(&mut self, env: &mut Env<'_>, id: TxnId, key: (usize, u32), attempt: Attempt) {
        let Some(txn) = self.txns.get(&id) else {
            return;
        };
        let deadline = txn.pending.deadline;
        if env.bugs.resend_unknown_as_new {
            return self.not_sent(env, id, attempt);
        }
        let jitter = env.rng.next_u64();
        let decision = self.router.retry_policy().decide(
            attempt,
            SendFailure::OutcomeUnknown,
            env.now,
            deadline,
            jitter,
        );
        assert_eq!(
            decision,
            RetryDecision::Reverse,
            "an unknown outcome is never retried"
        );
        if env.journal.append(Record::Reversing { txn: id }).is_err() {
            env.journal.kill();
            return;
        }
        let Some(mut txn) = self.txns.remove(&id) else {
            return;
        };
        let late = Outcome::new(ResponseCode::LATE);
        let waiters = match txn.ticket.take() {
            Some(t) => self.index.complete(t, late.clone(), env.now),
            None => Vec::new(),
        };
        answer(env, txn.pending.req, &late, Some(id));
        for w in waiters {
            if let Some(p) = self.waiters.remove(&w.id()) {
                answer(env, p.req, &late, None);
            }
        }
        self.late.insert(key, (id, txn.bank));
        let amount = txn.pending.tx.amount.map_or(0, |a| a.minor());
        let item = reversal_item(id, txn.bank, key.1, amount);
        self.reversals[txn.bank]
            .enqueue(item, env.now)
            .expect("the reversal queue's capacity exceeds the simulation's volume");
        if env.bugs.forward_late_answers {
            self.late_reqs.insert(id, txn.pending.req);
        }
    }

    fn late_req(&self, txn: TxnId) -> Option<ReqId> {
        self.late_reqs.get(&txn).copied()
    }

    fn send_reversal(&mut self, env: &mut Env<'_>, bank: usize, a: ReversalAttempt) {
        let txn = TxnId(a.id.0);
        let link = LINKS
            .iter()
            .enumerate()
            .find(|(l, (_, b))| *b == bank && self.link_up[*l])
            .map(|(l, _)| l);
        let signed = !env.roll(env.hsm_sign_permille);
        let Some(link) = link.filter(|_| signed) else {
            let status = self.reversals[bank].on_result(a, AttemptResult::Timeout, env.now);
            return self.reversal_status(env, txn, status);
        };
        let stan = self.next_stan(bank);
        if env
            .journal
            .append(Record::ReversalSent { txn, bank, stan })
            .is_err()
        {
            let status = self.reversals[bank].on_result(a, AttemptResult::Timeout, env.now);
            return self.reversal_status(env, txn, status);
        }
        let timer = self.set_timer(
            env.now.plus_ms(REVERSAL_TIMEOUT_MS),
            Timer::Reversal { link, stan },
        );
        self.rev_attempts.insert(
            (link, stan),
            RevActive {
                bank,
                attempt: a,
                timer,
            },
        );
        env.emit(Output::Send {
            link,
            msg: ToBank::Reversal {
                stan,
                txn,
                message: a.message,
            },
        });
    }

    fn reversal_status(&mut self, env: &mut Env<'_>, txn: TxnId, status: ReversalStatus) {
        match status {
            ReversalStatus::Acknowledged | ReversalStatus::ClosedNothingToReverse => {
                let acknowledged = status == ReversalStatus::Acknowledged;
                if acknowledged {
                    self.stats.reversal_acks += 1;
                } else {
                    self.stats.reversal_closed += 1;
                }
                if env
                    .journal
                    .append(Record::ReversalDone { txn, acknowledged })
                    .is_err()
                {
                    // Fail-stop: recovery repeats the reversal (the bank
                    // acknowledges a repeat) and journals its settlement.
                    env.journal.kill();
                    return;
                }
                self.late.retain(|_, (t, _)| *t != txn);
                self.late_reqs.remove(&txn);
            }
            ReversalStatus::Parked => {
                self.stats.parked += 1;
                let _ = env.journal.append(Record::Parked { txn });
            }
            ReversalStatus::Pending | ReversalStatus::Unknown => {}
        }
    }

    fn next_stan(&mut self, bank: usize) -> u32 {
        let s = self.stans[bank];
        self.stans[bank] = s + 1;
        s
    }

    fn set_timer(&mut self, at: Millis, t: Timer) -> (Millis, u64) {
        self.timer_seq += 1;
        let key = (at, self.timer_seq);
        self.timers.insert(key, t);
        key
    }
}

fn answer(env: &mut Env<'_>, req: ReqId, o: &Outcome, txn: Option<TxnId>) {
    env.emit(Output::Answer {
        req,
        code: o.response_code,
        auth: o.auth_id,
        txn,
    });
}

fn reversal_item(txn: TxnId, bank: usize, stan: u32, amount: u64) -> ReversalItem {
    let mut original = Transaction::new(Mti::CREDIT_TRANSFER);
    original.stan = Stan::new(stan % (Stan::MAX + 1)).ok();
    original.amount = fps_codecs::model::AmountMinor::new(amount).ok();
    original.currency = Some(Currency::HKD);
    ReversalItem {
        id: ReversalId(txn.0),
        bank: BankCode::parse(BANK_CODES[bank]).expect("simulated bank codes are valid"),
        original,
        style: style(bank),
    }
}
