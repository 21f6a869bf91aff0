//! Build the switch from a validated config and run it until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::bank::{BankInbound, BankPool, InboundError, PoolBuildError};
use crate::clock::{MonotonicClock, SwitchClock};
use crate::config::Config;
use crate::journal::{FileJournal, Journal, JournalConfig, JournalError};
use crate::keystore::{KeyStore, KeyStoreConfig, KeyStoreError};
use crate::pipeline::Pipeline;
use crate::routing::{load_proxy_directory, ProxyLoadError, ProxyReloader, Routing};
use crate::safety::recovery::{self, KeyedJournal, Recovery, Replay};
use crate::safety::reversals::Reversals;
use crate::safety::{NullJournal, Safety};
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
    /// The `[bank_inbound]` listener.
    #[error(transparent)]
    Inbound(#[from] InboundError),
    /// The `[routing]` section (only when the config was not validated).
    #[error("routing: {0}")]
    Routing(#[from] fps_routing::ConfigErrors),
    /// The proxy directory file.
    #[error("routing.proxy_directory: {0}")]
    ProxyDirectory(#[from] ProxyLoadError),
    /// The journal could not be opened or replayed.
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The idempotency key store could not be opened.
    #[error("journal.dir key store: {0}")]
    KeyStore(#[from] KeyStoreError),
    /// The `[hsm]` could not be started, or keys the banks' `auth` names are
    /// missing from it (every problem, `; `-separated).
    #[error("hsm: {0}")]
    Hsm(String),
}

/// A built switch: listeners bound, bank pools ready to start.
#[derive(Debug)]
pub struct Switch {
    upstream: Upstream,
    /// The listener banks open links to, when `[bank_inbound]` is set.
    inbound: Option<BankInbound>,
    admin: Admin,
    pipeline: Arc<Pipeline>,
    pools: Vec<Arc<BankPool>>,
    routing: Arc<Routing>,
    safety: Arc<Safety>,
    reversals: Arc<Reversals>,
    keystore: Option<Arc<KeyStore>>,
    retention: Duration,
    drain_timeout: Duration,
    shutdown_tx: watch::Sender<bool>,
    /// A journal is configured: outbound ids are reserved in it.
    journaled: bool,
}

impl Switch {
    /// Bind the listeners and build the bank pools of a validated config.
    /// Opens (and replays) the journal first: see [`crate::safety::recovery`].
    pub async fn build(cfg: &Config) -> Result<Switch, StartError> {
        Self::build_with_clock(cfg, Arc::new(SwitchClock::start())).await
    }

    /// As [`Switch::build`], with the monotonic clock that routing
    /// (breaker cool-downs, retry backoff) runs on injected.
    pub async fn build_with_clock(
        cfg: &Config,
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
        let routing = Arc::new(Routing::new(router, proxies, proxy_path, clock.clone()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let hsm = start_hsm(cfg).await?;
        let pools = cfg
            .banks
            .iter()
            .map(|b| BankPool::new(b, hsm.as_ref(), shutdown_rx.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let participant = cfg
            .switch
            .participant_code
            .as_deref()
            .and_then(|c| fps_codecs::model::BankCode::parse(c.as_bytes()).ok());
        let retention = Duration::from_secs(cfg.idempotency.retention_hours.max(1) * 3_600);
        let bank_names: Vec<String> = cfg.banks.iter().map(|b| b.name.clone()).collect();
        let (journal, keystore, index, recovery) =
            open_journal(cfg, &bank_names, retention, clock.as_ref())?;
        for (pool, last) in pools.iter().zip(&recovery.last_ids) {
            if let Some((stan, rrn)) = last {
                pool.resume_ids(*stan, *rrn);
            }
        }
        // A duplicate waits at most as long as its original can take.
        let wait_limit = cfg
            .banks
            .iter()
            .map(|b| Duration::from_millis(b.request_timeout_ms))
            .max()
            .unwrap_or(Duration::from_secs(30))
            * 2;
        let safety = Arc::new(Safety::new(
            journal,
            keystore
                .clone()
                .map(|k| k as Arc<dyn crate::keystore::KeyStorage>),
            index,
            recovery.next_txn,
            clock.clone(),
            wait_limit,
        ));
        let reversals = Reversals::new(
            &pools,
            cfg.reversal.queue_config(),
            safety.clone(),
            clock.clone(),
            crate::safety::unix_ms(),
        );
        let journaled = cfg.journal.dir.is_some();
        if journaled {
            // Before any link signs on: every id used from now on is covered.
            reserve_ids(&safety, &pools).await;
        }
        resume(&recovery, &pools, &safety, &reversals, keystore.as_deref()).await;
        let pipeline = Arc::new(Pipeline::new(
            &pools,
            routing.clone(),
            safety.clone(),
            reversals.clone(),
            participant,
        ));
        let upstream = Upstream::new(&cfg.upstream, bind("upstream", &cfg.upstream.bind).await?)?;
        let inbound = match &cfg.bank_inbound {
            Some(l) => Some(BankInbound::new(
                cfg,
                hsm.as_ref(),
                bind("bank_inbound", &l.bind).await?,
            )?),
            None => None,
        };
        let admin = Admin::new(bind("admin", &cfg.admin.bind).await?, metrics);
        Ok(Switch {
            upstream,
            inbound,
            admin,
            pipeline,
            pools,
            routing,
            safety,
            reversals,
            keystore,
            retention,
            drain_timeout: Duration::from_millis(cfg.shutdown.drain_timeout_ms),
            shutdown_tx,
            journaled,
        })
    }

    /// Where the upstream listener is bound.
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where the `[bank_inbound]` listener is bound, if there is one.
    pub fn bank_inbound_addr(&self) -> Option<SocketAddr> {
        self.inbound.as_ref().and_then(|i| i.local_addr().ok())
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
        let reversal_tasks = self.reversals.spawn(rx.clone());
        let upkeep = tokio::spawn(upkeep(
            self.safety.clone(),
            self.reversals.clone(),
            self.keystore.clone(),
            self.retention,
            rx.clone(),
        ));
        let ids = self.journaled.then(|| {
            tokio::spawn(ids_upkeep(
                self.safety.clone(),
                self.pools.clone(),
                rx.clone(),
            ))
        });
        let admin = tokio::spawn(self.admin.serve(self.pipeline.clone(), rx.clone()));
        let inbound = self
            .inbound
            .map(|i| tokio::spawn(i.serve(self.pipeline.clone(), rx.clone())));
        let upstream = tokio::spawn(self.upstream.serve(self.pipeline.clone(), rx));
        shutdown.await;
        let drain_until = tokio::time::Instant::now() + self.drain_timeout;
        tracing::info!(
            drain_timeout_ms = self.drain_timeout.as_millis() as u64,
            "shutting down: draining"
        );
        let _ = self.shutdown_tx.send(true);
        // Upstream connections and inbound bank links drain together,
        // within the one deadline.
        let upstream_drained = async {
            match upstream.await {
                Ok(drain) => drain.wait(self.drain_timeout).await,
                Err(_) => false,
            }
        };
        let inbound_drained = async {
            match inbound {
                Some(t) => match t.await {
                    Ok(drain) => drain.wait(self.drain_timeout).await,
                    Err(_) => false,
                },
                None => true,
            }
        };
        let (up, inb) = tokio::join!(upstream_drained, inbound_drained);
        let drained = up && inb;
        if drained {
            tracing::info!("drained");
        } else {
            tracing::warn!("drain deadline passed with requests in flight");
        }
        // Bank links last: requests still in flight on them get what is left
        // of the drain deadline, then each link signs off (bounded wait).
        close_pools(&self.pools, drain_until).await;
        for t in reversal_tasks {
            let _ = t.await;
        }
        upkeep.abort();
        if let Some(t) = ids {
            t.abort();
        }
        if let Some(ks) = &self.keystore {
            if let Err(e) = ks.flush().await {
                tracing::warn!(error = %e, "key store flush at shutdown failed (the journal has the keys)");
            }
        }
        admin.abort();
        drained
    }
}

/// Close every bank pool at once (see [`BankPool::close`]).
async fn close_pools(pools: &[Arc<BankPool>], drain_until: tokio::time::Instant) {
    let mut closing = tokio::task::JoinSet::new();
    for p in pools {
        let p = p.clone();
        closing.spawn(async move { p.close(drain_until).await });
    }
    while closing.join_next().await.is_some() {}
    for p in pools {
        // Anything a close left behind (it aborts what it waited too long for).
        p.stop();
    }
}

/// How often the outbound-id reservations are checked.
const IDS_UPKEEP: Duration = Duration::from_millis(50);

/// Journal the next block of outbound ids of every bank that needs one
/// (see [`crate::bank::ids::OutboundIds`]).
async fn reserve_ids(safety: &Safety, pools: &[Arc<BankPool>]) {
    for pool in pools {
        let Some(r) = pool.ids_reservation_due() else {
            continue;
        };
        let rec = crate::safety::record::Record::IdsReserved {
            bank: pool.name(),
            stan: r.last_stan,
            rrn: r.last_rrn,
        };
        match safety.write(&rec).await {
            Ok(_) => pool.ids_reserved(&r),
            // Retried on the next tick; the journal's own alerts fire.
            Err(e) => {
                tracing::warn!(bank = %pool.name(), error = %e, "outbound ids not reserved")
            }
        }
    }
}

/// Keep outbound ids reserved ahead of use until shutdown.
async fn ids_upkeep(
    safety: Arc<Safety>,
    pools: Vec<Arc<BankPool>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(IDS_UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => reserve_ids(&safety, &pools).await,
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// Start the `[hsm]` (opening its sessions, logging in) and check that
/// every key the banks' `auth` names is there, or refuse to start.
async fn start_hsm(cfg: &Config) -> Result<Option<fps_hsm::Hsm>, StartError> {
    let Some(hsm_cfg) = cfg.hsm.clone() else {
        return Ok(None);
    };
    let backend = hsm_cfg.backend;
    // Opening sessions blocks (PKCS#11 C_OpenSession, C_Login).
    let hsm = tokio::task::spawn_blocking(move || fps_hsm::Hsm::builder(hsm_cfg).start())
        .await
        .map_err(|_| StartError::Hsm("start-up task failed".into()))?
        .map_err(|e| StartError::Hsm(e.to_string()))?;
    let keys = cfg.hsm_keys();
    if let Err(errors) = hsm.check_keys(&keys).await {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(StartError::Hsm(all.join("; ")));
    }
    tracing::info!(backend = ?backend, keys = keys.len(), "hsm ready: every bank key found");
    Ok(Some(hsm))
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

type Opened = (
    Arc<dyn Journal>,
    Option<Arc<KeyStore>>,
    fps_routing::idempotency::IdempotencyIndex,
    Recovery,
);

/// Open the key store and the journal, replaying the journal into a fresh
/// idempotency index (and the key store's missing tail).
fn open_journal(
    cfg: &Config,
    banks: &[String],
    retention: Duration,
    clock: &dyn MonotonicClock,
) -> Result<Opened, StartError> {
    let mut index = fps_routing::idempotency::IdempotencyIndex::new(
        cfg.idempotency.max_keys_in_memory,
        retention,
    );
    if cfg.idempotency.pretouch {
        let started = std::time::Instant::now();
        let slots = index.pretouch();
        tracing::info!(
            keys = slots,
            ms = started.elapsed().as_millis() as u64,
            "idempotency index made resident"
        );
    }
    let Some(dir) = &cfg.journal.dir else {
        tracing::warn!("no [journal] dir: nothing survives a crash (development only)");
        let recovery = Replay::new(banks, &mut index, clock.now()).finish();
        return Ok((Arc::new(NullJournal::default()), None, index, recovery));
    };
    std::fs::create_dir_all(dir).map_err(|source| {
        StartError::Journal(JournalError::Io {
            path: dir.clone(),
            source,
        })
    })?;
    let mut kc = KeyStoreConfig::new(dir.join("keys.redb"));
    kc.commit_interval = Duration::from_millis(cfg.journal.keystore_commit_interval_ms);
    kc.retention = retention;
    let keystore = Arc::new(KeyStore::open(kc)?);
    let mut jc = JournalConfig::new(dir.join("segments"));
    jc.fsync = cfg.journal.fsync;
    jc.segment_bytes = cfg.journal.segment_bytes;
    let low_water = keystore.low_water_lsn();
    let mut replay = Replay::new(banks, &mut index, clock.now()).with_keystore(&keystore);
    let (journal, report) = FileJournal::open(jc, &mut |lsn, unix_ms, payload| {
        replay.record(lsn.0, unix_ms, payload)
    })?;
    let recovery = replay.finish();
    // Before the store follows the journal (which lets its low-water mark
    // move): a key the catch-up could not put must stay above the mark.
    if let Some(lsn) = recovery.first_missed_lsn {
        keystore.hold_low_water_below(lsn);
    }
    keystore.follow_journal(journal.durable_lsn_reader());
    metrics::counter!(crate::metrics::KEYSTORE_CAUGHT_UP).increment(recovery.keys_caught_up);
    tracing::info!(
        records = report.records,
        segments = report.segments,
        torn_tail_bytes = report.torn_tail_bytes,
        keys_restored = recovery.keys_restored,
        keystore_low_water_lsn = low_water,
        keys_caught_up = recovery.keys_caught_up,
        keys_checked = recovery.keys_checked,
        keys_missed = recovery.keys_missed,
        outcome_unknown = recovery.unknown.len(),
        reversing = recovery.reversing.len(),
        bad_records = recovery.bad_records,
        "journal replayed"
    );
    let journal = KeyedJournal::new(journal, keystore.clone());
    Ok((Arc::new(journal), Some(keystore), index, recovery))
}

/// Act on what the replay found: transactions sent without an answer are
/// journaled as reversing with a final 68 (their keys completed with it, in
/// memory and in the key store) and queued for reversal; reversals under
/// way resume.
async fn resume(
    recovery: &Recovery,
    pools: &[Arc<BankPool>],
    safety: &Safety,
    reversals: &Reversals,
    keystore: Option<&KeyStore>,
) {
    if let (Some(ks), false) = (keystore, recovery.unknown.is_empty()) {
        // Room in the store's queue for the keys below (a put refused
        // while the catch-up drains would hold its low-water mark).
        if let Err(e) = ks.flush().await {
            tracing::warn!(error = %e, "key store catch-up not committed yet");
        }
    }
    for p in &recovery.unknown {
        let Ok(sent) = pools[p.bank].decode_wire(&p.wire) else {
            tracing::error!(txn = p.txn.0, bank = %pools[p.bank].name(), "journaled message no longer decodes: manual action needed");
            continue;
        };
        if safety
            .reversing(p.txn, pools[p.bank].name(), &p.wire)
            .await
            .is_err()
        {
            tracing::error!(txn = p.txn.0, "journal unavailable during recovery");
        }
        let outcome = fps_routing::idempotency::Outcome::new(fps_codecs::model::ResponseCode::LATE);
        let written = safety
            .write(&crate::safety::record::Record::Final {
                txn: p.txn,
                outcome: outcome.clone(),
            })
            .await;
        if let (Ok(lsn), Some(ks)) = (written, keystore) {
            store_final(ks, p, &outcome, lsn.0);
        }
        if let Some((scope, request)) = &p.key {
            safety.restore_encoded(scope, request, outcome);
        }
        tracing::warn!(txn = p.txn.0, bank = %pools[p.bank].name(), "in flight at the crash: reversing");
        if let Err(e) = reversals.enqueue(p.bank, p.txn, sent) {
            tracing::error!(txn = p.txn.0, error = %e, "reversal could not be queued: manual action needed");
        }
    }
    for p in &recovery.reversing {
        let Ok(sent) = pools[p.bank].decode_wire(&p.wire) else {
            tracing::error!(txn = p.txn.0, bank = %pools[p.bank].name(), "journaled message no longer decodes: manual action needed");
            continue;
        };
        if let Err(e) = reversals.enqueue(p.bank, p.txn, sent) {
            tracing::error!(txn = p.txn.0, error = %e, "reversal could not be queued: manual action needed");
        }
    }
}

/// Put the key of a transaction settled at start-up (final record at `lsn`)
/// into the key store, as `Safety::finish` does for every other final.
fn store_final(
    keystore: &KeyStore,
    p: &recovery::Pending,
    outcome: &fps_routing::idempotency::Outcome,
    lsn: u64,
) {
    let canonical = fps_codecs::iso8583::Iso8583Codec::builtin("canonical")
        .expect("the canonical dialect is built in");
    let rec = p.key.as_ref().and_then(|(scope, request)| {
        recovery::key_record(
            &canonical,
            scope,
            request,
            outcome.clone(),
            lsn,
            crate::safety::unix_ms(),
        )
    });
    let Some(rec) = rec else {
        // No key to look up later (the index skips it too); the mark must
        // still not pass its final record.
        keystore.hold_low_water_below(lsn);
        return;
    };
    if let Err(e) = recovery::put_patiently(keystore, rec) {
        // A refused put already holds the store's low-water mark below
        // `lsn`: the next start puts it from the journal.
        tracing::error!(txn = p.txn.0, error = %e, "key of a transaction settled at start-up not stored yet: it stays in the journal");
    }
}

/// How often keys expire, and how often old journal segments and key
/// store entries are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// Background upkeep: expire keys, compact the journal and the key store.
async fn upkeep(
    safety: Arc<Safety>,
    reversals: Arc<Reversals>,
    keystore: Option<Arc<KeyStore>>,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    let mut last_compact = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        safety.expire();
        if last_compact.elapsed() < COMPACT_EVERY {
            continue;
        }
        last_compact = tokio::time::Instant::now();
        safety.compact(&reversals, retention).await;
        if let Some(ks) = &keystore {
            let ks = ks.clone();
            let before = crate::safety::unix_ms().saturating_sub(retention.as_millis() as u64);
            let expired = tokio::task::spawn_blocking(move || {
                ks.expire_due(before, crate::keystore::MAX_EXPIRE_PER_CALL)
            })
            .await;
            match expired {
                Ok(Ok(n)) => tracing::debug!(keys = n, "key store: expired keys"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "key store expiry failed; retrying at the next pass")
                }
                Err(e) => tracing::warn!(error = %e, "key store expiry task failed"),
            }
        }
    }
}
