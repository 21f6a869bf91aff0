//! The bank simulator's TOML config: parsed with unknown keys refused, then
//! validated as a whole. Every error names the key path it is about
//! (`banks[2].faults.drop`), and all errors are reported at once.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fps_codecs::framing::{FrameConfig, Framer};
use fps_codecs::iso20022::Iso20022Config;
pub use fps_codecs::iso20022::{
    Iso20022ProxyCodeSettings, Iso20022Settings, Iso20022VersionSettings,
};
use fps_codecs::model::BankCode;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A bank's `codec = "..."`, the switch's names; the simulator reads it with
/// `CodecName::parse_shipped`, as it serves only shipped ISO 8583 dialects.
pub use fps_codecs::CodecName;

/// Most banks one simulator process serves.
pub const MAX_BANKS: usize = 256;
/// Default bound on transactions (and reversal records) kept in the ledger.
pub const DEFAULT_MAX_LEDGER_ENTRIES: usize = 1_000_000;
/// Hard ceiling on `max_ledger_entries`.
pub const MAX_LEDGER_ENTRIES_LIMIT: usize = 10_000_000;
/// Longest latency or `late_ms` accepted, in milliseconds.
pub const MAX_DELAY_MS: u64 = 10 * 60 * 1000;
/// Default `late_ms`: past the switch's default 10 s bank deadline.
pub const DEFAULT_LATE_MS: u64 = 12_000;

/// The whole simulator config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The ledger and health HTTP endpoint.
    pub http: HttpConfig,
    /// Seed of every bank's random draws (latency, faults); same seed and
    /// same request order give the same draws.
    #[serde(default)]
    pub seed: u64,
    /// Most ledger records (transactions plus reversal messages) kept; later
    /// ones are still answered but only counted.
    #[serde(default = "default_max_ledger_entries")]
    pub max_ledger_entries: usize,
    /// The simulated banks.
    pub banks: Vec<BankConfig>,
    /// The HSM holding the banks' keys (`fps-hsm`'s `[hsm]`, as in the
    /// switch config). Required when a bank has `auth`.
    #[serde(default)]
    pub hsm: Option<fps_hsm::HsmConfig>,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `GET /ledger` and `GET /healthz` (`127.0.0.1:0` picks a port).
    pub bind: SocketAddr,
}

/// One `[[banks]]` entry: one listener speaking one interface.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankConfig {
    /// Short name for the ledger (`[a-z0-9_-]`, unique).
    pub name: String,
    /// The bank's 3-digit code.
    pub code: String,
    /// Interface, as in the switch config: `iso8583:<dialect>`, `iso20022`, `json`.
    pub codec: String,
    /// Address the bank listens on.
    pub listen: SocketAddr,
    /// Length prefix and header, as in the switch config.
    #[serde(default)]
    pub framing: FrameConfig,
    /// `tls = false` for plaintext, or a table with `cert`, `key`, `client_ca`.
    pub tls: TlsSetting,
    /// Delay before each answer.
    #[serde(default)]
    pub latency: Latency,
    /// Fault injection, percentages of requests.
    #[serde(default)]
    pub faults: Faults,
    /// Verify the switch's MAC or signature on each request and MAC or sign
    /// each answer (see [`super::auth`]). Absent: neither.
    #[serde(default)]
    pub auth: Option<SimAuthConfig>,
    /// Also act as a client: open inbound links to the switch and send
    /// payments this bank originates (see `super::client`). Absent: server only.
    #[serde(default)]
    pub client: Option<ClientConfig>,
    /// ISO 20022 banks: the codec's settings, with the switch config's key
    /// names and defaults (e.g. `versions = { pacs008 = "001.09" }` for a
    /// bank on another message version). Absent: the codec's defaults.
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

/// Most links one simulated bank opens to the switch.
pub const MAX_CLIENT_LINKS: usize = 16;
/// Most payments one client link has in flight.
pub const MAX_CLIENT_IN_FLIGHT: usize = 4_096;
/// Highest client rate, payments per second (all links together).
pub const MAX_CLIENT_RATE: f64 = 100_000.0;

/// A bank's `[banks.client]`: the links it opens to the switch's
/// `[bank_inbound]` listener and the payments it sends on them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The switch's `[bank_inbound]` address, `host:port`.
    pub switch: String,
    /// Links to open (payments are spread over them).
    #[serde(default = "default_client_links")]
    pub links: usize,
    /// Payments to send in all; 0 sends until the simulator stops (then
    /// `rate` is required).
    #[serde(default)]
    pub count: u64,
    /// Payments per second, all links together; 0 sends as fast as
    /// `max_in_flight` allows.
    #[serde(default)]
    pub rate: f64,
    /// Most payments in flight per link.
    #[serde(default = "default_client_in_flight")]
    pub max_in_flight: usize,
    /// An answer must come within this, else the payment counts as an error.
    #[serde(default = "default_client_timeout_ms")]
    pub timeout_ms: u64,
    /// Wait this long before the first link opens.
    #[serde(default)]
    pub start_delay_ms: u64,
    /// Amount of each payment, minor units (HKD).
    #[serde(default = "default_client_amount")]
    pub amount_minor: u64,
    /// mTLS to the switch: this bank's client certificate.
    pub tls: ClientTlsFiles,
    /// Where the payments go, in turn.
    pub targets: Vec<ClientTarget>,
}

/// The client certificate a simulated bank presents to the switch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsFiles {
    /// PEM client certificate chain (clientAuth).
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA the switch's server certificate must verify against.
    pub ca: PathBuf,
    /// Name checked against the switch's certificate (and sent in SNI).
    pub server_name: String,
}

/// One destination of a client's payments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTarget {
    /// Destination bank code (F100 / creditor agent).
    pub bank: String,
    /// Creditor account (the destination's outcome rules apply: ending
    /// `14` is answered 14). Default `987654321098`.
    #[serde(default)]
    pub account: Option<String>,
}

fn default_client_links() -> usize {
    1
}
fn default_client_in_flight() -> usize {
    64
}
fn default_client_timeout_ms() -> u64 {
    15_000
}
fn default_client_amount() -> u64 {
    10_000
}

/// A simulated bank's `auth`, mirroring the switch's: `mac = KEY` (the key
/// shared with the switch, ISO 8583), or `sign = KEY, verify = KEY` (the
/// bank's private key for its answers, the switch's public key for the
/// requests; ISO 20022 and JSON). KEY is `{ label, mechanism }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimAuthConfig {
    /// Shared MAC key.
    pub mac: Option<fps_hsm::KeyRef>,
    /// The bank's signing key (its answers).
    pub sign: Option<fps_hsm::KeyRef>,
    /// The switch's public key (its requests).
    pub verify: Option<fps_hsm::KeyRef>,
}

/// A bank listener's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSetting {
    /// `tls = false`: plaintext TCP.
    Plaintext,
    /// TLS with these files.
    Tls(TlsFiles),
}

/// Certificate files of a TLS bank listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM server certificate chain.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA of client certificates: when set, a client certificate is
    /// required and must verify against it (the switch's client certificate).
    pub client_ca: Option<PathBuf>,
}

/// Latency distribution of answers.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    /// Always `ms`.
    Fixed {
        /// Delay in milliseconds.
        ms: u64,
    },
    /// Uniform in `min_ms..=max_ms`.
    Uniform {
        /// Shortest delay.
        min_ms: u64,
        /// Longest delay.
        max_ms: u64,
    },
    /// Log-normal with this median and shape (`sigma` of the underlying normal).
    Lognormal {
        /// Median delay in milliseconds.
        median_ms: f64,
        /// Standard deviation of `ln(delay)`.
        sigma: f64,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Fixed { ms: 0 }
    }
}

/// Fault percentages (0 to 100 each, at most 100 together), applied to
/// payment messages (not to network management).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Never answer.
    #[serde(default)]
    pub drop: f64,
    /// Answer after `late_ms` instead of the drawn latency.
    #[serde(default)]
    pub late: f64,
    /// Delay of a late answer.
    #[serde(default = "default_late_ms")]
    pub late_ms: u64,
    /// Answer twice.
    #[serde(default)]
    pub duplicate: f64,
    /// Close the connection instead of answering.
    #[serde(default)]
    pub disconnect: f64,
    /// Write a malformed frame instead of the answer.
    #[serde(default)]
    pub garbage: f64,
    /// Answer with a corrupted MAC or signature (banks with `auth`): the
    /// switch must never take such an answer as approved.
    #[serde(default, alias = "bad_mac_percent")]
    pub bad_mac: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop: 0.0,
            late: 0.0,
            late_ms: DEFAULT_LATE_MS,
            duplicate: 0.0,
            disconnect: 0.0,
            garbage: 0.0,
            bad_mac: 0.0,
        }
    }
}

/// Every problem found in a config, each at its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One config problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `banks[1].latency.sigma`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigErrors {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl SimConfig {
    /// Parse and validate a config.
    pub fn from_toml_str(text: &str) -> Result<SimConfig, ConfigErrors> {
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.and_then(|s| text.get(..s.start))
                .map(|t| t.matches('\n').count() + 1)
        };
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let at = line_of(e.span()).map_or_else(|| "toml".to_owned(), |l| format!("line {l}"));
            ConfigErrors::one(at, e.message().trim())
        })?;
        let cfg: SimConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = match e.path().to_string() {
                p if p == "." => "config".to_owned(),
                p => p,
            };
            let inner = e.into_inner();
            let message = match line_of(inner.span()) {
                Some(l) => format!("{} (line {l})", inner.message().trim()),
                None => inner.message().trim().to_owned(),
            };
            ConfigErrors::one(path, message)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<SimConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        SimConfig::from_toml_str(&text)
    }

    /// Check every rule the types cannot express; collects all errors.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |path: String, message: String| errors.push(ConfigError { path, message });
        if self.banks.is_empty() {
            err(
                "banks".into(),
                "at least one [[banks]] entry is needed".into(),
            );
        }
        if self.banks.len() > MAX_BANKS {
            err("banks".into(), format!("at most {MAX_BANKS} banks"));
        }
        if self.max_ledger_entries == 0 || self.max_ledger_entries > MAX_LEDGER_ENTRIES_LIMIT {
            err(
                "max_ledger_entries".into(),
                format!("must be 1..={MAX_LEDGER_ENTRIES_LIMIT}"),
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut listens: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, b) in self.banks.iter().enumerate() {
            let at = |key: &str| format!("banks[{i}].{key}");
            let name_ok = !b.name.is_empty()
                && b.name.len() <= 32
                && b.name.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_'
                });
            if !name_ok {
                err(at("name"), "1 to 32 characters of [a-z0-9_-]".into());
            }
            if let Some(j) = names.insert(&b.name, i) {
                err(
                    at("name"),
                    format!("{:?} is also the name of banks[{j}]", b.name),
                );
            }
            if BankCode::parse(b.code.as_bytes()).is_err() {
                err(at("code"), "must be 3 digits".into());
            }
            if CodecName::parse_shipped(&b.codec).is_none() {
                let dialects: Vec<&str> = fps_codecs::iso8583::builtin_names().collect();
                err(
                    at("codec"),
                    format!(
                        "unknown codec {:?}: use iso8583:<dialect> ({}), iso20022 or json",
                        b.codec,
                        dialects.join(", ")
                    ),
                );
            }
            if b.listen.port() != 0 {
                if let Some(j) = listens.insert(b.listen, i) {
                    err(
                        at("listen"),
                        format!("{} is also the address of banks[{j}]", b.listen),
                    );
                }
            }
            if let Err(e) = Framer::new(b.framing) {
                err(at("framing"), e.to_string());
            }
            if let TlsSetting::Tls(files) = &b.tls {
                for (key, path) in [
                    ("tls.cert", Some(&files.cert)),
                    ("tls.key", Some(&files.key)),
                ]
                .into_iter()
                .chain([("tls.client_ca", files.client_ca.as_ref())])
                {
                    if path.is_some_and(|p| p.as_os_str().is_empty()) {
                        err(at(key), "empty path".into());
                    }
                }
            }
            match b.latency {
                Latency::Fixed { ms } if ms > MAX_DELAY_MS => {
                    err(at("latency.ms"), format!("at most {MAX_DELAY_MS}"));
                }
                Latency::Uniform { min_ms, max_ms } => {
                    if max_ms > MAX_DELAY_MS {
                        err(at("latency.max_ms"), format!("at most {MAX_DELAY_MS}"));
                    }
                    if min_ms > max_ms {
                        err(at("latency.min_ms"), "must not be over max_ms".into());
                    }
                }
                Latency::Lognormal { median_ms, sigma } => {
                    if !(median_ms.is_finite() && (0.0..=MAX_DELAY_MS as f64).contains(&median_ms))
                    {
                        err(
                            at("latency.median_ms"),
                            format!("must be 0..={MAX_DELAY_MS}"),
                        );
                    }
                    if !(sigma.is_finite() && (0.0..=10.0).contains(&sigma)) {
                        err(at("latency.sigma"), "must be 0..=10".into());
                    }
                }
                Latency::Fixed { .. } => {}
            }
            let f = &b.faults;
            let mut sum = 0.0;
            for (key, pct) in [
                ("drop", f.drop),
                ("late", f.late),
                ("duplicate", f.duplicate),
                ("disconnect", f.disconnect),
                ("garbage", f.garbage),
                ("bad_mac", f.bad_mac),
            ] {
                if !(pct.is_finite() && (0.0..=100.0).contains(&pct)) {
                    err(
                        at(&format!("faults.{key}")),
                        "a percentage, 0 to 100".into(),
                    );
                } else {
                    sum += pct;
                }
            }
            if sum > 100.0 {
                err(
                    at("faults"),
                    format!("percentages add up to {sum}, over 100"),
                );
            }
            if f.late_ms > MAX_DELAY_MS {
                err(at("faults.late_ms"), format!("at most {MAX_DELAY_MS}"));
            }
            if f.bad_mac > 0.0 && b.auth.is_none() {
                err(
                    at("faults.bad_mac"),
                    "needs auth (there is no MAC to corrupt)".into(),
                );
            }
            if b.iso20022.is_some()
                && CodecName::parse_shipped(&b.codec)
                    .is_some_and(|c| !matches!(c, CodecName::Iso20022))
            {
                err(
                    at("iso20022"),
                    "only for a bank with codec = \"iso20022\"".into(),
                );
            } else if let Err(problems) = b.iso20022_config() {
                for (key, problem) in problems {
                    err(at(&format!("iso20022.{key}")), problem);
                }
            }
            if let Some(c) = &b.client {
                client_problems(c, &mut |key: &str, m: String| {
                    err(at(&format!("client.{key}")), m)
                });
            }
            if let Some(auth) = &b.auth {
                if self.hsm.is_none() {
                    err(
                        at("auth"),
                        "needs an [hsm] section: the keys live in the HSM".into(),
                    );
                }
                for (key, problem) in auth.problems(CodecName::parse_shipped(&b.codec).as_ref()) {
                    err(at(&format!("auth{key}")), problem);
                }
            }
        }
        if let Some(h) = &self.hsm {
            if let Err(problems) = h.validate() {
                for e in problems {
                    match e {
                        fps_hsm::HsmError::InvalidConfig { field, reason } => {
                            err(format!("hsm.{field}"), reason)
                        }
                        other => err("hsm".into(), other.to_string()),
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// Every problem of a bank's `client` section, as (key under `client`, reason).
fn client_problems(c: &ClientConfig, err: &mut dyn FnMut(&str, String)) {
    let host_port = c
        .switch
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if !host_port {
        err("switch", "not host:port".into());
    }
    if !(1..=MAX_CLIENT_LINKS).contains(&c.links) {
        err("links", format!("must be 1..={MAX_CLIENT_LINKS}"));
    }
    if !(1..=MAX_CLIENT_IN_FLIGHT).contains(&c.max_in_flight) {
        err(
            "max_in_flight",
            format!("must be 1..={MAX_CLIENT_IN_FLIGHT}"),
        );
    }
    if !(c.rate.is_finite() && (0.0..=MAX_CLIENT_RATE).contains(&c.rate)) {
        err("rate", format!("must be 0..={MAX_CLIENT_RATE}"));
    }
    if c.count == 0 && c.rate == 0.0 {
        err(
            "count",
            "set a count, or a rate to send until stopped".into(),
        );
    }
    if c.timeout_ms == 0 || c.timeout_ms > MAX_DELAY_MS {
        err("timeout_ms", format!("must be 1..={MAX_DELAY_MS}"));
    }
    if c.start_delay_ms > MAX_DELAY_MS {
        err("start_delay_ms", format!("at most {MAX_DELAY_MS}"));
    }
    if c.amount_minor == 0 || c.amount_minor > 999_999_999_999 {
        err("amount_minor", "must be 1..=999999999999".into());
    }
    if rustls_pki_types::ServerName::try_from(c.tls.server_name.as_str()).is_err() {
        err("tls.server_name", "not a DNS name or IP address".into());
    }
    for (key, path) in [
        ("tls.cert", &c.tls.cert),
        ("tls.key", &c.tls.key),
        ("tls.ca", &c.tls.ca),
    ] {
        if path.as_os_str().is_empty() {
            err(key, "empty path".into());
        }
    }
    if c.targets.is_empty() {
        err("targets", "at least one target is needed".into());
    }
    for (j, t) in c.targets.iter().enumerate() {
        if BankCode::parse(t.bank.as_bytes()).is_err() {
            err(&format!("targets[{j}].bank"), "must be 3 digits".into());
        }
        if let Some(a) = &t.account {
            if fps_codecs::model::Account::parse(a.as_bytes()).is_err() {
                err(
                    &format!("targets[{j}].account"),
                    "1 to 34 letters and digits".into(),
                );
            }
        }
    }
}

impl SimAuthConfig {
    /// The keys and what the bank does with them (checked at start).
    pub fn key_uses(&self) -> Vec<(fps_hsm::KeyRef, fps_hsm::Operation)> {
        use fps_hsm::Operation;
        let mut uses = Vec::new();
        if let Some(k) = &self.mac {
            uses.push((k.clone(), Operation::Mac));
        }
        if let Some(k) = &self.sign {
            uses.push((k.clone(), Operation::Sign));
        }
        if let Some(k) = &self.verify {
            uses.push((k.clone(), Operation::Verify));
        }
        uses
    }

    /// What is wrong with this `auth` for a bank speaking `codec`, as
    /// (`.key` suffix, reason).
    pub fn problems(&self, codec: Option<&CodecName>) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut kind = |key: &'static str, k: &Option<fps_hsm::KeyRef>, mac: bool| {
            if let Some(k) = k {
                if k.mechanism().is_mac() != mac {
                    let want = if mac { "a MAC" } else { "a signature" };
                    out.push((key, format!("{} is not {want} mechanism", k.mechanism())));
                }
            }
        };
        kind(".mac", &self.mac, true);
        kind(".sign", &self.sign, false);
        kind(".verify", &self.verify, false);
        match (
            self.mac.is_some(),
            self.sign.is_some(),
            self.verify.is_some(),
        ) {
            (true, false, false) | (false, true, true) => {}
            _ => out.push(("", "set mac, or sign and verify".into())),
        }
        match codec {
            Some(CodecName::Iso8583(_)) if self.mac.is_none() => {
                out.push(("", "ISO 8583 banks use mac".into()))
            }
            Some(CodecName::Iso20022 | CodecName::Json) if self.mac.is_some() => {
                out.push(("", "ISO 20022 and JSON banks use sign and verify".into()))
            }
            _ => {}
        }
        out
    }
}

fn default_max_ledger_entries() -> usize {
    DEFAULT_MAX_LEDGER_ENTRIES
}

fn default_late_ms() -> u64 {
    DEFAULT_LATE_MS
}

impl<'de> Deserialize<'de> for TlsSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TlsSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("false (plaintext) or a table with cert, key and client_ca")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TlsSetting, E> {
                if v {
                    Err(E::custom(
                        "tls = true needs its files: write a [banks.tls] table with cert, key and client_ca",
                    ))
                } else {
                    Ok(TlsSetting::Plaintext)
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TlsSetting, A::Error> {
                TlsFiles::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(TlsSetting::Tls)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
seed = 7
[http]
bind = "127.0.0.1:0"
[[banks]]
name = "bank003"
code = "003"
codec = "iso8583:canonical"
listen = "127.0.0.1:0"
tls = false
latency = { kind = "uniform", min_ms = 1, max_ms = 5 }
faults = { drop = 1.5, late = 2, late_ms = 100 }
[[banks]]
name = "bank012"
code = "012"
codec = "iso20022"
listen = "127.0.0.1:0"
framing = { prefix = "binary4", max_frame_bytes = 65536 }
[banks.tls]
cert = "a.crt"
key = "a.key"
client_ca = "ca.crt"
"#;

    fn errors(text: &str) -> Vec<String> {
        SimConfig::from_toml_str(text)
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    #[test]
    fn a_good_config_parses() {
        let c = SimConfig::from_toml_str(OK).unwrap();
        assert_eq!(c.seed, 7);
        assert_eq!(c.banks[0].tls, TlsSetting::Plaintext);
        assert_eq!(
            c.banks[0].latency,
            Latency::Uniform {
                min_ms: 1,
                max_ms: 5
            }
        );
        assert_eq!(c.banks[0].faults.late_ms, 100);
        assert!(matches!(&c.banks[1].tls, TlsSetting::Tls(f) if f.client_ca.is_some()));
    }

    #[test]
    fn unknown_keys_name_their_path() {
        let e = errors(&OK.replace("drop = 1.5", "dorp = 1.5"));
        assert!(
            e[0].starts_with("banks[0].faults.dorp: unknown field `dorp`"),
            "{e:?}"
        );
        let e = errors(&OK.replace("client_ca =", "clientca ="));
        assert!(
            e[0].starts_with("banks[1].tls.clientca: unknown field"),
            "{e:?}"
        );
        let e = errors(&OK.replace("kind = \"uniform\"", "kind = \"gauss\""));
        assert!(e[0].starts_with("banks[0].latency"), "{e:?}");
        let e = errors(&OK.replace("tls = false", "tls = true"));
        assert!(e[0].starts_with("banks[0].tls: tls = true needs"), "{e:?}");
        let e = errors(&OK.replace("bind = \"127.0.0.1:0\"", "bind = \"nowhere\""));
        assert!(e[0].starts_with("http.bind"), "{e:?}");
    }

    #[test]
    fn client_sections_are_checked() {
        let with_client = OK.replace(
            "faults = { drop = 1.5, late = 2, late_ms = 100 }",
            "faults = { drop = 1.5, late = 2, late_ms = 100 }\n\
             client = { switch = \"nowhere\", links = 0, tls = { cert = \"c\", key = \"k\", ca = \"\", server_name = \"switch.fps.test\" }, targets = [{ bank = \"4\" }] }",
        );
        let e = errors(&with_client);
        for want in [
            "banks[0].client.switch: not host:port",
            "banks[0].client.links:",
            "banks[0].client.count: set a count",
            "banks[0].client.tls.ca: empty path",
            "banks[0].client.targets[0].bank:",
        ] {
            assert!(e.iter().any(|l| l.starts_with(want)), "{want} not in {e:?}");
        }
        let good = with_client
            .replace("\"nowhere\"", "\"127.0.0.1:9444\"")
            .replace("links = 0", "links = 2, count = 10")
            .replace("ca = \"\"", "ca = \"ca.crt\"")
            .replace("bank = \"4\"", "bank = \"004\", account = \"987654321000\"");
        let c = SimConfig::from_toml_str(&good).unwrap();
        let client = c.banks[0].client.as_ref().unwrap();
        assert_eq!(
            (client.links, client.count, client.max_in_flight),
            (2, 10, 64)
        );
        let e = errors(&good.replace("targets =", "tagrets ="));
        assert!(e[0].contains("tagrets"), "{e:?}");
    }

    #[test]
    fn iso20022_tables_are_checked_at_their_keys() {
        use fps_codecs::iso20022::MessageVersion;
        let table = |t: &str| {
            OK.replace(
                "framing = { prefix = \"binary4\"",
                &format!("iso20022 = {t}\nframing = {{ prefix = \"binary4\""),
            )
        };
        // Unset keys keep the codec's defaults.
        let c = SimConfig::from_toml_str(&table(
            r#"{ versions = { pacs008 = "001.09" }, accept_other_versions = true }"#,
        ))
        .unwrap();
        let cfg = c.banks[1].iso20022_config().unwrap();
        assert_eq!(
            cfg.versions.pacs008,
            MessageVersion::parse(b"001.09").unwrap()
        );
        assert!(cfg.accept_other_versions);
        let mut want = Iso20022Config::default();
        want.versions.pacs008 = cfg.versions.pacs008;
        want.accept_other_versions = true;
        assert_eq!(cfg, want);
        assert_eq!(
            c.banks[0].iso20022_config().unwrap(),
            Iso20022Config::default()
        );

        let e = errors(&table(
            r#"{ own_bic = "bank-secret", versions = { pacs002 = "001.1" }, clearing_system = "TOOLONG", proxy_codes = { hkid = "h" }, max_message_bytes = 1, default_utc_offset_minutes = 841 }"#,
        ));
        for want in [
            "banks[1].iso20022.own_bic: not a BIC",
            "banks[1].iso20022.versions.pacs002: not a message version",
            "banks[1].iso20022.clearing_system: not a clearing system code",
            "banks[1].iso20022.proxy_codes.hkid: not a proxy type code",
            "banks[1].iso20022.max_message_bytes: 1 is outside",
            "banks[1].iso20022.default_utc_offset_minutes: 841 is outside",
        ] {
            assert!(e.iter().any(|l| l.starts_with(want)), "{want} not in {e:?}");
        }
        assert!(!e.iter().any(|l| l.contains("secret")), "{e:?}");
        let e = errors(&table(r#"{ versions = { pacs009 = "001.01" } }"#));
        assert!(
            e[0].starts_with("banks[1].iso20022.versions.pacs009: unknown field"),
            "{e:?}"
        );
        let e = errors(&OK.replace(
            "faults = {",
            "iso20022 = { own_bic = \"BANKHKHHXXX\" }\nfaults = {",
        ));
        assert_eq!(
            e,
            ["banks[0].iso20022: only for a bank with codec = \"iso20022\""]
        );
    }

    #[test]
    fn rules_are_all_reported_at_their_keys() {
        let bad = OK
            .replace("code = \"003\"", "code = \"3\"")
            .replace("iso8583:canonical", "iso8583:nope")
            .replace("drop = 1.5", "drop = 150")
            .replace("name = \"bank012\"", "name = \"bank003\"")
            .replace("min_ms = 1", "min_ms = 9");
        let e = errors(&bad);
        for want in [
            "banks[0].code:",
            "banks[0].codec: unknown codec",
            "banks[0].faults.drop:",
            "banks[1].name:",
            "banks[0].latency.min_ms:",
        ] {
            assert!(e.iter().any(|l| l.starts_with(want)), "{want} not in {e:?}");
        }
    }
}
