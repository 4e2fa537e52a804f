//! The byte tunnel behind every upgraded WebSocket (and, later, every TCP connection).
//!
//! Memory is the point of this module. An idle tunnel holds no buffer: each poll reads into a
//! buffer on the poll's own stack and writes straight through; only bytes the destination
//! cannot take right now are copied to the heap, and that copy is freed once written. The
//! future's own state is a few hundred bytes.
//!
//! Closing: on an idle timeout or a close signal (drain, rebalance, shutdown), a WebSocket tunnel
//! finishes the server-to-client frame in flight, sends the client a close frame with code
//! 1001 (going away), half-closes, and lingers briefly reading what the client still sends, so
//! the client sees a clean close rather than a reset. Plain tunnels just close.
//!
//! Close spread: when the close signal fires, the tunnel asks [`crate::pool::spread`] why (the
//! shutdown, its backend's drain, else the rebalancer) and over which window, and first waits
//! for a random time in it on its one timer, still relaying (phase `Spreading`), so a
//! shutdown's or a drain's closes do not all go in one instant. Nothing per tunnel is added for
//! it: the window lives in the process-wide shutdown state and the backend's [`Live`]. A
//! tunnel spreading a drain's close listens to the process-wide shutdown instead of its own
//! (spent) signal, re-using the same allocation, so a shutdown during a long drain still
//! closes it within the shutdown's window. The idle timeout does not apply while spreading (the
//! close is due anyway).
//!
//! A drain taken back while its tunnels wait for their close times (the registration renewed,
//! an operator set the backend active) closes nothing more: when its time comes, a tunnel
//! finds its backend's drain window gone, goes back to relaying and listens to the backend's
//! renewed close signal ([`Live::renewed_close`]), so a later drain or shutdown still closes
//! it. Limit: a session of a `rebalance` upstream then no longer listens to its own close
//! signal (a child of the spent one, which stays cancelled in the pool's sessions): the
//! rebalancer counts it as already closing and does not move it; a later drain or a shutdown
//! still closes it.

use super::access::{Closer, Handshake, TunnelRecord};
use super::frame::{close_frame, masked_close_frame, FrameTracker, GOING_AWAY};
use super::route::Route;
use crate::pool::spread::{self, Cause};
use crate::pool::Live;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Bytes read per step; lives on the stack of one poll only.
const STEP: usize = 64 * 1024;
/// Read/write steps per direction per poll, before yielding to other tasks.
const ROUNDS: usize = 16;
/// How long a closing tunnel waits for the server-to-client frame in flight to finish.
pub const DEFAULT_FRAME_WAIT: Duration = Duration::from_secs(5);
/// How long a closed tunnel keeps reading what the client still sends before dropping it.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// Why a tunnel ended.
#[derive(Debug)]
pub enum TunnelEnd {
    /// Both sides closed.
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
    /// Closed by tideway: its backend's drain.
    Drain,
    /// Closed by tideway: the rebalancer moved it.
    Rebalance,
    /// Closed by tideway: shutdown or binary upgrade.
    Shutdown,
    /// A socket error.
    Error(io::Error),
}

/// One direction of the relay. Its fields are sized with care: every idle WebSocket holds
/// two of these (a `u32` offset into a pending copy is plenty: a copy holds at most one read
/// step, or what the client sent behind its handshake (under 16 KiB), plus a close frame).
#[derive(Default)]
struct Half {
    /// Bytes read but not yet written; empty (and unallocated) most of the time.
    pending: Vec<u8>,
    pos: u32,
    /// Track WebSocket frames (not on a plain byte pipe, where it would only cost CPU).
    track: bool,
    read_closed: bool,
    write_closed: bool,
    /// A flush of the destination came back Pending: bytes it took may still sit in its own
    /// buffer (TLS: rustls takes bytes the socket cannot yet), so the next pump flushes first.
    unflushed: bool,
    frames: FrameTracker,
    /// Bytes read from the source (each read is handed to the backend's counters as it goes).
    total: u64,
}

/// Which way bytes go: client to backend, or backend to client.
#[derive(Clone, Copy)]
enum Way {
    Up,
    Down,
}

impl Half {
    fn done(&self) -> bool {
        self.read_closed && self.write_closed && self.pending.is_empty()
    }

    fn queue(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }
}

enum Phase {
    Open,
    /// Told to close; relaying until the close time the spread picked (the timer's deadline).
    Spreading(Reason),
    /// Waiting for a frame boundary to put the close frame at.
    Closing(Reason),
    /// Close frame sent and write sides shut; reading what is left.
    Lingering(Reason),
}

#[derive(Clone, Copy)]
enum Reason {
    Idle,
    Drain,
    Rebalance,
    Shutdown,
}

impl Reason {
    fn end(self) -> TunnelEnd {
        match self {
            Reason::Idle => TunnelEnd::Idle,
            Reason::Drain => TunnelEnd::Drain,
            Reason::Rebalance => TunnelEnd::Rebalance,
            Reason::Shutdown => TunnelEnd::Shutdown,
        }
    }
}

impl From<Cause> for Reason {
    fn from(c: Cause) -> Self {
        match c {
            Cause::Drain => Reason::Drain,
            Cause::Rebalance => Reason::Rebalance,
            Cause::Shutdown => Reason::Shutdown,
        }
    }
}

/// A bidirectional relay between a client and a backend.
pub struct Tunnel<C, B> {
    client: C,
    backend: B,
    up: Half,
    down: Half,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    close: Pin<Box<WaitForCancellationFutureOwned>>,
    phase: Phase,
    /// The backend's counters, for the bytes each way.
    live: Option<Arc<Live>>,
    /// The first close frame's code and who sent it (WebSocket).
    closed: Option<(u16, Closer)>,
}

impl<C, B> Tunnel<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    /// A tunnel that closes after `idle` without traffic or when `close` fires. With
    /// `websocket`, closing sends the client a 1001 close frame at a frame boundary.
    pub fn new(
        client: C,
        backend: B,
        idle: Duration,
        close: CancellationToken,
        websocket: bool,
    ) -> Self {
        Tunnel {
            client,
            backend,
            up: Half {
                track: websocket,
                ..Half::default()
            },
            down: Half {
                track: websocket,
                ..Half::default()
            },
            idle,
            last: Instant::now(),
            timer: Box::pin(tokio::time::sleep(idle)),
            close: Box::pin(close.cancelled_owned()),
            phase: Phase::Open,
            live: None,
            closed: None,
        }
    }

    /// Count the bytes moved in the backend's counters as they move.
    pub fn counting(mut self, live: Arc<Live>) -> Self {
        self.live = Some(live);
        self
    }

    /// Bytes moved so far: client to backend, backend to client.
    pub fn moved(&self) -> (u64, u64) {
        (self.up.total, self.down.total)
    }

    /// The first close frame's code and who sent it, if one went by.
    pub fn closed(&self) -> Option<(u16, Closer)> {
        self.closed
    }

    /// Note who closed first, once a close frame has gone by `way`.
    fn note_close(&mut self, way: Way) {
        if self.closed.is_some() || !self.up.track {
            return;
        }
        let (frames, who) = match way {
            Way::Up => (&self.up.frames, Closer::Client),
            Way::Down => (&self.down.frames, Closer::Backend),
        };
        if let Some(code) = frames.close_code() {
            self.closed = Some((code, who));
        }
    }

    /// Move bytes one way (see [`pump`]), and hand what was read to the backend's counters.
    fn pump(&mut self, cx: &mut Context<'_>, way: Way, to_boundary: bool) -> io::Result<bool> {
        let Tunnel {
            client,
            backend,
            up,
            down,
            live,
            ..
        } = self;
        let (h, result) = match way {
            Way::Up => {
                let before = up.total;
                let r = pump(cx, client, backend, up, to_boundary);
                (up.total - before, r)
            }
            Way::Down => {
                let before = down.total;
                let r = pump(cx, backend, client, down, to_boundary);
                (down.total - before, r)
            }
        };
        if let (Some(live), 1..) = (live.as_ref(), h) {
            match way {
                Way::Up => live.sent(h),
                Way::Down => live.received(h),
            }
        }
        if h > 0 {
            self.note_close(way);
        }
        result
    }

    /// Account for server-to-client bytes already forwarded before the tunnel started.
    pub fn already_sent_down(&mut self, bytes: &[u8]) {
        self.down.frames.feed(bytes);
        self.note_close(Way::Down);
    }

    /// Client-to-server bytes that came before the tunnel started (behind the handshake): the
    /// tunnel sends them to the backend first, ahead of anything it reads from the client.
    /// Not counted in [`Self::moved`] (bytes read by the tunnel), but framed like them.
    pub fn send_first(&mut self, bytes: Vec<u8>) {
        self.up.frames.feed(&bytes);
        self.note_close(Way::Up);
        debug_assert!(self.up.pending.is_empty());
        debug_assert!(u32::try_from(bytes.len()).is_ok(), "pos is a u32");
        self.up.pending = bytes;
        self.up.pos = 0;
    }

    /// The close signal fired: spread the close within the window that applies (see the module
    /// doc). Returns the end if the tunnel ends now.
    fn signalled(&mut self) -> Option<TunnelEnd> {
        let (cause, window) = spread::cause(self.live.as_deref());
        let at = spread::pick(window);
        if at <= Instant::now() {
            return self.begin_close(cause.into());
        }
        if cause == Cause::Drain {
            // The own signal is spent; a shutdown may still cut the drain's window short.
            self.close.set(spread::shutdown_signal().cancelled_owned());
        }
        self.phase = Phase::Spreading(cause.into());
        self.timer.as_mut().reset(at);
        None
    }

    /// While spreading a drain's close, the shutdown began: close by its window if that is
    /// sooner, as a shutdown's close; else at the drain's time, still a drain's, no longer
    /// listening to the spent shutdown signal (the same allocation holds a never-fired one).
    fn shutdown_while_spreading(&mut self) {
        let at = spread::pick(spread::shutdown_window());
        if at < self.timer.deadline() {
            self.phase = Phase::Spreading(Reason::Shutdown);
            self.timer.as_mut().reset(at);
        } else {
            self.close.set(CancellationToken::new().cancelled_owned());
        }
    }

    /// A drain's close time came: if the drain was taken back meanwhile (its window is gone:
    /// the registration renewed, an operator set the backend active), the tunnel stays open,
    /// listening to the backend's renewed close signal, with its idle timer again. Returns
    /// whether it did.
    fn drain_taken_back(&mut self) -> bool {
        let Some(live) = self.live.as_deref() else {
            return false;
        };
        if live.closing_window().is_some() {
            return false;
        }
        let Some(close) = live.renewed_close() else {
            return false;
        };
        self.close.set(close.cancelled_owned());
        self.phase = Phase::Open;
        let at = self.last + self.idle;
        self.timer.as_mut().reset(at);
        true
    }

    /// Relay both ways; the end if an error or both sides closing ended the tunnel.
    fn relay(&mut self, cx: &mut Context<'_>) -> Option<TunnelEnd> {
        let up = self.pump(cx, Way::Up, false);
        let down = self.pump(cx, Way::Down, false);
        match (up, down) {
            (Err(e), _) | (_, Err(e)) => return Some(TunnelEnd::Error(e)),
            (Ok(a), Ok(b)) if a || b => self.last = Instant::now(),
            _ => {}
        }
        if self.up.done() && self.down.done() {
            return Some(TunnelEnd::Closed);
        }
        None
    }

    fn begin_close(&mut self, why: Reason) -> Option<TunnelEnd> {
        if !self.up.track {
            return Some(why.end());
        }
        self.phase = Phase::Closing(why);
        self.timer
            .as_mut()
            .reset(Instant::now() + DEFAULT_FRAME_WAIT);
        None
    }
}

/// Move bytes from `src` to `dst` until neither can go on. Returns whether any byte moved.
fn pump<R, W>(
    cx: &mut Context<'_>,
    src: &mut R,
    dst: &mut W,
    h: &mut Half,
    to_boundary: bool,
) -> io::Result<bool>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut moved = false;
    if h.unflushed {
        match Pin::new(&mut *dst).poll_flush(cx) {
            Poll::Ready(Ok(())) => h.unflushed = false,
            Poll::Ready(Err(e)) => return Err(e),
            // The flush's waker is this task's: it runs again when the socket takes more.
            Poll::Pending => return Ok(false),
        }
    }
    for _ in 0..ROUNDS {
        while (h.pos as usize) < h.pending.len() {
            match Pin::new(&mut *dst).poll_write(cx, &h.pending[h.pos as usize..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    h.pos += n as u32;
                    moved = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(moved),
            }
        }
        if !h.pending.is_empty() {
            h.pending = Vec::new();
            h.pos = 0;
            if !flush(cx, dst, h)? {
                return Ok(moved);
            }
        }
        if h.read_closed {
            if !h.write_closed {
                match Pin::new(&mut *dst).poll_shutdown(cx) {
                    Poll::Ready(_) => h.write_closed = true,
                    Poll::Pending => return Ok(moved),
                }
            }
            return Ok(moved);
        }
        let cap = if to_boundary {
            match h.frames.until_boundary() {
                None => return Ok(moved),
                Some(n) => n.min(STEP as u64) as usize,
            }
        } else {
            STEP
        };
        let mut storage = [MaybeUninit::<u8>::uninit(); STEP];
        let mut rb = ReadBuf::uninit(&mut storage[..cap]);
        match Pin::new(&mut *src).poll_read(cx, &mut rb) {
            Poll::Pending => return Ok(moved),
            // A TLS peer that closed its TCP without a close_notify: a plain close here, as
            // on a TCP tunnel (a byte pipe has no framing a cut could hide behind).
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Ready(Ok(())) => {}
        }
        let data = rb.filled();
        if data.is_empty() {
            h.read_closed = true;
            continue;
        }
        moved = true;
        h.total += data.len() as u64;
        if h.track {
            h.frames.feed(data);
        }
        let mut off = 0;
        while off < data.len() {
            match Pin::new(&mut *dst).poll_write(cx, &data[off..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => off += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {
                    h.queue(&data[off..]);
                    return Ok(moved);
                }
            }
        }
        if !flush(cx, dst, h)? {
            return Ok(moved);
        }
    }
    // Still busy after ROUNDS steps: let other tasks run, then come back.
    cx.waker().wake_by_ref();
    Ok(moved)
}

/// Flush `dst`: true once done; false while it is still at it (marked in `h`, so the next
/// pump finishes it before reading more; its waker is this task's).
fn flush<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    dst: &mut W,
    h: &mut Half,
) -> io::Result<bool> {
    match Pin::new(&mut *dst).poll_flush(cx) {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => {
            h.unflushed = true;
            Ok(false)
        }
    }
}

/// Read and throw away what `src` sends. Ready(true) at end of stream or error.
fn discard<R: AsyncRead + Unpin>(cx: &mut Context<'_>, src: &mut R) -> Poll<bool> {
    for _ in 0..ROUNDS {
        let mut storage = [MaybeUninit::<u8>::uninit(); STEP];
        let mut rb = ReadBuf::uninit(&mut storage);
        match Pin::new(&mut *src).poll_read(cx, &mut rb) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(true),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(true),
            Poll::Ready(Ok(())) => {}
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

impl<C, B> Future for Tunnel<C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    type Output = TunnelEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TunnelEnd> {
        let this = self.get_mut();
        loop {
            match this.phase {
                Phase::Open => {
                    if this.close.as_mut().poll(cx).is_ready() {
                        match this.signalled() {
                            Some(end) => return Poll::Ready(end),
                            None => continue,
                        }
                    }
                    if let Some(end) = this.relay(cx) {
                        return Poll::Ready(end);
                    }
                    if this.timer.as_mut().poll(cx).is_ready() {
                        let deadline = this.last + this.idle;
                        if Instant::now() >= deadline {
                            match this.begin_close(Reason::Idle) {
                                Some(end) => return Poll::Ready(end),
                                None => continue,
                            }
                        }
                        this.timer.as_mut().reset(deadline);
                        continue;
                    }
                    return Poll::Pending;
                }
                Phase::Spreading(why) => {
                    if matches!(why, Reason::Drain) && this.close.as_mut().poll(cx).is_ready() {
                        this.shutdown_while_spreading();
                        continue;
                    }
                    if let Some(end) = this.relay(cx) {
                        return Poll::Ready(end);
                    }
                    if this.timer.as_mut().poll(cx).is_ready() {
                        if matches!(why, Reason::Drain) && this.drain_taken_back() {
                            continue;
                        }
                        match this.begin_close(why) {
                            Some(end) => return Poll::Ready(end),
                            None => continue,
                        }
                    }
                    return Poll::Pending;
                }
                Phase::Closing(why) => {
                    if this.pump(cx, Way::Down, true).is_err() {
                        return Poll::Ready(why.end());
                    }
                    if this.down.frames.at_boundary() && this.down.pending.is_empty() {
                        if !this.down.write_closed {
                            this.down.queue(&close_frame(GOING_AWAY));
                            this.closed.get_or_insert((GOING_AWAY, Closer::Tideway));
                        }
                        this.down.read_closed = true;
                        if this.up.frames.at_boundary() && !this.up.write_closed {
                            this.up
                                .queue(&masked_close_frame(GOING_AWAY, rand::random()));
                        }
                        this.up.read_closed = true;
                        this.phase = Phase::Lingering(why);
                        this.timer.as_mut().reset(Instant::now() + DEFAULT_LINGER);
                        continue;
                    }
                    if this.timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(why.end());
                    }
                    return Poll::Pending;
                }
                Phase::Lingering(why) => {
                    let down = this.pump(cx, Way::Down, false);
                    let _ = this.pump(cx, Way::Up, false);
                    if down.is_err() {
                        return Poll::Ready(why.end());
                    }
                    if this.down.done() {
                        let _ = discard(cx, &mut this.backend);
                        if discard(cx, &mut this.client).is_ready() {
                            return Poll::Ready(why.end());
                        }
                    }
                    if this.timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(why.end());
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// What a tunnel reports when it ends: how it ended, how long it lived, the bytes both ways,
/// counted and, with the access log on, logged. Kept beside the relay rather than in it, and
/// only what the report needs (not the whole [`Route`]): an idle tunnel's memory is the point.
pub struct Ending {
    upstream: Arc<str>,
    histogram: prometheus::Histogram,
    client: Option<std::net::IpAddr>,
    backend: std::net::SocketAddr,
    /// A WebSocket (else a TCP tunnel).
    websocket: bool,
    started: std::time::Instant,
    /// With the access log on: what its line needs (boxed: a pointer while it is off).
    logged: Option<Box<Logged>>,
}

/// What a tunnel's access line needs beyond the counts.
pub struct Logged {
    pub backend_id: crate::pool::BackendId,
    /// A WebSocket's handshake.
    pub handshake: Option<Handshake>,
}

impl Ending {
    /// A tunnel (a WebSocket if `websocket`, else TCP) from `client` to `backend` on `route`,
    /// starting now.
    pub fn new(
        route: &Route,
        client: Option<std::net::IpAddr>,
        backend: std::net::SocketAddr,
        websocket: bool,
    ) -> Self {
        Ending {
            upstream: route.upstream.clone(),
            histogram: route.metrics.tunnel.clone(),
            client,
            backend,
            websocket,
            started: std::time::Instant::now(),
            logged: None,
        }
    }

    /// With the access log on, what the tunnel's line shows of its backend and handshake.
    pub fn logging(mut self, logged: Logged) -> Self {
        if super::access::enabled() {
            self.logged = Some(Box::new(logged));
        }
        self
    }

    /// The tunnel ended with `end`, having moved `(up, down)` bytes; `closed`: the first
    /// close frame's code and sender.
    pub fn report(self, end: TunnelEnd, (up, down): (u64, u64), closed: Option<(u16, Closer)>) {
        let end = match end {
            TunnelEnd::Closed => "closed",
            TunnelEnd::Idle => "idle",
            TunnelEnd::Drain => "drain",
            TunnelEnd::Rebalance => "rebalance",
            TunnelEnd::Shutdown => "shutdown",
            TunnelEnd::Error(e) => {
                tracing::debug!(error = %e, "tunnel ended with an error");
                "error"
            }
        };
        let duration = self.started.elapsed();
        crate::metrics::global()
            .tunnels_ended
            .with_label_values(&[&self.upstream, end])
            .inc();
        self.histogram.observe(duration.as_secs_f64());
        if super::access::enabled() {
            super::access::tunnel(&TunnelRecord {
                client: self.client,
                upstream: &self.upstream,
                backend: self.backend,
                kind: if self.websocket { "websocket" } else { "tcp" },
                up,
                down,
                duration,
                end,
                close: closed,
                backend_id: self.logged.as_ref().map(|l| &*l.backend_id),
                handshake: self.logged.as_ref().and_then(|l| l.handshake.as_ref()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_close_frame_sent_behind_the_handshake_is_the_client_s() {
        let (client, _c) = tokio::io::duplex(64);
        let (backend, _b) = tokio::io::duplex(64);
        let idle = Duration::from_secs(60);
        let mut t = Tunnel::new(client, backend, idle, CancellationToken::new(), true);
        t.send_first(masked_close_frame(1000, [1, 2, 3, 4]).to_vec());
        // The backend's answering close comes after.
        t.already_sent_down(&close_frame(1000));
        assert_eq!(t.closed(), Some((1000, Closer::Client)));
    }

    /// The spread's phase and reasons fit in the two bytes the phase took before (a tag and a
    /// reason): an idle tunnel is no bigger for them.
    #[test]
    fn the_phase_is_two_bytes() {
        assert_eq!(std::mem::size_of::<Phase>(), 2);
    }

    /// A drain's close waits for a time within the drain's window, relaying meanwhile; a close
    /// with no window (the rebalancer's) goes at once.
    #[tokio::test(start_paused = true)]
    async fn a_drain_close_is_spread_within_its_window_and_a_rebalance_is_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let live = Arc::new(Live::default());
        let (client, mut c) = tokio::io::duplex(64);
        let (backend, mut b) = tokio::io::duplex(64);
        let close = CancellationToken::new();
        let idle = Duration::from_secs(3600);
        let mut t = Box::pin(
            Tunnel::new(client, backend, idle, close.clone(), false).counting(live.clone()),
        );
        let window = Duration::from_secs(10);
        live.set_closing(Some((Instant::now(), Instant::now() + window)));
        close.cancel();
        let started = Instant::now();
        // Told to close, it still relays until its close time.
        tokio::select! {
            _ = &mut t => panic!("ended before relaying"),
            _ = async {
                c.write_all(b"hi").await.unwrap();
                let mut got = [0u8; 2];
                b.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"hi");
            } => {}
        }
        let end = (&mut t).await;
        assert!(matches!(end, TunnelEnd::Drain), "{end:?}");
        assert!(started.elapsed() <= window, "{:?}", started.elapsed());

        let (client, _c) = tokio::io::duplex(64);
        let (backend, _b) = tokio::io::duplex(64);
        let close = CancellationToken::new();
        let t = Tunnel::new(client, backend, idle, close.clone(), false)
            .counting(Arc::new(Live::default()));
        close.cancel();
        let started = Instant::now();
        assert!(matches!(t.await, TunnelEnd::Rebalance));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    /// A drain taken back after its spread started (the registration renewed, the backend
    /// set active): the tunnel waiting for its close time stays open past the window, on the
    /// backend's renewed close signal, which a later drain fires.
    #[tokio::test(start_paused = true)]
    async fn a_drain_taken_back_while_spreading_keeps_the_tunnel_open() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let live = Arc::new(Live::default());
        let (client, mut c) = tokio::io::duplex(64);
        let (backend, mut b) = tokio::io::duplex(64);
        let close = CancellationToken::new();
        let idle = Duration::from_secs(3600);
        let mut t = Box::pin(
            Tunnel::new(client, backend, idle, close.clone(), false).counting(live.clone()),
        );
        let window = Duration::from_secs(10);
        live.set_closing(Some((Instant::now(), Instant::now() + window)));
        close.cancel();
        let echo = async |c: &mut tokio::io::DuplexStream, b: &mut tokio::io::DuplexStream| {
            c.write_all(b"hi").await.unwrap();
            let mut got = [0u8; 2];
            b.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hi");
        };
        tokio::select! {
            _ = &mut t => panic!("ended before relaying"),
            _ = echo(&mut c, &mut b) => {}
        }
        assert!(matches!(t.as_ref().phase, Phase::Spreading(Reason::Drain)));
        // Taken back, as the controller does: a renewed signal, then no window.
        let renewed = CancellationToken::new();
        live.renew_close(renewed.clone());
        live.set_closing(None);
        tokio::select! {
            end = &mut t => panic!("ended after the drain was taken back: {end:?}"),
            _ = tokio::time::sleep(2 * window) => {}
        }
        assert!(matches!(t.as_ref().phase, Phase::Open));
        tokio::select! {
            _ = &mut t => panic!("ended"),
            _ = echo(&mut c, &mut b) => {}
        }
        // A later drain closes it, within its window.
        let started = Instant::now();
        live.set_closing(Some((started, started + window)));
        renewed.cancel();
        let end = (&mut t).await;
        assert!(matches!(end, TunnelEnd::Drain), "{end:?}");
        assert!(started.elapsed() <= window, "{:?}", started.elapsed());
    }
}
