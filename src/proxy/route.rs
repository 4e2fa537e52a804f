//! What a listener serves: one upstream of the pool.

use crate::config::ProxyProtocol;
use crate::pool::backend::ActiveGuard;
use crate::pool::{Backend, BackendId, Diff, Live, PoolHandle, Snapshot, Upstream};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// What a tunnel (WebSocket or TCP) needs from its upstream's policy, read once.
#[derive(Clone, Copy, Debug)]
pub struct TunnelPolicy {
    pub retries: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_fails: u32,
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// A backend connection for a tunnel, counted as active until dropped.
pub struct Connected {
    pub io: TcpStream,
    pub guard: ActiveGuard,
    pub close: CancellationToken,
    pub id: BackendId,
}

/// A listener's binding to an upstream.
#[derive(Clone)]
pub struct Route {
    pub pool: PoolHandle,
    pub upstream: Arc<str>,
    /// Scheme for X-Forwarded-Proto.
    pub proto: &'static str,
}

/// Why no backend could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum NoBackend {
    #[error("no upstream named {0:?}")]
    UnknownUpstream(String),
    #[error("no available backend in upstream {0:?}")]
    NoneAvailable(String),
}

impl Route {
    /// The upstream as of the current snapshot.
    pub fn upstream<'s>(&self, snap: &'s Snapshot) -> Result<&'s Arc<Upstream>, NoBackend> {
        snap.upstream(&self.upstream)
            .ok_or_else(|| NoBackend::UnknownUpstream(self.upstream.to_string()))
    }

    /// Pick a backend for a request with key hash `key`, skipping the ids in `tried`.
    pub fn pick<'s>(
        &self,
        snap: &'s Snapshot,
        key: u32,
        tried: &[BackendId],
    ) -> Result<&'s Backend, NoBackend> {
        let up = self.upstream(snap)?;
        up.pick(key, |b| tried.contains(&b.id))
            .ok_or_else(|| NoBackend::NoneAvailable(self.upstream.to_string()))
    }
}

impl Route {
    /// The tunnel policy of this route's upstream and the request key hash, computed by
    /// `key` from the upstream's hash key.
    pub fn tunnel_policy(
        &self,
        key: impl FnOnce(&Upstream) -> u32,
    ) -> Result<(TunnelPolicy, u32), NoBackend> {
        let snap = self.pool.load();
        let up = self.upstream(&snap)?;
        let p = &up.policy;
        Ok((
            TunnelPolicy {
                retries: p.retries,
                connect_timeout: p.connect_timeout,
                idle_timeout: p.idle_timeout,
                max_fails: p.passive.max_fails,
                proxy_protocol: p.proxy_protocol,
            },
            key(up),
        ))
    }

    /// Connect to a backend for key hash `key`, retrying on another backend when connecting
    /// fails, and send the PROXY protocol header when the upstream asks for one.
    pub async fn connect(
        &self,
        key: u32,
        policy: &TunnelPolicy,
        client: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) -> Result<Connected, String> {
        let mut tried: Vec<BackendId> = Vec::new();
        loop {
            let picked = {
                let snap = self.pool.load();
                self.pick(&snap, key, &tried)
                    .map(|b| (b.id.clone(), b.addr, b.live.begin(), b.close.clone()))
            };
            let (id, addr, guard, close) = picked.map_err(|e| e.to_string())?;
            let why = match tokio::time::timeout(policy.connect_timeout, TcpStream::connect(addr))
                .await
            {
                Ok(Ok(mut io)) => {
                    let _ = io.set_nodelay(true);
                    let header = match (policy.proxy_protocol, client, local) {
                        (Some(v), Some(c), Some(l)) => Some(super::proxy_protocol::header(v, c, l)),
                        _ => None,
                    };
                    match header {
                        Some(h) => match io.write_all(&h).await {
                            Ok(()) => {
                                return Ok(Connected {
                                    io,
                                    guard,
                                    close,
                                    id,
                                })
                            }
                            Err(e) => format!("sending the PROXY header: {e}"),
                        },
                        None => {
                            return Ok(Connected {
                                io,
                                guard,
                                close,
                                id,
                            })
                        }
                    }
                }
                Ok(Err(e)) => format!("connect: {e}"),
                Err(_) => "connect timed out".to_string(),
            };
            tracing::warn!(upstream = %self.upstream, backend = %id, %addr, error = %why, "backend connect failed");
            self.failed(guard.live(), &id, policy.max_fails, &why);
            tried.push(id);
            if tried.len() as u32 > policy.retries {
                return Err("no backend could be reached".into());
            }
        }
    }

    /// Passive health: count a failure of backend `id`; at `max_fails` in a row (0 = off),
    /// ask the controller to eject it.
    pub fn failed(&self, live: &Live, id: &BackendId, max_fails: u32, why: &str) {
        let streak = live.record_failure();
        if max_fails > 0 && streak == u64::from(max_fails) {
            self.pool.notify(Diff::Eject {
                upstream: self.upstream.to_string(),
                id: id.clone(),
                reason: format!("{streak} failures in a row, last: {why}"),
            });
        }
    }
}

/// JSON error body, as everywhere in tideway.
pub fn error_body(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}

/// The client's IP, if the stream is a TCP socket.
pub fn client_ip(digest: Option<&pingora::protocols::l4::socket::SocketAddr>) -> Option<IpAddr> {
    digest.and_then(|a| a.as_inet()).map(|a| a.ip())
}
