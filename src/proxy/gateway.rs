//! The front door of an HTTP listener. pingora hands us each accepted connection raw; we read
//! each request head first. A WebSocket upgrade is served by [`super::websocket`]; an ordinary
//! request by tideway's own [`super::exchange`]; anything unusual is put back (rewound) into the
//! stream and handed, untouched, to pingora's HTTP proxy. After a keep-alive request the next
//! head is inspected the same way (pingora hands its connections back too).

use super::exchange::{Buffers, HttpPath, Next};
use super::head::{read_head, HeadRead};
use super::http::{Router, DEFAULT_UPSTREAM_IDLE};
use super::keepalive::{Keepalive, DEFAULT_IDLE_PER_BACKEND};
use super::message::{inspect_request, Inspected};
use super::route::Route;
use super::tls::{local, peer, Terminator, TlsConn};
use super::websocket;
use crate::config::{Balance, UpstreamPolicy};
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

/// How long a new connection may take to send its first request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a keep-alive connection may idle between requests (pingora's default too).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);

/// How long closing a client connection may take (a TLS close_notify to send).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one HTTP listener.
pub struct Gateway {
    http: Arc<HttpProxy<Router>>,
    path: HttpPath,
    /// Starts the idle-connection sweeper on the first connection (inside pingora's runtime).
    sweeper: std::sync::Once,
    route: Route,
    tls: Option<Terminator>,
}

impl Gateway {
    pub fn new(http: HttpProxy<Router>, route: Route, tls: Option<Terminator>) -> Self {
        let keepalive = Keepalive::new(DEFAULT_IDLE_PER_BACKEND, DEFAULT_UPSTREAM_IDLE);
        Gateway {
            http: Arc::new(http),
            path: HttpPath::new(route.clone(), keepalive),
            sweeper: std::sync::Once::new(),
            route,
            tls,
        }
    }

    /// Inspect a complete request head against the current snapshot: what serves it, and the
    /// upstream's policy (None when the upstream does not exist).
    fn inspect(
        &self,
        head: &[u8],
        client: Option<std::net::IpAddr>,
        out: &mut Vec<u8>,
    ) -> (Inspected, Option<Arc<UpstreamPolicy>>) {
        let snap = self.route.pool.load();
        let policy = self.route.upstream(&snap).ok().map(|u| u.policy.clone());
        let hash = policy
            .as_deref()
            .filter(|p| p.balance == Balance::Hash)
            .map(|p| &p.hash_key);
        let inspected = inspect_request(head, client, self.route.proto, hash, out);
        (inspected, policy)
    }
}

/// Put bytes back in front of a stream (plain TCP or tideway's TLS) so the next reader sees
/// them again.
fn rewind(stream: Stream, bytes: &[u8]) -> Option<Stream> {
    let any = stream.into_any();
    let any = match any.downcast::<L4Stream>() {
        Ok(mut l4) => {
            l4.rewind(bytes);
            return Some(l4);
        }
        Err(other) => other,
    };
    match any.downcast::<TlsConn>() {
        Ok(mut tls) => {
            tls.rewind(bytes);
            Some(tls)
        }
        Err(_) => {
            tracing::error!("cannot rewind this stream type; dropping the connection");
            None
        }
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
        self.sweeper
            .call_once(|| Keepalive::spawn_sweeper(&self.path.keepalive));
        let (me, shutdown) = (self.clone(), shutdown.clone());
        tokio::spawn(async move { me.serve(stream, shutdown).await });
        None
    }

    async fn cleanup(&self) {
        self.http.http_cleanup().await;
    }
}

impl Gateway {
    /// Serve one connection: every request on it, or the WebSocket it becomes.
    async fn serve(self: Arc<Self>, stream: Stream, shutdown: ShutdownWatch) -> Option<()> {
        let (peer_addr, local_addr) = (peer(&stream), local(&stream));
        let mut stream = match &self.tls {
            None => stream,
            // Boxed: the handshake's state is large and only needed while it runs.
            Some(t) => match Box::pin(t.accept(stream)).await {
                Ok(conn) => Box::new(conn) as Stream,
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return None;
                }
            },
        };
        let mut settings = None;
        let mut served = false;
        let mut bufs = Buffers::default();
        let ip = peer_addr.map(|a| a.ip());
        let mut stop = std::pin::pin!(stopped(shutdown.clone()));
        let mut stopping = false;
        loop {
            let wait = if served {
                DEFAULT_KEEPALIVE
            } else {
                DEFAULT_HEADER_TIMEOUT
            };
            let head = loop {
                tokio::select! {
                    biased;
                    r = tokio::time::timeout(wait, read_head(&mut stream, &mut bufs.client)) => break r,
                    // Shutting down: an idle keep-alive connection closes now, not at the end
                    // of the grace period; a request already arriving is still read and served
                    // (with `Connection: close`). `stop` is never polled again once it fired.
                    _ = &mut stop, if served && !stopping => {
                        stopping = true;
                        if bufs.client.is_empty() {
                            let end = tokio::io::AsyncWriteExt::shutdown(&mut stream);
                            let _ = tokio::time::timeout(CLOSE_TIMEOUT, end).await;
                            return None;
                        }
                    }
                }
            };
            let inspected = match head {
                Ok(Ok(HeadRead::Complete(len))) => {
                    let (what, policy) = self.inspect(&bufs.client[..len], ip, &mut bufs.out);
                    Some((what, policy, len))
                }
                Ok(Ok(HeadRead::TooLarge)) => None,
                _ => return None,
            };
            served = true;
            match inspected {
                Some((Inspected::WebSocket, _, len)) => {
                    // The WebSocket lives on in a task of its own, sized for it alone: this
                    // connection's task (pingora's, sized for every kind of request) ends.
                    let raw = std::mem::take(&mut bufs.client);
                    let route = self.route.clone();
                    tokio::spawn(async move {
                        websocket::serve(&route, stream, raw, len, peer_addr, local_addr).await;
                    });
                    return None;
                }
                Some((Inspected::Forward(mut req), policy, len)) => {
                    req.close |= *shutdown.borrow();
                    let next = self
                        .path
                        .forward(&mut stream, &mut bufs, len, req, policy)
                        .await;
                    match next {
                        Next::KeepAlive => bufs.reset(),
                        Next::Close => {
                            // A clean end: TLS sends its close_notify, TCP its FIN.
                            let end = tokio::io::AsyncWriteExt::shutdown(&mut stream);
                            let _ = tokio::time::timeout(CLOSE_TIMEOUT, end).await;
                            return None;
                        }
                        // A cut response: no close_notify, so a TLS client sees the cut.
                        Next::Abort => return None,
                    }
                    continue;
                }
                Some((Inspected::Pingora, _, _)) | None => {}
            }
            stream = rewind(stream, &bufs.client)?;
            bufs.client.clear();
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => pingora::apps::HttpPersistentSettings::apply_to_session(s, &mut session),
                None => session.set_keepalive(Some(DEFAULT_KEEPALIVE.as_secs())),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let reused = self.http.process_new_http(session, &shutdown).await?;
            let (s, st) = reused.consume();
            stream = s;
            settings = st;
        }
    }
}
