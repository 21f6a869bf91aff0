//! Routing through `fps-routing` over real sockets: proxies, BINs,
//! fail-over, circuit breakers, bank restarts and proxy directory reloads.
//!
//! Metrics are process-wide and tests run in parallel, so every test uses
//! its own bank names and only reads series labelled with them.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fps_codecs::model::*;
use support::*;

fn spec(code: &'static str, name: &'static str, addr: SocketAddr) -> BankSpec {
    BankSpec {
        code,
        name,
        codec: "iso8583:canonical",
        addr,
        request_timeout_ms: 3_000,
    }
}

async fn approving(pki: &Pki) -> BankPeer {
    BankPeer::start(
        pki,
        "iso8583:canonical",
        Behaviour::Approve { max_delay_ms: 0 },
    )
    .await
}

async fn gateway(sw: &Running, pki: &Pki) -> Gateway {
    Gateway::connect_tls(sw.upstream, pki, Some("gateway"))
        .await
        .unwrap()
}

async fn code_of(gw: &mut Gateway, req: &Transaction) -> ResponseCode {
    let answer = gw.request(req).await;
    assert_eq!(answer.stan, req.stan, "F11 echoed");
    answer.response_code.expect("F39")
}

async fn circuit_state(sw: &Running, bank: &str) -> Option<f64> {
    let text = http_get(sw.admin, "/metrics").await.1;
    metric(
        &text,
        &format!("fps_switch_circuit_state{{bank=\"{bank}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_and_bin_route_to_the_right_bank_and_unknown_proxy_gets_14() {
    let pki = Pki::new();
    let a = approving(&pki).await;
    let b = approving(&pki).await;
    let proxies = write_file(
        &pki.dir,
        "proxies.csv",
        "MOBN:+852-90000001,003\nMOBN:+852-90000002,004\nEMAL:someone@example.com,004\n",
    );
    let text = config_toml(
        &pki,
        &[spec("003", "px003", a.addr), spec("004", "px004", b.addr)],
        "",
    ) + &format!(
        r#"
[routing]
proxy_directory = "{}"
[[routing.bins]]
prefix = "476173"
bank = "004"
"#,
        proxies.display()
    );
    let sw = Running::start(&text).await;
    sw.wait_ready().await;
    let mut gw = gateway(&sw, &pki).await;

    let to_a = credit_transfer_to_proxy(1, "MOBN:+852-90000001");
    assert!(to_a.receiving_bank.is_none());
    assert_eq!(code_of(&mut gw, &to_a).await, ResponseCode::APPROVED);
    assert_eq!(a.financial_requests.load(Ordering::Relaxed), 1);
    assert_eq!(b.financial_requests.load(Ordering::Relaxed), 0);

    let to_b = credit_transfer_to_proxy(2, "EMAL:someone@example.com");
    assert_eq!(code_of(&mut gw, &to_b).await, ResponseCode::APPROVED);
    assert_eq!(b.financial_requests.load(Ordering::Relaxed), 1);

    let unknown = credit_transfer_to_proxy(3, "MOBN:+852-99999999");
    assert_eq!(
        code_of(&mut gw, &unknown).await,
        ResponseCode::UNKNOWN_ACCOUNT
    );

    // PAN only: the BIN table decides.
    let mut by_pan = credit_transfer(4, "000");
    by_pan.receiving_bank = None;
    by_pan.pan = Some(Pan::parse(b"4761731234567890").unwrap());
    assert_eq!(code_of(&mut gw, &by_pan).await, ResponseCode::APPROVED);
    assert_eq!(b.financial_requests.load(Ordering::Relaxed), 2);
    by_pan.stan = Some(Stan::new(5).unwrap());
    by_pan.pan = Some(Pan::parse(b"5555555555554444").unwrap());
    assert_eq!(
        code_of(&mut gw, &by_pan).await,
        ResponseCode::UNKNOWN_ACCOUNT
    );
    assert_eq!(a.financial_requests.load(Ordering::Relaxed), 1, "unchanged");

    let metrics = http_get(sw.admin, "/metrics").await.1;
    for want in [
        r#"source="proxy",result="routed""#,
        r#"source="proxy",result="unknown_destination""#,
        r#"source="bin",result="routed""#,
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
    assert!(!metrics.contains("90000001"), "no proxy in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_secondary_when_the_primary_is_down() {
    let pki = Pki::new();
    let down = closed_port().await;
    let dr = approving(&pki).await;
    let text = config_toml(
        &pki,
        &[
            spec("004", "fo-primary", down),
            spec("004", "fo-dr", dr.addr),
        ],
        "",
    ) + r#"
[[routing.routes]]
bank_code = "004"
primary = "fo-primary"
secondaries = ["fo-dr"]
"#;
    let sw = Running::start(&text).await;
    wait_links(
        sw.admin,
        "\"bank\": \"fo-dr\",\n    \"code\": \"004\",\n    \"up\": 1",
    )
    .await;
    let mut gw = gateway(&sw, &pki).await;
    for stan in 1..=3 {
        let req = credit_transfer(stan, "004");
        assert_eq!(code_of(&mut gw, &req).await, ResponseCode::APPROVED);
    }
    assert_eq!(dr.financial_requests.load(Ordering::Relaxed), 3);
    let metrics = http_get(sw.admin, "/metrics").await.1;
    let failovers = metric(&metrics, r#"fps_switch_failovers_total{bank="fo-primary"}"#);
    assert!(failovers.is_some_and(|n| n >= 1.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_opens_after_consecutive_failures_then_recovers_through_a_probe() {
    const COOL_DOWN: Duration = Duration::from_millis(4_000);
    let pki = Pki::new();
    let first = approving(&pki).await;
    let addr = first.addr;
    let text = config_toml(&pki, &[spec("012", "brk", addr)], "")
        + &format!(
            r#"
[routing.breaker]
failure_threshold = 2
cool_down_ms = {}
[routing.retry]
max_attempts = 1
"#,
            COOL_DOWN.as_millis()
        );
    let sw = Running::start(&text).await;
    sw.wait_ready().await;
    let mut gw = gateway(&sw, &pki).await;
    assert_eq!(
        code_of(&mut gw, &credit_transfer(1, "012")).await,
        ResponseCode::APPROVED
    );
    assert_eq!(circuit_state(&sw, "brk").await, Some(0.0));

    // The bank goes away: two failed sends open the circuit.
    first.stop().await;
    wait_links(sw.admin, "\"up\": 0").await;
    for stan in 2..=3 {
        assert_eq!(
            code_of(&mut gw, &credit_transfer(stan, "012")).await,
            ResponseCode::BANK_UNAVAILABLE
        );
    }
    let opened = tokio::time::Instant::now();
    assert_eq!(circuit_state(&sw, "brk").await, Some(1.0));

    // The bank is back, but the circuit is open: 91 without touching it.
    let second = BankPeer::start_on(
        &pki,
        "iso8583:canonical",
        Behaviour::Approve { max_delay_ms: 0 },
        addr,
    )
    .await;
    sw.wait_ready().await;
    assert!(
        opened.elapsed() < COOL_DOWN,
        "reconnect took longer than the cool-down"
    );
    assert_eq!(
        code_of(&mut gw, &credit_transfer(4, "012")).await,
        ResponseCode::BANK_UNAVAILABLE
    );
    assert_eq!(second.financial_requests.load(Ordering::Relaxed), 0);
    assert_eq!(circuit_state(&sw, "brk").await, Some(1.0));

    // After the cool-down one probe goes through and closes the circuit.
    tokio::time::sleep(COOL_DOWN.saturating_sub(opened.elapsed())).await;
    assert_eq!(
        code_of(&mut gw, &credit_transfer(5, "012")).await,
        ResponseCode::APPROVED
    );
    assert_eq!(second.financial_requests.load(Ordering::Relaxed), 1);
    assert_eq!(circuit_state(&sw, "brk").await, Some(0.0));
    assert_eq!(
        code_of(&mut gw, &credit_transfer(6, "012")).await,
        ResponseCode::APPROVED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_succeed_again_after_the_bank_restarts_on_the_same_port() {
    let pki = Pki::new();
    let first = approving(&pki).await;
    let addr = first.addr;
    let text = config_toml(&pki, &[spec("024", "restarts", addr)], "")
        + r#"
[routing.breaker]
failure_threshold = 1000
[routing.retry]
max_attempts = 1
"#;
    let sw = Running::start(&text).await;
    sw.wait_ready().await;
    let mut gw = gateway(&sw, &pki).await;
    assert_eq!(
        code_of(&mut gw, &credit_transfer(1, "024")).await,
        ResponseCode::APPROVED
    );
    first.stop().await;
    wait_links(sw.admin, "\"up\": 0").await;
    assert_eq!(
        code_of(&mut gw, &credit_transfer(2, "024")).await,
        ResponseCode::BANK_UNAVAILABLE
    );
    let second = BankPeer::start_on(
        &pki,
        "iso8583:canonical",
        Behaviour::Approve { max_delay_ms: 0 },
        addr,
    )
    .await;
    sw.wait_ready().await;
    assert_eq!(
        code_of(&mut gw, &credit_transfer(3, "024")).await,
        ResponseCode::APPROVED
    );
    assert_eq!(second.financial_requests.load(Ordering::Relaxed), 1);
    assert_eq!(circuit_state(&sw, "restarts").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_the_proxy_directory_swaps_it_and_a_bad_file_keeps_the_old_one() {
    let pki = Pki::new();
    let bank = approving(&pki).await;
    let proxies = write_file(&pki.dir, "proxies.csv", "FPID:1000001,003\n");
    let text = config_toml(&pki, &[spec("003", "reload003", bank.addr)], "")
        + &format!("[routing]\nproxy_directory = \"{}\"\n", proxies.display());
    let sw = Running::start(&text).await;
    sw.wait_ready().await;
    let mut gw = gateway(&sw, &pki).await;
    let new_proxy = credit_transfer_to_proxy(1, "FPID:1000002");
    assert_eq!(
        code_of(&mut gw, &new_proxy).await,
        ResponseCode::UNKNOWN_ACCOUNT
    );

    write_file(
        &pki.dir,
        "proxies.csv",
        "FPID:1000001,003\nFPID:1000002,003\n",
    );
    assert_eq!(sw.reloader.reload().await.unwrap(), 2);
    let mut again = new_proxy.clone();
    again.stan = Some(Stan::new(2).unwrap());
    assert_eq!(code_of(&mut gw, &again).await, ResponseCode::APPROVED);

    // A bad file (one line with a bad bank code) is refused whole.
    write_file(
        &pki.dir,
        "proxies.csv",
        "FPID:1000001,003\nFPID:1000003,3x\n",
    );
    let err = sw.reloader.reload().await.unwrap_err().to_string();
    assert!(err.starts_with("1 bad line(s): line 2"), "{err}");
    assert!(!err.contains("1000003"), "no proxy value in errors: {err}");
    again.stan = Some(Stan::new(3).unwrap());
    assert_eq!(code_of(&mut gw, &again).await, ResponseCode::APPROVED);
    assert_eq!(sw.reloader.routing().proxies().len(), 2);
    assert_eq!(bank.financial_requests.load(Ordering::Relaxed), 2);
}

/// The daemon reloads the directory on SIGHUP and logs counts, never values.
/// It runs on one thread (`worker_threads = 1`, the current-thread
/// scheduler) and busy-polls (`busy_poll = true`), so that path of the
/// binary (signals, the reload's blocking task, a clean stop with the
/// polling task running) is exercised too; the other daemon tests use the
/// default.
#[cfg(unix)]
#[test]
fn sighup_reloads_the_proxy_directory_in_the_daemon() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    let pki = Pki::new();
    let proxies = write_file(&pki.dir, "proxies.csv", "FPID:1000001,003\n");
    let text = config_toml(&pki, &[], "").replacen(
        "participant_code = \"950\"\n",
        "participant_code = \"950\"\nworker_threads = 1\nbusy_poll = true\n",
        1,
    ) + &format!("[routing]\nproxy_directory = \"{}\"\n", proxies.display());
    let config = write_file(&pki.dir, "hup.toml", &text);
    /// Kills the daemon if the test fails first: it shares the test's
    /// stderr, and a daemon left running would keep `cargo test` waiting.
    struct Daemon(std::process::Child);
    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Command::new(env!("CARGO_BIN_EXE_fps-switch"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let mut child = Daemon(child);
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = String::new();
    let mut wait_for = |want: &str| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(want) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no log line with {want:?} in:\n{seen}");
    };
    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    };

    let line = wait_for("runtime");
    assert!(line.contains("scheduler=current_thread"), "{line}");
    assert!(line.contains("busy_poll=true"), "{line}");
    wait_for("fps-switch started");
    write_file(
        &pki.dir,
        "proxies.csv",
        "FPID:1000001,003\nFPID:1000002,003\n",
    );
    hup(child.0.id());
    let line = wait_for("proxy directory reloaded");
    assert!(line.contains("entries=2"), "{line}");

    write_file(
        &pki.dir,
        "proxies.csv",
        "FPID:1000001,003\nFPID:1000003,3x\n",
    );
    hup(child.0.id());
    let line = wait_for("proxy directory reload refused");
    assert!(line.contains("bad_lines=1"), "{line}");
    assert!(line.contains("kept_entries=2"), "{line}");
    assert!(!line.contains("1000003"), "no proxy value in logs: {line}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    wait_for("fps-switch stopped");
}
