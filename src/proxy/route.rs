//! What a listener serves: one upstream of the pool.

use super::error::{Error, Kind, Retry};
use super::keepalive::Keepalive;
use crate::config::UpstreamPolicy;
use crate::pool::backend::ActiveGuard;
use crate::pool::{Backend, BackendId, Live, PoolHandle, Snapshot, Upstream, Verdict};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A connection to a backend for one attempt, counted as active until dropped.
pub struct Conn {
    pub io: TcpStream,
    pub id: BackendId,
    pub addr: SocketAddr,
    pub guard: ActiveGuard,
    /// Cancelled to close tunnels to this backend (drain deadline, shutdown).
    pub close: CancellationToken,
    /// Taken from the idle pool rather than opened for this attempt.
    pub reused: bool,
}

/// What the retry loop needs to know about a request.
pub struct Attempts<'a> {
    /// The sticky key hash.
    pub key: u32,
    pub policy: &'a UpstreamPolicy,
    /// Idle connections to reuse and return (HTTP; None for tunnels).
    pub keepalive: Option<&'a Keepalive>,
    /// The whole request is in hand, so it can be sent again.
    pub replayable: bool,
    /// Safe to send again after the backend may have received it.
    pub idempotent: bool,
    /// The client's and the listener's addresses, for a PROXY protocol header.
    pub client: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
}

/// One try of a request on a backend connection, run by [`Route::attempts`].
pub trait Attempt {
    type Output;
    fn attempt(
        &mut self,
        conn: &mut Conn,
    ) -> impl std::future::Future<Output = Result<Self::Output, Error>> + Send;
}

/// The attempt of a tunnel: being connected is all it takes.
pub struct Connect;

impl Attempt for Connect {
    type Output = ();
    async fn attempt(&mut self, _: &mut Conn) -> Result<(), Error> {
        Ok(())
    }
}

/// Retries on the same backend when a reused keep-alive connection turns out stale.
pub const MAX_STALE_RETRIES: u32 = 2;

/// A listener's binding to an upstream.
#[derive(Clone)]
pub struct Route {
    pub pool: PoolHandle,
    pub upstream: Arc<str>,
    /// Scheme for X-Forwarded-Proto.
    pub proto: &'static str,
    /// The upstream's histograms.
    pub metrics: crate::metrics::UpstreamMetrics,
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
        up.pick(key, |b| tried.contains(&b.id) || b.at_capacity())
            .ok_or_else(|| NoBackend::NoneAvailable(self.upstream.to_string()))
    }
}

impl Route {
    /// The retry loop, the one for HTTP requests and tunnels alike (nginx's
    /// `proxy_next_upstream error timeout`): pick a backend, reuse an idle connection to it or
    /// open one (sending a PROXY protocol header when the upstream asks), and run `attempt`
    /// on it. A backend that cannot be connected to counts as failed and the next one is tried,
    /// up to the upstream's `retries`; so is one that broke before answering a request that
    /// may be sent again. A pooled connection that turns out stale is retried on a fresh
    /// connection to the same backend, so a sticky request stays put. On success the
    /// connection is handed back with `attempt`'s result; `Err` is the status and message for
    /// the client.
    pub async fn attempts<A: Attempt>(
        &self,
        how: Attempts<'_>,
        attempt: &mut A,
    ) -> Result<(A::Output, Conn), (u16, String)> {
        let policy = how.policy;
        let max_fails = policy.passive.max_fails;
        // A PROXY protocol header names one client: such connections are never shared.
        let keepalive = how.keepalive.filter(|_| policy.proxy_protocol.is_none());
        let mut tried: Vec<BackendId> = Vec::new();
        let mut stale = 0;
        let mut again: Option<(BackendId, SocketAddr, ActiveGuard, CancellationToken)> = None;
        loop {
            let fresh = again.is_some();
            let (id, addr, guard, close) = match again.take() {
                Some(same) => same,
                None => {
                    let snap = self.pool.load();
                    match self.pick(&snap, how.key, &tried) {
                        Ok(b) => (b.id.clone(), b.addr, b.live.begin(), b.close.clone()),
                        Err(e) if tried.is_empty() => {
                            crate::metrics::failure(&self.upstream, "no_backend");
                            return Err((503, e.to_string()));
                        }
                        Err(_) => return Err((502, "no backend could be reached".into())),
                    }
                }
            };
            let pooled = keepalive.filter(|_| !fresh).and_then(|k| k.take(addr));
            let reused = pooled.is_some();
            // A backend that is tideway's own listener would nest requests without end: 508,
            // and not the backend's failure.
            let own = (!reused).then(|| self.pool.own().reaches(addr)).flatten();
            let opened = match (pooled, own) {
                (_, Some(own)) => Err(Error::looped(format!(
                    "loop detected: backend {id} ({addr}) is tideway's own listener {own}"
                ))),
                (Some(io), None) => Ok(io),
                (None, None) => self.open(addr, policy, how.client, how.local).await,
            };
            let failed = match opened {
                Ok(io) => {
                    let mut conn = Conn {
                        io,
                        id,
                        addr,
                        guard,
                        close,
                        reused,
                    };
                    match attempt.attempt(&mut conn).await {
                        Ok(t) => return Ok((t, conn)),
                        Err(failed) => {
                            let Conn {
                                id,
                                addr,
                                guard,
                                close,
                                ..
                            } = conn;
                            // A pooled connection gone stale is not the backend's fault:
                            // retry on a fresh one to the same backend, if the request cannot
                            // have been acted on twice.
                            if reused
                                && how.replayable
                                && failed.stale_retry(how.idempotent)
                                && stale < MAX_STALE_RETRIES
                            {
                                stale += 1;
                                again = Some((id, addr, guard, close));
                                continue;
                            }
                            (failed, id, addr, guard)
                        }
                    }
                }
                Err(failed) => (failed, id, addr, guard),
            };
            let (failed, id, addr, guard) = failed;
            crate::metrics::failure(&self.upstream, failed.label());
            if !failed.counts() {
                // Provoked by the request (or tideway's own configuration): the backend is
                // not blamed and the request goes nowhere else.
                tracing::info!(upstream = %self.upstream, backend = %id, %addr, side = ?failed.side(), error = %failed, "request failed, backend not blamed");
                return Err((failed.status(), format!("backend failed: {failed}")));
            }
            tracing::warn!(upstream = %self.upstream, backend = %id, %addr, error = %failed, "backend failed the request");
            self.failed(guard.live(), &id, max_fails, &failed.to_string());
            tried.push(id);
            // A connection never made took none of the request: any request may go on.
            let next_backend = match failed.retry() {
                _ if failed.kind() == Kind::Connect => true,
                Retry::Anywhere => how.replayable,
                Retry::IfIdempotent => how.idempotent && how.replayable,
                Retry::Never => false,
            };
            if !next_backend || tried.len() as u32 > policy.retries {
                return Err((failed.status(), format!("backend failed: {failed}")));
            }
        }
    }

    /// Open a connection to a backend, with the PROXY protocol header when the upstream asks.
    async fn open(
        &self,
        addr: SocketAddr,
        policy: &UpstreamPolicy,
        client: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) -> Result<TcpStream, Error> {
        let started = std::time::Instant::now();
        let mut io =
            match tokio::time::timeout(policy.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => return Err(Error::connecting(&e)),
                Err(_) => return Err(Error::connect("connect timed out")),
            };
        let _ = io.set_nodelay(true);
        if let (Some(v), Some(c), Some(l)) = (policy.proxy_protocol, client, local) {
            let header = super::proxy_protocol::header(v, c, l);
            io.write_all(&header)
                .await
                .map_err(|e| Error::connect(format!("sending the PROXY header: {e}")))?;
        }
        self.metrics
            .connect
            .observe(started.elapsed().as_secs_f64());
        Ok(io)
    }

    /// Passive health: count a failure of backend `id`; at `max_fails` in a row (0 = off),
    /// ask the controller to eject it.
    pub fn failed(&self, live: &Live, id: &BackendId, max_fails: u32, why: &str) {
        let streak = live.record_failure();
        if max_fails > 0 && streak == u64::from(max_fails) {
            let reason = format!("{streak} failures in a row, last: {why}");
            self.pool
                .report(&self.upstream, id.clone(), Verdict::Eject { reason });
        }
    }
}

/// JSON error body, as everywhere in tideway.
pub fn error_body(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}
