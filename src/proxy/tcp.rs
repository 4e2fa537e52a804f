//! TCP (L4) listeners: each connection becomes a byte tunnel to a backend of the upstream,
//! picked by the client address (so `hash` keeps a client on one backend), with the same
//! health, drain and PROXY protocol handling as WebSocket tunnels.

use super::client::Addressing;
use super::key::ip_key;
use super::limit::ClientLimits;
use super::listener::{ListenerCount, Refusal as ListenerRefusal};
use super::proxy_protocol::receive::DEFAULT_PROXY_HEADER_TIMEOUT;
use super::route::{Attempts, Connect, Route};
use super::tunnel::{Ending, Tunnel};
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Serves one TCP listener.
pub struct TcpGateway {
    route: Route,
    /// Set while a reload has removed this listener: new connections are closed at once.
    turned_away: Arc<AtomicBool>,
    /// Where the real client address comes from (a PROXY header, when expected).
    addressing: Addressing,
    /// Per-client connection limits: a socket over one is closed.
    clients: ClientLimits,
    /// The listener's connections (under its `max_connections`: one over is closed) and series.
    counts: ListenerCount,
}

impl TcpGateway {
    pub fn new(route: Route, turned_away: Arc<AtomicBool>) -> Self {
        TcpGateway {
            route,
            turned_away,
            addressing: Addressing::default(),
            clients: ClientLimits::default(),
            counts: ListenerCount::detached(0),
        }
    }

    /// Learn client addresses as `addressing` says (by default: the socket's peer).
    pub fn with_addressing(mut self, addressing: Addressing) -> Self {
        self.addressing = addressing;
        self
    }

    /// Count connections (and cap them) with `counts`, the listener's.
    pub fn counted(mut self, counts: ListenerCount) -> Self {
        self.counts = counts;
        self
    }

    /// The same gateway, counting each client's sockets in these zones (`client_limits`).
    pub fn limited(self, limits: &[crate::config::ClientLimit]) -> Self {
        TcpGateway {
            clients: ClientLimits::new(limits),
            ..self
        }
    }
}

#[async_trait]
impl ServerApp for TcpGateway {
    /// The tunnel runs in a task of its own, sized for it alone (pingora's connection task is
    /// sized for all of its accept path).
    async fn process_new(
        self: &Arc<Self>,
        client: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.counts.accepted();
        if self.turned_away.load(Ordering::Acquire) {
            return None;
        }
        // A full process, or a full listener, closes the connection.
        let Some(place) = crate::net::fds::proxied().try_take() else {
            self.counts.refused(ListenerRefusal::Process);
            return None;
        };
        let listener = self.counts.take()?;
        let me = self.clone();
        tokio::spawn(async move {
            me.serve(client).await;
            drop((place, listener));
        });
        None
    }
}

impl TcpGateway {
    async fn serve(self: Arc<Self>, client: Stream) {
        let timeout = DEFAULT_PROXY_HEADER_TIMEOUT;
        let (mut client, peers) = match self.addressing.accept(client, timeout).await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "tcp: connection refused");
                return;
            }
        };
        // The real client: what hashing, the PROXY header and the log go by.
        let peer = peers.client;
        let Ok(_held) = self.clients.conn(peer.map(|p| p.ip())) else {
            let _ = client.shutdown().await;
            return;
        };
        let policy = {
            let snap = self.route.pool.load();
            match self.route.upstream(&snap) {
                Ok(up) => up.policy.clone(),
                Err(e) => {
                    tracing::warn!(error = %e, "tcp: no upstream");
                    return;
                }
            }
        };
        let how = Attempts {
            key: ip_key(peer.map(|p| p.ip())),
            sticky: None,
            policy: &policy,
            keepalive: None,
            replayable: true,
            idempotent: true,
            client: peer,
            local: peers.local,
            admission: None,
        };
        let conn = match self.route.attempts(how, &mut Connect).await {
            Ok(((), conn)) => conn,
            Err(e) => {
                tracing::warn!(upstream = %self.route.upstream, error = %e, "tcp: no backend");
                let _ = client.shutdown().await;
                return;
            }
        };
        conn.guard.live().record_success(conn.fail_timeout);
        let ending = Ending::new(&self.route, peer.map(|p| p.ip()), conn.addr, false).logging(
            super::tunnel::Logged {
                backend_id: conn.id.clone(),
                handshake: None,
            },
        );
        let mut tunnel = Tunnel::new(client, conn.io, policy.idle_timeout, conn.close, false)
            .counting(conn.guard.live().clone(), self.route.metrics.tunnel.clone())
            .keeping(&policy.liveness);
        let end = (&mut tunnel).await;
        ending.report(end, tunnel.finish());
        drop(conn.guard);
    }
}
