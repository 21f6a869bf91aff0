//! `fps-loadtest`: the load generator, bank simulators, chaos gateway,
//! development PKI and HAProxy relay baseline for fps-switch (see the
//! library's top doc for what each module owns).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use fps_loadtest::load;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "fps-loadtest",
    version,
    about = "Load generator for fps-switch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load in the canonical upstream protocol (open or closed loop, plaintext or TLS).
    Load(Box<LoadArgs>),
    /// Make the development PKI (CA, switch, gateway and bank certificates).
    Pki(PkiArgs),
    /// Simulate banks (ISO 8583, ISO 20022, JSON) with a ledger on HTTP.
    BankSim {
        /// The simulator's TOML config (e.g. configs/dev/banksim.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// A gateway that retries every payment until final, for fault runs.
    Chaos(Box<fps_loadtest::chaos::ChaosArgs>),
    /// Check a chaos run's records against the simulators' ledger.
    Reconcile(fps_loadtest::reconcile::ReconcileArgs),
    /// The relay baseline: the switch vs HAProxy relaying the same frames
    /// to the same bank simulator, plaintext and TLS, each pinned to a core.
    CompareRelay(Box<fps_loadtest::relay::CompareRelayArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    no_transparent_huge_pages();
    let rt = match runtime_for(&cli).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fps-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fps-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Transparent huge pages off for this process, as in `fps-switch`:
/// mimalloc asks for huge pages on its large regions, and the first touch
/// of each then zeroes 2 MiB where the generator or the simulator was
/// working (`perf sched` at 13,000 TPS: 3-5 ms at a stretch in
/// `folio_zero_user` under `do_huge_pmd_anonymous_page`, while the switch
/// sat idle waiting for requests). Children (the switch, HAProxy under
/// `compare-relay`) inherit the setting.
fn no_transparent_huge_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("fps-loadtest: cannot turn transparent huge pages off ({e}): the first touch of each 2 MiB page may stall the load");
    }
}

/// The tokio runtime for a command: the current-thread scheduler when it
/// runs on one CPU (`taskset -c N`, and `compare-relay`, which pins its
/// generator and simulator to one core itself), work stealing otherwise.
/// On one CPU the work-stealing scheduler runs a task woken by the running
/// task first, so every answer or request left in a write of its own; in
/// wake order they share one (as in `fps-switch`, see its `runtime` module).
fn runtime_for(cli: &Cli) -> tokio::runtime::Builder {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cpus == 1 || matches!(cli.command, Command::CompareRelay(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all();
    builder
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Load(args) => run_load(*args).await,
        Command::Pki(args) => run_pki(args),
        Command::BankSim { config } => run_bank_sim(&config).await,
        Command::Chaos(args) => fps_loadtest::chaos::main(*args).await,
        Command::Reconcile(args) => fps_loadtest::reconcile::main(args),
        Command::CompareRelay(args) => fps_loadtest::relay::main(*args).await,
    }
}

/// `fps-loadtest load` options.
#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// The switch's upstream listener.
    #[arg(long)]
    target: SocketAddr,
    /// `open`: constant arrival rate (--rate); `closed`: --concurrency
    /// outstanding requests, each sent when an earlier one is answered.
    #[arg(long, value_enum, default_value_t = LoadMode::Open)]
    mode: LoadMode,
    /// Requests per second over all connections (open loop).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Outstanding requests over all connections (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Length of the run in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Upstream connections.
    #[arg(long, default_value_t = 4)]
    connections: u64,
    /// Destination bank codes (F100), used round-robin.
    #[arg(long, value_delimiter = ',', default_value = "004")]
    banks: Vec<String>,
    /// Distinct proxies MOBN:+852-9000NNNN (NNNN = 0001..N) for --proxy-share.
    #[arg(long, default_value_t = 0)]
    proxies: u32,
    /// Share (0..1) of requests addressed by F120 proxy instead of F100.
    #[arg(long, default_value_t = 0.0)]
    proxy_share: f64,
    /// Share (0..1) of requests built to be declined (debtor account ending
    /// 51 or 05, creditor ending 14); the answer must carry that code.
    #[arg(long, default_value_t = 0.0)]
    decline_share: f64,
    /// Share (0..1) of requests resent after their answer with the same F123
    /// and content; the resend must get the same F39/F38 and echo its own ids.
    #[arg(long, default_value_t = 0.0)]
    duplicate_share: f64,
    /// The switch's proxy directory (proxy,bank_code): reports proxied
    /// requests by bank instead of as "proxy".
    #[arg(long)]
    proxy_directory: Option<PathBuf>,
    /// CA certificate (PEM) that signed the switch's certificate: enables TLS.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --key).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS (with --cert).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Name the switch's certificate must carry (default: the target's IP).
    #[arg(long)]
    server_name: Option<String>,
    /// How long to wait for the last answers, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    drain_ms: u64,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LoadMode {
    Open,
    Closed,
}

/// `fps-loadtest pki` options.
#[derive(clap::Args, Debug)]
struct PkiArgs {
    /// Directory for the PEM files.
    #[arg(long)]
    out: PathBuf,
    /// Bank simulator names: NAME.crt (server, SANs NAME.fps.test and
    /// 127.0.0.1) and NAME-client.crt (bank-originated links).
    #[arg(long, value_delimiter = ',', default_values_t = fps_loadtest::pki::DEFAULT_BANKS.map(String::from))]
    banks: Vec<String>,
    /// Regenerate every file, even those present.
    #[arg(long)]
    force: bool,
}

async fn run_load(a: LoadArgs) -> anyhow::Result<bool> {
    if a.ca.is_none() && (a.cert.is_some() || a.server_name.is_some()) {
        anyhow::bail!("--cert/--key/--server-name need --ca (TLS)");
    }
    let tls = match &a.ca {
        None => None,
        Some(ca) => Some(load::TlsTarget::from_files(
            a.target,
            ca,
            a.cert.as_deref().zip(a.key.as_deref()),
            a.server_name.as_deref(),
        )?),
    };
    let mode = match a.mode {
        LoadMode::Open => load::Mode::Open { rate: a.rate },
        LoadMode::Closed => load::Mode::Closed {
            concurrency: a.concurrency,
        },
    };
    let proxy_directory = match &a.proxy_directory {
        Some(p) => load::load_proxy_directory(p)?,
        None => Default::default(),
    };
    let plan = load::Plan {
        target: a.target,
        tls,
        mode,
        duration: Duration::from_secs(a.duration),
        connections: a.connections.max(1),
        banks: load::parse_banks(&a.banks)?,
        mix: fps_loadtest::schedule::Mix {
            proxies: a.proxies,
            proxy_share: a.proxy_share,
            decline_share: a.decline_share,
            duplicate_share: a.duplicate_share,
        },
        proxy_directory,
        drain: Duration::from_millis(a.drain_ms),
        progress: !a.quiet,
    };
    let report = load::run(plan).await?;
    println!("{report}");
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.clean())
}

fn run_pki(a: PkiArgs) -> anyhow::Result<bool> {
    let outcome = fps_loadtest::pki::generate(&fps_loadtest::pki::PkiPlan {
        out: a.out.clone(),
        banks: a.banks,
        force: a.force,
    })?;
    println!(
        "pki: {}: wrote {} certificate(s){}, kept {}",
        a.out.display(),
        outcome.written.len(),
        if outcome.written.is_empty() {
            String::new()
        } else {
            format!(" ({})", outcome.written.join(" "))
        },
        outcome.kept.len()
    );
    Ok(true)
}

/// `fps-loadtest bank-sim`: bind every listener, print one `READY` line,
/// serve until SIGINT/SIGTERM.
async fn run_bank_sim(config: &std::path::Path) -> anyhow::Result<bool> {
    let cfg = fps_loadtest::banksim::SimConfig::load(config)
        .map_err(|e| anyhow::anyhow!("{}:\n{e}", config.display()))?;
    // Handlers are in place before READY, so a signal sent as soon as
    // READY is read is never lost (or fatal).
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let sim = fps_loadtest::banksim::BankSim::bind(&cfg).await?;
    let http = sim.http_addr();
    for (name, addr) in sim.bank_addrs() {
        eprintln!("bank-sim: {name} listening on {addr}");
    }
    println!("READY banksim=http://{http}");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    sim.run(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
    .await?;
    eprintln!("bank-sim: stopped");
    Ok(true)
}
