//! Reconcile a chaos run: the gateway's per-request records
//! ([`crate::chaos::RequestRecord`]) against the bank simulators' ledger
//! (`GET /ledger`). Sans-I/O: the caller fetches the ledger.
//!
//! The checks, each reported with its numbers:
//!
//! - **answered**: every request has a final answer, of an acceptable code.
//! - **consistent**: no request was answered two different final codes.
//! - **no double debit**: the ledger finds no end-to-end identity approved
//!   twice (strong identities: F123, end-to-end id).
//! - **approved means booked**: a request answered `00` whose bank carries
//!   F123 (the ledger's `key:` identity) is approved and not reversed there,
//!   exactly once.
//! - **unknown means not debited**: a request answered `68` (outcome unknown,
//!   reversed), `91` or `96` has no approved, unreversed booking: every
//!   timeout was reversed.
//! - **declined means not debited**: likewise for `05`, `14`, `51`.
//! - **per-bank sums**: for every bank, the ledger's approved-and-not-reversed
//!   count and amount equal those of the requests answered `00` for that
//!   bank (this covers dialects that do not carry F123).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;

use crate::chaos::{acceptable, RequestRecord};

/// One check's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// Numbers, and the first offending keys when it does not hold.
    pub detail: String,
}

/// All checks.
#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    /// The checks, in the order of the module doc.
    pub checks: Vec<Check>,
}

impl Reconciliation {
    /// Every check holds.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

impl std::fmt::Display for Reconciliation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            writeln!(
                f,
                "{} {:<28} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        Ok(())
    }
}

/// A ledger booking, as far as reconciliation needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Booking {
    Approved,
    Declined,
    Reversed,
}

fn sample(keys: &[&str]) -> String {
    let shown: Vec<&str> = keys.iter().take(5).copied().collect();
    if keys.len() > shown.len() {
        format!("{} ... (+{})", shown.join(", "), keys.len() - shown.len())
    } else {
        shown.join(", ")
    }
}

/// Check `records` against `ledger` (the JSON of `GET /ledger`, with
/// transactions). Errors only when the ledger is not one.
pub fn reconcile(records: &[RequestRecord], ledger: &Value) -> anyhow::Result<Reconciliation> {
    let txns = ledger["transactions"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("the ledger has no transactions list (use GET /ledger)"))?;
    anyhow::ensure!(
        ledger["truncated"].as_bool() != Some(true),
        "the ledger is truncated (raise max_ledger_entries): it cannot prove anything"
    );
    // Bank name -> code.
    let mut code_of = HashMap::new();
    for b in ledger["banks"].as_array().into_iter().flatten() {
        if let (Some(n), Some(c)) = (b["name"].as_str(), b["code"].as_str()) {
            code_of.insert(n.to_owned(), c.to_owned());
        }
    }
    // key -> bookings; per bank code: (approved-unreversed count, amount).
    let mut by_key: HashMap<&str, Vec<Booking>> = HashMap::new();
    let mut key_banks = std::collections::HashSet::new();
    let mut ledger_sums: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in txns {
        let booking = match t["status"].as_str() {
            Some("approved") => Booking::Approved,
            Some("reversed") => Booking::Reversed,
            _ => Booking::Declined,
        };
        let bank = t["bank"].as_str().unwrap_or("?");
        let code = code_of
            .get(bank)
            .cloned()
            .unwrap_or_else(|| bank.to_owned());
        if let Some(k) = t["end_to_end"]
            .as_str()
            .and_then(|e| e.strip_prefix("key:"))
        {
            by_key.entry(k).or_default().push(booking);
            key_banks.insert(code.clone());
        }
        if booking == Booking::Approved {
            let s = ledger_sums.entry(code).or_default();
            s.0 += 1;
            s.1 += t["amount_minor"].as_u64().unwrap_or(0);
        }
    }
    let mut checks = Vec::new();

    let unanswered: Vec<&str> = records
        .iter()
        .filter(|r| r.final_code.is_none())
        .map(|r| r.key.as_str())
        .collect();
    let unexpected: Vec<&str> = records
        .iter()
        .filter(|r| {
            r.final_code
                .as_deref()
                .is_some_and(|c| !acceptable(&r.expected, c))
        })
        .map(|r| r.key.as_str())
        .collect();
    checks.push(Check {
        name: "answered",
        ok: unanswered.is_empty() && unexpected.is_empty(),
        detail: format!(
            "{} requests, {} unanswered [{}], {} unexpected final codes [{}]",
            records.len(),
            unanswered.len(),
            sample(&unanswered),
            unexpected.len(),
            sample(&unexpected)
        ),
    });

    let inconsistent: Vec<&str> = records
        .iter()
        .filter(|r| {
            let mut finals = r.answers.iter().filter(|c| *c != "91" && *c != "96");
            let first = finals.next();
            finals.any(|c| Some(c) != first)
        })
        .map(|r| r.key.as_str())
        .collect();
    checks.push(Check {
        name: "consistent",
        ok: inconsistent.is_empty(),
        detail: format!(
            "{} requests answered two final codes [{}]",
            inconsistent.len(),
            sample(&inconsistent)
        ),
    });

    let doubles = ledger["totals"]["double_debits"]
        .as_u64()
        .unwrap_or(u64::MAX);
    checks.push(Check {
        name: "no double debit",
        ok: doubles == 0,
        detail: format!("ledger double_debits = {doubles}"),
    });

    let mut booked_ok = 0;
    let mut not_booked: Vec<&str> = Vec::new();
    let mut unknown_ok = 0;
    let mut unknown_debited: Vec<&str> = Vec::new();
    let mut declined_ok = 0;
    let mut declined_debited: Vec<&str> = Vec::new();
    let mut record_sums: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for r in records {
        let Some(code) = r.final_code.as_deref() else {
            continue;
        };
        if code == "00" {
            let s = record_sums.entry(r.bank.clone()).or_default();
            s.0 += 1;
            s.1 += r.amount_minor;
        }
        // Only banks whose dialect carries F123 have `key:` identities.
        if !key_banks.contains(&r.bank) {
            continue;
        }
        let bookings = by_key.get(r.key.as_str()).map_or(&[][..], |b| &b[..]);
        let approved = bookings.iter().filter(|b| **b == Booking::Approved).count();
        match code {
            "00" if approved == 1 => booked_ok += 1,
            "00" => not_booked.push(&r.key),
            "68" | "91" | "96" if approved == 0 => unknown_ok += 1,
            "68" | "91" | "96" => unknown_debited.push(&r.key),
            _ if approved == 0 => declined_ok += 1,
            _ => declined_debited.push(&r.key),
        }
    }
    checks.push(Check {
        name: "approved means booked",
        ok: not_booked.is_empty() && booked_ok > 0,
        detail: format!(
            "{booked_ok} answered 00 and booked once; {} not [{}]",
            not_booked.len(),
            sample(&not_booked)
        ),
    });
    checks.push(Check {
        name: "unknown means not debited",
        ok: unknown_debited.is_empty(),
        detail: format!(
            "{unknown_ok} answered 68/91/96 with no standing debit; {} debited [{}]",
            unknown_debited.len(),
            sample(&unknown_debited)
        ),
    });
    checks.push(Check {
        name: "declined means not debited",
        ok: declined_debited.is_empty(),
        detail: format!(
            "{declined_ok} declines with no debit; {} debited [{}]",
            declined_debited.len(),
            sample(&declined_debited)
        ),
    });

    let mut diffs = Vec::new();
    let banks: std::collections::BTreeSet<&String> =
        ledger_sums.keys().chain(record_sums.keys()).collect();
    for b in banks {
        let l = ledger_sums.get(b).copied().unwrap_or_default();
        let r = record_sums.get(b).copied().unwrap_or_default();
        if l != r {
            diffs.push(format!(
                "bank {b}: ledger {} debits {} minor, gateway {} approvals {} minor",
                l.0, l.1, r.0, r.1
            ));
        }
    }
    let total: u64 = record_sums.values().map(|s| s.0).sum();
    checks.push(Check {
        name: "per-bank sums",
        ok: diffs.is_empty(),
        detail: if diffs.is_empty() {
            format!(
                "{total} approvals over {} banks match the ledger",
                record_sums.len()
            )
        } else {
            diffs.join("; ")
        },
    });
    Ok(Reconciliation { checks })
}

/// `fps-loadtest reconcile` options.
#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    /// The records written by `fps-loadtest chaos --records`.
    #[arg(long)]
    pub records: std::path::PathBuf,
    /// The simulators' full ledger (the JSON of `GET /ledger`), saved to a file.
    #[arg(long)]
    pub ledger: std::path::PathBuf,
    /// Also write the verdicts as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// Run `fps-loadtest reconcile`: true when every check holds.
pub fn main(a: ReconcileArgs) -> anyhow::Result<bool> {
    use anyhow::Context;
    let text = std::fs::read_to_string(&a.records)
        .with_context(|| format!("--records: reading {}", a.records.display()))?;
    let records = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<RequestRecord>(l)
                .with_context(|| format!("--records: {}:{}", a.records.display(), i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ledger: Value = serde_json::from_slice(
        &std::fs::read(&a.ledger)
            .with_context(|| format!("--ledger: reading {}", a.ledger.display()))?,
    )
    .with_context(|| format!("--ledger: {} is not JSON", a.ledger.display()))?;
    let verdict = reconcile(&records, &ledger)?;
    print!("{verdict}");
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&verdict)?)
            .with_context(|| format!("--json: writing {}", p.display()))?;
    }
    Ok(verdict.ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(key: &str, bank: &str, expected: &str, answers: &[&str]) -> RequestRecord {
        let answers: Vec<String> = answers.iter().map(|s| s.to_string()).collect();
        let final_code = answers
            .iter()
            .find(|c| *c != "91" && *c != "96")
            .or(answers.last())
            .cloned();
        RequestRecord {
            key: key.into(),
            bank: bank.into(),
            amount_minor: 100,
            expected: expected.into(),
            answers,
            final_code,
            sends: 1,
            debtor: String::new(),
            creditor: String::new(),
        }
    }

    fn txn(key: &str, bank: &str, status: &str) -> Value {
        json!({"bank": bank, "end_to_end": format!("key:{key}"), "status": status, "amount_minor": 100})
    }

    fn ledger(txns: Vec<Value>, doubles: u64) -> Value {
        json!({
            "totals": {"double_debits": doubles},
            "banks": [{"name": "bank003", "code": "003"}, {"name": "bank004", "code": "004"}],
            "truncated": false,
            "transactions": txns,
        })
    }

    #[test]
    fn a_clean_run_reconciles() {
        let records = vec![
            rec("a", "003", "00", &["00"]),
            rec("b", "003", "00", &["91", "68"]),
            rec("c", "003", "51", &["51"]),
            rec("d", "004", "00", &["00"]),
        ];
        let l = ledger(
            vec![
                txn("a", "bank003", "approved"),
                txn("b", "bank003", "reversed"),
                txn("c", "bank003", "declined"),
                json!({"bank": "bank004", "end_to_end": "upstream:x", "status": "approved", "amount_minor": 100}),
            ],
            0,
        );
        let r = reconcile(&records, &l).unwrap();
        assert!(r.ok(), "{r}");
    }

    #[test]
    fn every_broken_promise_is_caught() {
        let records = vec![
            rec("a", "003", "00", &["00"]),
            rec("b", "003", "00", &["68"]),
            rec("c", "003", "51", &["51"]),
            rec("e", "003", "00", &[]),
            rec("f", "003", "00", &["00", "68"]),
            rec("g", "003", "00", &["94"]),
        ];
        let l = ledger(
            vec![
                txn("b", "bank003", "approved"),
                txn("c", "bank003", "approved"),
                txn("f", "bank003", "approved"),
            ],
            1,
        );
        let r = reconcile(&records, &l).unwrap();
        let failed: Vec<&str> = r.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        assert_eq!(
            failed,
            [
                "answered",
                "consistent",
                "no double debit",
                "approved means booked",
                "unknown means not debited",
                "declined means not debited",
                "per-bank sums",
            ],
            "{r}"
        );
    }

    #[test]
    fn a_truncated_or_summary_ledger_is_refused() {
        let mut l = ledger(vec![], 0);
        l["truncated"] = json!(true);
        assert!(reconcile(&[], &l).is_err());
        assert!(reconcile(&[], &json!({"totals": {}})).is_err());
    }
}
