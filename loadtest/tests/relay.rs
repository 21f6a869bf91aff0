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
    SimConfig::from_toml_str(&sim_toml(pki, "127.0.0.1:0")).unwrap()
}

fn sim_toml(pki: Option<&Path>, listen: &str) -> String {
    let tls = match pki {
        None => "tls = false\n".to_owned(),
        Some(p) => format!(
            "[banks.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
            p.join("bank003.crt"),
            p.join("bank003.key"),
            p.join("ca.crt")
        ),
    };
    format!(
        "max_ledger_entries = 1000\n[http]\nbind = \"127.0.0.1:0\"\n[[banks]]\nname = \"bank003\"\n\
         code = \"003\"\ncodec = \"iso8583:canonical\"\nlisten = \"{listen}\"\n\
         framing = {{ prefix = \"binary2\" }}\n{tls}"
    )
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
    for (tls, busy_poll) in [(false, false), (true, false), (false, true)] {
        let spec = RelaySpec {
            listen: "127.0.0.1:1".parse().unwrap(),
            bank: "127.0.0.1:2".parse().unwrap(),
            tls: tls.then(|| RelayTls {
                server_pem: pem.clone(),
                ca: dir.join("ca.crt"),
                client_pem: pem.clone(),
                bank_name: "bank003.fps.test".into(),
            }),
            busy_poll,
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
            "tls={tls} busy_poll={busy_poll}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One second of open-loop load at `rate` to bank 003 through `target`,
/// over two connections.
async fn one_second_to_bank_003(
    target: std::net::SocketAddr,
    tls: Option<load::TlsTarget>,
    rate: u64,
) -> fps_loadtest::report::Report {
    load::run(load::Plan {
        target,
        tls,
        mode: load::Mode::Open { rate },
        duration: Duration::from_secs(1),
        connections: 2,
        banks: load::parse_banks(&["003".into()]).unwrap(),
        mix: Default::default(),
        proxy_directory: Default::default(),
        drain: Duration::from_secs(5),
        progress: false,
    })
    .await
    .unwrap()
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
        busy_poll: false,
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
    let report = one_second_to_bank_003(spec.listen, load_tls, 50).await;
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

/// The peer of the load generator's ceiling (`compare-relay`): the bank
/// simulator as a process of its own (this package's `fps-loadtest
/// bank-sim`) on a port chosen beforehand answers the generator straight,
/// every request once and correctly, and stops on request.
#[tokio::test]
async fn the_generator_ceiling_peer_answers_the_generator_straight() {
    let dir = work_dir("peer");
    let listen = free_port().unwrap();
    let toml = sim_toml(None, &listen.to_string());
    let peer = fps_loadtest::relay::peer::start(
        Path::new(env!("CARGO_BIN_EXE_fps-loadtest")),
        &toml,
        listen,
        &dir,
        None,
    )
    .await
    .unwrap();
    let report = one_second_to_bank_003(listen, None, 200).await;
    assert!(report.clean(), "{report}");
    assert_eq!(report.answered, 200, "{report}");
    let pid = peer.pid();
    peer.stop(Duration::from_secs(5)).await;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the peer process is gone"
    );
    assert!(!fps_loadtest::relay::process::accepts(listen).await);
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

/// The development token of `scripts/softhsm-init` (module and label), or
/// `None` with the reason printed: a failure under `FPS_REQUIRE_HSM=1`
/// (scripts/test). Sets the environment up (see `devtoken::open`): this
/// is the binary's only HSM test, so no other thread uses an HSM meanwhile.
fn dev_token_or_skip(test: &str) -> Option<(PathBuf, String)> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    // Only where the token is: the test opens its own sessions.
    let found = fps_hsm::devtoken::open(root).map(|dev| (dev.module, dev.label));
    fps_hsm::devtoken::or_skip(test, found)
}

/// `--mac`'s key: made per run, in the token (sensitive, not extractable,
/// MACing as the simulator's key file does) and in a private key file;
/// both gone once the key is dropped. A run that cannot start (wrong PIN)
/// leaves nothing behind.
#[tokio::test]
async fn the_mac_runs_key_lives_exactly_as_long_as_the_run() {
    use fps_hsm::pkcs11::TokenSession;
    use fps_hsm::software::{decode_hex, SoftKey};
    use fps_hsm::{admin, Pin, PinSource};
    use fps_loadtest::relay::mac::{self, MacMechanism, MacPlan};

    let Some((module, token)) =
        dev_token_or_skip("the_mac_runs_key_lives_exactly_as_long_as_the_run")
    else {
        return;
    };
    let labels = || {
        let pin = Pin::new(std::env::var("FPS_HSM_PIN").unwrap());
        let session = TokenSession::open(&module, &token, &pin).unwrap();
        admin::list_keys(&session).unwrap()
    };
    // Run keys of this process only: other runs may share the token.
    let ours = format!("-{}-", std::process::id());
    let leftovers = || -> Vec<PathBuf> {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("fps-relay-mac-") && n.contains(&ours))
            })
            .collect()
    };
    for (mechanism, bytes, suffix) in [
        (MacMechanism::HmacSha256, 32, "hmac.hex"),
        (MacMechanism::AesCmac, 16, "cmac.hex"),
    ] {
        let plan = MacPlan {
            mechanism,
            module: module.clone(),
            token: token.clone(),
            pin: PinSource::Env("FPS_HSM_PIN".into()),
            softhsm2_conf: std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from),
            inline_sessions: 1,
        };
        let key = mac::preflight(&plan).await.unwrap();
        let run = key.run().clone();
        let prefix = format!("{}-{}{ours}", mac::RUN_KEY_PREFIX, mechanism.as_str());
        assert!(run.label.starts_with(&prefix), "{}", run.label);
        let full = format!("{}-v1", run.label);

        // The token holds it protected ...
        let listed = labels();
        let info = listed
            .iter()
            .find(|k| k.label == full)
            .unwrap_or_else(|| panic!("{full} not in {listed:?}"));
        assert_eq!(info.class, "secret");
        assert_eq!(
            (info.sensitive, info.extractable, info.private),
            (Some(true), Some(false), Some(true))
        );
        // ... and the simulator's key directory holds the same bytes,
        // readable by us only.
        let files: Vec<_> = std::fs::read_dir(&run.key_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, [format!("{full}.{suffix}")]);
        let file = run.key_dir.join(&files[0]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&run.key_dir), 0o700);
            assert_eq!(mode(&file), 0o600);
        }
        let secret = decode_hex(std::fs::read_to_string(&file).unwrap().trim()).unwrap();
        assert_eq!(secret.len(), bytes);
        let soft = match mechanism {
            MacMechanism::HmacSha256 => SoftKey::hmac_sha256(&secret),
            MacMechanism::AesCmac => SoftKey::aes_cmac(&secret),
        }
        .unwrap();
        let mut config = fps_hsm::HsmConfig::pkcs11(&module, &token, plan.pin.clone());
        config.threads = 1;
        let hsm = fps_hsm::Hsm::builder(config).start().unwrap();
        let tag = hsm
            .mac(&run.key(), bytes::Bytes::from_static(b"0200 probe"))
            .await
            .unwrap();
        assert_eq!(
            tag,
            soft.mac(b"0200 probe").unwrap(),
            "token and file agree"
        );
        drop(hsm);

        drop(key);
        assert!(
            labels().iter().all(|k| k.label != full),
            "{full} left in the token"
        );
        assert!(!run.key_dir.exists(), "{} left", run.key_dir.display());
    }

    // A wrong PIN: named, and nothing made.
    let pin_file = std::env::temp_dir().join(format!("fps-relay-test-pin-{}", std::process::id()));
    std::fs::write(&pin_file, "0000\n").unwrap();
    let plan = MacPlan {
        mechanism: MacMechanism::HmacSha256,
        module: module.clone(),
        token: token.clone(),
        pin: PinSource::File(pin_file.clone()),
        softhsm2_conf: None,
        inline_sessions: 1,
    };
    let e = format!("{:#}", mac::preflight(&plan).await.unwrap_err());
    let _ = std::fs::remove_file(&pin_file);
    assert!(e.contains("wrong user PIN"), "{e}");
    assert!(e.contains("scripts/softhsm-init"), "{e}");
    assert_eq!(leftovers(), Vec::<PathBuf>::new());
    assert!(labels().iter().all(|k| !k.label.contains(&ours)));
}
