//! The relay baseline's machinery: HAProxy configs that HAProxy accepts,
//! and canonical frames that flow through HAProxy to the bank simulator
//! and back, plaintext and TLS on both legs. Skipped (with a reason) only
//! when haproxy is not installed and `CI` is not set; scripts/test installs it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fps_loadtest::banksim::{BankSim, SimConfig};
use fps_loadtest::load;
use fps_loadtest::relay::haproxy::{self, RelaySpec, RelayTls};
use fps_loadtest::relay::process::free_port;

fn haproxy_or_skip(test: &str) -> Option<PathBuf> {
    match haproxy::find_binary(None) {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("{test}: haproxy is not installed and CI is set (scripts/test installs it)")
        }
        None => {
            eprintln!("{test}: SKIPPED: haproxy is not installed (apt-get install haproxy)");
            None
        }
    }
}

fn work_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fps-relay-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Bank 003 (canonical ISO 8583, binary2), mutual TLS with the dev PKI in `pki`.
fn sim_config(pki: Option<&Path>) -> SimConfig {
    let tls = match pki {
        None => "tls = false\n".to_owned(),
        Some(p) => format!(
            "[banks.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
            p.join("bank003.crt"),
            p.join("bank003.key"),
            p.join("ca.crt")
        ),
    };
    SimConfig::from_toml_str(&format!(
        "max_ledger_entries = 1000\n[http]\nbind = \"127.0.0.1:0\"\n[[banks]]\nname = \"bank003\"\n\
         code = \"003\"\ncodec = \"iso8583:canonical\"\nlisten = \"127.0.0.1:0\"\n\
         framing = {{ prefix = \"binary2\" }}\n{tls}"
    ))
    .unwrap()
}

#[test]
fn haproxy_accepts_the_generated_configs() {
    let Some(bin) = haproxy_or_skip("haproxy_accepts_the_generated_configs") else {
        return;
    };
    let dir = work_dir("check");
    let pem = dir.join("x.pem");
    // `haproxy -c` loads the certificates: give it real ones.
    fps_loadtest::pki::generate(&fps_loadtest::pki::PkiPlan {
        out: dir.clone(),
        banks: vec!["bank003".into()],
        force: false,
    })
    .unwrap();
    haproxy::write_combined_pem(&dir.join("switch.crt"), &dir.join("switch.key"), &pem).unwrap();
    for tls in [false, true] {
        let spec = RelaySpec {
            listen: "127.0.0.1:1".parse().unwrap(),
            bank: "127.0.0.1:2".parse().unwrap(),
            tls: tls.then(|| RelayTls {
                server_pem: pem.clone(),
                ca: dir.join("ca.crt"),
                client_pem: pem.clone(),
                bank_name: "bank003.fps.test".into(),
            }),
        };
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, haproxy::render(&spec)).unwrap();
        let out = std::process::Command::new(&bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tls={tls}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// 50 requests in one second through HAProxy to the bank and back: every
/// one answered once, correctly (the load generator checks the echo).
async fn relay_round_trip(name: &str, tls: bool) {
    let Some(bin) = haproxy_or_skip(name) else {
        return;
    };
    let dir = work_dir(name);
    let pki = dir.join("pki");
    fps_loadtest::pki::generate(&fps_loadtest::pki::PkiPlan {
        out: pki.clone(),
        banks: vec!["bank003".into()],
        force: false,
    })
    .unwrap();
    let sim = BankSim::bind(&sim_config(tls.then_some(pki.as_path())))
        .await
        .unwrap();
    let bank = sim.bank_addr("bank003").unwrap();
    let http = sim.http_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sim_task = tokio::spawn(sim.run(async move {
        let _ = stopped.await;
    }));

    let relay_tls = tls.then(|| {
        let server_pem = dir.join("server.pem");
        let client_pem = dir.join("client.pem");
        haproxy::write_combined_pem(
            &pki.join("switch.crt"),
            &pki.join("switch.key"),
            &server_pem,
        )
        .unwrap();
        haproxy::write_combined_pem(
            &pki.join("switch-client.crt"),
            &pki.join("switch-client.key"),
            &client_pem,
        )
        .unwrap();
        RelayTls {
            server_pem,
            ca: pki.join("ca.crt"),
            client_pem,
            bank_name: "bank003.fps.test".into(),
        }
    });
    let spec = RelaySpec {
        listen: free_port().unwrap(),
        bank,
        tls: relay_tls,
    };
    let relay = haproxy::start(&bin, &spec, &dir, None).await.unwrap();

    let load_tls = tls.then(|| load::TlsTarget {
        config: fps_loadtest::tls::client_config(
            &pki.join("ca.crt"),
            Some((&pki.join("gateway.crt"), &pki.join("gateway.key"))),
        )
        .unwrap(),
        server_name: fps_loadtest::tls::server_name("switch.fps.test").unwrap(),
    });
    let report = load::run(load::Plan {
        target: spec.listen,
        tls: load_tls,
        mode: load::Mode::Open { rate: 50 },
        duration: Duration::from_secs(1),
        connections: 2,
        banks: load::parse_banks(&["003".into()]).unwrap(),
        mix: Default::default(),
        proxy_directory: Default::default(),
        drain: Duration::from_secs(5),
        progress: false,
    })
    .await
    .unwrap();
    assert!(report.clean(), "{report}");
    assert_eq!(report.answered, 50, "{report}");
    assert_eq!(report.by_bank.get("003"), Some(&50), "{report}");

    // The bank saw the load generator's own frames (no switch between).
    let (status, ledger) = fps_loadtest::relay::process::http_get(http, "/ledger?summary")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&ledger).unwrap();
    assert_eq!(v["totals"]["transactions"], 50, "{ledger}");

    relay.stop(Duration::from_secs(5)).await;
    let _ = stop.send(());
    sim_task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn frames_flow_through_haproxy_and_back_in_plaintext() {
    relay_round_trip("plaintext", false).await;
}

#[tokio::test]
async fn frames_flow_through_haproxy_and_back_over_tls() {
    relay_round_trip("tls", true).await;
}
