//! Route table: which bank links can carry a transaction.
//!
//! The destination bank code comes from, in order of precedence:
//! 1. F100 (`receiving_bank`) when present;
//! 2. else the FPS proxy id (F120) through the [`ProxyDirectory`];
//! 3. else the PAN's BIN through the [`BinTable`].
//!
//! Precedence is by presence, not by success: a proxy that is not in the
//! directory is answered 14, it does not fall through to the PAN.
//!
//! Each routed bank code maps to a [`BankRoute`]: an ordered list of
//! candidate links (primary first, then secondaries). A link ([`BankId`],
//! compactly [`LinkId`]) is one endpoint group the switch keeps a pool for:
//! the bank's main site, its disaster-recovery site, or an agent bank.
//! Reversals and inquiries follow the link of their original transaction,
//! which the switch takes from its journal rather than from this table.

use std::fmt;

use arrayvec::ArrayString;
use fps_codecs::model::{BankCode, ResponseCode, Transaction};

use crate::bin::BinTable;
use crate::proxy::ProxyDirectory;
use crate::select::Unavailable;

/// Longest bank link name.
pub const MAX_BANK_ID_LEN: usize = 32;
/// Most bank links one router may know.
pub const MAX_LINKS: usize = 1024;
/// Most candidates (primary plus secondaries) for one bank code.
pub const MAX_CANDIDATES: usize = 8;
/// Number of distinct 3-digit bank codes.
pub const BANK_CODE_SPACE: usize = 1000;

/// Name of a bank link (endpoint group) as configured, e.g. `hsbc` or
/// `hsbc-dr`: 1 to 32 of `[A-Za-z0-9_.-]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BankId(ArrayString<MAX_BANK_ID_LEN>);

/// Why a bank link name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BankIdError {
    /// Empty or longer than [`MAX_BANK_ID_LEN`].
    #[error("bank id must have 1 to {MAX_BANK_ID_LEN} characters")]
    Length,
    /// A character outside `[A-Za-z0-9_.-]`.
    #[error("bank id may only contain letters, digits, '_', '.' and '-'")]
    Character,
}

impl BankId {
    /// Parse a link name.
    pub fn parse(s: &str) -> Result<Self, BankIdError> {
        if s.is_empty() || s.len() > MAX_BANK_ID_LEN {
            return Err(BankIdError::Length);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(BankIdError::Character);
        }
        ArrayString::from(s)
            .map(BankId)
            .map_err(|_| BankIdError::Length)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for BankId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BankId({:?})", self.0.as_str())
    }
}

impl fmt::Display for BankId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// Dense index of a bank link within one [`Router`](crate::Router): indexes
/// the [`HealthTable`](crate::HealthTable) without hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub(crate) u16);

impl LinkId {
    /// The index, `0..router.links().len()`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The ordered candidates for one bank code: primary first, then secondaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankRoute {
    candidates: Box<[LinkId]>,
}

/// Why a route or route table could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteBuildError {
    /// More than [`MAX_CANDIDATES`] candidates.
    #[error("more than {MAX_CANDIDATES} candidates (primary plus secondaries)")]
    TooManyCandidates,
    /// The same link appears twice among the candidates.
    #[error("a link appears twice among the candidates")]
    RepeatedCandidate,
    /// The bank code already has a route.
    #[error("bank code {0} already has a route")]
    DuplicateBankCode(BankCode),
}

impl BankRoute {
    /// A route to `primary`, failing over to `secondaries` in order.
    pub fn new(primary: LinkId, secondaries: &[LinkId]) -> Result<Self, RouteBuildError> {
        if secondaries.len() >= MAX_CANDIDATES {
            return Err(RouteBuildError::TooManyCandidates);
        }
        let mut candidates = Vec::with_capacity(secondaries.len() + 1);
        candidates.push(primary);
        for s in secondaries {
            if candidates.contains(s) {
                return Err(RouteBuildError::RepeatedCandidate);
            }
            candidates.push(*s);
        }
        Ok(BankRoute {
            candidates: candidates.into_boxed_slice(),
        })
    }

    /// The preferred link.
    pub fn primary(&self) -> LinkId {
        self.candidates[0]
    }

    /// The fail-over links, in order.
    pub fn secondaries(&self) -> &[LinkId] {
        &self.candidates[1..]
    }

    /// Primary then secondaries: the order selection tries them in.
    pub fn candidates(&self) -> &[LinkId] {
        &self.candidates
    }
}

/// Bank code → [`BankRoute`], indexed directly by the 3-digit code.
#[derive(Debug, Clone)]
pub struct RouteTable {
    slots: Box<[Option<BankRoute>]>,
    len: usize,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            slots: vec![None; BANK_CODE_SPACE].into_boxed_slice(),
            len: 0,
        }
    }
}

/// Which field chose the destination bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteSource {
    /// F100 receiving institution.
    BankCode,
    /// F120 proxy id, through the proxy directory.
    Proxy,
    /// F2 PAN, through the BIN table.
    Bin,
}

impl RouteSource {
    /// Short name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteSource::BankCode => "bank_code",
            RouteSource::Proxy => "proxy",
            RouteSource::Bin => "bin",
        }
    }
}

/// Where a transaction goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteDecision<'a> {
    /// Send to `bank` over the first available of `candidates`.
    Route {
        /// Destination bank code.
        bank: BankCode,
        /// Which field chose it.
        via: RouteSource,
        /// Links to try, in order (never empty).
        candidates: &'a [LinkId],
    },
}

impl<'a> RouteDecision<'a> {
    /// The destination bank code.
    pub fn bank(&self) -> BankCode {
        match self {
            RouteDecision::Route { bank, .. } => *bank,
        }
    }

    /// The candidate links, in order.
    pub fn candidates(&self) -> &'a [LinkId] {
        match self {
            RouteDecision::Route { candidates, .. } => candidates,
        }
    }
}

/// Why a transaction cannot be routed. Never carries a proxy or PAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// None of F100, F120 or F2 is present.
    #[error("no destination: none of receiving bank, proxy or PAN present")]
    NoDestination,
    /// The proxy id is not in the directory.
    #[error("unknown proxy")]
    UnknownProxy,
    /// No BIN range contains the PAN.
    #[error("no BIN range matches the PAN")]
    UnknownBin,
    /// The bank code (from `via`) has no route.
    #[error("no route for bank code {bank} (from {})", via.as_str())]
    NoRoute {
        /// The destination bank code.
        bank: BankCode,
        /// Which field produced it.
        via: RouteSource,
    },
    /// Every candidate link is open-circuited or saturated.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl RouteError {
    /// The F39 code the switch answers with: 14 for an unknown destination,
    /// 91 when the destination is known but unreachable.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            RouteError::Unavailable(_) => ResponseCode::BANK_UNAVAILABLE,
            RouteError::NoDestination
            | RouteError::UnknownProxy
            | RouteError::UnknownBin
            | RouteError::NoRoute { .. } => ResponseCode::UNKNOWN_ACCOUNT,
        }
    }
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Route `code` to `route`; a code may be routed only once.
    pub fn insert(&mut self, code: BankCode, route: BankRoute) -> Result<(), RouteBuildError> {
        let slot = &mut self.slots[code_index(code)];
        if slot.is_some() {
            return Err(RouteBuildError::DuplicateBankCode(code));
        }
        *slot = Some(route);
        self.len += 1;
        Ok(())
    }

    /// The route for `code`.
    pub fn get(&self, code: BankCode) -> Option<&BankRoute> {
        self.slots[code_index(code)].as_ref()
    }

    /// Number of routed bank codes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bank code is routed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Decide where `txn` goes (see the module docs for precedence).
    pub fn resolve<'a>(
        &'a self,
        txn: &Transaction,
        proxies: &ProxyDirectory,
        bins: &BinTable,
    ) -> Result<RouteDecision<'a>, RouteError> {
        let (bank, via) = if let Some(bank) = txn.receiving_bank {
            (bank, RouteSource::BankCode)
        } else if let Some(proxy) = &txn.proxy {
            let bank = proxies.bank_of(proxy).ok_or(RouteError::UnknownProxy)?;
            (bank, RouteSource::Proxy)
        } else if let Some(pan) = &txn.pan {
            (
                bins.lookup(pan).ok_or(RouteError::UnknownBin)?,
                RouteSource::Bin,
            )
        } else {
            return Err(RouteError::NoDestination);
        };
        let route = self.get(bank).ok_or(RouteError::NoRoute { bank, via })?;
        Ok(RouteDecision::Route {
            bank,
            via,
            candidates: route.candidates(),
        })
    }
}

/// Index of a bank code in `0..1000`. `BankCode` holds exactly 3 ASCII digits.
fn code_index(code: BankCode) -> usize {
    code.as_bytes().iter().fold(0usize, |acc, d| {
        acc * 10 + usize::from(d.wrapping_sub(b'0'))
    }) % BANK_CODE_SPACE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bin::BinRange;
    use fps_codecs::model::{Mti, Pan, ProxyId};

    fn code(s: &str) -> BankCode {
        BankCode::parse(s.as_bytes()).unwrap()
    }

    fn fixture() -> (RouteTable, ProxyDirectory, BinTable) {
        let mut t = RouteTable::new();
        t.insert(
            code("004"),
            BankRoute::new(LinkId(0), &[LinkId(1)]).unwrap(),
        )
        .unwrap();
        t.insert(code("024"), BankRoute::new(LinkId(2), &[]).unwrap())
            .unwrap();
        let proxies = ProxyDirectory::parse("MOBN:+852-90000001,024\nFPID:1234567,099\n").unwrap();
        let bins = BinTable::build([
            (BinRange::prefix("476173").unwrap(), code("004")),
            (BinRange::prefix("520000").unwrap(), code("098")),
        ])
        .unwrap();
        (t, proxies, bins)
    }

    fn txn() -> Transaction {
        Transaction::new(Mti::CREDIT_TRANSFER)
    }

    #[test]
    fn bank_ids_are_checked() {
        assert_eq!(
            BankId::parse("hsbc-dr.2_a").unwrap().as_str(),
            "hsbc-dr.2_a"
        );
        assert_eq!(BankId::parse(""), Err(BankIdError::Length));
        assert_eq!(BankId::parse(&"a".repeat(33)), Err(BankIdError::Length));
        assert_eq!(BankId::parse("hsbc dr"), Err(BankIdError::Character));
    }

    #[test]
    fn routes_reject_repeats_duplicates_and_too_many_candidates() {
        assert_eq!(
            BankRoute::new(LinkId(0), &[LinkId(1), LinkId(0)]),
            Err(RouteBuildError::RepeatedCandidate)
        );
        let many: Vec<LinkId> = (1..=MAX_CANDIDATES as u16).map(LinkId).collect();
        assert_eq!(
            BankRoute::new(LinkId(0), &many),
            Err(RouteBuildError::TooManyCandidates)
        );
        let r = BankRoute::new(LinkId(3), &[LinkId(1), LinkId(2)]).unwrap();
        assert_eq!(r.primary(), LinkId(3));
        assert_eq!(r.secondaries(), &[LinkId(1), LinkId(2)]);
        let mut t = RouteTable::new();
        t.insert(code("000"), r.clone()).unwrap();
        t.insert(code("999"), r.clone()).unwrap();
        assert_eq!(
            t.insert(code("999"), r),
            Err(RouteBuildError::DuplicateBankCode(code("999")))
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn precedence_is_bank_code_then_proxy_then_bin() {
        let (t, proxies, bins) = fixture();
        let mut tx = txn();
        tx.pan = Some(Pan::parse(b"4761730010100100").unwrap());
        let d = t.resolve(&tx, &proxies, &bins).unwrap();
        assert_eq!(
            d,
            RouteDecision::Route {
                bank: code("004"),
                via: RouteSource::Bin,
                candidates: &[LinkId(0), LinkId(1)],
            }
        );
        tx.proxy = Some(ProxyId::parse(b"MOBN:+852-90000001").unwrap());
        let d = t.resolve(&tx, &proxies, &bins).unwrap();
        assert_eq!((d.bank(), d.candidates()), (code("024"), &[LinkId(2)][..]));
        tx.receiving_bank = Some(code("004"));
        let d = t.resolve(&tx, &proxies, &bins).unwrap();
        assert_eq!(d.bank(), code("004"));
    }

    #[test]
    fn unknown_destinations_answer_14() {
        let (t, proxies, bins) = fixture();
        let check = |tx: &Transaction, want: RouteError| {
            let e = t.resolve(tx, &proxies, &bins).unwrap_err();
            assert_eq!(e, want);
            assert_eq!(e.response_code(), ResponseCode::UNKNOWN_ACCOUNT);
            let shown = format!("{e} {e:?}");
            assert!(
                !shown.contains("9000") && !shown.contains("1234567"),
                "{shown}"
            );
        };
        check(&txn(), RouteError::NoDestination);
        let mut tx = txn();
        tx.pan = Some(Pan::parse(b"4111111111111111").unwrap());
        check(&tx, RouteError::UnknownBin);
        tx.pan = Some(Pan::parse(b"5200001111111111").unwrap());
        check(
            &tx,
            RouteError::NoRoute {
                bank: code("098"),
                via: RouteSource::Bin,
            },
        );
        // A proxy miss does not fall through to the PAN.
        tx.pan = Some(Pan::parse(b"4761730010100100").unwrap());
        tx.proxy = Some(ProxyId::parse(b"MOBN:+852-90000009").unwrap());
        check(&tx, RouteError::UnknownProxy);
        tx.proxy = Some(ProxyId::parse(b"FPID:1234567").unwrap());
        check(
            &tx,
            RouteError::NoRoute {
                bank: code("099"),
                via: RouteSource::Proxy,
            },
        );
        tx.receiving_bank = Some(code("005"));
        check(
            &tx,
            RouteError::NoRoute {
                bank: code("005"),
                via: RouteSource::BankCode,
            },
        );
        assert_eq!(
            RouteError::from(Unavailable::default()).response_code(),
            ResponseCode::BANK_UNAVAILABLE
        );
    }
}
