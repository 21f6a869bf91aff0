//! The switch's side of `fps-routing`: the immutable [`Router`], the mutable
//! [`HealthTable`] behind a mutex held only for synchronous calls, the proxy
//! directory behind an `Arc` swapped whole on reload, the injected clock,
//! and the metrics (circuit state, routing outcomes, failovers).
//!
//! `LinkId(i)` is `Config::banks[i]`, the same index as the bank pools.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use fps_codecs::model::Transaction;
use fps_routing::proxy::LineError;
use fps_routing::{
    HealthTable, Lease, LinkId, LinkOutcome, Millis, ProxyDirectory, RouteDecision, RouteError,
    RouteSource, Router, Unavailable,
};

use crate::clock::MonotonicClock;
use crate::metrics as m;

/// Bad lines of a proxy directory named in an error or log line; the rest
/// are counted. Line errors carry a line number and a static reason only.
const MAX_LINE_ERRORS_SHOWN: usize = 5;

/// Why a proxy directory file could not be loaded. Never carries a proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyLoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Some lines are bad; the whole file is refused.
    #[error("{bad_lines} bad line(s): {}", shown(.first))]
    Parse {
        /// How many lines are bad.
        bad_lines: usize,
        /// The first few (line number and reason, no values).
        first: Vec<LineError>,
    },
}

fn shown(lines: &[LineError]) -> String {
    lines
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Read and parse a proxy directory file (blocking: call it off the
/// runtime's worker threads for big files).
pub fn load_proxy_directory(path: &Path) -> Result<ProxyDirectory, ProxyLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProxyLoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    ProxyDirectory::parse(&text).map_err(|e| ProxyLoadError::Parse {
        bad_lines: e.lines.len() + e.omitted,
        first: e.lines.into_iter().take(MAX_LINE_ERRORS_SHOWN).collect(),
    })
}

/// Routing state shared by every request.
#[derive(Debug)]
pub struct Routing {
    router: Router,
    /// Held only inside synchronous calls, never across an `.await`.
    health: Mutex<HealthTable>,
    /// Readers clone the `Arc` and let go of the lock at once.
    proxies: RwLock<Arc<ProxyDirectory>>,
    proxy_path: Option<PathBuf>,
    clock: Arc<dyn MonotonicClock>,
    /// SplitMix64 state for retry jitter.
    jitter: AtomicU64,
    /// Breaker state gauge per link, by `LinkId::index` (set twice per
    /// request: registering it each time cost a label allocation and a
    /// registry lookup).
    circuit_gauges: Vec<metrics::Gauge>,
    /// Routing decisions by `source` and `result`.
    decisions: m::CounterSet<2>,
}

/// A route and its admitted first attempt.
#[derive(Debug)]
pub struct Routed<'a> {
    /// Destination bank and ordered candidate links.
    pub decision: RouteDecision<'a>,
    /// The admitted attempt; settles itself as `NotAttempted` if dropped.
    pub lease: LeaseGuard<'a>,
}

impl Routing {
    /// Routing over `router` (built against the configured banks, in order)
    /// with `proxies` loaded from `proxy_path` (reloaded from there).
    pub fn new(
        router: Router,
        proxies: ProxyDirectory,
        proxy_path: Option<PathBuf>,
        clock: Arc<dyn MonotonicClock>,
    ) -> Self {
        let health = router.new_health();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let links: Vec<LinkId> = health.iter().map(|(l, _)| l).collect();
        let mut circuit_gauges = Vec::with_capacity(links.len());
        for link in &links {
            let name = router.link_name(*link).map_or("unknown", |b| b.as_str());
            if circuit_gauges.len() <= link.index() {
                circuit_gauges.resize_with(link.index() + 1, metrics::Gauge::noop);
            }
            circuit_gauges[link.index()] =
                metrics::gauge!(m::CIRCUIT_STATE, "bank" => name.to_owned());
        }
        let routing = Routing {
            router,
            health: Mutex::new(health),
            proxies: RwLock::new(Arc::new(ProxyDirectory::default())),
            proxy_path,
            clock,
            jitter: AtomicU64::new(seed),
            circuit_gauges,
            decisions: m::CounterSet::new(m::ROUTING, ["source", "result"]),
        };
        routing.install_proxies(proxies);
        for link in links {
            routing.publish_state(link, 0);
        }
        routing
    }

    /// The router (routes, BINs, retry policy).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Now, on the injected monotonic clock.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// The proxy directory in force (a snapshot: a reload does not change it).
    pub fn proxies(&self) -> Arc<ProxyDirectory> {
        self.proxies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolve `txn` (F100, else F120 via the directory, else PAN BIN) and
    /// admit its first attempt on the first available candidate.
    pub fn route(&self, txn: &Transaction) -> Result<Routed<'_>, RouteError> {
        let proxies = self.proxies();
        let decision = match self.router.resolve(txn, &proxies) {
            Ok(d) => d,
            Err(e) => {
                let source = match e {
                    RouteError::UnknownProxy => RouteSource::Proxy.as_str(),
                    RouteError::UnknownBin => RouteSource::Bin.as_str(),
                    RouteError::NoRoute { via, .. } => via.as_str(),
                    _ => "none",
                };
                self.decisions.increment([source, "unknown_destination"]);
                return Err(e);
            }
        };
        let via = match decision {
            RouteDecision::Route { via, .. } => via.as_str(),
            // The enum is non-exhaustive; a new kind still gets a label.
            _ => "other",
        };
        match self.acquire(decision.candidates(), 0) {
            Ok(lease) => {
                self.decisions.increment([via, "routed"]);
                Ok(Routed { decision, lease })
            }
            Err(u) => {
                self.decisions.increment([via, "unavailable"]);
                Err(RouteError::Unavailable(u))
            }
        }
    }

    /// Admit an attempt on the first available of `candidates`, from
    /// position `start` on (wrapping).
    pub fn acquire(
        &self,
        candidates: &[LinkId],
        start: usize,
    ) -> Result<LeaseGuard<'_>, Unavailable> {
        let now = self.now();
        let (lease, state) = {
            let mut health = self.health();
            let lease = health.acquire(candidates, start, now)?;
            let state = health.state_code(lease.link()).unwrap_or(0);
            (lease, state)
        };
        // Admission may have turned an open breaker half-open.
        self.publish_state(lease.link(), state);
        Ok(LeaseGuard {
            routing: self,
            lease: Some(lease),
        })
    }

    /// A random word for retry jitter (SplitMix64 over an atomic counter).
    pub fn jitter(&self) -> u64 {
        let mut z = self
            .jitter
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The name of `link` (a configured bank name).
    pub fn link_name(&self, link: LinkId) -> &str {
        self.router
            .link_name(link)
            .map_or("unknown", |b| b.as_str())
    }

    /// Breaker state of the bank called `name`: 0 closed, 1 open, 2 half-open.
    pub fn circuit_state(&self, name: &str) -> Option<u8> {
        let link = self.router.link_id(name)?;
        self.health().state_code(link)
    }

    /// Re-read the proxy directory file and swap it in. A bad file keeps the
    /// directory in force; either way the outcome is logged (counts and
    /// line numbers, never a proxy). Blocking: see [`ProxyReloader`].
    pub fn reload_proxies(&self) -> Result<usize, ProxyLoadError> {
        let Some(path) = &self.proxy_path else {
            tracing::info!("reload: no routing.proxy_directory configured");
            return Ok(self.proxies().len());
        };
        match load_proxy_directory(path) {
            Ok(dir) => {
                let n = dir.len();
                self.install_proxies(dir);
                metrics::counter!(m::PROXY_RELOADS, "result" => "ok").increment(1);
                tracing::info!(path = %path.display(), entries = n, "proxy directory reloaded");
                Ok(n)
            }
            Err(e) => {
                metrics::counter!(m::PROXY_RELOADS, "result" => "error").increment(1);
                let bad_lines = match &e {
                    ProxyLoadError::Parse { bad_lines, .. } => *bad_lines,
                    ProxyLoadError::Read { .. } => 0,
                };
                tracing::error!(
                    path = %path.display(),
                    bad_lines,
                    error = %e,
                    kept_entries = self.proxies().len(),
                    "proxy directory reload refused: keeping the previous one"
                );
                Err(e)
            }
        }
    }

    fn install_proxies(&self, dir: ProxyDirectory) {
        let unrouted = self.router.unrouted_banks(&dir);
        if !unrouted.is_empty() {
            let codes: Vec<String> = unrouted.iter().map(ToString::to_string).collect();
            tracing::warn!(
                banks = %codes.join(","),
                "proxy directory points at bank codes without a route: those proxies answer 14"
            );
        }
        metrics::gauge!(m::PROXY_ENTRIES).set(dir.len() as f64);
        *self.proxies.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(dir);
    }

    fn settle(&self, lease: Lease, outcome: LinkOutcome) {
        let now = self.now();
        let link = lease.link();
        let state = {
            let mut health = self.health();
            health.settle(lease, outcome, now);
            health.state_code(link).unwrap_or(0)
        };
        self.publish_state(link, state);
    }

    fn health(&self) -> MutexGuard<'_, HealthTable> {
        // A panic while holding the lock leaves the table consistent (every
        // HealthTable method is a few field updates): keep going.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_state(&self, link: LinkId, state: u8) {
        if let Some(gauge) = self.circuit_gauges.get(link.index()) {
            gauge.set(f64::from(state));
        }
    }
}

/// An admitted attempt that must be settled exactly once: [`settle`]
/// consumes it; dropping it (a cancelled request task) settles it as
/// `NotAttempted`, so a concurrency slot or probe is never leaked.
///
/// [`settle`]: LeaseGuard::settle
#[derive(Debug)]
pub struct LeaseGuard<'a> {
    routing: &'a Routing,
    lease: Option<Lease>,
}

impl LeaseGuard<'_> {
    /// The chosen link.
    pub fn link(&self) -> LinkId {
        self.lease().link()
    }

    /// Position of the link among the route's candidates (0 = primary).
    pub fn candidate(&self) -> usize {
        self.lease().candidate()
    }

    /// Report how the attempt ended.
    pub fn settle(mut self, outcome: LinkOutcome) {
        if let Some(lease) = self.lease.take() {
            self.routing.settle(lease, outcome);
        }
    }

    fn lease(&self) -> &Lease {
        // `lease` is only taken by `settle` (which consumes self) and `drop`.
        self.lease.as_ref().expect("a live guard holds its lease")
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.routing.settle(lease, LinkOutcome::NotAttempted);
        }
    }
}

/// A handle to reload the proxy directory from a signal handler or admin
/// call; cheap to clone.
#[derive(Debug, Clone)]
pub struct ProxyReloader {
    routing: Arc<Routing>,
}

impl ProxyReloader {
    pub(crate) fn new(routing: Arc<Routing>) -> Self {
        ProxyReloader { routing }
    }

    /// Reload off the runtime's worker threads (the file may be large).
    /// Returns the number of entries now in force, or why the new file was
    /// refused (the previous directory stays).
    pub async fn reload(&self) -> Result<usize, ProxyLoadError> {
        let routing = self.routing.clone();
        match tokio::task::spawn_blocking(move || routing.reload_proxies()).await {
            Ok(r) => r,
            // The blocking task panicked or the runtime is shutting down.
            Err(e) => Err(ProxyLoadError::Read {
                path: "proxy directory".into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// The routing state (for tests and admin views).
    pub fn routing(&self) -> &Arc<Routing> {
        &self.routing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fps_codecs::model::{BankCode, Mti};

    #[derive(Debug, Default)]
    struct FakeClock(AtomicU64);

    impl MonotonicClock for FakeClock {
        fn now(&self) -> Millis {
            Millis(self.0.load(Ordering::Relaxed))
        }
    }

    fn routing(clock: Arc<FakeClock>) -> Routing {
        let cfg: fps_routing::RoutingConfig = toml::from_str(
            r#"
            [[routes]]
            bank_code = "004"
            primary = "a"
            secondaries = ["b"]
            [breaker]
            failure_threshold = 1
            cool_down_ms = 100
            [max_in_flight]
            a = 1
            "#,
        )
        .unwrap();
        let router = cfg.build(&["a", "b"]).unwrap();
        Routing::new(router, ProxyDirectory::default(), None, clock)
    }

    fn txn() -> Transaction {
        let mut t = Transaction::new(Mti::CREDIT_TRANSFER);
        t.receiving_bank = Some(BankCode::parse(b"004").unwrap());
        t
    }

    #[test]
    fn a_dropped_lease_frees_its_slot() {
        let r = routing(Arc::default());
        let routed = r.route(&txn()).unwrap();
        assert_eq!(r.link_name(routed.lease.link()), "a");
        // `a` allows one in flight: the next goes to `b`.
        let second = r.route(&txn()).unwrap();
        assert_eq!(r.link_name(second.lease.link()), "b");
        drop(routed);
        let third = r.route(&txn()).unwrap();
        assert_eq!(r.link_name(third.lease.link()), "a", "slot came back");
        assert_eq!(r.circuit_state("a"), Some(0), "drop is no verdict");
    }

    #[test]
    fn breaker_opens_and_recovers_on_the_injected_clock() {
        let clock = Arc::new(FakeClock::default());
        let r = routing(clock.clone());
        r.route(&txn()).unwrap().lease.settle(LinkOutcome::Failed);
        assert_eq!(r.circuit_state("a"), Some(1));
        let routed = r.route(&txn()).unwrap();
        assert_eq!(r.link_name(routed.lease.link()), "b", "fails over");
        routed.lease.settle(LinkOutcome::Answered);
        clock.0.store(100, Ordering::Relaxed);
        let probe = r.route(&txn()).unwrap();
        assert_eq!(r.link_name(probe.lease.link()), "a");
        assert_eq!(r.circuit_state("a"), Some(2), "half-open probe");
        probe.lease.settle(LinkOutcome::Answered);
        assert_eq!(r.circuit_state("a"), Some(0));
    }

    #[test]
    fn a_bad_directory_file_keeps_the_old_one_and_names_no_proxy() {
        let dir = std::env::temp_dir().join(format!("fps-routing-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxies.csv");
        std::fs::write(&path, "MOBN:+852-91234567,004\n").unwrap();
        let router = fps_routing::RoutingConfig::default().build(&[]).unwrap();
        let r = Routing::new(
            router,
            load_proxy_directory(&path).unwrap(),
            Some(path.clone()),
            Arc::new(FakeClock::default()),
        );
        assert_eq!(r.proxies().len(), 1);
        std::fs::write(
            &path,
            "MOBN:+852-91234567,004\nMOBN:+852-97654321,4x\nFPID:1234567\n",
        )
        .unwrap();
        let err = r.reload_proxies().unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("2 bad line(s): line 2"), "{text}");
        assert!(
            !text.contains("97654321") && !text.contains("1234567"),
            "{text}"
        );
        assert_eq!(r.proxies().len(), 1, "old directory kept");
        std::fs::write(&path, "MOBN:+852-91234567,004\nFPID:1234567,004\n").unwrap();
        assert_eq!(r.reload_proxies().unwrap(), 2);
        assert_eq!(r.proxies().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
