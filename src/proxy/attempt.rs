//! One try of an HTTP request on a backend connection, run by the retry loop
//! ([`super::route::Route::attempts`]) for [`super::exchange`]: send the request (head and
//! what of the body is in hand, then the rest as it streams), read the backend's answer head
//! (interim ones dropped), and relay the answer with its body framed for the client. Each way
//! it can fail is one typed [`Error`], saying whose fault it was.
//!
//! While the backend thinks, the client is watched: one that goes away ends the attempt, and
//! the bytes it sends meanwhile (pipelined requests, a WebSocket's first frames) are kept in
//! the client buffer for later.

use super::body::{relay, send, Framing, Progress, Relay, RelayError};
use super::error::Error;
use super::exchange::{Buffers, HttpPath, Next, Routed};
use super::h2::answer::H2Head;
use super::request::Request;
use super::response::{inspect_response, Answer, BadResponse, Response};
use super::route::{Attempt, Conn, Route};
use crate::config::UpstreamPolicy;
use crate::net::backend::BackendIo;
use crate::net::wire::{read_head, HeadRead, MAX_HEAD};
use pingora::protocols::Stream;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// A request (head and body) at most this long is sent in one write that any live backend
/// takes into its socket buffer whole.
const SMALL_REQUEST: usize = 64 * 1024;

/// After a backend stopped taking a request, how long its answer may take to arrive.
const EARLY_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Most interim (1xx) answers a backend may send before its final one.
const MAX_INTERIM: u32 = 8;

/// What an exchange that reached the client says about the backend.
pub(super) enum Health {
    Success,
    /// The backend broke off its response body.
    Failed(RelayError),
    /// Nothing either way (the client went away).
    Unknown,
}

/// An exchange whose response (or part of it) reached the client.
pub(super) struct Done {
    pub next: Next,
    /// The backend switched to WebSocket; what it sent after its 101 head.
    pub switched: Option<Vec<u8>>,
    pub status: u16,
    /// The backend connection is at a message boundary and may carry another request.
    pub reusable: bool,
    pub health: Health,
    /// Bytes sent to the client and to the backend, and how long the backend took to answer.
    pub io: Io,
}

/// What an exchange moved, for the metrics and the access log.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Io {
    pub to_client: u64,
    /// Of `to_client`, the response head's (and any interim answers').
    pub head: u64,
    pub to_backend: u64,
    pub waited: Option<Duration>,
}

impl Done {
    /// The client went away or stopped sending: nothing to answer, no fault of the backend.
    fn client_gone() -> Result<Done, Error> {
        Ok(Done {
            next: Next::Abort,
            switched: None,
            status: 0,
            reusable: false,
            health: Health::Unknown,
            io: Io::default(),
        })
    }
}

/// One try of an HTTP request, for the retry loop.
pub(super) struct HttpAttempt<'a> {
    pub path: &'a HttpPath,
    pub routed: Routed<'a>,
    pub client: &'a mut Stream,
    pub bufs: &'a mut Buffers,
    pub req: &'a Request,
    pub policy: &'a UpstreamPolicy,
    /// Body bytes still to come from the client after what `bufs.out` holds.
    pub streamed: u64,
}

impl Attempt for HttpAttempt<'_> {
    type Output = Done;
    async fn attempt(&mut self, conn: &mut Conn, more: bool) -> Result<Done, Error> {
        self.exchange(conn, more).await
    }

    /// A queued client is watched as one waiting for its answer is: one that goes away leaves
    /// the queue, and what it sends meanwhile is kept for later. Bytes of a body still to
    /// come (`streamed`) join the request in hand (`bufs.out`), so that the body relay takes
    /// only the rest from the socket and nothing of the body is read as the next request.
    /// Once [`MAX_HEAD`] bytes came in while queued, the client is no longer read (nor
    /// watched) until its wait ends, at most `queue_timeout`.
    async fn queued<F>(&mut self, admission: F) -> Option<F::Output>
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let bufs = &mut *self.bufs;
        let mut admission = std::pin::pin!(admission);
        let mut taken = 0;
        loop {
            tokio::select! {
                r = &mut admission => return Some(r),
                n = self.client.read_buf(&mut bufs.client), if bufs.client.len() + taken < MAX_HEAD => {
                    match n {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                    let body = bufs.client.len().min(usize::try_from(self.streamed).unwrap_or(usize::MAX));
                    bufs.out.extend_from_slice(&bufs.client[..body]);
                    bufs.client.drain(..body);
                    self.streamed -= body as u64;
                    taken += body;
                }
            }
        }
    }
}

/// How sending the request ended.
enum Streamed {
    Whole,
    /// The client went away or stopped sending.
    ClientGone,
    /// The backend answered early or stopped reading.
    Cut(Cut),
}

/// Why the backend did not take the whole request (its message is that of the [`Error`] the
/// attempt fails with when no answer follows).
#[derive(Debug, thiserror::Error)]
enum Cut {
    #[error("sending the request: {0}")]
    Request(std::io::Error),
    #[error("the backend closed before the body was sent")]
    Closed,
    #[error("the backend answered before the body was sent")]
    Answered,
    /// Reading what the backend sent while the body went out failed.
    #[error("sending the body: {0}")]
    Read(std::io::Error),
    #[error("sending the body: {0}")]
    Body(RelayError),
}

/// Where reading the backend's answer head got to.
#[allow(clippy::large_enum_variant)] // a return value only, never stored: boxing would allocate
enum Headed {
    /// The final answer, its head `usize` bytes of `bufs.upstream` (its rebuilt head for the
    /// client in `bufs.reply`).
    Final(Response, usize),
    /// The exchange is over (a 101 relayed, or the client gone).
    Done(Done),
}

/// A read of a response head: timed out, or how it ended.
type HeadReading = Result<std::io::Result<HeadRead>, tokio::time::error::Elapsed>;

impl HttpAttempt<'_> {
    /// Send the request on `conn` and relay the answer.
    async fn exchange(&mut self, conn: &mut Conn, more: bool) -> Result<Done, Error> {
        let started = Instant::now();
        let mut moved = Io {
            to_backend: self.bufs.out.len() as u64 + self.streamed,
            ..Io::default()
        };
        self.bufs.upstream.clear();
        // `cut`: the backend stopped taking the request before all of it went out. What it
        // answered (a 413 to an upload over its limit) is relayed and the client connection
        // closes; without an answer, the client is told, and the backend is not blamed.
        // A request that fits a socket buffer is taken whole by any live backend: failing to
        // send one, with no answer, says the connection is broken (a stale pooled one, or a
        // dead backend), and it may go again.
        // On a pooled connection, a send that fails with nothing answered is the stale
        // connection's, whatever the size: the retry loop sends it again on a fresh one.
        let small = (self.bufs.out.len() <= SMALL_REQUEST || conn.reused) && self.streamed == 0;
        // A body that streams goes at the client's pace: such a request took its token but
        // holds no place under `max_pending` (a slow uploader would hold it for its upload).
        if self.streamed > 0 {
            conn.pending = None;
        }
        let cut = match self.send_request(&mut conn.io).await {
            Streamed::Whole => None,
            Streamed::ClientGone => return Done::client_gone(),
            Streamed::Cut(why) => Some(why),
        };
        let headed = self
            .final_head(conn, (cut.as_ref(), small, more), started, &mut moved)
            .await?;
        match headed {
            Headed::Final(res, head_len) => {
                self.relay_answer(&mut conn.io, (res, head_len), cut.is_some(), moved)
                    .await
            }
            Headed::Done(done) => Ok(done),
        }
    }

    /// Send the backend's head and the body in hand, then stream the rest of the body.
    async fn send_request(&mut self, io: &mut BackendIo) -> Streamed {
        if let Err(e) = send(io, &self.bufs.out, self.routed.send_timeout).await {
            return Streamed::Cut(Cut::Request(e));
        }
        if self.streamed == 0 {
            return Streamed::Whole;
        }
        self.stream_body(io).await
    }

    /// Relay the `streamed` body bytes still to come from the client to the backend, watching
    /// the backend: one that answers before the body ends (a 413 to an upload over its limit)
    /// or stops reading cuts the request short. On a cut, what the backend sent is left in
    /// `bufs.upstream`, to be read as its answer.
    async fn stream_body(&mut self, io: &mut BackendIo) -> Streamed {
        // A read half and a write half used at once: plain TCP splits without a lock or an
        // allocation, TLS through tokio's split.
        match io {
            BackendIo::Plain(tcp) => {
                let (from_backend, to_backend) = tcp.split();
                self.relay_body(from_backend, to_backend).await
            }
            BackendIo::Tls(tls) => {
                let (from_backend, to_backend) = tokio::io::split(&mut **tls);
                self.relay_body(from_backend, to_backend).await
            }
        }
    }

    /// [`Self::stream_body`] on the connection's two halves.
    async fn relay_body<R, W>(&mut self, mut from_backend: R, mut to_backend: W) -> Streamed
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let bufs = &mut *self.bufs;
        let mut body = Progress::new(Framing::Length(self.streamed), super::body::Encoding::Raw);
        let how = Relay {
            read: self.path.limits.body_timeout,
            write: self.routed.send_timeout,
            reset_ends: false,
        };
        let mut early = Vec::new();
        let relayed = tokio::select! {
            r = relay(self.client, &mut to_backend, &mut body, &mut bufs.upstream, how) => r,
            n = from_backend.read_buf(&mut early) => {
                bufs.upstream.clear();
                bufs.upstream.append(&mut early);
                return Streamed::Cut(match n {
                    Ok(0) => Cut::Closed,
                    Ok(_) => Cut::Answered,
                    Err(e) => Cut::Read(e),
                });
            }
        };
        bufs.upstream.clear();
        match relayed {
            Ok(_) => Streamed::Whole,
            Err(e) if e.on_read() => Streamed::ClientGone,
            Err(e) => Streamed::Cut(Cut::Body(e)),
        }
    }

    /// Read answer heads until the final one: interim answers are dropped, a 101 to a
    /// handshake is relayed and ends the exchange, a status `next_upstream` lists (when
    /// `more`) fails the attempt before any of it reaches the client. `cut`: why the request
    /// was not sent whole; `small`: it fits one write (see [`HttpAttempt::exchange`]).
    async fn final_head(
        &mut self,
        conn: &mut Conn,
        (cut, small, more): (Option<&Cut>, bool, bool),
        started: Instant,
        moved: &mut Io,
    ) -> Result<Headed, Error> {
        let (req, policy) = (self.req, self.policy);
        let idle = policy.idle_timeout;
        let mut interim = 0;
        loop {
            // After a cut, an answer is already on its way or not coming. A handshake holding
            // an admission place is answered within `handshake_timeout`, or it is the
            // backend's failure (and the place goes on).
            let wait = if cut.is_some() {
                idle.min(EARLY_ANSWER_WAIT)
            } else {
                idle
            };
            let wait = match (&conn.pending, &policy.admission) {
                (Some(_), Some(a)) => wait.min(a.handshake_timeout),
                _ => wait,
            };
            let deadline = tokio::time::Instant::now() + wait;
            let Some(read) = self.read_head_watching(&mut conn.io, deadline).await else {
                return Done::client_gone().map(Headed::Done);
            };
            // Answered: the handshake no longer counts as pending. A stale pooled connection
            // keeps its place for the retry on a fresh one.
            if matches!(read, Ok(Ok(HeadRead::Complete(_)))) {
                conn.pending = None;
            }
            let nothing = self.bufs.upstream.is_empty();
            let head_len = head_or_failure(read, cut, (interim, small, nothing), req.misreadable)?;
            moved.waited = Some(started.elapsed());
            let close = req.close || cut.is_some();
            let bufs = &mut *self.bufs;
            // An HTTP/2 client's head is typed (no allocation for HTTP/1's: `H2Head::default`
            // holds an empty map).
            let h2 = super::h2::stream::H2Io::of(self.client);
            let mut typed = h2.map(|_| H2Head::default());
            let raw = &bufs.upstream[..head_len];
            let inspected = match &mut typed {
                None => inspect_response(raw, req, close, &mut bufs.reply),
                Some(head) => inspect_response(raw, req, close, head),
            };
            match inspected {
                Ok(Answer::Interim) if interim == MAX_INTERIM => {
                    return Err(Error::bad_response(
                        "too many interim answers",
                        req.misreadable,
                    ))
                }
                Ok(Answer::Interim) => {
                    interim += 1;
                    bufs.upstream.drain(..head_len);
                }
                Ok(Answer::Switched) => {
                    observe_wait(self.routed.route, moved);
                    return self
                        .switched(conn, head_len, *moved, typed)
                        .await
                        .map(Headed::Done);
                }
                // nginx's `proxy_next_upstream http_502` and the like: the head is still
                // ours, so the next backend may answer instead.
                Ok(Answer::Final(res))
                    if more && cut.is_none() && policy.next_upstream.on_status(res.status) =>
                {
                    observe_wait(self.routed.route, moved);
                    return Err(Error::answered(res.status));
                }
                Ok(Answer::Final(res)) => {
                    observe_wait(self.routed.route, moved);
                    match (typed, h2) {
                        (Some(mut head), Some(h2)) => {
                            super::sticky::stamp(&mut head, policy, req, &conn.id);
                            // Only the body goes through `reply` (the head counts in the log).
                            moved.head = head.len() as u64;
                            bufs.reply.clear();
                            h2.set_head(head);
                        }
                        _ => super::sticky::stamp(&mut bufs.reply, policy, req, &conn.id),
                    }
                    return Ok(Headed::Final(res, head_len));
                }
                // Workerman answers 101 to any GET whose head holds `Sec-WebSocket-Key:`.
                Err(BadResponse::Upgrade) if !req.websocket => return Err(Error::unasked_upgrade()),
                Err(BadResponse::Accept) => return Err(Error::wrong_accept(req.misreadable)),
                Err(e) => return Err(Error::bad_response(e.to_string(), req.misreadable)),
            }
        }
    }

    /// Read a response head from `io` until `deadline`, watching the client meanwhile: if it
    /// goes away (a long poll given up), so does this exchange (None), instead of holding the
    /// backend until `idle_timeout`. As with nginx, a client that only half-closes after its
    /// request counts as gone.
    async fn read_head_watching(
        &mut self,
        io: &mut BackendIo,
        deadline: tokio::time::Instant,
    ) -> Option<HeadReading> {
        let bufs = &mut *self.bufs;
        loop {
            tokio::select! {
                r = tokio::time::timeout_at(deadline, read_head(io, &mut bufs.upstream)) => return Some(r),
                n = self.client.read_buf(&mut bufs.client), if bufs.client.len() < MAX_HEAD => {
                    match n {
                        Ok(0) | Err(_) => return None,
                        // Pipelined bytes, or a WebSocket's first frames: kept for later.
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    /// Relay a 101 (its head rebuilt in `bufs.reply`, `head_len` bytes of `bufs.upstream`; or,
    /// for an HTTP/2 stream, the `typed` 200 it became) and whatever the backend sent behind it
    /// as is: the connection (or stream) becomes a tunnel.
    async fn switched(
        &mut self,
        conn: &Conn,
        head_len: usize,
        mut moved: Io,
        typed: Option<H2Head>,
    ) -> Result<Done, Error> {
        let bufs = &mut *self.bufs;
        let down = bufs.upstream.split_off(head_len);
        // A typed head goes out with the first bytes or the flush; only those go as DATA.
        let (status, typed_len) = match (typed, super::h2::stream::H2Io::of(self.client)) {
            (Some(mut head), Some(h2)) => {
                super::sticky::stamp(&mut head, self.policy, self.req, &conn.id);
                let len = head.len() as u64;
                h2.set_head(head);
                bufs.reply.clear();
                (200, len)
            }
            _ => {
                super::sticky::stamp(&mut bufs.reply, self.policy, self.req, &conn.id);
                (101, 0)
            }
        };
        moved.head = typed_len + bufs.reply.len() as u64;
        bufs.reply.extend_from_slice(&down);
        if send(self.client, &bufs.reply, self.path.limits.send_timeout)
            .await
            .is_err()
        {
            return Done::client_gone();
        }
        moved.to_client = typed_len + bufs.reply.len() as u64;
        Ok(Done {
            next: Next::Close,
            switched: Some(down),
            status,
            reusable: false,
            health: Health::Success,
            io: moved,
        })
    }

    /// Send the final answer's head (and the body bytes that came with it) to the client, then
    /// relay the rest of its body. `cut`: the request was not sent whole.
    async fn relay_answer(
        &mut self,
        io: &mut BackendIo,
        (res, head_len): (Response, usize),
        cut: bool,
        mut moved: Io,
    ) -> Result<Done, Error> {
        let req = self.req;
        let bufs = &mut *self.bufs;
        let mut body = Progress::new(res.framing, res.encoding);
        // An HTTP/2 head went typed (its length is in `moved.head`), not through `reply`.
        let typed_head = moved.head;
        moved.head += bufs.reply.len() as u64;
        let rest = &bufs.upstream[head_len..];
        let first = body
            .take(rest, &mut bufs.reply)
            .map_err(|e| Error::bad_response(e.to_string(), req.misreadable))?;
        if body.verbatim() {
            bufs.reply.extend_from_slice(&rest[..first]);
        }
        let mut extra = first < rest.len();
        let status = res.status;
        // A refused upgrade: the backend may think the connection switched all the same. A
        // cut request leaves the backend mid-body.
        let reusable = res.reusable && !req.websocket && !cut;
        bufs.sent_for_good();
        if send(self.client, &bufs.reply, self.path.limits.send_timeout)
            .await
            .is_err()
        {
            return Ok(Done {
                next: Next::Abort,
                switched: None,
                status,
                reusable: reusable && body.done() && !extra,
                health: Health::Success,
                io: moved,
            });
        }
        moved.to_client = typed_head + bufs.reply.len() as u64;
        if !body.done() {
            let how = Relay {
                read: self.policy.idle_timeout,
                write: self.path.limits.send_timeout,
                reset_ends: cut,
            };
            match relay(io, self.client, &mut body, &mut bufs.upstream, how).await {
                Ok(more) => extra |= more,
                Err(e) => {
                    let health = broken_off(e, res.framing, cut, req.misreadable);
                    moved.to_client += body.sent();
                    return Ok(Done {
                        next: Next::Abort,
                        switched: None,
                        status,
                        reusable: false,
                        health,
                        io: moved,
                    });
                }
            }
        }
        moved.to_client += body.sent();
        Ok(Done {
            next: if cut {
                Next::Linger
            } else if res.close {
                Next::Close
            } else {
                Next::KeepAlive
            },
            switched: None,
            status,
            reusable: reusable && !extra,
            health: Health::Success,
            io: moved,
        })
    }
}

/// The length of the answer head just `read`, or the attempt's failure when there is none.
/// `interim`: interim answers before it; `small`: the request fits one write; `nothing`: the
/// backend sent no byte of this answer; `cut`: why the request was not sent whole.
fn head_or_failure(
    read: HeadReading,
    cut: Option<&Cut>,
    (interim, small, nothing): (u32, bool, bool),
    misreadable: bool,
) -> Result<usize, Error> {
    match (read, cut) {
        (Ok(Ok(HeadRead::Complete(n))), _) => Ok(n),
        (_, Some(why)) if interim == 0 && small && nothing => Err(Error::unsent(why.to_string())),
        // The backend stopped taking the request and gave no final answer (an interim one, or
        // none): nothing says it is broken.
        (_, Some(why)) => Err(Error::cut_body(why.to_string())),
        (Err(_), _) => Err(Error::timeout()),
        // An app that reflects request headers (CORS's Allow-Headers) answers a large head
        // with a larger one: the request's doing as often as the backend's.
        (Ok(Ok(HeadRead::TooLarge)), _) => {
            Err(Error::bad_response("response head too large", true))
        }
        (Ok(Ok(HeadRead::BareCr)), _) => Err(Error::bad_response(
            "a bare CR in the response head",
            misreadable,
        )),
        (Ok(Ok(HeadRead::Eof) | Err(_)), _) if nothing && interim == 0 => {
            Err(Error::unanswered("closed without answering"))
        }
        (Ok(Ok(HeadRead::Eof) | Err(_)), _) => {
            Err(Error::bad_response("closed mid-answer", misreadable))
        }
    }
}

/// What relaying a response body that broke off with `e` says about the backend. It broke off
/// an answer to a request it got whole (not `cut`) and could not misread: its failure. A reset
/// of a body that ends at the close says it did not read all it was sent (an early answer to
/// an upload), and a quiet stream (SSE, a long poll) that outlives `idle_timeout` is not a
/// failure either, as with nginx.
fn broken_off(e: RelayError, framing: Framing, cut: bool, misreadable: bool) -> Health {
    let early_answer = e.reset() && framing == Framing::UntilClose;
    let quiet = matches!(e, RelayError::Timeout(_));
    let blamed = e.on_read() && !cut && !misreadable;
    if blamed && !early_answer && !quiet {
        Health::Failed(e)
    } else {
        Health::Unknown
    }
}

/// Time to the final response head (interim answers do not count as answers).
fn observe_wait(route: &Route, moved: &Io) {
    if let Some(waited) = moved.waited {
        route.metrics.response.observe(waited.as_secs_f64());
    }
}
