//! A WebSocket after its handshake. The handshake itself is an ordinary exchange
//! ([`super::exchange`]): only a valid one is forwarded with its Upgrade, and only the
//! backend's 101 switches. From there the connection is a [`Tunnel`]: no 60 s read timeout,
//! no per-connection buffer, a 1001 close frame when tideway closes it. On an upstream with
//! `rebalance`, the tunnel is registered in the pool's sessions, with a close signal of its own.
//!
//! An idle WebSocket costs what its task holds, so the task holds little: [`start`] does the
//! setup before the task exists, and the task's future is the relay, its [`Ending`] and the
//! guards that must live as long as it does; nothing else from the handshake.

use super::exchange::Upgraded;
use super::route::Route;
use super::tunnel::{Ending, Logged, Tunnel};
use pingora::protocols::Stream;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What the tunnel takes over from the connection it was.
pub struct Setup {
    /// What the client sent behind its handshake, held back until the 101: sent first.
    pub early: Vec<u8>,
    pub idle: Duration,
    /// Pings and send timeout.
    pub liveness: crate::config::Liveness,
    /// The policy of an upstream with `rebalance`: the tunnel registers so the rebalancer can
    /// move it (with the key the upstream hashes by, if it hashes).
    pub rebalanced: Option<Arc<crate::config::UpstreamPolicy>>,
    pub client_ip: Option<std::net::IpAddr>,
    /// The connection's places (process and listener), held until the tunnel ends (None: an
    /// HTTP/2 stream, whose connection holds them).
    pub permit: Option<super::gateway::Places>,
    /// The client's per-client connection counts, held until the tunnel ends.
    pub held: super::limit::Held,
    /// With the access log on, the handshake its line shows.
    pub handshake: Option<super::access::Handshake>,
    /// How the client opened it (one of [`crate::metrics::websocket::PROTOCOLS`]).
    pub protocol: &'static str,
}

/// Set up the tunnel from `client` to the backend that switched (`up`), and return the future
/// that runs it, to be spawned as it is: wrapping it in another future would store it twice.
pub fn start(
    route: &Route,
    client: Stream,
    up: Upgraded,
    setup: Setup,
) -> impl Future<Output = ()> + Send + 'static {
    let Setup {
        early,
        idle,
        liveness,
        rebalanced,
        client_ip,
        permit,
        held,
        handshake,
        protocol,
    } = setup;
    let Upgraded {
        conn,
        down,
        key,
        keyed,
    } = up;
    let ending = Ending::new(route, client_ip, conn.addr, true).logging(Logged {
        backend_id: conn.id.clone(),
        handshake,
    });
    let (close, session) = match rebalanced {
        Some(policy) => {
            let hashed_by = (policy.balance == crate::config::Balance::Hash && keyed)
                .then(|| policy.hash_key.clone());
            let (close, guard) = route.pool.sessions().open(
                &route.upstream,
                conn.id.clone(),
                key,
                hashed_by,
                &conn.close,
            );
            (close, Some(guard))
        }
        None => (conn.close, None),
    };
    route.metrics.tunnel.opened(protocol);
    let guard = conn.guard;
    let plain_client = client.as_any().is::<crate::net::inbound::Inbound>();
    let plain_backend = matches!(conn.io, crate::net::backend::BackendIo::Plain(_));
    let mut tunnel = Tunnel::new(client, conn.io, idle, close, true)
        .plain_tcp(plain_client, plain_backend)
        .counting(guard.live().clone(), route.metrics.tunnel.clone())
        .keeping(&liveness);
    // The client's bytes behind its handshake came before the backend's behind its 101: a
    // close in both is the client's (as the tunnel's unit test has it).
    if !early.is_empty() {
        tunnel.send_first(early);
    }
    tunnel.already_sent_down(&down);
    drop(down);
    async move {
        let end = (&mut tunnel).await;
        ending.report(end, tunnel.finish());
        drop(session);
        drop(guard);
        drop(permit);
        drop(held);
    }
}
