//! `fps-loadtest compare-relay` options and entry point.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::search::SearchConfig;
use super::switch::Journal;
use super::{haproxy, ComparePlan, Pinning, Transport};

/// `fps-loadtest compare-relay` options. The defaults keep the whole
/// command (both transports, both systems) within about four minutes.
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
    /// Soft bound on the whole command, in seconds: searches are cut short to fit.
    #[arg(long, default_value_t = 240)]
    pub budget_s: u64,
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
        budget: Duration::from_secs(a.budget_s),
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
        .all(|r| r.switch_tps > 0 && r.relay_tps > 0);
    Ok(sustained)
}
