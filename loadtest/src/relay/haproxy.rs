//! The relay baseline: HAProxy in TCP mode between the load generator and
//! the bank, copying bytes both ways without looking at them. With TLS it
//! terminates the client's TLS (requiring and verifying a client
//! certificate) and opens its own TLS, with a client certificate, to the
//! bank: the same crypto work the switch does on its two legs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::process::{accepts, Supervised};

/// Most client connections HAProxy accepts (each opens one to the bank).
pub const MAX_CONNECTIONS: u32 = 4096;
/// Time HAProxy has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One HAProxy relay to set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    /// Where the load generator connects.
    pub listen: SocketAddr,
    /// The bank simulator's listener.
    pub bank: SocketAddr,
    /// `None` = plaintext on both legs.
    pub tls: Option<RelayTls>,
    /// HAProxy's `busy-polling` (the pollers never sleep).
    pub busy_poll: bool,
}

/// TLS files of the relay (HAProxy wants certificate and key in one PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTls {
    /// Server certificate chain and key, presented to the load generator.
    pub server_pem: PathBuf,
    /// CA that client certificates (both legs) and the bank's certificate
    /// must chain to.
    pub ca: PathBuf,
    /// Client certificate chain and key presented to the bank.
    pub client_pem: PathBuf,
    /// Name sent in SNI to the bank and checked against its certificate.
    pub bank_name: String,
}

/// The `haproxy.cfg` of `spec`: one thread (the relay gets one core, as
/// the switch does), TCP mode, TLS 1.3 on both legs when TLS is on.
pub fn render(spec: &RelaySpec) -> String {
    let mut c = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(c, "# fps-loadtest compare-relay: the relay baseline");
    let _ = writeln!(c, "global");
    let _ = writeln!(c, "    nbthread 1");
    let _ = writeln!(c, "    maxconn {MAX_CONNECTIONS}");
    if spec.busy_poll {
        let _ = writeln!(c, "    busy-polling");
    }
    let _ = writeln!(c);
    let _ = writeln!(c, "defaults");
    let _ = writeln!(c, "    mode tcp");
    let _ = writeln!(c, "    timeout connect 5s");
    let _ = writeln!(c, "    timeout client 10m");
    let _ = writeln!(c, "    timeout server 10m");
    let _ = writeln!(c);
    let _ = writeln!(c, "frontend upstream");
    match &spec.tls {
        None => {
            let _ = writeln!(c, "    bind {}", spec.listen);
        }
        Some(t) => {
            let _ = writeln!(
                c,
                "    bind {} ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3",
                spec.listen,
                t.server_pem.display(),
                t.ca.display()
            );
        }
    }
    let _ = writeln!(c, "    default_backend bank");
    let _ = writeln!(c);
    let _ = writeln!(c, "backend bank");
    match &spec.tls {
        None => {
            let _ = writeln!(c, "    server bank {}", spec.bank);
        }
        Some(t) => {
            let _ = writeln!(
                c,
                "    server bank {} ssl crt {} ca-file {} verify required sni str({}) verifyhost {} ssl-min-ver TLSv1.3",
                spec.bank,
                t.client_pem.display(),
                t.ca.display(),
                t.bank_name,
                t.bank_name
            );
        }
    }
    c
}

/// The haproxy binary: `explicit`, else `haproxy` on PATH or in the sbin
/// directories (Debian installs it in /usr/sbin, which is not on every
/// user's PATH).
pub fn find_binary(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
}

/// Write a PEM file holding a certificate chain followed by its key.
pub fn write_combined_pem(cert: &Path, key: &Path, out: &Path) -> anyhow::Result<()> {
    let mut pem =
        std::fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))?;
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem.push_str(
        &std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?,
    );
    std::fs::write(out, pem).with_context(|| format!("writing {}", out.display()))
}

/// Write `dir/haproxy.cfg` for `spec`, check it (`haproxy -c`), start
/// HAProxy in the foreground (pinned to `core` when given) and wait until
/// it listens.
pub async fn start(
    binary: &Path,
    spec: &RelaySpec,
    dir: &Path,
    core: Option<usize>,
) -> anyhow::Result<Supervised> {
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, render(spec)).with_context(|| format!("writing {}", cfg.display()))?;
    let check = std::process::Command::new(binary)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .with_context(|| format!("running {} -c", binary.display()))?;
    if !check.status.success() {
        anyhow::bail!(
            "haproxy refused {}:\n{}{}",
            cfg.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let args = vec!["-db".to_owned(), "-f".to_owned(), cfg.display().to_string()];
    let mut relay = Supervised::spawn("haproxy", binary, &args, core, &dir.join("haproxy.log"))?;
    let listen = spec.listen;
    relay.wait_ready(START_TIMEOUT, || accepts(listen)).await?;
    Ok(relay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_and_tls_configs() {
        let mut spec = RelaySpec {
            listen: "127.0.0.1:7000".parse().unwrap(),
            bank: "127.0.0.1:7003".parse().unwrap(),
            tls: None,
            busy_poll: false,
        };
        let plain = render(&spec);
        assert!(plain.contains("mode tcp"));
        assert!(plain.contains("nbthread 1"));
        assert!(plain.contains("    bind 127.0.0.1:7000\n"));
        assert!(plain.contains("    server bank 127.0.0.1:7003\n"));
        assert!(!plain.contains("ssl"));
        assert!(!plain.contains("busy-polling"));
        spec.busy_poll = true;
        assert!(
            render(&spec).contains("global\n    nbthread 1\n    maxconn 4096\n    busy-polling\n")
        );
        spec.busy_poll = false;
        spec.tls = Some(RelayTls {
            server_pem: "/d/server.pem".into(),
            ca: "/d/ca.crt".into(),
            client_pem: "/d/client.pem".into(),
            bank_name: "bank003.fps.test".into(),
        });
        let tls = render(&spec);
        assert!(tls.contains(
            "bind 127.0.0.1:7000 ssl crt /d/server.pem ca-file /d/ca.crt verify required"
        ));
        assert!(tls.contains("server bank 127.0.0.1:7003 ssl crt /d/client.pem ca-file /d/ca.crt verify required sni str(bank003.fps.test) verifyhost bank003.fps.test"));
    }
}
