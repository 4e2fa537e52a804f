//! A client that stops reading an HTTP/2 connection ([`Watched`], [`Stall`]).
//!
//! The codec writes every frame tideway owes the client (SETTINGS and PING ACKs, WINDOW_UPDATE,
//! responses) to the connection's socket, and reads no more frames while a write waits: a
//! client that floods SETTINGS or PINGs and never reads their ACKs (or simply stops reading)
//! holds its connection open at no cost but the socket buffers. [`Watched`] wraps the socket
//! the codec writes to and notes when a write or flush last waited without the socket taking
//! a byte since; the connection's loop closes a connection whose writes made no progress for
//! the listener's `send_timeout` (nginx's `send_timeout`: the longest wait between two
//! successive writes). Its timer is set only while a write waits.
//!
//! `Watched` sits above TLS: a write counts as progress when the TLS layer takes its bytes,
//! which it does while its own buffer has room (rustls: 64 KiB) whether or not the socket
//! takes any. A client that reads nothing is therefore found once that buffer is full: at
//! once in a flood, and only after about 64 KiB of trickled frames (a heartbeat every 30 s
//! fills it in hours) otherwise; nginx's writes land in the kernel's socket buffer the same
//! way. Every stream of a closed connection ends with it, WebSockets over HTTP/2 included,
//! whatever their upstream's own `send_timeout`. The close drops the socket with the
//! client's frames unread, so the kernel answers with a TCP reset: a GOAWAY could not reach
//! a client that does not read.
//! nginx closes such a connection too ("http2 flood detected"), after 10,000 frames queued
//! rather than after a time.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// When the connection's writes last stopped making progress, shared by [`Watched`] (which
/// sets it) and the connection's loop (which reads it, told by [`Stall::started`]).
#[derive(Debug)]
pub struct Stall {
    /// What the times are counted from.
    base: Instant,
    /// Milliseconds from `base` to the first write that waited since the socket last took a
    /// byte, plus one; 0: no write is waiting.
    since: AtomicU64,
    /// Told when writes start waiting.
    started: Notify,
}

impl Stall {
    pub fn new() -> Arc<Stall> {
        Arc::new(Stall {
            base: Instant::now(),
            since: AtomicU64::new(0),
            started: Notify::new(),
        })
    }

    /// Since when the writes have been waiting without progress (None: they are not waiting).
    fn since(&self) -> Option<Instant> {
        match self.since.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms - 1)),
        }
    }

    /// When the writes will have waited `limit`, if they still wait then (None: they are not
    /// waiting).
    pub fn ends(&self, limit: Duration) -> Option<Instant> {
        self.since().map(|t| t + limit)
    }

    /// How long the writes have been waiting without progress (None: they are not waiting).
    #[cfg(test)]
    fn stalled_for(&self) -> Option<Duration> {
        self.since()
            .map(|at| Instant::now().saturating_duration_since(at))
    }

    /// Resolves when writes start waiting (at once if they started since the last call), so
    /// a connection sets a timer only while a write waits.
    pub async fn started(&self) {
        self.started.notified().await
    }

    fn waiting(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            let ms = Instant::now()
                .saturating_duration_since(self.base)
                .as_millis();
            let ms = u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1;
            self.since.store(ms, Ordering::Release);
            self.started.notify_one();
        }
    }

    fn moved(&self) {
        self.since.store(0, Ordering::Release);
    }

    /// Note what a write or flush gave.
    fn note<T>(&self, p: &Poll<io::Result<T>>, took: impl FnOnce(&T) -> bool) {
        match p {
            Poll::Pending => self.waiting(),
            Poll::Ready(Ok(v)) if took(v) => self.moved(),
            Poll::Ready(_) => {}
        }
    }
}

/// The connection's socket, its writes watched by a [`Stall`].
pub struct Watched<T> {
    inner: T,
    stall: Arc<Stall>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, stall: Arc<Stall>) -> Self {
        Watched { inner, stall }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stall.note(&p, |&n| n > 0);
        p
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stall.note(&p, |&n| n > 0);
        p
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        self.stall.note(&p, |_| true);
        p
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A write into a full pipe waits, and the stall grows with (paused) time until the reader
    /// takes bytes; a write that goes through ends it.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_is_a_stall_until_the_peer_reads() {
        let (near, mut far) = tokio::io::duplex(16);
        let stall = Stall::new();
        let mut w = Watched::new(near, stall.clone());
        w.write_all(&[0; 16]).await.unwrap();
        assert_eq!(stall.stalled_for(), None, "the pipe took the bytes");
        let blocked = tokio::time::timeout(Duration::from_secs(3), w.write_all(&[1; 8])).await;
        assert!(blocked.is_err(), "the pipe is full");
        let waited = stall.stalled_for().expect("the write waited");
        let told = tokio::time::timeout(Duration::ZERO, stall.started()).await;
        assert!(told.is_ok(), "the connection is told the writes wait");
        assert!(waited >= Duration::from_secs(3), "{waited:?}");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(stall.stalled_for().unwrap() >= Duration::from_secs(5));
        let mut got = [0; 16];
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
            .await
            .unwrap();
        w.write_all(&[1; 8]).await.unwrap();
        assert_eq!(stall.stalled_for(), None, "the socket took a byte");
    }
}
