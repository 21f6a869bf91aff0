//! [`Router`]: the immutable routing state built from a validated
//! [`RoutingConfig`](crate::RoutingConfig): links, route table, BIN table,
//! breaker settings, limits and retry policy.

use fps_codecs::model::{BankCode, Transaction};

use crate::bin::BinTable;
use crate::breaker::BreakerSettings;
use crate::proxy::ProxyDirectory;
use crate::retry::RetryPolicy;
use crate::route::{BankId, LinkId, RouteDecision, RouteError, RouteTable};
use crate::select::{HealthTable, Lease};
use crate::time::Millis;

/// Everything routing needs to decide, built once per configuration load and
/// shared read-only (the switch holds it in an `Arc`). Mutable health lives
/// apart, in a [`HealthTable`] made by [`Router::new_health`].
#[derive(Debug, Clone)]
pub struct Router {
    pub(crate) links: Vec<BankId>,
    pub(crate) max_in_flight: Vec<u32>,
    pub(crate) routes: RouteTable,
    pub(crate) bins: BinTable,
    pub(crate) breaker: BreakerSettings,
    pub(crate) retry: RetryPolicy,
}

/// A resolved destination with an admitted first attempt.
#[derive(Debug)]
pub struct Routed<'a> {
    /// Where the transaction goes.
    pub decision: RouteDecision<'a>,
    /// The admitted attempt on one of its candidates.
    pub lease: Lease,
}

impl Router {
    /// Decide where `txn` goes: F100, else proxy via `proxies`, else BIN.
    /// Errors answer 14.
    pub fn resolve(
        &self,
        txn: &Transaction,
        proxies: &ProxyDirectory,
    ) -> Result<RouteDecision<'_>, RouteError> {
        self.routes.resolve(txn, proxies, &self.bins)
    }

    /// Resolve `txn` and admit its first attempt on the first available
    /// candidate. Errors answer 14 (unknown destination) or 91 (every
    /// candidate open-circuited or saturated).
    pub fn route(
        &self,
        txn: &Transaction,
        proxies: &ProxyDirectory,
        health: &mut HealthTable,
        now: Millis,
    ) -> Result<Routed<'_>, RouteError> {
        let decision = self.resolve(txn, proxies)?;
        let lease = health.acquire(decision.candidates(), 0, now)?;
        Ok(Routed { decision, lease })
    }

    /// A fresh health table (all links closed and idle) for this router.
    pub fn new_health(&self) -> HealthTable {
        HealthTable::new(self.breaker, &self.max_in_flight)
    }

    /// Every link, indexed by [`LinkId::index`]; the order of the
    /// `known_banks` given to [`RoutingConfig::build`](crate::RoutingConfig::build).
    pub fn links(&self) -> &[BankId] {
        &self.links
    }

    /// The name of `link`.
    pub fn link_name(&self, link: LinkId) -> Option<&BankId> {
        self.links.get(link.index())
    }

    /// The link called `name`.
    pub fn link_id(&self, name: &str) -> Option<LinkId> {
        self.links
            .iter()
            .position(|l| l.as_str() == name)
            // Links are bounded by MAX_LINKS, well inside u16.
            .map(|i| LinkId(i as u16))
    }

    /// The concurrency bound of `link`.
    pub fn max_in_flight(&self, link: LinkId) -> Option<u32> {
        self.max_in_flight.get(link.index()).copied()
    }

    /// Bank code → candidates.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// PAN prefix ranges → bank code.
    pub fn bins(&self) -> &BinTable {
        &self.bins
    }

    /// Settings every link's breaker uses.
    pub fn breaker_settings(&self) -> &BreakerSettings {
        &self.breaker
    }

    /// What to do after a failed attempt.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Bank codes that `proxies` points at but that have no route: worth a
    /// warning when a directory is (re)loaded, since those proxies answer 14.
    pub fn unrouted_banks(&self, proxies: &ProxyDirectory) -> Vec<BankCode> {
        proxies
            .banks()
            .into_iter()
            .filter(|b| self.routes.get(*b).is_none())
            .collect()
    }
}
