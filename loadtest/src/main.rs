//! `fps-loadtest`: load generator for fps-switch (bank simulators and the
//! demo orchestration arrive with the load-test issue).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use fps_loadtest::load;

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
    /// Open-loop load in the canonical upstream protocol (plaintext TCP).
    Load {
        /// The switch's upstream listener.
        #[arg(long)]
        target: SocketAddr,
        /// Requests per second, over all connections.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Length of the run in seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Upstream connections.
        #[arg(long, default_value_t = 4)]
        connections: u64,
        /// Destination bank codes (F100), used round-robin.
        #[arg(long, value_delimiter = ',', default_value = "004")]
        banks: Vec<String>,
        /// How long to wait for the last answers, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        drain_ms: u64,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fps-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Load {
            target,
            rate,
            duration,
            connections,
            banks,
            drain_ms,
            json,
        } => {
            let plan = load::Plan {
                target,
                rate,
                duration: Duration::from_secs(duration),
                connections: connections.max(1),
                banks: load::parse_banks(&banks)?,
                drain: Duration::from_millis(drain_ms),
            };
            let report = load::run(plan).await?;
            println!("{report}");
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(report.errors.is_empty() && report.answered == report.offered)
        }
    }
}
