//! Serving the admin listener so that it stays in its lane: it can never take what the data
//! plane needs.
//!
//! - At most `[admin] max_connections` connections at once; more are closed as soon as they
//!   are accepted.
//! - None accepted once the process's open descriptors reach its limit minus the data plane's
//!   reserve ([`crate::net::fds::Budget`]): those are closed at once too.
//! - A request head has `header_timeout` from its first byte; a connection with no request
//!   under way and no head begun (silent from the start, or kept alive after an answer) is
//!   closed after `idle_timeout`. A request body may not stall either: no byte of it for
//!   `header_timeout` closes the connection. Otherwise a request under way (a drain that
//!   waits, say) is the handler's business.
//! - Accept backs off when descriptors run out ([`crate::net::accept::Backoff`]), never spinning.
//!
//! HTTP/1.1 through hyper's connection builder; each request carries its peer's
//! [`axum::extract::ConnectInfo`] as `axum::serve` would give it. With `[admin] tls`, each
//! connection is a TLS one first (its handshake within `header_timeout`; with `client_ca`,
//! only a client certificate that CA signed gets through); the limits above hold the same.

use crate::net::accept::{out_of_resources, Backoff};
use crate::net::fds::Budget;
use axum::extract::ConnectInfo;
use axum::Router;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How the admin listener limits its connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub budget: Budget,
}

impl ConnLimits {
    /// The limits `[admin]` sets, under the process's descriptor budget.
    pub fn new(admin: &crate::config::AdminSettings, budget: Budget) -> Self {
        ConnLimits {
            header_timeout: admin.header_timeout,
            idle_timeout: admin.idle_timeout,
            max_connections: admin.max_connections,
            budget,
        }
    }

    /// How often a connection's clock is looked at.
    fn tick(&self) -> Duration {
        (self.header_timeout.min(self.idle_timeout) / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
}

/// Serve `router` on `listener` under `limits` (over TLS with `tls`), for the process's life.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ConnLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Backoff::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff.succeeded();
                accepted
            }
            Err(e) if out_of_resources(&e) => {
                let (pause, first) = backoff.failed();
                if first {
                    tracing::warn!(error = %e, "admin: accept failed, backing off");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(_) => continue,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "admin: connection cap reached; closed");
            continue;
        };
        let fd = usize::try_from(tcp.as_raw_fd()).unwrap_or(usize::MAX);
        if !limits.budget.admin_may_take(fd) {
            tracing::debug!(%peer, "admin: descriptors reserved for the data plane; closed");
            continue;
        }
        let watched = Watched {
            tcp,
            activity: Arc::new(Activity::new()),
            _place: permit,
        };
        tokio::spawn(secured(watched, peer, router.clone(), limits, tls.clone()));
    }
}

/// Milliseconds since `base`, plus one (0 means "never").
fn stamp(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// What a connection has been doing, for its timeouts.
struct Activity {
    base: Instant,
    /// Requests handed to the router and not yet answered.
    in_flight: AtomicUsize,
    /// When the first byte of a head not yet handed over arrived (0: no head begun).
    head_since: AtomicU64,
    /// When the last byte moved or the last answer was given.
    last: AtomicU64,
    /// When the last byte was read.
    last_read: AtomicU64,
    /// Request bodies not yet read to their end.
    bodies: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        let base = Instant::now();
        Activity {
            base,
            in_flight: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            last: AtomicU64::new(stamp(base)),
            last_read: AtomicU64::new(stamp(base)),
            bodies: AtomicUsize::new(0),
        }
    }

    fn read(&self) {
        let now = stamp(self.base);
        self.last.store(now, Ordering::Release);
        self.last_read.store(now, Ordering::Release);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self
                .head_since
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn wrote(&self) {
        self.last.store(stamp(self.base), Ordering::Release);
    }

    fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    /// Why the connection should close now, if it should.
    fn expired(&self, limits: &ConnLimits) -> Option<&'static str> {
        let now = stamp(self.base);
        let since = |t: u64| Duration::from_millis(now.saturating_sub(t));
        if self.in_flight.load(Ordering::Acquire) > 0 {
            let stalled = self.bodies.load(Ordering::Acquire) > 0
                && since(self.last_read.load(Ordering::Acquire)) >= limits.header_timeout;
            return stalled.then_some("request body stalled");
        }
        match self.head_since.load(Ordering::Acquire) {
            0 if since(self.last.load(Ordering::Acquire)) >= limits.idle_timeout => Some("idle"),
            0 => None,
            t if since(t) >= limits.header_timeout => Some("request head timed out"),
            _ => None,
        }
    }
}

/// A request body, counted as pending until read to its end or dropped.
struct Tracked {
    body: hyper::body::Incoming,
    activity: Option<Arc<Activity>>,
}

impl Tracked {
    fn new(body: hyper::body::Incoming, activity: &Arc<Activity>) -> Self {
        use http_body::Body;
        let activity = (!body.is_end_stream()).then(|| {
            activity.bodies.fetch_add(1, Ordering::AcqRel);
            activity.clone()
        });
        Tracked { body, activity }
    }

    fn ended(&mut self) {
        if let Some(a) = self.activity.take() {
            a.bodies.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.ended();
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || self.body.is_end_stream() {
            self.ended();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request under way; its end is activity.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's socket, noting its activity; it holds the connection's place under the
/// cap for as long as it is open.
struct Watched {
    tcp: tokio::net::TcpStream,
    activity: Arc<Activity>,
    _place: OwnedSemaphorePermit,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Serve one admin connection, after its TLS handshake when the listener has TLS.
async fn secured(
    watched: Watched,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let _ = watched.tcp.set_nodelay(true);
    let activity = watched.activity.clone();
    let Some(acceptor) = tls else {
        return connection(watched, activity, peer, router, limits).await;
    };
    match tokio::time::timeout(limits.header_timeout, acceptor.accept(watched)).await {
        Ok(Ok(io)) => connection(io, activity, peer, router, limits).await,
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin: TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "admin: TLS handshake timed out"),
    }
}

/// Serve one admin connection until it ends or times out.
async fn connection<S>(
    io: S,
    activity: Arc<Activity>,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let watch = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let under_way = watch.request();
        let mut req = req.map(|body| Tracked::new(body, &watch));
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        async move {
            let answer = tower_service::Service::call(&mut router, req).await;
            drop(under_way);
            answer
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut tick = tokio::time::interval(limits.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "admin connection ended");
                }
                return;
            }
            _ = tick.tick() => {
                if let Some(why) = activity.expired(&limits) {
                    // Dropping the connection closes its socket: nothing is under way.
                    tracing::debug!(%peer, why, "admin connection closed");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_expires_after_the_header_timeout() {
        let a = Arc::new(Activity::new());
        a.read();
        let _under_way = a.request();
        a.bodies.fetch_add(1, Ordering::AcqRel);
        tokio::time::advance(Duration::from_millis(900)).await;
        a.read();
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(a.expired(&limits()), None);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(a.expired(&limits()), Some("request body stalled"));
        a.bodies.fetch_sub(1, Ordering::AcqRel);
        assert_eq!(a.expired(&limits()), None);
    }

    fn limits() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
            budget: Budget::new(None, None),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_expires_after_the_idle_timeout() {
        let a = Activity::new();
        tokio::time::advance(Duration::from_millis(4900)).await;
        assert_eq!(a.expired(&limits()), None);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(a.expired(&limits()), Some("idle"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_begun_head_has_the_header_timeout_from_its_first_byte() {
        let a = Activity::new();
        tokio::time::advance(Duration::from_secs(3)).await;
        a.read();
        tokio::time::advance(Duration::from_millis(900)).await;
        a.read();
        assert_eq!(a.expired(&limits()), None);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(a.expired(&limits()), Some("request head timed out"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_under_way_never_expires_and_its_answer_restarts_the_idle_clock() {
        let a = Arc::new(Activity::new());
        a.read();
        let under_way = a.request();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(a.expired(&limits()), None);
        drop(under_way);
        tokio::time::advance(Duration::from_millis(4900)).await;
        assert_eq!(a.expired(&limits()), None);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(a.expired(&limits()), Some("idle"));
    }
}
