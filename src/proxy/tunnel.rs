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
//! Ending: each side's end is passed on as a half-close (a shutdown of the other socket), and
//! the tunnel ends once both sides have ended. A WebSocket ends sooner: after a close frame has
//! gone one way, its sender may send nothing more, so when the other side then ends, both
//! sockets close at once (as nginx closes both once either side ends), where both sockets are
//! plain TCP, whose close sends the FIN a shutdown would (a TLS or HTTP/2 peer is owed its
//! orderly close). That saves a `shutdown` each way and a wake-up per WebSocket, and frees
//! both sockets without waiting on the client. A peer that sends bytes after its own close
//! frame (which RFC 6455 forbids) may get a reset rather than a FIN, as from nginx.
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
//! Counting: a WebSocket tunnel hands what each read carried (data messages, payload bytes; see
//! [`FrameTracker::feed`]) to its upstream's [`TunnelMeter`] as it goes, and notes who ended it:
//! the first close frame's sender, else the side whose stream ended first (an abrupt end,
//! 1006), else tideway's reason. It holds one open WebSocket of its backend's count while it
//! lives.
//!
//! Dead peers ([`super::liveness`]): with `ping_interval`, a WebSocket tunnel pings a client
//! it has not heard from for that long (and the backend, with `ping_backend`), putting its
//! ping between two frames of the stream towards that peer, and drops the pongs that answer
//! it ([`FrameTracker::sift`]); the application's own pings and pongs go by untouched. A peer
//! that sends nothing for `pong_timeout` after a ping is closed as on an idle timeout (1001
//! both ways). A peer that takes none of the bytes waiting for it for `send_timeout` is cut:
//! what waits for it is dropped, the other peer gets 1001 (between two frames), and the
//! tunnel ends without lingering. All of it runs on the tunnel's one timer.
//!
//! A drain taken back while its tunnels wait for their close times (the registration renewed,
//! an operator set the backend active) closes nothing more: when its time comes, a tunnel
//! finds its backend's drain window gone, goes back to relaying and listens to the backend's
//! renewed close signal ([`Live::renewed_close`]), so a later drain or shutdown still closes
//! it. Limit: a session of a `rebalance` upstream then no longer listens to its own close
//! signal (a child of the spent one, which stays cancelled in the pool's sessions): the
//! rebalancer counts it as already closing and does not move it; a later drain or a shutdown
//! still closes it.

use super::access::Closer;
use super::frame::{close_frame, masked_close_frame, masked_ping_frame, ping_frame, GOING_AWAY};
use super::liveness::{now_ms, Expired, Side, Watch, BACKEND, CLIENT};
use crate::metrics::websocket::{Flow, TunnelMeter};
use crate::pool::spread::{self, Cause};
use crate::pool::Live;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

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
    /// A pinged peer did not answer within `pong_timeout`.
    PingTimeout,
    /// A peer took no byte waiting for it for `send_timeout`.
    SendTimeout,
    /// A socket error.
    Error(io::Error),
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
    PingTimeout,
    SendTimeout,
}

impl Reason {
    fn end(self) -> TunnelEnd {
        match self {
            Reason::Idle => TunnelEnd::Idle,
            Reason::Drain => TunnelEnd::Drain,
            Reason::Rebalance => TunnelEnd::Rebalance,
            Reason::Shutdown => TunnelEnd::Shutdown,
            Reason::PingTimeout => TunnelEnd::PingTimeout,
            Reason::SendTimeout => TunnelEnd::SendTimeout,
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
    /// Idle, ping, pong and send deadlines, behind `timer`.
    watch: Watch,
    timer: Pin<Box<Sleep>>,
    close: Pin<Box<WaitForCancellationFutureOwned>>,
    phase: Phase,
    /// The backend's counters, for the bytes each way.
    live: Option<Arc<Live>>,
    /// The upstream's counters, for the messages each way (WebSocket), and its histograms.
    meter: Option<Arc<TunnelMeter>>,
    /// The first close frame's code and who sent it (WebSocket).
    closed: Option<(u16, Closer)>,
    /// Whose stream ended (or broke) first while no close frame had gone by (WebSocket).
    cut: Option<Closer>,
    /// Both sockets are plain TCP (see `ended_after_close`). One byte: it fits the struct's
    /// padding.
    plain: bool,
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
            watch: Watch::new(idle),
            timer: Box::pin(tokio::time::sleep(idle)),
            close: Box::pin(close.cancelled_owned()),
            phase: Phase::Open,
            live: None,
            meter: None,
            closed: None,
            cut: None,
            plain: false,
        }
    }

    /// Count the bytes moved in the backend's counters as they move, and a WebSocket's
    /// messages in its upstream's `meter` (a WebSocket is one of the backend's open ones until
    /// the tunnel drops).
    pub fn counting(mut self, live: Arc<Live>, meter: Arc<TunnelMeter>) -> Self {
        if self.up.track {
            live.websocket(true);
        }
        self.live = Some(live);
        self.meter = Some(meter);
        self
    }

    /// Close the sockets and hand over what the report needs.
    pub fn finish(mut self) -> Finished {
        Finished {
            moved: self.moved(),
            closed: self.closed,
            cut: self.cut,
            meter: self.meter.take(),
        }
    }

    /// Ping (WebSocket only) and time sends as `live` says.
    pub fn keeping(mut self, live: &crate::config::Liveness) -> Self {
        let mut live = *live;
        if !self.up.track {
            live.ping_interval = None;
            live.ping_backend = false;
        }
        self.watch.keep(&live);
        if self.watch.pings(CLIENT) {
            self.up.frames.absorb_pongs();
        }
        if self.watch.pings(BACKEND) {
            self.down.frames.absorb_pongs();
        }
        if let Ok(ms) = self.watch.next(self.waiting(), now_ms()) {
            self.wake_by(ms);
        }
        self
    }

    /// By side read from: do bytes wait to be written the other way?
    /// (A flush the destination left pending counts: a TLS peer that stopped reading leaves
    /// bytes in rustls' buffer, not in `pending`.)
    fn waiting(&self) -> [bool; 2] {
        let waits = |h: &Half| !h.pending.is_empty() || h.unflushed;
        [waits(&self.up), waits(&self.down)]
    }

    /// Have the timer fire in `ms` at the latest.
    fn wake_by(&mut self, ms: u32) {
        let at = Instant::now() + Duration::from_millis(u64::from(ms));
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
        }
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

    /// Note whose stream ended first, if no close frame went by before: after a pump `way`
    /// that found its source's end (`ended`) or failed (`failed`; a failed read ends the
    /// source, else the write to the destination failed).
    fn note_cut(&mut self, way: Way, ended: bool, failed: bool) {
        if self.cut.is_some() || self.closed.is_some() || !(ended || failed) {
            return;
        }
        let (src, dst) = match way {
            Way::Up => (Closer::Client, Closer::Backend),
            Way::Down => (Closer::Backend, Closer::Client),
        };
        self.cut = Some(if ended { src } else { dst });
    }

    /// Move bytes one way (see [`pump`]), hand what was read to the backend's counters and,
    /// for a WebSocket, its messages to the upstream's, and stamp the watch. Returns whether
    /// any byte moved.
    fn pump(&mut self, cx: &mut Context<'_>, way: Way, to_boundary: bool) -> io::Result<bool> {
        // Once tideway closes (its close frames sent, both reads ended), half-closes go on.
        let relaying = matches!(self.phase, Phase::Open | Phase::Spreading(_));
        let Tunnel {
            client,
            backend,
            up,
            down,
            live,
            meter,
            plain,
            ..
        } = self;
        let mut flow = Flow::default();
        let (h, was_open, began, result) = match way {
            Way::Up => {
                let (before, was_open, empty) = (up.total, !up.read_closed, up.pending.is_empty());
                let last = relaying && *plain && went_by(down);
                let r = pump(cx, client, backend, up, (to_boundary, last), &mut flow);
                (
                    up.total - before,
                    was_open,
                    empty && !up.pending.is_empty(),
                    r,
                )
            }
            Way::Down => {
                let (before, was_open, empty) =
                    (down.total, !down.read_closed, down.pending.is_empty());
                let last = relaying && *plain && went_by(up);
                let r = pump(cx, backend, client, down, (to_boundary, last), &mut flow);
                (
                    down.total - before,
                    was_open,
                    empty && !down.pending.is_empty(),
                    r,
                )
            }
        };
        if let (Some(live), 1..) = (live.as_ref(), h) {
            match way {
                Way::Up => live.sent(h),
                Way::Down => live.received(h),
            }
        }
        if let Some(meter) = meter.as_ref().filter(|_| flow != Flow::default()) {
            meter.flowed(way as usize, flow);
        }
        if h > 0 {
            self.note_close(way);
        }
        if self.up.track {
            let half = match way {
                Way::Up => &self.up,
                Way::Down => &self.down,
            };
            self.note_cut(way, was_open && half.read_closed, result.is_err());
        }
        let p = result?;
        if p.read || p.wrote {
            let side = match way {
                Way::Up => CLIENT,
                Way::Down => BACKEND,
            };
            self.watch.moved(side, p.read, p.wrote || began, now_ms());
            // Bytes began to wait: the send timeout may come before the timer.
            if let (true, Phase::Open, Some(ms)) = (began, &self.phase, self.watch.send_ms()) {
                self.wake_by(ms);
            }
        }
        Ok(p.read || p.wrote)
    }

    /// Queue tideway's ping to each peer it is due to (between two frames of the stream to
    /// it). Returns whether one was queued.
    fn send_pings(&mut self, now: u32) -> bool {
        let (mut sent, mut began_any) = (false, false);
        for side in [CLIENT, BACKEND] {
            if !self.watch.ping_due(side, now) {
                continue;
            }
            // The direction towards `side` is the one reading from the other peer.
            let (h, from): (&mut Half, Side) = if side == CLIENT {
                (&mut self.down, BACKEND)
            } else {
                (&mut self.up, CLIENT)
            };
            if !h.takes_frame() {
                continue; // mid-frame: at a later boundary
            }
            // No ping behind a backlog: its pong would be late for the bytes ahead of it, not
            // for a dead peer (a peer that takes nothing is send_timeout's). No ping once a
            // close frame went by either way: the peers are closing, and a ping after a close
            // frame is a protocol error to some of them.
            if !h.pending.is_empty() || h.unflushed || self.closed.is_some() {
                continue;
            }
            let began = h.pending.is_empty();
            if side == CLIENT {
                h.queue(&ping_frame());
            } else {
                h.queue(&masked_ping_frame(rand::random()));
            }
            self.watch.moved(from, false, began, now);
            self.watch.pinged(side, now);
            sent = true;
            began_any |= began;
        }
        if sent {
            self.wake_by(self.watch.pong_ms());
        }
        if let (true, Some(ms)) = (began_any, self.watch.send_ms()) {
            self.wake_by(ms);
        }
        sent
    }

    /// The watch expired: close as `why` says (None: closing goes on in the next phase).
    fn expire(&mut self, why: Expired, now: u32) -> Option<TunnelEnd> {
        match why {
            Expired::Idle => self.begin_close(Reason::Idle),
            Expired::Ping => self.begin_close(Reason::PingTimeout),
            Expired::Send => self.cut_stalled(now),
        }
    }

    /// Send timeout: drop what waits for the peer that stopped taking bytes and write it no
    /// more; the other peer gets 1001 between two frames; then end, without lingering.
    fn cut_stalled(&mut self, now: u32) -> Option<TunnelEnd> {
        if !self.up.track {
            return Some(TunnelEnd::SendTimeout);
        }
        let waiting = self.waiting();
        for (side, h) in [(CLIENT, &mut self.up), (BACKEND, &mut self.down)] {
            if self.watch.stalled(side, waiting[side], now) {
                h.pending = Vec::new();
                h.pos = 0;
                h.unflushed = false;
                h.write_closed = true;
            }
        }
        if !self.down.write_closed && self.down.frames.sent_at_boundary() {
            self.down.queue(&close_frame(GOING_AWAY));
            self.closed.get_or_insert((GOING_AWAY, Closer::Tideway));
        }
        if !self.up.write_closed && self.up.frames.sent_at_boundary() {
            self.up
                .queue(&masked_close_frame(GOING_AWAY, rand::random()));
        }
        self.up.read_closed = true;
        self.down.read_closed = true;
        self.phase = Phase::Lingering(Reason::SendTimeout);
        self.timer.as_mut().reset(Instant::now() + DEFAULT_LINGER);
        None
    }

    /// Account for server-to-client bytes already forwarded before the tunnel started.
    pub fn already_sent_down(&mut self, bytes: &[u8]) {
        let flow = self.down.frames.feed(bytes);
        self.early_flow(Way::Down, flow);
        self.note_close(Way::Down);
    }

    /// Client-to-server bytes that came before the tunnel started (behind the handshake): the
    /// tunnel sends them to the backend first, ahead of anything it reads from the client.
    /// Not counted in [`Self::moved`] (bytes read by the tunnel), but framed like them.
    pub fn send_first(&mut self, bytes: Vec<u8>) {
        let flow = self.up.frames.feed(&bytes);
        self.early_flow(Way::Up, flow);
        self.note_close(Way::Up);
        debug_assert!(self.up.pending.is_empty());
        debug_assert!(u32::try_from(bytes.len()).is_ok(), "pos is a u32");
        self.up.pending = bytes;
        self.up.pos = 0;
        // Bytes now wait for the backend: its send timeout runs from here.
        self.watch.moved(CLIENT, false, true, now_ms());
        if let Some(ms) = self.watch.send_ms() {
            self.wake_by(ms);
        }
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
        // The watch's next deadline (idle, ping, pong, send); one already passed fires now.
        let ms = self.watch.next(self.waiting(), now_ms()).unwrap_or(0);
        let at = Instant::now() + Duration::from_millis(u64::from(ms));
        self.timer.as_mut().reset(at);
        true
    }

    /// Relay both ways: whether any byte moved, or the end if an error or both sides closing
    /// ended the tunnel.
    fn relay(&mut self, cx: &mut Context<'_>) -> Result<bool, TunnelEnd> {
        let up = self.pump(cx, Way::Up, false);
        let down = self.pump(cx, Way::Down, false);
        let moved = match (up, down) {
            (Err(e), _) | (_, Err(e)) => return Err(TunnelEnd::Error(e)),
            (Ok(a), Ok(b)) => a || b,
        };
        if (self.up.done() && self.down.done()) || self.ended_after_close() {
            return Err(TunnelEnd::Closed);
        }
        Ok(moved)
    }

    /// A WebSocket's one side ended after the other side's close frame went by whole, and
    /// everything read is written: nothing more may go either way, so both sockets close now,
    /// as nginx closes both once one side ends, instead of passing the half-close on and
    /// waiting for the other side's end (a `shutdown` each way, and a wake-up, per WebSocket).
    /// Only where both sockets are plain TCP: the tunnel's end closes both, and a TLS or
    /// HTTP/2 peer is owed an orderly close (close_notify, END_STREAM), which only its
    /// shutdown sends.
    fn ended_after_close(&self) -> bool {
        let over = |ended: &Half, other: &Half| {
            went_by(other) && ended.done() && other.pending.is_empty() && !other.unflushed
        };
        self.plain && (over(&self.up, &self.down) || over(&self.down, &self.up))
    }

    /// Count the messages and payload bytes moved before the tunnel started.
    fn early_flow(&self, way: Way, flow: Flow) {
        if let Some(meter) = &self.meter {
            meter.flowed(way as usize, flow);
        }
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

    /// Whether both sockets are plain TCP, whose close sends the FIN a shutdown would, so a
    /// WebSocket's end may close them without a shutdown first (see `ended_after_close`).
    pub fn plain_tcp(mut self, client: bool, backend: bool) -> Self {
        self.plain = client && backend;
        self
    }
}

/// Did a close frame go by this way, to its last byte? Its sender may send nothing more after
/// it, so (both sockets being plain TCP) the other way's end ends the tunnel.
fn went_by(half: &Half) -> bool {
    half.frames.close_code().is_some() && half.frames.at_boundary()
}

impl<C, B> Drop for Tunnel<C, B> {
    fn drop(&mut self) {
        if let (true, Some(live)) = (self.up.track, &self.live) {
            live.websocket(false);
        }
    }
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
                    let moved = match this.relay(cx) {
                        Ok(moved) => moved,
                        Err(end) => return Poll::Ready(end),
                    };
                    let fired = this.timer.as_mut().poll(cx).is_ready();
                    // A ping waits for a frame boundary: look again whenever bytes moved.
                    if fired || (moved && this.watch.pings(CLIENT)) {
                        let now = now_ms();
                        if this.send_pings(now) {
                            continue; // pump it out
                        }
                        if fired {
                            match this.watch.next(this.waiting(), now) {
                                Err(why) => match this.expire(why, now) {
                                    Some(end) => return Poll::Ready(end),
                                    None => continue,
                                },
                                Ok(ms) => {
                                    let at = Instant::now() + Duration::from_millis(ms.into());
                                    this.timer.as_mut().reset(at);
                                    continue;
                                }
                            }
                        }
                    }
                    return Poll::Pending;
                }
                Phase::Spreading(why) => {
                    if matches!(why, Reason::Drain) && this.close.as_mut().poll(cx).is_ready() {
                        this.shutdown_while_spreading();
                        continue;
                    }
                    if let Err(end) = this.relay(cx) {
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
                    if this.down.frames.sent_at_boundary() && this.down.pending.is_empty() {
                        if !this.down.write_closed {
                            this.down.queue(&close_frame(GOING_AWAY));
                            this.closed.get_or_insert((GOING_AWAY, Closer::Tideway));
                        }
                        this.down.read_closed = true;
                        if this.up.frames.sent_at_boundary() && !this.up.write_closed {
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
                    // A send timeout's peer is cut, not waited for.
                    let cut = matches!(why, Reason::SendTimeout);
                    if cut && this.up.done() && this.down.done() {
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

mod ending;
mod half;

pub use ending::{Ending, Finished, Logged};
use half::{discard, pump, Half, Way};

#[cfg(test)]
mod tests;
