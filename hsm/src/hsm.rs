//! [`Hsm`]: the async facade the switch calls, and [`HsmKey`], a key-bound
//! handle implementing the blocking [`Signer`]/[`Verifier`]/[`Mac`] traits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::clock::{Clock, SystemClock};
use crate::inline::InlineSessions;
use crate::keyring::{Accepted, KeyRing};
use crate::pool::{class_for, EngineFactory, Job, Pool, Reply, Request, Shared, Work};
use crate::software::SoftwareKeyStore;
use crate::{
    metrics, Backend, HsmConfig, HsmError, KeyRef, Mac, Mechanism, Operation, Signer, Verifier,
};

/// A running HSM client: worker threads, sessions and the request queue.
/// Cheap to clone; the workers stop (and sessions close) when the last clone
/// is dropped, after finishing the request each is running.
#[derive(Debug, Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Declared before `pool`: on drop, its reopening threads stop first.
    inline: Option<InlineSessions>,
    pool: Pool,
    shared: Arc<Shared>,
    backend: Backend,
}

/// Builds an [`Hsm`] from a validated config plus injected parts.
#[derive(Debug)]
pub struct HsmBuilder {
    config: HsmConfig,
    clock: Arc<dyn Clock>,
    software_keys: Option<SoftwareKeyStore>,
}

impl HsmBuilder {
    /// Uses `clock` for key rotation decisions (tests: [`crate::clock::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// danger_software only: serve these keys (in addition to any loaded
    /// from `danger_key_dir`).
    pub fn software_keys(mut self, keys: SoftwareKeyStore) -> Self {
        self.software_keys = Some(keys);
        self
    }

    /// Validates the config, reads the PIN, opens one session per thread
    /// (logging in) and starts the workers. Every start-up problem (missing
    /// module, wrong token label, wrong PIN) is returned here.
    pub fn start(self) -> Result<Hsm, HsmError> {
        let config = self.config;
        if let Err(mut errors) = config.validate() {
            // validate() returns at least one error when it fails.
            return Err(errors.swap_remove(0));
        }
        metrics::describe();
        let (factory, store_name): (Arc<dyn EngineFactory>, String) = match config.backend {
            Backend::Pkcs11 => {
                let factory = crate::pkcs11::Pkcs11Factory::connect(&config)?;
                let name = format!("token `{}`", factory.token_label());
                (Arc::new(factory), name)
            }
            Backend::DangerSoftware => {
                tracing::warn!(
                    "hsm backend is danger_software: keys are held in process memory; \
                     development only, never use in production"
                );
                let store = self.software_keys.unwrap_or_default();
                if let Some(dir) = &config.danger_key_dir {
                    store.load_dir(dir)?;
                }
                (
                    Arc::new(crate::software::SoftwareFactory::new(store)),
                    "danger_software key store".to_owned(),
                )
            }
        };
        let shared = Arc::new(Shared {
            keyring: KeyRing::new(
                config.rotation_overlap(),
                Duration::from_secs(config.key_refresh_secs),
            ),
            clock: self.clock,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            store_name,
        });
        let pool = Pool::start(
            Arc::clone(&factory),
            Arc::clone(&shared),
            config.threads,
            config.queue_bound,
        )?;
        let inline = match config.inline_sessions {
            0 => None,
            count => Some(InlineSessions::open(
                factory,
                Arc::clone(&shared),
                config.threads,
                count,
            )?),
        };
        Ok(Hsm {
            inner: Arc::new(Inner {
                inline,
                pool,
                shared,
                backend: config.backend,
            }),
        })
    }
}

impl Hsm {
    /// Starts building an [`Hsm`] from `config`.
    pub fn builder(config: HsmConfig) -> HsmBuilder {
        HsmBuilder {
            config,
            clock: Arc::new(SystemClock),
            software_keys: None,
        }
    }

    /// Which backend serves requests.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Requests currently waiting for a worker.
    pub fn queue_len(&self) -> usize {
        self.inner.pool.queue_len()
    }

    /// Signs `message` with the newest version of `key`.
    pub async fn sign(&self, key: &KeyRef, message: Bytes) -> Result<Vec<u8>, HsmError> {
        bytes_reply(
            self.call(Job::Crypto(Operation::Sign), key, message, Bytes::new())
                .await,
        )
    }

    /// Checks `signature` over `message` (current version, or the previous
    /// one during the rotation overlap).
    pub async fn verify(
        &self,
        key: &KeyRef,
        message: Bytes,
        signature: Bytes,
    ) -> Result<(), HsmError> {
        unit_reply(
            self.call(Job::Crypto(Operation::Verify), key, message, signature)
                .await,
        )
    }

    /// The MAC of `message` under the newest version of `key`.
    pub async fn mac(&self, key: &KeyRef, message: Bytes) -> Result<Vec<u8>, HsmError> {
        bytes_reply(
            self.call(Job::Crypto(Operation::Mac), key, message, Bytes::new())
                .await,
        )
    }

    /// Checks `tag` over `message` in constant time (current version, or the
    /// previous one during the rotation overlap).
    pub async fn verify_mac(
        &self,
        key: &KeyRef,
        message: Bytes,
        tag: Bytes,
    ) -> Result<(), HsmError> {
        unit_reply(
            self.call(Job::Crypto(Operation::VerifyMac), key, message, tag)
                .await,
        )
    }

    /// Checks a truncated `tag` over `message`: it must be the leftmost
    /// bytes (at least [`crate::MIN_TRUNCATED_MAC_BYTES`]) of the MAC under the
    /// current version, or the previous one during the rotation overlap,
    /// compared in constant time. This is how ISO 8583 carries MACs (8
    /// bytes in F64/F128); [`Hsm::verify_mac`] wants the whole tag.
    pub async fn verify_mac_leftmost(
        &self,
        key: &KeyRef,
        message: Bytes,
        tag: Bytes,
    ) -> Result<(), HsmError> {
        unit_reply(self.call(Job::VerifyMacLeftmost, key, message, tag).await)
    }

    /// Re-scans the store now and returns the versions `op` may use with
    /// `key`; fails with [`HsmError::KeyNotFound`] if there is none.
    pub async fn key_versions(&self, key: &KeyRef, op: Operation) -> Result<Accepted, HsmError> {
        versions_reply(
            self.call(Job::Scan(class_for(op)), key, Bytes::new(), Bytes::new())
                .await,
        )
    }

    /// Checks at start that every `(key, operation)` the config uses exists,
    /// collecting every problem (missing label, wrong class).
    pub async fn check_keys(&self, keys: &[(KeyRef, Operation)]) -> Result<(), Vec<HsmError>> {
        let mut errors = Vec::new();
        for (key, op) in keys {
            if !key.mechanism().supports(*op) {
                errors.push(HsmError::UnsupportedMechanism {
                    mechanism: key.mechanism(),
                    reason: format!("key `{}` cannot be used to {op}", key.label()),
                });
                continue;
            }
            if let Err(e) = self.key_versions(key, *op).await {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Makes every key re-scan its versions on next use (call after rotating
    /// a key from this process; other rotations are found every
    /// `key_refresh_secs`).
    pub fn refresh_keys(&self) {
        self.inner.shared.keyring.invalidate();
    }

    /// A key-bound handle implementing the blocking traits.
    pub fn key(&self, key: KeyRef) -> HsmKey {
        HsmKey {
            hsm: self.clone(),
            key,
        }
    }

    /// Runs `job` on a free inline session of this thread, if any;
    /// otherwise through the worker pool.
    async fn call(
        &self,
        job: Job,
        key: &KeyRef,
        message: Bytes,
        expected: Bytes,
    ) -> Result<Reply, HsmError> {
        let work = Work {
            job,
            key: key.clone(),
            message,
            expected,
        };
        match self.try_inline(&work) {
            Some(result) => result,
            None => self.submit(work)?.await.map_err(|_| HsmError::ShutDown)?,
        }
    }

    /// [`Hsm::call`] for a thread that may block (no async runtime).
    fn call_blocking(&self, work: Work) -> Result<Reply, HsmError> {
        match self.try_inline(&work) {
            Some(result) => result,
            None => self
                .submit(work)?
                .blocking_recv()
                .map_err(|_| HsmError::ShutDown)?,
        }
    }

    fn try_inline(&self, work: &Work) -> Option<Result<Reply, HsmError>> {
        self.inner.inline.as_ref()?.try_run(work)
    }

    fn submit(&self, work: Work) -> Result<oneshot::Receiver<Result<Reply, HsmError>>, HsmError> {
        let (reply, rx) = oneshot::channel();
        let label = work.job.label();
        let request = Request {
            work,
            enqueued_at: Instant::now(),
            reply,
        };
        if let Err(e) = self.inner.pool.submit(request) {
            metrics::error(&e, label);
            return Err(e);
        }
        Ok(rx)
    }
}

fn bytes_reply(received: Result<Reply, HsmError>) -> Result<Vec<u8>, HsmError> {
    match received? {
        Reply::Bytes(bytes) => Ok(bytes),
        other => unreachable!("sign/mac answered {other:?}"),
    }
}

fn unit_reply(received: Result<Reply, HsmError>) -> Result<(), HsmError> {
    match received? {
        Reply::Verified => Ok(()),
        other => unreachable!("verify answered {other:?}"),
    }
}

fn versions_reply(received: Result<Reply, HsmError>) -> Result<Accepted, HsmError> {
    match received? {
        Reply::Versions(accepted) => Ok(accepted),
        other => unreachable!("scan answered {other:?}"),
    }
}

/// A key bound to an [`Hsm`]: implements [`Signer`], [`Verifier`] and [`Mac`]
/// by **blocking** on the pool. Use it from threads (tools, benches, rustls
/// style callbacks), never from an async task (it would panic inside a tokio
/// runtime): there, call the async methods of [`Hsm`].
#[derive(Debug, Clone)]
pub struct HsmKey {
    hsm: Hsm,
    key: KeyRef,
}

impl HsmKey {
    /// The key reference.
    pub fn key_ref(&self) -> &KeyRef {
        &self.key
    }

    fn blocking(&self, op: Operation, message: &[u8], expected: &[u8]) -> Result<Reply, HsmError> {
        self.hsm.call_blocking(Work {
            job: Job::Crypto(op),
            key: self.key.clone(),
            message: Bytes::copy_from_slice(message),
            expected: Bytes::copy_from_slice(expected),
        })
    }
}

impl Signer for HsmKey {
    fn mechanism(&self) -> Mechanism {
        self.key.mechanism()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        bytes_reply(self.blocking(Operation::Sign, message, &[]))
    }
}

impl Verifier for HsmKey {
    fn mechanism(&self) -> Mechanism {
        self.key.mechanism()
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), HsmError> {
        unit_reply(self.blocking(Operation::Verify, message, signature))
    }
}

impl Mac for HsmKey {
    fn mechanism(&self) -> Mechanism {
        self.key.mechanism()
    }

    fn generate(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        bytes_reply(self.blocking(Operation::Mac, message, &[]))
    }

    fn verify(&self, message: &[u8], tag: &[u8]) -> Result<(), HsmError> {
        unit_reply(self.blocking(Operation::VerifyMac, message, tag))
    }
}
