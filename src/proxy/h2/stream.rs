//! One HTTP/2 stream as a pingora IO ([`H2Io`]), so the one HTTP engine serves it as it serves
//! an HTTP/1 connection.
//!
//! - Reading gives the request's DATA, releasing flow-control window as the engine consumes
//!   it (a client can never have more in flight than its window). After END_STREAM a read
//!   pends until the client resets the stream (then fails): the engine reads 0 as "the client
//!   went away", and watches its client while the backend thinks. Only a body read to its end
//!   (while [`H2Io::stop_at_end`] is on) sees END_STREAM as 0.
//! - The response head is typed ([`super::answer::H2Head`], given with [`H2Io::set_head`])
//!   and goes out with the first write or flush: bytes written are only ever DATA, never an
//!   HTTP/1 head. A write waits for flow-control capacity (a zero window stalls it, and the
//!   engine's send timeout bounds the stall); shutdown ends the stream (END_STREAM).
//! - The answer to a HEAD never carries DATA, whatever is written.
//! - Dropped before its end (a cut answer, a client gone), the stream is reset.
//! - Once the answer ended (END_STREAM sent), a read gives 0 at once: a request body left
//!   unread is not drained (nginx's lingering close is for HTTP/1). Dropped, the stream's
//!   handles tell the codec to end it with RST_STREAM(NO_ERROR) once the answer is out
//!   (RFC 9113 §8.1), so the client stops sending.
//! - [`H2Io::reset_watch`]: a future that resolves when the client resets the stream, for
//!   the stream's task to race its work against ([`super::reset`]).

use super::answer::H2Head;
use bytes::{Buf, Bytes};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream, UniqueID, UniqueIDType};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes one write asks flow control for (and sends as DATA at once).
const MAX_WRITE: usize = 16 * 1024;

/// One stream of an HTTP/2 connection, for the engine.
pub struct H2Io {
    body: RecvStream,
    /// DATA received and not read yet.
    chunk: Bytes,
    /// END_STREAM seen.
    ended: bool,
    /// A read at END_STREAM gives 0 (a body read to its end), not a wait for a reset.
    eof_at_end: AtomicBool,
    /// Shared with the stream's [`ResetWatch`].
    out: Arc<Mutex<Out>>,
    id: u32,
    /// The request is a HEAD: its answer never carries DATA (bytes written are dropped).
    head_only: bool,
}

/// The sending side: the head waiting to go, and where the stream stands.
struct Out {
    head: Option<H2Head>,
    side: Side,
}

enum Side {
    /// No head sent yet.
    Waiting(SendResponse<Bytes>),
    /// Head sent; DATA goes out.
    Sending(SendStream<Bytes>),
    /// END_STREAM sent, or the stream reset.
    Ended,
}

impl std::fmt::Debug for H2Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Io").field("id", &self.id).finish()
    }
}

fn io_error(e: h2::Error) -> io::Error {
    if e.is_reset() || e.is_go_away() || e.is_io() {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    } else {
        io::Error::other(e)
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the HTTP/2 stream is closed")
}

impl H2Io {
    /// The stream of a request (`head_only`: a HEAD) whose body is `body`, answered through
    /// `respond`.
    pub fn new(body: RecvStream, respond: SendResponse<Bytes>, head_only: bool) -> Self {
        let id = respond.stream_id().as_u32();
        H2Io {
            body,
            chunk: Bytes::new(),
            ended: false,
            eof_at_end: AtomicBool::new(false),
            out: Arc::new(Mutex::new(Out {
                head: None,
                side: Side::Waiting(respond),
            })),
            id,
            head_only,
        }
    }

    /// Is the stream's request a HEAD?
    pub fn head_only(&self) -> bool {
        self.head_only
    }

    /// A future that resolves once the client resets the stream (or the connection fails)
    /// before the answer ended; after that it never resolves.
    pub fn reset_watch(&self) -> ResetWatch {
        ResetWatch(self.out.clone())
    }

    /// The HTTP/2 stream `stream` is, if it is one (the engine's way to the typed head).
    pub fn of(stream: &Stream) -> Option<&H2Io> {
        (**stream).as_any().downcast_ref::<H2Io>()
    }

    fn lock(&self) -> MutexGuard<'_, Out> {
        lock(&self.out)
    }

    /// The response head, sent with the first write or flush.
    pub fn set_head(&self, head: H2Head) {
        self.lock().head = Some(head);
    }

    /// Send `100 Continue` (a client that expects one before its body).
    pub fn send_continue(&self) -> io::Result<()> {
        let mut out = self.lock();
        match &mut out.side {
            Side::Waiting(r) => {
                let mut res = http::Response::new(());
                *res.status_mut() = http::StatusCode::CONTINUE;
                r.send_informational(res).map_err(io_error)
            }
            _ => Ok(()),
        }
    }

    /// While `on`, a read at END_STREAM gives 0 (the caller reads the body to its end); off, a
    /// read after END_STREAM waits for a reset, as the engine's watch of its client expects.
    pub fn stop_at_end(&self, on: bool) {
        self.eof_at_end.store(on, Ordering::Relaxed);
    }

    /// Reset the stream (unless it ended).
    pub fn reset(&self, reason: Reason) {
        let mut out = self.lock();
        match &mut out.side {
            Side::Waiting(r) => r.send_reset(reason),
            Side::Sending(s) => s.send_reset(reason),
            Side::Ended => {}
        }
        out.side = Side::Ended;
    }
}

fn lock(out: &Mutex<Out>) -> MutexGuard<'_, Out> {
    out.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resolves once the client resets its stream, the connection fails, or tideway reset it;
/// pends for good once the answer ended. Polled on the stream's own task, as [`H2Io`]'s writes
/// are: the codec keeps one waker per stream for both.
pub struct ResetWatch(Arc<Mutex<Out>>);

impl std::future::Future for ResetWatch {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut out = lock(&self.0);
        let reset = match &mut out.side {
            Side::Waiting(r) => r.poll_reset(cx),
            Side::Sending(s) => s.poll_reset(cx),
            Side::Ended => return Poll::Pending,
        };
        // An error (the connection failed) ends the stream as a reset does.
        reset.map(|_| ())
    }
}

impl Out {
    /// Send the head (with END_STREAM when `end`); it must have been given.
    fn start(&mut self, end: bool) -> io::Result<()> {
        let Side::Waiting(respond) = &mut self.side else {
            return Ok(());
        };
        let Some(head) = self.head.take() else {
            // Bytes written with no typed head would be HTTP/1 text: never sent as a body.
            return Err(io::Error::other("no response head for the HTTP/2 stream"));
        };
        let send = respond
            .send_response(head.into_response(), end)
            .map_err(io_error)?;
        self.side = if end {
            Side::Ended
        } else {
            Side::Sending(send)
        };
        Ok(())
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.lock().side, Side::Ended) {
            // Answered (or reset): what the client still sends is not read (see the module
            // doc); 0 ends a linger at once.
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.chunk.is_empty() {
                let n = buf.remaining().min(this.chunk.len());
                buf.put_slice(&this.chunk[..n]);
                this.chunk.advance(n);
                let _ = this.body.flow_control().release_capacity(n);
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                if this.eof_at_end.load(Ordering::Relaxed) {
                    return Poll::Ready(Ok(()));
                }
                // The request is whole: what is left to learn is whether the client gives up.
                let reset = match &mut this.lock().side {
                    Side::Waiting(r) => r.poll_reset(cx),
                    Side::Sending(s) => s.poll_reset(cx),
                    // Answered: nothing more comes (a closing connection's drain ends here).
                    Side::Ended => return Poll::Ready(Ok(())),
                };
                return match ready!(reset) {
                    Ok(reason) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("the client reset the stream: {reason}"),
                    ))),
                    Err(e) => Poll::Ready(Err(io_error(e))),
                };
            }
            match ready!(this.body.poll_data(cx)) {
                Some(Ok(data)) => this.chunk = data,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => this.ended = true,
            }
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let head_only = this.head_only;
        let mut out = this.lock();
        out.start(false)?;
        let Side::Sending(send) = &mut out.side else {
            return Poll::Ready(Err(closed()));
        };
        if buf.is_empty() || head_only {
            // Tideway's own answers carry their body to HEAD too: it goes nowhere.
            return Poll::Ready(Ok(buf.len()));
        }
        send.reserve_capacity(buf.len().min(MAX_WRITE));
        let capacity = loop {
            let c = send.capacity();
            if c > 0 {
                break c;
            }
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Err(closed())),
            }
        };
        let n = capacity.min(buf.len());
        send.send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes frames out; a head given goes now.
        let mut out = self.get_mut().lock();
        if out.head.is_some() {
            out.start(false)?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut guard = self.get_mut().lock();
        let out = &mut *guard;
        match &mut out.side {
            Side::Waiting(r) if out.head.is_none() => {
                // Nothing to answer with: the stream is cut.
                r.send_reset(Reason::INTERNAL_ERROR);
                out.side = Side::Ended;
            }
            Side::Waiting(_) => out.start(true)?,
            Side::Sending(s) => {
                let sent = s.send_data(Bytes::new(), true);
                out.side = Side::Ended;
                sent.map_err(io_error)?;
            }
            Side::Ended => {}
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for H2Io {
    fn drop(&mut self) {
        // Not ended: the answer was cut (or never given); the client must see that.
        self.reset(Reason::INTERNAL_ERROR);
    }
}

impl UniqueID for H2Io {
    fn id(&self) -> UniqueIDType {
        self.id as UniqueIDType
    }
}

crate::net::io_without_extras!(H2Io);

impl GetSocketDigest for H2Io {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        None
    }
}
