//! The upstream listener: canonical ISO 8583 over mTLS (DESIGN.md), many
//! requests in flight per connection, answered in any order.

mod connection;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fps_codecs::framing::{FrameConfig, Framer, LengthPrefix};
use fps_codecs::iso8583::Iso8583Codec;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::UpstreamConfig;
pub use crate::conn::Drain;
use crate::conn::{accept_loop, Side};
use crate::metrics as m;
use crate::pipeline::Pipeline;

/// Settings every upstream connection shares.
#[derive(Debug, Clone)]
pub(crate) struct ConnSettings {
    pub(crate) framer: Framer,
    pub(crate) codec: Iso8583Codec,
    pub(crate) max_in_flight: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Requests in flight over every connection (registered once).
    pub(crate) in_flight: metrics::Gauge,
}

/// Why the upstream listener cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// TLS material.
    #[error("upstream TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Settings the validation should have refused.
    #[error("upstream: {0}")]
    Invalid(String),
}

/// The bound upstream listener, ready to serve.
pub struct Upstream {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    settings: Arc<ConnSettings>,
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Prepare the listener on an already-bound socket (injected, so tests
    /// and socket activation can pass their own).
    pub fn new(cfg: &UpstreamConfig, listener: TcpListener) -> Result<Self, UpstreamError> {
        let tls = if cfg.tls {
            let (Some(cert), Some(key), Some(ca)) = (&cfg.cert, &cfg.key, &cfg.client_ca) else {
                return Err(UpstreamError::Invalid(
                    "tls needs cert, key and client_ca".into(),
                ));
            };
            Some(TlsAcceptor::from(crate::tls::upstream_server_config(
                cert, key, ca,
            )?))
        } else {
            tracing::warn!("upstream listener is PLAINTEXT (tls = false)");
            None
        };
        let framer = Framer::new(FrameConfig {
            prefix: LengthPrefix::Binary2,
            header_len: 0,
            length_includes_prefix: false,
            max_frame_bytes: cfg.max_frame_bytes,
        })
        .map_err(|e| UpstreamError::Invalid(e.to_string()))?;
        let codec = Iso8583Codec::builtin("canonical")
            .ok_or_else(|| UpstreamError::Invalid("canonical dialect missing".into()))?;
        Ok(Upstream {
            listener,
            tls,
            settings: Arc::new(ConnSettings {
                framer,
                codec,
                max_in_flight: cfg.max_in_flight_per_connection,
                handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
                idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
                in_flight: metrics::gauge!(m::UPSTREAM_IN_FLIGHT),
            }),
            connections: Arc::new(Semaphore::new(cfg.max_connections)),
            max_connections: cfg.max_connections,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accept connections until `shutdown` turns true; then stop accepting
    /// and return a handle that waits for the open connections to drain.
    pub async fn serve(self, pipeline: Arc<Pipeline>, shutdown: watch::Receiver<bool>) -> Drain {
        let side = Side {
            what: "upstream connection",
            refused_metric: m::UPSTREAM_REFUSED,
        };
        let (tls, settings) = (self.tls, self.settings);
        accept_loop(
            &self.listener,
            self.connections,
            self.max_connections,
            shutdown,
            side,
            |tcp, peer, permit, shutdown| {
                let tls = tls.clone();
                let settings = settings.clone();
                let pipeline = pipeline.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    connection::accept(tcp, peer, tls, settings, pipeline, shutdown).await;
                });
            },
        )
        .await
    }
}
