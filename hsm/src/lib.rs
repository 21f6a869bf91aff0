//! `fps-hsm`: every MAC and digital signature the switch makes or checks.
//!
//! # What this crate owns
//!
//! Banks authenticate each message: ISO 8583 banks with a MAC (AES-CMAC or
//! HMAC-SHA256 in field 64/128), ISO 20022 and JSON banks with a signature
//! (ECDSA P-256, RSA-PSS, Ed25519). The keys live in an HSM and never in the
//! switch's memory (invariant 7: CKA_SENSITIVE true, CKA_EXTRACTABLE false).
//! This crate owns:
//!
//! - the [`Signer`] / [`Verifier`] / [`Mac`] traits (rustls' `Signer` shape:
//!   a key-bound object that turns bytes into a signature) and [`HsmError`];
//! - [`Hsm`], the async facade the switch calls, with its bounded worker pool
//!   and optional inline sessions;
//! - the PKCS#11 backend ([`pkcs11`], via `cryptoki`; SoftHSM2 in tests, the
//!   operator's HSM in production: only module path and token label change);
//! - the development-only [`software`] backend (`backend = "danger_software"`);
//! - key rotation by label version suffix (`mac-hmac-v1`, `mac-hmac-v2`, ...,
//!   see [`keyring`]) and the [`admin`] functions behind the `fps-hsm` tool;
//! - the `fps_hsm_*` metrics ([`mod@metrics`]).
//!
//! # Threading design
//!
//! PKCS#11 calls block, and a PKCS#11 session must not be used by two threads
//! at once. So [`Hsm`] starts `threads` dedicated OS threads; each owns one
//! logged-in session (or, for the software backend, a handle to the in-memory
//! key store) for its whole life. Callers put requests on **one bounded
//! crossbeam MPMC queue** that all workers block on (whichever worker is idle
//! takes the next request, no per-worker queue to balance). When the queue is
//! full the call fails at once with [`HsmError::Busy`]: backpressure is
//! explicit and bounded, never an unbounded buffer or a silent wait. Each
//! request carries a `tokio::sync::oneshot` sender; the async caller awaits
//! the receiver, a blocking caller (admin tools, benches) uses
//! `blocking_recv`. Waking a parked caller costs the worker a futex call and
//! an interrupt to an idle CPU (~5 us on a small VM, 15% of an HMAC), so a
//! worker with a backlog holds finished replies and sends them back to back,
//! one wake for several; bounded in count, in time (200 us) and to when
//! enough work stays queued that the worker never idles for it (see
//! `pool.rs`).
//!
//! **Inline sessions** (`inline_sessions = N`, default 0) are the exception,
//! for tokens whose operations take microseconds in process (SoftHSM2, the
//! software backend): N more logged-in sessions, each behind a mutex
//! instead of a thread. A caller that can lock one without waiting runs its
//! operation there, on its own thread, and pays no hand-off; otherwise (all
//! in use, or one down and being reopened by a background thread) its
//! request goes to the workers as above. On a switch pinned to one core the
//! two hand-offs cost more than a SoftHSM2 HMAC (see `inline.rs` for the
//! numbers); with a network HSM they would block the runtime for a round
//! trip, so leave it at 0 there.
//!
//! A PKCS#11 module is normally loaded once per process and every session
//! shares it; with `module_instances = "per_session"` each worker's session
//! lives in its own instance, loaded from a private copy of the module file,
//! for software tokens like SoftHSM2 whose process-wide locks serialise the
//! sessions of one instance (see [`ModuleInstances`]).
//!
//! Why crossbeam + tokio's oneshot rather than tokio channels alone: workers
//! are plain OS threads that must *block* on a queue shared by all of them;
//! tokio's mpsc is single-consumer (a `Mutex<Receiver>` would serialise the
//! workers), while crossbeam's bounded channel is multi-consumer, blocking and
//! has `try_send` for immediate backpressure. tokio is used with only its
//! `sync` feature, for the oneshot that wakes the async caller without any
//! runtime on the worker side.
//!
//! A worker whose session is lost (closed handle, device error, token
//! removed) drops it, reopens and logs in again at once and retries the
//! (idempotent) operation once; if that fails it answers
//! [`HsmError::Unavailable`] and keeps retrying in the background with
//! exponential backoff while answering `Unavailable` to every request that
//! reaches it meanwhile: callers get a clear error, never a hang. Requests
//! that waited in the queue longer than `request_timeout_ms` are answered
//! [`HsmError::Timeout`] without touching the HSM.
//!
//! # Use from the switch
//!
//! ```no_run
//! # async fn demo(config: fps_hsm::HsmConfig) -> Result<(), fps_hsm::HsmError> {
//! use bytes::Bytes;
//! use fps_hsm::{Hsm, KeyRef, Mechanism, Operation};
//! let hsm = Hsm::builder(config).start()?; // once, at startup: opens sessions
//! let mac_key = KeyRef::new("mac-hmac", Mechanism::HmacSha256)?;
//! // Fail fast on missing keys (every error collected, like config validation).
//! if let Err(errors) = hsm.check_keys(&[(mac_key.clone(), Operation::Mac)]).await {
//!     return Err(errors.into_iter().next().expect("non-empty on Err"));
//! }
//! let message = Bytes::from_static(b"0200...");
//! let tag = hsm.mac(&mac_key, message.clone()).await?;
//! hsm.verify_mac(&mac_key, message, tag.into()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod config;
pub mod devtoken;
mod error;
mod hsm;
mod inline;
pub mod keyring;
mod mechanism;
pub mod metrics;
pub mod pkcs11;
mod pool;
pub mod software;
#[cfg(test)]
mod testing;

pub use config::{Backend, HsmConfig, KeyRef, ModuleInstances, Pin, PinSource};
pub use error::{ErrorKind, HsmError};
pub use hsm::{Hsm, HsmBuilder, HsmKey};
pub use mechanism::{Mechanism, Operation, ALL_MECHANISMS};
pub use pool::MIN_TRUNCATED_MAC_BYTES;

/// A key that signs, in the shape of rustls' `Signer`: bytes in, signature out.
///
/// Implementations may block (an HSM round trip); from async code use the
/// async methods of [`Hsm`] instead.
pub trait Signer: std::fmt::Debug + Send + Sync {
    /// The signature mechanism this key uses.
    fn mechanism(&self) -> Mechanism;
    /// Signs `message` with the newest key version. ECDSA signatures are the
    /// raw `r || s` form (64 bytes, as in JWS ES256 and XML-DSig).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError>;
}

/// A public key that checks signatures made by a [`Signer`] or by a bank.
pub trait Verifier: std::fmt::Debug + Send + Sync {
    /// The signature mechanism this key uses.
    fn mechanism(&self) -> Mechanism;
    /// `Ok(())` if `signature` is valid for `message` under the current key
    /// version (or the previous one during the rotation overlap);
    /// [`HsmError::SignatureInvalid`] otherwise.
    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), HsmError>;
}

/// A secret key that makes and checks message authentication codes.
pub trait Mac: std::fmt::Debug + Send + Sync {
    /// The MAC mechanism this key uses.
    fn mechanism(&self) -> Mechanism;
    /// The MAC of `message` under the newest key version.
    fn generate(&self, message: &[u8]) -> Result<Vec<u8>, HsmError>;
    /// Checks `tag` in constant time against the current key version (and the
    /// previous one during the rotation overlap); [`HsmError::MacMismatch`]
    /// when no accepted version matches.
    fn verify(&self, message: &[u8], tag: &[u8]) -> Result<(), HsmError>;
}
