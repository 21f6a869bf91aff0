//! Semantic checks of a parsed [`Config`]: every problem is collected with
//! its key path (`banks[2].endpoints[0]: not host:port`), nothing is bound.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use fps_codecs::framing::Framer;

use super::*;
use crate::tls;

/// One problem in the config, at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where, e.g. `banks[2].endpoints[0]`.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every problem found in a config (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn one(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            path: path.into(),
            reason: reason.into(),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Default)]
struct Collector(Vec<ConfigError>);

impl Collector {
    fn err(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn range<T: PartialOrd + fmt::Display>(&mut self, path: String, v: T, lo: T, hi: T) {
        if v < lo || v > hi {
            self.err(path, format!("{v} is outside {lo}..={hi}"));
        }
    }

    fn socket_addr(&mut self, path: String, v: &str) {
        if v.parse::<SocketAddr>().is_err() {
            self.err(path, "not ip:port");
        }
    }

    fn certs(&mut self, path: String, file: &Path) {
        if let Err(e) = tls::load_certs(file) {
            self.err(path, file_reason(e));
        }
    }

    fn key(&mut self, path: String, file: &Path) {
        if let Err(e) = tls::load_key(file) {
            self.err(path, file_reason(e));
        }
    }
}

fn file_reason(e: tls::TlsError) -> String {
    match e {
        tls::TlsError::File { path, reason } => format!("{reason} ({path})"),
        other => other.to_string(),
    }
}

pub(super) fn validate(cfg: &Config) -> Result<(), ConfigErrors> {
    let mut c = Collector::default();
    upstream(&mut c, &cfg.upstream);
    c.socket_addr("admin.bind".into(), &cfg.admin.bind);
    c.range(
        "shutdown.drain_timeout_ms".into(),
        cfg.shutdown.drain_timeout_ms,
        0,
        MAX_TIMEOUT_MS,
    );
    c.range(
        "journal.keystore_commit_interval_ms".into(),
        cfg.journal.keystore_commit_interval_ms,
        0,
        crate::keystore::MAX_COMMIT_INTERVAL.as_millis() as u64,
    );
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&cfg.log.filter) {
        c.err("log.filter", format!("not a tracing filter: {e}"));
    }
    if cfg.banks.len() > MAX_BANKS {
        c.err("banks", format!("more than {MAX_BANKS} banks"));
    }
    if let Some(n) = cfg.switch.worker_threads {
        c.range(
            "switch.worker_threads".into(),
            n,
            1,
            crate::runtime::MAX_WORKER_THREADS,
        );
        if cfg.switch.busy_poll && n > 1 {
            c.err(
                "switch.busy_poll",
                format!("busy polling needs the single-thread runtime; worker_threads is {n}"),
            );
        }
    }
    match &cfg.switch.participant_code {
        Some(code) if fps_codecs::model::BankCode::parse(code.as_bytes()).is_err() => {
            c.err("switch.participant_code", "not 3 digits");
        }
        Some(_) => {}
        None => {
            for (i, b) in cfg.banks.iter().enumerate() {
                if CodecName::parse(&b.codec) == Some(CodecName::Iso20022) {
                    c.err(
                        "switch.participant_code",
                        format!("required by banks[{i}] (iso20022 needs the debtor agent)"),
                    );
                }
            }
        }
    }
    // Several banks may share a code (a bank's DR site is the same bank):
    // `[routing]` says which link is primary; names must be unique.
    let mut names = HashSet::new();
    for (i, b) in cfg.banks.iter().enumerate() {
        let p = format!("banks[{i}]");
        if !names.insert(b.name.as_str()) {
            c.err(
                format!("{p}.name"),
                format!("duplicate bank name {:?}", b.name),
            );
        }
        bank(&mut c, &p, b);
        bank_auth(&mut c, &p, b, cfg.hsm.is_some());
        bank_iso20022(&mut c, &p, b);
    }
    if let Some(h) = &cfg.hsm {
        if let Err(errors) = h.validate() {
            for e in errors {
                match e {
                    fps_hsm::HsmError::InvalidConfig { field, reason } => {
                        c.err(format!("hsm.{field}"), reason)
                    }
                    other => c.err("hsm", other.to_string()),
                }
            }
        }
    }
    bank_inbound(&mut c, cfg);
    routing(&mut c, cfg);
    safety(&mut c, cfg);
    if c.0.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(c.0))
    }
}

/// `[routing]`: the routing crate's own checks, at `routing.<its path>`,
/// against the configured bank names; then the proxy directory file.
fn routing(c: &mut Collector, cfg: &Config) {
    if let Err(errs) = cfg.routing_rules().build(&cfg.link_names()) {
        for e in &errs.errors {
            // Bank names are checked above as banks[i].name.
            if e.path.starts_with("banks") {
                continue;
            }
            c.err(format!("routing.{}", e.path), e.message.clone());
        }
        if errs.omitted > 0 {
            c.err("routing", format!("... and {} more error(s)", errs.omitted));
        }
    }
    if let Some(path) = &cfg.routing.proxy_directory {
        if let Err(e) = crate::routing::load_proxy_directory(path) {
            c.err("routing.proxy_directory", e.to_string());
        }
    }
}

/// `[journal]`, `[idempotency]` and `[reversal]`: what the journal, the
/// idempotency index and the reversal queues would refuse, clamp or
/// overflow on at start must not pass `check-config`.
fn safety(c: &mut Collector, cfg: &Config) {
    use fps_routing::reversal::{MAX_REVERSAL_ATTEMPTS, MAX_REVERSAL_BACKOFF, MAX_REVERSAL_QUEUE};
    let min_segment = crate::journal::MIN_SEGMENT_BYTES;
    if cfg.journal.segment_bytes < min_segment {
        c.err(
            "journal.segment_bytes",
            format!("{} is below {min_segment}", cfg.journal.segment_bytes),
        );
    }
    let i = &cfg.idempotency;
    c.range(
        "idempotency.retention_hours".into(),
        i.retention_hours,
        1,
        MAX_RETENTION_HOURS,
    );
    c.range(
        "idempotency.max_keys_in_memory".into(),
        i.max_keys_in_memory,
        1,
        fps_routing::idempotency::MAX_IDEMPOTENCY_KEYS,
    );
    let r = &cfg.reversal;
    c.range(
        "reversal.max_attempts".into(),
        r.max_attempts,
        1,
        MAX_REVERSAL_ATTEMPTS,
    );
    let max_backoff_ms = MAX_REVERSAL_BACKOFF.as_millis() as u64;
    c.range(
        "reversal.max_backoff_ms".into(),
        r.max_backoff_ms,
        0,
        max_backoff_ms,
    );
    if r.base_backoff_ms > r.max_backoff_ms {
        c.err("reversal.base_backoff_ms", "greater than max_backoff_ms");
    }
    c.range(
        "reversal.capacity".into(),
        r.capacity,
        1,
        MAX_REVERSAL_QUEUE,
    );
}

fn upstream(c: &mut Collector, u: &UpstreamConfig) {
    c.socket_addr("upstream.bind".into(), &u.bind);
    if u.tls {
        for (key, file) in [
            ("cert", &u.cert),
            ("key", &u.key),
            ("client_ca", &u.client_ca),
        ] {
            match file {
                None => c.err(format!("upstream.{key}"), "required when tls = true"),
                Some(f) if key == "key" => c.key(format!("upstream.{key}"), f),
                Some(f) => c.certs(format!("upstream.{key}"), f),
            }
        }
    }
    c.range(
        "upstream.max_connections".into(),
        u.max_connections,
        1,
        MAX_UPSTREAM_CONNECTIONS,
    );
    c.range(
        "upstream.max_in_flight_per_connection".into(),
        u.max_in_flight_per_connection,
        1,
        MAX_IN_FLIGHT_PER_CONNECTION,
    );
    // The canonical prefix is 2 bytes: 65,535 is the largest expressible frame.
    c.range(
        "upstream.max_frame_bytes".into(),
        u.max_frame_bytes,
        64,
        0xffff,
    );
    c.range(
        "upstream.handshake_timeout_ms".into(),
        u.handshake_timeout_ms,
        1,
        MAX_TIMEOUT_MS,
    );
    c.range(
        "upstream.idle_timeout_ms".into(),
        u.idle_timeout_ms,
        1,
        24 * 3_600_000,
    );
}

fn bank(c: &mut Collector, p: &str, b: &BankConfig) {
    if fps_codecs::model::BankCode::parse(b.code.as_bytes()).is_err() {
        c.err(format!("{p}.code"), "not 3 digits");
    }
    if b.name.is_empty()
        || b.name.len() > 32
        || !b
            .name
            .bytes()
            .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == b'-' || x == b'_')
    {
        c.err(format!("{p}.name"), "must be 1-32 characters of [a-z0-9_-]");
    }
    match CodecName::parse(&b.codec) {
        None => c.err(
            format!("{p}.codec"),
            "not one of iso8583:<dialect>, iso20022, json",
        ),
        Some(CodecName::Iso8583(d)) => match fps_codecs::iso8583::builtin(&d) {
            None => c.err(
                format!("{p}.codec"),
                format!(
                    "unknown ISO 8583 dialect {d:?} (known: {})",
                    fps_codecs::iso8583::builtin_names()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(Err(e)) => c.err(format!("{p}.codec"), format!("dialect {d:?}: {e}")),
            Some(Ok(_)) => {}
        },
        Some(_) => {}
    }
    if let Err(e) = Framer::new(b.framing) {
        c.err(format!("{p}.framing"), e.to_string());
    }
    if b.endpoints.is_empty() {
        c.err(
            format!("{p}.endpoints"),
            "at least one endpoint is required",
        );
    }
    for (j, ep) in b.endpoints.iter().enumerate() {
        if !is_host_port(ep) {
            c.err(format!("{p}.endpoints[{j}]"), "not host:port");
        }
    }
    match (&b.tls, b.danger_plaintext) {
        (None, false) => c.err(
            format!("{p}.tls"),
            "required (or set danger_plaintext = true for a local simulator)",
        ),
        (Some(_), true) => c.err(
            format!("{p}.danger_plaintext"),
            "cannot be combined with a [tls] section",
        ),
        (Some(t), false) => {
            c.certs(format!("{p}.tls.cert"), &t.cert);
            c.key(format!("{p}.tls.key"), &t.key);
            c.certs(format!("{p}.tls.ca"), &t.ca);
            if tls::server_name(&t.server_name).is_err() {
                c.err(
                    format!("{p}.tls.server_name"),
                    "not a DNS name or IP address",
                );
            }
        }
        (None, true) => {}
    }
    c.range(format!("{p}.pool.max"), b.pool.max, 1, MAX_LINKS_PER_BANK);
    if b.pool.min > b.pool.max {
        c.err(format!("{p}.pool.min"), "greater than pool.max");
    }
    c.range(
        format!("{p}.pool.idle_close_ms"),
        b.pool.idle_close_ms,
        0,
        24 * 3_600_000,
    );
    c.range(
        format!("{p}.request_timeout_ms"),
        b.request_timeout_ms,
        1,
        MAX_TIMEOUT_MS,
    );
    c.range(
        format!("{p}.max_in_flight"),
        b.max_in_flight,
        1,
        MAX_IN_FLIGHT_PER_LINK,
    );
    c.range(
        format!("{p}.echo_interval_ms"),
        b.echo_interval_ms,
        100,
        24 * 3_600_000,
    );
    c.range(
        format!("{p}.connect_timeout_ms"),
        b.connect_timeout_ms,
        1,
        MAX_TIMEOUT_MS,
    );
}

/// A bank's `iso20022` table: only on an ISO 20022 bank, and every value
/// one the codec's own parsers take.
fn bank_iso20022(c: &mut Collector, p: &str, b: &BankConfig) {
    let Some(settings) = &b.iso20022 else {
        return;
    };
    match CodecName::parse(&b.codec) {
        // An unknown codec is reported at `codec`; the table is still checked.
        Some(CodecName::Iso20022) | None => {}
        Some(_) => {
            c.err(
                format!("{p}.iso20022"),
                "only for a bank with codec = \"iso20022\"",
            );
            return;
        }
    }
    if let Err(errors) = settings.codec_config() {
        for (key, reason) in errors {
            c.err(format!("{p}.iso20022.{key}"), reason);
        }
    }
}

/// A bank's `auth`: its keys, the `[hsm]` that holds them, and a codec
/// that can carry them (ISO 8583 with a MAC field takes `mac`; ISO 20022
/// and JSON take `sign` and `verify`).
fn bank_auth(c: &mut Collector, p: &str, b: &BankConfig, has_hsm: bool) {
    let Some(auth) = &b.auth else {
        return;
    };
    let at = |key: &str| {
        if key.is_empty() {
            format!("{p}.auth")
        } else {
            format!("{p}.auth.{key}")
        }
    };
    if !has_hsm {
        c.err(
            at(""),
            "needs an [hsm] section: the keys live in the HSM (backend = \"pkcs11\")",
        );
    }
    let keys = match auth.keys() {
        Ok(keys) => keys,
        Err(errors) => {
            for (key, reason) in errors {
                c.err(at(key), reason);
            }
            return;
        }
    };
    match (CodecName::parse(&b.codec), &keys) {
        (Some(CodecName::Iso8583(d)), AuthKeys::Mac(_)) => {
            let slot = fps_codecs::iso8583::Iso8583Codec::builtin(&d).map(|codec| codec.mac_slot());
            if slot == Some(fps_codecs::AuthSlot::None) {
                c.err(
                    at("mac"),
                    format!("dialect {d:?} maps no fixed-length MAC field (map.mac)"),
                );
            }
        }
        (Some(CodecName::Iso8583(_)), AuthKeys::Signature { .. }) => c.err(
            at("sign"),
            "ISO 8583 banks authenticate with a MAC in F64/F128: use mac",
        ),
        (Some(CodecName::Iso20022 | CodecName::Json), AuthKeys::Mac(_)) => c.err(
            at("mac"),
            "ISO 20022 and JSON banks carry a signature: use sign and verify",
        ),
        // An unknown codec is reported as banks[i].codec.
        _ => {}
    }
}

/// `[bank_inbound]` and every bank's `inbound`: the listener's files and
/// limits, each bank's identity, and no identity claimed twice (a
/// certificate must name exactly one bank).
fn bank_inbound(c: &mut Collector, cfg: &Config) {
    if let Some(l) = &cfg.bank_inbound {
        c.socket_addr("bank_inbound.bind".into(), &l.bind);
        let port_zero = l.bind.parse::<SocketAddr>().is_ok_and(|a| a.port() == 0);
        if l.bind == cfg.upstream.bind && !port_zero {
            c.err("bank_inbound.bind", "same address as upstream.bind");
        }
        c.certs("bank_inbound.cert".into(), &l.cert);
        c.key("bank_inbound.key".into(), &l.key);
        c.certs("bank_inbound.client_ca".into(), &l.client_ca);
        c.range(
            "bank_inbound.max_connections".into(),
            l.max_connections,
            1,
            MAX_UPSTREAM_CONNECTIONS,
        );
        c.range(
            "bank_inbound.max_in_flight_per_connection".into(),
            l.max_in_flight_per_connection,
            1,
            MAX_IN_FLIGHT_PER_CONNECTION,
        );
        c.range(
            "bank_inbound.max_frame_bytes".into(),
            l.max_frame_bytes,
            64,
            MAX_INBOUND_FRAME_BYTES,
        );
        c.range(
            "bank_inbound.handshake_timeout_ms".into(),
            l.handshake_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        );
        c.range(
            "bank_inbound.idle_timeout_ms".into(),
            l.idle_timeout_ms,
            1,
            24 * 3_600_000,
        );
    }
    // (lower-cased identity or fingerprint, first bank index claiming it)
    let mut names: Vec<(String, usize)> = Vec::new();
    let mut pins: Vec<([u8; 32], usize)> = Vec::new();
    for (i, b) in cfg.banks.iter().enumerate() {
        let Some(inb) = &b.inbound else {
            continue;
        };
        let p = format!("banks[{i}].inbound");
        if cfg.bank_inbound.is_none() && inb.enabled {
            c.err(&p, "needs a [bank_inbound] listener");
        }
        if inb.identity.is_none() && inb.sha256.is_none() {
            c.err(&p, "set identity (certificate DNS name or CN) or sha256");
        }
        if let Some(id) = &inb.identity {
            let ok = !id.is_empty()
                && id.len() <= 253
                && id
                    .bytes()
                    .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'-' | b'_'));
            if !ok {
                c.err(
                    format!("{p}.identity"),
                    "must be 1-253 characters of [A-Za-z0-9._-] (a DNS name or CN)",
                );
            } else {
                let lower = id.to_ascii_lowercase();
                match names.iter().find(|(n, _)| *n == lower) {
                    Some((_, first)) => c.err(
                        format!("{p}.identity"),
                        format!("{id:?} is also claimed by banks[{first}]"),
                    ),
                    None => names.push((lower, i)),
                }
            }
        }
        match inb.sha256_bytes() {
            None => {}
            Some(Err(reason)) => c.err(format!("{p}.sha256"), reason),
            Some(Ok(pin)) => match pins.iter().find(|(q, _)| *q == pin) {
                Some((_, first)) => c.err(
                    format!("{p}.sha256"),
                    format!("also pinned by banks[{first}]"),
                ),
                None => pins.push((pin, i)),
            },
        }
        if let Some(f) = inb.framing {
            if let Err(e) = Framer::new(f) {
                c.err(format!("{p}.framing"), e.to_string());
            }
        }
        c.range(
            format!("{p}.max_links"),
            inb.max_links,
            1,
            MAX_INBOUND_LINKS_PER_BANK,
        );
    }
}

/// `host:port` with a non-empty host (name, IPv4 or `[IPv6]`) and a port 1..=65535.
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_shapes() {
        assert!(is_host_port("127.0.0.1:9000"));
        assert!(is_host_port("bank.example:443"));
        assert!(is_host_port("[::1]:443"));
        assert!(!is_host_port("bank.example"));
        assert!(!is_host_port(":443"));
        assert!(!is_host_port("bank:0"));
        assert!(!is_host_port("bank:99999"));
        assert!(!is_host_port("ba nk:1"));
    }

    /// A minimal config with `lines` in its `[switch]` section.
    fn with_switch_lines(lines: &str) -> Config {
        Config::from_toml_str(&format!(
            "[switch]\n{lines}\n[upstream]\nbind = \"127.0.0.1:0\"\ntls = false\n\
             [admin]\nbind = \"127.0.0.1:0\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn busy_poll_is_off_by_default_and_refused_with_several_threads() {
        let unset = with_switch_lines("");
        assert!(!unset.switch.busy_poll);
        let on = with_switch_lines("busy_poll = true\nworker_threads = 1");
        assert!(on.switch.busy_poll);
        on.validate().unwrap();
        // Unset threads: decided at start from the CPUs (a warning there).
        with_switch_lines("busy_poll = true").validate().unwrap();
        let errs = with_switch_lines("busy_poll = true\nworker_threads = 2")
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            errs,
            "switch.busy_poll: busy polling needs the single-thread runtime; worker_threads is 2"
        );
    }

    #[test]
    fn idempotency_pretouch_is_on_by_default_and_can_be_turned_off() {
        let base =
            "[upstream]\nbind = \"127.0.0.1:0\"\ntls = false\n[admin]\nbind = \"127.0.0.1:0\"\n";
        let unset = Config::from_toml_str(base).unwrap();
        assert!(unset.idempotency.pretouch);
        let off =
            Config::from_toml_str(&format!("{base}[idempotency]\npretouch = false\n")).unwrap();
        assert!(!off.idempotency.pretouch);
        off.validate().unwrap();
        let typo = Config::from_toml_str(&format!("{base}[idempotency]\npretouched = false\n"))
            .unwrap_err()
            .to_string();
        assert!(typo.contains("pretouched"), "{typo}");
    }

    #[test]
    fn worker_threads_is_optional_and_bounded() {
        let unset = with_switch_lines("");
        assert_eq!(unset.switch.worker_threads, None);
        unset.validate().unwrap();
        let one = with_switch_lines("worker_threads = 1");
        assert_eq!(one.switch.worker_threads, Some(1));
        one.validate().unwrap();
        for bad in ["worker_threads = 0", "worker_threads = 1025"] {
            let errs = with_switch_lines(bad).validate().unwrap_err().to_string();
            assert!(errs.starts_with("switch.worker_threads: "), "{bad}: {errs}");
        }
    }

    #[test]
    fn pool_idle_close_defaults_to_a_minute_and_is_bounded() {
        let text = |pool: &str| {
            format!(
                r#"
            [upstream]
            bind = "127.0.0.1:0"
            tls = false
            [admin]
            bind = "127.0.0.1:0"
            [[banks]]
            code = "004"
            name = "b004"
            codec = "iso8583:canonical"
            endpoints = ["127.0.0.1:1"]
            danger_plaintext = true
            pool = {pool}
            "#
            )
        };
        let cfg = Config::from_toml_str(&text("{ min = 1, max = 2 }")).unwrap();
        assert_eq!(cfg.banks[0].pool.idle_close_ms, 60_000);
        cfg.validate().unwrap();
        let never = Config::from_toml_str(&text("{ max = 2, idle_close_ms = 0 }")).unwrap();
        never.validate().unwrap();
        let errs = Config::from_toml_str(&text("{ max = 2, idle_close_ms = 86400001 }"))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            errs.contains("banks[0].pool.idle_close_ms: 86400001 is outside 0..=86400000"),
            "{errs}"
        );
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let cfg = Config::from_toml_str(
            r#"
            [upstream]
            bind = "nowhere"
            tls = true
            cert = "/nonexistent/cert.pem"
            max_connections = 0
            [admin]
            bind = "127.0.0.1:0"
            [[banks]]
            code = "04"
            name = "Bad Name"
            codec = "iso8583:nope"
            endpoints = ["bank", "127.0.0.1:1"]
            danger_plaintext = true
            pool = { min = 3, max = 2 }
            "#,
        )
        .unwrap();
        let errs = cfg.validate().unwrap_err().to_string();
        for want in [
            "upstream.bind: not ip:port",
            "upstream.cert: file not found",
            "upstream.key: required",
            "upstream.client_ca: required",
            "upstream.max_connections: 0 is outside",
            "banks[0].code: not 3 digits",
            "banks[0].name: must be",
            "banks[0].codec: unknown ISO 8583 dialect",
            "banks[0].endpoints[0]: not host:port",
            "banks[0].pool.min: greater than pool.max",
        ] {
            assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
        }
        assert!(!errs.contains("endpoints[1]"));
    }

    #[test]
    fn auth_errors_name_their_keys() {
        let cfg = Config::from_toml_str(
            r#"
            [upstream]
            bind = "127.0.0.1:0"
            tls = false
            [admin]
            bind = "127.0.0.1:0"
            [[banks]]
            code = "003"
            name = "mac-no-hsm"
            codec = "iso8583:canonical"
            auth = { mac = { label = "mac-hmac", mechanism = "hmac_sha256" } }
            endpoints = ["127.0.0.1:1"]
            danger_plaintext = true
            [[banks]]
            code = "012"
            name = "sign-only"
            codec = "iso20022"
            auth = { sign = { label = "sign-ec", mechanism = "ecdsa_p256_sha256" } }
            endpoints = ["127.0.0.1:1"]
            danger_plaintext = true
            [[banks]]
            code = "024"
            name = "mac-on-json"
            codec = "json"
            auth = { mac = { label = "mac-hmac", mechanism = "hmac_sha256" } }
            endpoints = ["127.0.0.1:1"]
            danger_plaintext = true
            [[banks]]
            code = "004"
            name = "bad-keys"
            codec = "iso8583:iso87-bcd-binary"
            auth = { mac = { label = "mac cmac-v1", mechanism = "ecdsa_p256_sha256" } }
            endpoints = ["127.0.0.1:1"]
            danger_plaintext = true
            [[banks]]
            code = "012"
            name = "sig-on-8583"
            codec = "iso8583:canonical"
            auth = { sign = { label = "s", mechanism = "ed25519" }, verify = { label = "v", mechanism = "hmac_sha256" } }
            endpoints = ["127.0.0.1:1"]
            danger_plaintext = true
            "#,
        )
        .unwrap();
        let errs = cfg.validate().unwrap_err().to_string();
        for want in [
            "banks[0].auth: needs an [hsm] section",
            "banks[1].auth.verify: required with sign",
            "banks[2].auth.mac: ISO 20022 and JSON banks carry a signature",
            "banks[3].auth.mac: key label `mac cmac-v1` may only contain",
            "banks[4].auth.verify: hmac_sha256 is not a signature mechanism",
        ] {
            assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
        }
        // With an [hsm], only the key problems remain; the good keys resolve.
        let mut cfg = cfg;
        cfg.hsm = Some(fps_hsm::HsmConfig::danger_software());
        let errs = cfg.validate().unwrap_err().to_string();
        assert!(!errs.contains("[hsm]"), "{errs}");
        assert_eq!(
            cfg.hsm_keys(),
            vec![
                (
                    fps_hsm::KeyRef::new("mac-hmac", fps_hsm::Mechanism::HmacSha256).unwrap(),
                    fps_hsm::Operation::Mac
                ),
                (
                    fps_hsm::KeyRef::new("mac-hmac", fps_hsm::Mechanism::HmacSha256).unwrap(),
                    fps_hsm::Operation::VerifyMac
                ),
            ]
        );
    }

    #[test]
    fn inbound_errors_name_their_keys() {
        let cfg = Config::from_toml_str(
            r#"
            [upstream]
            bind = "127.0.0.1:0"
            tls = false
            [admin]
            bind = "127.0.0.1:0"
            [[banks]]
            code = "003"
            name = "a"
            codec = "iso8583:canonical"
            endpoints = ["127.0.0.1:1"]
            danger_plaintext = true
            inbound = { identity = "Bank003.fps.test" }
            [[banks]]
            code = "004"
            name = "b"
            codec = "iso8583:canonical"
            endpoints = ["127.0.0.1:1"]
            danger_plaintext = true
            inbound = { identity = "bank003.FPS.test", sha256 = "zz", max_links = 0 }
            [[banks]]
            code = "012"
            name = "c"
            codec = "json"
            endpoints = ["127.0.0.1:1"]
            danger_plaintext = true
            inbound = { enabled = false }
            "#,
        )
        .unwrap();
        let errs = cfg.validate().unwrap_err().to_string();
        for want in [
            "banks[0].inbound: needs a [bank_inbound] listener",
            "banks[1].inbound.identity: \"bank003.FPS.test\" is also claimed by banks[0]",
            "banks[1].inbound.sha256: not 64 hex digits",
            "banks[1].inbound.max_links: 0 is outside",
            "banks[2].inbound: set identity",
        ] {
            assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
        }
        // A disabled bank needs no listener.
        assert!(!errs.contains("banks[2].inbound: needs"), "{errs}");
        let e = Config::from_toml_str(
            "[upstream]\nbind = \"127.0.0.1:0\"\ntls = false\n[admin]\nbind = \"127.0.0.1:0\"\n[bank_inbound]\nbind = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\ntls = false\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tls"), "unknown key refused: {e}");
    }

    #[test]
    fn iso20022_keys_left_out_keep_the_codec_defaults() {
        use fps_codecs::iso20022::{Iso20022Config, MessageVersion};
        let text = |table: &str| {
            format!(
                "[switch]\nparticipant_code = \"950\"\n[upstream]\nbind = \"127.0.0.1:0\"\n\
                 tls = false\n[admin]\nbind = \"127.0.0.1:0\"\n[[banks]]\ncode = \"012\"\n\
                 name = \"x\"\ncodec = \"iso20022\"\nendpoints = [\"127.0.0.1:1\"]\n\
                 danger_plaintext = true\n{table}"
            )
        };
        let bank = |table: &str| {
            let cfg = Config::from_toml_str(&text(table)).unwrap();
            cfg.validate().unwrap();
            cfg.banks[0].iso20022_config().unwrap()
        };
        assert_eq!(bank(""), Iso20022Config::default());
        assert_eq!(bank("iso20022 = {}\n"), Iso20022Config::default());
        let one = bank("iso20022 = { versions = { camt056 = \"001.09\" } }\n");
        let mut want = Iso20022Config::default();
        want.versions.camt056 = MessageVersion::parse(b"001.09").unwrap();
        assert_eq!(one, want);
        let all = bank(
            "[banks.iso20022]\nown_bic = \"FPSWHKHH\"\naccept_other_versions = true\n\
             max_message_bytes = 8192\nclearing_system = \"\"\ndefault_utc_offset_minutes = -300\n\
             proxy_codes = { mobile = \"MBNO\", fps_id = \"FPID\" }\n",
        );
        assert_eq!(
            all.own_bic.map(|b| b.as_str().to_owned()).as_deref(),
            Some("FPSWHKHH")
        );
        assert!(all.accept_other_versions);
        assert_eq!(all.max_message_bytes, 8192);
        assert_eq!(all.clearing_system, None);
        assert_eq!(all.default_utc_offset_minutes, -300);
        assert_eq!(all.proxy_codes.mobile.as_str(), "MBNO");
        assert_eq!(all.proxy_codes.fps_id.as_str(), "FPID");
        assert_eq!(all.proxy_codes.email.as_str(), "EMAL");
        assert_eq!(all.versions, Iso20022Config::default().versions);
    }

    #[test]
    fn parse_errors_name_the_key_path_of_their_span() {
        let doc = "a = 1\n[t]\nb = { c = [1, { d = 2 }] }\n[[arr]]\nx = 1\n[[arr]]\ny = 2\n[arr.sub]\nz = 3\n";
        let at = |needle: &str| key_path_at(doc, doc.find(needle).unwrap());
        assert_eq!(at("a =").as_deref(), Some("a"));
        assert_eq!(at("d =").as_deref(), Some("t.b.c[1].d"));
        assert_eq!(at("2 }").as_deref(), Some("t.b.c[1].d"));
        assert_eq!(at("x =").as_deref(), Some("arr[0].x"));
        assert_eq!(at("y =").as_deref(), Some("arr[1].y"));
        assert_eq!(at("z =").as_deref(), Some("arr[1].sub.z"));
        // Not TOML: no path (the error itself is the parser's, at a line).
        assert_eq!(key_path_at("a = = 1", 4), None);
        let e = Config::from_toml_str(
            "[upstream]\nbind = \"127.0.0.1:0\"\ntls = false\nbogus = 1\n[admin]\nbind = \"127.0.0.1:0\"\n",
        )
        .unwrap_err();
        assert_eq!(e.0[0].path, "line 4");
        assert!(
            e.0[0]
                .reason
                .starts_with("upstream.bogus: unknown field `bogus`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = Config::from_toml_str(
            "[upstream]\nbind = \"127.0.0.1:0\"\ntls = false\nbogus = 1\n[admin]\nbind = \"127.0.0.1:0\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    /// Found by the `config_toml` fuzz target
    /// (fuzz/regressions/config_toml/implicit-route-bad-bank-name): a bank
    /// whose name is invalid made an implicit route, reported as
    /// `routing.routes[0]` in a file with no route.
    #[test]
    fn a_bad_bank_name_is_reported_once_at_its_bank() {
        let cfg = Config::from_toml_str(
            "[upstream]\nbind = \"127.0.0.1:0\"\ntls = false\n[admin]\nbind = \"127.0.0.1:0\"\n\
             [[banks]]\ncode = \"004\"\nname = \"b)ank004\"\ncodec = \"json\"\n\
             endpoints = [\"127.0.0.1:1\"]\ndanger_plaintext = true\n",
        )
        .unwrap();
        let errs = cfg.validate().unwrap_err();
        let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["banks[0].name"], "{errs}");
    }

    /// Found by the `config_toml` fuzz target's start-up oracle: settings
    /// the journal refuses, the idempotency index clamps (or the daemon
    /// overflows on: `retention_hours * 3600`) and the reversal queues
    /// clamp passed `check-config`.
    #[test]
    fn safety_sections_are_checked() {
        let base =
            "[upstream]\nbind = \"127.0.0.1:0\"\ntls = false\n[admin]\nbind = \"127.0.0.1:0\"\n";
        let errs = Config::from_toml_str(&format!(
            "{base}[journal]\nsegment_bytes = 10\n[idempotency]\nretention_hours = 5124095576030432\n\
             max_keys_in_memory = 0\n[reversal]\nmax_attempts = 0\nbase_backoff_ms = 7200001\n\
             max_backoff_ms = 7200000\ncapacity = 0\n"
        ))
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        for want in [
            "journal.segment_bytes: 10 is below 1024",
            "idempotency.retention_hours: 5124095576030432 is outside 1..=8784",
            "idempotency.max_keys_in_memory: 0 is outside",
            "reversal.max_attempts: 0 is outside",
            "reversal.max_backoff_ms: 7200000 is outside 0..=3600000",
            "reversal.base_backoff_ms: greater than max_backoff_ms",
            "reversal.capacity: 0 is outside",
        ] {
            assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
        }
        // The defaults pass.
        Config::from_toml_str(base).unwrap().validate().unwrap();
    }
}

#[cfg(test)]
mod dev_config {
    use super::*;

    /// The shipped dev config parses; before the dev PKI script has run the
    /// only errors are its missing certificate files.
    #[test]
    fn dev_config_is_valid_but_for_missing_pki_files() {
        let mut cfg =
            Config::from_toml_str(include_str!("../../../configs/dev/switch.toml")).unwrap();
        // The path is relative to the repo root; tests run in switch/.
        cfg.routing.proxy_directory =
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/dev/proxies.csv"));
        let dir =
            crate::routing::load_proxy_directory(cfg.routing.proxy_directory.as_ref().unwrap())
                .unwrap();
        assert_eq!(dir.len(), 106);
        let router = cfg.routing_rules().build(&cfg.link_names()).unwrap();
        assert!(router.unrouted_banks(&dir).is_empty());
        assert_eq!(cfg.banks.len(), 5);
        assert_eq!(cfg.routing.rules.routes.len(), 4);
        assert!(cfg.routing.proxy_directory.is_some());
        if let Err(errs) = cfg.validate() {
            for e in &errs.0 {
                // Without SoftHSM2 installed its module is missing too.
                let no_softhsm = e.path == "hsm.module_path";
                assert!(e.reason.contains("target/dev-pki/") || no_softhsm, "{e}");
            }
        }
    }
}
