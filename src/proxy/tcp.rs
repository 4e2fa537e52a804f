//! TCP (L4) listeners: each connection becomes a byte tunnel to a backend of the upstream,
//! picked by the client address (so `hash` keeps a client on one backend), with the same
//! health, drain and PROXY protocol handling as WebSocket tunnels.

use super::key::ip_hash;
use super::limit::ClientLimits;
use super::route::{Attempts, Connect, Route};
use super::tls::{local, peer};
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
    /// Per-client connection limits: a socket over one is closed.
    clients: ClientLimits,
}

impl TcpGateway {
    pub fn new(route: Route, turned_away: Arc<AtomicBool>) -> Self {
        TcpGateway {
            route,
            turned_away,
            clients: ClientLimits::default(),
        }
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
        if self.turned_away.load(Ordering::Acquire) {
            return None;
        }
        let me = self.clone();
        tokio::spawn(async move { me.serve(client).await });
        None
    }
}

impl TcpGateway {
    async fn serve(self: Arc<Self>, mut client: Stream) {
        let (peer, local) = (peer(&client), local(&client));
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
            key: ip_hash(peer.map(|p| p.ip())),
            policy: &policy,
            keepalive: None,
            replayable: true,
            idempotent: true,
            client: peer,
            local,
        };
        let conn = match self.route.attempts(how, &mut Connect).await {
            Ok(((), conn)) => conn,
            Err((_, e)) => {
                tracing::warn!(upstream = %self.route.upstream, error = %e, "tcp: no backend");
                let _ = client.shutdown().await;
                return;
            }
        };
        conn.guard.live().record_success();
        let ending = Ending::new(&self.route, peer.map(|p| p.ip()), conn.addr, false);
        let mut tunnel = Tunnel::new(client, conn.io, policy.idle_timeout, conn.close, false)
            .counting(conn.guard.live().clone());
        let end = (&mut tunnel).await;
        let moved = tunnel.moved();
        drop(tunnel);
        ending.report(end, moved);
        drop(conn.guard);
    }
}
