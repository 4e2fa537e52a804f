//! One active check against one backend: a TCP connect, an HTTP GET with an expected status,
//! or a real WebSocket upgrade that must answer 101. An upstream with TLS is checked over TLS,
//! with the same handshake as its traffic ([`crate::net::backend`]): a `tcp` check passes
//! only once the handshake does.

use crate::config::upstream_tls::UpstreamTls;
use crate::config::{HealthConfig, HealthKind};
use crate::net::backend::{handshake, BackendIo};
use crate::net::wire::{read_head, response_status, HeadRead};
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Run one check (over `tls` when the upstream has it); `Err` says why it failed.
pub async fn probe(
    cfg: &HealthConfig,
    tls: Option<&UpstreamTls>,
    addr: SocketAddr,
) -> Result<(), String> {
    match tokio::time::timeout(cfg.timeout, run(cfg, tls, addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{:?} check timed out after {:?}",
            cfg.kind, cfg.timeout
        )),
    }
}

async fn run(
    cfg: &HealthConfig,
    tls: Option<&UpstreamTls>,
    addr: SocketAddr,
) -> Result<(), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut s = match tls {
        None => BackendIo::Plain(tcp),
        Some(t) => handshake(tcp, t.client.clone(), t.server_name(addr.ip()))
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?,
    };
    let host = match tls.and_then(|t| t.settings.server_name.as_deref()) {
        Some(name) => name.to_string(),
        None => addr.to_string(),
    };
    let request = match cfg.kind {
        HealthKind::None | HealthKind::Tcp => return Ok(()),
        HealthKind::Http => format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tideway-health\r\nConnection: close\r\n\r\n",
            cfg.path
        ),
        HealthKind::Websocket => format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tideway-health\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            cfg.path
        ),
    };
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    s.flush().await.map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let len = match read_head(&mut s, &mut buf).await {
        Ok(HeadRead::Complete(n)) => n,
        Ok(HeadRead::BareCr) => return Err("a bare CR in the response head".into()),
        Ok(_) => return Err("no complete response head".into()),
        Err(e) => return Err(format!("read: {e}")),
    };
    let status = response_status(&buf[..len]).ok_or("unparsable response head")?;
    let ok = match cfg.kind {
        HealthKind::Websocket => status == 101,
        _ => (cfg.expect.0..=cfg.expect.1).contains(&status),
    };
    if cfg.kind == HealthKind::Websocket && ok {
        // Say goodbye properly: a masked close frame, 1000.
        let _ = s.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]).await;
        let _ = s.flush().await;
    }
    if ok {
        Ok(())
    } else if cfg.kind == HealthKind::Websocket {
        Err(format!(
            "websocket handshake answered {status}, expected 101"
        ))
    } else {
        Err(format!(
            "status {status}, expected {}-{}",
            cfg.expect.0, cfg.expect.1
        ))
    }
}
