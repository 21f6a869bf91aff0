//! `fps-switch check-config`: every error with its key path, exit code 2;
//! a good config prints one summary line and exits 0.

mod support;

use std::process::Command;

use support::*;

fn check(path: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fps-switch"))
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_good_config_passes_with_a_one_line_summary() {
    let pki = Pki::new();
    let peer = closed_port().await;
    let text = config_toml(
        &pki,
        &[BankSpec {
            code: "004",
            name: "bank004",
            codec: "iso8583:iso87-bcd-binary",
            addr: peer,
            request_timeout_ms: 1_000,
        }],
        "",
    );
    let path = write_file(&pki.dir, "good.toml", &text);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("004 bank004"), "{stdout}");
}

#[test]
fn a_broken_config_reports_every_error_with_its_path_and_exits_2() {
    let pki = Pki::new();
    let ca = pki.path("ca.crt").display().to_string();
    let not_pem = write_file(&pki.dir, "not-pem.crt", "hello")
        .display()
        .to_string();
    let text = format!(
        r#"
[upstream]
bind = "localhost"
tls = true
cert = "/nonexistent/switch.crt"
key = "{not_pem}"
client_ca = "{ca}"
max_frame_bytes = 100000

[admin]
bind = "127.0.0.1:9100"

[journal]
keystore_commit_interval_ms = 60000

[[banks]]
code = "004"
name = "ok"
codec = "iso8583:iso87-bcd-binary"
endpoints = ["127.0.0.1:1"]
danger_plaintext = true

[[banks]]
code = "004"
name = "dup"
codec = "iso8583:iso87-bcd-binary"
endpoints = ["127.0.0.1:1"]
danger_plaintext = true

[[banks]]
code = "12"
name = "bad"
codec = "xml"
endpoints = ["127.0.0.1:1", "no-port"]
pool = {{ min = 5, max = 1 }}
[banks.tls]
cert = "/nonexistent/c.crt"
key = "/nonexistent/c.key"
ca = "{not_pem}"
server_name = "bad name!"
"#
    );
    let path = write_file(&pki.dir, "broken.toml", &text);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    for want in [
        "upstream.bind: not ip:port",
        "upstream.cert: file not found",
        "upstream.key: no private key",
        "upstream.max_frame_bytes: 100000 is outside",
        "journal.keystore_commit_interval_ms: 60000 is outside 0..=10000",
        "banks[2].code: not 3 digits",
        "banks[2].codec: not one of",
        "banks[2].endpoints[1]: not host:port",
        "banks[2].tls.cert: file not found",
        "banks[2].tls.key: file not found",
        "banks[2].tls.ca: no CERTIFICATE",
        "banks[2].tls.server_name: not a DNS name",
        "banks[2].pool.min: greater than pool.max",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("banks[2].endpoints[0]"), "{stderr}");
    // Two banks may share a code (a DR site); [routing] orders them.
    assert!(!stderr.contains("banks[1].code"), "{stderr}");
}

#[test]
fn routing_errors_are_reported_with_their_key_paths() {
    let pki = Pki::new();
    let proxies = write_file(
        &pki.dir,
        "proxies.csv",
        "MOBN:+852-90000001,004
MOBN:+852-90000002,04x
MOBN:+852-90000003
",
    );
    let text = format!(
        r#"
[upstream]
bind = "127.0.0.1:0"
tls = false

[admin]
bind = "127.0.0.1:0"

[[banks]]
code = "004"
name = "hsbc"
codec = "iso8583:iso87-bcd-binary"
endpoints = ["127.0.0.1:1"]
danger_plaintext = true

[routing]
proxy_directory = "{}"

[[routing.routes]]
bank_code = "004"
primary = "ghost"
secondaries = ["hsbc"]

[[routing.bins]]
prefix = "47617"
bank = "004"

[routing.breaker]
failure_threshold = 0

[routing.max_in_flight]
nobody = 5
"#,
        proxies.display()
    );
    let path = write_file(&pki.dir, "routing.toml", &text);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    for want in [
        r#"routing.routes[0].primary: unknown bank "ghost""#,
        r#"routing.bins[0].prefix: "47617": BIN must have 6 to 11 digits"#,
        "routing.breaker.failure_threshold: must be between 1 and",
        r#"routing.max_in_flight.nobody: unknown bank "nobody""#,
        "routing.proxy_directory: 2 bad line(s): line 2: bank code",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("90000002"), "no proxy value: {stderr}");

    // Unknown keys inside [routing] are refused too.
    let path = write_file(
        &pki.dir,
        "routing-typo.toml",
        "[upstream]\nbind = \"127.0.0.1:0\"\ntls = false\n[admin]\nbind = \"127.0.0.1:0\"\n[routing]\nrootes = []\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("rootes"), "{stderr}");
}

#[test]
fn iso20022_settings_are_checked_at_their_key_paths() {
    let pki = Pki::new();
    let head =
        "[switch]\nparticipant_code = \"950\"\n[upstream]\nbind = \"127.0.0.1:0\"\ntls = false\n\
                [admin]\nbind = \"127.0.0.1:0\"\n";
    let bank = |codec: &str, iso20022: &str| {
        format!(
            "[[banks]]\ncode = \"012\"\nname = \"b{}\"\ncodec = \"{codec}\"\n\
             endpoints = [\"127.0.0.1:1\"]\ndanger_plaintext = true\niso20022 = {iso20022}\n",
            codec.len() + iso20022.len()
        )
    };
    let text = format!(
        "{head}{}{}{}",
        bank(
            "iso20022",
            r#"{ own_bic = "FPSWHKHHXXX", versions = { pacs008 = "001.09", pacs002 = "001.11" }, accept_other_versions = true }"#
        ),
        bank("iso8583:canonical", r#"{ own_bic = "FPSWHKHHXXX" }"#),
        bank(
            "iso20022",
            r#"{ own_bic = "fpswhkhh-secret-value", versions = { pacs008 = "1.9", camt029 = "001.10" }, clearing_system = "HKNCCX", proxy_codes = { mobile = "mob" }, max_message_bytes = 10, default_utc_offset_minutes = 900 }"#
        ),
    );
    let path = write_file(&pki.dir, "iso20022.toml", &text);
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    for want in [
        "banks[1].iso20022: only for a bank with codec = \"iso20022\"",
        "banks[2].iso20022.own_bic: not a BIC",
        "banks[2].iso20022.versions.pacs008: not a message version",
        "banks[2].iso20022.clearing_system: not a clearing system code",
        "banks[2].iso20022.proxy_codes.mobile: not a proxy type code",
        "banks[2].iso20022.max_message_bytes: 10 is outside 4096..=1048576",
        "banks[2].iso20022.default_utc_offset_minutes: 900 is outside -840..=840",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    // The good table of banks[0], and a good version next to a bad one,
    // raise nothing; no value is echoed.
    assert!(!stderr.contains("banks[0]"), "{stderr}");
    assert!(!stderr.contains("camt029"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
    let errors = stderr.lines().filter(|l| l.starts_with("  ")).count();
    assert_eq!(errors, 7, "{stderr}");

    // Without the bad banks the same file passes.
    let good = format!(
        "{head}{}",
        bank(
            "iso20022",
            r#"{ own_bic = "FPSWHKHHXXX", versions = { pacs008 = "001.09" }, clearing_system = "" }"#
        )
    );
    let (code, stdout, stderr) = check(&write_file(&pki.dir, "iso20022-good.toml", &good));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");

    // Unknown keys inside the table (or its `versions`) are refused, at
    // their key path and line, whichever way the table is written.
    for (name, text, want) in [
        (
            "inline",
            format!(
                "{head}{}",
                bank("iso20022", "{ own_bic = \"FPSWHKHHXXX\", bogus = 1 }")
            ),
            "line 14: banks[0].iso20022.bogus: unknown field `bogus`",
        ),
        (
            "versions",
            format!(
                "{head}{}{}",
                bank("json", "{}").replace("iso20022 = {}\n", ""),
                bank("iso20022", "{ versions = { pacs009 = \"001.01\" } }")
            ),
            "line 20: banks[1].iso20022.versions.pacs009: unknown field `pacs009`",
        ),
        (
            "table",
            format!(
                "{head}{}[banks.iso20022]\nown_bic = \"FPSWHKHHXXX\"\nown_bik = \"FPSWHKHHXXX\"\n",
                bank("iso20022", "{}").replace("iso20022 = {}\n", "")
            ),
            "line 16: banks[0].iso20022.own_bik: unknown field `own_bik`",
        ),
    ] {
        let (code, _, stderr) = check(&write_file(&pki.dir, &format!("{name}.toml"), &text));
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(
            stderr.contains(want),
            "{name}: missing {want:?} in:\n{stderr}"
        );
    }
}

#[test]
fn unknown_keys_and_syntax_errors_exit_2() {
    let pki = Pki::new();
    let path = write_file(
        &pki.dir,
        "unknown.toml",
        "[upstream]\nbind = \"127.0.0.1:0\"\ntls = false\nmax_conections = 5\n[admin]\nbind = \"127.0.0.1:0\"\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("max_conections"), "{stderr}");
    let (code, _, stderr) = check(&pki.dir.join("missing.toml"));
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn version_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_fps-switch"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("fps-switch"));
}
