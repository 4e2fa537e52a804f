//! One HTTP request and its response: read the request body as its framing says, send the
//! rebuilt head and the body through the retry loop ([`Route::attempts`]), and pass the
//! response back with its body framed for the client. A WebSocket handshake goes the same
//! way; a 101 hands the connection to a tunnel, any other answer is an ordinary response.
//!
//! What the backend gets is always canonical: the head [`super::request`] rebuilt and exactly
//! one `content-length: N`. A chunked request body is read whole (up to the listener's
//! `max_chunked_body`) and sent with its length, so a backend that knows only Content-Length
//! (Workerman 4.x) frames it right. `Expect: 100-continue` is answered by tideway itself.
//!
//! Bytes the client sends while the backend thinks (pipelined requests, or a WebSocket's
//! first frames) are kept for later: they reach the backend only after this exchange ends, or
//! after its 101.

use super::access::Outcome;
use super::body::{relay, send, Framing, Progress, Relay, RelayError};
use super::budget::{Budget, Hold, Refused};
use super::chunked::ChunkDecoder;
use super::error::Error;
use super::keepalive::Keepalive;
use super::request::{finish_head, Request, RequestBody};
use super::response::BadResponse;
use super::response::{inspect_response, Answer};
use super::route::{error_body, Attempt, Attempts, Conn, Route};
use crate::config::{HttpLimits, UpstreamPolicy};
use crate::net::wire::{read_head, HeadRead, MAX_HEAD};
use pingora::protocols::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Request bodies up to this size are read whole before sending, so a failed attempt can be
/// sent again to another backend. Larger ones stream through and are not retried.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Longest wait for a peer to take bytes tideway sends (nginx's `send_timeout` and
/// `proxy_send_timeout`).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// A request (head and body) at most this long is sent in one write that any live backend
/// takes into its socket buffer whole.
const SMALL_REQUEST: usize = 64 * 1024;

/// After a backend stopped taking a request, how long its answer may take to arrive.
const EARLY_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// Most interim (1xx) answers a backend may send before its final one.
const MAX_INTERIM: u32 = 8;

/// The interim answer tideway sends a client that expects one before its body.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Buffers of one client connection, reused from request to request.
#[derive(Default)]
pub struct Buffers {
    /// Bytes read from the client: the current head, then its body and anything pipelined.
    pub client: Vec<u8>,
    /// The request as sent to the backend.
    pub out: Vec<u8>,
    /// Bytes read from the backend.
    upstream: Vec<u8>,
    /// The response head (and first body bytes) for the client.
    reply: Vec<u8>,
    /// The chunked-budget hold of a request body read whole, kept while `out` holds the body
    /// for another try, and given back once the answer goes to the client.
    held: Option<Hold>,
}

impl Buffers {
    /// The answer is going to the client: the request will not be sent again, so its body
    /// (and its hold on the chunked budget) can go now, however long the answer takes.
    fn sent_for_good(&mut self) {
        if self.held.take().is_some() {
            self.out = Vec::new();
        }
    }

    /// Between requests: forget the last exchange and let go of buffers a large message grew,
    /// so an idle keep-alive connection stays small.
    pub fn reset(&mut self) {
        self.held = None;
        self.out.clear();
        self.upstream.clear();
        self.reply.clear();
        for b in [
            &mut self.client,
            &mut self.out,
            &mut self.upstream,
            &mut self.reply,
        ] {
            if b.capacity() > 8 * 1024 && b.is_empty() {
                *b = Vec::new();
            }
        }
    }
}

/// What the client connection does after an exchange.
pub enum Next {
    KeepAlive,
    /// Close cleanly.
    Close,
    /// Close cleanly, then read and drop what the client still sends for a while (nginx's
    /// lingering close): its request body was not read whole, and closing on unread bytes
    /// would reset the connection and could destroy the answer before the client reads it.
    Linger,
    /// Drop the connection without a clean close (no TLS close_notify): the response was cut.
    Abort,
    /// The backend switched to WebSocket: tunnel the client to this connection.
    Upgraded(Upgraded),
}

/// A backend connection that answered a WebSocket handshake with 101.
pub struct Upgraded {
    pub conn: Conn,
    /// Bytes the backend sent after its 101 head, already passed to the client.
    pub down: Vec<u8>,
    /// The hash of the handshake's sticky key (where rebalancing places it).
    pub key: u32,
    /// The key was not empty: an empty one was balanced round robin, so rebalancing does
    /// not judge its place by the ring.
    pub keyed: bool,
}

/// tideway's HTTP path of one listener.
pub struct HttpPath {
    pub keepalive: Arc<Keepalive>,
    pub limits: HttpLimits,
}

/// Where one request goes: its route's binding to an upstream, the route's send timeout
/// (nginx's `proxy_send_timeout`) and body limit (`client_max_body_size`; a longer
/// Content-Length is refused before, a longer chunked body while it is read).
#[derive(Clone, Copy)]
pub struct Routed<'a> {
    pub route: &'a Route,
    pub send_timeout: Duration,
    pub max_body: Option<u64>,
}

/// What an exchange that reached the client says about the backend.
enum Health {
    Success,
    Failed(String),
    /// Nothing either way (the client went away).
    Unknown,
}

/// An exchange whose response (or part of it) reached the client.
struct Done {
    next: Next,
    /// The backend switched to WebSocket; what it sent after its 101 head.
    switched: Option<Vec<u8>>,
    status: u16,
    /// The backend connection is at a message boundary and may carry another request.
    reusable: bool,
    health: Health,
    /// Bytes sent to the client and to the backend, and how long the backend took to answer.
    io: Io,
}

/// What an exchange moved, for the metrics and the access log.
#[derive(Clone, Copy, Debug, Default)]
struct Io {
    to_client: u64,
    to_backend: u64,
    waited: Option<std::time::Duration>,
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

/// The peers of one client connection.
#[derive(Clone, Copy)]
pub struct Peers {
    /// The real client address (after the PROXY header, per request after trusted proxies'
    /// headers; see [`super::client`]): every per-client feature goes by this one value.
    pub client: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
}

impl HttpPath {
    pub fn new(keepalive: Keepalive, limits: HttpLimits) -> Self {
        HttpPath {
            keepalive: Arc::new(keepalive),
            limits,
        }
    }

    /// Forward the request whose head was `bufs.client[..head_len]` and whose backend head
    /// (all but its framing) is in `bufs.out`. `policy` is the upstream's (None: the upstream
    /// does not exist). What happened is written to `out`.
    #[allow(clippy::too_many_arguments)] // the exchange's parts, each borrowed differently
    pub async fn forward(
        &self,
        routed: Routed<'_>,
        client: &mut Stream,
        bufs: &mut Buffers,
        head_len: usize,
        (req, policy): (Request, Option<Arc<UpstreamPolicy>>),
        peers: Peers,
        out: &mut Outcome,
    ) -> Next {
        bufs.client.drain(..head_len);
        out.received = head_len as u64;
        // The body in hand (read whole when it can be), or the part that streams after it.
        let client_ip = peers.client.map(|a| a.ip());
        let streamed = match self
            .read_body(client, bufs, &req, (client_ip, routed.max_body))
            .await
        {
            Ok((streamed, body)) => {
                out.received += body;
                streamed
            }
            Err(BodyError::Gone) => return Next::Abort,
            Err(BodyError::Refused(status, why)) => {
                return refuse(client, status, why, true, out).await
            }
            Err(BodyError::Budget(why)) => {
                crate::metrics::chunked_refused(why.label());
                return refuse(client, 503, &why.to_string(), true, out).await;
            }
        };
        let Some(policy) = policy else {
            let msg = format!("no upstream named {:?}", &*routed.route.upstream);
            // An answer of tideway's own to HEAD carries a body: the connection cannot go on.
            let close = req.close || streamed > 0 || req.head_method;
            return refuse(client, 503, &msg, close, out).await;
        };
        let how = Attempts {
            key: req.key,
            sticky: req.sticky,
            policy: &policy,
            keepalive: Some(&self.keepalive),
            replayable: streamed == 0,
            idempotent: req.idempotent,
            client: peers.client,
            local: peers.local,
        };
        let mut attempt = HttpAttempt {
            path: self,
            routed,
            client,
            bufs,
            req: &req,
            policy: &policy,
            streamed,
        };
        let tried = routed.route.attempts(how, &mut attempt).await;
        let (done, conn) = match tried {
            Ok(done) => done,
            Err((status, msg)) => {
                let close = req.close || streamed > 0 || req.head_method;
                let next = refuse(client, status, &msg, close, out).await;
                return match next {
                    Next::Close if streamed > 0 => Next::Linger,
                    next => next,
                };
            }
        };
        let live = conn.guard.live();
        live.sent(done.io.to_backend);
        live.received(done.io.to_client);
        out.status = done.status;
        out.backend = Some(conn.addr);
        out.sent = done.io.to_client;
        out.upstream = done.io.waited;
        let max_fails = conn.max_fails;
        match done.health {
            Health::Success if crate::config::status_fails(&policy, done.status) => {
                let why = format!("answered {}", done.status);
                routed
                    .route
                    .failed(conn.guard.live(), &conn.id, max_fails, &why);
            }
            Health::Success => conn.guard.live().record_success(conn.fail_timeout),
            Health::Failed(why) => {
                tracing::warn!(upstream = %routed.route.upstream, backend = %conn.id, addr = %conn.addr, error = %why, "backend broke off a response");
                routed
                    .route
                    .failed(conn.guard.live(), &conn.id, max_fails, &why);
            }
            Health::Unknown => {}
        }
        if let Some(down) = done.switched {
            return Next::Upgraded(Upgraded {
                conn,
                down,
                key: req.key.hash,
                keyed: !req.key.empty,
            });
        }
        // A connection that carries a PROXY header names one client: never pooled.
        if done.reusable && policy.proxy_protocol.is_none() {
            self.keepalive.put(conn.addr, conn.io);
        }
        done.next
    }

    /// Read the request body as far as it is read before sending: the whole of a small or
    /// chunked body goes into `bufs.out` after the head's framing header. Returns how many
    /// body bytes are left to stream from the client after that, and how long the body is.
    async fn read_body(
        &self,
        client: &mut Stream,
        bufs: &mut Buffers,
        req: &Request,
        (client_ip, max_body): (Option<std::net::IpAddr>, Option<u64>),
    ) -> Result<(u64, u64), BodyError> {
        let timeout = self.limits.body_timeout;
        let waiting = bufs.client.is_empty();
        if req.expect_continue && waiting {
            send(client, CONTINUE, DEFAULT_SEND_TIMEOUT)
                .await
                .map_err(|_| BodyError::Gone)?;
        }
        match req.body {
            RequestBody::None => {
                finish_head(&mut bufs.out, req, 0);
                Ok((0, 0))
            }
            RequestBody::Length(n) => {
                finish_head(&mut bufs.out, req, n);
                if n <= MAX_BUFFERED_BODY {
                    read_to(client, &mut bufs.client, n as usize, timeout).await?;
                }
                let in_hand = (n as usize).min(bufs.client.len());
                bufs.out.extend_from_slice(&bufs.client[..in_hand]);
                bufs.client.drain(..in_hand);
                Ok((n - in_hand as u64, n))
            }
            RequestBody::Chunked => {
                let mut body = std::mem::take(&mut bufs.upstream);
                body.clear();
                let mut decoder = ChunkDecoder::default();
                let limit = max_body.map_or(self.limits.max_chunked_body, |m| {
                    m.min(self.limits.max_chunked_body)
                });
                let mut held = Budget::global().hold(client_ip);
                let deadline = tokio::time::Instant::now() + self.limits.chunked_body_time;
                loop {
                    let d = decoder
                        .decode(&bufs.client, |data| body.extend_from_slice(data))
                        .map_err(|_| BodyError::Refused(400, "malformed chunked body"))?;
                    bufs.client.drain(..d.used);
                    if body.len() as u64 > limit {
                        return Err(BodyError::Refused(413, "the chunked body is too large"));
                    }
                    if let Err(why) = held.grow(body.len() as u64) {
                        return Err(BodyError::Budget(why));
                    }
                    if d.done {
                        break;
                    }
                    bufs.client.reserve(16 * 1024);
                    // A pause may take `body_timeout`; the whole body `chunked_body_time`.
                    let next = deadline.min(tokio::time::Instant::now() + timeout);
                    tokio::select! {
                        r = tokio::time::timeout_at(next, client.read_buf(&mut bufs.client)) => match r {
                            Err(_) => return Err(BodyError::Refused(408, "the body timed out")),
                            Ok(Ok(0)) | Ok(Err(_)) => return Err(BodyError::Gone),
                            Ok(Ok(_)) => {}
                        },
                        _ = held.evicted().cancelled() => {
                            return Err(BodyError::Budget(Refused::Evicted))
                        }
                    }
                }
                let len = body.len() as u64;
                finish_head(&mut bufs.out, req, len);
                bufs.out.extend_from_slice(&body);
                // The body's own buffer goes now; its copy in `bufs.out` is what stays held.
                drop(body);
                // Counted until the answer goes to the client (`bufs.out` holds it for
                // another try until then), and no longer evicted.
                held.seal();
                bufs.held = Some(held);
                Ok((0, len))
            }
        }
    }

    /// Relay the `streamed` body bytes still to come from the client to the backend, watching
    /// the backend: one that answers before the body ends (a 413 to an upload over its limit)
    /// or stops reading cuts the request short. On a cut, what the backend sent is left in
    /// `bufs.upstream`, to be read as its answer.
    async fn stream_body(
        &self,
        client: &mut Stream,
        io: &mut tokio::net::TcpStream,
        bufs: &mut Buffers,
        streamed: u64,
        send_timeout: Duration,
    ) -> Streamed {
        let mut body = Progress::new(Framing::Length(streamed), super::body::Encoding::Raw);
        let how = Relay {
            read: self.limits.body_timeout,
            write: send_timeout,
            reset_ends: false,
        };
        let (mut from_backend, mut to_backend) = io.split();
        let mut early = Vec::new();
        let relayed = tokio::select! {
            r = relay(client, &mut to_backend, &mut body, &mut bufs.upstream, how) => r,
            n = from_backend.read_buf(&mut early) => {
                bufs.upstream.clear();
                bufs.upstream.append(&mut early);
                return Streamed::Cut(match n {
                    Ok(0) => "the backend closed before the body was sent".into(),
                    Ok(_) => "the backend answered before the body was sent".into(),
                    Err(e) => format!("sending the body: {e}"),
                });
            }
        };
        bufs.upstream.clear();
        match relayed {
            Ok(_) => Streamed::Whole,
            Err(e) if e.on_read() => Streamed::ClientGone,
            Err(e) => Streamed::Cut(format!("sending the body: {e}")),
        }
    }

    /// Time to the final response head (interim answers do not count as answers).
    fn observe_wait(route: &Route, moved: &Io) {
        if let Some(waited) = moved.waited {
            route.metrics.response.observe(waited.as_secs_f64());
        }
    }

    /// Send the request on `conn` and relay the answer.
    #[allow(clippy::too_many_arguments)] // the exchange's parts, each borrowed differently
    async fn exchange(
        &self,
        routed: Routed<'_>,
        client: &mut Stream,
        conn: &mut Conn,
        bufs: &mut Buffers,
        req: &Request,
        (policy, more): (&UpstreamPolicy, bool),
        streamed: u64,
    ) -> Result<Done, Error> {
        let idle = policy.idle_timeout;
        let reused = conn.reused;
        let io = &mut conn.io;
        let started = std::time::Instant::now();
        let mut moved = Io {
            to_backend: bufs.out.len() as u64 + streamed,
            ..Io::default()
        };
        bufs.upstream.clear();
        // `cut`: the backend stopped taking the request before all of it went out. What it
        // answered (a 413 to an upload over its limit) is relayed and the client connection
        // closes; without an answer, the client is told, and the backend is not blamed.
        // A request that fits a socket buffer is taken whole by any live backend: failing to
        // send one, with no answer, says the connection is broken (a stale pooled one, or a
        // dead backend), and it may go again.
        // On a pooled connection, a send that fails with nothing answered is the stale
        // connection's, whatever the size: the retry loop sends it again on a fresh one.
        let small = (bufs.out.len() <= SMALL_REQUEST || reused) && streamed == 0;
        let mut cut = None;
        if let Err(e) = send(io, &bufs.out, routed.send_timeout).await {
            cut = Some(format!("sending the request: {e}"));
        } else if streamed > 0 {
            match self
                .stream_body(client, io, bufs, streamed, routed.send_timeout)
                .await
            {
                Streamed::Whole => {}
                Streamed::ClientGone => return Done::client_gone(),
                Streamed::Cut(why) => cut = Some(why),
            }
        }

        let mut interim = 0;
        let (res, head_len) = loop {
            // After a cut, an answer is already on its way or not coming.
            let wait = if cut.is_some() {
                idle.min(EARLY_ANSWER_WAIT)
            } else {
                idle
            };
            let deadline = tokio::time::Instant::now() + wait;
            // While the backend thinks, watch the client: if it goes away (a long poll given
            // up), so does this exchange, instead of holding the backend until `idle_timeout`.
            // As with nginx, a client that only half-closes after its request counts as gone.
            let read = loop {
                tokio::select! {
                    r = tokio::time::timeout_at(deadline, read_head(io, &mut bufs.upstream)) => break r,
                    n = client.read_buf(&mut bufs.client), if bufs.client.len() < MAX_HEAD => {
                        match n {
                            Ok(0) | Err(_) => return Done::client_gone(),
                            // Pipelined bytes, or a WebSocket's first frames: kept for later.
                            Ok(_) => {}
                        }
                    }
                }
            };
            let head_len = match (read, &cut) {
                (Ok(Ok(HeadRead::Complete(n))), _) => n,
                (_, Some(why)) if interim == 0 && small && bufs.upstream.is_empty() => {
                    return Err(Error::unsent(why.clone()))
                }
                // The backend stopped taking the request and gave no final answer (an interim
                // one, or none): nothing says it is broken.
                (_, Some(why)) => return Err(Error::cut_body(why.clone())),
                (Err(_), _) => return Err(Error::timeout()),
                // An app that reflects request headers (CORS's Allow-Headers) answers a large
                // head with a larger one: the request's doing as often as the backend's.
                (Ok(Ok(HeadRead::TooLarge)), _) => {
                    return Err(Error::bad_response("response head too large", true))
                }
                (Ok(Ok(HeadRead::BareCr)), _) => {
                    return Err(Error::bad_response(
                        "a bare CR in the response head",
                        req.misreadable,
                    ))
                }
                (Ok(Ok(HeadRead::Eof) | Err(_)), _) if bufs.upstream.is_empty() && interim == 0 => {
                    return Err(Error::unanswered("closed without answering"))
                }
                (Ok(Ok(HeadRead::Eof) | Err(_)), _) => {
                    return Err(Error::bad_response("closed mid-answer", req.misreadable))
                }
            };
            moved.waited = Some(started.elapsed());
            let close = req.close || cut.is_some();
            match inspect_response(&bufs.upstream[..head_len], req, close, &mut bufs.reply) {
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
                    Self::observe_wait(routed.route, &moved);
                    super::sticky::stamp(&mut bufs.reply, policy, req, &conn.id);
                    // The rebuilt 101, then whatever the backend sent behind it as is.
                    let down = bufs.upstream.split_off(head_len);
                    bufs.reply.extend_from_slice(&down);
                    if send(client, &bufs.reply, DEFAULT_SEND_TIMEOUT)
                        .await
                        .is_err()
                    {
                        return Done::client_gone();
                    }
                    moved.to_client = bufs.reply.len() as u64;
                    return Ok(Done {
                        next: Next::Close,
                        switched: Some(down),
                        status: 101,
                        reusable: false,
                        health: Health::Success,
                        io: moved,
                    });
                }
                // nginx's `proxy_next_upstream http_502` and the like: the head is still
                // ours, so the next backend may answer instead.
                Ok(Answer::Final(res))
                    if more && cut.is_none() && policy.next_upstream.on_status(res.status) =>
                {
                    Self::observe_wait(routed.route, &moved);
                    return Err(Error::answered(res.status));
                }
                Ok(Answer::Final(res)) => {
                    Self::observe_wait(routed.route, &moved);
                    super::sticky::stamp(&mut bufs.reply, policy, req, &conn.id);
                    break (res, head_len);
                }
                // Workerman answers 101 to any GET whose head holds `Sec-WebSocket-Key:`.
                Err(BadResponse::Upgrade) if !req.websocket => return Err(Error::unasked_upgrade()),
                Err(e) => return Err(Error::bad_response(e.to_string(), req.misreadable)),
            }
        };

        let mut body = Progress::new(res.framing, res.encoding);
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
        let reusable = res.reusable && !req.websocket && cut.is_none();
        bufs.sent_for_good();
        if send(client, &bufs.reply, DEFAULT_SEND_TIMEOUT)
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
        moved.to_client = bufs.reply.len() as u64;
        if !body.done() {
            let how = Relay {
                read: idle,
                write: DEFAULT_SEND_TIMEOUT,
                reset_ends: cut.is_some(),
            };
            match relay(io, client, &mut body, &mut bufs.upstream, how).await {
                Ok(more) => extra |= more,
                Err(e) => {
                    // The backend broke off an answer to a request it got whole and could
                    // not misread. A reset of a body that ends at the close says it did not
                    // read all it was sent (an early answer to an upload): not its failure.
                    let early_answer = e.reset() && res.framing == Framing::UntilClose;
                    // A quiet stream (SSE, a long poll) that outlives `idle_timeout` is not
                    // a failure either, as with nginx.
                    let quiet = matches!(e, RelayError::Timeout(_));
                    let blamed = e.on_read() && cut.is_none() && !req.misreadable;
                    let health = if blamed && !early_answer && !quiet {
                        Health::Failed(format!("response body: {e}"))
                    } else {
                        Health::Unknown
                    };
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
            next: if cut.is_some() {
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

/// One try of an HTTP request, for the retry loop.
struct HttpAttempt<'a> {
    path: &'a HttpPath,
    routed: Routed<'a>,
    client: &'a mut Stream,
    bufs: &'a mut Buffers,
    req: &'a Request,
    policy: &'a UpstreamPolicy,
    streamed: u64,
}

impl Attempt for HttpAttempt<'_> {
    type Output = Done;
    async fn attempt(&mut self, conn: &mut Conn, more: bool) -> Result<Done, Error> {
        let (req, policy, streamed) = (self.req, self.policy, self.streamed);
        self.path
            .exchange(
                self.routed,
                self.client,
                conn,
                self.bufs,
                req,
                (policy, more),
                streamed,
            )
            .await
    }
}

/// How relaying a streamed request body ended.
enum Streamed {
    Whole,
    /// The client went away or stopped sending.
    ClientGone,
    /// The backend answered early or stopped reading; why.
    Cut(String),
}

/// Why a request body could not be read.
enum BodyError {
    /// The client went away or stopped sending.
    Gone,
    /// Answer with this status and close.
    Refused(u16, &'static str),
    /// The chunked-body budget refused it (503) or took it back.
    Budget(Refused),
}

/// Answer the client with a JSON error, and say so in `out`.
pub async fn refuse(
    client: &mut Stream,
    status: u16,
    msg: &str,
    close: bool,
    out: &mut Outcome,
) -> Next {
    let resp = error_response(status, msg, close);
    let next = answer(client, &resp, close).await;
    if !matches!(next, Next::Abort) {
        out.status = status;
        out.sent = resp.len() as u64;
    }
    next
}

/// A JSON error response.
fn error_response(status: u16, msg: &str, close: bool) -> String {
    let body = error_body(msg);
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
        reason(status),
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    )
}

/// Answer the client with a JSON error.
pub async fn reply_error(client: &mut Stream, status: u16, msg: &str, close: bool) -> Next {
    answer(client, &error_response(status, msg, close), close).await
}

async fn answer(client: &mut Stream, resp: &str, close: bool) -> Next {
    match send(client, resp.as_bytes(), DEFAULT_SEND_TIMEOUT).await {
        Err(_) => Next::Abort,
        Ok(()) if close => Next::Close,
        Ok(()) => Next::KeepAlive,
    }
}

/// The reason phrase of a status tideway answers with itself.
pub(super) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        403 => "Forbidden",
        404 => "Not Found",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        508 => "Loop Detected",
        _ => "Error",
    }
}

/// Read from the client until `buf` holds `len` bytes.
async fn read_to(
    client: &mut Stream,
    buf: &mut Vec<u8>,
    len: usize,
    timeout: Duration,
) -> Result<(), BodyError> {
    while buf.len() < len {
        buf.reserve(len - buf.len());
        let want = (len - buf.len()) as u64;
        let mut limited = (&mut *client).take(want);
        let read = limited.read_buf(buf);
        match tokio::time::timeout(timeout, read).await {
            Err(_) => return Err(BodyError::Refused(408, "the body timed out")),
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(BodyError::Gone),
        }
    }
    Ok(())
}
