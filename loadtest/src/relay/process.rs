//! The processes of a comparison: a child pinned to a core with `taskset`
//! and killed when dropped, the CPU time a process used, this process's own
//! pinning, readiness probes and the machine's facts.
//!
//! The crate forbids `unsafe`, so CPU affinity goes through util-linux's
//! `taskset` rather than `sched_setaffinity`, and signals through `kill`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Lines of a child's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;
/// Largest HTTP answer read by [`http_get`] (the switch's `/metrics` page,
/// with its histograms, is the largest read).
const MAX_HTTP_ANSWER_BYTES: u64 = 1024 * 1024;
/// Poll interval of the readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// A child process that is killed (SIGKILL) and reaped when dropped, so
/// that no error path leaves a switch or an HAProxy behind.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Supervised {
    /// Start `program args` with stdout and stderr in `log`, pinned to
    /// `core` when given (through `taskset -c`, which then execs it: the
    /// pid is the program's own).
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        core: Option<usize>,
        log: &Path,
    ) -> anyhow::Result<Supervised> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = match core {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(core.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {name} ({}{})",
                if core.is_some() { "taskset -c N " } else { "" },
                program.display()
            )
        })?;
        Ok(Supervised {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// An error naming the child, how it exited and the end of its log.
    pub fn failure(&mut self, what: &str) -> anyhow::Error {
        let status = self
            .exited()
            .map_or_else(|| "still running".to_owned(), |s| s.to_string());
        anyhow::anyhow!(
            "{} {what} ({status}); end of {}:\n{}",
            self.name,
            self.log.display(),
            log_tail(&self.log, LOG_TAIL_LINES)
        )
    }

    /// Wait until `probe` succeeds (polling), failing if the child exits
    /// or `timeout` passes first.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        timeout: Duration,
        mut probe: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if self.exited().is_some() {
                return Err(self.failure("exited during start-up"));
            }
            if probe().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!("not ready after {} s", timeout.as_secs())));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Stops the process (SIGSTOP) until [`Supervised::resume`]: it takes no
    /// CPU meanwhile, whatever it was doing.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Continues a paused process (SIGCONT; harmless on a running one).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, which: &str) -> anyhow::Result<()> {
        let Some(child) = &self.child else {
            return Ok(());
        };
        let status = kill(child.id(), which)?;
        anyhow::ensure!(status.success(), "kill {which} {}: {status}", self.name);
        Ok(())
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; always reaped. A
    /// paused process is continued first: stopped, it would hold the
    /// SIGTERM until the grace ran out.
    pub async fn stop(mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = kill(child.id(), "-CONT");
            let _ = kill(child.id(), "-TERM");
            let deadline = Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `kill SIGNAL pid` (e.g. `-TERM`), its output discarded.
fn kill(pid: u32, which: &str) -> std::io::Result<ExitStatus> {
    Command::new("kill")
        .args([which, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether something accepts TCP connections at `addr`.
pub async fn accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// `GET path` over HTTP/1.0: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.take(MAX_HTTP_ANSWER_BYTES).read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("GET {path} from {addr}: timed out"))??;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path} from {addr}: not an HTTP answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// A free loopback port (bound then released: another process could take
/// it in between, which on a test machine's loopback does not happen).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// Pin every thread of this process (`taskset -a -p`) to `core`. Threads
/// started later inherit it from the thread that starts them.
pub fn pin_self(core: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running taskset (util-linux) to pin the load generator")?;
    if !status.status.success() {
        bail!(
            "taskset -a -p -c {core}: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    Ok(())
}

/// CPU time (user + system, all threads) of process `pid`, or of this
/// process when `None`.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_s() as f64,
    ))
}

/// The kernel's clock tick (`getconf CLK_TCK`; 100 on every Linux we run).
fn clock_ticks_per_s() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// Share of one core a process used between two moments.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: Option<u32>,
    cpu: Option<Duration>,
    at: Instant,
}

impl CpuMeter {
    /// Start measuring `pid` (this process when `None`).
    pub fn start(pid: Option<u32>) -> Self {
        CpuMeter {
            pid,
            cpu: cpu_time(pid),
            at: Instant::now(),
        }
    }

    /// Cores' worth of CPU used since the start (1.0 = one core busy).
    pub fn busy(&self) -> Option<f64> {
        let used = cpu_time(self.pid)?.saturating_sub(self.cpu?);
        let wall = self.at.elapsed().as_secs_f64();
        (wall > 0.0).then(|| used.as_secs_f64() / wall)
    }
}

/// Wait until process `pid` is (nearly) idle: under 5 % of a core over a
/// 100 ms window, for at most `limit`. Lets a system that fell behind in an
/// overloaded step finish its backlog before the next step starts.
pub async fn settle(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let m = CpuMeter::start(Some(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
        if m.busy().is_none_or(|b| b < 0.05) {
            return;
        }
    }
}

/// Facts about the machine a comparison ran on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Machine {
    /// Online CPUs.
    pub cores: usize,
    /// `model name` of the first CPU in /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// HAProxy's version (`haproxy -v`).
    pub haproxy_version: String,
}

impl Machine {
    /// Read the facts (before this process pins itself: the core count is
    /// the machine's, not the affinity mask's).
    pub fn probe(haproxy: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1);
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
        let haproxy_version = Command::new(haproxy)
            .arg("-v")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.split_whitespace().nth(2).map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned());
        Machine {
            cores,
            cpu_model,
            kernel,
            haproxy_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let m = CpuMeter::start(None);
        let t0 = cpu_time(None).unwrap();
        let mut x = 0u64;
        let until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < until {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_time(None).unwrap() >= t0);
        assert!(m.busy().unwrap() >= 0.0);
    }

    /// The process state letter of `pid` (`/proc/PID/stat`, third field).
    fn state(pid: u32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.chars().next().unwrap()
    }

    /// Waits (up to 2 s) for `pid` to be in one of `states`: a signal takes
    /// effect when the process next runs, not when `kill` returns.
    async fn wait_state(pid: u32, states: &str) -> char {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let now = state(pid);
            if states.contains(now) || Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_paused_process_is_stopped_until_resumed_and_still_stops() {
        let log = std::env::temp_dir().join(format!("fps-relay-pause-{}", std::process::id()));
        // A process that never sleeps, as a busy-polling system.
        let args = ["-c".to_owned(), "while :; do :; done".to_owned()];
        let p = Supervised::spawn("spinner", Path::new("/bin/sh"), &args, None, &log).unwrap();
        let pid = p.pid();
        p.pause().unwrap();
        assert_eq!(wait_state(pid, "T").await, 'T', "stopped");
        let cpu = cpu_time(Some(pid)).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(cpu_time(Some(pid)).unwrap(), cpu, "no CPU while stopped");
        p.resume().unwrap();
        assert_eq!(wait_state(pid, "R").await, 'R', "running again");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(cpu_time(Some(pid)).unwrap() > cpu, "it runs again");
        p.stop(Duration::from_secs(2)).await;
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
        let _ = std::fs::remove_file(&log);
    }

    #[test]
    fn tails_of_logs() {
        let p = std::env::temp_dir().join(format!("fps-relay-tail-{}", std::process::id()));
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&p, 2), "b\nc");
        assert_eq!(log_tail(&p, 10), "a\nb\nc");
        let _ = std::fs::remove_file(&p);
        assert_eq!(log_tail(&p, 2), "");
    }
}
