//! The MAC run of a comparison (`--mac`): issue 6 wants the switch, with a
//! per-transaction MAC through SoftHSM2 on both directions, at >= 0.6x its
//! rate without. Bank 003 then carries `auth = { mac = KEY }` on both
//! sides: the switch MACs each request and checks each answer through its
//! `[hsm]`, over PKCS#11 in the SoftHSM2 token (by default on one inline
//! session, that is on the switch's runtime thread, with one worker behind
//! it on the same core: `--hsm-inline-sessions`); the simulated bank checks
//! each request and MACs its answer (`banksim::auth`) in software, with the
//! same key bytes (`backend = "danger_software"`, also inline), so that the
//! load generator's core, which the simulator shares, is not spent on
//! SoftHSM2 and the maximum measured is the switch's, not the load side's.
//! With SoftHSM2 on both sides both cores saturated at about 10,000 TPS.
//!
//! The key is made for the run ([`preflight`]): fresh random bytes (32 for
//! HMAC-SHA256, 16 for AES-CMAC), imported into the token under a label of
//! the run's own (`relay-mac-<mechanism>-<pid>-<random>`, never one of the
//! development keys) with `fps_hsm::admin::import_secret` (sensitive, not
//! extractable), and written as a hex key file into a private temporary
//! directory for the simulator. [`RunKey`] destroys the token key and
//! removes the directory when dropped, whatever way the run ends (a
//! `kill -9` excepted).
//!
//! This module holds the plan (which mechanism, which token), the run's
//! key, the `[hsm]` sections both configs get, the check made before
//! anything starts (token and PIN there, with a message naming what is
//! missing, and both sides agreeing on a MAC), and the reading of the MAC
//! failures both sides counted.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use fps_hsm::pkcs11::TokenSession;
use fps_hsm::{admin, HsmConfig, KeyRef, Mechanism, Operation, PinSource};
use zeroize::Zeroizing;

/// The switch's HSM worker threads (one session each). One: the switch is
/// pinned to one core, where a second worker adds no parallelism, only
/// thread switches (5,000 TPS with a MAC: 139 us of CPU per transaction
/// with one worker, 149 us with two).
pub const SWITCH_HSM_THREADS: usize = 1;
/// The simulator's HSM worker threads: one, for the same reason (it shares
/// one core with the load generator).
pub const SIM_HSM_THREADS: usize = 1;
/// The simulator's inline sessions: its software MACs (about a
/// microsecond) run on its own thread. Through its worker instead, the two
/// thread hand-offs per MAC on the load core cost the simulator 56 us per
/// transaction at 8,000 TPS (26 us inline) and capped every MAC run at
/// about 14,000 TPS, whatever the switch could do.
pub const SIM_HSM_INLINE_SESSIONS: usize = 1;
/// Requests that may wait for an HSM worker, on each side (dev configs).
pub const HSM_QUEUE_BOUND: usize = 4096;
/// The switch's counter of bank answers whose MAC did not verify
/// (`fps_switch::bank::auth::AUTH_FAILURES`).
pub const SWITCH_AUTH_FAILURES_METRIC: &str = "fps_switch_bank_auth_failures_total";
/// Start of every run key's label: tells them apart from the development
/// keys (`mac-hmac`, `mac-cmac`) and finds any left behind (`fps-hsm list`).
pub const RUN_KEY_PREFIX: &str = "relay-mac";
/// Random bytes in a run key's label (as hex), beside the process id.
const LABEL_RANDOM_BYTES: usize = 4;
/// What both sides MAC before the run, to prove they hold the same key.
const PROBE_MESSAGE: &[u8] = b"fps-loadtest compare-relay: same key on both sides?";

/// Which MAC bank 003's messages carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacMechanism {
    /// HMAC-SHA256 (as bank 003 of the dev configs).
    HmacSha256,
    /// AES-CMAC (as bank 004 of the dev configs).
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

    /// The mechanism as both configs name it.
    pub fn mechanism(self) -> Mechanism {
        match self {
            MacMechanism::HmacSha256 => Mechanism::HmacSha256,
            MacMechanism::AesCmac => Mechanism::AesCmac,
        }
    }

    /// Size of the run's random key: HMAC-SHA256 as long as its output
    /// (RFC 2104), AES-128 for CMAC.
    pub fn key_bytes(self) -> usize {
        match self {
            MacMechanism::HmacSha256 => 32,
            MacMechanism::AesCmac => 16,
        }
    }

    /// The danger_software key file suffix (`fps_hsm::software`).
    fn file_suffix(self) -> &'static str {
        match self {
            MacMechanism::HmacSha256 => "hmac.hex",
            MacMechanism::AesCmac => "cmac.hex",
        }
    }
}

/// Which side an `[hsm]` section is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsmUser {
    /// The switch: PKCS#11 with `module_instances = "per_session"`, as its
    /// dev config (SoftHSM2's process-wide locks otherwise serialise its
    /// sessions).
    Switch,
    /// The in-process simulator: `danger_software`, the run's key file.
    Simulator,
}

/// The MAC of a comparison and the token the switch's key goes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacPlan {
    /// HMAC-SHA256 or AES-CMAC.
    pub mechanism: MacMechanism,
    /// The PKCS#11 module (`libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the token the run's key is imported into.
    pub token: String,
    /// Where this process and the switch read the user PIN (the switch
    /// inherits the environment of this process).
    pub pin: PinSource,
    /// `SOFTHSM2_CONF` as this process (and so the switch) sees it; only
    /// checked and named in messages, SoftHSM2 reads it itself.
    pub softhsm2_conf: Option<PathBuf>,
    /// The switch's `[hsm] inline_sessions` (`--hsm-inline-sessions`).
    pub inline_sessions: usize,
}

impl MacPlan {
    /// The `[hsm]` config of this process's check (one session, one
    /// instance of the module).
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

/// The run's key as both configs name it: the plan, the base label (the
/// token holds `<label>-v1`) and the simulator's key directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacRun {
    /// Mechanism, module, token, PIN.
    pub plan: MacPlan,
    /// Base label of the run's key, the same on both sides.
    pub label: String,
    /// The simulator's `danger_key_dir`: `<label>-v1.hmac.hex` (or `.cmac.hex`).
    pub key_dir: PathBuf,
}

impl MacRun {
    /// The key both sides use.
    pub fn key(&self) -> KeyRef {
        // The label is built from a fixed prefix, a mechanism name, the pid
        // and hex digits: short, plain ASCII, no -vN suffix.
        KeyRef::new(&self.label, self.plan.mechanism.mechanism())
            .expect("run key labels are valid base labels")
    }

    /// A bank's `auth` entry (inline table), the same on both sides.
    pub fn auth_entry(&self) -> String {
        format!(
            "auth = {{ mac = {{ label = {}, mechanism = {} }} }}",
            super::toml_string(&self.label),
            super::toml_string(self.plan.mechanism.mechanism().as_str())
        )
    }

    /// The `[hsm]` section of `user`'s config (header included): the switch
    /// through PKCS#11, the simulator in software from the key directory.
    pub fn hsm_section(&self, user: HsmUser) -> String {
        let plan = &self.plan;
        match user {
            HsmUser::Switch => {
                let pin = match &plan.pin {
                    PinSource::Env(var) => format!("pin_env = {}", super::toml_string(var)),
                    PinSource::File(p) => {
                        format!(
                            "pin_file = {}",
                            super::toml_string(&p.display().to_string())
                        )
                    }
                };
                format!(
                    "[hsm]\nbackend = \"pkcs11\"\nmodule_path = {}\ntoken_label = {}\n{pin}\n\
                     threads = {SWITCH_HSM_THREADS}\ninline_sessions = {}\n\
                     module_instances = \"per_session\"\nqueue_bound = {HSM_QUEUE_BOUND}\n",
                    super::toml_string(&plan.module.display().to_string()),
                    super::toml_string(&plan.token),
                    plan.inline_sessions,
                )
            }
            HsmUser::Simulator => format!(
                "[hsm]\nbackend = \"danger_software\"\ndanger_key_dir = {}\n\
                 threads = {SIM_HSM_THREADS}\ninline_sessions = {SIM_HSM_INLINE_SESSIONS}\n\
                 queue_bound = {HSM_QUEUE_BOUND}\n",
                super::toml_string(&self.key_dir.display().to_string())
            ),
        }
    }

    /// One line for the JSON settings: what was MACed, where, with what.
    pub fn describe(&self) -> String {
        let plan = &self.plan;
        format!(
            "bank 003 auth mac = {label} ({mechanism}) on both sides, a random {bytes}-byte key made \
             for this run: the switch MACs each request and checks each answer through SoftHSM2 \
             over PKCS#11 (token {token} of {module}, key imported as {label}-v1, sensitive and \
             not extractable; [hsm] threads {SWITCH_HSM_THREADS}, inline_sessions {inline}, \
             per_session); the simulated bank \
             checks each request and MACs each answer in software with the same key bytes \
             ([hsm] backend danger_software, threads {SIM_HSM_THREADS}, inline_sessions \
             {SIM_HSM_INLINE_SESSIONS}), so the load generator's \
             core, which it shares, is not spent on SoftHSM2; the key is destroyed in the token \
             and its file removed after the run",
            label = self.label,
            mechanism = plan.mechanism.mechanism().as_str(),
            bytes = plan.mechanism.key_bytes(),
            token = plan.token,
            module = plan.module.display(),
            inline = plan.inline_sessions,
        )
    }

    /// The simulator's `[hsm]`, parsed as the simulator parses it.
    fn sim_config(&self) -> anyhow::Result<HsmConfig> {
        let v: toml::Value = toml::from_str(&self.hsm_section(HsmUser::Simulator))
            .context("the simulator's [hsm] section")?;
        v.get("hsm")
            .cloned()
            .context("the simulator's [hsm] section")?
            .try_into()
            .context("the simulator's [hsm] section")
    }
}

/// The run's key, in the token and in the simulator's key directory: both
/// go when this is dropped (the token key destroyed, the directory
/// removed), so hold it until every process using the key has stopped.
#[derive(Debug)]
pub struct RunKey {
    run: MacRun,
    /// Whether `run.key_dir` was made here (and so is ours to remove).
    made_dir: bool,
    /// The full label of the token key, once imported.
    imported: Option<String>,
}

impl RunKey {
    /// What both configs name.
    pub fn run(&self) -> &MacRun {
        &self.run
    }

    /// Makes the key: random bytes, the simulator's key file, the token
    /// object (through `token`). Whatever was made is undone on failure.
    fn create(plan: &MacPlan, token: &TokenSession) -> anyhow::Result<RunKey> {
        let mechanism = plan.mechanism;
        let n = mechanism.key_bytes();
        let mut random = Zeroizing::new(vec![0u8; n + LABEL_RANDOM_BYTES]);
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .context("reading /dev/urandom for the run's MAC key")?;
        let (key, tag) = random.split_at(n);
        let label = format!(
            "{RUN_KEY_PREFIX}-{}-{}-{}",
            mechanism.as_str(),
            std::process::id(),
            hex(tag).as_str()
        );
        let mut run_key = RunKey {
            run: MacRun {
                plan: plan.clone(),
                key_dir: std::env::temp_dir().join(format!("fps-{label}")),
                label,
            },
            made_dir: false,
            imported: None,
        };
        let dir = &run_key.run.key_dir;
        make_private_dir(dir)
            .with_context(|| format!("creating the MAC key directory {}", dir.display()))?;
        run_key.made_dir = true;
        let file = dir.join(format!(
            "{}-v1.{}",
            run_key.run.label,
            mechanism.file_suffix()
        ));
        write_private_file(&file, hex(key).as_bytes())
            .with_context(|| format!("writing {}", file.display()))?;
        let imported = admin::import_secret(token, &run_key.run.label, mechanism.mechanism(), key)
            .map_err(|e| {
                anyhow!(
                    "importing the run's MAC key `{}` into token `{}`: {e}",
                    run_key.run.label,
                    plan.token
                )
            })?;
        let expected = format!("{}-v1", run_key.run.label);
        // Stored first, so it is destroyed even when it is not the -v1
        // the key file is named for.
        run_key.imported = Some(imported);
        if run_key.imported.as_deref() != Some(expected.as_str()) {
            return Err(anyhow!(
                "the run's MAC key `{}` already had a version in token `{}`",
                run_key.run.label,
                plan.token
            ));
        }
        Ok(run_key)
    }
}

impl Drop for RunKey {
    fn drop(&mut self) {
        if let Some(label) = self.imported.take() {
            let plan = &self.run.plan;
            let destroyed = plan
                .pin
                .read()
                .and_then(|pin| TokenSession::open(&plan.module, &plan.token, &pin))
                .and_then(|token| admin::destroy_key(&token, &label));
            if let Err(e) = destroyed {
                eprintln!(
                    "compare-relay: the run's MAC key `{label}` is still in token `{}`: {e}; \
                     delete it with: fps-hsm --module {} --token {} destroy --label {label}",
                    plan.token,
                    plan.module.display(),
                    plan.token
                );
            }
        }
        if self.made_dir {
            if let Err(e) = std::fs::remove_dir_all(&self.run.key_dir) {
                eprintln!(
                    "compare-relay: cannot remove the MAC key directory {}: {e}; remove it by hand",
                    self.run.key_dir.display()
                );
            }
        }
    }
}

/// Check, before anything starts, that the module, the PIN and the token
/// are there (every problem in one error naming what is missing), make the
/// run's key, and prove that the switch's side (PKCS#11) and the
/// simulator's (software) MAC alike with it.
pub async fn preflight(plan: &MacPlan) -> anyhow::Result<RunKey> {
    let what = format!(
        "--mac {}: token `{}` of {}",
        plan.mechanism.as_str(),
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
    let pin = match plan.pin.read() {
        Ok(pin) => Some(pin),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let run_key = match pin {
        Some(pin) if problems.is_empty() => {
            let p = plan.clone();
            // PKCS#11 calls block: off the runtime's threads.
            let made = tokio::task::spawn_blocking(move || {
                TokenSession::open(&p.module, &p.token, &pin)
                    .map(|token| RunKey::create(&p, &token))
            })
            .await
            .context("the MAC key task failed")?;
            match made {
                // The token is there: what fails now is no set-up problem.
                Ok(created) => Some(created.with_context(|| what.clone())?),
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            }
        }
        _ => None,
    };
    let Some(run_key) = run_key else {
        return Err(anyhow!(
            "{what}: {}\n{}",
            problems.join("; "),
            plan.remedy()
        ));
    };
    same_mac_on_both_sides(&run_key, config)
        .await
        .with_context(|| format!("{what}: key `{}`", run_key.run.label))?;
    Ok(run_key)
}

/// Both sides, started as in the run (the switch's through PKCS#11 in one
/// session here), find the key and give the same MAC.
async fn same_mac_on_both_sides(run_key: &RunKey, switch_side: HsmConfig) -> anyhow::Result<()> {
    let key = run_key.run.key();
    let uses = [
        (key.clone(), Operation::Mac),
        (key.clone(), Operation::VerifyMac),
    ];
    let probe = Bytes::from_static(PROBE_MESSAGE);
    let switch = crate::banksim::auth::start_hsm(switch_side, &uses)
        .await
        .context("the switch's side (PKCS#11)")?;
    let by_switch = switch.mac(&key, probe.clone()).await?;
    let sim = crate::banksim::auth::start_hsm(run_key.run.sim_config()?, &uses)
        .await
        .context("the simulator's side (danger_software)")?;
    sim.verify_mac(&key, probe, Bytes::from(by_switch))
        .await
        .map_err(|e| anyhow!("the simulator does not accept the token's MAC: {e}"))
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

/// Lowercase hex of `bytes`, in memory that is wiped when dropped (sized
/// up front: no reallocation leaves a copy behind).
fn hex(bytes: &[u8]) -> Zeroizing<String> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// A new directory only its owner can enter; fails if it exists.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// A new file only its owner can read, holding `content`.
fn write_private_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(content)?;
    f.write_all(b"\n")
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

/// For the config tests of `relay`: an HMAC-SHA256 run (token
/// `fps-switch`, PIN from `FPS_HSM_PIN`, label `relay-mac-hmac-test`)
/// whose module is an empty file that exists, as the configs' validation
/// wants where SoftHSM2 is not installed. The file is removed with the
/// value; the key directory is only named, never made.
#[cfg(test)]
pub(crate) struct RunWithModuleFile {
    pub run: MacRun,
}

#[cfg(test)]
impl RunWithModuleFile {
    /// `tag` keeps the files of tests running at once apart.
    pub fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let module = std::env::temp_dir().join(format!("fps-relay-{tag}-module-{pid}.so"));
        std::fs::write(&module, b"").unwrap();
        RunWithModuleFile {
            run: MacRun {
                plan: MacPlan {
                    mechanism: MacMechanism::HmacSha256,
                    module,
                    token: "fps-switch".into(),
                    pin: PinSource::Env("FPS_HSM_PIN".into()),
                    softhsm2_conf: None,
                    inline_sessions: 1,
                },
                label: "relay-mac-hmac-test".into(),
                key_dir: std::env::temp_dir().join(format!("fps-relay-{tag}-keys-{pid}")),
            },
        }
    }
}

#[cfg(test)]
impl Drop for RunWithModuleFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.run.plan.module);
    }
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
            inline_sessions: 1,
        }
    }

    fn run(mechanism: MacMechanism, pin: PinSource) -> MacRun {
        MacRun {
            plan: plan(mechanism, pin),
            label: "relay-mac-hmac-42-0a1b2c3d".into(),
            key_dir: "/tmp/fps-relay keys \"q\"".into(),
        }
    }

    #[test]
    fn hsm_sections_are_fps_hsm_configs() {
        let r = run(
            MacMechanism::HmacSha256,
            PinSource::Env("FPS_HSM_PIN".into()),
        );
        let v: toml::Value = toml::from_str(&r.hsm_section(HsmUser::Switch)).unwrap();
        let c: HsmConfig = v["hsm"].clone().try_into().unwrap();
        assert_eq!(c.backend, fps_hsm::Backend::Pkcs11);
        assert_eq!(c.module_instances, fps_hsm::ModuleInstances::PerSession);
        assert_eq!(c.pin_env.as_deref(), Some("FPS_HSM_PIN"));
        assert_eq!(c.token_label.as_deref(), Some("fps-switch"));
        assert_eq!(c.threads, SWITCH_HSM_THREADS);
        assert_eq!(c.inline_sessions, 1);
        assert_eq!(c.danger_key_dir, None);
        let r = run(
            MacMechanism::AesCmac,
            PinSource::File("/d/pin \"x\"".into()),
        );
        let v: toml::Value = toml::from_str(&r.hsm_section(HsmUser::Switch)).unwrap();
        let c: HsmConfig = v["hsm"].clone().try_into().unwrap();
        assert_eq!(c.pin_file, Some(PathBuf::from("/d/pin \"x\"")));
        assert_eq!(c.pin_env, None);
    }

    /// The simulator checks and makes MACs in software from the run's key
    /// directory: no module, token or PIN of SoftHSM2 in its section.
    #[test]
    fn the_simulator_section_is_danger_software_with_the_key_dir() {
        let r = run(
            MacMechanism::HmacSha256,
            PinSource::Env("FPS_HSM_PIN".into()),
        );
        let c = r.sim_config().unwrap();
        assert_eq!(c.backend, fps_hsm::Backend::DangerSoftware);
        assert_eq!(c.danger_key_dir.as_deref(), Some(r.key_dir.as_path()));
        assert_eq!(c.threads, SIM_HSM_THREADS);
        assert_eq!(c.inline_sessions, SIM_HSM_INLINE_SESSIONS);
        assert_eq!(c.queue_bound, HSM_QUEUE_BOUND);
        assert_eq!(
            (c.module_path, c.token_label, c.pin_env),
            (None, None, None)
        );
        let valid = r.sim_config().unwrap().validate();
        assert!(valid.is_ok(), "{valid:?}");
    }

    #[test]
    fn keys_and_auth_entries() {
        let r = run(MacMechanism::HmacSha256, PinSource::Env("P".into()));
        assert_eq!(r.key().label(), "relay-mac-hmac-42-0a1b2c3d");
        assert_eq!(r.key().mechanism(), Mechanism::HmacSha256);
        assert_eq!(
            r.auth_entry(),
            r#"auth = { mac = { label = "relay-mac-hmac-42-0a1b2c3d", mechanism = "hmac_sha256" } }"#
        );
        let d = r.describe();
        for part in [
            "relay-mac-hmac-42-0a1b2c3d (hmac_sha256)",
            "random 32-byte key",
            "through SoftHSM2 over PKCS#11",
            "imported as relay-mac-hmac-42-0a1b2c3d-v1",
            "in software with the same key bytes",
            "danger_software",
            "not spent on SoftHSM2",
            "destroyed",
        ] {
            assert!(d.contains(part), "{part}: {d}");
        }
        let r = run(MacMechanism::AesCmac, PinSource::Env("P".into()));
        assert_eq!(r.key().mechanism(), Mechanism::AesCmac);
        assert!(r.auth_entry().contains("\"aes_cmac\""));
        assert!(r.describe().contains("random 16-byte key"));
        assert_eq!(MacMechanism::HmacSha256.key_bytes(), 32);
        assert_eq!(MacMechanism::AesCmac.key_bytes(), 16);
    }

    #[test]
    fn hex_is_lowercase_and_whole() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]).as_str(), "000fa5ff");
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(
            fps_hsm::software::decode_hex(&hex(&bytes)).as_deref(),
            Some(bytes.as_slice())
        );
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
