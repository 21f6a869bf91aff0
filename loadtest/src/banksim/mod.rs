//! Bank simulator (`fps-loadtest bank-sim --config FILE`): one process
//! simulating many banks, each an (m)TLS server speaking its interface
//! (`iso8583:<dialect>`, `iso20022`, `json`) through `fps-codecs`, with
//! deterministic outcomes, seeded latency and fault injection, and a ledger
//! served as JSON on `GET /ledger` so that tests can prove "no double debit"
//! and "every timeout reversed". A request that does not decode is answered
//! `30` (format error) when its ids can still be read
//! ([`MessageCodec::salvage_request`], the rule the switch applies to its
//! own peers), never booked; anything else is counted and left unanswered.
//!
//! - [`config`]: the TOML config and its validation;
//! - [`auth`]: checking the switch's MACs and signatures, making the
//!   banks' own (through `fps-hsm`);
//! - [`draw`]: seeded latency and fault draws (sans-I/O);
//! - [`ledger`]: outcome rules, reversals, inquiries, the ledger (sans-I/O);
//! - [`client`]: client mode, where configured: links the bank opens to
//!   the switch's `[bank_inbound]` listener, its originated payments and
//!   the check of each answer (counts on `GET /client`);
//! - `server` and `http`: the sockets.
//!
//! Use: [`BankSim::bind`] binds every listener (nothing is served yet, so a
//! caller can print the addresses), then [`BankSim::run`] serves until the
//! shutdown future completes.

pub mod auth;
pub mod client;
pub mod config;
pub mod draw;
mod http;
pub mod ledger;
mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context as _};
use fps_codecs::framing::Framer;
use fps_codecs::iso20022::Iso20022Codec;
use fps_codecs::iso8583::Iso8583Codec;
use fps_codecs::json::JsonCodec;
use fps_codecs::MessageCodec;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use config::SimConfig;
use config::{CodecName, TlsSetting};
use draw::SplitMix64;
use ledger::{Ledger, Style};
use server::Bank;

/// A bank simulator with every listener bound, not yet serving.
#[derive(Debug)]
pub struct BankSim {
    http: TcpListener,
    banks: Vec<(Arc<Bank>, TcpListener)>,
    clients: Vec<Arc<client::Client>>,
    ledger: Arc<Mutex<Ledger>>,
}

impl BankSim {
    /// Build every bank (codecs, TLS files) and bind every listener. Errors
    /// name the config key they come from.
    pub async fn bind(config: &SimConfig) -> anyhow::Result<BankSim> {
        config.validate()?;
        let ledger = Arc::new(Mutex::new(Ledger::new(
            config
                .banks
                .iter()
                .map(|b| {
                    let style = match CodecName::parse_shipped(&b.codec) {
                        Some(CodecName::Iso20022) => Style::Iso20022,
                        Some(CodecName::Json) => Style::Json,
                        _ => Style::Iso8583,
                    };
                    (b.name.clone(), b.code.clone(), style)
                })
                .collect(),
            config.max_ledger_entries,
        )));
        let key_uses: Vec<_> = config
            .banks
            .iter()
            .filter_map(|b| b.auth.as_ref())
            .flat_map(|a| a.key_uses())
            .collect();
        let hsm = match &config.hsm {
            Some(h) if !key_uses.is_empty() => Some(auth::start_hsm(h.clone(), &key_uses).await?),
            _ => None,
        };
        let mut banks = Vec::with_capacity(config.banks.len());
        let mut clients = Vec::new();
        for (index, b) in config.banks.iter().enumerate() {
            let at = |key: &str| format!("banks[{index}].{key} ({})", b.name);
            let codec_name = CodecName::parse_shipped(&b.codec);
            let (style, codec): (Style, Arc<dyn MessageCodec>) = match codec_name {
                Some(CodecName::Iso8583(dialect)) => (
                    Style::Iso8583,
                    Arc::new(
                        Iso8583Codec::builtin(&dialect)
                            .ok_or_else(|| anyhow!("{}: unknown dialect", at("codec")))?,
                    ),
                ),
                Some(CodecName::Iso20022) => {
                    let settings = b.iso20022_config().map_err(|problems| {
                        let (key, problem) = problems.into_iter().next().unwrap_or_default();
                        anyhow!("{}: {problem}", at(&format!("iso20022.{key}")))
                    })?;
                    (Style::Iso20022, Arc::new(Iso20022Codec::new(settings)))
                }
                Some(CodecName::Json) => (Style::Json, Arc::new(JsonCodec::new())),
                None => return Err(anyhow!("{}: unknown codec", at("codec"))),
            };
            let framer = Framer::new(b.framing).map_err(|e| anyhow!("{}: {e}", at("framing")))?;
            let auth = match (&b.auth, &hsm) {
                (Some(a), Some(hsm)) => {
                    Some(auth::SimAuth::new(hsm.clone(), &*codec, a).with_context(|| at("auth"))?)
                }
                (Some(_), None) => return Err(anyhow!("{}: needs an [hsm] section", at("auth"))),
                (None, _) => None,
            };
            let tls = match &b.tls {
                TlsSetting::Plaintext => None,
                TlsSetting::Tls(f) => {
                    let cfg = crate::tls::server_config(&f.cert, &f.key, f.client_ca.as_deref())
                        .with_context(|| at("tls"))?;
                    Some(TlsAcceptor::from(cfg))
                }
            };
            let listener = TcpListener::bind(b.listen)
                .await
                .with_context(|| format!("{}: cannot bind {}", at("listen"), b.listen))?;
            let bank = Bank {
                index,
                name: b.name.clone(),
                code: b.code.clone(),
                style,
                codec,
                framer,
                tls,
                latency: b.latency,
                faults: b.faults,
                rng: Mutex::new(SplitMix64::for_bank(config.seed, &b.name)),
                ledger: ledger.clone(),
                answer_seq: std::sync::atomic::AtomicU64::new(0),
                auth,
                restart: watch::channel(0).0,
                down_ms: std::sync::atomic::AtomicU64::new(0),
            };
            let bank = Arc::new(bank);
            if let Some(c) = &b.client {
                let c = client::Client::new(bank.clone(), c).with_context(|| at("client"))?;
                clients.push(Arc::new(c));
            }
            banks.push((bank, listener));
        }
        let http = TcpListener::bind(config.http.bind)
            .await
            .with_context(|| format!("http.bind: cannot bind {}", config.http.bind))?;
        Ok(BankSim {
            http,
            banks,
            clients,
            ledger,
        })
    }

    /// Address of the ledger/health HTTP server.
    pub fn http_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.http
            .local_addr()
            .expect("a bound listener has a local address")
    }

    /// Address a bank listens on, by config name.
    pub fn bank_addr(&self, name: &str) -> Option<SocketAddr> {
        self.banks
            .iter()
            .find(|(b, _)| b.name == name)
            .and_then(|(_, l)| l.local_addr().ok())
    }

    /// `(name, address)` of every bank, in config order.
    pub fn bank_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.banks
            .iter()
            .filter_map(|(b, l)| Some((b.name.clone(), l.local_addr().ok()?)))
            .collect()
    }

    /// The client-mode counts as `GET /client` serves them.
    pub fn clients_json(&self) -> String {
        http::clients_json(&self.clients)
    }

    /// The ledger as `GET /ledger` serves it.
    pub fn ledger_json(&self, summary: bool) -> String {
        server::lock(&self.ledger).to_json(summary)
    }

    /// Serve every bank and the HTTP endpoint until `shutdown` completes,
    /// then stop accepting and close every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::with_capacity(self.banks.len() + 1);
        tasks.push(tokio::spawn(http::serve(
            self.http,
            self.ledger.clone(),
            self.banks.iter().map(|(b, _)| b.clone()).collect(),
            self.clients.clone(),
            stopped.clone(),
        )));
        for c in &self.clients {
            tasks.push(tokio::spawn(c.clone().run(stopped.clone())));
        }
        for (bank, listener) in self.banks {
            tasks.push(tokio::spawn(server::serve(bank, listener, stopped.clone())));
        }
        shutdown.await;
        let _ = stop.send(true);
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }
}

/// Bind and serve `config` until `shutdown` completes.
pub async fn run(config: &SimConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    BankSim::bind(config).await?.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use fps_codecs::iso20022::{Iso20022Config, MessageVersion};
    use fps_codecs::model::examples::credit_transfer;
    use fps_codecs::model::{BankCode, EndToEndId, MessageId, SettlementDate, Transaction};
    use fps_codecs::MessageCodec;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Bank `v09` speaks pacs.008.001.09 and pacs.002.001.11; `dflt` has
    /// no table (the codec's defaults, .001.08 and .001.10).
    const CONFIG: &str = r#"
[http]
bind = "127.0.0.1:0"
[[banks]]
name = "v09"
code = "012"
codec = "iso20022"
listen = "127.0.0.1:0"
tls = false
iso20022 = { own_bic = "BANKHKHHXXX", versions = { pacs008 = "001.09", pacs002 = "001.11" } }
[[banks]]
name = "dflt"
code = "024"
codec = "iso20022"
listen = "127.0.0.1:0"
tls = false
"#;

    fn transfer(id: &str, to: &str) -> Transaction {
        let mut t = credit_transfer();
        t.receiving_bank = Some(BankCode::parse(to.as_bytes()).unwrap());
        t.sending_bank = Some(BankCode::parse(b"950").unwrap());
        t.settlement_date = Some(SettlementDate::parse(b"20261123").unwrap());
        t.message_id = Some(MessageId::parse(id.as_bytes()).unwrap());
        t.end_to_end_id = Some(EndToEndId::parse(id.as_bytes()).unwrap());
        t
    }

    /// `txn` in the given pacs.008 / pacs.002 versions.
    fn encode(txn: &Transaction, pacs008: &str, pacs002: &str) -> BytesMut {
        let mut cfg = Iso20022Config::default();
        cfg.versions.pacs008 = MessageVersion::parse(pacs008.as_bytes()).unwrap();
        cfg.versions.pacs002 = MessageVersion::parse(pacs002.as_bytes()).unwrap();
        let mut out = BytesMut::new();
        Iso20022Codec::new(cfg).encode(txn, &mut out).unwrap();
        out
    }

    /// Send `message` in one frame (default framing) and return the
    /// answer's text, or `None` when none comes within a second.
    async fn exchange(addr: SocketAddr, message: &[u8]) -> Option<String> {
        let framer = Framer::new(Default::default()).unwrap();
        let mut out = BytesMut::new();
        let mark = framer.begin(&[], &mut out).unwrap();
        out.extend_from_slice(message);
        framer.finish(mark, &mut out).unwrap();
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&out).await.unwrap();
        let mut buf = BytesMut::new();
        let answer = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                if let Some(f) = framer.decode(&mut buf).ok()? {
                    return Some(f.message);
                }
                if tcp.read_buf(&mut buf).await.ok()? == 0 {
                    return None;
                }
            }
        });
        let message = answer.await.ok()??;
        Some(String::from_utf8(message.to_vec()).unwrap())
    }

    /// A simulator of `config` serving until [`Running::stop`].
    struct Running {
        ledger: Arc<Mutex<Ledger>>,
        stop: tokio::sync::oneshot::Sender<()>,
        run: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    impl Running {
        /// Bind and serve `config`; the addresses of the banks named `names`.
        async fn start<const N: usize>(config: &str, names: [&str; N]) -> ([SocketAddr; N], Self) {
            let sim = BankSim::bind(&SimConfig::from_toml_str(config).unwrap())
                .await
                .unwrap();
            let addrs = names.map(|n| sim.bank_addr(n).unwrap());
            let ledger = sim.ledger.clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let run = tokio::spawn(sim.run(async {
                let _ = stopped.await;
            }));
            (addrs, Running { ledger, stop, run })
        }

        /// `GET /ledger`'s document, with every bank.
        fn ledger_view(&self) -> serde_json::Value {
            serde_json::from_str(&server::lock(&self.ledger).to_json(true)).unwrap()
        }

        async fn stop(self) {
            let _ = self.stop.send(());
            self.run.await.unwrap().unwrap();
        }
    }

    /// A canonical ISO 8583 bank and a JSON bank, plaintext.
    const FORMAT_ERROR_CONFIG: &str = r#"
[http]
bind = "127.0.0.1:0"
[[banks]]
name = "iso"
code = "003"
codec = "iso8583:canonical"
listen = "127.0.0.1:0"
tls = false
[[banks]]
name = "json"
code = "024"
codec = "json"
listen = "127.0.0.1:0"
tls = false
"#;

    #[tokio::test]
    async fn an_undecodable_request_with_readable_ids_is_answered_30_never_booked() {
        use fps_codecs::iso8583::IsoMessage;
        use fps_codecs::json::JsonCodec;
        use fps_codecs::model::ResponseCode;

        let ([iso, json], sim) = Running::start(FORMAT_ERROR_CONFIG, ["iso", "json"]).await;

        // Canonical 0200, sound layout, a letter in F4 (numeric).
        let canonical = Iso8583Codec::builtin("canonical").unwrap();
        let mut m = IsoMessage {
            mti: *b"0200",
            ..Default::default()
        };
        m.fields.insert(3, b"400000".to_vec());
        m.fields.insert(4, b"000000012345".to_vec());
        m.fields.insert(7, b"1123101500".to_vec());
        m.fields.insert(11, b"424242".to_vec());
        m.fields.insert(37, b"RRN000424242".to_vec());
        m.fields.insert(41, b"TERM0042".to_vec());
        m.fields.insert(100, b"003".to_vec());
        let mut bad_amount = BytesMut::new();
        canonical.encode_message(&m, &mut bad_amount).unwrap();
        let f4 = bad_amount
            .windows(12)
            .position(|w| w == b"000000012345")
            .unwrap();
        bad_amount[f4 + 11] = b'X';
        assert!(canonical.decode(&bad_amount).is_err());
        let answer = exchange(iso, &bad_amount)
            .await
            .expect("a request with readable ids is answered");
        let answer = canonical.decode(answer.as_bytes()).unwrap();
        assert_eq!(answer.mti.as_str(), "0210");
        assert_eq!(answer.response_code, Some(ResponseCode::FORMAT_ERROR));
        assert_eq!(answer.stan.unwrap().value(), 424242);
        assert_eq!(answer.rrn.unwrap().as_str(), "RRN000424242");
        assert_eq!(answer.terminal_id.unwrap().as_str(), "TERM0042");

        // The same message cut inside its last field: its offsets cannot
        // be trusted, so no STAN is echoed and nothing is answered.
        let cut = &bad_amount[..bad_amount.len() - 1];
        assert_eq!(exchange(iso, cut).await, None);

        // JSON: a readable request_id, a negative amount.
        let codec = JsonCodec::new();
        let mut t = credit_transfer();
        t.receiving_bank = Some(BankCode::parse(b"024").unwrap());
        t.message_id = Some(MessageId::parse(b"JSONFMT0001").unwrap());
        let mut good = BytesMut::new();
        codec.encode(&t, &mut good).unwrap();
        let mut doc: serde_json::Value = serde_json::from_slice(&good).unwrap();
        doc["amount"]["minor"] = serde_json::json!(-5);
        let bad = serde_json::to_vec(&doc).unwrap();
        assert!(codec.decode(&bad).is_err());
        let answer = exchange(json, &bad).await.expect("answered");
        let answer = codec.decode(answer.as_bytes()).unwrap();
        assert_eq!(answer.response_code, Some(ResponseCode::FORMAT_ERROR));
        assert_eq!(answer.message_id, t.message_id);

        let view = sim.ledger_view();
        assert_eq!(view["totals"]["bad_messages"], 3, "{view:#}");
        assert_eq!(view["totals"]["format_errors"], 2, "{view:#}");
        assert_eq!(view["totals"]["transactions"], 0, "{view:#}");
        assert_eq!(view["totals"]["approved"], 0, "{view:#}");
        sim.stop().await;
    }

    #[tokio::test]
    async fn a_bank_speaks_its_configured_versions_and_drops_what_it_cannot_read() {
        let ([v09, dflt], sim) = Running::start(CONFIG, ["v09", "dflt"]).await;

        let answer = exchange(v09, &encode(&transfer("V09A", "012"), "001.09", "001.11"))
            .await
            .expect("the configured bank answers its version");
        for want in [
            r#"xmlns="urn:iso:std:iso:20022:tech:xsd:pacs.002.001.11""#,
            "<OrgnlMsgNmId>pacs.008.001.09</OrgnlMsgNmId>",
            "<InstgAgt><FinInstnId><BICFI>BANKHKHHXXX</BICFI></FinInstnId></InstgAgt>",
            "<TxSts>ACSC</TxSts>",
        ] {
            assert!(answer.contains(want), "{want} not in {answer}");
        }
        // Other versions are not accepted (`accept_other_versions` unset):
        // neither bank reads the other's pacs.008, and neither answers it.
        let default_version = encode(&transfer("V09B", "012"), "001.08", "001.10");
        assert_eq!(exchange(v09, &default_version).await, None);
        let newer = encode(&transfer("DFLA", "024"), "001.09", "001.11");
        assert_eq!(exchange(dflt, &newer).await, None);
        let answer = exchange(dflt, &encode(&transfer("DFLB", "024"), "001.08", "001.10"))
            .await
            .expect("the default bank answers the default version");
        assert!(answer.contains("pacs.002.001.10"), "{answer}");

        let view = sim.ledger_view();
        let bad = |i: usize| view["banks"][i]["bad_messages"].as_u64();
        assert_eq!((bad(0), bad(1)), (Some(1), Some(1)), "{view:#}");
        assert_eq!(view["totals"]["approved"], 2, "{view:#}");
        sim.stop().await;
    }
}
