//! A WebSocket after its handshake. The handshake itself is an ordinary exchange
//! ([`super::exchange`]): only a valid one is forwarded with its Upgrade, and only the
//! backend's 101 switches. From there the connection is a [`Tunnel`]: no 60 s read timeout,
//! no per-connection buffer, a 1001 close frame when tideway closes it. On an upstream with
//! `rebalance`, the tunnel is registered in the pool's sessions, with a close signal of its own.

use super::access::TunnelRecord;
use super::exchange::{Upgraded, DEFAULT_SEND_TIMEOUT};
use super::route::Route;
use super::tunnel::{finish, Tunnel};
use pingora::protocols::Stream;
use std::time::Duration;

/// Tunnel `client` to the backend that switched. `early` holds what the client sent behind
/// its handshake, held back until the 101 and sent now. `rebalanced`: the policy of an upstream
/// with `rebalance`; the tunnel registers so the rebalancer can move it (with the key the
/// upstream hashes by, if it hashes).
pub async fn tunnel(
    route: &Route,
    client: Stream,
    early: Vec<u8>,
    up: Upgraded,
    idle: Duration,
    rebalanced: Option<std::sync::Arc<crate::config::UpstreamPolicy>>,
    client_ip: Option<std::net::IpAddr>,
) {
    let started = std::time::Instant::now();
    let Upgraded { conn, down, key } = up;
    let (close, session) = match rebalanced {
        Some(policy) => {
            let hashed_by =
                (policy.balance == crate::config::Balance::Hash).then(|| policy.hash_key.clone());
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
    let mut io = conn.io;
    let record = |up: u64, down: u64| TunnelRecord {
        client: client_ip,
        upstream: &route.upstream,
        backend: conn.addr,
        kind: "websocket",
        up,
        down,
        duration: started.elapsed(),
        end: "",
    };
    if !early.is_empty() {
        if let Err(e) = super::body::send(&mut io, &early, DEFAULT_SEND_TIMEOUT).await {
            finish(route, record(0, 0), super::tunnel::TunnelEnd::Error(e));
            return;
        }
    }
    let mut tunnel = Tunnel::new(client, io, idle, close, true).counting(conn.guard.live().clone());
    tunnel.already_sent_down(&down);
    tunnel.already_sent_up(&early);
    drop((down, early));
    let end = (&mut tunnel).await;
    let (up, down) = tunnel.moved();
    let rec = record(up, down);
    drop(tunnel);
    finish(route, rec, end);
    drop(session);
    drop(conn.guard);
}
