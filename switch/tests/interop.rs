//! Interoperability: an independent ISO 8583 client (pyiso8583's
//! `default_ascii` over Python's `ssl`, nothing from this project) talks to
//! the running switch over mutual TLS and gets one correct answer to each of
//! several requests in flight at once.

mod support;

use std::process::Command;

use support::*;

fn pyiso8583_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import iso8583"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("FPS_REQUIRE_PYISO8583").is_err(),
            "pyiso8583 is required (FPS_REQUIRE_PYISO8583 is set): pip install pyiso8583"
        );
        eprintln!("SKIPPED: python3 with pyiso8583 is not installed (scripts/test installs it)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiso8583_over_python_ssl_talks_to_the_switch() {
    if !pyiso8583_available() {
        return;
    }
    let pki = Pki::new();
    let bank = BankPeer::start(
        &pki,
        "iso8583:canonical",
        Behaviour::Approve { max_delay_ms: 5 },
    )
    .await;
    let spec = BankSpec {
        code: "003",
        name: "bank003",
        codec: "iso8583:canonical",
        addr: bank.addr,
        request_timeout_ms: 3_000,
    };
    let sw = Running::start(&config_toml(&pki, &[spec], "")).await;
    sw.wait_ready().await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/pyiso8583_client.py"
    );
    let port = sw.upstream.port().to_string();
    let args: Vec<String> = vec![
        script.into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port,
        "--ca".into(),
        pki.path("ca.crt").display().to_string(),
        "--cert".into(),
        pki.path("gateway.crt").display().to_string(),
        "--key".into(),
        pki.path("gateway.key").display().to_string(),
        "--server-name".into(),
        "switch.test".into(),
        "--bank".into(),
        "003".into(),
        "--count".into(),
        "5".into(),
    ];
    let out = tokio::task::spawn_blocking(move || Command::new("python3").args(&args).output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(answers.len(), 6, "{stdout}");
    for a in &answers {
        let want_mti = if a["request_mti"] == "0800" {
            "0810"
        } else {
            "0210"
        };
        assert_eq!(a["mti"], want_mti, "{a}");
        assert_eq!(a["f39"], "00", "{a}");
        assert_eq!(a["f7_echoed"], true, "{a}");
    }
    assert!(sw.stop().await, "switch drains and stops cleanly");
}
