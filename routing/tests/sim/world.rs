//! The simulated world around the switch core: virtual clock, event queue
//! ordered by (time, sequence), upstream clients, links, banks, the journal,
//! and the fault schedule's effects. One `SplitMix64` drives every choice.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use fps_codecs::model::{
    Account, AmountMinor, AuthId, BankCode, Currency, IdempotencyKey, InstitutionId, Mti,
    ProcessingCode, ResponseCode, Rrn, Stan, TerminalId, Transaction, TransmissionDateTime,
};
use fps_routing::{Millis, RequestKey, SplitMix64};

use super::bank::Bank;
use super::check;
use super::faults::{Fault, FaultSchedule};
use super::journal::{Journal, Record};
use super::switch::{Env, Output, Pending, SwitchCore};
use super::{
    Bugs, MatchKey, Origin, ReqId, ToBank, ToSwitch, TxnId, ATTEMPT_TIMEOUT_MS, BANK_CODES,
    CLIENTS, CLIENT_DEADLINE_MS, CLIENT_STOP, DRAIN_BOUND_MS, HEAL_AT, LINKS, MAX_EVENTS,
    ORIGINALS, SWITCH_BUDGET_MS, TRAFFIC_END,
};

/// Most follow-up requests (retries) behind one original.
const MAX_DEPTH: u8 = 3;

/// Where an upstream request stands, as its client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not sent yet (or never: after `CLIENT_STOP`).
    Scheduled,
    /// Delivered to the switch, no answer yet.
    AtSwitch,
    /// The switch was down: connection refused.
    Refused,
    /// The switch crashed with it unanswered: connection lost.
    Lost,
    /// Answered.
    Answered,
}

/// The answer a request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub at: Millis,
    pub code: ResponseCode,
    pub auth: Option<AuthId>,
    /// The bank transaction it reports (answers of originals only).
    pub txn: Option<TxnId>,
}

/// One upstream request.
#[derive(Debug, Clone)]
pub struct Request {
    pub origin: Origin,
    /// F123 (else the key is F32+F7+F11+F37).
    pub explicit: bool,
    pub bank: usize,
    pub amount: u64,
    pub depth: u8,
    pub sent_at: Millis,
    pub status: Status,
    pub answer: Option<Answer>,
    /// How many answers arrived (must end at most 1).
    pub answers: u32,
}

#[derive(Debug)]
struct LinkState {
    bank: usize,
    up: bool,
    /// Connection incarnation: answers of an older one are lost.
    epoch: u32,
    /// Match keys the switch waits on.
    in_flight: BTreeSet<MatchKey>,
}

#[derive(Debug)]
enum Ev {
    Send(ReqId),
    ClientDeadline(ReqId),
    ToBank {
        link: usize,
        conn: u32,
        msg: ToBank,
    },
    ToSwitch {
        link: usize,
        conn: u32,
        msg: ToSwitch,
    },
    LookupDone {
        sw: u32,
        token: u64,
        scope: usize,
        key: RequestKey,
    },
    Timer {
        sw: u32,
    },
    Fault(usize),
    LinkUp {
        link: usize,
        conn: u32,
    },
    CrashNow {
        sw: u32,
        down_ms: u64,
    },
    Restart {
        sw: u32,
    },
    Heal,
    Operator,
}

/// Counters of what happened, summed over seeds for coverage.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub counts: BTreeMap<String, u64>,
}

impl Stats {
    pub fn add(&mut self, what: &str, n: u64) {
        if n > 0 {
            *self.counts.entry(what.to_string()).or_insert(0) += n;
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        for (k, v) in &other.counts {
            self.add(k, *v);
        }
    }

    pub fn get(&self, what: &str) -> u64 {
        self.counts.get(what).copied().unwrap_or(0)
    }
}

/// What one seed did.
#[derive(Debug)]
pub struct SeedReport {
    pub schedule: FaultSchedule,
    pub violations: Vec<String>,
    pub stats: Stats,
    pub trace: Vec<String>,
}

/// Run one seed. `trace` keeps the event trace (for replays).
pub fn run_seed(seed: u64, bugs: Bugs, trace: bool) -> SeedReport {
    let mut w = World::new(seed, bugs, trace);
    w.run();
    let mut violations = std::mem::take(&mut w.violations);
    violations.extend(check::check(&w));
    w.finish_stats();
    SeedReport {
        schedule: w.schedule.clone(),
        violations,
        stats: w.stats,
        trace: w.trace.unwrap_or_default(),
    }
}

/// The simulated world. Fields are read by the checker.
pub struct World {
    seed: u64,
    rng: SplitMix64,
    pub now: Millis,
    seq: u64,
    queue: BinaryHeap<Reverse<(Millis, u64)>>,
    events: BTreeMap<u64, Ev>,
    pub schedule: FaultSchedule,
    bugs: Bugs,
    pub journal: Journal,
    pub core: Option<SwitchCore>,
    /// Switch process incarnation.
    epoch: u32,
    clock_offset_ms: u64,
    pub banks: Vec<Bank>,
    links: Vec<LinkState>,
    pub requests: Vec<Request>,
    next_key: [u32; CLIENTS],
    timers: BTreeSet<Millis>,
    out: VecDeque<Output>,
    pub violations: Vec<String>,
    trace: Option<Vec<String>>,
    pub stats: Stats,
}

impl World {
    fn new(seed: u64, bugs: Bugs, trace: bool) -> Self {
        let mut rng = SplitMix64::new(seed);
        let schedule = FaultSchedule::draw(&mut rng);
        let core_seed = rng.next_u64();
        let mut w = World {
            seed: core_seed,
            rng,
            now: Millis::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            schedule,
            bugs,
            journal: Journal::default(),
            core: Some(SwitchCore::new(core_seed)),
            epoch: 0,
            clock_offset_ms: 0,
            banks: (0..BANK_CODES.len()).map(|_| Bank::default()).collect(),
            links: LINKS
                .iter()
                .map(|(_, bank)| LinkState {
                    bank: *bank,
                    up: true,
                    epoch: 0,
                    in_flight: BTreeSet::new(),
                })
                .collect(),
            requests: Vec::new(),
            next_key: [0; CLIENTS],
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            violations: Vec::new(),
            trace: trace.then(Vec::new),
            stats: Stats::default(),
        };
        for i in 0..w.schedule.faults.len() {
            let s = w.schedule.faults[i];
            if matches!(
                s.fault,
                Fault::LinkReset { .. } | Fault::SwitchCrash { .. } | Fault::ClockJump { .. }
            ) {
                w.at(s.from, Ev::Fault(i));
            }
        }
        for _ in 0..ORIGINALS {
            let at = Millis(w.rng.next_u64() % TRAFFIC_END.0);
            let scope = w.pick(CLIENTS);
            let key = w.next_key[scope];
            w.next_key[scope] += 1;
            let bank = match w.rng.next_u64() % 10 {
                0..=4 => 0,
                5..=7 => 1,
                _ => 2,
            };
            let r = Request {
                origin: Origin { scope, key },
                explicit: w.rng.next_u64() % 5 != 0,
                bank,
                amount: 100 + w.rng.next_u64() % 100_000,
                depth: 0,
                sent_at: at,
                status: Status::Scheduled,
                answer: None,
                answers: 0,
            };
            w.add_request(r.clone(), at);
            // Concurrent duplicates while the original is in flight.
            if w.roll(100) {
                let later = at.plus_ms(1 + w.rng.next_u64() % 80);
                w.add_request(
                    Request {
                        depth: 1,
                        ..r.clone()
                    },
                    later,
                );
            }
            if w.roll(30) {
                let later = at.plus_ms(1 + w.rng.next_u64() % 80);
                w.add_request(
                    Request {
                        depth: 1,
                        amount: r.amount + 1,
                        ..r.clone()
                    },
                    later,
                );
            }
        }
        w.at(HEAL_AT, Ev::Heal);
        w
    }

    fn run(&mut self) {
        let end = HEAL_AT.plus_ms(DRAIN_BOUND_MS);
        let mut steps = 0;
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            if at > end {
                break;
            }
            steps += 1;
            if steps > MAX_EVENTS {
                self.violation(format!("runaway simulation: more than {MAX_EVENTS} events"));
                break;
            }
            self.now = at;
            let ev = self
                .events
                .remove(&seq)
                .expect("every queued event is stored");
            self.handle(ev);
            self.pump();
        }
        self.now = end;
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Send(req) => self.send(req),
            Ev::ClientDeadline(req) => {
                if self.requests[req.0].status == Status::AtSwitch {
                    self.violation(format!("{req:?} got no answer within its deadline"));
                }
            }
            Ev::ToBank { link, conn, msg } => self.at_bank(link, conn, msg),
            Ev::ToSwitch { link, conn, msg } => {
                if self.links[link].epoch != conn || self.core.is_none() {
                    self.log(|| format!("lost on reset link {link}: {msg:?}"));
                    return;
                }
                self.log(|| format!("bank->switch link {link}: {msg:?}"));
                self.call(|c, e| c.on_bank(e, link, msg));
            }
            Ev::LookupDone {
                sw,
                token,
                scope,
                key,
            } => {
                if sw == self.epoch && self.schedule.journal_failing(self.now) {
                    self.log(|| format!("lookup {token} failed: storage error"));
                    self.call(|c, e| c.on_lookup_failed(e, token));
                } else if sw == self.epoch {
                    let stored = self.journal.stored_key(scope, &key);
                    self.log(|| format!("lookup {token} found {}", stored.is_some()));
                    self.call(|c, e| c.on_lookup(e, token, stored));
                }
            }
            Ev::Timer { sw } => {
                self.timers.remove(&self.now);
                if sw == self.epoch {
                    self.call(|c, e| c.on_timeout(e));
                }
            }
            Ev::Fault(i) => self.point_fault(i),
            Ev::LinkUp { link, conn } => {
                let l = &mut self.links[link];
                if l.epoch == conn && !l.up {
                    l.up = true;
                    self.log(|| format!("link {link} up"));
                    if let Some(c) = self.core.as_mut() {
                        c.on_link_up(link);
                    }
                }
            }
            Ev::CrashNow { sw, down_ms } => {
                if sw == self.epoch && self.core.is_some() {
                    self.journal.kill();
                    self.crash(down_ms);
                }
            }
            Ev::Restart { sw } => {
                if sw == self.epoch && self.core.is_none() {
                    self.restart();
                }
            }
            Ev::Heal => {
                self.log(|| "heal: faults off".to_string());
                for link in 0..self.links.len() {
                    if !self.links[link].up {
                        self.links[link].up = true;
                        if let Some(c) = self.core.as_mut() {
                            c.on_link_up(link);
                        }
                    }
                }
                if self.core.is_none() {
                    self.restart();
                }
                self.at(self.now.plus_ms(3_000), Ev::Operator);
            }
            Ev::Operator => {
                let now = self.switch_now();
                if let Some(c) = self.core.as_mut() {
                    let n = c.rearm_parked(now);
                    self.stats.add("operator re-armed parked", n as u64);
                    self.log(|| format!("operator re-armed {n} parked reversals"));
                }
                if self.now < HEAL_AT.plus_ms(DRAIN_BOUND_MS - 5_000) {
                    self.at(self.now.plus_ms(2_000), Ev::Operator);
                }
            }
        }
    }

    fn send(&mut self, req: ReqId) {
        if self.now > CLIENT_STOP {
            return;
        }
        let r = &mut self.requests[req.0];
        r.sent_at = self.now;
        if self.core.is_none() {
            r.status = Status::Refused;
            self.stats.add("refused (switch down)", 1);
            self.log(|| format!("{req:?} refused: switch down"));
            self.follow_up(req);
            return;
        }
        r.status = Status::AtSwitch;
        let tx = build_tx(r, req.0);
        let (scope, origin) = (r.origin.scope, r.origin);
        let p = Pending {
            req,
            scope,
            origin,
            tx,
            deadline: self.switch_now().plus_ms(SWITCH_BUDGET_MS),
        };
        let r = &self.requests[req.0];
        let (origin, amount) = (r.origin, r.amount);
        self.log(|| format!("{req:?} -> switch {origin:?} amount {amount}"));
        self.at(
            self.now.plus_ms(CLIENT_DEADLINE_MS),
            Ev::ClientDeadline(req),
        );
        self.call(|c, e| c.on_request(e, p));
    }

    fn at_bank(&mut self, link: usize, conn: u32, msg: ToBank) {
        let bank = self.links[link].bank;
        if self.schedule.bank_out(bank, self.now) == Some(true) {
            self.log(|| format!("bank {bank} black-holed {msg:?}"));
            return;
        }
        let rejecting = self.schedule.reversals_rejected(bank, self.now);
        let reply = self.banks[bank].handle(msg, rejecting, &mut self.rng, self.now);
        self.log(|| format!("bank {bank} got {msg:?} -> {reply:?}"));
        let now = self.now;
        let drop = self.schedule.permille(now, |f| match f {
            Fault::AnswerDropped { permille } => Some(*permille),
            _ => None,
        });
        if self.roll(drop) {
            self.stats.add("answers dropped", 1);
            self.log(|| "  answer dropped".to_string());
            return;
        }
        let mut delay = 5 + self.rng.next_u64() % 60;
        let jitter = self.schedule.permille(now, |f| match f {
            Fault::AnswersReordered { jitter_ms } => Some(*jitter_ms),
            _ => None,
        });
        if jitter > 0 {
            delay += self.rng.next_u64() % jitter;
        }
        let late = self.schedule.permille(now, |f| match f {
            Fault::AnswerLate { permille } => Some(*permille),
            _ => None,
        });
        if self.roll(late) {
            self.stats.add("answers late", 1);
            delay += ATTEMPT_TIMEOUT_MS + self.rng.next_u64() % 1_500;
        }
        self.at(
            now.plus_ms(delay),
            Ev::ToSwitch {
                link,
                conn,
                msg: reply,
            },
        );
        let dup = self.schedule.permille(now, |f| match f {
            Fault::AnswerDuplicated { permille } => Some(*permille),
            _ => None,
        });
        if self.roll(dup) {
            self.stats.add("answers duplicated", 1);
            let again = now.plus_ms(delay + 1 + self.rng.next_u64() % 50);
            self.at(
                again,
                Ev::ToSwitch {
                    link,
                    conn,
                    msg: reply,
                },
            );
        }
    }

    fn point_fault(&mut self, i: usize) {
        let s = self.schedule.faults[i];
        self.log(|| format!("fault: {:?}", s.fault));
        match s.fault {
            Fault::LinkReset { link, down_ms } => {
                self.stats.add("link resets", 1);
                let l = &mut self.links[link];
                l.up = false;
                l.epoch += 1;
                l.in_flight.clear();
                let conn = l.epoch;
                self.at(self.now.plus_ms(down_ms), Ev::LinkUp { link, conn });
                self.call(|c, e| c.on_link_down(e, link));
            }
            Fault::SwitchCrash {
                torn,
                mid_write,
                down_ms,
            } => {
                if self.core.is_none() {
                    return;
                }
                if mid_write {
                    let skip = (self.rng.next_u64() % 3) as u32;
                    self.journal.arm_crash(skip, torn);
                    let sw = self.epoch;
                    self.at(self.now.plus_ms(300), Ev::CrashNow { sw, down_ms });
                } else {
                    if torn {
                        let r = self.plausible_next_record();
                        self.log(|| format!("torn record: {r:?}"));
                        self.journal.now = self.now;
                        self.journal.tear(r);
                    } else {
                        self.journal.kill();
                    }
                    self.crash(down_ms);
                }
            }
            Fault::ClockJump { ms } => {
                self.stats.add("clock jumps", 1);
                self.clock_offset_ms += ms;
                if self.core.is_some() && self.timers.insert(self.now) {
                    let sw = self.epoch;
                    self.at(self.now, Ev::Timer { sw });
                }
            }
            _ => {}
        }
    }

    /// A record the switch could have been writing: a final approval for
    /// the latest transaction sent without one, else the settlement of the
    /// latest reversal. If recovery trusted it, money would be lost track of.
    fn plausible_next_record(&self) -> Record {
        let mut settled = BTreeSet::new();
        for s in self
            .journal
            .records()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take(64)
        {
            match &s.record {
                Record::Final { txn, .. }
                | Record::Abandoned { txn }
                | Record::Reversing { txn }
                | Record::ReversalDone { txn, .. } => {
                    settled.insert(*txn);
                }
                Record::Sent { txn, .. } if !settled.contains(txn) => {
                    return Record::Final {
                        txn: *txn,
                        code: ResponseCode::APPROVED,
                        auth: None,
                    };
                }
                _ => {}
            }
        }
        Record::ReversalDone {
            txn: TxnId(0),
            acknowledged: true,
        }
    }

    fn crash(&mut self, down_ms: u64) {
        self.stats.add("switch crashes", 1);
        self.log(|| "switch crashed".to_string());
        if let Some(core) = self.core.take() {
            self.add_core_stats(&core);
        }
        self.out.clear();
        self.epoch += 1;
        self.timers.clear();
        for l in &mut self.links {
            l.epoch += 1;
            l.in_flight.clear();
        }
        for i in 0..self.requests.len() {
            if self.requests[i].status == Status::AtSwitch {
                self.requests[i].status = Status::Lost;
                self.stats.add("requests lost in crash", 1);
                self.follow_up(ReqId(i));
            }
        }
        let mut at = self.now.plus_ms(down_ms);
        if let Some(until) = self.schedule.journal_failing_until(at) {
            at = until;
        }
        let sw = self.epoch;
        self.at(at, Ev::Restart { sw });
    }

    fn restart(&mut self) {
        let torn = self.journal.reopen(self.bugs.trust_torn_records);
        self.stats
            .add("torn records dropped at recovery", torn as u64);
        self.log(|| format!("switch restarts (torn records dropped: {torn})"));
        let link_up: Vec<bool> = self.links.iter().map(|l| l.up).collect();
        let (now, bugs) = (self.switch_now(), self.bugs);
        self.journal.failing = self.schedule.journal_failing(self.now);
        self.journal.now = self.now;
        let mut out = Vec::new();
        let mut env = Env {
            now,
            journal: &mut self.journal,
            out: &mut out,
            rng: &mut self.rng,
            hsm_sign_permille: 0,
            hsm_verify_permille: 0,
            bugs,
        };
        let core = SwitchCore::recover(self.seed ^ u64::from(self.epoch), &mut env, &link_up);
        self.core = Some(core);
        self.out.extend(out);
    }

    /// Call into the core with an `Env` for now; queue its outputs.
    fn call(&mut self, f: impl FnOnce(&mut SwitchCore, &mut Env<'_>)) {
        if self.journal.is_dead() {
            return;
        }
        let now = self.switch_now();
        let sign = self.schedule.permille(self.now, |f| match f {
            Fault::HsmError {
                sign: true,
                permille,
            } => Some(*permille),
            _ => None,
        });
        let verify = self.schedule.permille(self.now, |f| match f {
            Fault::HsmError {
                sign: false,
                permille,
            } => Some(*permille),
            _ => None,
        });
        self.journal.failing = self.schedule.journal_failing(self.now);
        self.journal.now = self.now;
        let Some(core) = self.core.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        let mut env = Env {
            now,
            journal: &mut self.journal,
            out: &mut out,
            rng: &mut self.rng,
            hsm_sign_permille: sign,
            hsm_verify_permille: verify,
            bugs: self.bugs,
        };
        f(core, &mut env);
        self.out.extend(out);
    }

    /// Apply queued outputs, crash a dead process, re-arm the core's timer.
    fn pump(&mut self) {
        // Bounded: outputs only beget outputs through refused sends, each
        // of which ends in a retry timer or an answer.
        while let Some(o) = self.out.pop_front() {
            self.apply(o);
        }
        if self.journal.is_dead() {
            if self.core.is_some() {
                self.stats.add("fail-stop or mid-write crashes", 1);
                let down = 50 + self.rng.next_u64() % 200;
                self.crash(down);
            }
            return;
        }
        let Some(due) = self.core.as_ref().and_then(|c| c.poll_timeout()) else {
            return;
        };
        let due = Millis(due.0.saturating_sub(self.clock_offset_ms)).max(self.now);
        if self.timers.insert(due) {
            let sw = self.epoch;
            self.at(due, Ev::Timer { sw });
        }
    }

    fn apply(&mut self, o: Output) {
        match o {
            Output::Answer {
                req,
                code,
                auth,
                txn,
            } => {
                let now = self.now;
                let r = &mut self.requests[req.0];
                r.answers += 1;
                if r.status != Status::AtSwitch {
                    let st = r.status;
                    self.violation(format!(
                        "{req:?} answered {code:?} while {st:?} (answers: {})",
                        self.requests[req.0].answers
                    ));
                    return;
                }
                r.status = Status::Answered;
                r.answer = Some(Answer {
                    at: now,
                    code,
                    auth,
                    txn,
                });
                self.stats.add(&format!("answered {}", code.as_str()), 1);
                self.log(|| format!("{req:?} <- {code:?} auth {auth:?} txn {txn:?}"));
                self.follow_up(req);
            }
            Output::Send { link, msg } => {
                let l = &self.links[link];
                let key = msg.match_key();
                let refused = !l.up || self.schedule.bank_out(l.bank, self.now) == Some(false);
                if refused {
                    self.log(|| format!("link {link} refused {msg:?}"));
                    self.call(|c, e| c.on_send_failed(e, link, key));
                    return;
                }
                let conn = l.epoch;
                if !self.links[link].in_flight.insert(key) {
                    self.violation(format!(
                        "duplicate match key {key:?} in flight on link {link}"
                    ));
                }
                let mut delay = 1 + self.rng.next_u64() % 10;
                let late = self.schedule.permille(self.now, |f| match f {
                    Fault::AnswerLate { permille } => Some(*permille / 2),
                    _ => None,
                });
                if self.roll(late) {
                    self.stats.add("requests held in transit", 1);
                    delay += ATTEMPT_TIMEOUT_MS + self.rng.next_u64() % 1_500;
                }
                self.log(|| format!("switch->bank link {link}: {msg:?} (+{delay}ms)"));
                self.at(self.now.plus_ms(delay), Ev::ToBank { link, conn, msg });
            }
            Output::Forget { link, key } => {
                self.links[link].in_flight.remove(&key);
            }
            Output::Lookup { token, scope, key } => {
                let at = self.now.plus_ms(1 + self.rng.next_u64() % 20);
                let sw = self.epoch;
                self.at(
                    at,
                    Ev::LookupDone {
                        sw,
                        token,
                        scope,
                        key,
                    },
                );
            }
        }
    }

    /// The client reacts to an answer, a refusal or a lost connection.
    fn follow_up(&mut self, req: ReqId) {
        let r = self.requests[req.0].clone();
        if r.depth >= MAX_DEPTH || self.now >= CLIENT_STOP {
            return;
        }
        let code = r.answer.map(|a| a.code);
        let transient = matches!(r.status, Status::Refused | Status::Lost)
            || matches!(code, Some(c) if c == ResponseCode::BANK_UNAVAILABLE || c == ResponseCode::SYSTEM_MALFUNCTION);
        let next = Request {
            depth: r.depth + 1,
            status: Status::Scheduled,
            answer: None,
            answers: 0,
            ..r.clone()
        };
        if self.roll(if transient { 700 } else { 150 }) {
            let at = self.now.plus_ms(20 + self.rng.next_u64() % 1_500);
            self.add_request(next.clone(), at);
        }
        if !transient && code != Some(ResponseCode::DUPLICATE) && self.roll(60) {
            let at = self.now.plus_ms(10 + self.rng.next_u64() % 800);
            self.add_request(
                Request {
                    amount: r.amount + 1,
                    ..next
                },
                at,
            );
        }
    }

    fn add_request(&mut self, r: Request, at: Millis) {
        let id = ReqId(self.requests.len());
        self.requests.push(Request { sent_at: at, ..r });
        self.at(at, Ev::Send(id));
    }

    fn switch_now(&self) -> Millis {
        self.now.plus_ms(self.clock_offset_ms)
    }

    fn at(&mut self, at: Millis, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq)));
    }

    fn roll(&mut self, permille: u64) -> bool {
        permille > 0 && self.rng.next_u64() % 1000 < permille
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n as u64) as usize
    }

    fn violation(&mut self, what: String) {
        let line = format!("{:?}: {what}", self.now);
        self.log(|| format!("VIOLATION {line}"));
        self.violations.push(line);
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{:>6} {}", self.now.0, f()));
        }
    }

    fn add_core_stats(&mut self, c: &SwitchCore) {
        let s = c.stats.clone();
        for (k, v) in [
            ("idempotency lookups", s.lookups),
            ("idempotency lookup hits", s.lookup_hits),
            ("idempotency lookups failed (96)", s.lookups_failed),
            ("duplicates waited in flight", s.waiters),
            ("hsm verify failures", s.verify_failed),
            ("hsm sign failures", s.sign_failed),
            ("late answers matched", s.late_responses),
            ("late declines closed reversal", s.late_closed),
            ("unmatched answers ignored", s.unmatched),
            ("reversals parked", s.parked),
            ("reversals acknowledged", s.reversal_acks),
            ("reversals closed (nothing to reverse)", s.reversal_closed),
            ("reversals queued by recovery", s.recovered_reversals),
            ("96 on journal write failure", s.journal_96),
            ("idempotency keys evicted", c.evicted()),
        ] {
            self.stats.add(k, v);
        }
    }

    fn finish_stats(&mut self) {
        if let Some(core) = self.core.take() {
            self.add_core_stats(&core);
            self.core = Some(core);
        }
        self.stats
            .add("journal write failures", self.journal.write_failures);
        for s in &self.schedule.faults {
            self.stats.add(&format!("fault {}", s.fault.kind()), 1);
        }
    }

    /// Match keys the links still hold.
    pub fn link_keys_in_flight(&self) -> usize {
        self.links.iter().map(|l| l.in_flight.len()).sum()
    }
}

/// The canonical request a client sends.
fn build_tx(r: &Request, req_no: usize) -> Transaction {
    let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
    t.processing_code = Some(ProcessingCode::CREDIT_TRANSFER);
    t.amount = AmountMinor::new(r.amount).ok();
    t.currency = Some(Currency::HKD);
    t.receiving_bank = BankCode::parse(BANK_CODES[r.bank]).ok();
    t.creditor_account =
        Account::parse(format!("1234567{:03}", r.origin.key % 1000).as_bytes()).ok();
    t.acquirer = InstitutionId::parse(format!("100{}", r.origin.scope).as_bytes()).ok();
    t.terminal_id = TerminalId::parse(b"TERM0001").ok();
    // F123 keys: each retry has its own F7/F11/F37. Derived keys: a retry
    // repeats them (they are the key).
    let n = if r.explicit {
        req_no
    } else {
        r.origin.key as usize
    };
    if r.explicit {
        let key = format!("k{}-{}", r.origin.scope, r.origin.key);
        t.idempotency_key = IdempotencyKey::parse(key.as_bytes()).ok();
    }
    t.stan = Stan::new((n % 999_999) as u32 + 1).ok();
    t.rrn = Rrn::parse(format!("{n:012}").as_bytes()).ok();
    let secs = n % 86_400;
    let f7 = format!(
        "0101{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    t.transmitted_at = TransmissionDateTime::parse(f7.as_bytes()).ok();
    t
}
