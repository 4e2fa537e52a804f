//! WebSocket upgrades, handled by tideway rather than pingora: pick a backend by the request's
//! key, replay the handshake to it with the forwarding headers, relay its answer, and after a
//! 101 run the connection through a [`Tunnel`] (no 60 s read timeout, no per-connection buffer,
//! a 1001 close frame when tideway closes it).

use super::head::{read_head, response_status, HeadRead, UpgradeHead};
use super::key::request_hash;
use super::route::{error_body, Connected, Route};
use super::tunnel::Tunnel;
use pingora::protocols::Stream;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long the backend may take to answer the upgrade.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve one upgrade request whose head is `raw[..head_len]`.
pub async fn serve(
    route: &Route,
    mut client: Stream,
    raw: Vec<u8>,
    head_len: usize,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
) {
    let Some(head) = UpgradeHead::parse(&raw[..head_len]) else {
        let _ = client
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    let early = raw[head_len..].to_vec();
    drop(raw);
    let ip = peer.map(|p| p.ip());

    let (policy, key) = match route
        .tunnel_policy(|up| request_hash(&up.policy.hash_key, ip, head.query(), |n| head.header(n)))
    {
        Ok(p) => p,
        Err(e) => return reject(&mut client, &e.to_string()).await,
    };
    let Connected {
        io: mut backend_io,
        guard,
        close,
        id,
    } = match route.connect(key, &policy, peer, local).await {
        Ok(c) => c,
        Err(e) => return reject(&mut client, &e).await,
    };

    let out = head.to_backend(ip, route.proto);
    drop(head);
    if backend_io.write_all(&out).await.is_err()
        || (!early.is_empty() && backend_io.write_all(&early).await.is_err())
    {
        route.failed(
            guard.live(),
            &id,
            policy.max_fails,
            "closed during the handshake",
        );
        return reject(&mut client, "backend closed during the handshake").await;
    }
    drop(out);
    drop(early);

    let mut resp = Vec::new();
    let answered = tokio::time::timeout(
        DEFAULT_HANDSHAKE_TIMEOUT,
        read_head(&mut backend_io, &mut resp),
    )
    .await;
    let resp_len = match answered {
        Ok(Ok(HeadRead::Complete(n))) => n,
        _ => {
            route.failed(
                guard.live(),
                &id,
                policy.max_fails,
                "no answer to the upgrade",
            );
            return reject(&mut client, "backend did not answer the upgrade").await;
        }
    };
    guard.live().record_success();
    let switched = response_status(&resp[..resp_len]) == Some(101);
    if client.write_all(&resp).await.is_err() || client.flush().await.is_err() {
        return;
    }
    let mut tunnel = Tunnel::new(client, backend_io, policy.idle_timeout, close, switched);
    if switched {
        tunnel.already_sent_down(&resp[resp_len..]);
    }
    drop(resp);
    super::tunnel::finish(&route.upstream, tunnel.await);
    drop(guard);
}

pub(super) async fn reject(client: &mut Stream, msg: &str) {
    let body = error_body(msg);
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
    let _ = client.shutdown().await;
}
