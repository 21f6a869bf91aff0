//! The load generator's own ceiling (issue 6: "the load generator itself
//! must not be the bottleneck: show that it sustains at least 2x the
//! switch's maximum against a trivial echo peer").
//!
//! The peer is the bank simulator's bank 003 on its own: a process of its
//! own (`fps-loadtest bank-sim`), pinned to the system-under-test core, so
//! nothing but the generator runs on the generator's core and nothing sits
//! between the two. It decodes each request, applies the account rules and
//! encodes the answer (about a microsecond of codec work a message): the
//! cheapest peer whose answers the generator still checks field by field.
//! Its maximum is searched like the systems' and reported as
//! `generator_tps`, and `generator_ratio = generator_tps / switch_tps`. When
//! the peer's core is the one that ran out, the ceiling is a lower bound of
//! the generator's.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::process::{accepts, Supervised};

/// Longest wait for the peer to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Write `dir/peer-sim.toml` (`sim_toml`: the simulator config with its
/// bank listening on `listen`), start `binary bank-sim` on it, pinned to
/// `core` when given (its output in `dir/peer-sim.log`), and wait until it
/// accepts connections.
pub async fn start(
    binary: &Path,
    sim_toml: &str,
    listen: SocketAddr,
    dir: &Path,
    core: Option<usize>,
) -> anyhow::Result<Supervised> {
    let cfg = dir.join("peer-sim.toml");
    std::fs::write(&cfg, sim_toml).with_context(|| format!("writing {}", cfg.display()))?;
    let args = vec![
        "bank-sim".to_owned(),
        "--config".to_owned(),
        cfg.display().to_string(),
    ];
    let mut peer = Supervised::spawn(
        "fps-loadtest bank-sim (generator ceiling)",
        binary,
        &args,
        core,
        &dir.join("peer-sim.log"),
    )?;
    peer.wait_ready(START_TIMEOUT, || accepts(listen)).await?;
    Ok(peer)
}
