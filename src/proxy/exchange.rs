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
use super::attempt::{Done, Health, HttpAttempt};
use super::body::send;
use super::budget::{Budget, Hold, Refused};
use super::chunked::ChunkDecoder;
use super::error::Failure;
use super::keepalive::Keepalive;
use super::request::{finish_head, Request, RequestBody};
use super::route::{error_body, Attempts, Conn, Route};
use crate::config::{HttpLimits, UpstreamPolicy};
use pingora::protocols::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Request bodies up to this size are read whole before sending, so a failed attempt can be
/// sent again to another backend. Larger ones stream through and are not retried.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Longest wait for a peer to take bytes tideway sends: a backend (nginx's
/// `proxy_send_timeout`), and a client taking an answer tideway wrote itself (an error, a
/// 503, a `return`). Answers relayed from a backend wait the listener's `send_timeout`.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

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
    pub(super) upstream: Vec<u8>,
    /// The response head (and first body bytes) for the client.
    pub(super) reply: Vec<u8>,
    /// The chunked-budget hold of a request body read whole, kept while `out` holds the body
    /// for another try, and given back once the answer goes to the client.
    held: Option<Hold>,
}

impl Buffers {
    /// The answer is going to the client: the request will not be sent again, so its body
    /// (and its hold on the chunked budget) can go now, however long the answer takes.
    pub(super) fn sent_for_good(&mut self) {
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

/// Count a WebSocket handshake forwarded to `upstream` that did not switch: the backend
/// answered another status (`refused`), the client left (`client_gone`: no status), or no
/// backend could take it (the failure's reason).
fn handshake_outcome(upstream: &str, tried: &Result<(Done, Conn), Failure>) {
    let reason = match tried {
        Ok((done, _)) if done.switched.is_some() => return,
        Ok((done, _)) if done.status == 0 => "client_gone",
        Ok(_) => "refused",
        Err(failure) => failure.label().unwrap_or("exhausted"),
    };
    crate::metrics::websocket::handshake_failed(upstream, reason);
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
            if req.websocket {
                crate::metrics::websocket::handshake_failed(&routed.route.upstream, "no_backend");
            }
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
            admission: super::admission::gated(&policy, req.websocket),
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
        if req.websocket {
            handshake_outcome(&routed.route.upstream, &tried);
        }
        let (done, conn) = match tried {
            Ok(done) => done,
            Err(Failure::Gone) => {
                out.status = Failure::Gone.status();
                return Next::Abort;
            }
            Err(Failure::Busy(secs)) => {
                let next = super::admission::refuse(client, secs, req.head_method, out).await;
                // Body bytes still unread: linger, so that a reset does not destroy the 503.
                return match next {
                    Next::Close if streamed > 0 => Next::Linger,
                    next => next,
                };
            }
            Err(failure) => {
                let close = req.close || streamed > 0 || req.head_method;
                let msg = failure.to_string();
                let next = refuse(client, failure.status(), &msg, close, out).await;
                return match next {
                    Next::Close if streamed > 0 => Next::Linger,
                    next => next,
                };
            }
        };
        self.settle(routed, (done, conn), (&req, &policy), out)
    }

    /// After an exchange that reached the client: account what it moved in `out` and the
    /// backend's counters, judge the backend (passive health), and hand the connection on: to
    /// the tunnel it became, or back to the idle pool when it may carry another request.
    fn settle(
        &self,
        routed: Routed<'_>,
        (done, conn): (Done, Conn),
        (req, policy): (&Request, &UpstreamPolicy),
        out: &mut Outcome,
    ) -> Next {
        let live = conn.guard.live();
        live.sent(done.io.to_backend);
        live.received(done.io.to_client);
        out.status = done.status;
        out.backend = Some(conn.addr);
        out.backend_id = Some(conn.id.clone());
        out.sent = done.io.to_client;
        out.head = done.io.head.min(done.io.to_client);
        out.upstream = done.io.waited;
        let max_fails = conn.max_fails;
        match done.health {
            Health::Success if crate::config::status_fails(policy, done.status) => {
                let why = format!("answered {}", done.status);
                routed
                    .route
                    .failed(conn.guard.live(), &conn.id, max_fails, &why);
            }
            Health::Success => conn.guard.live().record_success(conn.fail_timeout),
            Health::Failed(e) => {
                let why = format!("response body: {e}");
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
            let key = super::keepalive::pool_key(conn.addr, policy);
            self.keepalive.put(key, conn.io);
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
            match super::h2::stream::H2Io::of(client) {
                Some(h2) => h2.send_continue().map_err(|_| BodyError::Gone)?,
                None => send(client, CONTINUE, self.limits.send_timeout)
                    .await
                    .map_err(|_| BodyError::Gone)?,
            }
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
            RequestBody::Chunked | RequestBody::UntilEnd => {
                let mut body = std::mem::take(&mut bufs.upstream);
                body.clear();
                // Chunked: decoded; until END_STREAM (HTTP/2): taken as it comes, and a read
                // of 0 is the stream's end (a client gone is an error there).
                let mut decoder = (req.body == RequestBody::Chunked).then(ChunkDecoder::default);
                let until_end = |client: &Stream, on| {
                    if let Some(h2) = super::h2::stream::H2Io::of(client) {
                        h2.stop_at_end(on);
                    }
                };
                if decoder.is_none() {
                    until_end(client, true);
                }
                let mut at_end = false;
                let limit = max_body.map_or(self.limits.max_chunked_body, |m| {
                    m.min(self.limits.max_chunked_body)
                });
                let mut held = Budget::global().hold(client_ip);
                let deadline = tokio::time::Instant::now() + self.limits.chunked_body_time;
                loop {
                    let done = match &mut decoder {
                        Some(decoder) => {
                            let d = decoder
                                .decode(&bufs.client, |data| body.extend_from_slice(data))
                                .map_err(|_| BodyError::Refused(400, "malformed chunked body"))?;
                            bufs.client.drain(..d.used);
                            d.done
                        }
                        None => {
                            body.append(&mut bufs.client);
                            at_end
                        }
                    };
                    if body.len() as u64 > limit {
                        return Err(BodyError::Refused(413, "the chunked body is too large"));
                    }
                    if let Err(why) = held.grow(body.len() as u64) {
                        return Err(BodyError::Budget(why));
                    }
                    if done {
                        break;
                    }
                    bufs.client.reserve(16 * 1024);
                    // A pause may take `body_timeout`; the whole body `chunked_body_time`.
                    let next = deadline.min(tokio::time::Instant::now() + timeout);
                    tokio::select! {
                        r = tokio::time::timeout_at(next, client.read_buf(&mut bufs.client)) => match r {
                            Err(_) => return Err(BodyError::Refused(408, "the body timed out")),
                            Ok(Ok(0)) if decoder.is_none() => at_end = true,
                            Ok(Ok(0)) | Ok(Err(_)) => return Err(BodyError::Gone),
                            Ok(Ok(_)) => {}
                        },
                        _ = held.evicted().cancelled() => {
                            return Err(BodyError::Budget(Refused::Evicted))
                        }
                    }
                }
                if decoder.is_none() {
                    until_end(client, false);
                }
                let len = body.len() as u64;
                if len > 0 && !req.length_always {
                    // An HTTP/2 GET, HEAD, OPTIONS or DELETE whose stream carried DATA: as on
                    // HTTP/1 (see [`super::request`]).
                    return Err(BodyError::Refused(
                        400,
                        "a body on a GET, HEAD, OPTIONS or DELETE request",
                    ));
                }
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
    if let Some(next) = h2_error(client, status, msg, out).await {
        return next;
    }
    let resp = error_response(status, msg, close);
    let next = answer(client, &resp, close).await;
    if !matches!(next, Next::Abort) {
        out.status = status;
        out.sent = resp.len() as u64;
        out.head = resp.find("\r\n\r\n").map_or(out.sent, |i| i as u64 + 4);
    }
    next
}

/// On an HTTP/2 stream, answer with a JSON error and say so in `out` (None: `client` speaks
/// HTTP/1). The stream ends with the answer; to a HEAD, without its body.
async fn h2_error(client: &mut Stream, status: u16, msg: &str, out: &mut Outcome) -> Option<Next> {
    let head_only = super::h2::stream::H2Io::of(client)?.head_only();
    let body = error_body(msg);
    let json: &[u8] = b"application/json";
    if !super::h2::answer::own(client, status, &[(b"content-type", json)], &[], body.len()) {
        return None;
    }
    let body = if head_only { "" } else { &body[..] };
    if send(client, body.as_bytes(), DEFAULT_SEND_TIMEOUT)
        .await
        .is_err()
    {
        return Some(Next::Abort);
    }
    out.status = status;
    out.sent = body.len() as u64;
    Some(Next::Close)
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
    if let Some(next) = h2_error(client, status, msg, &mut Outcome::default()).await {
        return next;
    }
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
