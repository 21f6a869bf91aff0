//! `fps-switch`: run the daemon or check a config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fps_switch::config::{Config, LogFormat};
use fps_switch::runtime::Scheduler;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a config with errors.
const EXIT_CONFIG: u8 = 2;
/// Exit code when the switch could not start.
const EXIT_START: u8 = 1;

#[derive(Debug, Parser)]
#[command(name = "fps-switch", version, about = "FPS payment switch daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the switch.
    Run {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config (files included), report every error, bind nothing.
    CheckConfig {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(cfg) => {
                println!("{}", cfg.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                for e in &errors.0 {
                    eprintln!("  {e}");
                }
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(cfg) => cfg,
                Err(errors) => {
                    eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                    for e in &errors.0 {
                        eprintln!("  {e}");
                    }
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            init_logging(&cfg);
            no_transparent_huge_pages();
            let scheduler = Scheduler::for_this_process(cfg.switch.worker_threads);
            let rt = match scheduler.build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(EXIT_START);
                }
            };
            let busy_poll = cfg.switch.busy_poll && scheduler == Scheduler::CurrentThread;
            if cfg.switch.busy_poll && !busy_poll {
                tracing::warn!(scheduler = %scheduler, "switch.busy_poll applies to the single-thread runtime only (worker_threads = 1): ignored");
            }
            tracing::info!(scheduler = %scheduler, busy_poll, "runtime");
            rt.block_on(run(cfg, busy_poll))
        }
    }
}

/// Transparent huge pages off for this process (`PR_SET_THP_DISABLE`),
/// the usual advice for latency-sensitive servers: mimalloc asks for huge
/// pages on its large regions, and then the first touch of each 2 MiB page
/// zeroes all of it on the request path. The idempotency index is reserved
/// at start and filled at random, so with huge pages its first keys each
/// stopped the worker for a 2 MiB clear, and freed allocator pages came
/// back the same way (perf: `clear_page_erms` under
/// `do_huge_pmd_anonymous_page`, 7% of the switch's CPU at 8,000 TPS).
fn no_transparent_huge_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(error = %e, "cannot turn transparent huge pages off; the first touch of each 2 MiB page will stall a worker");
    }
}

async fn run(cfg: Config, busy_poll: bool) -> ExitCode {
    let switch = match fps_switch::Switch::build(&cfg).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(EXIT_START);
        }
    };
    let reload = tokio::spawn(reload_on_hangup(switch.proxy_reloader()));
    let spinner = busy_poll.then(|| tokio::spawn(fps_switch::runtime::busy_poll()));
    tracing::info!(
        upstream = %switch.upstream_addr(),
        admin = %switch.admin_addr(),
        banks = cfg.banks.len(),
        version = env!("CARGO_PKG_VERSION"),
        "fps-switch started"
    );
    let drained = switch.run(shutdown_signal()).await;
    reload.abort();
    if let Some(spinner) = spinner {
        spinner.abort();
    }
    tracing::info!(drained, "fps-switch stopped");
    // Leave a moment for the last log lines; exit 0 either way: a drain
    // timeout is reported, not an error of the process.
    tokio::time::sleep(Duration::from_millis(10)).await;
    ExitCode::SUCCESS
}

/// SIGHUP: reload the proxy directory (the reloader logs the outcome; a
/// bad file keeps the directory in force). The handler is registered before
/// this returns, so a SIGHUP after "started" is logged never kills the process.
fn reload_on_hangup(
    reloader: fps_switch::routing::ProxyReloader,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hup = {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::hangup())
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: proxy directory reload disabled")
            })
            .ok()
    };
    async move {
        #[cfg(unix)]
        if let Some(mut hup) = hup {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading the proxy directory");
                let _ = reloader.reload().await;
            }
        }
        #[cfg(not(unix))]
        drop(reloader);
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}
