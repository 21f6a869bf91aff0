//! The MAC run of a comparison (`--mac`): issue 6 wants the switch, with a
//! per-transaction MAC through SoftHSM2 on both directions, at >= 0.6x its
//! rate without. Bank 003 then carries `auth = { mac = KEY }` on both
//! sides: the switch MACs each request and checks each answer through its
//! `[hsm]` pool, the simulated bank checks each request and MACs its answer
//! (`banksim::auth`), both with the key of the development SoftHSM2 token
//! (`scripts/softhsm-init`).
//!
//! This module holds the plan (which key, which token), the `[hsm]`
//! sections both configs get, the check made before anything starts (token,
//! PIN and key there, with a message naming what is missing), and the
//! reading of the MAC failures both sides counted.

use std::path::PathBuf;

use anyhow::anyhow;
use fps_hsm::{HsmConfig, KeyRef, Mechanism, Operation, PinSource};

/// The switch's HSM worker threads (one session each). One: the switch is
/// pinned to one core, where a second worker adds no parallelism, only
/// thread switches (5,000 TPS with a MAC: 139 us of CPU per transaction
/// with one worker, 149 us with two).
pub const SWITCH_HSM_THREADS: usize = 1;
/// The simulator's HSM worker threads: one, for the same reason (it shares
/// one core with the load generator).
pub const SIM_HSM_THREADS: usize = 1;
/// Requests that may wait for an HSM worker, on each side (dev configs).
pub const HSM_QUEUE_BOUND: usize = 4096;
/// The switch's counter of bank answers whose MAC did not verify
/// (`fps_switch::bank::auth::AUTH_FAILURES`).
pub const SWITCH_AUTH_FAILURES_METRIC: &str = "fps_switch_bank_auth_failures_total";

/// Which MAC bank 003's messages carry, and the token key it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacMechanism {
    /// HMAC-SHA256 with `mac-hmac` (bank 003 of the dev configs).
    HmacSha256,
    /// AES-CMAC with `mac-cmac` (bank 004 of the dev configs).
    AesCmac,
}

impl MacMechanism {
    /// The `--mac` value: `hmac` or `cmac`.
    pub fn as_str(self) -> &'static str {
        match self {
            MacMechanism::HmacSha256 => "hmac",
            MacMechanism::AesCmac => "cmac",
        }
    }

    /// The key's label in the token (made by `scripts/softhsm-init`).
    pub fn key_label(self) -> &'static str {
        match self {
            MacMechanism::HmacSha256 => "mac-hmac",
            MacMechanism::AesCmac => "mac-cmac",
        }
    }

    /// The mechanism as both configs name it.
    pub fn mechanism(self) -> Mechanism {
        match self {
            MacMechanism::HmacSha256 => Mechanism::HmacSha256,
            MacMechanism::AesCmac => Mechanism::AesCmac,
        }
    }
}

/// Which side an `[hsm]` section is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsmUser {
    /// The switch: `module_instances = "per_session"`, as its dev config
    /// (SoftHSM2's process-wide locks otherwise serialise its sessions).
    Switch,
    /// The in-process simulator: one shared instance, as its dev config
    /// (it shares the load generator's core, more instances buy nothing).
    Simulator,
}

/// The MAC of a comparison and the token that holds its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacPlan {
    /// HMAC-SHA256 or AES-CMAC.
    pub mechanism: MacMechanism,
    /// The PKCS#11 module (`libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the token holding the key.
    pub token: String,
    /// Where both sides read the user PIN (the switch inherits the
    /// environment of this process).
    pub pin: PinSource,
    /// `SOFTHSM2_CONF` as this process (and so the switch) sees it; only
    /// checked and named in messages, SoftHSM2 reads it itself.
    pub softhsm2_conf: Option<PathBuf>,
}

impl MacPlan {
    /// The key both sides use.
    pub fn key(&self) -> KeyRef {
        // The labels above are short, plain ASCII: KeyRef::new accepts them.
        KeyRef::new(self.mechanism.key_label(), self.mechanism.mechanism())
            .expect("the built-in MAC key labels are valid")
    }

    /// A bank's `auth` entry (inline table), the same on both sides.
    pub fn auth_entry(&self) -> String {
        format!(
            "auth = {{ mac = {{ label = {}, mechanism = {} }} }}",
            toml_str(self.mechanism.key_label()),
            toml_str(self.mechanism.mechanism().as_str())
        )
    }

    /// The `[hsm]` section of `user`'s config (header included).
    pub fn hsm_section(&self, user: HsmUser) -> String {
        let pin = match &self.pin {
            PinSource::Env(var) => format!("pin_env = {}", toml_str(var)),
            PinSource::File(p) => format!("pin_file = {}", toml_str(&p.display().to_string())),
        };
        let (threads, instances) = match user {
            HsmUser::Switch => (SWITCH_HSM_THREADS, "per_session"),
            HsmUser::Simulator => (SIM_HSM_THREADS, "shared"),
        };
        format!(
            "[hsm]\nbackend = \"pkcs11\"\nmodule_path = {}\ntoken_label = {}\n{pin}\n\
             threads = {threads}\nmodule_instances = \"{instances}\"\nqueue_bound = {HSM_QUEUE_BOUND}\n",
            toml_str(&self.module.display().to_string()),
            toml_str(&self.token)
        )
    }

    /// One line for the JSON settings: what was MACed, with what.
    pub fn describe(&self) -> String {
        format!(
            "bank 003 auth mac = {} ({}) on both sides: the switch MACs each request and checks each answer \
             ([hsm] threads {SWITCH_HSM_THREADS}, per_session), the simulator checks each request and MACs \
             each answer ([hsm] threads {SIM_HSM_THREADS}, shared); token {} of {}",
            self.mechanism.key_label(),
            self.mechanism.mechanism().as_str(),
            self.token,
            self.module.display()
        )
    }

    /// The `[hsm]` config of this process's check (one session).
    fn check_config(&self) -> HsmConfig {
        let mut c = HsmConfig::pkcs11(&self.module, &self.token, self.pin.clone());
        c.threads = 1;
        c
    }

    /// What to do when something is missing.
    fn remedy(&self) -> String {
        let conf = match &self.softhsm2_conf {
            Some(p) => format!("SOFTHSM2_CONF={}", p.display()),
            None => "SOFTHSM2_CONF is not set (SoftHSM2 then reads /etc/softhsm/softhsm2.conf)"
                .to_owned(),
        };
        format!(
            "{conf}; make the development token with scripts/softhsm-init, then export \
             SOFTHSM2_CONF=target/softhsm/softhsm2.conf and FPS_HSM_PIN \
             (scripts/compare-relay --mac {} does both), or pass --hsm-module, --hsm-token, \
             --hsm-pin-env/--hsm-pin-file",
            self.mechanism.as_str()
        )
    }
}

/// Check, before anything starts, that the module, the PIN, the token and
/// the key are all there: every problem in one error naming what is missing.
pub async fn preflight(plan: &MacPlan) -> anyhow::Result<()> {
    let what = format!(
        "--mac {}: key `{}` in token `{}` of {}",
        plan.mechanism.as_str(),
        plan.mechanism.key_label(),
        plan.token,
        plan.module.display()
    );
    let config = plan.check_config();
    let mut problems: Vec<String> = Vec::new();
    if let Err(errors) = config.validate() {
        for e in errors {
            problems.push(match e {
                fps_hsm::HsmError::InvalidConfig { field, reason } => {
                    format!("{} {reason}", option_of(field))
                }
                other => other.to_string(),
            });
        }
    }
    if let Some(conf) = &plan.softhsm2_conf {
        if !conf.is_file() {
            problems.push(format!(
                "SOFTHSM2_CONF: {} does not exist or is not a file",
                conf.display()
            ));
        }
    }
    if let Err(e) = plan.pin.read() {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        let key = plan.key();
        let uses = [(key.clone(), Operation::Mac), (key, Operation::VerifyMac)];
        if let Err(e) = crate::banksim::auth::start_hsm(config, &uses).await {
            problems.push(format!("{e:#}"));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "{what}: {}\n{}",
        problems.join("; "),
        plan.remedy()
    ))
}

/// The option that sets an `[hsm]` field of the check.
fn option_of(field: &str) -> &'static str {
    match field {
        "module_path" => "--hsm-module:",
        "token_label" => "--hsm-token:",
        "pin_env" => "--hsm-pin-env:",
        "pin_file" => "--hsm-pin-file:",
        _ => "hsm:",
    }
}

/// Requests whose MAC the simulated bank refused (answered `63`): the
/// `totals.auth_failures` of its `GET /ledger?summary`.
pub fn ledger_auth_failures(ledger_json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(ledger_json).ok()?;
    v.get("totals")?.get("auth_failures")?.as_u64()
}

/// The sum of every series of counter `name` in a Prometheus text page
/// (`None` when the page has none).
pub fn counter_sum(metrics: &str, name: &str) -> Option<u64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name{labels} value` or `name value`, not `name_other ...`.
        let value = match rest.chars().next() {
            Some('{') => rest.rsplit_once('}').map(|(_, v)| v),
            Some(' ') => Some(rest),
            _ => None,
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            found = true;
            sum += v;
        }
    }
    found.then_some(sum as u64)
}

/// For the config tests of `relay`: an HMAC-SHA256 plan (token
/// `fps-switch`, PIN from `FPS_HSM_PIN`) whose module is an empty file that
/// exists, as the configs' validation wants where SoftHSM2 is not
/// installed. The file is removed with the value.
#[cfg(test)]
pub(crate) struct PlanWithModuleFile {
    pub plan: MacPlan,
}

#[cfg(test)]
impl PlanWithModuleFile {
    /// `tag` keeps the files of tests running at once apart.
    pub fn new(tag: &str) -> Self {
        let module =
            std::env::temp_dir().join(format!("fps-relay-{tag}-module-{}.so", std::process::id()));
        std::fs::write(&module, b"").unwrap();
        PlanWithModuleFile {
            plan: MacPlan {
                mechanism: MacMechanism::HmacSha256,
                module,
                token: "fps-switch".into(),
                pin: PinSource::Env("FPS_HSM_PIN".into()),
                softhsm2_conf: None,
            },
        }
    }
}

#[cfg(test)]
impl Drop for PlanWithModuleFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.plan.module);
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mechanism: MacMechanism, pin: PinSource) -> MacPlan {
        MacPlan {
            mechanism,
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token: "fps-switch".into(),
            pin,
            softhsm2_conf: Some("/nowhere/softhsm2.conf".into()),
        }
    }

    #[test]
    fn hsm_sections_are_fps_hsm_configs() {
        let p = plan(
            MacMechanism::HmacSha256,
            PinSource::Env("FPS_HSM_PIN".into()),
        );
        let v: toml::Value = toml::from_str(&p.hsm_section(HsmUser::Switch)).unwrap();
        let c: HsmConfig = v["hsm"].clone().try_into().unwrap();
        assert_eq!(c.module_instances, fps_hsm::ModuleInstances::PerSession);
        assert_eq!(c.pin_env.as_deref(), Some("FPS_HSM_PIN"));
        assert_eq!(c.token_label.as_deref(), Some("fps-switch"));
        assert_eq!(c.threads, SWITCH_HSM_THREADS);
        let p = plan(
            MacMechanism::AesCmac,
            PinSource::File("/d/pin \"x\"".into()),
        );
        let v: toml::Value = toml::from_str(&p.hsm_section(HsmUser::Simulator)).unwrap();
        let c: HsmConfig = v["hsm"].clone().try_into().unwrap();
        assert_eq!(c.module_instances, fps_hsm::ModuleInstances::Shared);
        assert_eq!(c.pin_file, Some(PathBuf::from("/d/pin \"x\"")));
        assert_eq!(c.pin_env, None);
    }

    #[test]
    fn keys_and_auth_entries() {
        let p = plan(MacMechanism::HmacSha256, PinSource::Env("P".into()));
        assert_eq!(p.key().label(), "mac-hmac");
        assert_eq!(
            p.auth_entry(),
            r#"auth = { mac = { label = "mac-hmac", mechanism = "hmac_sha256" } }"#
        );
        let p = plan(MacMechanism::AesCmac, PinSource::Env("P".into()));
        assert_eq!(p.key().mechanism(), Mechanism::AesCmac);
        assert!(p.auth_entry().contains("\"aes_cmac\""));
        assert!(p.describe().contains("mac-cmac (aes_cmac)"));
    }

    #[tokio::test]
    async fn preflight_names_what_is_missing() {
        let mut p = plan(
            MacMechanism::HmacSha256,
            PinSource::Env("FPS_RELAY_TEST_NO_SUCH_PIN_VAR".into()),
        );
        p.module = "/nowhere/libsofthsm2.so".into();
        let e = preflight(&p).await.unwrap_err().to_string();
        assert!(e.contains("--hsm-module: /nowhere/libsofthsm2.so"), "{e}");
        assert!(e.contains("SOFTHSM2_CONF: /nowhere/softhsm2.conf"), "{e}");
        assert!(e.contains("FPS_RELAY_TEST_NO_SUCH_PIN_VAR"), "{e}");
        assert!(e.contains("scripts/softhsm-init"), "{e}");
    }

    #[test]
    fn failure_counts() {
        let ledger = r#"{"totals": {"requests": 10, "auth_failures": 3}, "banks": []}"#;
        assert_eq!(ledger_auth_failures(ledger), Some(3));
        assert_eq!(ledger_auth_failures("{}"), None);
        let page = "# HELP fps_switch_bank_auth_failures_total x\n\
                    # TYPE fps_switch_bank_auth_failures_total counter\n\
                    fps_switch_bank_auth_failures_total{bank=\"bank003\"} 2\n\
                    fps_switch_bank_auth_failures_total{bank=\"x\"} 1\n\
                    fps_switch_bank_auth_failures_totalx 7\n";
        assert_eq!(counter_sum(page, SWITCH_AUTH_FAILURES_METRIC), Some(3));
        assert_eq!(
            counter_sum("fps_other 1\n", SWITCH_AUTH_FAILURES_METRIC),
            None
        );
        assert_eq!(counter_sum("c 4\n", "c"), Some(4));
    }
}
