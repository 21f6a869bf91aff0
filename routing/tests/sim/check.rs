//! The invariants checked after each seed's heal-and-drain phase (DESIGN.md
//! invariants 1-6 and 9). Violations seen while running (a second answer,
//! a duplicate match key, a reused STAN, a missed deadline) are recorded by
//! the world as they happen; these are the end-of-run checks.

use std::collections::BTreeMap;

use fps_codecs::model::ResponseCode;

use super::journal::Record;
use super::world::{Request, Status, World};
use super::{Origin, TxnId, CLIENT_DEADLINE_MS};

/// Definitive outcomes: what a key's retries must all get once one is out.
fn definitive(code: ResponseCode) -> bool {
    !matches!(
        code,
        ResponseCode::BANK_UNAVAILABLE | ResponseCode::SYSTEM_MALFUNCTION | ResponseCode::DUPLICATE
    )
}

/// Every violation of the end-of-run invariants.
pub fn check(w: &World) -> Vec<String> {
    let mut v = Vec::new();
    answers(w, &mut v);
    idempotency(w, &mut v);
    money(w, &mut v);
    resources(w, &mut v);
    v
}

/// Invariant 1: exactly one final answer per request, within its deadline
/// (a request is excused only if the switch died with it unanswered).
fn answers(w: &World, v: &mut Vec<String>) {
    for (i, r) in w.requests.iter().enumerate() {
        match r.status {
            Status::AtSwitch => v.push(format!("req {i} never answered ({:?})", r.origin)),
            Status::Answered => {
                let a = r.answer.expect("answered requests carry their answer");
                if a.at > r.sent_at.plus_ms(CLIENT_DEADLINE_MS) {
                    v.push(format!(
                        "req {i} answered at {:?}, after its deadline (sent {:?})",
                        a.at, r.sent_at
                    ));
                }
            }
            Status::Scheduled | Status::Refused | Status::Lost => {}
        }
        if r.answers > 1 {
            v.push(format!("req {i} got {} answers", r.answers));
        }
    }
}

/// Idempotency: one content per key reaches an outcome; every retry with
/// that content gets the original outcome (F38 and F39); other content
/// sent after the outcome was known gets 94; 94 only when other content
/// was sent under the key first.
fn idempotency(w: &World, v: &mut Vec<String>) {
    let mut keys: BTreeMap<Origin, Vec<(usize, &Request)>> = BTreeMap::new();
    let mut sent: BTreeMap<Origin, Vec<&Request>> = BTreeMap::new();
    for (i, r) in w.requests.iter().enumerate() {
        if r.status == Status::Answered {
            keys.entry(r.origin).or_default().push((i, r));
        }
        if r.status != Status::Scheduled {
            sent.entry(r.origin).or_default().push(r);
        }
    }
    for (origin, mut reqs) in keys {
        reqs.sort_by_key(|(i, r)| (r.answer.map(|a| a.at), *i));
        let first = reqs
            .iter()
            .find(|(_, r)| r.answer.is_some_and(|a| definitive(a.code)));
        for (i, r) in &reqs {
            let a = r.answer.expect("answered");
            if a.code == ResponseCode::DUPLICATE {
                let other_before = sent[&origin]
                    .iter()
                    .any(|o| o.amount != r.amount && o.sent_at <= a.at);
                if !other_before {
                    v.push(format!(
                        "req {i} ({origin:?}) got 94 with no other content under its key"
                    ));
                }
            }
            let Some((fi, f)) = first else { continue };
            let fa = f.answer.expect("answered");
            if r.amount == f.amount {
                if definitive(a.code) && (a.code, a.auth) != (fa.code, fa.auth) {
                    v.push(format!(
                        "req {i} ({origin:?}) got {:?}/{:?}, but req {fi} got the key's outcome {:?}/{:?}",
                        a.code, a.auth, fa.code, fa.auth
                    ));
                }
            } else {
                if definitive(a.code) {
                    v.push(format!(
                        "req {i} ({origin:?}): different content got outcome {:?} after req {fi} got {:?}",
                        a.code, fa.code
                    ));
                }
                if r.sent_at > fa.at
                    && !matches!(
                        a.code,
                        ResponseCode::DUPLICATE | ResponseCode::SYSTEM_MALFUNCTION
                    )
                {
                    v.push(format!(
                        "req {i} ({origin:?}): different content after the outcome got {:?}, not 94",
                        a.code
                    ));
                }
            }
        }
    }
}

/// Invariants 2-4: no double debit; what went upstream matches the bank's
/// ledger after the drain (approved = debited once, declined or 68 = not
/// debited: unknown outcomes were reversed); a debit is always known to the
/// journal as approved; no late answer went upstream after "reversing".
fn money(w: &World, v: &mut Vec<String>) {
    let mut settled_in_journal = BTreeMap::new();
    let mut approved_in_journal = BTreeMap::new();
    let mut reversing_at = BTreeMap::new();
    let mut reversal_done = BTreeMap::new();
    for s in w.journal.records() {
        match &s.record {
            Record::Final { txn, code, .. } => {
                settled_in_journal.insert(*txn, (s.at, *code));
            }
            Record::Reversing { txn } => {
                settled_in_journal.insert(*txn, (s.at, ResponseCode::LATE));
            }
            _ => {}
        }
        match &s.record {
            Record::Final { txn, code, .. } if code.is_approved() => {
                approved_in_journal.insert(*txn, s.at);
            }
            Record::Reversing { txn } => {
                reversing_at.entry(*txn).or_insert(s.at);
            }
            Record::ReversalDone { txn, .. } => {
                reversal_done.insert(*txn, s.at);
            }
            _ => {}
        }
    }
    let mut net_by_key: BTreeMap<Origin, i64> = BTreeMap::new();
    let mut ledger: BTreeMap<TxnId, i64> = BTreeMap::new();
    for (b, bank) in w.banks.iter().enumerate() {
        v.extend(bank.violations.iter().map(|x| format!("bank {b}: {x}")));
        for (txn, e) in &bank.ledger {
            let net = e.net();
            ledger.insert(*txn, net);
            if let Some(o) = e.origin {
                *net_by_key.entry(o).or_insert(0) += net;
            }
            if !(0..=1).contains(&net) {
                v.push(format!("bank {b}: {txn:?} net debit {net}"));
            }
            if net > 0 && !approved_in_journal.contains_key(txn) {
                v.push(format!(
                    "bank {b}: {txn:?} debited but the journal has no approval for it"
                ));
            }
        }
    }
    for (o, net) in &net_by_key {
        if *net > 1 {
            v.push(format!("double debit: key {o:?} debited {net} times net"));
        }
    }
    // Every definitive answer of a key (the original's or a retry's from
    // the index or the key store) agrees with the bank: approved = debited
    // once under that key, anything else = not debited.
    for (i, r) in w.requests.iter().enumerate() {
        let Some(a) = r.answer else { continue };
        if !definitive(a.code) {
            continue;
        }
        let net = net_by_key.get(&r.origin).copied().unwrap_or(0);
        if net != i64::from(a.code.is_approved()) {
            v.push(format!(
                "req {i} ({:?}) answered {:?} but the key's net debit at the bank is {net}",
                r.origin, a.code
            ));
        }
    }
    for txn in reversing_at.keys() {
        if !reversal_done.contains_key(txn) {
            v.push(format!(
                "{txn:?}: unknown outcome never settled (reversing, not done)"
            ));
        }
    }
    for (i, r) in w.requests.iter().enumerate() {
        let Some(a) = r.answer else { continue };
        let Some(txn) = a.txn else { continue };
        // Nothing acknowledged upstream is lost: the outcome was durable first.
        if definitive(a.code) {
            match settled_in_journal.get(&txn) {
                Some((at, code)) if *at <= a.at && *code == a.code => {}
                other => v.push(format!(
                    "req {i} answered {:?} for {txn:?} but the journal says {other:?}",
                    a.code
                )),
            }
        }
        let net = ledger.get(&txn).copied().unwrap_or(0);
        let want = i64::from(a.code.is_approved());
        if net != want {
            v.push(format!(
                "req {i} answered {:?} for {txn:?} but the bank's net debit is {net}",
                a.code
            ));
        }
        if a.code != ResponseCode::LATE {
            if let Some(at) = reversing_at.get(&txn) {
                if *at <= a.at {
                    v.push(format!(
                        "req {i}: late answer {:?} for {txn:?} forwarded upstream",
                        a.code
                    ));
                }
            }
        }
    }
}

/// Invariant 9: after heal and drain everything is back to baseline.
fn resources(w: &World, v: &mut Vec<String>) {
    let Some(core) = w.core.as_ref() else {
        v.push("switch still down after heal".to_string());
        return;
    };
    let r = core.resources();
    // Parked reversals too: the operator re-armed them during the drain.
    let idle = super::switch::Resources::default();
    if r != idle {
        v.push(format!("resources not back to baseline after drain: {r:?}"));
    }
    let keys = w.link_keys_in_flight();
    if keys != 0 {
        v.push(format!(
            "{keys} match keys still registered on links after drain"
        ));
    }
}
