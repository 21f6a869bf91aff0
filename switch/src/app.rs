//! Build the switch from a validated config and run it until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::bank::{BankPool, PoolBuildError};
use crate::clock::{MonotonicClock, SwitchClock};
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::reversal::{LoggingReversalSink, ReversalSink};
use crate::routing::{load_proxy_directory, ProxyLoadError, ProxyReloader, Routing};
use crate::upstream::{Upstream, UpstreamError};

/// Why the switch could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The upstream listener.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A bank pool.
    #[error(transparent)]
    Bank(#[from] PoolBuildError),
    /// The `[routing]` section (only when the config was not validated).
    #[error("routing: {0}")]
    Routing(#[from] fps_routing::ConfigErrors),
    /// The proxy directory file.
    #[error("routing.proxy_directory: {0}")]
    ProxyDirectory(#[from] ProxyLoadError),
}

/// A built switch: listeners bound, bank pools ready to start.
#[derive(Debug)]
pub struct Switch {
    upstream: Upstream,
    admin: Admin,
    pipeline: Arc<Pipeline>,
    pools: Vec<Arc<BankPool>>,
    routing: Arc<Routing>,
    drain_timeout: Duration,
    shutdown_tx: watch::Sender<bool>,
}

impl Switch {
    /// Bind the listeners and build the bank pools of a validated config.
    pub async fn build(cfg: &Config) -> Result<Switch, StartError> {
        Self::build_with(cfg, Arc::new(LoggingReversalSink)).await
    }

    /// As [`Switch::build`], with the reversal sink injected.
    pub async fn build_with(
        cfg: &Config,
        reversals: Arc<dyn ReversalSink>,
    ) -> Result<Switch, StartError> {
        Self::build_with_clock(cfg, reversals, Arc::new(SwitchClock::start())).await
    }

    /// As [`Switch::build_with`], with the monotonic clock that routing
    /// (breaker cool-downs, retry backoff) runs on injected too.
    pub async fn build_with_clock(
        cfg: &Config,
        reversals: Arc<dyn ReversalSink>,
        clock: Arc<dyn MonotonicClock>,
    ) -> Result<Switch, StartError> {
        let metrics = crate::metrics::install();
        // Links are numbered in `[[banks]]` order, like the pools below.
        let router = cfg.routing_rules().build(&cfg.link_names())?;
        let proxy_path = cfg.routing.proxy_directory.clone();
        let proxies = match &proxy_path {
            Some(p) => load_proxy_directory(p)?,
            None => fps_routing::ProxyDirectory::default(),
        };
        tracing::info!(
            routes = router.routes().len(),
            bins = router.bins().len(),
            proxies = proxies.len(),
            "routing loaded"
        );
        let routing = Arc::new(Routing::new(router, proxies, proxy_path, clock));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let pools = cfg
            .banks
            .iter()
            .map(|b| BankPool::new(b, shutdown_rx.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let participant = cfg
            .switch
            .participant_code
            .as_deref()
            .and_then(|c| fps_codecs::model::BankCode::parse(c.as_bytes()).ok());
        let pipeline = Arc::new(Pipeline::new(
            &pools,
            routing.clone(),
            reversals,
            participant,
        ));
        let upstream = Upstream::new(&cfg.upstream, bind("upstream", &cfg.upstream.bind).await?)?;
        let admin = Admin::new(bind("admin", &cfg.admin.bind).await?, metrics);
        Ok(Switch {
            upstream,
            admin,
            pipeline,
            pools,
            routing,
            drain_timeout: Duration::from_millis(cfg.shutdown.drain_timeout_ms),
            shutdown_tx,
        })
    }

    /// Where the upstream listener is bound.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Re-read the proxy directory file and swap it in (what SIGHUP does).
    /// A bad file keeps the directory in force. Returns the entry count.
    pub async fn reload_proxies(&self) -> Result<usize, ProxyLoadError> {
        self.proxy_reloader().reload().await
    }

    /// A handle that reloads the proxy directory, usable after [`Switch::run`]
    /// has taken the switch (the SIGHUP handler holds one).
    pub fn proxy_reloader(&self) -> ProxyReloader {
        ProxyReloader::new(self.routing.clone())
    }

    /// Where the admin listener is bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Run until `shutdown` completes, then stop accepting, let in-flight
    /// requests finish within the drain deadline and stop the bank links.
    /// Returns whether everything drained in time.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> bool {
        for p in &self.pools {
            p.start();
        }
        let rx = self.shutdown_tx.subscribe();
        let admin = tokio::spawn(self.admin.serve(self.pipeline.clone(), rx.clone()));
        let upstream = tokio::spawn(self.upstream.serve(self.pipeline.clone(), rx));
        shutdown.await;
        tracing::info!(
            drain_timeout_ms = self.drain_timeout.as_millis() as u64,
            "shutting down: draining"
        );
        let _ = self.shutdown_tx.send(true);
        let drained = match upstream.await {
            Ok(drain) => drain.wait(self.drain_timeout).await,
            Err(_) => false,
        };
        if drained {
            tracing::info!("drained");
        } else {
            tracing::warn!("drain deadline passed with requests in flight");
        }
        for p in &self.pools {
            p.stop();
        }
        admin.abort();
        drained
    }
}

async fn bind(what: &'static str, addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what,
            addr: addr.to_owned(),
            source,
        })
}
