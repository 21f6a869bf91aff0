//! Routing configuration as the switch's TOML embeds it, and its validation.
//!
//! ```toml
//! [routing]
//! default_max_in_flight = 256
//!
//! [[routing.routes]]
//! bank_code = "004"
//! primary = "hsbc"
//! secondaries = ["hsbc-dr"]
//!
//! [[routing.bins]]
//! prefix = "476173"
//! bank = "004"
//!
//! [[routing.bins]]
//! from = "520000"
//! to = "529999"
//! bank = "004"
//!
//! [routing.breaker]
//! failure_threshold = 5
//! cool_down_ms = 5000
//!
//! [routing.retry]
//! max_attempts = 2
//!
//! [routing.max_in_flight]
//! hsbc = 512
//! ```
//!
//! Values stay as text until [`RoutingConfig::build`] so that one pass can
//! report **every** problem with its key path (`routes[2].primary: unknown
//! bank "099"`) instead of stopping at the first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use fps_codecs::model::BankCode;
use serde::Deserialize;

use crate::bin::{BinRange, BinTable, BinTableError, MAX_BIN_RANGES};
use crate::breaker::{
    BreakerSettings, MAX_COOL_DOWN, MAX_COOL_DOWN_MULTIPLIER, MAX_FAILURE_THRESHOLD,
    MAX_HALF_OPEN_PROBES,
};
use crate::limit::MAX_IN_FLIGHT_PER_LINK;
use crate::retry::{RetryPolicy, MAX_ATTEMPTS_LIMIT, MAX_BACKOFF};
use crate::route::{BankId, BankRoute, LinkId, RouteTable, MAX_CANDIDATES, MAX_LINKS};
use crate::router::Router;
use crate::time::duration_ms;

/// Most errors one validation reports; the rest are counted.
pub const MAX_CONFIG_ERRORS: usize = 1000;
/// Longest time budget a retry may reserve for one attempt.
pub const MAX_MIN_ATTEMPT: Duration = Duration::from_secs(60);

/// The `[routing]` section of the switch configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Bank code → links.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// PAN prefix ranges → bank code.
    #[serde(default)]
    pub bins: Vec<BinConfig>,
    /// Circuit breaker settings for every link.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Concurrency bound of links not listed in `max_in_flight`.
    #[serde(default = "default_max_in_flight")]
    pub default_max_in_flight: u32,
    /// Concurrency bound per link name.
    #[serde(default)]
    pub max_in_flight: BTreeMap<String, u32>,
}

fn default_max_in_flight() -> u32 {
    256
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            routes: Vec::new(),
            bins: Vec::new(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            default_max_in_flight: default_max_in_flight(),
            max_in_flight: BTreeMap::new(),
        }
    }
}

/// One `[[routing.routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination bank code, 3 digits.
    pub bank_code: String,
    /// Preferred link.
    pub primary: String,
    /// Fail-over links, in order.
    #[serde(default)]
    pub secondaries: Vec<String>,
}

/// One `[[routing.bins]]` entry: either `prefix`, or `from` and `to`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinConfig {
    /// A single prefix of 6 to 11 digits.
    #[serde(default)]
    pub prefix: Option<String>,
    /// First prefix of a range.
    #[serde(default)]
    pub from: Option<String>,
    /// Last prefix of a range (same length as `from`).
    #[serde(default)]
    pub to: Option<String>,
    /// Destination bank code; must have a route.
    pub bank: String,
}

/// `[routing.breaker]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures or timeouts that open a link's breaker.
    pub failure_threshold: u32,
    /// First cool-down.
    pub cool_down_ms: u64,
    /// Cap on the grown cool-down.
    pub max_cool_down_ms: u64,
    /// Cool-down growth per repeated open (1 = constant).
    pub cool_down_multiplier: u32,
    /// Concurrent probes while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        let d = BreakerSettings::default();
        BreakerConfig {
            failure_threshold: d.failure_threshold,
            cool_down_ms: duration_ms(d.cool_down),
            max_cool_down_ms: duration_ms(d.max_cool_down),
            cool_down_multiplier: d.cool_down_multiplier,
            half_open_probes: d.half_open_probes,
        }
    }
}

/// `[routing.retry]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Most sends per transaction (first plus retries); only `NotSent`
    /// failures are ever retried.
    pub max_attempts: u32,
    /// Backoff after the first failure (before jitter).
    pub base_backoff_ms: u64,
    /// Cap on the doubled backoff.
    pub max_backoff_ms: u64,
    /// Do not start an attempt with less than this left before the deadline.
    pub min_attempt_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 2,
            base_backoff_ms: 20,
            max_backoff_ms: 500,
            min_attempt_ms: 500,
        }
    }
}

/// One configuration problem, with the key path it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path under `[routing]`, e.g. `routes[2].primary`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a routing configuration (up to
/// [`MAX_CONFIG_ERRORS`], then a count).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors {
    /// The problems, in configuration order.
    pub errors: Vec<ConfigError>,
    /// Problems not listed because of the bound.
    pub omitted: usize,
}

impl ConfigErrors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        if self.errors.len() < MAX_CONFIG_ERRORS {
            self.errors.push(ConfigError {
                path: path.into(),
                message: message.into(),
            });
        } else {
            self.omitted += 1;
        }
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty() && self.omitted == 0
    }

    /// The key paths of the problems, in order (handy in tests).
    pub fn paths(&self) -> Vec<&str> {
        self.errors.iter().map(|e| e.path.as_str()).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        if self.omitted > 0 {
            write!(f, "\n... and {} more", self.omitted)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl RoutingConfig {
    /// Check everything; `known_banks` are the link names the switch has
    /// pools for. Returns every problem, not just the first.
    pub fn validate(&self, known_banks: &[&str]) -> Result<(), ConfigErrors> {
        self.build(known_banks).map(drop)
    }

    /// Validate and build the [`Router`]. Links are numbered in the order of
    /// `known_banks`, so `LinkId(i)` is the switch's i-th bank.
    pub fn build(&self, known_banks: &[&str]) -> Result<Router, ConfigErrors> {
        let mut errs = ConfigErrors::default();

        let links = check_known_banks(known_banks, &mut errs);
        let by_name: HashMap<&str, LinkId> = links
            .iter()
            .enumerate()
            // At most MAX_LINKS entries (checked above), well inside u16.
            .map(|(i, b)| (b.as_str(), LinkId(i as u16)))
            .collect();

        let (routes, declared) = self.check_routes(&by_name, &mut errs);
        let bins = self.check_bins(&declared, &mut errs);
        let breaker = self.breaker.check(&mut errs);
        let retry = self.retry.check(&mut errs);
        let max_in_flight = self.check_limits(&links, &by_name, &mut errs);

        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Router {
            links,
            max_in_flight,
            routes,
            bins,
            breaker,
            retry,
        })
    }

    fn check_routes(
        &self,
        by_name: &HashMap<&str, LinkId>,
        errs: &mut ConfigErrors,
    ) -> (RouteTable, HashSet<BankCode>) {
        let mut table = RouteTable::new();
        // Every bank code a route declares, valid or not, so that a broken
        // route does not also make each BIN pointing at it an error.
        let mut first_of: HashMap<BankCode, usize> = HashMap::new();
        for (i, r) in self.routes.iter().enumerate() {
            let at = |field: &str| format!("routes[{i}].{field}");
            let code = match BankCode::parse(r.bank_code.as_bytes()) {
                Ok(c) => Some(c),
                Err(e) => {
                    errs.push(at("bank_code"), format!("{:?}: {}", r.bank_code, e.reason));
                    None
                }
            };
            let primary = link(by_name, &r.primary, at("primary"), errs);
            if r.secondaries.len() >= MAX_CANDIDATES {
                errs.push(
                    at("secondaries"),
                    format!("at most {} secondaries", MAX_CANDIDATES - 1),
                );
            }
            let mut secondaries = Vec::with_capacity(r.secondaries.len());
            let mut names: Vec<&str> = vec![r.primary.as_str()];
            for (k, s) in r.secondaries.iter().enumerate() {
                let path = format!("routes[{i}].secondaries[{k}]");
                if names.contains(&s.as_str()) {
                    errs.push(
                        path,
                        format!("bank {s:?} is already a candidate of this route"),
                    );
                    continue;
                }
                names.push(s);
                if let Some(l) = link(by_name, s, path, errs) {
                    secondaries.push(l);
                }
            }
            let Some(code) = code else { continue };
            if let Some(j) = first_of.get(&code) {
                errs.push(
                    at("bank_code"),
                    format!("bank code \"{code}\" is already routed by routes[{j}]"),
                );
                continue;
            }
            first_of.insert(code, i);
            if let Some(p) = primary {
                // Repeats and length were reported above; insert what is valid.
                if let Ok(route) = BankRoute::new(p, &secondaries) {
                    if let Err(e) = table.insert(code, route) {
                        errs.push(at("bank_code"), e.to_string());
                    }
                }
            }
        }
        (table, first_of.into_keys().collect())
    }

    fn check_bins(&self, routed: &HashSet<BankCode>, errs: &mut ConfigErrors) -> BinTable {
        if self.bins.len() > MAX_BIN_RANGES {
            errs.push("bins", format!("more than {MAX_BIN_RANGES} ranges"));
            return BinTable::default();
        }
        // (entry index, path, message): sorted by entry before reporting, so
        // overlaps found at build time appear beside the entry they concern.
        let mut bad: Vec<(usize, String, String)> = Vec::new();
        let mut ranges = Vec::with_capacity(self.bins.len());
        // Position in `ranges` → index in `self.bins`, for overlap messages.
        let mut origin = Vec::with_capacity(self.bins.len());
        for (i, b) in self.bins.iter().enumerate() {
            let mut fail = |field: &str, msg: String| {
                bad.push((i, format!("bins[{i}]{field}"), msg));
            };
            let range = match (&b.prefix, &b.from, &b.to) {
                (Some(p), None, None) => BinRange::prefix(p)
                    .map_err(|e| fail(".prefix", format!("{p:?}: {e}")))
                    .ok(),
                (None, Some(from), Some(to)) => {
                    let f =
                        BinRange::prefix(from).map_err(|e| fail(".from", format!("{from:?}: {e}")));
                    let t = BinRange::prefix(to).map_err(|e| fail(".to", format!("{to:?}: {e}")));
                    match (f, t) {
                        (Ok(_), Ok(_)) => BinRange::range(from, to)
                            .map_err(|e| fail(".to", e.to_string()))
                            .ok(),
                        _ => None,
                    }
                }
                _ => {
                    fail("", "give either `prefix`, or both `from` and `to`".into());
                    None
                }
            };
            let bank = match BankCode::parse(b.bank.as_bytes()) {
                Ok(c) if !routed.contains(&c) => {
                    fail(".bank", format!("no route for bank code \"{c}\""));
                    None
                }
                Ok(c) => Some(c),
                Err(e) => {
                    fail(".bank", format!("{:?}: {}", b.bank, e.reason));
                    None
                }
            };
            if let (Some(r), Some(c)) = (range, bank) {
                ranges.push((r, c));
                origin.push(i);
            }
        }
        let table = match BinTable::build(ranges) {
            Ok(t) => t,
            Err(list) => {
                for e in list {
                    match e {
                        BinTableError::Overlap { index, other } => bad.push((
                            origin[index],
                            format!("bins[{}]", origin[index]),
                            format!(
                                "overlaps bins[{}] with the same prefix length",
                                origin[other]
                            ),
                        )),
                        other => bad.push((0, "bins".into(), other.to_string())),
                    }
                }
                BinTable::default()
            }
        };
        bad.sort_by_key(|(i, _, _)| *i);
        for (_, path, msg) in bad {
            errs.push(path, msg);
        }
        table
    }

    fn check_limits(
        &self,
        links: &[BankId],
        by_name: &HashMap<&str, LinkId>,
        errs: &mut ConfigErrors,
    ) -> Vec<u32> {
        let in_range = |v: u32| (1..=MAX_IN_FLIGHT_PER_LINK).contains(&v);
        let range_msg = format!("must be between 1 and {MAX_IN_FLIGHT_PER_LINK}");
        if !in_range(self.default_max_in_flight) {
            errs.push("default_max_in_flight", range_msg.clone());
        }
        let mut limits = vec![self.default_max_in_flight; links.len()];
        for (name, v) in &self.max_in_flight {
            let path = if BankId::parse(name).is_ok() {
                format!("max_in_flight.{name}")
            } else {
                format!("max_in_flight.{name:?}")
            };
            match by_name.get(name.as_str()) {
                None => errs.push(path, format!("unknown bank {name:?}")),
                Some(_) if !in_range(*v) => errs.push(path, range_msg.clone()),
                Some(l) => limits[l.index()] = *v,
            }
        }
        limits
    }
}

impl BreakerConfig {
    fn check(&self, errs: &mut ConfigErrors) -> BreakerSettings {
        let max_ms = duration_ms(MAX_COOL_DOWN);
        if !(1..=MAX_FAILURE_THRESHOLD).contains(&self.failure_threshold) {
            errs.push(
                "breaker.failure_threshold",
                format!("must be between 1 and {MAX_FAILURE_THRESHOLD}"),
            );
        }
        if !(1..=max_ms).contains(&self.cool_down_ms) {
            errs.push(
                "breaker.cool_down_ms",
                format!("must be between 1 and {max_ms}"),
            );
        }
        if !(self.cool_down_ms..=max_ms).contains(&self.max_cool_down_ms) {
            errs.push(
                "breaker.max_cool_down_ms",
                format!(
                    "must be between cool_down_ms ({}) and {max_ms}",
                    self.cool_down_ms
                ),
            );
        }
        if !(1..=MAX_COOL_DOWN_MULTIPLIER).contains(&self.cool_down_multiplier) {
            errs.push(
                "breaker.cool_down_multiplier",
                format!("must be between 1 and {MAX_COOL_DOWN_MULTIPLIER}"),
            );
        }
        if !(1..=MAX_HALF_OPEN_PROBES).contains(&self.half_open_probes) {
            errs.push(
                "breaker.half_open_probes",
                format!("must be between 1 and {MAX_HALF_OPEN_PROBES}"),
            );
        }
        BreakerSettings {
            failure_threshold: self.failure_threshold,
            cool_down: Duration::from_millis(self.cool_down_ms),
            max_cool_down: Duration::from_millis(self.max_cool_down_ms),
            cool_down_multiplier: self.cool_down_multiplier,
            half_open_probes: self.half_open_probes,
        }
        .clamped()
    }
}

impl RetryConfig {
    fn check(&self, errs: &mut ConfigErrors) -> RetryPolicy {
        let max_backoff_ms = duration_ms(MAX_BACKOFF);
        let max_min_attempt_ms = duration_ms(MAX_MIN_ATTEMPT);
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            errs.push(
                "retry.max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
            );
        }
        if self.max_backoff_ms > max_backoff_ms {
            errs.push(
                "retry.max_backoff_ms",
                format!("must be at most {max_backoff_ms}"),
            );
        }
        if self.base_backoff_ms > self.max_backoff_ms {
            errs.push(
                "retry.base_backoff_ms",
                format!("must be at most max_backoff_ms ({})", self.max_backoff_ms),
            );
        }
        if self.min_attempt_ms > max_min_attempt_ms {
            errs.push(
                "retry.min_attempt_ms",
                format!("must be at most {max_min_attempt_ms}"),
            );
        }
        RetryPolicy::new(
            self.max_attempts,
            Duration::from_millis(self.base_backoff_ms),
            Duration::from_millis(self.max_backoff_ms),
            Duration::from_millis(self.min_attempt_ms),
        )
    }
}

fn check_known_banks(known: &[&str], errs: &mut ConfigErrors) -> Vec<BankId> {
    if known.len() > MAX_LINKS {
        errs.push("banks", format!("more than {MAX_LINKS} bank links"));
        return Vec::new();
    }
    let mut links = Vec::with_capacity(known.len());
    for (i, name) in known.iter().enumerate() {
        match BankId::parse(name) {
            Ok(id) if links.contains(&id) => {
                errs.push(format!("banks[{i}].id"), format!("duplicate bank {name:?}"))
            }
            Ok(id) => links.push(id),
            Err(e) => errs.push(format!("banks[{i}].id"), format!("{name:?}: {e}")),
        }
    }
    links
}

fn link(
    by_name: &HashMap<&str, LinkId>,
    name: &str,
    path: String,
    errs: &mut ConfigErrors,
) -> Option<LinkId> {
    let found = by_name.get(name).copied();
    if found.is_none() {
        errs.push(path, format!("unknown bank {name:?}"));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteSource;
    use crate::select::LinkOutcome;
    use crate::time::Millis;
    use crate::{ProxyDirectory, RouteError};
    use fps_codecs::model::{Mti, Pan, ProxyId, ResponseCode, Transaction};

    const BANKS: &[&str] = &["hsbc", "hsbc-dr", "boc", "sc"];

    const GOOD: &str = r#"
        default_max_in_flight = 100

        [[routes]]
        bank_code = "004"
        primary = "hsbc"
        secondaries = ["hsbc-dr"]

        [[routes]]
        bank_code = "012"
        primary = "boc"

        [[bins]]
        prefix = "476173"
        bank = "004"

        [[bins]]
        from = "52000000"
        to = "52999999"
        bank = "012"

        [breaker]
        failure_threshold = 2
        cool_down_ms = 1000

        [retry]
        max_attempts = 3

        [max_in_flight]
        boc = 1
    "#;

    fn parse(text: &str) -> RoutingConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn good_config_builds_a_router() {
        let r = parse(GOOD).build(BANKS).unwrap();
        assert_eq!(r.links().len(), 4);
        let hsbc = r.link_id("hsbc").unwrap();
        let dr = r.link_id("hsbc-dr").unwrap();
        let boc = r.link_id("boc").unwrap();
        assert_eq!(r.link_name(boc).unwrap().as_str(), "boc");
        assert_eq!(r.max_in_flight(boc), Some(1));
        assert_eq!(r.max_in_flight(hsbc), Some(100));
        assert_eq!(r.routes().len(), 2);
        assert_eq!(r.bins().len(), 2);
        assert_eq!(r.breaker_settings().failure_threshold, 2);
        assert_eq!(r.breaker_settings().half_open_probes, 1, "default kept");
        assert_eq!(r.retry_policy().max_attempts(), 3);

        let dir = ProxyDirectory::parse("FPID:1234567,012\nFPID:7654321,024\n").unwrap();
        assert_eq!(
            r.unrouted_banks(&dir),
            vec![BankCode::parse(b"024").unwrap()]
        );
        let mut health = r.new_health();
        let mut txn = Transaction::new(Mti::CREDIT_TRANSFER);
        txn.pan = Some(Pan::parse(b"5212345678901234").unwrap());
        let routed = r.route(&txn, &dir, &mut health, Millis(0)).unwrap();
        assert_eq!(routed.lease.link(), boc);
        assert!(matches!(
            routed.decision,
            crate::RouteDecision::Route {
                via: RouteSource::Bin,
                ..
            }
        ));
        // boc allows one request at a time and has no secondary: 91.
        let err = r.route(&txn, &dir, &mut health, Millis(0)).unwrap_err();
        assert!(matches!(err, RouteError::Unavailable(_)));
        assert_eq!(err.response_code(), ResponseCode::BANK_UNAVAILABLE);
        health.settle(routed.lease, LinkOutcome::Answered, Millis(5));

        // hsbc fails twice: its breaker opens and traffic fails over to hsbc-dr.
        txn.pan = None;
        txn.proxy = Some(ProxyId::parse(b"FPID:1234567").unwrap());
        txn.receiving_bank = Some(BankCode::parse(b"004").unwrap());
        for _ in 0..2 {
            let routed = r.route(&txn, &dir, &mut health, Millis(10)).unwrap();
            assert_eq!(routed.lease.link(), hsbc);
            health.settle(routed.lease, LinkOutcome::Failed, Millis(10));
        }
        assert_eq!(health.state_code(hsbc), Some(1));
        let routed = r.route(&txn, &dir, &mut health, Millis(11)).unwrap();
        assert_eq!((routed.lease.link(), routed.lease.candidate()), (dr, 1));
        health.settle(routed.lease, LinkOutcome::Answered, Millis(12));
    }

    #[test]
    fn empty_section_uses_defaults() {
        let cfg = parse("");
        assert_eq!(cfg, RoutingConfig::default());
        let r = cfg.build(&[]).unwrap();
        assert!(r.routes().is_empty() && r.bins().is_empty());
        assert_eq!(*r.breaker_settings(), BreakerSettings::default());
        assert_eq!(*r.retry_policy(), RetryPolicy::default());
    }

    #[test]
    fn unknown_keys_are_refused_at_every_level() {
        for bad in [
            "rootes = []",
            "[[routes]]\nbank_code = \"004\"\nprimary = \"hsbc\"\nsecondary = []",
            "[[bins]]\nprefix = \"476173\"\nbank = \"004\"\nbank_code = \"004\"",
            "[breaker]\nthreshold = 3",
            "[retry]\nattempts = 3",
        ] {
            let err = toml::from_str::<RoutingConfig>(bad).unwrap_err();
            assert!(err.to_string().contains("unknown field"), "{bad}: {err}");
        }
    }

    #[test]
    fn every_error_is_reported_with_its_key_path() {
        let cfg = parse(
            r#"
            default_max_in_flight = 0

            [[routes]]
            bank_code = "004"
            primary = "hsbc"

            [[routes]]
            bank_code = "4"
            primary = "nobody"
            secondaries = ["boc", "boc", "ghost"]

            [[routes]]
            bank_code = "012"
            primary = "099"

            [[routes]]
            bank_code = "004"
            primary = "sc"

            [[bins]]
            prefix = "47617"
            bank = "004"

            [[bins]]
            from = "400000"
            to = "4999999"
            bank = "004"

            [[bins]]
            prefix = "476173"
            from = "476173"
            bank = "004"

            [[bins]]
            prefix = "476173"
            bank = "777"

            [[bins]]
            prefix = "476173"
            bank = "012"

            [[bins]]
            from = "476100"
            to = "476199"
            bank = "004"

            [[bins]]
            prefix = "520000"
            bank = "04x"

            [breaker]
            failure_threshold = 0
            cool_down_ms = 5000
            max_cool_down_ms = 10
            cool_down_multiplier = 17
            half_open_probes = 0

            [retry]
            max_attempts = 9
            base_backoff_ms = 600
            max_backoff_ms = 500
            min_attempt_ms = 100000

            [max_in_flight]
            hsbc = 0
            ghost = 5
            "bad name" = 5
            "#,
        );
        let errs = cfg.build(BANKS).unwrap_err();
        let shown: Vec<String> = errs.errors.iter().map(ToString::to_string).collect();
        let expected = [
            r#"routes[1].bank_code: "4": wrong length"#,
            r#"routes[1].primary: unknown bank "nobody""#,
            r#"routes[1].secondaries[1]: bank "boc" is already a candidate of this route"#,
            r#"routes[1].secondaries[2]: unknown bank "ghost""#,
            r#"routes[2].primary: unknown bank "099""#,
            r#"routes[3].bank_code: bank code "004" is already routed by routes[0]"#,
            r#"bins[0].prefix: "47617": BIN must have 6 to 11 digits"#,
            "bins[1].to: `from` and `to` must have the same number of digits",
            "bins[2]: give either `prefix`, or both `from` and `to`",
            r#"bins[3].bank: no route for bank code "777""#,
            "bins[5]: overlaps bins[4] with the same prefix length",
            r#"bins[6].bank: "04x": non-digit character"#,
            "breaker.failure_threshold: must be between 1 and 10000",
            "breaker.max_cool_down_ms: must be between cool_down_ms (5000) and 3600000",
            "breaker.cool_down_multiplier: must be between 1 and 16",
            "breaker.half_open_probes: must be between 1 and 64",
            "retry.max_attempts: must be between 1 and 8",
            "retry.base_backoff_ms: must be at most max_backoff_ms (500)",
            "retry.min_attempt_ms: must be at most 60000",
            "default_max_in_flight: must be between 1 and 65536",
            r#"max_in_flight."bad name": unknown bank "bad name""#,
            r#"max_in_flight.ghost: unknown bank "ghost""#,
            "max_in_flight.hsbc: must be between 1 and 65536",
        ];
        assert_eq!(shown, expected, "\n{errs}");
        assert_eq!(cfg.validate(BANKS).unwrap_err(), errs);
        // Routes with bad primaries still count as declared: bins pointing at
        // "012" are not blamed for it.
        assert!(!errs.paths().contains(&"bins[4].bank"));
    }

    #[test]
    fn known_bank_list_is_checked() {
        let errs = RoutingConfig::default()
            .build(&["hsbc", "hsbc", "no space"])
            .unwrap_err();
        assert_eq!(errs.paths(), vec!["banks[1].id", "banks[2].id"]);
        let many: Vec<String> = (0..=MAX_LINKS).map(|i| format!("b{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let errs = RoutingConfig::default().build(&many).unwrap_err();
        assert_eq!(errs.paths(), vec!["banks"]);
    }

    #[test]
    fn error_count_is_bounded() {
        let cfg = RoutingConfig {
            routes: (0..MAX_CONFIG_ERRORS + 10)
                .map(|_| RouteConfig {
                    bank_code: "x".into(),
                    primary: "hsbc".into(),
                    secondaries: vec![],
                })
                .collect(),
            ..RoutingConfig::default()
        };
        let errs = cfg.build(BANKS).unwrap_err();
        assert_eq!(errs.errors.len(), MAX_CONFIG_ERRORS);
        assert_eq!(errs.omitted, 10);
        assert!(errs.to_string().ends_with("... and 10 more"));
    }
}
