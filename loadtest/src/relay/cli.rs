//! `fps-loadtest compare-relay` options and entry point.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use fps_hsm::PinSource;

use super::mac::{MacMechanism, MacPlan};
use super::search::SearchConfig;
use super::switch::Journal;
use super::{haproxy, ComparePlan, Pinning, Transport};

/// `--budget-s` without `--mac`: three searches per transport (switch,
/// relay, the generator's ceiling).
const DEFAULT_BUDGET_S: u64 = 300;
/// `--budget-s` with `--mac`: a fourth search per transport.
const DEFAULT_MAC_BUDGET_S: u64 = 420;
/// What the generator's ceiling adds to the default budget.
const GENERATOR_CEILING_BUDGET_S: u64 = 60;
/// The development token's label (scripts/softhsm-init).
const DEFAULT_TOKEN: &str = "fps-switch";

/// What the fixed-rate rounds past the first add to the default budget:
/// each system with a fixed-rate run (the switch, HAProxy, the switch with
/// the MAC) once more per round, per transport, each run followed by its
/// drain and at most its settle.
fn extra_rounds_s(fixed_rounds: u32, transports: usize, run_ms: u64, mac: bool) -> u64 {
    let systems = if mac { 3 } else { 2 };
    let extra_ms = u64::from(fixed_rounds.saturating_sub(1)) * systems * transports as u64 * run_ms;
    extra_ms.div_ceil(1000)
}

/// `fps-loadtest compare-relay` options. The defaults keep the whole
/// command (both transports, both systems and the generator's ceiling)
/// within about five minutes.
#[derive(clap::Args, Debug)]
pub struct CompareRelayArgs {
    /// Write the comparison as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Transports to compare.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "plaintext,tls"
    )]
    pub transports: Vec<TransportArg>,
    /// Length of each search step, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub step_ms: u64,
    /// Length of each fixed-rate run (p99 at half the lower maximum), in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub fixed_ms: u64,
    /// Fixed-rate runs per system, the systems taking turns (the p99
    /// reported is the median run's: one run's p99 on this kind of machine
    /// moves by 2-5x between runs of the same binary).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub fixed_rounds: u32,
    /// How long a step waits for its last answers, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub drain_ms: u64,
    /// Longest wait for the system under test to go idle between steps, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub settle_ms: u64,
    /// First rate of each search (requests per second); doubled while it passes.
    #[arg(long, default_value_t = 2000)]
    pub start_rate: u64,
    /// Lowest rate tried when even the start rate fails.
    #[arg(long, default_value_t = 100)]
    pub min_rate: u64,
    /// Highest rate tried.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_rate: u64,
    /// Attempts at a rate before it counts as failed: a rate passes when
    /// any attempt passes. A brief stall of the machine (another process
    /// taking the generator's core for a few hundred ms) fails one attempt;
    /// a rate past the system's capacity fails every one.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub step_attempts: u32,
    /// Most steps of one search.
    #[arg(long, default_value_t = 12)]
    pub max_steps: u32,
    /// Bisection stops when the failing rate is within this fraction above the passing one.
    #[arg(long, default_value_t = 0.1)]
    pub tolerance: f64,
    /// A step passes when every request is answered and p99 is under this (µs).
    #[arg(long, default_value_t = 10_000)]
    pub p99_limit_us: u64,
    /// Load generator connections; each system keeps as many to the bank.
    #[arg(long, default_value_t = 4)]
    pub connections: u64,
    /// Skip the load generator's own ceiling (a search straight to the
    /// simulated bank alone on the system core; issue 6: >= 2x the switch).
    #[arg(long)]
    pub no_generator_ceiling: bool,
    /// Busy polling on both sides: the switch with `switch.busy_poll =
    /// true`, HAProxy with `busy-polling`. Every system but the one being
    /// measured is then stopped (SIGSTOP) while it is measured, since a
    /// polling one would take the shared core.
    #[arg(long)]
    pub busy_poll: bool,
    /// Soft bound on the whole command, in seconds: searches are cut short
    /// to fit [default: 300; 420 with --mac, which adds a search per
    /// transport; 60 less with --no-generator-ceiling; plus the fixed-rate
    /// rounds past the first].
    #[arg(long)]
    pub budget_s: Option<u64>,
    /// Core of the system under test (switch or HAProxy).
    #[arg(long, default_value_t = 0)]
    pub system_core: usize,
    /// Core of the load generator and bank simulator (this process).
    #[arg(long, default_value_t = 1)]
    pub load_core: usize,
    /// Pin nothing (e.g. on a one-core machine); the numbers then mean less.
    #[arg(long)]
    pub no_pin: bool,
    /// The switch's journal: `off`, or its fsync mode. The default, `never`,
    /// journals every transaction but leaves out the disk's fsync latency,
    /// which a relay has no counterpart for (`batch` is the product default).
    #[arg(long, value_enum, default_value_t = JournalArg::Never)]
    pub switch_journal: JournalArg,
    /// Also measure the switch with a MAC on every bank 003 message, both
    /// directions (issue 6: >= 0.6x its rate without): `hmac`
    /// (HMAC-SHA256) or `cmac` (AES-CMAC), with a random key made for the
    /// run and removed after it. The switch MACs and checks through its
    /// [hsm] pool in the SoftHSM2 token of scripts/softhsm-init, where the
    /// key is imported; the simulator checks and MACs in software with the
    /// same key, so the load core is not spent on SoftHSM2. SOFTHSM2_CONF
    /// (target/softhsm/softhsm2.conf) and the PIN must be in the
    /// environment (scripts/compare-relay sets both).
    #[arg(long, value_enum, default_value_t = MacArg::Off)]
    pub mac: MacArg,
    /// PKCS#11 module of the switch's MAC key (default: $FPS_HSM_MODULE,
    /// else SoftHSM2's usual paths).
    #[arg(long)]
    pub hsm_module: Option<PathBuf>,
    /// Label of the token the run's MAC key goes into (default: $FPS_HSM_TOKEN, else fps-switch).
    #[arg(long)]
    pub hsm_token: Option<String>,
    /// Environment variable holding the token's user PIN (this process and
    /// the switch read it).
    #[arg(long, default_value = "FPS_HSM_PIN")]
    pub hsm_pin_env: String,
    /// File holding the user PIN, instead of --hsm-pin-env.
    #[arg(long)]
    pub hsm_pin_file: Option<PathBuf>,
    /// The MAC switch's `[hsm] inline_sessions`: sessions its runtime
    /// thread uses directly, without handing each operation to the HSM
    /// worker thread and the reply back (two thread switches on the one
    /// core). 0 measures the worker pool alone.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=4))]
    pub hsm_inline_sessions: u8,
    /// The fps-switch binary (default: next to this executable).
    #[arg(long)]
    pub switch_bin: Option<PathBuf>,
    /// The haproxy binary (default: on PATH or in /usr/sbin).
    #[arg(long)]
    pub haproxy: Option<PathBuf>,
    /// Keep configs, certificates and logs in this directory.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// No line per step on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// `--transports` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportArg {
    /// Plaintext on both legs.
    Plaintext,
    /// TLS on both legs.
    Tls,
}

/// `--mac` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacArg {
    /// No MAC run.
    Off,
    /// HMAC-SHA256 (a 32-byte key), as bank 003 of the dev configs.
    Hmac,
    /// AES-CMAC (an AES-128 key), as bank 004 of the dev configs.
    Cmac,
}

/// `--switch-journal` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalArg {
    /// No journal.
    Off,
    /// fdatasync after every record.
    Always,
    /// Group commit (the switch's default).
    Batch,
    /// No fdatasync.
    Never,
}

/// Run `fps-loadtest compare-relay`: print the table, write the JSON.
/// True when both systems sustained some rate on every transport.
pub async fn main(a: CompareRelayArgs) -> anyhow::Result<bool> {
    let mac = mac_plan(&a, |var| std::env::var_os(var));
    let haproxy_bin = haproxy::find_binary(a.haproxy.as_deref()).with_context(|| {
        "haproxy not found: install it (apt-get install haproxy) or pass --haproxy PATH"
    })?;
    let switch_bin = match a.switch_bin {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("fps-switch"),
    };
    if !switch_bin.is_file() {
        anyhow::bail!(
            "{} not found: build it (cargo build --release -p fps-switch) or pass --switch-bin",
            switch_bin.display()
        );
    }
    let budget_s = a.budget_s.unwrap_or_else(|| {
        let full = if mac.is_some() {
            DEFAULT_MAC_BUDGET_S
        } else {
            DEFAULT_BUDGET_S
        };
        let searches = if a.no_generator_ceiling {
            full - GENERATOR_CEILING_BUDGET_S
        } else {
            full
        };
        searches
            + extra_rounds_s(
                a.fixed_rounds,
                a.transports.len(),
                a.fixed_ms + a.drain_ms + a.settle_ms,
                mac.is_some(),
            )
    });
    let plan = ComparePlan {
        switch_bin,
        haproxy_bin,
        transports: a
            .transports
            .iter()
            .map(|t| match t {
                TransportArg::Plaintext => Transport::Plaintext,
                TransportArg::Tls => Transport::Tls,
            })
            .collect(),
        search: SearchConfig {
            start_rate: a.start_rate,
            min_rate: a.min_rate,
            max_rate: a.max_rate,
            max_steps: a.max_steps,
            tolerance: a.tolerance,
        },
        step: Duration::from_millis(a.step_ms),
        step_attempts: a.step_attempts,
        fixed: Duration::from_millis(a.fixed_ms),
        fixed_rounds: a.fixed_rounds,
        drain: Duration::from_millis(a.drain_ms),
        settle: Duration::from_millis(a.settle_ms),
        p99_limit_us: a.p99_limit_us,
        connections: a.connections.max(1),
        pinning: (!a.no_pin).then_some(Pinning {
            system_core: a.system_core,
            load_core: a.load_core,
        }),
        journal: match a.switch_journal {
            JournalArg::Off => Journal::Off,
            JournalArg::Always => Journal::Always,
            JournalArg::Batch => Journal::Batch,
            JournalArg::Never => Journal::Never,
        },
        mac,
        generator_ceiling: !a.no_generator_ceiling,
        busy_poll: a.busy_poll,
        budget: Duration::from_secs(budget_s),
        work_dir: a.work_dir,
        progress: !a.quiet,
    };
    let comparison = super::compare(&plan).await?;
    println!("{comparison}");
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&comparison)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let sustained = [&comparison.plaintext, &comparison.tls]
        .into_iter()
        .flatten()
        .all(|r| r.switch_tps > 0 && r.relay_tps > 0 && r.switch_mac_tps != Some(0));
    Ok(sustained)
}

/// The MAC run of `a` (`None` for `--mac off`), with what the options
/// leave open taken from the environment (`env`: `std::env::var_os`).
fn mac_plan(
    a: &CompareRelayArgs,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<MacPlan> {
    let mechanism = match a.mac {
        MacArg::Off => return None,
        MacArg::Hmac => MacMechanism::HmacSha256,
        MacArg::Cmac => MacMechanism::AesCmac,
    };
    let module = a
        .hsm_module
        .clone()
        .or_else(|| env("FPS_HSM_MODULE").map(PathBuf::from))
        .or_else(fps_hsm::pkcs11::installed_softhsm2)
        // Not there: the preflight check says so, naming --hsm-module.
        .unwrap_or_else(|| PathBuf::from(fps_hsm::pkcs11::SOFTHSM2_MODULES[0]));
    let token = a
        .hsm_token
        .clone()
        .or_else(|| env("FPS_HSM_TOKEN").and_then(|t| t.into_string().ok()))
        .unwrap_or_else(|| DEFAULT_TOKEN.to_owned());
    let pin = match &a.hsm_pin_file {
        Some(p) => PinSource::File(p.clone()),
        None => PinSource::Env(a.hsm_pin_env.clone()),
    };
    Some(MacPlan {
        mechanism,
        module,
        token,
        pin,
        softhsm2_conf: env("SOFTHSM2_CONF").map(PathBuf::from),
        inline_sessions: usize::from(a.hsm_inline_sessions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: CompareRelayArgs,
    }

    fn parse(args: &[&str]) -> Result<CompareRelayArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("compare-relay").chain(args.iter().copied()))
            .map(|c| c.args)
    }

    #[test]
    fn fixed_rounds_are_three_by_default_and_bounded() {
        assert_eq!(parse(&[]).unwrap().fixed_rounds, 3);
        assert_eq!(parse(&["--fixed-rounds", "1"]).unwrap().fixed_rounds, 1);
        for bad in ["0", "10"] {
            let e = parse(&["--fixed-rounds", bad]).unwrap_err().to_string();
            assert!(e.contains("--fixed-rounds"), "{e}");
        }
        // Two more rounds of two systems on two transports, 8 s each.
        assert_eq!(extra_rounds_s(3, 2, 8_000, false), 64);
        // A third system with --mac; one round adds nothing.
        assert_eq!(extra_rounds_s(3, 1, 8_000, true), 48);
        assert_eq!(extra_rounds_s(1, 2, 8_000, true), 0);
    }

    #[test]
    fn mac_is_off_by_default() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.mac, MacArg::Off);
        assert_eq!(a.budget_s, None);
        assert_eq!(mac_plan(&a, |_| None), None);
    }

    #[test]
    fn mac_options_parse() {
        let a = parse(&["--mac", "hmac", "--transports", "plaintext"]).unwrap();
        assert_eq!(a.mac, MacArg::Hmac);
        let env = |var: &str| match var {
            "FPS_HSM_MODULE" => Some("/env/libsofthsm2.so".into()),
            "FPS_HSM_TOKEN" => Some("env-token".into()),
            "SOFTHSM2_CONF" => Some("/env/softhsm2.conf".into()),
            _ => None,
        };
        let p = mac_plan(&a, env).unwrap();
        assert_eq!(p.mechanism, MacMechanism::HmacSha256);
        assert_eq!(p.module, PathBuf::from("/env/libsofthsm2.so"));
        assert_eq!(p.token, "env-token");
        assert_eq!(p.pin, PinSource::Env("FPS_HSM_PIN".into()));
        assert_eq!(p.softhsm2_conf, Some(PathBuf::from("/env/softhsm2.conf")));

        // Options win over the environment.
        let a = parse(&[
            "--mac=cmac",
            "--hsm-module",
            "/opt/m.so",
            "--hsm-token",
            "t",
            "--hsm-pin-file",
            "/run/pin",
            "--budget-s",
            "60",
        ])
        .unwrap();
        assert_eq!(a.budget_s, Some(60));
        let p = mac_plan(&a, env).unwrap();
        assert_eq!(p.mechanism, MacMechanism::AesCmac);
        assert_eq!(p.module, PathBuf::from("/opt/m.so"));
        assert_eq!(p.token, "t");
        assert_eq!(p.pin, PinSource::File("/run/pin".into()));

        let p = mac_plan(&parse(&["--mac", "hmac"]).unwrap(), |_| None).unwrap();
        assert_eq!(p.token, DEFAULT_TOKEN);
        assert_eq!(p.softhsm2_conf, None);
        assert!(fps_hsm::pkcs11::SOFTHSM2_MODULES.contains(&p.module.to_str().unwrap()));

        assert!(parse(&["--mac", "rsa"]).is_err());
    }
}
