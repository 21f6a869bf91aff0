//! Pieces every framed connection of the switch shares: the upstream
//! listener's connections, the links banks open to the switch and the
//! switch's own bank links. The bounded accept loop of a listener
//! ([`accept_loop`]) and the wait for its connections to finish
//! ([`Drain`]), why a connection ended ([`Close`]), the read that also
//! watches for idleness and shutdown ([`read_more`]), the writer task that
//! coalesces queued frames into few writes ([`write_coalesced`]) and the
//! lingering close after a bad stream ([`linger`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A listener's side, for its logs and its refusal counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Side {
    /// What one connection is called in logs (`upstream connection`).
    pub what: &'static str,
    /// Counter of refused connections, labelled `reason`.
    pub refused_metric: &'static str,
}

/// Accept connections until `shutdown` turns true, at most
/// `max_connections` at once: each accepted one gets a permit of
/// `connections` (held until it closes) and goes to `serve` with its own
/// receiver of `shutdown`; one past the bound is closed at once and counted
/// (`reason="max_connections"`). Returns the [`Drain`] that waits for the
/// open ones.
pub(crate) async fn accept_loop(
    listener: &TcpListener,
    connections: Arc<Semaphore>,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
    side: Side,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit, watch::Receiver<bool>),
) -> Drain {
    loop {
        if *shutdown.borrow() {
            break;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(error = %e, side = side.what, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics::counter!(side.refused_metric, "reason" => "max_connections").increment(1);
            tracing::warn!(%peer, side = side.what, max = max_connections, "connection refused: max_connections reached");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        serve(tcp, peer, permit, shutdown.clone());
    }
    tracing::info!(side = side.what, "listener stopped accepting");
    Drain {
        connections,
        max_connections,
    }
}

/// Waits for a listener's connections to finish their in-flight requests.
#[derive(Debug)]
pub struct Drain {
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl Drain {
    /// Wait until every connection has closed or `deadline` passes.
    /// Returns whether everything drained.
    pub async fn wait(self, deadline: Duration) -> bool {
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        tokio::time::timeout(deadline, self.connections.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Capacity of the buffer one outgoing message is encoded into: a typical
/// ISO 8583 message, its frame header, and the room the ISO 8583 codec
/// reserves before it writes (512 bytes), so encoding a request or answer
/// allocates once and never grows the buffer. Larger messages (ISO 20022)
/// still fit: the buffer grows.
pub(crate) const ENCODE_BUFFER_BYTES: usize = 1024;

/// Most bytes the writer gathers from queued frames into one write.
pub(crate) const MAX_WRITE_BATCH_BYTES: usize = 64 * 1024;
/// After closing on a bad stream, how long input is still read and
/// discarded, so the kernel does not answer unread bytes with a reset that
/// could destroy answers already sent (a "lingering close").
pub(crate) const LINGER: Duration = Duration::from_millis(500);
/// Most bytes discarded while lingering.
pub(crate) const LINGER_MAX_BYTES: usize = 64 * 1024;

/// Why a served connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    PeerClosed,
    ReadError,
    Idle,
    BadFrame,
    Undecodable,
    Shutdown,
}

impl Close {
    /// The bounded `reason` label of the connections-closed metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Close::PeerClosed => "peer_closed",
            Close::ReadError => "read_error",
            Close::Idle => "idle",
            Close::BadFrame => "bad_frame",
            Close::Undecodable => "undecodable",
            Close::Shutdown => "shutdown",
        }
    }

    /// Whether a frame begun in the buffer was left unfinished by this end.
    pub(crate) fn may_truncate(self) -> bool {
        matches!(self, Close::PeerClosed | Close::ReadError | Close::Idle)
    }

    /// Whether the peer may still be sending (so close with [`linger`]).
    pub(crate) fn needs_linger(self) -> bool {
        matches!(self, Close::BadFrame | Close::Undecodable)
    }
}

/// What one [`read_more`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Bytes were appended to the buffer.
    Data,
    /// The idle timeout passed while requests were still being answered:
    /// not idle, start the quiet period again.
    Busy,
}

/// Read more input into `buf`, until `idle_at` at the latest. A timeout
/// with nothing in flight (`idle`) ends the connection as [`Close::Idle`];
/// shutdown ends it as [`Close::Shutdown`].
pub(crate) async fn read_more<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    idle_at: Instant,
    idle: impl FnOnce() -> bool,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Read, Close> {
    let read = tokio::select! {
        r = tokio::time::timeout_at(idle_at, rd.read_buf(buf)) => r,
        _ = shutdown.changed() => return Err(Close::Shutdown),
    };
    match read {
        Ok(Ok(0)) => Err(Close::PeerClosed),
        Ok(Ok(_)) => Ok(Read::Data),
        Ok(Err(_)) => Err(Close::ReadError),
        Err(_) if idle() => Err(Close::Idle),
        Err(_) => Ok(Read::Busy),
    }
}

/// Write every frame queued on `rx`, gathering what is queued at once into
/// one write of up to [`MAX_WRITE_BATCH_BYTES`]. Returns `true` when the
/// queue closed (every sender gone), `false` on a write error.
pub(crate) async fn write_coalesced<S: AsyncWrite>(
    rx: &mut mpsc::Receiver<BytesMut>,
    wr: &mut WriteHalf<S>,
) -> bool {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < MAX_WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if wr.write_all(&batch).await.is_err() || wr.flush().await.is_err() {
            return false;
        }
    }
    true
}

/// The writer task of a served connection: [`write_coalesced`], then shut
/// the stream down.
pub(crate) async fn write_loop<S: AsyncWrite>(
    mut rx: mpsc::Receiver<BytesMut>,
    mut wr: WriteHalf<S>,
) {
    if write_coalesced(&mut rx, &mut wr).await {
        let _ = wr.shutdown().await;
    }
}

/// Read and drop what the peer still sends, for a bounded time and size,
/// after our side of the stream was shut down (see [`LINGER`]).
pub(crate) async fn linger<R: AsyncRead + Unpin>(rd: &mut R) {
    let mut sink = [0u8; 4096];
    let mut left = LINGER_MAX_BYTES;
    let _ = tokio::time::timeout(LINGER, async {
        while left > 0 {
            match rd.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_frames_go_out_together_and_in_order() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (_, wr) = tokio::io::split(client);
        let (tx, rx) = mpsc::channel(16);
        for i in 0..10u8 {
            tx.send(BytesMut::from(&[i; 3][..])).await.unwrap();
        }
        drop(tx);
        write_loop(rx, wr).await;
        let mut got = Vec::new();
        let mut server = server;
        server.read_to_end(&mut got).await.unwrap();
        let want: Vec<u8> = (0..10u8).flat_map(|i| [i; 3]).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_typical_message_and_its_frame_header_encode_without_growing_the_buffer() {
        use fps_codecs::iso8583::Iso8583Codec;
        use fps_codecs::model::{examples::credit_transfer, ResponseCode};
        let codec = Iso8583Codec::builtin("canonical").unwrap();
        let request = credit_transfer();
        let answer = request.response(ResponseCode::APPROVED);
        for txn in [&request, &answer] {
            let mut buf = BytesMut::with_capacity(ENCODE_BUFFER_BYTES);
            let capacity = buf.capacity();
            // The longest length header a framer writes first.
            buf.extend_from_slice(&[0; 4]);
            codec.encode(txn, &mut buf).unwrap();
            assert!(buf.len() > 100, "{} bytes", buf.len());
            assert_eq!(buf.capacity(), capacity, "the encoder grew the buffer");
        }
    }

    #[tokio::test]
    async fn reads_report_data_busy_idle_close_and_shutdown() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let (mut rd, _wr) = tokio::io::split(ours);
        let (stop, mut shutdown) = watch::channel(false);
        let mut buf = BytesMut::new();
        let soon = || Instant::now() + Duration::from_millis(20);
        peer.write_all(b"abc").await.unwrap();
        let r = read_more(&mut rd, &mut buf, soon(), || true, &mut shutdown).await;
        assert_eq!((r, &buf[..]), (Ok(Read::Data), &b"abc"[..]));
        let r = read_more(&mut rd, &mut buf, soon(), || false, &mut shutdown).await;
        assert_eq!(r, Ok(Read::Busy));
        let r = read_more(&mut rd, &mut buf, soon(), || true, &mut shutdown).await;
        assert_eq!(r, Err(Close::Idle));
        stop.send(true).unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let r = read_more(&mut rd, &mut buf, far, || true, &mut shutdown).await;
        assert_eq!(r, Err(Close::Shutdown));
        drop(peer);
        let r = read_more(&mut rd, &mut buf, far, || true, &mut shutdown).await;
        assert_eq!(r, Err(Close::PeerClosed));
    }
}
