//! [`Hsm`]: the async facade the switch calls, and [`HsmKey`], a key-bound
//! handle implementing the blocking [`Signer`]/[`Verifier`]/[`Mac`] traits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::clock::{Clock, SystemClock};
use crate::keyring::{Accepted, KeyRing};
use crate::pool::{class_for, EngineFactory, Job, Pool, Reply, Request, Shared};
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
            factory,
            Arc::clone(&shared),
            config.threads,
            config.queue_bound,
        )?;
        Ok(Hsm {
            inner: Arc::new(Inner {
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
        let rx = self.submit(Job::Crypto(Operation::Sign), key, message, Bytes::new())?;
        bytes_reply(rx.await)
    }

    /// Checks `signature` over `message` (current version, or the previous
    /// one during the rotation overlap).
    pub async fn verify(
        &self,
        key: &KeyRef,
        message: Bytes,
        signature: Bytes,
    ) -> Result<(), HsmError> {
        let rx = self.submit(Job::Crypto(Operation::Verify), key, message, signature)?;
        unit_reply(rx.await)
    }

    /// The MAC of `message` under the newest version of `key`.
    pub async fn mac(&self, key: &KeyRef, message: Bytes) -> Result<Vec<u8>, HsmError> {
        let rx = self.submit(Job::Crypto(Operation::Mac), key, message, Bytes::new())?;
        bytes_reply(rx.await)
    }

    /// Checks `tag` over `message` in constant time (current version, or the
    /// previous one during the rotation overlap).
    pub async fn verify_mac(
        &self,
        key: &KeyRef,
        message: Bytes,
        tag: Bytes,
    ) -> Result<(), HsmError> {
        let rx = self.submit(Job::Crypto(Operation::VerifyMac), key, message, tag)?;
        unit_reply(rx.await)
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
        let rx = self.submit(Job::VerifyMacLeftmost, key, message, tag)?;
        unit_reply(rx.await)
    }

    /// Re-scans the store now and returns the versions `op` may use with
    /// `key`; fails with [`HsmError::KeyNotFound`] if there is none.
    pub async fn key_versions(&self, key: &KeyRef, op: Operation) -> Result<Accepted, HsmError> {
        let rx = self.submit(Job::Scan(class_for(op)), key, Bytes::new(), Bytes::new())?;
        versions_reply(rx.await)
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

    fn submit(
        &self,
        job: Job,
        key: &KeyRef,
        message: Bytes,
        expected: Bytes,
    ) -> Result<oneshot::Receiver<Result<Reply, HsmError>>, HsmError> {
        let (reply, rx) = oneshot::channel();
        let request = Request {
            job,
            key: key.clone(),
            message,
            expected,
            enqueued_at: Instant::now(),
            reply,
        };
        if let Err(e) = self.inner.pool.submit(request) {
            metrics::error(&e, job.label());
            return Err(e);
        }
        Ok(rx)
    }
}

type Received = Result<Result<Reply, HsmError>, oneshot::error::RecvError>;

fn bytes_reply(received: Received) -> Result<Vec<u8>, HsmError> {
    match received.map_err(|_| HsmError::ShutDown)?? {
        Reply::Bytes(bytes) => Ok(bytes),
        other => unreachable!("sign/mac answered {other:?}"),
    }
}

fn unit_reply(received: Received) -> Result<(), HsmError> {
    match received.map_err(|_| HsmError::ShutDown)?? {
        Reply::Verified => Ok(()),
        other => unreachable!("verify answered {other:?}"),
    }
}

fn versions_reply(received: Received) -> Result<Accepted, HsmError> {
    match received.map_err(|_| HsmError::ShutDown)?? {
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
        let rx = self.hsm.submit(
            Job::Crypto(op),
            &self.key,
            Bytes::copy_from_slice(message),
            Bytes::copy_from_slice(expected),
        )?;
        rx.blocking_recv().map_err(|_| HsmError::ShutDown)?
    }
}

impl Signer for HsmKey {
    fn mechanism(&self) -> Mechanism {
        self.key.mechanism()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        bytes_reply(Ok(self.blocking(Operation::Sign, message, &[])))
    }
}

impl Verifier for HsmKey {
    fn mechanism(&self) -> Mechanism {
        self.key.mechanism()
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), HsmError> {
        unit_reply(Ok(self.blocking(Operation::Verify, message, signature)))
    }
}

impl Mac for HsmKey {
    fn mechanism(&self) -> Mechanism {
        self.key.mechanism()
    }

    fn generate(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        bytes_reply(Ok(self.blocking(Operation::Mac, message, &[])))
    }

    fn verify(&self, message: &[u8], tag: &[u8]) -> Result<(), HsmError> {
        unit_reply(Ok(self.blocking(Operation::VerifyMac, message, tag)))
    }
}
