//! Bank simulator (`fps-loadtest bank-sim --config FILE`): one process
//! simulating many banks, each an (m)TLS server speaking its interface
//! (`iso8583:<dialect>`, `iso20022`, `json`) through `fps-codecs`, with
//! deterministic outcomes, seeded latency and fault injection, and a ledger
//! served as JSON on `GET /ledger` so that tests can prove "no double debit"
//! and "every timeout reversed".
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
                Some(CodecName::Iso20022) => (Style::Iso20022, Arc::new(Iso20022Codec::default())),
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
