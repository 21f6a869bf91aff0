//! `fps-loadtest compare-relay`: the relay baseline (issue 6, item 4).
//!
//! The same open-loop load, through the same bank simulator, goes (a) via
//! the switch and (b) via HAProxy in TCP mode, which relays the frames
//! unchanged; once with plaintext on both legs and once with TLS on both
//! (client certificates required on both legs, so both systems do the same
//! crypto work). The bank is the canonical ISO 8583 bank 003 (binary2
//! framing): the load generator's frames are what it expects, so the relay
//! needs no translation, while the switch decodes, routes by F100 = 003,
//! journals, re-encodes with its own identifiers and maps the answer back.
//!
//! For each system a short search ([`search`]) finds the highest rate it
//! sustains (every request answered, p99 under the limit), then both run at
//! one fixed rate, half the lower of the two maxima, for a like-for-like
//! p99: `--fixed-rounds` runs each (3 by default), the systems taking
//! turns, the median run's p99 reported (one run's p99 on a 2-vCPU VM
//! moves by 2-5x between runs of the same binary), with every run's p99
//! and each system's CPU time per transaction at that rate: a comparison
//! of cost that holds even where the load generator's core, not the
//! system's, bounds a maximum. The system under test gets core 0
//! (`taskset -c`), the load generator and the simulator (this process,
//! `taskset -a -p`) core 1.
//! A last run at the same fixed rate goes straight to the bank: the floor
//! the generator and the simulator add by themselves. The switch journals
//! with `fsync = "never"` by default: every record is written, but the
//! disk's fsync latency, which a relay has no counterpart for, is left out
//! (`--switch-journal batch` puts it back).
//!
//! With `--mac hmac` (or `cmac`) a second switch runs beside the first,
//! with bank 003's messages MACed in both directions: the switch MACs each
//! request and checks each answer through SoftHSM2 (its PKCS#11 `[hsm]`
//! pool), a second simulator checks each request and MACs each answer in
//! software with the same key (made for the run and removed after it), so
//! the load generator's core it shares is not spent on SoftHSM2. Its
//! maximum is searched right after the plain switch's, in the same way,
//! and reported as `mac_ratio = switch_mac_tps / switch_tps` (issue 6:
//! >= 0.6), with its p99 at the same fixed rate. See [`mac`].
//!
//! Last, unless `--no-generator-ceiling`, the load generator's own maximum
//! against the simulated bank alone on the system core ([`peer`]), reported
//! as `generator_ratio = generator_tps / switch_tps` (issue 6: >= 2).
//!
//! Entry point: [`main`] (`compare-relay` options: [`CompareRelayArgs`]).
//! Modules: [`search`] (sans-I/O), [`haproxy`] and [`switch`] (configs and
//! processes), [`peer`] (the generator's ceiling), [`mac`] (the MAC run's
//! keys and checks), [`process`]
//! (children, pinning, CPU), [`output`] (JSON and table).

mod cli;
pub mod haproxy;
pub mod mac;
pub mod output;
pub mod peer;
pub mod process;
pub mod search;
pub mod switch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::banksim::{BankSim, SimConfig};
use crate::load;
use crate::report::Report;
pub use cli::{main, CompareRelayArgs, JournalArg, MacArg, TransportArg};
use mac::{HsmUser, MacPlan, MacRun};
use output::{
    Comparison, FixedRun, MacAuthFailures, Settings, Step, SystemResult, TransportResult,
};
use process::{CpuMeter, Machine, Supervised};
use search::{RateSearch, SearchConfig};

/// Name of the simulated bank both systems reach (and its certificate).
pub const BANK_NAME: &str = "bank003";
/// Its code (F100).
pub const BANK_CODE: &str = "003";
/// The DNS name in the bank's certificate.
pub const BANK_DNS: &str = "bank003.fps.test";
/// The name in the switch's (and the relay's) server certificate.
pub const SERVER_DNS: &str = "switch.fps.test";
/// Length of the warm-up run before each search.
const WARM_UP: Duration = Duration::from_secs(1);
/// Longest wait for a system to answer cleanly again after a failed step.
const RECOVER_LIMIT: Duration = Duration::from_secs(10);
/// One light-load probe of that wait (and the pause between two).
const RECOVER_PROBE: Duration = Duration::from_millis(300);
/// Time a system may take to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Time reserved for starting and stopping the processes of one transport.
const START_RESERVE: Duration = Duration::from_secs(5);
/// Names of the systems under test (progress lines, table notes).
const SWITCH: &str = "switch";
/// The switch with bank 003's messages MACed (`--mac`).
const SWITCH_MAC: &str = "switch+mac";
/// HAProxy.
const RELAY: &str = "relay";
/// The load generator against the simulated bank alone (its ceiling).
const GENERATOR: &str = "generator";

/// Plaintext or TLS on both legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plaintext TCP on both legs.
    Plaintext,
    /// TLS 1.3 on both legs, client certificates on both.
    Tls,
}

impl Transport {
    /// `plaintext` or `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Plaintext => "plaintext",
            Transport::Tls => "tls",
        }
    }
}

/// Cores of the system under test and of the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinning {
    /// Core of the switch or HAProxy.
    pub system_core: usize,
    /// Core of this process (load generator and bank simulator).
    pub load_core: usize,
}

/// What to compare, and how.
#[derive(Debug, Clone)]
pub struct ComparePlan {
    /// The `fps-switch` binary.
    pub switch_bin: PathBuf,
    /// The `haproxy` binary.
    pub haproxy_bin: PathBuf,
    /// Transports to compare, in order.
    pub transports: Vec<Transport>,
    /// Rate search settings.
    pub search: SearchConfig,
    /// Length of each search step.
    pub step: Duration,
    /// Attempts at a rate before it fails (a rate passes when any does).
    pub step_attempts: u32,
    /// Length of each fixed-rate run.
    pub fixed: Duration,
    /// Fixed-rate runs per system (1..=9), the systems taking turns.
    pub fixed_rounds: u32,
    /// How long a step waits for its last answers.
    pub drain: Duration,
    /// Longest wait for the system to go idle after a step.
    pub settle: Duration,
    /// A step passes when p99 is under this.
    pub p99_limit_us: u64,
    /// Load generator connections (and links to the bank).
    pub connections: u64,
    /// `None`: nothing pinned.
    pub pinning: Option<Pinning>,
    /// The switch's journal.
    pub journal: switch::Journal,
    /// `Some`: also measure the switch with this MAC on bank 003 (a key
    /// of its own is made for the run, see [`mac::preflight`]).
    pub mac: Option<MacPlan>,
    /// Also search the load generator's own maximum against the simulated
    /// bank alone on the system core ([`peer`]).
    pub generator_ceiling: bool,
    /// Busy polling in the switch and HAProxy; the systems not being
    /// measured are stopped meanwhile (`--busy-poll`).
    pub busy_poll: bool,
    /// Soft bound on the whole comparison: searches are cut short to fit.
    pub budget: Duration,
    /// Keep the work directory (configs, certificates, logs) here instead
    /// of a temporary one that is removed at the end.
    pub work_dir: Option<PathBuf>,
    /// One line per step on stderr.
    pub progress: bool,
}

/// Run the comparison. The processes it starts are stopped on every path
/// (killed when an error unwinds past them, or on SIGINT / SIGTERM), and
/// the MAC run's key is destroyed after them.
pub async fn compare(plan: &ComparePlan) -> anyhow::Result<Comparison> {
    plan.search.validate().map_err(anyhow::Error::msg)?;
    if plan.transports.is_empty() {
        bail!("--transports: at least one of plaintext, tls");
    }
    if plan.step.is_zero() || plan.fixed.is_zero() {
        bail!("--step-ms and --fixed-ms must be positive");
    }
    // Before anything starts: a missing token or PIN is named now, not as
    // a switch that fails to start minutes later. Held to the end: its
    // drop destroys the run's key, once every process using it is gone.
    let mac_key = match &plan.mac {
        Some(m) => Some(mac::preflight(m).await?),
        None => None,
    };
    let machine = Machine::probe(&plan.haproxy_bin);
    if let Some(p) = plan.pinning {
        for core in [p.system_core, p.load_core] {
            if core >= machine.cores {
                bail!(
                    "cannot pin to core {core}: this machine has {} (use --no-pin)",
                    machine.cores
                );
            }
        }
        process::pin_self(p.load_core)?;
    }
    let (dir, temporary) = match &plan.work_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("fps-compare-relay-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mac_run = mac_key.as_ref().map(mac::RunKey::run);
    // On a signal the comparison is dropped: its processes are killed and
    // the key is removed below, instead of the signal ending us first.
    let result = tokio::select! {
        r = compare_in(plan, mac_run, machine, &dir) => r,
        signal = interrupted() => Err(anyhow::anyhow!("{signal}: comparison stopped")),
    };
    drop(mac_key);
    match &result {
        Ok(_) if temporary => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(_) => {}
        Err(_) => eprintln!("compare-relay: configs and logs kept in {}", dir.display()),
    }
    result
}

/// SIGINT or SIGTERM arrived (its name); never, if they cannot be caught.
async fn interrupted() -> &'static str {
    let int = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = int => "SIGINT",
        _ = term => "SIGTERM",
    }
}

async fn compare_in(
    plan: &ComparePlan,
    mac: Option<&MacRun>,
    machine: Machine,
    dir: &Path,
) -> anyhow::Result<Comparison> {
    let started = Instant::now();
    let deadline = started + plan.budget;
    let pki = dir.join("pki");
    crate::pki::generate(&crate::pki::PkiPlan {
        out: pki.clone(),
        banks: vec![BANK_NAME.to_owned()],
        force: false,
    })?;
    let mut comparison = Comparison {
        machine,
        settings: settings(plan, mac),
        plaintext: None,
        tls: None,
        elapsed_s: 0.0,
    };
    for (i, &transport) in plan.transports.iter().enumerate() {
        let left = Left {
            transports: plan.transports.len() - i,
            deadline,
        };
        let sub = dir.join(transport.as_str());
        std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        let r = compare_transport(plan, mac, transport, &pki, &sub, left).await?;
        match transport {
            Transport::Plaintext => comparison.plaintext = Some(r),
            Transport::Tls => comparison.tls = Some(r),
        }
    }
    comparison.elapsed_s = output::round3(started.elapsed().as_secs_f64());
    Ok(comparison)
}

/// What is left of the budget.
#[derive(Debug, Clone, Copy)]
struct Left {
    /// Transports left, this one included.
    transports: usize,
    deadline: Instant,
}

/// The certificate files of the development PKI in `pki`.
struct Pki<'a>(&'a Path);

impl Pki<'_> {
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

/// Where a run's load goes: a system under test (running), or the bank
/// itself (no process of its own: the floor of the measurement).
struct System {
    /// `switch`, `switch+mac`, `relay` or `direct`.
    name: &'static str,
    target: SocketAddr,
    tls: Option<load::TlsTarget>,
    process: Option<Supervised>,
}

impl System {
    /// Whether it busy-polls: the switches and HAProxy under `--busy-poll`.
    fn polls(&self, plan: &ComparePlan) -> bool {
        plan.busy_poll && matches!(self.name, SWITCH | SWITCH_MAC | RELAY)
    }

    /// Wait (up to `plan.settle`) for the system's process to go idle
    /// (nothing to wait for without one). A polling process never goes
    /// idle: it gets a short pause to finish its background work instead.
    async fn settle(&self, plan: &ComparePlan) {
        match &self.process {
            Some(_) if self.polls(plan) => {
                tokio::time::sleep(plan.settle.min(POLLING_SETTLE)).await;
            }
            Some(p) => process::settle(p.pid(), plan.settle).await,
            None => {}
        }
    }
}

/// How long a busy-polling system is given to settle between steps.
const POLLING_SETTLE: Duration = Duration::from_millis(500);

/// With `--busy-poll`, let only `systems[run]` have the system core: every
/// other one is stopped (SIGSTOP) and this one continued (SIGCONT). A
/// no-op without it.
fn isolate(plan: &ComparePlan, systems: &[System], run: usize) -> anyhow::Result<()> {
    if !plan.busy_poll {
        return Ok(());
    }
    for (i, sys) in systems.iter().enumerate() {
        if let Some(p) = &sys.process {
            if i == run {
                p.resume()?;
            } else {
                p.pause()?;
            }
        }
    }
    Ok(())
}

async fn compare_transport(
    plan: &ComparePlan,
    mac: Option<&MacRun>,
    transport: Transport,
    pki_dir: &Path,
    dir: &Path,
    left: Left,
) -> anyhow::Result<TransportResult> {
    let pki = Pki(pki_dir);
    let tls = transport == Transport::Tls;
    let core = plan.pinning.map(|p| p.system_core);

    // The bank simulator, in this process (on the load generator's core).
    let sim = BankSim::bind(&sim_config(tls.then_some(&pki), None, None)?).await?;
    let bank = sim
        .bank_addr(BANK_NAME)
        .context("the bank simulator has no bank003 listener")?;
    let (stop_sim, sim_stopped) = tokio::sync::oneshot::channel::<()>();
    let sim_task = tokio::spawn(sim.run(async move {
        let _ = sim_stopped.await;
    }));
    // With --mac, a second one whose bank 003 checks and makes MACs (in
    // software, with the run's key).
    let mac_sim = match mac {
        None => None,
        Some(m) => {
            let sim = BankSim::bind(&sim_config(tls.then_some(&pki), Some(m), None)?)
                .await
                .context("the bank simulator with the MAC")?;
            let bank = sim
                .bank_addr(BANK_NAME)
                .context("the MAC bank simulator has no bank003 listener")?;
            let ledger = sim.http_addr();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(sim.run(async move {
                let _ = stopped.await;
            }));
            Some((bank, ledger, stop, task))
        }
    };

    let switch_spec = switch::SwitchSpec {
        listen: process::free_port()?,
        admin: process::free_port()?,
        bank,
        links: plan.connections,
        tls: tls.then(|| switch::SwitchTls {
            cert: pki.file("switch.crt"),
            key: pki.file("switch.key"),
            ca: pki.file("ca.crt"),
            client_cert: pki.file("switch-client.crt"),
            client_key: pki.file("switch-client.key"),
            bank_name: BANK_DNS.to_owned(),
        }),
        journal: plan.journal,
        journal_dir: dir.join("journal"),
        mac: None,
        busy_poll: plan.busy_poll,
    };
    let mac_spec = match (mac, &mac_sim) {
        (Some(m), Some((mac_bank, ..))) => Some(switch::SwitchSpec {
            listen: process::free_port()?,
            admin: process::free_port()?,
            bank: *mac_bank,
            journal_dir: dir.join("journal-mac"),
            mac: Some(m.clone()),
            ..switch_spec.clone()
        }),
        _ => None,
    };
    let relay_tls = if tls {
        let server_pem = dir.join("relay-server.pem");
        let client_pem = dir.join("relay-client.pem");
        haproxy::write_combined_pem(
            &pki.file("switch.crt"),
            &pki.file("switch.key"),
            &server_pem,
        )?;
        haproxy::write_combined_pem(
            &pki.file("switch-client.crt"),
            &pki.file("switch-client.key"),
            &client_pem,
        )?;
        Some(haproxy::RelayTls {
            server_pem,
            ca: pki.file("ca.crt"),
            client_pem,
            bank_name: BANK_DNS.to_owned(),
        })
    } else {
        None
    };
    let relay_spec = haproxy::RelaySpec {
        listen: process::free_port()?,
        bank,
        tls: relay_tls,
        busy_poll: plan.busy_poll,
    };
    // The gateway's client certificate on every first leg.
    let load_tls = |server: &str| -> anyhow::Result<Option<load::TlsTarget>> {
        if !tls {
            return Ok(None);
        }
        Ok(Some(load::TlsTarget {
            config: crate::tls::client_config(
                &pki.file("ca.crt"),
                Some((&pki.file("gateway.crt"), &pki.file("gateway.key"))),
            )?,
            server_name: crate::tls::server_name(server)?,
        }))
    };

    let switch = switch::start("switch", &plan.switch_bin, &switch_spec, dir, core).await?;
    let mut systems = vec![System {
        name: SWITCH,
        target: switch_spec.listen,
        tls: load_tls(SERVER_DNS)?,
        process: Some(switch),
    }];
    // The MAC switch searched right after the plain one: this machine's
    // speed drifts, and mac_ratio compares the two.
    if let Some(spec) = &mac_spec {
        let p = switch::start("switch-mac", &plan.switch_bin, spec, dir, core).await?;
        systems.push(System {
            name: SWITCH_MAC,
            target: spec.listen,
            tls: load_tls(SERVER_DNS)?,
            process: Some(p),
        });
    }
    let relay = haproxy::start(&plan.haproxy_bin, &relay_spec, dir, core).await?;
    systems.push(System {
        name: RELAY,
        target: relay_spec.listen,
        tls: load_tls(SERVER_DNS)?,
        process: Some(relay),
    });
    if plan.generator_ceiling {
        let listen = process::free_port()?;
        let toml = sim_toml(tls.then_some(&pki), None, Some(listen));
        let exe = std::env::current_exe().context("the fps-loadtest executable")?;
        let p = peer::start(&exe, &toml, listen, dir, core).await?;
        systems.push(System {
            name: GENERATOR,
            target: listen,
            tls: load_tls(BANK_DNS)?,
            process: Some(p),
        });
    }

    let per_transport = systems.len();
    let mut results = Vec::with_capacity(per_transport);
    for i in 0..per_transport {
        isolate(plan, &systems, i)?;
        let sys = &mut systems[i];
        // Share what is left between the searches still to run, keeping
        // room for the fixed-rate runs and the other transports' start-up.
        let searches_left = (left.transports * per_transport - i) as u32;
        let fixed_left = (plan.fixed + plan.drain + Duration::from_secs(1)) * plan.fixed_rounds;
        let reserve = fixed_left * (left.transports * per_transport) as u32
            + START_RESERVE * (left.transports - 1) as u32;
        let now = Instant::now();
        let share = left
            .deadline
            .saturating_duration_since(now)
            .saturating_sub(reserve)
            / searches_left;
        let search_deadline = now + share;
        results.push(search_system(plan, transport, sys, search_deadline).await?);
    }

    // Half the lower of the switch's and the relay's maxima, as without
    // --mac; the MAC switch is measured at the same rate as the switch.
    let max_of = |name: &str| {
        systems
            .iter()
            .zip(&results)
            .find(|(s, _)| s.name == name)
            .map_or(0, |(_, r)| r.max_tps)
    };
    let fixed_rate = fixed_rate(
        [max_of(SWITCH), max_of(RELAY)].into_iter(),
        plan.search.min_rate,
    );
    // The generator's maximum is what it is for: no like-for-like p99.
    let measured: Vec<usize> = (0..systems.len())
        .filter(|&i| systems[i].name != GENERATOR)
        .collect();
    let mut runs: Vec<Vec<(Report, FixedRun)>> = vec![Vec::new(); systems.len()];
    // Bounded: fixed_rounds (1..=9) rounds of one run per measured system.
    for round in 0..plan.fixed_rounds.max(1) {
        for i in round_order(&measured, round) {
            isolate(plan, &systems, i)?;
            let sys = &mut systems[i];
            // Its search, or its last round (the MAC switch's fixed rate
            // may be above its maximum), may have ended overloaded.
            recover(plan, sys, fixed_rate.min(plan.search.start_rate)).await?;
            runs[i].push(fixed_run(plan, transport, sys, fixed_rate).await?);
            sys.settle(plan).await;
        }
    }
    for (res, runs) in results.iter_mut().zip(runs) {
        let (fixed, fixed_runs) = output::median_run(runs);
        res.fixed = fixed;
        res.fixed_runs = fixed_runs;
    }
    // Both sides' counts of refused MACs, before the processes go.
    let mac_auth_failures = match (&mac_spec, &mac_sim) {
        (Some(spec), Some((_, ledger, ..))) => Some(MacAuthFailures {
            bank: process::http_get(*ledger, "/ledger?summary")
                .await
                .ok()
                .and_then(|(_, body)| mac::ledger_auth_failures(&body)),
            switch: process::http_get(spec.admin, "/metrics")
                .await
                .ok()
                .and_then(|(_, body)| mac::counter_sum(&body, mac::SWITCH_AUTH_FAILURES_METRIC)),
        }),
        _ => None,
    };
    for sys in systems.drain(..) {
        if let Some(p) = sys.process {
            p.stop(STOP_GRACE).await;
        }
    }
    if let Some((_, _, stop, task)) = mac_sim {
        let _ = stop.send(());
        let _ = task.await;
    }
    // The same rate straight to the bank: what the load generator and the
    // simulator add by themselves, with neither system in between.
    let mut direct = System {
        name: "direct",
        target: bank,
        tls: load_tls(BANK_DNS)?,
        process: None,
    };
    let (direct, _) = fixed_run(plan, transport, &mut direct, fixed_rate).await?;
    let _ = stop_sim.send(());
    let _ = sim_task.await;

    let mut results = results.into_iter();
    let (Some(switch_res), switch_mac_res, Some(relay_res), generator_res) = (
        results.next(),
        if mac_spec.is_some() {
            results.next()
        } else {
            None
        },
        results.next(),
        results.next(),
    ) else {
        bail!("one result per system");
    };
    let p99 = |r: &SystemResult| r.fixed.as_ref().map(|f| f.p99_us);
    Ok(TransportResult {
        switch_cpu_us_per_txn: output::median_cpu_us_per_txn(&switch_res.fixed_runs),
        relay_cpu_us_per_txn: output::median_cpu_us_per_txn(&relay_res.fixed_runs),
        switch_tps: switch_res.max_tps,
        relay_tps: relay_res.max_tps,
        ratio: output::ratio(switch_res.max_tps, relay_res.max_tps),
        switch_p99_us: p99(&switch_res),
        relay_p99_us: p99(&relay_res),
        fixed_rate_tps: fixed_rate,
        direct_p99_us: direct.p99_us,
        switch_mac_tps: switch_mac_res.as_ref().map(|r| r.max_tps),
        mac_ratio: switch_mac_res
            .as_ref()
            .and_then(|r| output::ratio(r.max_tps, switch_res.max_tps)),
        switch_mac_p99_us: switch_mac_res.as_ref().and_then(p99),
        mac_auth_failures,
        generator_tps: generator_res.as_ref().map(|r| r.max_tps),
        generator_ratio: generator_res
            .as_ref()
            .and_then(|r| output::ratio(r.max_tps, switch_res.max_tps)),
        generator: generator_res,
        direct,
        switch: switch_res,
        relay: relay_res,
        switch_mac: switch_mac_res,
    })
}

/// One fixed-rate run of `plan.fixed`, reported on stderr.
async fn fixed_run(
    plan: &ComparePlan,
    transport: Transport,
    sys: &mut System,
    rate: u64,
) -> anyhow::Result<(Report, FixedRun)> {
    let (report, step) = run_step(plan, sys, rate, plan.fixed).await?;
    let run = FixedRun::of(&report, &step);
    if plan.progress {
        eprintln!(
            "compare-relay: {} {:<6} fixed {:>7} TPS: p99 {} µs, cpu system {}{}",
            transport.as_str(),
            sys.name,
            rate,
            report.p99_us,
            run.cpu_us_per_txn.map_or_else(
                || "?".to_owned(),
                |us| format!("{us:.1} µs per transaction")
            ),
            step.why.map_or_else(String::new, |w| format!(" ({w})"))
        );
    }
    Ok((report, run))
}

/// The order of the systems in fixed-rate round `round`: as listed, then
/// reversed, and so on, so that no system always runs right after the
/// same one (or always first, on a machine still settling).
fn round_order(measured: &[usize], round: u32) -> Vec<usize> {
    let mut order = measured.to_vec();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// Warm up, then search for the highest sustainable rate until the search
/// converges, runs out of steps or reaches `deadline`.
async fn search_system(
    plan: &ComparePlan,
    transport: Transport,
    sys: &mut System,
    deadline: Instant,
) -> anyhow::Result<SystemResult> {
    // Connections, links and caches warm; and proof that answers come back.
    let warm_rate = (plan.search.start_rate / 2).max(plan.search.min_rate);
    let (warm, _) = run_step(plan, sys, warm_rate, WARM_UP).await?;
    if warm.answered == 0 {
        bail!(
            "{} ({}): no answer at all during the warm-up at {warm_rate} TPS:\n{warm}",
            sys.name,
            transport.as_str()
        );
    }
    sys.settle(plan).await;

    let mut search = RateSearch::new(plan.search);
    let mut steps = Vec::new();
    let step_cost = plan.step + plan.drain + Duration::from_millis(500);
    let mut out_of_time = false;
    while let Some(rate) = search.next_rate() {
        if Instant::now() + step_cost > deadline && !steps.is_empty() {
            out_of_time = true;
            break;
        }
        // Bounded: at most step_attempts (1..=5) runs of this rate.
        let mut passed = false;
        for attempt in 1..=plan.step_attempts.max(1) {
            if attempt > 1 && Instant::now() + step_cost > deadline {
                // No time for another try within the budget: the rate
                // counts as failed and the search as cut short.
                out_of_time = true;
                break;
            }
            let (_, step) = run_step(plan, sys, rate, plan.step).await?;
            if plan.progress {
                eprintln!(
                    "compare-relay: {} {:<6} {:>7} TPS: {} p99 {} µs, cpu system {} generator {}{}{}",
                    transport.as_str(),
                    sys.name,
                    rate,
                    if step.passed { "pass" } else { "FAIL" },
                    step.p99_us,
                    pct(step.system_cpu),
                    pct(step.generator_cpu),
                    step.why
                        .as_ref()
                        .map_or_else(String::new, |w| format!(" ({w})")),
                    if attempt > 1 { format!(" [attempt {attempt}]") } else { String::new() }
                );
            }
            passed = step.passed;
            steps.push(step);
            sys.settle(plan).await;
            if passed {
                break;
            }
            recover(plan, sys, warm_rate).await?;
        }
        search.record(rate, passed);
    }
    let lowest_failed = search.lowest_failed();
    let limited_by = steps
        .iter()
        .find(|s| Some(s.rate_tps) == lowest_failed && !s.passed)
        .and_then(output::limited_by)
        .map(str::to_owned);
    Ok(SystemResult {
        max_tps: search.best(),
        lowest_failed_tps: lowest_failed,
        converged: !out_of_time && !search.out_of_steps(),
        limited_by,
        steps,
        fixed: None,
        fixed_runs: Vec::new(),
    })
}

/// After a failed step: wait until the system answers a light load cleanly
/// again, so that the next step measures its capacity, not the aftermath
/// of the last one. An overloaded switch opens its circuit breaker to the
/// bank (timeouts), answers 91 until a half-open probe succeeds, and
/// without this the next attempt failed on those 91s alone (32,000 of
/// 32,000 answers at a rate it then passed). Bounded by [`RECOVER_LIMIT`];
/// a system still failing then is measured as it is.
async fn recover(plan: &ComparePlan, sys: &mut System, rate: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECOVER_LIMIT;
    while Instant::now() < deadline {
        let (_, probe) = run_step(plan, sys, rate, RECOVER_PROBE).await?;
        if probe.passed {
            break;
        }
        tokio::time::sleep(RECOVER_PROBE).await;
    }
    sys.settle(plan).await;
    Ok(())
}

/// The rate of the fixed-rate runs: half the lower of the maxima, both
/// systems at the same rate. A system that sustained nothing counts as
/// sustaining the lowest rate tried, so the other is still measured.
fn fixed_rate(maxima: impl Iterator<Item = u64>, min_rate: u64) -> u64 {
    let lower = maxima
        .map(|m| if m == 0 { min_rate } else { m })
        .min()
        .unwrap_or(min_rate);
    (lower / 2).max(1)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "?".to_owned(), |x| format!("{:.0}%", x * 100.0))
}

/// One open-loop run at `rate` for `duration` against `sys`, with the CPU
/// both sides used. A run that cannot even start (refused connection) is a
/// failed step, unless the system has exited, which is an error.
async fn run_step(
    plan: &ComparePlan,
    sys: &mut System,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<(Report, Step)> {
    let load_plan = load::Plan {
        target: sys.target,
        tls: sys.tls.clone(),
        mode: load::Mode::Open { rate },
        duration,
        connections: plan.connections,
        banks: load::parse_banks(&[BANK_CODE.to_owned()])?,
        mix: crate::schedule::Mix::default(),
        proxy_directory: Default::default(),
        drain: plan.drain,
        progress: false,
    };
    let system_cpu = sys.process.as_ref().map(|p| CpuMeter::start(Some(p.pid())));
    let generator_cpu = CpuMeter::start(None);
    let outcome = load::run(load_plan).await;
    let (system_cpu, generator_cpu) = (system_cpu.and_then(|m| m.busy()), generator_cpu.busy());
    if let Some(p) = &mut sys.process {
        if p.exited().is_some() {
            return Err(p.failure("exited during the load"));
        }
    }
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            let mut rec = crate::report::Recorder::new();
            rec.error("run_failed");
            let r = rec.report(0, rate as f64, duration);
            let step = Step {
                rate_tps: rate,
                passed: false,
                why: Some(format!("{e:#}")),
                p99_us: 0,
                offered: 0,
                answered: 0,
                achieved_tps: 0.0,
                system_cpu: system_cpu.map(output::round3),
                generator_cpu: generator_cpu.map(output::round3),
            };
            return Ok((r, step));
        }
    };
    let verdict = search::verdict(&report, plan.p99_limit_us);
    let step = Step {
        rate_tps: rate,
        passed: verdict.is_ok(),
        why: verdict.err(),
        p99_us: report.p99_us,
        offered: report.offered,
        answered: report.answered,
        achieved_tps: output::round3(report.achieved_tps),
        system_cpu: system_cpu.map(output::round3),
        generator_cpu: generator_cpu.map(output::round3),
    };
    Ok((report, step))
}

/// The bank simulator: bank 003, canonical ISO 8583, binary2, answering at
/// once, mutual TLS when `pki` is given, checking each request's MAC and
/// MACing each answer when `mac` is (in software, from the run's key
/// directory: not on SoftHSM2, see [`mac`]). The ledger keeps one record: past
/// it answers are decided but not remembered, so its cost and memory stay
/// flat over the many runs of a comparison (its counts, `auth_failures`
/// among them, go on).
fn sim_config(
    pki: Option<&Pki<'_>>,
    mac: Option<&MacRun>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<SimConfig> {
    SimConfig::from_toml_str(&sim_toml(pki, mac, listen))
        .map_err(|e| anyhow::anyhow!("bank simulator config:\n{e}"))
}

/// The TOML of [`sim_config`]; bank 003 listens on `listen` (default: a
/// port of the system's choosing).
fn sim_toml(pki: Option<&Pki<'_>>, mac: Option<&MacRun>, listen: Option<SocketAddr>) -> String {
    let q = |p: PathBuf| toml_string(&p.display().to_string());
    let tls = match pki {
        None => "tls = false\n".to_owned(),
        Some(pki) => format!(
            "[banks.tls]\ncert = {}\nkey = {}\nclient_ca = {}\n",
            q(pki.file(&format!("{BANK_NAME}.crt"))),
            q(pki.file(&format!("{BANK_NAME}.key"))),
            q(pki.file("ca.crt"))
        ),
    };
    let (hsm, auth) = match mac {
        None => (String::new(), String::new()),
        Some(m) => (
            m.hsm_section(HsmUser::Simulator),
            format!("{}\n", m.auth_entry()),
        ),
    };
    let listen = listen.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
    format!(
        "seed = 1\nmax_ledger_entries = 1\n[http]\nbind = \"127.0.0.1:0\"\n{hsm}\
         [[banks]]\nname = \"{BANK_NAME}\"\ncode = \"{BANK_CODE}\"\ncodec = \"iso8583:canonical\"\n\
         listen = \"{listen}\"\nframing = {{ prefix = \"binary2\" }}\n{auth}{tls}"
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn settings(plan: &ComparePlan, mac: Option<&MacRun>) -> Settings {
    Settings {
        step_ms: plan.step.as_millis() as u64,
        step_attempts: plan.step_attempts,
        fixed_ms: plan.fixed.as_millis() as u64,
        fixed_rounds: plan.fixed_rounds,
        drain_ms: plan.drain.as_millis() as u64,
        start_rate: plan.search.start_rate,
        min_rate: plan.search.min_rate,
        max_rate: plan.search.max_rate,
        max_steps: plan.search.max_steps,
        tolerance: plan.search.tolerance,
        p99_limit_us: plan.p99_limit_us,
        connections: plan.connections,
        pinned: plan.pinning.is_some(),
        system_core: plan.pinning.map(|p| p.system_core),
        load_core: plan.pinning.map(|p| p.load_core),
        switch_journal: plan.journal.as_str().to_owned(),
        bank: format!(
            "{BANK_NAME} (code {BANK_CODE}, iso8583:canonical, binary2 framing, no added latency), in the load generator's process"
        ),
        fixed_rate_basis: "half the lower of the two maxima, the same rate for both systems (a system that sustained nothing counts as min_rate)"
            .to_owned(),
        budget_s: plan.budget.as_secs(),
        mac: plan
            .mac
            .as_ref()
            .map_or("off", |m| m.mechanism.as_str())
            .to_owned(),
        mac_setup: mac.map(MacRun::describe),
        busy_poll: plan.busy_poll,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_rounds_alternate_the_order_of_the_systems() {
        let measured = [0, 1, 2];
        assert_eq!(round_order(&measured, 0), [0, 1, 2]);
        assert_eq!(round_order(&measured, 1), [2, 1, 0]);
        assert_eq!(round_order(&measured, 2), [0, 1, 2]);
        assert!(round_order(&[], 1).is_empty());
    }

    #[test]
    fn the_fixed_rate_is_half_the_lower_maximum() {
        assert_eq!(fixed_rate([8000, 30_000].into_iter(), 100), 4000);
        assert_eq!(fixed_rate([0, 30_000].into_iter(), 100), 50);
        assert_eq!(fixed_rate([1, 1].into_iter(), 100), 1);
    }

    #[test]
    fn simulator_configs_parse() {
        let c = sim_config(None, None, None).unwrap();
        assert_eq!(c.banks.len(), 1);
        assert_eq!(c.max_ledger_entries, 1);
        assert!(c.hsm.is_none() && c.banks[0].auth.is_none());
        assert_eq!(c.banks[0].listen.port(), 0);
        // The generator's ceiling: the same bank, in a process of its own
        // on a port chosen beforehand.
        let at: SocketAddr = "127.0.0.1:7003".parse().unwrap();
        let c = sim_config(None, None, Some(at)).unwrap();
        assert_eq!(c.banks[0].listen, at);
        let dir = PathBuf::from("/d/pki \"q\"");
        let c = sim_config(Some(&Pki(&dir)), None, None).unwrap();
        assert!(matches!(
            &c.banks[0].tls,
            crate::banksim::config::TlsSetting::Tls(f) if f.cert == dir.join("bank003.crt")
        ));
    }

    #[test]
    fn simulator_configs_with_a_mac_check_and_make_it() {
        // The switch's validation (below) wants a module file that exists.
        let mac = mac::RunWithModuleFile::new("sim");
        let dir = PathBuf::from("/d/pki");
        let plain = sim_config(None, Some(&mac.run), None);
        let tls = sim_config(Some(&Pki(&dir)), Some(&mac.run), None);
        for c in [plain.unwrap(), tls.unwrap()] {
            let hsm = c.hsm.as_ref().unwrap();
            assert_eq!(hsm.backend, fps_hsm::Backend::DangerSoftware);
            assert_eq!(
                hsm.danger_key_dir.as_deref(),
                Some(mac.run.key_dir.as_path())
            );
            let auth = c.banks[0].auth.as_ref().unwrap();
            let key = auth.mac.as_ref().unwrap();
            assert_eq!(key.label(), "relay-mac-hmac-test");
            assert_eq!(key.mechanism(), fps_hsm::Mechanism::HmacSha256);
            assert_eq!(auth.key_uses().len(), 1);
        }
    }

    /// One run, two sides: the simulated bank MACs in software from the
    /// run's key directory, the switch through SoftHSM2 (PKCS#11) in the
    /// token; both name the run's own label, none of the dev keys.
    #[test]
    fn the_mac_run_puts_the_bank_in_software_and_the_switch_on_pkcs11() {
        let mac = mac::RunWithModuleFile::new("sides");
        let run = &mac.run;
        let sim = sim_config(None, Some(run), None).unwrap();
        let sim_hsm = sim.hsm.as_ref().unwrap();
        assert_eq!(sim_hsm.backend, fps_hsm::Backend::DangerSoftware);
        assert_eq!(
            sim_hsm.danger_key_dir.as_deref(),
            Some(run.key_dir.as_path())
        );
        assert_eq!(
            (&sim_hsm.module_path, &sim_hsm.token_label, &sim_hsm.pin_env),
            (&None, &None, &None),
            "no SoftHSM2 on the load side"
        );
        assert_eq!(sim_hsm.threads, mac::SIM_HSM_THREADS);
        let sim_key = sim.banks[0].auth.as_ref().unwrap().mac.clone().unwrap();

        let spec = switch::SwitchSpec {
            listen: "127.0.0.1:7000".parse().unwrap(),
            admin: "127.0.0.1:7001".parse().unwrap(),
            bank: "127.0.0.1:7003".parse().unwrap(),
            links: 4,
            tls: None,
            journal: switch::Journal::Never,
            journal_dir: "/d/j".into(),
            mac: Some(run.clone()),
            busy_poll: false,
        };
        let v: toml::Value = toml::from_str(&switch::render(&spec)).unwrap();
        let switch_hsm: fps_hsm::HsmConfig = v["hsm"].clone().try_into().unwrap();
        let valid = switch_hsm.validate();
        assert!(valid.is_ok(), "{valid:?}");
        assert_eq!(switch_hsm.backend, fps_hsm::Backend::Pkcs11);
        assert_eq!(
            switch_hsm.module_path.as_deref(),
            Some(run.plan.module.as_path())
        );
        assert_eq!(switch_hsm.token_label.as_deref(), Some("fps-switch"));
        assert_eq!(switch_hsm.danger_key_dir, None);
        assert_eq!(switch_hsm.threads, mac::SWITCH_HSM_THREADS);
        let switch_label = v["banks"][0]["auth"]["mac"]["label"].as_str();
        assert_eq!(switch_label, Some(run.label.as_str()));
        assert_eq!(sim_key.label(), run.label);
        assert!(run.label.starts_with(mac::RUN_KEY_PREFIX));
    }

    fn test_plan(mac: Option<MacPlan>) -> ComparePlan {
        ComparePlan {
            switch_bin: "/x/fps-switch".into(),
            haproxy_bin: "/x/haproxy".into(),
            transports: vec![Transport::Plaintext],
            search: SearchConfig {
                start_rate: 2000,
                min_rate: 100,
                max_rate: 1_000_000,
                max_steps: 12,
                tolerance: 0.1,
            },
            step: Duration::from_secs(2),
            step_attempts: 2,
            fixed: Duration::from_secs(5),
            fixed_rounds: 1,
            drain: Duration::from_secs(1),
            settle: Duration::from_secs(2),
            p99_limit_us: 10_000,
            connections: 4,
            pinning: None,
            journal: switch::Journal::Never,
            mac,
            generator_ceiling: true,
            busy_poll: false,
            budget: Duration::from_secs(360),
            work_dir: None,
            progress: false,
        }
    }

    #[test]
    fn settings_say_how_the_mac_run_is_set_up() {
        let mac = mac::RunWithModuleFile::new("settings");
        let plan = test_plan(Some(mac.run.plan.clone()));
        let s = settings(&plan, Some(&mac.run));
        assert_eq!(s.mac, "hmac");
        let setup = s.mac_setup.unwrap();
        assert!(setup.contains("relay-mac-hmac-test"), "{setup}");
        assert!(setup.contains("danger_software"), "{setup}");
        let s = settings(&plan, None);
        assert_eq!(s.mac_setup, None);
    }

    /// After a failed step the next starts only once the system answers a
    /// light load cleanly again: here its bank comes up 600 ms after the
    /// probes begin (connections refused until then).
    #[tokio::test]
    async fn recover_waits_until_the_system_answers_cleanly_again() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut sys = System {
            name: "direct",
            target,
            tls: None,
            process: None,
        };
        let mut plan = test_plan(None);
        // Answers are what this is about; a debug build under parallel
        // tests is slow.
        plan.p99_limit_us = 2_000_000;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let bank = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut config = sim_config(None, None, None).unwrap();
            config.banks[0].listen = target;
            let sim = BankSim::bind(&config).await.unwrap();
            sim.run(async move {
                let _ = stopped.await;
            })
            .await
        });
        let started = Instant::now();
        recover(&plan, &mut sys, 200).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(600));
        // It returned on a clean probe, not at its limit.
        assert!(
            started.elapsed() < RECOVER_LIMIT / 2,
            "{:?}",
            started.elapsed()
        );
        let (_, step) = run_step(&plan, &mut sys, 200, RECOVER_PROBE).await.unwrap();
        assert!(step.passed, "{step:?}");
        let _ = stop.send(());
        let _ = bank.await;
    }
}
