//! One plain HTTP/1.1 request and its response, forwarded by tideway itself: pick a backend,
//! reuse an idle connection to it ([`Keepalive`]) or open one, send the rewritten head and the
//! body, and pass the response back with its body delimited as the backend delimited it.
//!
//! This is the hot path for ordinary requests. pingora's `HttpProxy` costs about twice nginx's
//! CPU per request, most of it in machinery this path does not need (a task per idle pooled
//! connection, channels between the two sides, two header maps per message). Requests that need
//! that machinery (chunked request bodies, `Expect`, HTTP/1.0) still go to pingora.
//!
//! Failures follow nginx's `proxy_next_upstream error`: a backend that cannot be connected to
//! is counted as failed and the next one is tried (up to the upstream's `retries`); so is one
//! that breaks before answering an idempotent request. A pooled connection that turns out stale
//! (it could not take the request, or closed an idempotent one unanswered) is retried on a fresh
//! connection to the same backend, so a sticky request stays put. A non-idempotent request the
//! backend may have received is never sent again.

use super::body::{push_chunk, relay, send, Framing, Progress, Relay};
use super::gateway::DEFAULT_HEADER_TIMEOUT;
use super::head::{read_head, HeadRead, MAX_HEAD};
use super::http::MAX_STALE_RETRIES;
use super::keepalive::Keepalive;
use super::message::{inspect_response, Answer, Request};
use super::route::{error_body, Route};
use crate::config::UpstreamPolicy;
use crate::pool::backend::ActiveGuard;
use crate::pool::BackendId;
use pingora::protocols::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Request bodies up to this size are read whole before sending, so a failed attempt can be
/// sent again to another backend. Larger ones stream through and are not retried.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// Longest wait for a peer to take bytes tideway sends (nginx's `send_timeout` and
/// `proxy_send_timeout`).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest wait for the next bytes of a request body (nginx's `client_body_timeout`).
pub const DEFAULT_BODY_TIMEOUT: Duration = DEFAULT_HEADER_TIMEOUT;

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
}

impl Buffers {
    /// Between requests: forget the last exchange and let go of buffers a large message grew,
    /// so an idle keep-alive connection stays small.
    pub fn reset(&mut self) {
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
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    /// Close cleanly.
    Close,
    /// Drop the connection without a clean close (no TLS close_notify): the response was cut.
    Abort,
}

/// tideway's HTTP path of one listener.
pub struct HttpPath {
    pub route: Route,
    pub keepalive: Arc<Keepalive>,
}

/// How an attempt on one backend failed before the client got anything.
enum Failed {
    /// Sending the request failed: the backend did not get it whole.
    Unsent(String),
    /// The backend closed without a byte of answer.
    Unanswered(String),
    /// The backend answered too slowly, or with something that cannot be forwarded.
    Answered(u16, String),
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
    status: u16,
    /// The backend connection is at a message boundary and may carry another request.
    reusable: bool,
    health: Health,
}

impl HttpPath {
    pub fn new(route: Route, keepalive: Keepalive) -> Self {
        HttpPath {
            route,
            keepalive: Arc::new(keepalive),
        }
    }

    /// Forward the request whose head is `bufs.client[..head_len]` and whose backend head is in
    /// `bufs.out`. `policy` is the upstream's (None: the upstream does not exist).
    pub async fn forward(
        &self,
        client: &mut Stream,
        bufs: &mut Buffers,
        head_len: usize,
        req: Request,
        policy: Option<Arc<UpstreamPolicy>>,
    ) -> Next {
        let body_end = head_len as u64 + req.body_len;
        // The body in hand (read whole when small), or the part that streams after the head.
        let mut streamed = 0;
        if (bufs.client.len() as u64) < body_end {
            if req.body_len <= MAX_BUFFERED_BODY {
                if read_to(client, &mut bufs.client, body_end as usize)
                    .await
                    .is_err()
                {
                    return Next::Close;
                }
            } else {
                streamed = body_end - bufs.client.len() as u64;
            }
        }
        let in_hand = (body_end as usize).min(bufs.client.len());
        bufs.out.extend_from_slice(&bufs.client[head_len..in_hand]);
        bufs.client.drain(..in_hand);

        let Some(policy) = policy else {
            let msg = format!("no upstream named {:?}", &*self.route.upstream);
            return reply_error(client, 503, &msg, req.close || streamed > 0).await;
        };
        match self.attempts(client, bufs, &req, &policy, streamed).await {
            Ok(next) => next,
            Err((status, msg)) => {
                reply_error(client, status, &msg, req.close || streamed > 0).await
            }
        }
    }

    /// Try backends until one answers; relay its answer. `Err` is an error reply to send.
    async fn attempts(
        &self,
        client: &mut Stream,
        bufs: &mut Buffers,
        req: &Request,
        policy: &UpstreamPolicy,
        streamed: u64,
    ) -> Result<Next, (u16, String)> {
        let max_fails = policy.passive.max_fails;
        let replayable = streamed == 0;
        let mut tried: Vec<BackendId> = Vec::new();
        let mut stale = 0;
        let mut again: Option<(BackendId, SocketAddr, ActiveGuard)> = None;
        loop {
            let fresh = again.is_some();
            let (id, addr, guard) = match again.take() {
                Some(same) => same,
                None => {
                    let snap = self.route.pool.load();
                    match self.route.pick(&snap, req.key, &tried) {
                        Ok(b) => (b.id.clone(), b.addr, b.live.begin()),
                        Err(e) if tried.is_empty() => return Err((503, e.to_string())),
                        Err(_) => return Err((502, "no backend could be reached".into())),
                    }
                }
            };
            let pooled = if fresh {
                None
            } else {
                self.keepalive.take(addr)
            };
            let reused = pooled.is_some();
            let mut io = match pooled {
                Some(io) => io,
                None => match connect(addr, policy.connect_timeout).await {
                    Ok(io) => io,
                    Err(why) => {
                        tracing::warn!(upstream = %self.route.upstream, backend = %id, %addr, error = %why, "backend connect failed");
                        self.route.failed(guard.live(), &id, max_fails, &why);
                        tried.push(id);
                        if tried.len() as u32 > policy.retries {
                            return Err((502, "no backend could be reached".into()));
                        }
                        continue;
                    }
                },
            };
            let failed = match self
                .exchange(client, &mut io, bufs, req, policy, streamed)
                .await
            {
                Ok(done) => {
                    match done.health {
                        Health::Success if policy.passive.fail_on_5xx && done.status >= 500 => {
                            let why = format!("answered {}", done.status);
                            self.route.failed(guard.live(), &id, max_fails, &why);
                        }
                        Health::Success => guard.live().record_success(),
                        Health::Failed(why) => {
                            tracing::warn!(upstream = %self.route.upstream, backend = %id, %addr, error = %why, "backend broke off a response");
                            self.route.failed(guard.live(), &id, max_fails, &why);
                        }
                        Health::Unknown => {}
                    }
                    if done.reusable {
                        self.keepalive.put(addr, io);
                    }
                    return Ok(done.next);
                }
                Err(failed) => failed,
            };
            // A pooled connection gone stale is not the backend's fault: retry on a fresh one
            // to the same backend, if the request cannot have been acted on twice.
            let stale_retry = match &failed {
                Failed::Unsent(_) => true,
                Failed::Unanswered(_) => req.idempotent,
                Failed::Answered(..) => false,
            };
            if reused && replayable && stale_retry && stale < MAX_STALE_RETRIES {
                stale += 1;
                again = Some((id, addr, guard));
                continue;
            }
            let (status, why, next_backend) = match failed {
                Failed::Unsent(why) => (502, why, true),
                Failed::Unanswered(why) => (502, why, req.idempotent),
                Failed::Answered(status, why) => (status, why, false),
            };
            tracing::warn!(upstream = %self.route.upstream, backend = %id, %addr, error = %why, "backend failed the request");
            self.route.failed(guard.live(), &id, max_fails, &why);
            tried.push(id);
            if !(next_backend && replayable) || tried.len() as u32 > policy.retries {
                return Err((status, format!("backend failed: {why}")));
            }
        }
    }

    /// Send the request on `io` and relay the answer.
    async fn exchange(
        &self,
        client: &mut Stream,
        io: &mut TcpStream,
        bufs: &mut Buffers,
        req: &Request,
        policy: &UpstreamPolicy,
        streamed: u64,
    ) -> Result<Done, Failed> {
        let idle = policy.idle_timeout;
        send(io, &bufs.out, DEFAULT_SEND_TIMEOUT)
            .await
            .map_err(|e| Failed::Unsent(format!("sending the request: {e}")))?;
        if streamed > 0 {
            let mut body = Progress::new(Framing::Length(streamed));
            let how = Relay {
                read: DEFAULT_BODY_TIMEOUT,
                write: DEFAULT_SEND_TIMEOUT,
                rechunk: false,
            };
            if let Err(e) = relay(client, io, &mut body, &mut bufs.upstream, how).await {
                if e.on_read() {
                    // The client stopped sending: nothing to answer.
                    return Ok(Done {
                        next: Next::Abort,
                        status: 0,
                        reusable: false,
                        health: Health::Unknown,
                    });
                }
                return Err(Failed::Answered(502, format!("sending the body: {e}")));
            }
        }

        bufs.upstream.clear();
        let mut interim = false;
        let (res, head_len) = loop {
            let deadline = tokio::time::Instant::now() + idle;
            // While the backend thinks, watch the client: if it goes away (a long poll given
            // up), so does this exchange, instead of holding the backend until `idle_timeout`.
            // As with nginx, a client that only half-closes after its request counts as gone.
            let read = loop {
                tokio::select! {
                    r = tokio::time::timeout_at(deadline, read_head(io, &mut bufs.upstream)) => break r,
                    n = client.read_buf(&mut bufs.client), if bufs.client.len() < MAX_HEAD => {
                        match n {
                            Ok(0) | Err(_) => return Ok(Done {
                                next: Next::Abort,
                                status: 0,
                                reusable: false,
                                health: Health::Unknown,
                            }),
                            // The client's next request, pipelined: kept for later.
                            Ok(_) => {}
                        }
                    }
                }
            };
            let head_len = match read {
                Err(_) => return Err(Failed::Answered(504, "the backend timed out".into())),
                Ok(Ok(HeadRead::Complete(n))) => n,
                Ok(Ok(HeadRead::TooLarge)) => {
                    return Err(Failed::Answered(502, "response head too large".into()))
                }
                Ok(Ok(HeadRead::Eof) | Err(_)) if bufs.upstream.is_empty() && !interim => {
                    return Err(Failed::Unanswered("closed without answering".into()))
                }
                Ok(Ok(HeadRead::Eof) | Err(_)) => {
                    return Err(Failed::Answered(502, "closed mid-answer".into()))
                }
            };
            match inspect_response(
                &bufs.upstream[..head_len],
                req.head_method,
                req.close,
                &mut bufs.reply,
            ) {
                Ok(Answer::Interim) => {
                    interim = true;
                    bufs.upstream.drain(..head_len);
                }
                Ok(Answer::Final(res)) => break (res, head_len),
                Err(e) => return Err(Failed::Answered(502, e.to_string())),
            }
        };

        let mut body = Progress::new(res.framing);
        let rest = &bufs.upstream[head_len..];
        let first = body
            .take(rest)
            .map_err(|e| Failed::Answered(502, e.to_string()))?;
        let mut extra = first < rest.len();
        if res.rechunk {
            push_chunk(&mut bufs.reply, &rest[..first]);
        } else {
            bufs.reply.extend_from_slice(&rest[..first]);
        }
        let status = res.status;
        if send(client, &bufs.reply, DEFAULT_SEND_TIMEOUT)
            .await
            .is_err()
        {
            return Ok(Done {
                next: Next::Abort,
                status,
                reusable: res.reusable && body.done() && !extra,
                health: Health::Success,
            });
        }
        if !body.done() {
            let how = Relay {
                read: idle,
                write: DEFAULT_SEND_TIMEOUT,
                rechunk: res.rechunk,
            };
            match relay(io, client, &mut body, &mut bufs.upstream, how).await {
                Ok(more) => extra |= more,
                Err(e) => {
                    let health = if e.on_read() {
                        Health::Failed(format!("response body: {e}"))
                    } else {
                        Health::Unknown
                    };
                    return Ok(Done {
                        next: Next::Abort,
                        status,
                        reusable: false,
                        health,
                    });
                }
            }
        }
        Ok(Done {
            next: if res.close {
                Next::Close
            } else {
                Next::KeepAlive
            },
            status,
            reusable: res.reusable && !extra,
            health: Health::Success,
        })
    }
}

/// Answer the client with a JSON error.
async fn reply_error(client: &mut Stream, status: u16, msg: &str, close: bool) -> Next {
    let body = error_body(msg);
    let reason = match status {
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    );
    match send(client, resp.as_bytes(), DEFAULT_SEND_TIMEOUT).await {
        Err(_) => Next::Abort,
        Ok(()) if close => Next::Close,
        Ok(()) => Next::KeepAlive,
    }
}

/// Open a connection to a backend.
async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(io)) => {
            let _ = io.set_nodelay(true);
            Ok(io)
        }
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err("connect timed out".into()),
    }
}

/// Read from the client until `buf` holds `len` bytes.
async fn read_to(client: &mut Stream, buf: &mut Vec<u8>, len: usize) -> Result<(), ()> {
    while buf.len() < len {
        buf.reserve(len - buf.len());
        let want = (len - buf.len()) as u64;
        let mut limited = (&mut *client).take(want);
        let read = limited.read_buf(buf);
        match tokio::time::timeout(DEFAULT_BODY_TIMEOUT, read).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(()),
        }
    }
    Ok(())
}
