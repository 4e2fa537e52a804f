//! One direction of a tunnel's relay ([`Half`]) and the reads and writes that move its bytes
//! ([`pump`]): a read goes into a buffer on the poll's stack and is written straight through;
//! only what the destination cannot take now is copied to the heap. A WebSocket direction
//! tracks frames as they go by (and, where tideway pings the sender, drops the pongs to its
//! own pings: [`FrameTracker::sift`]), and adds the data messages it saw to a [`Flow`].

use super::super::frame::{FrameTracker, Sifted};
use crate::metrics::websocket::Flow;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read per step; lives on the stack of one poll only.
const STEP: usize = 64 * 1024;
/// Read/write steps per direction per poll, before yielding to other tasks.
const ROUNDS: usize = 16;

/// One direction of the relay. Its fields are sized with care: every idle WebSocket holds
/// two of these (a `u32` offset into a pending copy is plenty: a copy holds at most one read
/// step, or what the client sent behind its handshake (under 16 KiB), plus a close frame).
#[derive(Default)]
pub(super) struct Half {
    /// Bytes read but not yet written; empty (and unallocated) most of the time.
    pub(super) pending: Vec<u8>,
    pub(super) pos: u32,
    /// Track WebSocket frames (not on a plain byte pipe, where it would only cost CPU).
    pub(super) track: bool,
    pub(super) read_closed: bool,
    pub(super) write_closed: bool,
    /// A flush of the destination came back Pending: bytes it took may still sit in its own
    /// buffer (TLS: rustls takes bytes the socket cannot yet), so the next pump flushes first.
    pub(super) unflushed: bool,
    pub(super) frames: FrameTracker,
    /// Bytes read from the source (each read is handed to the backend's counters as it goes).
    pub(super) total: u64,
}

/// Which way bytes go: client to backend, or backend to client (as an index: the order of
/// [`crate::metrics::websocket::DIRECTIONS`]).
#[derive(Clone, Copy)]
pub(super) enum Way {
    Up = 0,
    Down = 1,
}

impl Half {
    pub(super) fn done(&self) -> bool {
        self.read_closed && self.write_closed && self.pending.is_empty()
    }

    pub(super) fn queue(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Can tideway put a frame of its own into this direction now (between two frames, and
    /// still open)?
    pub(super) fn takes_frame(&self) -> bool {
        !self.write_closed && !self.read_closed && self.frames.sent_at_boundary()
    }
}

/// What one pump did: read from its source, wrote to its destination.
#[derive(Default, Clone, Copy)]
pub(super) struct Progress {
    pub(super) read: bool,
    pub(super) wrote: bool,
}

/// Move bytes from `src` to `dst` until neither can go on. With `last_word`, the source's end
/// is not passed on as a half-close: the tunnel ends, and its close ends `dst`.
pub(super) fn pump<R, W>(
    cx: &mut Context<'_>,
    src: &mut R,
    dst: &mut W,
    h: &mut Half,
    (to_boundary, last_word): (bool, bool),
    flow: &mut Flow,
) -> io::Result<Progress>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut p = Progress::default();
    if h.unflushed {
        match Pin::new(&mut *dst).poll_flush(cx) {
            Poll::Ready(Ok(())) => h.unflushed = false,
            Poll::Ready(Err(e)) => return Err(e),
            // The flush's waker is this task's: it runs again when the socket takes more.
            Poll::Pending => return Ok(p),
        }
    }
    for _ in 0..ROUNDS {
        while (h.pos as usize) < h.pending.len() {
            match Pin::new(&mut *dst).poll_write(cx, &h.pending[h.pos as usize..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    h.pos += n as u32;
                    p.wrote = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(p),
            }
        }
        if !h.pending.is_empty() {
            h.pending = Vec::new();
            h.pos = 0;
            if !flush(cx, dst, h)? {
                return Ok(p);
            }
        }
        if h.read_closed {
            if !h.write_closed && last_word {
                // Left for the tunnel's end to close.
                h.write_closed = true;
            }
            if !h.write_closed {
                match Pin::new(&mut *dst).poll_shutdown(cx) {
                    Poll::Ready(_) => h.write_closed = true,
                    Poll::Pending => return Ok(p),
                }
            }
            return Ok(p);
        }
        let cap = if to_boundary {
            match h.frames.until_boundary() {
                None => return Ok(p),
                Some(n) => n.min(STEP as u64) as usize,
            }
        } else {
            STEP
        };
        let mut storage = [MaybeUninit::<u8>::uninit(); STEP];
        let mut rb = ReadBuf::uninit(&mut storage[..cap]);
        match Pin::new(&mut *src).poll_read(cx, &mut rb) {
            Poll::Pending => return Ok(p),
            // A TLS peer that closed its TCP without a close_notify: a plain close here, as
            // on a TCP tunnel (a byte pipe has no framing a cut could hide behind).
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            Poll::Ready(Err(e)) => {
                // Read no further; and the tunnel can tell a broken source from a broken
                // destination.
                h.read_closed = true;
                return Err(e);
            }
            Poll::Ready(Ok(())) => {}
        }
        let data = rb.filled();
        if data.is_empty() {
            h.read_closed = true;
            continue;
        }
        p.read = true;
        h.total += data.len() as u64;
        if h.track && h.frames.absorbs() {
            // tideway's pongs are dropped, what may be one is held back: the rest goes on
            // in pieces, in order.
            let mut rest = data;
            while !rest.is_empty() {
                rest = match h.frames.sift(rest, flow) {
                    Sifted::Pass(n) => {
                        p.wrote |= send(cx, dst, h, &rest[..n])?;
                        &rest[n..]
                    }
                    Sifted::Held(n) | Sifted::Ours(n) => &rest[n..],
                    Sifted::Release { used, held } => {
                        p.wrote |= send(cx, dst, h, held.as_slice())?;
                        &rest[used..]
                    }
                };
            }
        } else {
            if h.track {
                *flow += h.frames.feed(data);
            }
            p.wrote |= send(cx, dst, h, data)?;
        }
        if !h.pending.is_empty() || !flush(cx, dst, h)? {
            return Ok(p);
        }
    }
    // Still busy after ROUNDS steps: let other tasks run, then come back.
    cx.waker().wake_by_ref();
    Ok(p)
}

/// Write `bytes` to `dst` behind what waits in `h`; what `dst` cannot take now waits (a copy).
/// Returns whether `dst` took any.
pub(super) fn send<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    dst: &mut W,
    h: &mut Half,
    bytes: &[u8],
) -> io::Result<bool> {
    if !h.pending.is_empty() {
        h.queue(bytes);
        return Ok(false);
    }
    let mut off = 0;
    while off < bytes.len() {
        match Pin::new(&mut *dst).poll_write(cx, &bytes[off..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => off += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {
                h.queue(&bytes[off..]);
                break;
            }
        }
    }
    Ok(off > 0)
}

/// Flush `dst`: true once done; false while it is still at it (marked in `h`, so the next
/// pump finishes it before reading more; its waker is this task's).
pub(super) fn flush<W: AsyncWrite + Unpin>(
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
pub(super) fn discard<R: AsyncRead + Unpin>(cx: &mut Context<'_>, src: &mut R) -> Poll<bool> {
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
