//! Links banks open to the switch (bank-originated traffic, DESIGN.md
//! "Who uses it"): the `[bank_inbound]` mTLS 1.3 listener.
//!
//! After the handshake the bank is identified from its client certificate
//! ([`identity`]): the certificate must verify against `client_ca` *and*
//! carry the `inbound.identity` (DNS SAN or CN) or `inbound.sha256` of
//! exactly one configured bank whose inbound links are enabled. Anything
//! else is closed at once and counted in
//! `fps_switch_bank_inbound_refused_total{reason}`; only the certificate's
//! subject is logged.
//!
//! On an accepted link ([`link`]) each frame is decoded with that bank's
//! codec, its MAC or signature checked with the bank's `auth` (a request
//! that fails is answered `63` and never routed), and the request goes
//! through the same [`Pipeline::handle`] as upstream traffic, with the
//! bank's name as its idempotency scope. The answer is encoded in the
//! bank's dialect, sealed, and written back on the same link; many
//! requests are in flight per link and answered in any order.

mod identity;
mod link;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use fps_codecs::framing::Framer;
use fps_codecs::model::BankCode;
use fps_routing::idempotency::ClientScope;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::{BankAuth, BankCodec};
use crate::config::{BankConfig, CodecName, Config};
pub use crate::conn::Drain;
use crate::conn::{accept_loop, Side};
use crate::metrics as m;
use crate::pipeline::Pipeline;

pub use identity::{fingerprint_sha256, CertIdentity};

/// Why the inbound listener cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// TLS material.
    #[error("bank_inbound TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Settings the validation should have refused.
    #[error("{path}: {reason}")]
    Invalid {
        /// The config key.
        path: String,
        /// Why.
        reason: String,
    },
}

/// One bank that may open links: how it is recognised and spoken to.
#[derive(Debug)]
pub(crate) struct InboundBank {
    pub(crate) name: String,
    pub(crate) code: BankCode,
    pub(crate) enabled: bool,
    /// Lower-cased DNS name or CN its certificate must carry.
    pub(crate) identity: Option<String>,
    pub(crate) sha256: Option<[u8; 32]>,
    pub(crate) codec: BankCodec,
    pub(crate) framer: Framer,
    pub(crate) auth: Option<Arc<BankAuth>>,
    /// Idempotency keys of this bank's requests live under this scope.
    pub(crate) scope: ClientScope,
    /// Bounds this bank's open links.
    pub(crate) links: Arc<Semaphore>,
    /// Our own ids (ISO 20022 answer message ids, missing STAN/RRN of
    /// ISO 20022 and JSON requests).
    pub(crate) seq: AtomicU64,
    pub(crate) boot_ms: u64,
}

/// Limits every inbound link shares.
#[derive(Debug, Clone)]
pub(crate) struct LinkSettings {
    pub(crate) max_in_flight: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// The bound inbound listener, ready to serve.
pub struct BankInbound {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    banks: Arc<Vec<Arc<InboundBank>>>,
    settings: Arc<LinkSettings>,
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl std::fmt::Debug for BankInbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankInbound")
            .field("listener", &self.listener)
            .field("banks", &self.banks.len())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl BankInbound {
    /// The listener of a validated config on an already-bound socket;
    /// `hsm` holds the banks' `auth` keys. The config must have a
    /// `[bank_inbound]` section.
    pub fn new(
        cfg: &Config,
        hsm: Option<&fps_hsm::Hsm>,
        listener: TcpListener,
    ) -> Result<Self, InboundError> {
        let Some(l) = &cfg.bank_inbound else {
            return Err(InboundError::Invalid {
                path: "bank_inbound".into(),
                reason: "missing".into(),
            });
        };
        let acceptor = TlsAcceptor::from(crate::tls::upstream_server_config(
            &l.cert,
            &l.key,
            &l.client_ca,
        )?);
        let boot_ms = crate::safety::unix_ms();
        let mut banks = Vec::new();
        for (i, b) in cfg.banks.iter().enumerate() {
            if b.inbound.is_some() {
                banks.push(Arc::new(inbound_bank(
                    i,
                    b,
                    hsm,
                    l.max_frame_bytes,
                    boot_ms,
                )?));
            }
        }
        for b in &banks {
            metrics::gauge!(m::BANK_INBOUND_LINKS, "bank" => b.name.clone()).set(0.0);
        }
        if banks.is_empty() {
            tracing::warn!("[bank_inbound] is configured but no bank has an inbound section: every link will be refused");
        }
        Ok(BankInbound {
            listener,
            acceptor,
            banks: Arc::new(banks),
            settings: Arc::new(LinkSettings {
                max_in_flight: l.max_in_flight_per_connection,
                handshake_timeout: Duration::from_millis(l.handshake_timeout_ms),
                idle_timeout: Duration::from_millis(l.idle_timeout_ms),
            }),
            connections: Arc::new(Semaphore::new(l.max_connections)),
            max_connections: l.max_connections,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept links until `shutdown` turns true; then stop accepting and
    /// return a handle that waits for the open links to drain.
    pub async fn serve(self, pipeline: Arc<Pipeline>, shutdown: watch::Receiver<bool>) -> Drain {
        let side = Side {
            what: "bank inbound link",
            refused_metric: m::BANK_INBOUND_REFUSED,
        };
        let (acceptor, banks, settings) = (self.acceptor, self.banks, self.settings);
        accept_loop(
            &self.listener,
            self.connections,
            self.max_connections,
            shutdown,
            side,
            |tcp, peer, permit, shutdown| {
                let acceptor = acceptor.clone();
                let banks = banks.clone();
                let settings = settings.clone();
                let pipeline = pipeline.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    link::accept(tcp, peer, acceptor, banks, settings, pipeline, shutdown).await;
                });
            },
        )
        .await
    }
}

fn inbound_bank(
    index: usize,
    b: &BankConfig,
    hsm: Option<&fps_hsm::Hsm>,
    max_frame_bytes: usize,
    boot_ms: u64,
) -> Result<InboundBank, InboundError> {
    let at = |key: &str| format!("banks[{index}].{key}");
    let invalid = |path: String, reason: String| InboundError::Invalid { path, reason };
    // Only called for banks with an `inbound` section.
    let Some(inb) = &b.inbound else {
        return Err(invalid(at("inbound"), "missing".into()));
    };
    let code =
        BankCode::parse(b.code.as_bytes()).map_err(|e| invalid(at("code"), e.to_string()))?;
    let codec_name =
        CodecName::parse(&b.codec).ok_or_else(|| invalid(at("codec"), "unknown codec".into()))?;
    let iso20022 = b.iso20022_config().map_err(|errors| {
        let (key, reason) = errors.into_iter().next().unwrap_or_default();
        invalid(at(&format!("iso20022.{key}")), reason)
    })?;
    let mut codec = BankCodec::build(&codec_name, &iso20022)
        .map_err(|e| invalid(at("codec"), e.to_string()))?;
    let auth = match &b.auth {
        None => None,
        Some(a) => {
            let keys = a.keys().map_err(|errors| {
                let (key, reason) = errors.into_iter().next().unwrap_or_default();
                invalid(at(&format!("auth.{key}")), reason)
            })?;
            let hsm = hsm.ok_or_else(|| invalid(at("auth"), "needs an [hsm] section".into()))?;
            codec = codec.authenticating();
            let auth = BankAuth::new(hsm.clone(), codec.codec.clone(), keys, &b.name)
                .map_err(|reason| invalid(at("auth"), reason))?;
            Some(Arc::new(auth))
        }
    };
    let mut framing = inb.framing.unwrap_or(b.framing);
    framing.max_frame_bytes = framing.max_frame_bytes.min(max_frame_bytes);
    let framer = Framer::new(framing).map_err(|e| invalid(at("inbound.framing"), e.to_string()))?;
    let sha256 = match inb.sha256_bytes() {
        None => None,
        Some(Ok(pin)) => Some(pin),
        Some(Err(reason)) => return Err(invalid(at("inbound.sha256"), reason.into())),
    };
    let scope = ClientScope::new(&format!("bank-inbound:{}", b.name))
        .map_err(|e| invalid(at("name"), e.to_string()))?;
    Ok(InboundBank {
        name: b.name.clone(),
        code,
        enabled: inb.enabled,
        identity: inb.identity.as_ref().map(|s| s.to_ascii_lowercase()),
        sha256,
        codec,
        framer,
        auth,
        scope,
        links: Arc::new(Semaphore::new(inb.max_links)),
        seq: AtomicU64::new(0),
        boot_ms,
    })
}
