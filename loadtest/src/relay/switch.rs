//! The switch side of a comparison: a generated config with one bank (the
//! canonical ISO 8583 bank 003, the same simulator the relay reaches) and
//! the `fps-switch` binary started on it. With a [`MacRun`] bank 003's
//! messages carry a MAC made and checked through the config's `[hsm]`
//! (PKCS#11, the run's key in the SoftHSM2 token).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::mac::{HsmUser, MacRun};
use super::process::{http_get, Supervised};

/// Time the switch has to become ready (links up to the bank).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How the switch journals (the `[journal]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// No journal at all (nothing survives a crash; benchmarks only).
    Off,
    /// `fsync = "always"`.
    Always,
    /// `fsync = "batch"`: group commit, the product's default.
    Batch,
    /// `fsync = "never"`.
    Never,
}

impl Journal {
    /// The name used on the command line and in the JSON settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Journal::Off => "off",
            Journal::Always => "always",
            Journal::Batch => "batch",
            Journal::Never => "never",
        }
    }
}

/// One switch to set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchSpec {
    /// The upstream listener (where the load generator connects).
    pub listen: SocketAddr,
    /// The admin listener (`/readyz`).
    pub admin: SocketAddr,
    /// The bank simulator's listener (bank 003).
    pub bank: SocketAddr,
    /// Links to the bank (pool min = max).
    pub links: u64,
    /// `None` = plaintext on both legs.
    pub tls: Option<SwitchTls>,
    /// Journal setting; its files go to `journal_dir`.
    pub journal: Journal,
    /// Directory of the journal (when on).
    pub journal_dir: PathBuf,
    /// `Some`: bank 003's requests MACed and its answers checked, with the
    /// run's key through a PKCS#11 `[hsm]` section.
    pub mac: Option<MacRun>,
    /// `switch.busy_poll = true` (with one worker thread).
    pub busy_poll: bool,
}

/// TLS files of the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchTls {
    /// The upstream server certificate and key.
    pub cert: PathBuf,
    /// Key of `cert`.
    pub key: PathBuf,
    /// CA of client certificates, of the bank's certificate.
    pub ca: PathBuf,
    /// Client certificate presented to the bank.
    pub client_cert: PathBuf,
    /// Key of `client_cert`.
    pub client_key: PathBuf,
    /// Name the bank's certificate must carry.
    pub bank_name: String,
}

/// TOML string literal (basic string, escaped).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path(p: &Path) -> String {
    quoted(&p.display().to_string())
}

/// The switch config of `spec`: warnings-only logs, bank 003 routed by
/// F100 to the simulator over `links` links (MACed when `spec.mac` is set).
pub fn render(spec: &SwitchSpec) -> String {
    let mut c = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(c, "# fps-loadtest compare-relay: the switch under test");
    let _ = writeln!(c, "[log]\nformat = \"human\"\nfilter = \"warn\"\n");
    let _ = writeln!(c, "[switch]\nparticipant_code = \"950\"");
    if spec.busy_poll {
        let _ = writeln!(c, "worker_threads = 1\nbusy_poll = true");
    }
    let _ = writeln!(c);
    let _ = writeln!(c, "[upstream]\nbind = {}", quoted(&spec.listen.to_string()));
    match &spec.tls {
        None => {
            let _ = writeln!(c, "tls = false");
        }
        Some(t) => {
            let _ = writeln!(
                c,
                "tls = true\ncert = {}\nkey = {}\nclient_ca = {}",
                path(&t.cert),
                path(&t.key),
                path(&t.ca)
            );
        }
    }
    let _ = writeln!(c, "max_in_flight_per_connection = 16384\n");
    let _ = writeln!(c, "[admin]\nbind = {}\n", quoted(&spec.admin.to_string()));
    if spec.journal != Journal::Off {
        let _ = writeln!(
            c,
            "[journal]\ndir = {}\nfsync = {}\n",
            path(&spec.journal_dir),
            quoted(spec.journal.as_str())
        );
    }
    if let Some(mac) = &spec.mac {
        let _ = writeln!(c, "{}", mac.hsm_section(HsmUser::Switch));
    }
    let _ = writeln!(c, "[[banks]]");
    let _ = writeln!(
        c,
        "code = \"003\"\nname = \"bank003\"\ncodec = \"iso8583:canonical\""
    );
    if let Some(mac) = &spec.mac {
        let _ = writeln!(c, "{}", mac.auth_entry());
    }
    let _ = writeln!(c, "endpoints = [{}]", quoted(&spec.bank.to_string()));
    let _ = writeln!(c, "framing = {{ prefix = \"binary2\" }}");
    let _ = writeln!(c, "max_in_flight = 4096");
    let links = spec.links.max(1);
    let _ = writeln!(c, "pool = {{ min = {links}, max = {links} }}");
    match &spec.tls {
        None => {
            let _ = writeln!(c, "danger_plaintext = true\n");
        }
        Some(t) => {
            let _ = writeln!(
                c,
                "[banks.tls]\ncert = {}\nkey = {}\nca = {}\nserver_name = {}\n",
                path(&t.client_cert),
                path(&t.client_key),
                path(&t.ca),
                quoted(&t.bank_name)
            );
        }
    }
    let _ = writeln!(
        c,
        "[[routing.routes]]\nbank_code = \"003\"\nprimary = \"bank003\""
    );
    c
}

/// Write `dir/NAME.toml`, start `binary run` on it (pinned to `core`
/// when given, its output in `dir/NAME.log`) and wait until `/readyz` says
/// every bank has a link up.
pub async fn start(
    name: &str,
    binary: &Path,
    spec: &SwitchSpec,
    dir: &Path,
    core: Option<usize>,
) -> anyhow::Result<Supervised> {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, render(spec)).with_context(|| format!("writing {}", cfg.display()))?;
    let args = vec![
        "run".to_owned(),
        "--config".to_owned(),
        cfg.display().to_string(),
    ];
    let mut switch = Supervised::spawn(
        &format!("fps-switch ({name})"),
        binary,
        &args,
        core,
        &dir.join(format!("{name}.log")),
    )?;
    let admin = spec.admin;
    switch
        .wait_ready(START_TIMEOUT, || async move {
            matches!(http_get(admin, "/readyz").await, Ok((200, _)))
        })
        .await?;
    Ok(switch)
}

#[cfg(test)]
mod tests {
    use super::super::mac::RunWithModuleFile;
    use super::*;

    #[test]
    fn configs_route_bank_003_to_the_simulator() {
        let mut spec = SwitchSpec {
            listen: "127.0.0.1:7000".parse().unwrap(),
            admin: "127.0.0.1:7001".parse().unwrap(),
            bank: "127.0.0.1:7003".parse().unwrap(),
            links: 4,
            tls: None,
            journal: Journal::Off,
            journal_dir: "/d/j".into(),
            mac: None,
            busy_poll: false,
        };
        let plain = render(&spec);
        let v: toml::Value = toml::from_str(&plain).unwrap();
        assert_eq!(v["upstream"]["tls"].as_bool(), Some(false));
        assert_eq!(v["banks"][0]["danger_plaintext"].as_bool(), Some(true));
        assert_eq!(v["banks"][0]["pool"]["max"].as_integer(), Some(4));
        assert_eq!(
            v["routing"]["routes"][0]["primary"].as_str(),
            Some("bank003")
        );
        assert!(v.get("journal").is_none());
        assert!(v["switch"].get("busy_poll").is_none());
        spec.busy_poll = true;
        let v: toml::Value = toml::from_str(&render(&spec)).unwrap();
        assert_eq!(v["switch"]["busy_poll"].as_bool(), Some(true));
        assert_eq!(v["switch"]["worker_threads"].as_integer(), Some(1));
        spec.busy_poll = false;
        spec.journal = Journal::Batch;
        spec.tls = Some(SwitchTls {
            cert: "/d/switch.crt".into(),
            key: "/d/switch.key".into(),
            ca: "/d/ca \"x\".crt".into(),
            client_cert: "/d/switch-client.crt".into(),
            client_key: "/d/switch-client.key".into(),
            bank_name: "bank003.fps.test".into(),
        });
        let v: toml::Value = toml::from_str(&render(&spec)).unwrap();
        assert_eq!(v["upstream"]["client_ca"].as_str(), Some("/d/ca \"x\".crt"));
        assert_eq!(
            v["banks"][0]["tls"]["server_name"].as_str(),
            Some("bank003.fps.test")
        );
        assert_eq!(v["journal"]["fsync"].as_str(), Some("batch"));
        assert!(v.get("hsm").is_none());
        assert!(v["banks"][0].get("auth").is_none());
    }

    #[test]
    fn mac_configs_carry_auth_and_hsm() {
        let mac = RunWithModuleFile::new("switch");
        let spec = SwitchSpec {
            listen: "127.0.0.1:7000".parse().unwrap(),
            admin: "127.0.0.1:7001".parse().unwrap(),
            bank: "127.0.0.1:7003".parse().unwrap(),
            links: 4,
            tls: None,
            journal: Journal::Never,
            journal_dir: "/d/j".into(),
            mac: Some(mac.run.clone()),
            busy_poll: false,
        };
        let v: toml::Value = toml::from_str(&render(&spec)).unwrap();
        // The switch's own section type, with its own validation.
        let hsm: fps_hsm::HsmConfig = v["hsm"].clone().try_into().unwrap();
        let valid = hsm.validate();
        assert!(valid.is_ok(), "{valid:?}");
        let bank = &v["banks"][0];
        assert_eq!(bank["code"].as_str(), Some("003"));
        // The run's own key, through SoftHSM2 (PKCS#11), not a dev key.
        assert_eq!(
            bank["auth"]["mac"]["label"].as_str(),
            Some("relay-mac-hmac-test")
        );
        assert_eq!(
            bank["auth"]["mac"]["mechanism"].as_str(),
            Some("hmac_sha256")
        );
        assert_eq!(hsm.backend, fps_hsm::Backend::Pkcs11);
        assert_eq!(
            hsm.module_path.as_deref(),
            Some(mac.run.plan.module.as_path())
        );
        assert_eq!(hsm.danger_key_dir, None);
        assert_eq!(hsm.token_label.as_deref(), Some("fps-switch"));
        assert_eq!(hsm.pin_env.as_deref(), Some("FPS_HSM_PIN"));
        assert_eq!(hsm.module_instances, fps_hsm::ModuleInstances::PerSession);
        assert_eq!(hsm.queue_bound, 4096);
        // The key the switch checks at start is the one the plan names.
        let mac = spec.mac.as_ref().unwrap();
        assert_eq!(mac.key().label(), "relay-mac-hmac-test");
        assert_eq!(v["journal"]["fsync"].as_str(), Some("never"));
    }
}
