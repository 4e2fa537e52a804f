//! The front door of an HTTP listener: the accept path ([`crate::net::accept`]) hands each
//! connection over raw; over the process-wide cap it gets a JSON 503 ([`crate::net::fds`]);
//! from there tideway's one HTTP engine serves it. Each request head is read under the
//! listener's limits ([`super::head`]), routed by its Host and path on the listener's current
//! routes ([`super::dispatch`]), classified ([`super::request`]), refused with a clear
//! answer, answered by its route, or forwarded ([`super::exchange`]); a connection whose handshake the backend
//! answers with 101 becomes a [`super::websocket`] tunnel. Nothing is handed to a second
//! parser.

use super::access::{self, Outcome};
use super::client::Addressing;
use super::dispatch::{self, Proxy, Routes, SharedRoutes};
use super::exchange::{refuse, reply_error, Buffers, HttpPath, Next, Peers, Routed, Upgraded};
use super::head::{HeadRead, HeadScan};
use super::keepalive::{Keepalive, DEFAULT_IDLE_PER_BACKEND};
use super::limit::{ClientLimits, Refused};
use super::listener::{ListenerCount, ListenerPlace, Refusal as ListenerRefusal};
use super::request::{Parts, Refusal, Request, RequestBody, Version};
use super::request_id::RequestId;
use super::route::Route;
use super::tls::{Identity, Terminator};
use super::websocket;

mod classify;
mod ending;
use crate::config::{HttpLimits, UpstreamPolicy};
use crate::routing::Pick;
use async_trait::async_trait;
use classify::{http1_version, Asked, Classified, HeadIn, Src};
use ending::{after_refusal, close, end, linger, CLOSE_TIMEOUT};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// How long an idle upstream keep-alive connection is kept (nginx's `keepalive_timeout` in an
/// upstream block is 60 s).
pub const DEFAULT_UPSTREAM_IDLE: Duration = Duration::from_secs(60);

/// On shutdown, how long an idle keep-alive connection stays open for a request its client may
/// already be sending (it is served with `Connection: close`).
const SHUTDOWN_LINGER: Duration = Duration::from_millis(500);

/// The answer to a connection over the listener's `max_connections`.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 49\r\nconnection: close\r\n\r\n{\"error\":\"too many connections on this listener\"}";

/// The answer to a connection over the process-wide cap (`[server] max_connections`).
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 48\r\nconnection: close\r\n\r\n{\"error\":\"too many connections in this process\"}";

/// The places a client connection holds while it lives (a WebSocket it becomes included): its
/// place under the process-wide cap, and under the listener's `max_connections`.
pub struct Places {
    pub process: crate::net::fds::Slot,
    pub listener: ListenerPlace,
}

/// Serves one HTTP listener.
pub struct Gateway {
    path: HttpPath,
    /// The listener's first upstream: requests refused before they are routed count there.
    route: Route,
    /// The listener's routes, loaded per request; a reload swaps them.
    routes: SharedRoutes,
    tls: Option<Terminator>,
    /// The listener's connections (under its `max_connections`) and series.
    counts: ListenerCount,
    /// Set while a reload has removed this listener: new connections are closed at once.
    turned_away: Arc<AtomicBool>,
    /// Where the real client address comes from (PROXY header, trusted proxies).
    addressing: Addressing,
    /// Per-client limits (`client_limits`).
    clients: ClientLimits,
}

/// What the end of a request reports from: the access log's view of its head, as the request
/// parser read it (None: the log is off), and when it started.
#[derive(Clone, Copy)]
struct Log<'h> {
    logged: Option<&'h access::Head>,
    started: std::time::Instant,
    /// The request's id (`$request_id`), made when first read.
    id: &'h RequestId,
    /// The TLS server name the connection asked for.
    sni: Option<&'h str>,
    /// The request's protocol (`tideway_requests_by_protocol_total`).
    version: Version,
}

impl Log<'_> {
    /// Count a request that got an answer (or none), and log it when the access log is on.
    fn finished(&self, route: &Route, ip: Option<std::net::IpAddr>, out: &Outcome) {
        let took = self.started.elapsed();
        route.metrics.request.observe(took.as_secs_f64());
        route.metrics.protocols[self.version as usize].inc();
        if out.status > 0 {
            crate::metrics::response(&route.upstream, out.status);
        }
        if let Some(head) = self.logged {
            let seen = access::Seen {
                client: ip,
                sni: self.sni,
                request_id: self.id.get(),
            };
            access::request(&seen, head, &route.upstream, out, took);
        }
    }

    /// What a WebSocket's line needs of its handshake (answered with `out`), with the log on.
    fn handshake(&self, out: &Outcome) -> Option<access::Handshake> {
        let head = self.logged?;
        let seen = access::Seen {
            client: None,
            sni: self.sni,
            request_id: self.id.get(),
        };
        Some(access::Handshake::new(&seen, head, out.body_sent()))
    }
}

/// What a connection does after one request.
// A return value only: boxing the large variant would be one more allocation made (and freed)
// while a WebSocket's long-lived ones are.
#[allow(clippy::large_enum_variant)]
enum Step<'r> {
    /// Read the next request (the buffers are ready for it).
    Next,
    /// The connection is over: closed, or dropped.
    End,
    /// The backend switched to WebSocket: the connection becomes a tunnel.
    Upgraded(Switch<'r>),
}

/// A request the backend switched to WebSocket, for the tunnel it becomes.
struct Switch<'r> {
    route: &'r Route,
    up: Upgraded,
    idle: Duration,
    liveness: crate::config::Liveness,
    rebalanced: Option<Arc<UpstreamPolicy>>,
    client_ip: Option<std::net::IpAddr>,
    held: super::limit::Held,
    handshake: Option<access::Handshake>,
}

impl<'r> Switch<'r> {
    /// The tunnel's route, backend connection and setup: `early`, what the client sent behind
    /// its handshake; `permit`, the connection's places (None: an HTTP/2 stream's, which its
    /// connection holds); `protocol`, how the client opened it.
    fn setup(
        self,
        early: Vec<u8>,
        permit: Option<Places>,
        protocol: &'static str,
    ) -> (&'r Route, Upgraded, websocket::Setup) {
        let ws = websocket::Setup {
            early,
            idle: self.idle,
            liveness: self.liveness,
            rebalanced: self.rebalanced,
            client_ip: self.client_ip,
            permit,
            held: self.held,
            handshake: self.handshake,
            protocol,
        };
        (self.route, self.up, ws)
    }
}

impl Gateway {
    pub fn new(
        route: Route,
        routes: SharedRoutes,
        tls: Option<Terminator>,
        limits: HttpLimits,
        turned_away: Arc<AtomicBool>,
    ) -> Self {
        let keepalive = Keepalive::new(DEFAULT_IDLE_PER_BACKEND, DEFAULT_UPSTREAM_IDLE);
        let counts = ListenerCount::detached(limits.max_connections);
        let clients = ClientLimits::new(&limits.per_client);
        Gateway {
            clients,
            path: HttpPath::new(keepalive, limits),
            route,
            routes,
            tls,
            counts,
            turned_away,
            addressing: Addressing::default(),
        }
    }

    /// The task that closes this gateway's idle upstream connections once expired, for its
    /// owner to run (and stop): it ends by itself once the gateway is gone.
    pub fn sweeper(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        Keepalive::sweeper(&self.path.keepalive)
    }

    /// Learn client addresses as `addressing` says (by default: the socket's peer).
    pub fn with_addressing(mut self, addressing: Addressing) -> Self {
        self.addressing = addressing;
        self
    }

    /// Count connections (and cap them) with `counts`, the listener's (by default: counts
    /// under `limits.max_connections` whose series are registered nowhere).
    pub fn counted(mut self, counts: ListenerCount) -> Self {
        self.counts = counts;
        self
    }

    /// The listener's limits.
    pub fn limits(&self) -> &HttpLimits {
        &self.path.limits
    }

    /// Has a reload removed this listener?
    pub fn is_turned_away(&self) -> bool {
        self.turned_away.load(Ordering::Acquire)
    }

    /// Serve one HTTP/2 stream's request, its head decoded into `parts`, on `stream` (the
    /// stream as [`super::h2::stream::H2Io`]): the same steps as an HTTP/1 request's. `on`:
    /// the connection's peers and TLS identity, and the server's shutdown. `true`: the answer
    /// went out whole and the stream is to be ended; `false`: it was cut or the client left
    /// (the stream is reset when dropped).
    pub async fn h2_request(
        &self,
        stream: &mut Stream,
        parts: &Parts<'_, '_>,
        (conn, identity, shutdown): (Peers, Option<&Identity>, &ShutdownWatch),
    ) -> bool {
        let routes = self.routes.load_full();
        let mut bufs = Buffers::default();
        let on = (conn, identity, (1, shutdown));
        let step = self
            .request(stream, &mut bufs, Src::Typed(parts), &routes, on)
            .await;
        // An HTTP/2 request is never a WebSocket handshake of HTTP/1's kind (the codec refuses
        // `connection` and `upgrade`): `Upgraded` cannot come, and would be dropped.
        matches!(step, Step::Next)
    }

    /// Serve an extended CONNECT made into a WebSocket handshake (`parts`, see
    /// [`super::h2::websocket`]) on `stream`, as [`Gateway::h2_request`] serves a request;
    /// when the backend switched, the stream is the WebSocket's tunnel, run here to its end
    /// (the connection counts the stream as live meanwhile).
    pub async fn h2_upgrade(
        &self,
        mut stream: Stream,
        parts: &Parts<'_, '_>,
        (conn, identity, shutdown): (Peers, Option<&Identity>, &ShutdownWatch),
        (reset, strikes): (super::h2::stream::ResetWatch, &super::h2::reset::Strikes),
    ) {
        let routes = self.routes.load_full();
        let mut bufs = Buffers::default();
        let on = (conn, identity, (1, shutdown));
        // The handshake races the client's reset, as any request's work does: a stream reset
        // before its WebSocket opens stops there (its backend connection closed).
        let handshake = self.request(&mut stream, &mut bufs, Src::Typed(parts), &routes, on);
        let Some(step) = super::h2::reset::unless_reset(reset, strikes, handshake).await else {
            return;
        };
        match step {
            Step::Upgraded(switch) => {
                // The client's END_STREAM is its half of a close, as a TCP FIN (RFC 8441 §5).
                if let Some(h2) = super::h2::stream::H2Io::of(&stream) {
                    h2.stop_at_end(true);
                }
                let early = bufs.client.to_vec();
                drop(bufs);
                let (route, up, ws) = switch.setup(early, None, "h2");
                websocket::start(route, stream, up, ws).await;
            }
            Step::Next => {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            }
            Step::End => {}
        }
    }

    /// Answer an HTTP/2 stream its front door refused before classifying it (`parts`: what
    /// of its head is known), logged and counted as any refused request is.
    pub async fn h2_refused(
        &self,
        stream: &mut Stream,
        parts: &Parts<'_, '_>,
        r: Refusal,
        (conn, identity): (Peers, Option<&Identity>),
    ) {
        let started = std::time::Instant::now();
        let logged = access::enabled().then(|| access::Head::of_parts(parts));
        let id = RequestId::default();
        let log = Log {
            logged: logged.as_ref(),
            started,
            id: &id,
            sni: identity.and_then(|i| i.sni.as_deref()),
            version: Version::H2,
        };
        let mut out = Outcome::default();
        let _ = refuse(stream, r.status, r.reason, true, &mut out).await;
        log.finished(&self.route, conn.client.map(|a| a.ip()), &out);
        close(stream).await;
    }

    /// The listener's routes, for a reload to swap.
    pub fn routes(&self) -> &SharedRoutes {
        &self.routes
    }
}

/// Resolves once the server is shutting down.
async fn stopped(mut watch: ShutdownWatch) {
    while !*watch.borrow_and_update() {
        if watch.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Wait `wait` (a `limit_req` delay) while reading what the client sends on into `buf` (its
/// body, pipelined requests); `false` when the client goes away first.
async fn wait_watching(stream: &mut Stream, buf: &mut Vec<u8>, wait: Duration) -> bool {
    // Boxed: a connection's task stays small for the requests that never wait.
    let mut sleep = Box::pin(tokio::time::sleep(wait));
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            n = stream.read_buf(buf), if buf.len() < crate::net::wire::MAX_HEAD => match n {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            },
        }
    }
}

/// The refusal of a request its route's access list denies (nginx's "access forbidden by
/// rule").
const FORBIDDEN: Refused = Refused {
    status: 403,
    message: "access forbidden by rule",
};

/// Refuse a request whose head (`head_len` bytes in `bufs`) is read, as nginx answers it; a
/// body not read means the connection cannot go on (a HEAD's answer here carries a body, so
/// its connection ends too). On `KeepAlive` the buffers are ready for the next request.
async fn turn_down(
    stream: &mut Stream,
    bufs: &mut Buffers,
    head_len: usize,
    req: &Request,
    no: Refused,
) -> (Next, Outcome) {
    let keep = !req.close && matches!(req.body, RequestBody::None) && !req.head_method;
    let mut out = Outcome {
        received: head_len as u64,
        ..Outcome::default()
    };
    let next = refuse(stream, no.status, no.message, !keep, &mut out).await;
    if matches!(next, Next::KeepAlive) {
        bufs.client.drain(..head_len);
        bufs.reset();
    }
    (next, out)
}

#[async_trait]
impl ServerApp for Gateway {
    /// Each connection gets a task of its own, sized for what tideway does with it: pingora's
    /// connection task is sized for every state its accept path can be in, about 9 KiB held
    /// for as long as the connection lives.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.counts.accepted();
        if self.turned_away.load(Ordering::Acquire) {
            return None;
        }
        let Some(process) = crate::net::fds::proxied().try_take() else {
            self.counts.refused(ListenerRefusal::Process);
            self.turn_away(stream, FULL);
            return None;
        };
        let Some(listener) = self.counts.take() else {
            self.turn_away(stream, BUSY);
            return None;
        };
        let permit = Places { process, listener };
        let (me, shutdown) = (self.clone(), shutdown.clone());
        tokio::spawn(async move { me.serve(stream, shutdown, permit).await });
        None
    }
}

impl Gateway {
    /// Answer `busy` (on plain HTTP; a TLS client is just closed) and close, on a task of its
    /// own.
    fn turn_away(&self, mut stream: Stream, busy: &'static [u8]) {
        let plain = self.tls.is_none();
        tokio::spawn(async move {
            if plain {
                let _ = super::body::send(&mut stream, busy, CLOSE_TIMEOUT).await;
            }
            close(&mut stream).await;
        });
    }

    /// Serve one connection: every request on it, or the WebSocket it becomes.
    async fn serve(
        self: Arc<Self>,
        stream: Stream,
        shutdown: ShutdownWatch,
        permit: Places,
    ) -> Option<()> {
        let (mut stream, conn, identity) = self.open(stream).await?;
        if identity.as_ref().is_some_and(|i| i.h2) {
            let on = (conn, identity);
            super::h2::serve(self, stream, on, shutdown, permit).await;
            return None;
        }
        let mut served: u32 = 0;
        let mut bufs = Buffers::default();
        let mut stop = std::pin::pin!(stopped(shutdown.clone()));
        let mut stopping = false;
        loop {
            let read = self
                .read_head(&mut stream, &mut bufs, served, (&mut stop, &mut stopping))
                .await;
            let head_len = match read {
                HeadRead::Complete(n) => n,
                HeadRead::Eof => return None,
                HeadRead::Refused(r) => {
                    let _ = reply_error(&mut stream, r.status, r.reason, true).await;
                    close(&mut stream).await;
                    return None;
                }
            };
            served += 1;
            let routes = self.routes.load_full();
            let on = (conn, identity.as_ref(), (served, &shutdown));
            let step = self
                .request(&mut stream, &mut bufs, Src::Raw(head_len), &routes, on)
                .await;
            let switch = match step {
                Step::Next => continue,
                Step::End => return None,
                Step::Upgraded(switch) => switch,
            };
            // The WebSocket lives on in a task of its own, sized for it alone. Exact-size,
            // and the connection's buffers freed before the tunnel's long-lived allocations
            // are made: holes left between long-lived allocations cost every idle WebSocket
            // (7.6 KiB each instead of 3.4).
            let early = bufs.client.to_vec();
            drop(bufs);
            let (route, up, ws) = switch.setup(early, Some(permit), "http/1.1");
            // The tunnel keeps the route it started on, whatever a reload does.
            tokio::spawn(websocket::start(route, stream, up, ws));
            return None;
        }
    }

    /// Take the connection's PROXY header (if the listener expects one; it comes before any
    /// TLS) and its TLS handshake; None: the connection is dropped.
    async fn open(&self, stream: Stream) -> Option<(Stream, Peers, Option<Identity>)> {
        let header_timeout = self.path.limits.header_timeout;
        let (stream, conn) = match self.addressing.accept(stream, header_timeout).await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "connection refused");
                return None;
            }
        };
        match &self.tls {
            None => Some((stream, conn, None)),
            // Boxed: the handshake's state is large and only needed while it runs.
            Some(t) => match Box::pin(t.accept(stream)).await {
                Ok((tls, identity)) => Some((Box::new(tls) as Stream, conn, Some(identity))),
                Err(e) => {
                    let reason = super::tls::failure_reason(&e);
                    tracing::debug!(error = %e, reason, "TLS handshake failed");
                    self.counts.tls_failed(reason);
                    None
                }
            },
        }
    }

    /// Read the next request head into `bufs.client`, `served` requests into the connection.
    /// `stop` resolves once the server shuts down (`stopping` then): an idle connection
    /// closes soon after.
    async fn read_head(
        &self,
        stream: &mut Stream,
        bufs: &mut Buffers,
        served: u32,
        (stop, stopping): (
            &mut (impl std::future::Future<Output = ()> + Unpin),
            &mut bool,
        ),
    ) -> HeadRead {
        let limits = &self.path.limits;
        // The first byte of a head may take the keep-alive timeout (the header timeout on a
        // new connection); from the first byte on, the whole head has the header timeout.
        let wait = if served > 0 {
            limits.keepalive_timeout
        } else {
            limits.header_timeout
        };
        let mut started = !bufs.client.is_empty();
        let mut deadline = Instant::now() + if started { limits.header_timeout } else { wait };
        let mut scan = HeadScan::default();
        loop {
            if let Some(done) = scan.scan(&bufs.client, limits) {
                return done;
            }
            bufs.client.reserve(2048);
            tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, stream.read_buf(&mut bufs.client)) => match r {
                    Err(_) if started => {
                        return HeadRead::Refused(Refusal::new(408, "the request head timed out"))
                    }
                    Err(_) if *stopping => {
                        close(stream).await;
                        return HeadRead::Eof;
                    }
                    Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return HeadRead::Eof,
                    Ok(Ok(_)) if !started => {
                        started = true;
                        deadline = Instant::now() + limits.header_timeout;
                    }
                    Ok(Ok(_)) => {}
                },
                // Shutting down: an idle connection (a keep-alive one, or one a client
                // opened ahead and parked in its pool) closes after a short linger, not at
                // the end of the grace period; a request that arrives by then (a client may
                // be sending it as we decide) is still read and served, with
                // `Connection: close`, rather than cut. `stop` is never polled again.
                _ = &mut *stop, if !*stopping => {
                    *stopping = true;
                    if !started {
                        deadline = deadline.min(Instant::now() + SHUTDOWN_LINGER);
                    }
                }
            }
        }
    }

    /// Serve the request whose head is `bufs.client[..head_len]`, on `routes`: refuse it,
    /// answer it (a route that does not proxy) or forward it. `conn`: the connection's peers;
    /// `served`: requests on it so far, this one included.
    async fn request<'r>(
        &self,
        stream: &mut Stream,
        bufs: &mut Buffers,
        src: Src<'_>,
        routes: &'r Routes,
        (conn, identity, (served, shutdown)): (Peers, Option<&Identity>, (u32, &ShutdownWatch)),
    ) -> Step<'r> {
        let mut head = access::Head::default();
        let mut logged = access::enabled().then_some(&mut head);
        let started = std::time::Instant::now();
        let id = RequestId::default();
        let head_len = src.len();
        let head = match src {
            Src::Raw(n) => HeadIn::Raw(&bufs.client[..n]),
            Src::Typed(parts) => HeadIn::Typed(parts),
        };
        let classified = self.classify(
            routes,
            head,
            (conn.client, conn.local, identity),
            (&mut bufs.out, logged.as_deref_mut(), &id),
        );
        let version = match (src, &classified) {
            (Src::Typed(parts), _) => parts.version,
            (Src::Raw(_), Ok(c)) => c.req.version,
            (Src::Raw(n), Err(_)) => http1_version(&bufs.client[..n]),
        };
        let log = Log {
            logged: logged.map(|h| &*h),
            started,
            id: &id,
            sni: identity.and_then(|i| i.sni.as_deref()),
            version,
        };
        let Classified {
            mut req,
            pick,
            policy,
            asked,
        } = match classified {
            Ok(classified) => classified,
            Err(r) => {
                let ip = conn.client.map(|a| a.ip());
                let mut out = Outcome {
                    received: head_len as u64,
                    ..Outcome::default()
                };
                let _ = refuse(stream, r.status, r.reason, true, &mut out).await;
                log.finished(&self.route, ip, &out);
                close(stream).await;
                return Step::End;
            }
        };
        req.close |= *shutdown.borrow() || served >= self.path.limits.keepalive_requests;
        let ip = req.client.map(|a| a.ip());
        if routes.forbids(pick, ip) {
            // nginx's `deny`: answered before anything else is done for the request.
            let route = routes.proxy(pick).map_or(&self.route, |p| &p.route);
            let (next, out) = turn_down(stream, bufs, head_len, &req, FORBIDDEN).await;
            log.finished(route, ip, &out);
            return after_refusal(stream, &req, next).await;
        }
        let Some(proxy) = routes.proxy(pick) else {
            // Answered by tideway: a `return`, nginx's trailing-slash 301, 404 or 400.
            let asked = asked.unwrap_or_default();
            let (next, out) = self
                .answer(
                    stream,
                    (routes, pick, &asked),
                    bufs,
                    head_len,
                    &req,
                    conn.local,
                )
                .await;
            log.finished(&self.route, ip, &out);
            return end(stream, bufs, next).await;
        };
        let to = (head_len, conn.local, log);
        self.proxied(stream, bufs, proxy, (req, policy), to).await
    }

    /// Forward a request to its route's upstream (`proxy`), once the client's limits admit
    /// it. `head_len`: the length of its head in `bufs.client`; `local`: the listener's
    /// address.
    async fn proxied<'r>(
        &self,
        stream: &mut Stream,
        bufs: &mut Buffers,
        proxy: &'r Proxy,
        (req, policy): (Request, Option<Arc<UpstreamPolicy>>),
        (head_len, local, log): (usize, Option<std::net::SocketAddr>, Log<'_>),
    ) -> Step<'r> {
        let route = &proxy.route;
        // The request's real client: what every per-client feature goes by.
        let peers = Peers {
            client: req.client,
            local,
        };
        let ip = peers.client.map(|a| a.ip());
        // A request `limit_req` delays waits watching its client: one that leaves ends it
        // there, as nginx's does, instead of holding its place until the delay is over.
        let clients = proxy.clients.as_ref().unwrap_or(&self.clients);
        let admitted = match clients.rate(ip) {
            Ok(wait) if wait.is_zero() => clients.conn(ip),
            Ok(wait) => {
                if !wait_watching(stream, &mut bufs.client, wait).await {
                    return Step::End;
                }
                clients.conn(ip)
            }
            Err(no) => Err(no),
        };
        let held = match admitted {
            Ok(held) => held,
            Err(no) => {
                let (next, out) = turn_down(stream, bufs, head_len, &req, no).await;
                log.finished(route, ip, &out);
                return after_refusal(stream, &req, next).await;
            }
        };
        let idle = policy.as_ref().map(|p| p.idle_timeout);
        let liveness = policy.as_ref().map(|p| p.liveness).unwrap_or_default();
        // Rebalanced: the tunnel registers, with the key the upstream hashes (if it does);
        // an Arc clone, only on upstreams with `rebalance`.
        let rebalanced = policy.as_ref().filter(|p| p.rebalance.is_some()).cloned();
        let mut out = Outcome::default();
        if let (Some(max), RequestBody::Length(n)) = (proxy.settings.max_body, req.body) {
            if n > max {
                out.received = head_len as u64;
                let too_large = "the request body is too large";
                let _ = refuse(stream, 413, too_large, true, &mut out).await;
                log.finished(route, ip, &out);
                close(stream).await;
                linger(stream).await;
                return Step::End;
            }
        }
        let routed = Routed {
            route,
            send_timeout: proxy.send_timeout(),
            max_body: proxy.settings.max_body,
        };
        let next = self
            .path
            .forward(
                routed,
                stream,
                bufs,
                head_len,
                (req, policy),
                peers,
                &mut out,
            )
            .await;
        log.finished(route, ip, &out);
        // The request is over: its connection counts go back, unless it became a tunnel.
        let up = match next {
            Next::Upgraded(up) => up,
            next => {
                drop(held);
                return end(stream, bufs, next).await;
            }
        };
        Step::Upgraded(Switch {
            route,
            up,
            idle: idle.unwrap_or(crate::config::DEFAULT_IDLE_TIMEOUT),
            liveness,
            rebalanced,
            client_ip: ip,
            held,
            handshake: log.handshake(&out),
        })
    }
}

impl Gateway {
    /// Answer a request whose route does not proxy. A request with a body closes the
    /// connection after the answer (its body is not read).
    async fn answer(
        &self,
        stream: &mut Stream,
        (routes, pick, asked): (&Routes, Pick, &Asked),
        bufs: &mut Buffers,
        head_len: usize,
        req: &Request,
        local: Option<std::net::SocketAddr>,
    ) -> (Next, Outcome) {
        let (host, target) = (asked.host.as_deref(), &asked.target);
        let where_ = (self.route.proto, host, local);
        let mut out = Outcome {
            received: head_len as u64,
            ..Outcome::default()
        };
        let Some(a) = dispatch::self_answer(routes, pick, where_, target) else {
            return (Next::Close, out);
        };
        bufs.client.drain(..head_len);
        let body = req.body != RequestBody::None;
        // A misdirected client is to open another connection (RFC 9110 15.5.20).
        let close = req.close || body || pick == Pick::Misdirected;
        let (next, sent) =
            dispatch::send_answer(stream, &a, req.added.as_deref(), (req.head_method, close)).await;
        out.status = a.status;
        out.sent = sent;
        out.head = if req.head_method {
            sent
        } else {
            sent.saturating_sub(a.body.len() as u64)
        };
        let next = match next {
            Next::Close if body => Next::Linger,
            next => next,
        };
        (next, out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_busy_answers_are_framed_right() {
        for answer in [super::BUSY, super::FULL] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
            assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
        }
    }
}
