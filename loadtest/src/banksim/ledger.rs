//! What the simulated banks decide and remember: the outcome rules, the
//! reversal and status-inquiry handling, and the ledger served on
//! `GET /ledger`. No I/O and no clock: the caller passes `now_ms`.
//!
//! # Identities
//!
//! - **Bank-level id**: what the bank itself sees as one message. ISO 8583:
//!   `RRN/STAN/terminal` (F37/F11/F41, the switch's outbound ids); ISO 20022:
//!   `GrpHdr/MsgId` (camt: `Assgnmt/Id`); JSON: `request_id`. The same
//!   bank-level id received again is a retransmission: it is counted in
//!   `times_seen` and answered with the first outcome, never booked twice.
//! - **End-to-end identity**: what survives the switch's mapping from the
//!   upstream request. In order of preference: the upstream idempotency key
//!   (F123; carried by the canonical ISO 8583 dialect and by JSON) as
//!   `key:<k>`; the ISO 20022 / JSON end-to-end id as `e2e:<id>` (the switch
//!   fills it with its first message id of the transfer); otherwise, for
//!   dialects carrying neither (e.g. `iso87-bcd-binary`), the upstream fields
//!   the switch passes through unchanged (F32, F7, F12, F13, F41, F42 and
//!   the amount) as `upstream:...`. The last is weak (two distinct payments
//!   may share it), so its duplicates are listed apart, as
//!   `suspect_double_debits`.
//! - **Double debit**: one end-to-end identity with more than one transaction
//!   approved and not reversed (checked on every snapshot).

use std::collections::HashMap;
use std::fmt::Write as _;

use fps_codecs::model::{
    Account, AuthId, EndToEndId, MessageId, ResponseCode, Rrn, Stan, Transaction,
    TransmissionDateTime, TxnKind,
};
use serde::Serialize;

use super::draw::Fault;

/// How a bank's messages are identified (from its codec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// ISO 8583: matched on MTI class, STAN, RRN, terminal.
    Iso8583,
    /// ISO 20022: answers name the request in `OrgnlMsgId`.
    Iso20022,
    /// JSON: answers echo `request_id`.
    Json,
}

/// Index of a bank in config order.
pub type BankIndex = usize;

/// Outcome of a credit transfer by the simulator's rules: debtor account
/// ending `51` -> 51, ending `05` -> 05, creditor account ending `14` -> 14,
/// otherwise approved.
pub fn credit_outcome(req: &Transaction) -> ResponseCode {
    let ends =
        |a: &Option<Account>, tail: &str| a.as_ref().is_some_and(|a| a.expose().ends_with(tail));
    if ends(&req.debtor_account, "51") {
        ResponseCode::INSUFFICIENT_FUNDS
    } else if ends(&req.debtor_account, "05") {
        ResponseCode::DO_NOT_HONOUR
    } else if ends(&req.creditor_account, "14") {
        ResponseCode::UNKNOWN_ACCOUNT
    } else {
        ResponseCode::APPROVED
    }
}

/// Per-bank counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BankStats {
    /// Messages decoded (every kind, retransmissions included).
    pub requests: u64,
    /// Distinct credit transfers booked.
    pub transactions: u64,
    /// Retransmissions of a bank-level id already seen.
    pub retransmissions: u64,
    /// Transfers approved.
    pub approved: u64,
    /// Transfers declined.
    pub declined: u64,
    /// Approved transfers later reversed.
    pub reversed: u64,
    /// Reversal, reversal advice and cancellation messages received.
    pub reversal_messages: u64,
    /// Reversal messages whose original was unknown or not approved.
    pub nothing_to_reverse: u64,
    /// Originals that arrived after their reversal (declined on arrival).
    pub reversed_before_original: u64,
    /// Status inquiries received.
    pub status_inquiries: u64,
    /// Network management messages (sign-on, echo ...).
    pub network: u64,
    /// Sign-ons (0800, F70 `001`) received (authenticated, with `auth`).
    pub sign_ons: u64,
    /// Sign-offs (0800, F70 `002`) received (authenticated, with `auth`).
    pub sign_offs: u64,
    /// Messages answered `12` (a kind the bank does not handle).
    pub unsupported: u64,
    /// Responses received (a bank only takes requests here): ignored.
    pub unexpected_responses: u64,
    /// Frames that did not decode as a message of the bank's codec.
    pub bad_messages: u64,
    /// Of those, requests still readable enough to be matched (canonical
    /// ISO 8583 of a sound layout, JSON or ISO 20022 with readable ids):
    /// answered `30` format error, never booked. The rest go unanswered.
    pub format_errors: u64,
    /// Requests whose MAC or signature was missing or did not verify
    /// (answered `63` security violation, never booked).
    pub auth_failures: u64,
    /// Broken length prefixes or oversize frames (connection closed).
    pub bad_frames: u64,
    /// Answers the codec could not encode (a simulator bug; never sent).
    pub encode_errors: u64,
    /// Sum of approved, not reversed amounts, in minor units.
    pub amount_approved_minor: u64,
    /// Faults applied.
    pub faults: FaultCounts,
    /// Connections accepted.
    pub connections: u64,
    /// TLS handshakes that failed (e.g. no client certificate).
    pub handshake_failures: u64,
    /// Restarts (`POST /banks/NAME/restart`).
    pub restarts: u64,
}

/// How many times each fault was applied.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FaultCounts {
    /// Answers never sent.
    pub drop: u64,
    /// Answers sent after `late_ms`.
    pub late: u64,
    /// Answers sent twice.
    pub duplicate: u64,
    /// Connections closed instead of answering.
    pub disconnect: u64,
    /// Malformed frames sent instead of the answer.
    pub garbage: u64,
    /// Answers sent with a corrupted MAC or signature.
    pub bad_mac: u64,
}

impl FaultCounts {
    fn add(&mut self, other: &FaultCounts) {
        self.drop += other.drop;
        self.late += other.late;
        self.duplicate += other.duplicate;
        self.disconnect += other.disconnect;
        self.garbage += other.garbage;
        self.bad_mac += other.bad_mac;
    }
}

/// Status of a booked transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Approved (`00`), funds moved.
    Approved,
    /// Declined with a code.
    Declined,
    /// Approved, then reversed.
    Reversed,
}

/// What a reversal message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReversalResult {
    /// The approved original is now reversed.
    Reversed,
    /// The original had been reversed before.
    AlreadyReversed,
    /// The original is unknown or was declined: acknowledged, nothing done.
    NothingToReverse,
    /// The original was unknown when the reversal came and arrived later:
    /// it was declined on arrival (a reversal overtook its original).
    BeforeOriginal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IdStrength {
    Strong,
    Weak,
}

#[derive(Debug)]
struct Entry {
    bank: BankIndex,
    bank_id: String,
    end_to_end: Option<(String, IdStrength)>,
    kind: &'static str,
    first_seen_ms: u64,
    last_seen_ms: u64,
    times_seen: u32,
    amount_minor: Option<u64>,
    currency: Option<u16>,
    debtor: Option<String>,
    creditor: Option<String>,
    code: ResponseCode,
    auth_id: Option<AuthId>,
    status: Status,
    reversal_messages: u32,
}

#[derive(Debug)]
struct ReversalRecord {
    bank: BankIndex,
    bank_id: String,
    kind: &'static str,
    original: Option<usize>,
    result: ReversalResult,
    first_seen_ms: u64,
    times_seen: u32,
}

/// Everything every simulated bank has seen. Bounded by `max_entries`
/// records (transfers plus reversal messages); beyond it answers are still
/// decided but not remembered (`unrecorded`).
#[derive(Debug)]
pub struct Ledger {
    banks: Vec<(String, String, Style)>,
    stats: Vec<BankStats>,
    max_entries: usize,
    unrecorded: u64,
    entries: Vec<Entry>,
    reversals: Vec<ReversalRecord>,
    by_bank_id: HashMap<(BankIndex, String), usize>,
    reversal_by_bank_id: HashMap<(BankIndex, String), usize>,
    by_iso_original: HashMap<(BankIndex, Stan, TransmissionDateTime), usize>,
    by_rrn: HashMap<(BankIndex, Rrn), usize>,
    by_message_id: HashMap<(BankIndex, MessageId), usize>,
    by_e2e_in_bank: HashMap<(BankIndex, EndToEndId), usize>,
    /// Reversals whose original had not arrived: the original's
    /// identities -> the reversal record (see [`Ledger::credit`]).
    early_reversals: HashMap<(BankIndex, OriginalRef), usize>,
    by_end_to_end: HashMap<String, Vec<usize>>,
    auth_seq: u64,
}

impl Ledger {
    /// A ledger for these banks `(name, code, style)` in config order.
    pub fn new(banks: Vec<(String, String, Style)>, max_entries: usize) -> Self {
        let stats = vec![BankStats::default(); banks.len()];
        Ledger {
            banks,
            stats,
            max_entries,
            unrecorded: 0,
            entries: Vec::new(),
            reversals: Vec::new(),
            by_bank_id: HashMap::new(),
            reversal_by_bank_id: HashMap::new(),
            by_iso_original: HashMap::new(),
            by_rrn: HashMap::new(),
            by_message_id: HashMap::new(),
            by_e2e_in_bank: HashMap::new(),
            early_reversals: HashMap::new(),
            by_end_to_end: HashMap::new(),
            auth_seq: 0,
        }
    }

    /// Counters of one bank, for the I/O side's own events.
    pub fn stats_mut(&mut self, bank: BankIndex) -> &mut BankStats {
        &mut self.stats[bank]
    }

    /// Count a fault applied to an answer of `bank`.
    pub fn record_fault(&mut self, bank: BankIndex, fault: Fault) {
        let f = &mut self.stats[bank].faults;
        match fault {
            Fault::Drop => f.drop += 1,
            Fault::Late => f.late += 1,
            Fault::Duplicate => f.duplicate += 1,
            Fault::Disconnect => f.disconnect += 1,
            Fault::Garbage => f.garbage += 1,
            Fault::BadMac => f.bad_mac += 1,
        }
    }

    /// Decide the answer to one request received by `bank`, and book it.
    /// `None` when nothing is to be answered (a response was received).
    pub fn handle(
        &mut self,
        bank: BankIndex,
        req: &Transaction,
        now_ms: u64,
    ) -> Option<Transaction> {
        self.stats[bank].requests += 1;
        if req.is_response() {
            self.stats[bank].unexpected_responses += 1;
            return None;
        }
        let answer = match req.kind() {
            Some(TxnKind::NetworkManagement) => {
                self.stats[bank].network += 1;
                req.response(ResponseCode::APPROVED)
            }
            Some(kind @ (TxnKind::CreditTransfer | TxnKind::Return)) => {
                self.credit(bank, req, kind, now_ms)
            }
            Some(kind @ (TxnKind::Reversal | TxnKind::ReversalAdvice)) => {
                self.reverse(bank, req, kind, now_ms)
            }
            Some(TxnKind::StatusInquiry) => {
                self.stats[bank].status_inquiries += 1;
                let code = match self.find_original(bank, req) {
                    Some(i) => self.entries[i].code,
                    None => ResponseCode::ORIGINAL_NOT_FOUND,
                };
                req.response(code)
            }
            None => {
                self.stats[bank].unsupported += 1;
                req.response(ResponseCode::INVALID_TRANSACTION)
            }
        };
        Some(answer)
    }

    fn credit(
        &mut self,
        bank: BankIndex,
        req: &Transaction,
        kind: TxnKind,
        now_ms: u64,
    ) -> Transaction {
        let style = self.banks[bank].2;
        let bank_id = bank_level_id(style, req);
        if let Some(&i) = self.by_bank_id.get(&(bank, bank_id.clone())) {
            let e = &mut self.entries[i];
            e.times_seen = e.times_seen.saturating_add(1);
            e.last_seen_ms = now_ms;
            let mut a = req.response(e.code);
            a.auth_id = e.auth_id;
            self.stats[bank].retransmissions += 1;
            return a;
        }
        // A reversal that overtook this original (it was stuck in a queue
        // when the switch timed out) already cancelled it: decline it, as an
        // issuer must, instead of booking a debit nobody will reverse.
        let early = original_refs(req)
            .into_iter()
            .find_map(|r| self.early_reversals.get(&(bank, r)).copied());
        let code = match early {
            Some(r) => {
                self.reversals[r].result = ReversalResult::BeforeOriginal;
                self.stats[bank].reversed_before_original += 1;
                ResponseCode::DO_NOT_HONOUR
            }
            None => credit_outcome(req),
        };
        let st = &mut self.stats[bank];
        st.transactions += 1;
        let mut answer = req.response(code);
        let status = if code.is_approved() {
            st.approved += 1;
            st.amount_approved_minor += req.amount.map_or(0, |a| a.minor());
            self.auth_seq += 1;
            let auth = format!("{:06}", self.auth_seq % 1_000_000);
            answer.auth_id = AuthId::parse(auth.as_bytes()).ok();
            Status::Approved
        } else {
            st.declined += 1;
            Status::Declined
        };
        if self.records() >= self.max_entries {
            self.unrecorded += 1;
            return answer;
        }
        let i = self.entries.len();
        let end_to_end = end_to_end_identity(req);
        if let Some((e2e, _)) = &end_to_end {
            self.by_end_to_end.entry(e2e.clone()).or_default().push(i);
        }
        if let (Some(stan), Some(f7)) = (req.stan, req.transmitted_at) {
            self.by_iso_original.insert((bank, stan, f7), i);
        }
        if let Some(rrn) = req.rrn {
            self.by_rrn.insert((bank, rrn), i);
        }
        if let Some(id) = req.message_id {
            self.by_message_id.insert((bank, id), i);
        }
        if let Some(id) = req.end_to_end_id {
            self.by_e2e_in_bank.insert((bank, id), i);
        }
        self.by_bank_id.insert((bank, bank_id.clone()), i);
        self.entries.push(Entry {
            bank,
            bank_id,
            end_to_end,
            kind: if kind == TxnKind::Return {
                "return"
            } else {
                "credit_transfer"
            },
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            times_seen: 1,
            amount_minor: req.amount.map(|a| a.minor()),
            currency: req.currency.map(|c| c.numeric()),
            debtor: req.debtor_account.as_ref().map(mask_account),
            creditor: req.creditor_account.as_ref().map(mask_account),
            code,
            auth_id: answer.auth_id,
            status,
            reversal_messages: 0,
        });
        answer
    }

    fn reverse(
        &mut self,
        bank: BankIndex,
        req: &Transaction,
        kind: TxnKind,
        now_ms: u64,
    ) -> Transaction {
        self.stats[bank].reversal_messages += 1;
        let style = self.banks[bank].2;
        let bank_id = bank_level_id(style, req);
        let answer = req.response(ResponseCode::APPROVED);
        if let Some(&r) = self.reversal_by_bank_id.get(&(bank, bank_id.clone())) {
            let rec = &mut self.reversals[r];
            rec.times_seen = rec.times_seen.saturating_add(1);
            self.stats[bank].retransmissions += 1;
            return answer;
        }
        let original = self.find_original(bank, req);
        let result = match original.map(|i| (i, self.entries[i].status)) {
            Some((i, Status::Approved)) => {
                let e = &mut self.entries[i];
                e.status = Status::Reversed;
                let amount = e.amount_minor.unwrap_or(0);
                let owner = e.bank;
                let st = &mut self.stats[owner];
                st.reversed += 1;
                st.amount_approved_minor = st.amount_approved_minor.saturating_sub(amount);
                ReversalResult::Reversed
            }
            Some((_, Status::Reversed)) => ReversalResult::AlreadyReversed,
            Some((_, Status::Declined)) | None => {
                self.stats[bank].nothing_to_reverse += 1;
                ReversalResult::NothingToReverse
            }
        };
        if let Some(i) = original {
            let e = &mut self.entries[i];
            e.reversal_messages = e.reversal_messages.saturating_add(1);
        }
        if self.records() >= self.max_entries {
            self.unrecorded += 1;
            return answer;
        }
        let kind = match (kind, style) {
            (TxnKind::ReversalAdvice, _) => "reversal_advice",
            (_, Style::Iso20022) => "cancellation",
            (_, Style::Json) => "cancel",
            _ => "reversal",
        };
        if original.is_none() {
            for r in reversal_refs(req) {
                self.early_reversals.insert((bank, r), self.reversals.len());
            }
        }
        self.reversal_by_bank_id
            .insert((bank, bank_id.clone()), self.reversals.len());
        self.reversals.push(ReversalRecord {
            bank,
            bank_id,
            kind,
            original,
            result,
            first_seen_ms: now_ms,
            times_seen: 1,
        });
        answer
    }

    /// The booked transfer a reversal or inquiry of `bank` refers to: by
    /// original message id (ISO 20022, JSON), F90 original STAN and
    /// transmission time (ISO 8583), end-to-end id, then the RRN.
    fn find_original(&self, bank: BankIndex, req: &Transaction) -> Option<usize> {
        let by_msg = req
            .original_message_id
            .and_then(|id| self.by_message_id.get(&(bank, id)));
        let by_f90 = || {
            req.original
                .and_then(|o| self.by_iso_original.get(&(bank, o.stan, o.transmitted_at)))
        };
        let by_e2e = || {
            req.end_to_end_id
                .and_then(|id| self.by_e2e_in_bank.get(&(bank, id)))
        };
        let by_rrn = || req.rrn.and_then(|r| self.by_rrn.get(&(bank, r)));
        by_msg
            .or_else(by_f90)
            .or_else(by_e2e)
            .or_else(by_rrn)
            .copied()
    }

    fn records(&self) -> usize {
        self.entries.len() + self.reversals.len()
    }

    /// The ledger as JSON (see the module docs); without the per-message
    /// lists when `summary` is set.
    pub fn to_json(&self, summary: bool) -> String {
        let banks: Vec<BankView<'_>> = self
            .banks
            .iter()
            .zip(&self.stats)
            .map(|((name, code, _), stats)| BankView { name, code, stats })
            .collect();
        let mut totals = Totals::default();
        for s in &self.stats {
            totals.requests += s.requests;
            totals.transactions += s.transactions;
            totals.retransmissions += s.retransmissions;
            totals.approved += s.approved;
            totals.declined += s.declined;
            totals.reversed += s.reversed;
            totals.reversal_messages += s.reversal_messages;
            totals.nothing_to_reverse += s.nothing_to_reverse;
            totals.reversed_before_original += s.reversed_before_original;
            totals.status_inquiries += s.status_inquiries;
            totals.network += s.network;
            totals.bad_messages += s.bad_messages;
            totals.format_errors += s.format_errors;
            totals.auth_failures += s.auth_failures;
            totals.bad_frames += s.bad_frames;
            totals.amount_approved_minor += s.amount_approved_minor;
            totals.faults.add(&s.faults);
        }
        let (double_debits, suspect) = self.double_debits();
        totals.double_debits = double_debits.len() as u64;
        totals.suspect_double_debits = suspect.len() as u64;
        totals.unrecorded = self.unrecorded;
        let name = |b: BankIndex| self.banks[b].0.as_str();
        let transactions = (!summary).then(|| {
            self.entries
                .iter()
                .map(|e| TxnView {
                    bank: name(e.bank),
                    bank_id: &e.bank_id,
                    end_to_end: e.end_to_end.as_ref().map(|(s, _)| s.as_str()),
                    kind: e.kind,
                    first_seen_ms: e.first_seen_ms,
                    last_seen_ms: e.last_seen_ms,
                    times_seen: e.times_seen,
                    amount_minor: e.amount_minor,
                    currency: e.currency,
                    debtor: e.debtor.as_deref(),
                    creditor: e.creditor.as_deref(),
                    status: e.status,
                    code: e.code.as_str().to_owned(),
                    auth_id: e.auth_id.as_ref().map(|a| a.as_str().to_owned()),
                    reversal_messages: e.reversal_messages,
                })
                .collect::<Vec<_>>()
        });
        let reversals = (!summary).then(|| {
            self.reversals
                .iter()
                .map(|r| ReversalView {
                    bank: name(r.bank),
                    bank_id: &r.bank_id,
                    kind: r.kind,
                    original: r.original.map(|i| self.entries[i].bank_id.as_str()),
                    result: r.result,
                    first_seen_ms: r.first_seen_ms,
                    times_seen: r.times_seen,
                })
                .collect::<Vec<_>>()
        });
        let view = LedgerView {
            totals,
            banks,
            double_debits,
            suspect_double_debits: suspect,
            truncated: self.unrecorded > 0,
            transactions,
            reversals,
        };
        serde_json::to_string_pretty(&view).unwrap_or_else(|_| "{}".to_owned())
    }

    fn double_debits(&self) -> (Vec<DoubleDebit<'_>>, Vec<DoubleDebit<'_>>) {
        let mut strong = Vec::new();
        let mut weak = Vec::new();
        for (e2e, idx) in &self.by_end_to_end {
            let approved: Vec<&Entry> = idx
                .iter()
                .map(|&i| &self.entries[i])
                .filter(|e| e.status == Status::Approved)
                .collect();
            if approved.len() < 2 {
                continue;
            }
            let dd = DoubleDebit {
                end_to_end: e2e,
                approvals: approved.len(),
                transactions: approved
                    .iter()
                    .map(|e| TxnRef {
                        bank: &self.banks[e.bank].0,
                        bank_id: &e.bank_id,
                    })
                    .collect(),
            };
            match approved[0].end_to_end.as_ref().map(|(_, s)| *s) {
                Some(IdStrength::Weak) => weak.push(dd),
                _ => strong.push(dd),
            }
        }
        strong.sort_by(|a, b| a.end_to_end.cmp(b.end_to_end));
        weak.sort_by(|a, b| a.end_to_end.cmp(b.end_to_end));
        (strong, weak)
    }
}

/// One identity by which a reversal names its original (and an original
/// can be recognised), as in [`Ledger::find_original`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OriginalRef {
    MessageId(MessageId),
    Iso(Stan, TransmissionDateTime),
    EndToEnd(EndToEndId),
    Rrn(Rrn),
}

/// The identities a reversal names its original by.
fn reversal_refs(req: &Transaction) -> Vec<OriginalRef> {
    let mut v = Vec::with_capacity(4);
    if let Some(id) = req.original_message_id {
        v.push(OriginalRef::MessageId(id));
    }
    if let Some(o) = req.original {
        v.push(OriginalRef::Iso(o.stan, o.transmitted_at));
    }
    if let Some(id) = req.end_to_end_id {
        v.push(OriginalRef::EndToEnd(id));
    }
    if let Some(r) = req.rrn {
        v.push(OriginalRef::Rrn(r));
    }
    v
}

/// The identities an original answers to.
fn original_refs(req: &Transaction) -> Vec<OriginalRef> {
    let mut v = Vec::with_capacity(4);
    if let Some(id) = req.message_id {
        v.push(OriginalRef::MessageId(id));
    }
    if let (Some(stan), Some(f7)) = (req.stan, req.transmitted_at) {
        v.push(OriginalRef::Iso(stan, f7));
    }
    if let Some(id) = req.end_to_end_id {
        v.push(OriginalRef::EndToEnd(id));
    }
    if let Some(r) = req.rrn {
        v.push(OriginalRef::Rrn(r));
    }
    v
}

/// The id the bank itself sees for a message (see the module docs).
pub fn bank_level_id(style: Style, req: &Transaction) -> String {
    match style {
        Style::Iso8583 => {
            let mut s = String::with_capacity(32);
            let _ = write!(
                s,
                "{}/{:06}/{}",
                req.rrn.as_ref().map_or("-", |r| r.as_str()),
                req.stan.map_or(0, |s| s.value()),
                req.terminal_id.as_ref().map_or("-", |t| t.as_str())
            );
            s
        }
        Style::Iso20022 | Style::Json => req
            .message_id
            .as_ref()
            .map_or_else(|| "-".to_owned(), |m| m.as_str().to_owned()),
    }
}

fn end_to_end_identity(req: &Transaction) -> Option<(String, IdStrength)> {
    if let Some(k) = &req.idempotency_key {
        return Some((format!("key:{}", k.as_str()), IdStrength::Strong));
    }
    if let Some(e) = &req.end_to_end_id {
        return Some((format!("e2e:{}", e.as_str()), IdStrength::Strong));
    }
    let f7 = req.transmitted_at?;
    let mut s = String::with_capacity(96);
    let _ = write!(
        s,
        "upstream:f32={}/f7={}/f12={}/f13={}/f41={}/f42={}/amt={}",
        req.acquirer.as_ref().map_or("", |a| a.as_str()),
        f7.as_str(),
        req.local_time.as_ref().map_or("", |t| t.as_str()),
        req.local_date.as_ref().map_or("", |d| d.as_str()),
        req.terminal_id.as_ref().map_or("", |t| t.as_str()),
        req.merchant_id.as_ref().map_or("", |m| m.as_str()),
        req.amount.map_or(0, |a| a.minor()),
    );
    Some((s, IdStrength::Weak))
}

/// An account as shown in the ledger: its last 4 characters only.
pub fn mask_account(a: &Account) -> String {
    let s = a.expose();
    match s.len() {
        0..=4 => "****".to_owned(),
        n => format!("****{}", &s[n - 4..]),
    }
}

#[derive(Serialize)]
struct LedgerView<'a> {
    totals: Totals,
    banks: Vec<BankView<'a>>,
    double_debits: Vec<DoubleDebit<'a>>,
    suspect_double_debits: Vec<DoubleDebit<'a>>,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    transactions: Option<Vec<TxnView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reversals: Option<Vec<ReversalView<'a>>>,
}

#[derive(Serialize, Default)]
struct Totals {
    requests: u64,
    transactions: u64,
    retransmissions: u64,
    approved: u64,
    declined: u64,
    reversed: u64,
    reversal_messages: u64,
    nothing_to_reverse: u64,
    reversed_before_original: u64,
    status_inquiries: u64,
    network: u64,
    bad_messages: u64,
    format_errors: u64,
    auth_failures: u64,
    bad_frames: u64,
    amount_approved_minor: u64,
    double_debits: u64,
    suspect_double_debits: u64,
    unrecorded: u64,
    faults: FaultCounts,
}

#[derive(Serialize)]
struct BankView<'a> {
    name: &'a str,
    code: &'a str,
    #[serde(flatten)]
    stats: &'a BankStats,
}

#[derive(Serialize)]
struct TxnView<'a> {
    bank: &'a str,
    bank_id: &'a str,
    end_to_end: Option<&'a str>,
    kind: &'static str,
    first_seen_ms: u64,
    last_seen_ms: u64,
    times_seen: u32,
    amount_minor: Option<u64>,
    currency: Option<u16>,
    debtor: Option<&'a str>,
    creditor: Option<&'a str>,
    status: Status,
    code: String,
    auth_id: Option<String>,
    reversal_messages: u32,
}

#[derive(Serialize)]
struct ReversalView<'a> {
    bank: &'a str,
    bank_id: &'a str,
    kind: &'static str,
    original: Option<&'a str>,
    result: ReversalResult,
    first_seen_ms: u64,
    times_seen: u32,
}

#[derive(Serialize)]
struct DoubleDebit<'a> {
    end_to_end: &'a str,
    approvals: usize,
    transactions: Vec<TxnRef<'a>>,
}

#[derive(Serialize)]
struct TxnRef<'a> {
    bank: &'a str,
    bank_id: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use fps_codecs::model::examples::credit_transfer;
    use fps_codecs::model::{IdempotencyKey, Mti};

    fn ledger() -> Ledger {
        Ledger::new(vec![("bank003".into(), "003".into(), Style::Iso8583)], 100)
    }

    fn with_accounts(debtor: &str, creditor: &str) -> Transaction {
        let mut t = credit_transfer();
        t.debtor_account = Some(Account::parse(debtor.as_bytes()).unwrap());
        t.creditor_account = Some(Account::parse(creditor.as_bytes()).unwrap());
        t
    }

    #[test]
    fn outcome_rules() {
        let code = |d, c| credit_outcome(&with_accounts(d, c));
        assert_eq!(code("1234551", "9999"), ResponseCode::INSUFFICIENT_FUNDS);
        assert_eq!(code("1234505", "9999"), ResponseCode::DO_NOT_HONOUR);
        assert_eq!(code("1234500", "999914"), ResponseCode::UNKNOWN_ACCOUNT);
        assert_eq!(code("1234551", "999914"), ResponseCode::INSUFFICIENT_FUNDS);
        assert_eq!(code("1234500", "999900"), ResponseCode::APPROVED);
    }

    #[test]
    fn retransmission_is_answered_alike_and_not_booked_twice() {
        let mut l = ledger();
        let t = credit_transfer();
        let a = l.handle(0, &t, 1).unwrap();
        let b = l.handle(0, &t, 2).unwrap();
        assert_eq!(a, b);
        assert!(a.auth_id.is_some());
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.entries[0].times_seen, 2);
        assert!(l.double_debits().0.is_empty());
    }

    #[test]
    fn same_key_approved_twice_is_a_double_debit_until_reversed() {
        let mut l = ledger();
        let first = credit_transfer();
        let mut second = credit_transfer();
        second.stan = Some(Stan::new(124).unwrap());
        second.rrn = Some(Rrn::parse(b"000000000124").unwrap());
        l.handle(0, &first, 1);
        l.handle(0, &second, 2);
        assert_eq!(l.double_debits().0.len(), 1);
        let mut rev = Transaction::new(Mti::REVERSAL);
        rev.stan = Some(Stan::new(900).unwrap());
        rev.original = second.original_data();
        let a = l.handle(0, &rev, 3).unwrap();
        assert_eq!(a.mti, Mti::REVERSAL_RESPONSE);
        assert_eq!(a.response_code, Some(ResponseCode::APPROVED));
        assert_eq!(l.entries[1].status, Status::Reversed);
        assert!(l.double_debits().0.is_empty());
        // Unknown original: acknowledged, nothing to reverse.
        let mut other = rev.clone();
        other.stan = Some(Stan::new(901).unwrap());
        other.original.as_mut().unwrap().stan = Stan::new(555).unwrap();
        assert!(l
            .handle(0, &other, 4)
            .unwrap()
            .response_code
            .unwrap()
            .is_approved());
        assert_eq!(l.reversals[1].result, ReversalResult::NothingToReverse);
        let json = l.to_json(false);
        assert!(json.contains("\"nothing_to_reverse\": 1"), "{json}");
        assert!(json.contains("****9001"));
        assert!(!json.contains("123456789001"));
    }

    #[test]
    fn an_original_overtaken_by_its_reversal_is_declined_on_arrival() {
        let mut l = ledger();
        let original = credit_transfer();
        let mut rev = Transaction::new(Mti::REVERSAL);
        rev.stan = Some(Stan::new(900).unwrap());
        rev.original = original.original_data();
        // The reversal arrives first: acknowledged, remembered.
        assert!(l
            .handle(0, &rev, 1)
            .unwrap()
            .response_code
            .unwrap()
            .is_approved());
        assert_eq!(l.reversals[0].result, ReversalResult::NothingToReverse);
        // The original arrives after it: declined, never a standing debit.
        let a = l.handle(0, &original, 2).unwrap();
        assert_eq!(a.response_code, Some(ResponseCode::DO_NOT_HONOUR));
        assert_eq!(l.entries[0].status, Status::Declined);
        assert_eq!(l.reversals[0].result, ReversalResult::BeforeOriginal);
        assert_eq!(l.stats[0].approved, 0);
        assert_eq!(l.stats[0].reversed_before_original, 1);
        // Another transfer is unaffected.
        let mut other = credit_transfer();
        other.stan = Some(Stan::new(77).unwrap());
        other.rrn = Some(Rrn::parse(b"000000000077").unwrap());
        other.idempotency_key = None;
        assert!(l
            .handle(0, &other, 3)
            .unwrap()
            .response_code
            .unwrap()
            .is_approved());
    }

    #[test]
    fn weak_identities_are_only_suspects() {
        let mut l = ledger();
        let mut a = credit_transfer();
        a.idempotency_key = None;
        let mut b = a.clone();
        b.stan = Some(Stan::new(7).unwrap());
        l.handle(0, &a, 1);
        l.handle(0, &b, 1);
        let (strong, weak) = l.double_debits();
        assert!(strong.is_empty());
        assert_eq!(weak.len(), 1);
        let _ = IdempotencyKey::parse(b"x");
    }

    #[test]
    fn the_ledger_is_bounded() {
        let mut l = Ledger::new(vec![("b".into(), "003".into(), Style::Iso8583)], 3);
        for n in 1..=10 {
            let mut t = credit_transfer();
            t.stan = Some(Stan::new(n).unwrap());
            assert!(l.handle(0, &t, 0).is_some());
        }
        assert_eq!(l.entries.len(), 3);
        assert_eq!(l.unrecorded, 7);
        assert_eq!(l.stats[0].approved, 10);
    }
}
