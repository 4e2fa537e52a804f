//! What a listener serves: one upstream of the pool.

use crate::pool::{Backend, BackendId, Diff, Live, PoolHandle, Snapshot, Upstream};
use std::net::IpAddr;
use std::sync::Arc;

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
