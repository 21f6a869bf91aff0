//! The daemon's TOML configuration: typed sections, every table
//! `deny_unknown_fields`, and a validation pass ([`validate`]) that collects
//! *every* problem as `key.path: reason` before anything is bound.

mod validate;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use fps_codecs::framing::FrameConfig;
use fps_codecs::iso20022::Iso20022Config;
pub use fps_codecs::iso20022::{
    Iso20022ProxyCodeSettings, Iso20022Settings, Iso20022VersionSettings,
};
use fps_codecs::model::BankCode;
use fps_routing::config::RouteConfig;
use fps_routing::limit::MAX_IN_FLIGHT_PER_LINK as MAX_ROUTED_IN_FLIGHT;
use fps_routing::route::MAX_CANDIDATES;
use fps_routing::RoutingConfig;
use serde::{Deserialize, Deserializer};

/// A bank's `codec = "..."`; `parse` checks only the syntax, and validation
/// reports an unknown ISO 8583 dialect at the bank's `codec` key.
pub use fps_codecs::CodecName;
pub use validate::{ConfigError, ConfigErrors};

/// Largest number of upstream connections a config may allow.
pub const MAX_UPSTREAM_CONNECTIONS: usize = 65_536;
/// Largest number of requests in flight on one upstream connection.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 65_536;
/// Largest number of requests in flight on one bank link. Well below the
/// 999,999 STAN space so that a STAN is never reused while in flight.
pub const MAX_IN_FLIGHT_PER_LINK: usize = 16_384;
/// Largest pool of links to one bank.
pub const MAX_LINKS_PER_BANK: usize = 64;
/// Largest number of banks in one config.
pub const MAX_BANKS: usize = 1_024;
/// Largest number of links one bank may open to the switch.
pub const MAX_INBOUND_LINKS_PER_BANK: usize = 64;
/// Largest inbound frame any setting may allow (the ISO 20022 banks'
/// 4-byte prefix could say more).
pub const MAX_INBOUND_FRAME_BYTES: usize = 1024 * 1024;
// An ISO 20022 bank's `max_message_bytes` may go up to the largest frame.
const _: () = assert!(fps_codecs::iso20022::settings::MAX_MESSAGE_BYTES == MAX_INBOUND_FRAME_BYTES);
/// Longest `idempotency.retention_hours` (a year): the daemon works in
/// milliseconds, and a key kept longer than that is a mistake.
pub const MAX_RETENTION_HOURS: u64 = 366 * 24;
/// Longest timeout any setting may ask for (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;

const _: () = assert!(MAX_IN_FLIGHT_PER_LINK < 999_999 / 2);

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The switch's own identity in the payment scheme.
    #[serde(default)]
    pub switch: SwitchConfig,
    /// The listener the upstream gateway connects to.
    pub upstream: UpstreamConfig,
    /// The listener banks open their own links to (bank-originated
    /// traffic); each bank that may use it has an `inbound` section.
    /// Absent: no bank can open a link to the switch.
    #[serde(default)]
    pub bank_inbound: Option<BankInboundConfig>,
    /// The admin HTTP listener (metrics, health, link status).
    pub admin: AdminConfig,
    /// Graceful shutdown.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// The banks the switch keeps links to.
    #[serde(default)]
    pub banks: Vec<BankConfig>,
    /// Where transactions go: routes, BIN ranges, breakers, retries and the
    /// proxy directory file.
    #[serde(default)]
    pub routing: RoutingSection,
    /// The transaction journal (payment safety).
    #[serde(default)]
    pub journal: JournalSection,
    /// Idempotency keys.
    #[serde(default)]
    pub idempotency: IdempotencySection,
    /// The store-and-forward reversal queues.
    #[serde(default)]
    pub reversal: ReversalSection,
    /// The HSM that makes and checks the banks' MACs and signatures
    /// (`fps-hsm`'s own section, see hsm/README.md). Required when any bank
    /// has `auth`; absent, no message is authenticated.
    #[serde(default)]
    pub hsm: Option<fps_hsm::HsmConfig>,
}

/// The `[journal]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// Directory of the journal segments and the key store. Absent: no
    /// journal at all (development and benchmarks only: nothing survives a
    /// crash, and the switch logs a warning at start).
    pub dir: Option<PathBuf>,
    /// `always`, `batch` (group commit, the default) or `never`.
    #[serde(default = "default_fsync")]
    pub fsync: crate::journal::FsyncMode,
    /// Segment size before rotation.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Least time between two commits of the idempotency key store
    /// (`keys.redb`), milliseconds, 0..=10000 (default 200). The store is
    /// derived from the journal, so this trades nothing durable: larger,
    /// rarer batches cost its writer far less CPU per key.
    #[serde(default = "default_keystore_commit_interval_ms")]
    pub keystore_commit_interval_ms: u64,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            dir: None,
            fsync: default_fsync(),
            segment_bytes: default_segment_bytes(),
            keystore_commit_interval_ms: default_keystore_commit_interval_ms(),
        }
    }
}

fn default_keystore_commit_interval_ms() -> u64 {
    crate::keystore::DEFAULT_COMMIT_INTERVAL.as_millis() as u64
}

fn default_fsync() -> crate::journal::FsyncMode {
    crate::journal::FsyncMode::Batch
}

fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}

/// The `[idempotency]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySection {
    /// How long a completed key is remembered, in hours (default 24).
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// Most keys held in memory; older ones are looked up on disk. Room
    /// for all of them is reserved at start (about 500 bytes a key: some
    /// 500 MB for the default million; resident from the start with
    /// `pretouch`, else as keys arrive), so the index never grows on the
    /// request path.
    #[serde(default = "default_keys_in_memory")]
    pub max_keys_in_memory: usize,
    /// Make that room resident at start (default true): every slot is
    /// written once before the switch is ready, so that requests do not
    /// take the page faults of first touching it (keys land all over the
    /// table: without this, a large share of the first million requests
    /// each take one). Costs the memory up front and about 0.8 s of
    /// start-up a million keys on the project's VM; `false` for many small
    /// test instances.
    #[serde(default = "default_true")]
    pub pretouch: bool,
}

impl Default for IdempotencySection {
    fn default() -> Self {
        IdempotencySection {
            retention_hours: default_retention_hours(),
            max_keys_in_memory: default_keys_in_memory(),
            pretouch: true,
        }
    }
}

fn default_retention_hours() -> u64 {
    24
}

fn default_keys_in_memory() -> usize {
    1_000_000
}

fn default_true() -> bool {
    true
}

/// The `[reversal]` section (one queue per bank, these settings each).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReversalSection {
    /// Attempts of one message before the item is parked (default 6).
    #[serde(default = "default_reversal_attempts")]
    pub max_attempts: u32,
    /// Backoff after the first failed attempt.
    #[serde(default = "default_reversal_base_ms")]
    pub base_backoff_ms: u64,
    /// Longest backoff.
    #[serde(default = "default_reversal_max_ms")]
    pub max_backoff_ms: u64,
    /// Most items per bank queue, active and parked.
    #[serde(default = "default_reversal_capacity")]
    pub capacity: usize,
}

impl Default for ReversalSection {
    fn default() -> Self {
        ReversalSection {
            max_attempts: default_reversal_attempts(),
            base_backoff_ms: default_reversal_base_ms(),
            max_backoff_ms: default_reversal_max_ms(),
            capacity: default_reversal_capacity(),
        }
    }
}

impl ReversalSection {
    /// The routing crate's queue settings.
    pub fn queue_config(&self) -> fps_routing::reversal::ReversalConfig {
        fps_routing::reversal::ReversalConfig {
            max_attempts: self.max_attempts,
            base_backoff_ms: self.base_backoff_ms,
            max_backoff_ms: self.max_backoff_ms,
            capacity: self.capacity,
        }
        .clamped()
    }
}

fn default_reversal_attempts() -> u32 {
    6
}

fn default_reversal_base_ms() -> u64 {
    1_000
}

fn default_reversal_max_ms() -> u64 {
    60_000
}

fn default_reversal_capacity() -> usize {
    10_000
}

/// The `[routing]` section: `fps_routing::RoutingConfig` (routes, bins,
/// breaker, retry, limits) plus the switch's own `proxy_directory` file.
///
/// Deserialized by hand because serde's `flatten` would silently accept
/// unknown keys; here every key but `proxy_directory` goes to
/// `RoutingConfig`, which refuses unknown ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingSection {
    /// CSV file `proxy,bank_code[,display_name]`, loaded at start and
    /// reloaded on SIGHUP. Without it every F120-only request answers 14.
    pub proxy_directory: Option<PathBuf>,
    /// Routes, BIN ranges, breaker, retry and concurrency settings.
    pub rules: RoutingConfig,
    /// Whether `default_max_in_flight` was written; when not, each bank's
    /// routing concurrency limit defaults to its pool's capacity.
    pub default_max_in_flight_given: bool,
}

impl<'de> Deserialize<'de> for RoutingSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let default_max_in_flight_given = table.contains_key("default_max_in_flight");
        let proxy_directory = match table.remove("proxy_directory") {
            None => None,
            Some(toml::Value::String(s)) => Some(PathBuf::from(s)),
            Some(_) => return Err(D::Error::custom("proxy_directory: expected a file path")),
        };
        let rules = toml::Value::Table(table)
            .try_into::<RoutingConfig>()
            .map_err(|e| D::Error::custom(format!("routing: {}", e.message().trim())))?;
        Ok(RoutingSection {
            proxy_directory,
            rules,
            default_max_in_flight_given,
        })
    }
}

impl Config {
    /// Parse TOML text. Syntax and type errors come back as one error (the
    /// TOML parser stops at the first) at `line N`; when the text is valid
    /// TOML the reason starts with the key path the error is at
    /// (`line 31: banks[2].iso20022.bogus: unknown field ...`). Semantic
    /// checks are [`Config::validate`].
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().trim();
            let Some(span) = e.span() else {
                return ConfigErrors::one("toml", message.to_owned());
            };
            let line = text
                .get(..span.start)
                .map_or(0, |t| t.matches('\n').count() + 1);
            let reason = match key_path_at(text, span.start) {
                // A section that reports its own errors already names itself.
                Some(key) if !message.starts_with(&format!("{key}:")) => {
                    format!("{key}: {message}")
                }
                _ => message.to_owned(),
            };
            ConfigErrors::one(format!("line {line}"), reason)
        })
    }

    /// Read, parse and validate a config file. Relative paths inside it are
    /// taken relative to the current directory (the daemon's working dir).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        let cfg = Config::from_toml_str(&text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check every setting, returning all problems at once. Reads (but never
    /// binds or connects) the certificate and key files named.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        validate::validate(self)
    }

    /// The names of the configured banks, in config order: the routing
    /// crate's `LinkId(i)` is `banks[i]`, the same index as the bank pools.
    pub fn link_names(&self) -> Vec<&str> {
        self.banks.iter().map(|b| b.name.as_str()).collect()
    }

    /// The routing rules in force: `[routing]` as written, plus an implicit
    /// route for every `[[banks]]` code that no `[[routing.routes]]` names
    /// (primary = the first bank with that code, secondaries = the later
    /// ones, in config order, up to the routing crate's candidate bound).
    /// Implicit routes come after the written ones, so error paths
    /// (`routing.routes[i]`) still point into the file. Unless
    /// `default_max_in_flight` is written, a bank without a
    /// `routing.max_in_flight` entry is limited to its pool's capacity
    /// (`max_in_flight` x `pool.max`), not the routing crate's default.
    pub fn routing_rules(&self) -> RoutingConfig {
        let mut rules = self.routing.rules.clone();
        if !self.routing.default_max_in_flight_given {
            // Bad names are reported as banks[i].name, not again here.
            for b in self
                .banks
                .iter()
                .filter(|b| fps_routing::BankId::parse(&b.name).is_ok())
            {
                let capacity = b.max_in_flight.saturating_mul(b.pool.max);
                // Out-of-range bank values are reported as banks[i].*.
                let capacity = capacity.clamp(1, MAX_ROUTED_IN_FLIGHT as usize) as u32;
                rules
                    .max_in_flight
                    .entry(b.name.clone())
                    .or_insert(capacity);
            }
        }
        let written: Vec<BankCode> = rules
            .routes
            .iter()
            .filter_map(|r| BankCode::parse(r.bank_code.as_bytes()).ok())
            .collect();
        let mut implicit: Vec<(BankCode, RouteConfig)> = Vec::new();
        for b in &self.banks {
            let Ok(code) = BankCode::parse(b.code.as_bytes()) else {
                continue; // reported as banks[i].code
            };
            // A bad name is reported as banks[i].name; a route made from it
            // would add an error at a routes[i] the file does not have.
            if fps_routing::BankId::parse(&b.name).is_err() {
                continue;
            }
            if written.contains(&code) {
                continue;
            }
            match implicit.iter_mut().find(|(c, _)| *c == code) {
                Some((_, r)) => {
                    let taken = std::iter::once(&r.primary).chain(&r.secondaries);
                    if r.secondaries.len() + 1 < MAX_CANDIDATES
                        && !taken.into_iter().any(|n| *n == b.name)
                    {
                        r.secondaries.push(b.name.clone());
                    }
                }
                None => implicit.push((
                    code,
                    RouteConfig {
                        bank_code: b.code.clone(),
                        primary: b.name.clone(),
                        secondaries: Vec::new(),
                    },
                )),
            }
        }
        rules.routes.extend(implicit.into_iter().map(|(_, r)| r));
        rules
    }

    /// Every HSM key the banks' `auth` names, with what the switch does with
    /// it: checked at start (`Hsm::check_keys`). Invalid entries (reported
    /// by validation) are left out.
    pub fn hsm_keys(&self) -> Vec<(fps_hsm::KeyRef, fps_hsm::Operation)> {
        let mut keys = Vec::new();
        for b in &self.banks {
            let uses = match b.auth.as_ref().map(BankAuthConfig::keys) {
                Some(Ok(AuthKeys::Mac(k))) => [
                    (k.clone(), fps_hsm::Operation::Mac),
                    (k, fps_hsm::Operation::VerifyMac),
                ],
                Some(Ok(AuthKeys::Signature { sign, verify })) => [
                    (sign, fps_hsm::Operation::Sign),
                    (verify, fps_hsm::Operation::Verify),
                ],
                _ => continue,
            };
            for u in uses {
                if !keys.contains(&u) {
                    keys.push(u);
                }
            }
        }
        keys
    }

    /// A one-line summary for `check-config`.
    pub fn summary(&self) -> String {
        format!(
            "config ok: upstream {} ({}), admin {}, {} bank(s): {}; {} route(s), {} BIN range(s)",
            self.upstream.bind,
            if self.upstream.tls {
                "mTLS"
            } else {
                "PLAINTEXT"
            },
            self.admin.bind,
            self.banks.len(),
            self.banks
                .iter()
                .map(|b| {
                    let auth = match b.auth.as_ref().map(BankAuthConfig::keys) {
                        Some(Ok(AuthKeys::Mac(k))) => format!(", {} MAC", k.mechanism()),
                        Some(Ok(AuthKeys::Signature { sign, .. })) => {
                            format!(", {} signatures", sign.mechanism())
                        }
                        _ => String::new(),
                    };
                    format!("{} {} [{}{auth}]", b.code, b.name, b.codec)
                })
                .collect::<Vec<_>>()
                .join(", "),
            self.routing_rules().routes.len(),
            self.routing.rules.bins.len(),
        ) + &self.inbound_summary()
    }

    /// `; bank inbound ADDR (mTLS): N bank(s)`, or nothing without one.
    fn inbound_summary(&self) -> String {
        let Some(i) = &self.bank_inbound else {
            return String::new();
        };
        let banks: Vec<&str> = self
            .banks
            .iter()
            .filter(|b| b.inbound.as_ref().is_some_and(|l| l.enabled))
            .map(|b| b.name.as_str())
            .collect();
        format!(
            "; bank inbound {} (mTLS): {} bank(s) [{}]",
            i.bind,
            banks.len(),
            banks.join(", ")
        )
    }
}

/// The switch's own identity.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// The switch's FPS participant (clearing member) code, 3 digits: the
    /// debtor agent of the transfers it sends. Required by ISO 20022 banks.
    pub participant_code: Option<String>,
    /// Threads that run the switch's tasks (I/O, codecs, routing). Default:
    /// the CPUs this process may run on (its affinity mask, so `taskset -c
    /// 0` means 1). See [`crate::runtime`] for why one thread gets a
    /// different scheduler.
    pub worker_threads: Option<usize>,
    /// Busy polling: the runtime's thread polls for I/O without sleeping
    /// when it has nothing to run, so a request never waits for the core
    /// to wake up (on a VM, an idle vCPU halts and its wake-up costs tens of
    /// microseconds). Only for a switch with a core of its own, without an
    /// HSM pool on that core (its workers need it: measured, a MAC on every
    /// message fails at rates that pass without busy polling): the thread
    /// shows 100% busy. Single-thread runtime only. See
    /// [`crate::runtime::busy_poll`].
    #[serde(default)]
    pub busy_poll: bool,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json`, one line per event either way.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` env-filter directive, e.g. `info,fps_switch=debug`.
    /// `RUST_LOG` overrides it.
    #[serde(default = "default_log_filter")]
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            filter: default_log_filter(),
        }
    }
}

fn default_log_filter() -> String {
    "info".to_owned()
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The upstream listener (canonical protocol, DESIGN.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `ip:port` to listen on.
    pub bind: String,
    /// Mutual TLS 1.3 (default). `false` is plaintext, for local tests only.
    #[serde(default = "yes")]
    pub tls: bool,
    /// PEM certificate chain of the switch (when `tls`).
    pub cert: Option<PathBuf>,
    /// PEM private key of the switch (when `tls`).
    pub key: Option<PathBuf>,
    /// PEM CA certificate(s) that gateway client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Most concurrent upstream connections; more are accepted and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most requests in flight per connection; reading stops when full.
    #[serde(default = "default_max_in_flight_conn")]
    pub max_in_flight_per_connection: usize,
    /// Largest frame accepted (prefix excluded).
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Time allowed for the TLS handshake.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// A connection with nothing read and nothing in flight for this long is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

/// The admin HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` to listen on.
    pub bind: String,
}

/// Graceful shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout_ms: default_drain_timeout_ms(),
        }
    }
}

/// One bank and the pool of links the switch keeps to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankConfig {
    /// Bank code (F100), 3 digits.
    pub code: String,
    /// Short name for logs, metrics labels and `/links` (`[a-z0-9_-]`).
    pub name: String,
    /// Interface standard: `iso8583:<dialect>`, `iso20022` or `json`.
    pub codec: String,
    /// Length prefix and header of each message on the link.
    #[serde(default)]
    pub framing: FrameConfig,
    /// `host:port` of the bank's endpoints, tried in turn.
    pub endpoints: Vec<String>,
    /// mTLS to the bank. Absent only with `danger_plaintext = true`.
    pub tls: Option<BankTlsConfig>,
    /// Talk to the bank without TLS (local simulators only).
    #[serde(default)]
    pub danger_plaintext: bool,
    /// How many links to keep.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Deadline of one request to the bank.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Most requests in flight on one link.
    #[serde(default = "default_max_in_flight_link")]
    pub max_in_flight: usize,
    /// Send an echo (0800/301) when a link has been quiet this long (ISO 8583).
    #[serde(default = "default_echo_interval_ms")]
    pub echo_interval_ms: u64,
    /// Time allowed for TCP connect plus TLS handshake plus sign-on.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// ISO 8583 banks: settle unknown outcomes with reversal advices
    /// (0420/0421) instead of reversals (0400/0401).
    #[serde(default)]
    pub reversal_advice: bool,
    /// MAC or sign what goes to the bank and verify what comes back, with
    /// keys in the `[hsm]` (see `bank::auth`). Absent: no authentication.
    /// Inbound links use the same keys the same way.
    #[serde(default)]
    pub auth: Option<BankAuthConfig>,
    /// Links this bank opens to the switch's `[bank_inbound]` listener:
    /// the identity its client certificate must carry. Absent: refused.
    #[serde(default)]
    pub inbound: Option<BankInboundLinkConfig>,
    /// ISO 20022 banks: the codec's settings (own BIC, message versions,
    /// ...), on its outbound and inbound links alike. Absent, or any key
    /// unset: the codec's default (the HKICL FPS profile).
    #[serde(default)]
    pub iso20022: Option<Iso20022Settings>,
}

impl BankConfig {
    /// The ISO 20022 codec settings of this bank (the defaults without an
    /// `iso20022` table), or every problem as (key under `iso20022`, reason).
    pub fn iso20022_config(&self) -> Result<Iso20022Config, Vec<(&'static str, String)>> {
        Iso20022Settings::codec_config_of(self.iso20022.as_ref())
    }
}

/// The `[bank_inbound]` listener: mTLS 1.3 only (a bank is identified by
/// its client certificate, so there is no plaintext mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankInboundConfig {
    /// `ip:port` to listen on.
    pub bind: String,
    /// PEM certificate chain of the switch.
    pub cert: PathBuf,
    /// PEM private key of the switch.
    pub key: PathBuf,
    /// PEM CA certificate(s) that bank client certificates must chain to.
    pub client_ca: PathBuf,
    /// Most concurrent inbound links (all banks); more are closed at once.
    #[serde(default = "default_inbound_max_connections")]
    pub max_connections: usize,
    /// Most requests in flight per link; reading stops when full.
    #[serde(default = "default_inbound_max_in_flight")]
    pub max_in_flight_per_connection: usize,
    /// Ceiling on every bank's inbound frame (its framing's own
    /// `max_frame_bytes` applies when smaller).
    #[serde(default = "default_inbound_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Time allowed for the TLS handshake.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// A link with nothing read and nothing in flight for this long is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

/// A bank's `inbound = { ... }`: how its links to the switch are
/// recognised. `identity` is matched (ASCII case-insensitively) against
/// the DNS names of the client certificate's subjectAltName and its
/// subject CN; `sha256` pins the certificate itself (hex SHA-256 of its
/// DER, colons allowed). At least one is required; with both, both must
/// match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankInboundLinkConfig {
    /// DNS SAN or CN the bank's client certificate carries, e.g.
    /// `bank003.fps.test`.
    pub identity: Option<String>,
    /// SHA-256 fingerprint of the bank's client certificate.
    pub sha256: Option<String>,
    /// `false` refuses the bank's links (counted) without removing it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Length prefix and header of the bank's inbound messages; default:
    /// the bank's `framing`.
    pub framing: Option<FrameConfig>,
    /// Most links this bank may hold open at once.
    #[serde(default = "default_inbound_links_per_bank")]
    pub max_links: usize,
}

impl BankInboundLinkConfig {
    /// The pinned fingerprint as 32 bytes, if one is configured and valid.
    pub fn sha256_bytes(&self) -> Option<Result<[u8; 32], &'static str>> {
        let text = self.sha256.as_ref()?;
        let hex: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
        if hex.len() != 64 {
            return Some(Err("not 64 hex digits (colons allowed)"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => return Some(Err("not 64 hex digits (colons allowed)")),
            }
        }
        Some(Ok(out))
    }
}

/// A bank's `auth = { ... }`: `mac = KEY` (ISO 8583 banks: one shared
/// secret key, both directions), or `sign = KEY, verify = KEY` (ISO 20022
/// and JSON banks: the switch's private key, the bank's public key). A KEY
/// is `{ label = "mac-hmac", mechanism = "hmac_sha256" }`: the base label
/// of a key in the HSM (versions `-v1`, `-v2`, ... are found there).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankAuthConfig {
    /// Shared MAC key (`hmac_sha256` or `aes_cmac`).
    pub mac: Option<KeyConfig>,
    /// The switch's signing key (`ecdsa_p256_sha256`, `rsa_pss_sha256`, `ed25519`).
    pub sign: Option<KeyConfig>,
    /// The bank's public key, to verify its signatures.
    pub verify: Option<KeyConfig>,
}

/// One HSM key as the config names it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Base label in the HSM (no `-vN` suffix).
    pub label: String,
    /// `hmac_sha256`, `aes_cmac`, `ecdsa_p256_sha256`, `rsa_pss_sha256` or `ed25519`.
    pub mechanism: String,
}

impl KeyConfig {
    /// The key reference, or why it is not one.
    pub fn key_ref(&self) -> Result<fps_hsm::KeyRef, String> {
        let mechanism = fps_hsm::Mechanism::from_name(&self.mechanism).ok_or_else(|| {
            format!(
                "unknown mechanism {:?} (known: {})",
                self.mechanism,
                fps_hsm::ALL_MECHANISMS.map(|m| m.as_str()).join(", ")
            )
        })?;
        fps_hsm::KeyRef::new(&self.label, mechanism).map_err(|e| match e {
            fps_hsm::HsmError::InvalidInput { reason } => reason,
            other => other.to_string(),
        })
    }
}

/// What a valid `auth` resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthKeys {
    /// A MAC key shared with the bank.
    Mac(fps_hsm::KeyRef),
    /// The switch signs with `sign`; the bank's signatures verify with `verify`.
    Signature {
        /// The switch's private key.
        sign: fps_hsm::KeyRef,
        /// The bank's public key.
        verify: fps_hsm::KeyRef,
    },
}

impl BankAuthConfig {
    /// The keys, or every problem as `(key under auth, reason)`.
    pub fn keys(&self) -> Result<AuthKeys, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let mut key = |name: &'static str, k: &Option<KeyConfig>, mac: bool| {
            let k = k.as_ref()?;
            match k.key_ref() {
                Ok(r) if r.mechanism().is_mac() == mac => Some(r),
                Ok(r) => {
                    let want = if mac { "a MAC" } else { "a signature" };
                    errors.push((name, format!("{} is not {want} mechanism", r.mechanism())));
                    None
                }
                Err(e) => {
                    errors.push((name, e));
                    None
                }
            }
        };
        let mac = key("mac", &self.mac, true);
        let sign = key("sign", &self.sign, false);
        let verify = key("verify", &self.verify, false);
        let shape = (
            self.mac.is_some(),
            self.sign.is_some(),
            self.verify.is_some(),
        );
        match shape {
            (true, false, false) | (false, true, true) => {}
            (true, _, _) => errors.push(("mac", "set mac, or sign and verify, not both".into())),
            (false, true, false) => errors.push(("verify", "required with sign".into())),
            (false, false, true) => errors.push(("sign", "required with verify".into())),
            (false, false, false) => errors.push(("", "set mac, or sign and verify".into())),
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        match (mac, sign, verify) {
            (Some(mac), None, None) => Ok(AuthKeys::Mac(mac)),
            (None, Some(sign), Some(verify)) => Ok(AuthKeys::Signature { sign, verify }),
            // Every other shape pushed an error above.
            _ => Err(vec![("", "set mac, or sign and verify".into())]),
        }
    }
}

/// TLS settings of a bank link.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankTlsConfig {
    /// PEM client certificate chain the switch presents to this bank.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM CA certificate(s) of the bank: the only roots trusted for it.
    pub ca: PathBuf,
    /// Name sent in SNI and checked against the bank's certificate.
    pub server_name: String,
}

/// Link pool size.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Links kept open at all times.
    #[serde(default = "one")]
    pub min: usize,
    /// Links opened at most (extra ones open under load).
    #[serde(default = "default_pool_max")]
    pub max: usize,
    /// A link with no request in flight for this long is closed (signed
    /// off) while more than `min` are open; 0 = never.
    #[serde(default = "default_pool_idle_close_ms")]
    pub idle_close_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min: one(),
            max: default_pool_max(),
            idle_close_ms: default_pool_idle_close_ms(),
        }
    }
}

/// Deepest nesting [`key_path_at`] follows (the config is 4 tables deep).
const MAX_KEY_PATH_DEPTH: usize = 16;

/// The key path (`banks[2].iso20022.versions.pacs008`) of the key or
/// value at byte `pos` of `text`, if `text` is valid TOML. Serde's errors
/// only carry a span, and a line number alone does not say which bank a
/// table belongs to.
fn key_path_at(text: &str, pos: usize) -> Option<String> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut path = String::new();
    table_path_at(doc.get_ref(), pos, &mut path, 0).then_some(path)
}

/// Appends to `path` the key in `table` (or under it) at `pos`.
fn table_path_at(
    table: &toml::de::DeTable<'_>,
    pos: usize,
    path: &mut String,
    depth: usize,
) -> bool {
    for (key, value) in table.iter() {
        let len = path.len();
        if len > 0 {
            path.push('.');
        }
        path.push_str(key.get_ref());
        if key.span().contains(&pos) || value_path_at(value, pos, path, depth) {
            return true;
        }
        path.truncate(len);
    }
    false
}

/// Appends to `path` the index or key under `value` at `pos`; true also
/// when `pos` is in `value` itself (a span there names no deeper key).
fn value_path_at(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    pos: usize,
    path: &mut String,
    depth: usize,
) -> bool {
    if depth < MAX_KEY_PATH_DEPTH {
        let inner = match value.get_ref() {
            toml::de::DeValue::Table(t) => table_path_at(t, pos, path, depth + 1),
            toml::de::DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                // Writing to a String cannot fail.
                let _ = write!(path, "[{i}]");
                let found = value_path_at(item, pos, path, depth + 1);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        };
        if inner {
            return true;
        }
    }
    value.span().contains(&pos)
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn default_pool_max() -> usize {
    4
}
fn default_pool_idle_close_ms() -> u64 {
    60_000
}
fn default_max_connections() -> usize {
    1_024
}
fn default_max_in_flight_conn() -> usize {
    4_096
}
fn default_max_frame_bytes() -> usize {
    fps_codecs::framing::DEFAULT_MAX_FRAME_BYTES
}
fn default_handshake_timeout_ms() -> u64 {
    5_000
}
fn default_idle_timeout_ms() -> u64 {
    300_000
}
fn default_drain_timeout_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_max_in_flight_link() -> usize {
    2_048
}
fn default_echo_interval_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_inbound_max_connections() -> usize {
    256
}
fn default_inbound_max_in_flight() -> usize {
    2_048
}
fn default_inbound_max_frame_bytes() -> usize {
    65_536
}
fn default_inbound_links_per_bank() -> usize {
    4
}
