//! The front door of an HTTP listener. pingora hands us each accepted connection raw; we read
//! each request head first. A WebSocket upgrade is served by [`super::websocket`]; anything else
//! is put back (rewound) into the stream and handed, untouched, to pingora's HTTP proxy. After a
//! keep-alive request, pingora hands the connection back and the next head is inspected too.

use super::head::{is_websocket_upgrade, read_head, HeadRead};
use super::http::Router;
use super::route::Route;
use super::tls::{local, peer, Terminator, TlsConn};
use super::websocket;
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

/// Serves one HTTP listener.
pub struct Gateway {
    http: Arc<HttpProxy<Router>>,
    route: Route,
    tls: Option<Terminator>,
}

impl Gateway {
    pub fn new(http: HttpProxy<Router>, route: Route, tls: Option<Terminator>) -> Self {
        Gateway {
            http: Arc::new(http),
            route,
            tls,
        }
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

#[async_trait]
impl ServerApp for Gateway {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let (peer_addr, local_addr) = (peer(&stream), local(&stream));
        let mut stream = match &self.tls {
            None => stream,
            Some(t) => match t.accept(stream).await {
                Ok(conn) => Box::new(conn) as Stream,
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return None;
                }
            },
        };
        let mut settings = None;
        loop {
            let wait = if settings.is_some() {
                DEFAULT_KEEPALIVE
            } else {
                DEFAULT_HEADER_TIMEOUT
            };
            let mut buf = Vec::new();
            let head = tokio::time::timeout(wait, read_head(&mut stream, &mut buf)).await;
            match head {
                Ok(Ok(HeadRead::Complete(len))) if is_websocket_upgrade(&buf[..len]) => {
                    websocket::serve(&self.route, stream, buf, len, peer_addr, local_addr).await;
                    return None;
                }
                Ok(Ok(HeadRead::Complete(_) | HeadRead::TooLarge)) => {}
                _ => return None,
            }
            stream = rewind(stream, &buf)?;
            drop(buf);
            let mut session = ServerSession::new_http1(stream);
            match settings.take() {
                Some(s) => pingora::apps::HttpPersistentSettings::apply_to_session(s, &mut session),
                None => session.set_keepalive(Some(DEFAULT_KEEPALIVE.as_secs())),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let reused = self.http.process_new_http(session, shutdown).await?;
            let (s, st) = reused.consume();
            stream = s;
            settings = st;
        }
    }

    async fn cleanup(&self) {
        self.http.http_cleanup().await;
    }
}
