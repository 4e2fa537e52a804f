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
//! is retried once more on a fresh connection to the same backend, so a sticky request stays put.

use super::body::{relay, Framing, Progress};
use super::head::{read_head, HeadRead};
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Request bodies up to this size are read whole before sending, so a failed attempt can be
/// sent again to another backend. Larger ones stream through and are not retried.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

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
    /// Let go of buffers a large message grew, so an idle keep-alive connection stays small.
    pub fn shrink(&mut self) {
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
    Close,
}

/// tideway's HTTP path of one listener.
pub struct HttpPath {
    pub route: Route,
    pub keepalive: Keepalive,
}

/// How an attempt on one backend failed.
enum Failed {
    /// Before any byte of an answer: another attempt may follow.
    Unanswered(String),
    /// The backend answered too slowly, or with something that cannot be forwarded.
    Answered(u16, String),
}

impl HttpPath {
    pub fn new(route: Route, keepalive: Keepalive) -> Self {
        HttpPath { route, keepalive }
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
            return self
                .reply_error(client, 503, &msg, req.close || streamed > 0)
                .await;
        };
        match self.attempts(client, bufs, &req, &policy, streamed).await {
            Ok(next) => next,
            Err((status, msg)) => {
                self.reply_error(client, status, &msg, req.close || streamed > 0)
                    .await
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
            match self
                .exchange(client, &mut io, bufs, req, policy, streamed)
                .await
            {
                Ok((next, status, reusable)) => {
                    if policy.passive.fail_on_5xx && status >= 500 {
                        let why = format!("answered {status}");
                        self.route.failed(guard.live(), &id, max_fails, &why);
                    } else {
                        guard.live().record_success();
                    }
                    if reusable {
                        self.keepalive.put(addr, io);
                    }
                    return Ok(next);
                }
                Err(Failed::Unanswered(why)) => {
                    let replayable = streamed == 0;
                    if reused && replayable && stale < MAX_STALE_RETRIES {
                        // A pooled connection had gone stale: not the backend's fault. Retry it
                        // on a fresh connection, so the request stays sticky.
                        stale += 1;
                        again = Some((id, addr, guard));
                        continue;
                    }
                    tracing::warn!(upstream = %self.route.upstream, backend = %id, %addr, error = %why, "backend failed the request");
                    self.route.failed(guard.live(), &id, max_fails, &why);
                    tried.push(id);
                    if !(replayable && req.idempotent) || tried.len() as u32 > policy.retries {
                        return Err((502, format!("backend failed: {why}")));
                    }
                }
                Err(Failed::Answered(status, why)) => {
                    tracing::warn!(upstream = %self.route.upstream, backend = %id, %addr, error = %why, "backend failed the request");
                    self.route.failed(guard.live(), &id, max_fails, &why);
                    return Err((status, why));
                }
            }
        }
    }

    /// Send the request on `io` and relay the answer. `Ok((next, status, reusable))` once the
    /// response reached the client (or the client went away mid-response).
    async fn exchange(
        &self,
        client: &mut Stream,
        io: &mut TcpStream,
        bufs: &mut Buffers,
        req: &Request,
        policy: &UpstreamPolicy,
        streamed: u64,
    ) -> Result<(Next, u16, bool), Failed> {
        let idle = policy.idle_timeout;
        io.write_all(&bufs.out)
            .await
            .map_err(|e| Failed::Unanswered(format!("sending the request: {e}")))?;
        if streamed > 0 {
            let mut body = Progress::new(Framing::Length(streamed));
            if let Err(e) = relay(client, io, &mut body, &mut bufs.upstream, idle).await {
                if e.on_read() {
                    // The client stopped sending: nothing to answer.
                    return Ok((Next::Close, 0, false));
                }
                return Err(Failed::Answered(502, format!("sending the body: {e}")));
            }
        }

        bufs.upstream.clear();
        let answer = loop {
            let read = tokio::time::timeout(idle, read_head(io, &mut bufs.upstream)).await;
            let head_len = match read {
                Err(_) => return Err(Failed::Answered(504, "the backend timed out".into())),
                Ok(Ok(HeadRead::Complete(n))) => n,
                Ok(Ok(HeadRead::TooLarge)) => {
                    return Err(Failed::Answered(502, "response head too large".into()))
                }
                Ok(Ok(HeadRead::Eof)) | Ok(Err(_)) if bufs.upstream.is_empty() => {
                    return Err(Failed::Unanswered("closed without answering".into()))
                }
                Ok(Ok(HeadRead::Eof)) | Ok(Err(_)) => {
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
                    bufs.upstream.drain(..head_len);
                }
                Ok(Answer::Final(res)) => break (res, head_len),
                Err(e) => return Err(Failed::Answered(502, e.to_string())),
            }
        };
        let (res, head_len) = answer;

        let mut body = Progress::new(res.framing);
        let rest = &bufs.upstream[head_len..];
        let first = body
            .take(rest)
            .map_err(|e| Failed::Answered(502, e.to_string()))?;
        let mut extra = first < rest.len();
        bufs.reply.extend_from_slice(&rest[..first]);
        let next = if res.close {
            Next::Close
        } else {
            Next::KeepAlive
        };
        if client.write_all(&bufs.reply).await.is_err() || client.flush().await.is_err() {
            let reusable = res.reusable && body.done() && !extra;
            return Ok((Next::Close, res.status, reusable));
        }
        if !body.done() {
            match relay(io, client, &mut body, &mut bufs.upstream, idle).await {
                Ok(more) => extra |= more,
                Err(e) if e.on_read() => {
                    tracing::warn!(upstream = %self.route.upstream, error = %e, "backend broke off a response");
                    return Ok((Next::Close, 502, false));
                }
                Err(_) => return Ok((Next::Close, res.status, false)),
            }
        }
        bufs.upstream.clear();
        bufs.reply.clear();
        Ok((next, res.status, res.reusable && !extra))
    }

    /// Answer the client with a JSON error.
    async fn reply_error(&self, client: &mut Stream, status: u16, msg: &str, close: bool) -> Next {
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
        if client.write_all(resp.as_bytes()).await.is_err() || client.flush().await.is_err() {
            return Next::Close;
        }
        if close {
            Next::Close
        } else {
            Next::KeepAlive
        }
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
        match tokio::time::timeout(super::gateway::DEFAULT_HEADER_TIMEOUT, read).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(()),
        }
    }
    Ok(())
}
