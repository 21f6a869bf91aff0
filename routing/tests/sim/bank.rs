//! A simulated bank: a ledger of end-to-end transactions. Deliberately
//! naive about duplicates (every credit it approves is a debit, even a
//! repeat of one it already approved), so a switch that resends shows up as
//! a double debit. It follows the usual ISO rule for a reversal that
//! overtakes its original: the reversal is remembered and the late original
//! is declined.

use std::collections::{BTreeMap, BTreeSet};

use fps_codecs::model::{AuthId, ResponseCode};
use fps_routing::{Millis, ReversalMessage, SplitMix64};

use super::{BankReply, Origin, ToBank, ToSwitch, TxnId};

/// A transaction as the bank's ledger holds it.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    /// Where the switch said it came from.
    pub origin: Option<Origin>,
    /// Credits approved (debits made).
    pub debits: u32,
    /// Debits reversed.
    pub reversals: u32,
    /// Credits declined.
    pub declines: u32,
    /// A reversal or inquiry came before any original: decline it if it comes.
    pub tombstone: bool,
    /// F38 of the first approval.
    pub auth: Option<AuthId>,
}

impl LedgerEntry {
    /// Debits net of reversals.
    pub fn net(&self) -> i64 {
        i64::from(self.debits) - i64::from(self.reversals)
    }
}

/// One bank.
#[derive(Debug, Default)]
pub struct Bank {
    /// The ledger, by end-to-end id.
    pub ledger: BTreeMap<TxnId, LedgerEntry>,
    /// STANs seen from the switch: a repeat means the switch reused one.
    stans: BTreeSet<u32>,
    /// Invariant violations seen at the bank (reused STAN, double debit).
    pub violations: Vec<String>,
}

impl Bank {
    /// Process `msg` at `now`; `rejecting` is the reversal-rejected fault.
    pub fn handle(
        &mut self,
        msg: ToBank,
        rejecting: bool,
        rng: &mut SplitMix64,
        now: Millis,
    ) -> ToSwitch {
        let stan = match msg {
            ToBank::Credit { stan, .. } | ToBank::Reversal { stan, .. } => stan,
        };
        if !self.stans.insert(stan) {
            self.violations.push(format!(
                "{now:?}: STAN {stan} reused by the switch ({msg:?})"
            ));
        }
        match msg {
            ToBank::Credit {
                stan,
                txn,
                origin,
                amount,
            } => {
                let e = self.entry(txn);
                e.origin.get_or_insert(origin);
                let (code, auth) = if e.tombstone || (e.declines > 0 && e.debits == 0) {
                    e.declines += 1;
                    (ResponseCode::DO_NOT_HONOUR, None)
                } else if e.debits == 0 && (amount % 10 == 7 || rng.next_u64() % 12 == 0) {
                    e.declines += 1;
                    (ResponseCode::INSUFFICIENT_FUNDS, None)
                } else {
                    e.debits += 1;
                    let auth = *e.auth.get_or_insert_with(|| {
                        AuthId::parse(format!("{:06}", rng.next_u64() % 1_000_000).as_bytes())
                            .expect("six digits are a valid F38")
                    });
                    if e.net() > 1 {
                        self.violations.push(format!(
                            "{now:?}: double debit of {txn:?} (net {})",
                            self.ledger[&txn].net()
                        ));
                    }
                    (ResponseCode::APPROVED, Some(auth))
                };
                ToSwitch::Credit {
                    stan,
                    txn,
                    code,
                    auth,
                }
            }
            ToBank::Reversal { stan, txn, message } => {
                let reply = self.reverse(txn, message, rejecting);
                ToSwitch::Reversal { stan, txn, reply }
            }
        }
    }

    fn reverse(&mut self, txn: TxnId, message: ReversalMessage, rejecting: bool) -> BankReply {
        let inquiry = message == ReversalMessage::StatusInquiry;
        if rejecting {
            return if inquiry {
                BankReply::InquiryFailed
            } else {
                BankReply::Rejected
            };
        }
        let e = self.entry(txn);
        if e.debits == 0 {
            // Never executed (or only declined): remember, so a late
            // original is declined.
            e.tombstone = true;
            return BankReply::NotExecuted;
        }
        if inquiry {
            return if e.net() > 0 {
                BankReply::Executed
            } else {
                BankReply::NotExecuted
            };
        }
        if e.net() > 0 {
            e.reversals += 1;
        }
        BankReply::Acknowledged
    }

    fn entry(&mut self, txn: TxnId) -> &mut LedgerEntry {
        self.ledger.entry(txn).or_insert(LedgerEntry {
            origin: None,
            debits: 0,
            reversals: 0,
            declines: 0,
            tombstone: false,
            auth: None,
        })
    }
}
