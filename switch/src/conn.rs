//! Pieces every framed connection of the switch shares: the upstream
//! listener's connections, the links banks open to the switch and the
//! switch's own bank links. The bounded accept loop of a listener
//! ([`accept_loop`]) and the wait for its connections to finish
//! ([`Drain`]); the serve loop of an accepted connection ([`serve_framed`]:
//! framing, requests in flight bounded by a semaphore, backpressure,
//! idleness), which leaves what is done with each frame to a
//! [`FrameHandler`]; why a connection ended ([`Close`]), the read that also
//! watches for idleness and shutdown ([`read_more`]), the writer task that
//! coalesces queued frames into few writes ([`write_coalesced`]) and the
//! lingering close after a bad stream ([`linger`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fps_codecs::framing::{Frame, Framer};
use fps_codecs::CodecError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics as m;

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

/// What differs between the kinds of connection [`serve_framed`] serves;
/// everything else about them is the same.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FramedConn {
    /// `side` label of the frame-error counter (`upstream`, `bank_inbound`).
    pub side: &'static str,
    /// How the peer's byte stream splits into frames.
    pub framer: Framer,
    /// Starting capacity of the read buffer.
    pub read_buffer_bytes: usize,
    /// How long a connection with nothing in flight may go without a
    /// complete frame before it is closed as [`Close::Idle`].
    pub idle_timeout: Duration,
    /// Most requests in flight at once (and so answers queued to write).
    pub max_in_flight: usize,
}

/// What one kind of connection does with each frame [`serve_framed`] reads,
/// and its own words for the logs and the closed counter (their fields and
/// labels differ per side, so the loop leaves them here).
pub(crate) trait FrameHandler {
    /// Handle one complete frame, holding `slot` until its answer is queued
    /// (or dropping it when nothing is to be sent). `Err` closes the
    /// connection for that reason.
    fn frame(&self, frame: Frame, slot: Slot<'_>)
        -> impl Future<Output = Result<(), Close>> + Send;

    /// Log a stream out of step (already counted, `reason="framing"`).
    fn bad_frame(&self, error: &CodecError);

    /// Log an end inside a frame, `pending_bytes` of it read (already
    /// counted, `reason="truncated"`).
    fn truncated(&self, close: Close, pending_bytes: usize);

    /// Count the closed connection, labelled `reason` = [`Close::label`].
    fn closed(&self, close: Close);
}

/// One frame's place among the requests in flight, and where its answer goes.
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    /// One of `max_in_flight`: held until the answer is queued, it is what
    /// bounds the connection's requests and stops the reader when none is free.
    pub permit: OwnedSemaphorePermit,
    /// The writer's queue of encoded frames.
    pub tx: &'a mpsc::Sender<BytesMut>,
}

/// How a connection served by [`serve_framed`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Served {
    /// Why it closed.
    pub close: Close,
    /// Frames that got a permit and went to the handler.
    pub requests: u64,
}

/// Serve one connection until it closes: a writer task coalesces the
/// queued answers ([`write_loop`]) while this reads complete frames and
/// hands each, with a permit, to `handler`. With no permit free it stops
/// reading, which pushes back on the peer through TCP. Returns once every
/// answer still in flight has been written (and, after a bad stream, the
/// peer's leftovers read: [`linger`]).
///
/// Idleness is measured from the last *complete* frame, so a peer dripping
/// the bytes of a frame that never completes (slowloris) is closed after
/// `idle_timeout` like a silent one; but never while requests are in
/// flight, as their answers are still to come.
pub(crate) async fn serve_framed<S, H>(
    stream: S,
    conn: FramedConn,
    handler: &H,
    mut shutdown: watch::Receiver<bool>,
) -> Served
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    H: FrameHandler,
{
    let (mut rd, wr) = tokio::io::split(stream);
    // Every request task holds a permit while it may send, so the channel
    // never holds more than max_in_flight answers.
    let (tx, rx) = mpsc::channel::<BytesMut>(conn.max_in_flight);
    let writer = tokio::spawn(write_loop(rx, wr));
    let in_flight = Arc::new(Semaphore::new(conn.max_in_flight));
    let mut buf = BytesMut::with_capacity(conn.read_buffer_bytes);
    let mut requests: u64 = 0;
    // When the last complete frame was read (or the connection opened).
    let mut quiet_since = Instant::now();

    let close = 'conn: loop {
        loop {
            let frame = match conn.framer.decode(&mut buf) {
                Ok(Some(frame)) => {
                    quiet_since = Instant::now();
                    frame
                }
                Ok(None) => break,
                Err(e) => {
                    metrics::counter!(m::FRAME_ERRORS, "side" => conn.side, "reason" => "framing")
                        .increment(1);
                    handler.bad_frame(&e);
                    break 'conn Close::BadFrame;
                }
            };
            // Backpressure: no more reading until a request finishes.
            let permit = tokio::select! {
                p = in_flight.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break 'conn Close::Shutdown,
                },
                _ = shutdown.changed() => break 'conn Close::Shutdown,
            };
            requests += 1;
            let slot = Slot { permit, tx: &tx };
            if let Err(close) = handler.frame(frame, slot).await {
                break 'conn close;
            }
        }
        if *shutdown.borrow() {
            break Close::Shutdown;
        }
        let idle_at = quiet_since + conn.idle_timeout;
        let idle = || in_flight.available_permits() == conn.max_in_flight;
        match read_more(&mut rd, &mut buf, idle_at, idle, &mut shutdown).await {
            Ok(Read::Data) => {}
            // Requests are still being answered: not idle, wait again.
            Ok(Read::Busy) => quiet_since = Instant::now(),
            Err(close) => break close,
        }
    };
    if !buf.is_empty() && close.may_truncate() {
        // A frame was begun and never finished.
        metrics::counter!(m::FRAME_ERRORS, "side" => conn.side, "reason" => "truncated")
            .increment(1);
        handler.truncated(close, buf.len());
    }
    handler.closed(close);
    // In-flight requests still answer; the writer ends when the last one has.
    drop(tx);
    let _ = writer.await;
    if close.needs_linger() {
        linger(&mut rd).await;
    }
    Served { close, requests }
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

    #[tokio::test(start_paused = true)]
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

    /// A frame as the default framer writes it: 2-byte big-endian length.
    fn framed(message: &[u8]) -> Vec<u8> {
        let len = u16::try_from(message.len()).unwrap();
        [&len.to_be_bytes()[..], message].concat()
    }

    /// A request [`Recorder`] was handed, held by the test until it says.
    struct Held {
        message: BytesMut,
        /// Released when the test drops the `Held`: the request is done.
        _permit: OwnedSemaphorePermit,
        tx: mpsc::Sender<BytesMut>,
    }

    /// What the loop told a [`Recorder`] besides frames.
    #[derive(Debug, PartialEq, Eq)]
    enum Event {
        BadFrame,
        Truncated(Close, usize),
        Closed(Close),
    }

    /// Hands every frame (with its permit) to the test; `bad` is undecodable.
    struct Recorder {
        held: mpsc::UnboundedSender<Held>,
        events: std::sync::Mutex<Vec<Event>>,
    }

    impl FrameHandler for Recorder {
        async fn frame(&self, frame: Frame, slot: Slot<'_>) -> Result<(), Close> {
            if &frame.message[..] == b"bad" {
                return Err(Close::Undecodable);
            }
            let held = Held {
                message: frame.message,
                _permit: slot.permit,
                tx: slot.tx.clone(),
            };
            let _ = self.held.send(held);
            Ok(())
        }
        fn bad_frame(&self, _: &CodecError) {
            self.events.lock().unwrap().push(Event::BadFrame);
        }
        fn truncated(&self, close: Close, pending_bytes: usize) {
            let event = Event::Truncated(close, pending_bytes);
            self.events.lock().unwrap().push(event);
        }
        fn closed(&self, close: Close) {
            self.events.lock().unwrap().push(Event::Closed(close));
        }
    }

    /// The task of [`serve_recorded`]: how it ended, what the recorder saw.
    type ServedTask = tokio::task::JoinHandle<(Served, Vec<Event>)>;

    /// Serve one end of an in-memory stream with a [`Recorder`]: returns the
    /// peer's end, the requests as they arrive, the shutdown switch and the
    /// served task.
    fn serve_recorded(
        max_in_flight: usize,
        idle_timeout: Duration,
    ) -> (
        tokio::io::DuplexStream,
        mpsc::UnboundedReceiver<Held>,
        watch::Sender<bool>,
        ServedTask,
    ) {
        let (peer, ours) = tokio::io::duplex(64 * 1024);
        let (held, requests) = mpsc::unbounded_channel();
        let (stop, shutdown) = watch::channel(false);
        let conn = FramedConn {
            side: "test",
            framer: Framer::new(Default::default()).unwrap(),
            read_buffer_bytes: 64,
            idle_timeout,
            max_in_flight,
        };
        let task = tokio::spawn(async move {
            let recorder = Recorder {
                held,
                events: Default::default(),
            };
            let served = serve_framed(ours, conn, &recorder, shutdown).await;
            (served, recorder.events.into_inner().unwrap())
        });
        (peer, requests, stop, task)
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_permit_free_the_next_frame_waits_for_one_or_shutdown() {
        let (mut peer, mut requests, stop, task) = serve_recorded(1, Duration::from_secs(60));
        let frames = [framed(b"one"), framed(b"two"), framed(b"three")];
        peer.write_all(&frames.concat()).await.unwrap();
        let one = requests.recv().await.unwrap();
        assert_eq!(&one.message[..], b"one");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            requests.try_recv().is_err(),
            "a second request got a permit"
        );
        drop(one);
        let two = requests.recv().await.unwrap();
        assert_eq!(&two.message[..], b"two");
        stop.send(true).unwrap();
        // Still holding the only permit: the loop ends on shutdown alone,
        // then waits for the answer in flight, which still goes out.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(requests.try_recv().is_err(), "a third request got a permit");
        let (served, events) = answer_last(two, b"done", task, &mut peer).await;
        assert_eq!((served.close, served.requests), (Close::Shutdown, 2));
        assert_eq!(events, [Event::Closed(Close::Shutdown)]);
    }

    /// Check the served task still waits for `held`'s answer, answer it,
    /// and return how the task ended once the peer has read that answer.
    async fn answer_last(
        held: Held,
        answer: &[u8],
        task: ServedTask,
        peer: &mut tokio::io::DuplexStream,
    ) -> (Served, Vec<Event>) {
        assert!(!task.is_finished(), "returned before the answer was sent");
        held.tx.send(BytesMut::from(answer)).await.unwrap();
        drop(held);
        let ended = task.await.unwrap();
        let mut got = vec![0u8; answer.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, answer);
        ended
    }

    #[tokio::test(start_paused = true)]
    async fn not_idle_while_a_request_is_in_flight_then_idle() {
        let idle = Duration::from_millis(30);
        let (mut peer, mut requests, _stop, task) = serve_recorded(4, idle);
        peer.write_all(&framed(b"slow")).await.unwrap();
        let slow = requests.recv().await.unwrap();
        // Several idle timeouts pass, each one only a busy period: the
        // connection still reads.
        tokio::time::sleep(idle * 5).await;
        peer.write_all(&framed(b"more")).await.unwrap();
        let more = tokio::time::timeout(idle, requests.recv())
            .await
            .expect("closed as idle with a request in flight")
            .unwrap();
        assert_eq!(&more.message[..], b"more");
        drop(more);
        let (served, events) = answer_last(slow, b"answer", task, &mut peer).await;
        assert_eq!((served.close, served.requests), (Close::Idle, 2));
        assert_eq!(events, [Event::Closed(Close::Idle)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_dripped_too_slowly_is_idle_and_truncated() {
        let idle = Duration::from_millis(60);
        let (mut peer, _requests, _stop, task) = serve_recorded(4, idle);
        let frame = framed(b"never finished in time");
        // A byte comes every idle/3, but the frame would take many idle
        // periods to complete; writes fail once the connection is closed.
        for byte in &frame {
            if peer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(idle / 3).await;
        }
        // Bounded: without the idle close the completed frame is a request
        // held forever, and the connection would never end.
        let (served, events) = tokio::time::timeout(idle * 100, task)
            .await
            .expect("never closed as idle")
            .unwrap();
        assert_eq!((served.close, served.requests), (Close::Idle, 0));
        match events[..] {
            [Event::Truncated(Close::Idle, pending), Event::Closed(Close::Idle)] => {
                assert!(pending > 0 && pending < frame.len(), "{pending} bytes")
            }
            _ => panic!("{events:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_in_flight_are_written_after_the_peer_stops_sending() {
        let (mut peer, mut requests, _stop, task) = serve_recorded(4, Duration::from_secs(60));
        let half = b"\x00\x09half";
        peer.write_all(&[&framed(b"one")[..], half].concat())
            .await
            .unwrap();
        peer.shutdown().await.unwrap();
        let one = requests.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (served, events) = answer_last(one, b"late", task, &mut peer).await;
        assert_eq!((served.close, served.requests), (Close::PeerClosed, 1));
        let closed = Close::PeerClosed;
        let want = [Event::Truncated(closed, half.len()), Event::Closed(closed)];
        assert_eq!(events, want);
    }

    #[tokio::test]
    async fn a_bad_frame_or_an_undecodable_message_closes_without_truncation() {
        for (input, close, mut want) in [
            (b"\xff\xff".to_vec(), Close::BadFrame, vec![Event::BadFrame]),
            (framed(b"bad"), Close::Undecodable, vec![]),
        ] {
            let (mut peer, _requests, _stop, task) = serve_recorded(4, Duration::from_secs(60));
            peer.write_all(&input).await.unwrap();
            // Unread input after a bad stream is what lingering is for.
            peer.write_all(b"more").await.unwrap();
            let (served, events) = task.await.unwrap();
            assert_eq!(served.close, close);
            want.push(Event::Closed(close));
            assert_eq!(events, want);
        }
    }
}
