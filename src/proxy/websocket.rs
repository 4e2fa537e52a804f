//! WebSocket upgrades, handled by tideway rather than pingora: pick a backend by the request's
//! key, replay the handshake to it with the forwarding headers, relay its answer, and after a
//! 101 run the connection through a [`Tunnel`] (no 60 s read timeout, no per-connection buffer,
//! a 1001 close frame when tideway closes it).

use super::head::{read_head, response_status, HeadRead, UpgradeHead};
use super::key::request_hash;
use super::route::{error_body, Route};
use super::tunnel::{Tunnel, TunnelEnd};
use crate::pool::BackendId;
use pingora::protocols::Stream;
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long the backend may take to answer the upgrade.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve one upgrade request whose head is `raw[..head_len]`.
pub async fn serve(
    route: &Route,
    mut client: Stream,
    raw: Vec<u8>,
    head_len: usize,
    ip: Option<IpAddr>,
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

    let (key, retries, connect_timeout, idle, max_fails) = {
        let snap = route.pool.load();
        match route.upstream(&snap) {
            Ok(up) => (
                request_hash(&up.policy.hash_key, ip, head.query(), |n| head.header(n)),
                up.policy.retries,
                up.policy.connect_timeout,
                up.policy.idle_timeout,
                up.policy.passive.max_fails,
            ),
            Err(e) => return reject(&mut client, &e.to_string()).await,
        }
    };

    // Connect, retrying on another backend when connecting fails.
    let mut tried: Vec<BackendId> = Vec::new();
    let (backend_io, guard, close, id) = loop {
        let picked = {
            let snap = route.pool.load();
            route
                .pick(&snap, key, &tried)
                .map(|b| (b.id.clone(), b.addr, b.live.begin(), b.close.clone()))
        };
        let (id, addr, guard, close) = match picked {
            Ok(p) => p,
            Err(e) => return reject(&mut client, &e.to_string()).await,
        };
        match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                break (s, guard, close, id);
            }
            Ok(Err(e)) => {
                tracing::warn!(backend = %id, %addr, error = %e, "websocket connect failed");
                route.failed(guard.live(), &id, max_fails, &format!("connect: {e}"));
            }
            Err(_) => {
                tracing::warn!(backend = %id, %addr, "websocket connect timed out");
                route.failed(guard.live(), &id, max_fails, "connect timed out");
            }
        }
        tried.push(id);
        if tried.len() as u32 > retries {
            return reject(&mut client, "no backend could be reached").await;
        }
    };
    let mut backend_io = backend_io;

    let out = head.to_backend(ip, route.proto);
    drop(head);
    if backend_io.write_all(&out).await.is_err()
        || (!early.is_empty() && backend_io.write_all(&early).await.is_err())
    {
        route.failed(guard.live(), &id, max_fails, "closed during the handshake");
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
            route.failed(guard.live(), &id, max_fails, "no answer to the upgrade");
            return reject(&mut client, "backend did not answer the upgrade").await;
        }
    };
    guard.live().record_success();
    let switched = response_status(&resp[..resp_len]) == Some(101);
    if client.write_all(&resp).await.is_err() || client.flush().await.is_err() {
        return;
    }
    let mut tunnel = Tunnel::new(client, backend_io, idle, close, switched);
    if switched {
        tunnel.already_sent_down(&resp[resp_len..]);
    }
    drop(resp);
    let reason = match tunnel.await {
        TunnelEnd::Closed => "closed",
        TunnelEnd::Idle => "idle",
        TunnelEnd::Signalled => "signalled",
        TunnelEnd::Error(e) => {
            tracing::debug!(error = %e, "websocket tunnel ended with an error");
            "error"
        }
    };
    crate::metrics::global()
        .tunnels_ended
        .with_label_values(&[&*route.upstream, reason])
        .inc();
    drop(guard);
}

async fn reject(client: &mut Stream, msg: &str) {
    let body = error_body(msg);
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(resp.as_bytes()).await;
    let _ = client.shutdown().await;
}
