//! What a listener serves: one upstream of the pool.

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

/// How one attempt on a backend failed before the client got anything.
#[derive(Debug)]
pub enum Failure {
    /// Sending the request failed: the backend did not get it whole.
    Unsent(String),
    /// The backend closed without a byte of answer.
    Unanswered(String),
    /// The backend answered too slowly, or with something that cannot be forwarded: the
    /// client gets this status.
    Answered(u16, String),
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
    ) -> impl std::future::Future<Output = Result<Self::Output, Failure>> + Send;
}

/// The attempt of a tunnel: being connected is all it takes.
pub struct Connect;

impl Attempt for Connect {
    type Output = ();
    async fn attempt(&mut self, _: &mut Conn) -> Result<(), Failure> {
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
            if let Some(own) = (!reused).then(|| self.pool.own().reaches(addr)).flatten() {
                crate::metrics::failure(&self.upstream, "loop");
                tracing::warn!(upstream = %self.upstream, backend = %id, %addr, %own, "backend is tideway's own listener; not connecting");
                return Err((
                    508,
                    format!("loop detected: backend {id} ({addr}) is tideway's own listener {own}"),
                ));
            }
            let io = match pooled {
                Some(io) => io,
                None => match self.open(addr, policy, how.client, how.local).await {
                    Ok(io) => io,
                    Err(why) => {
                        crate::metrics::failure(&self.upstream, "connect");
                        tracing::warn!(upstream = %self.upstream, backend = %id, %addr, error = %why, "backend connect failed");
                        self.failed(guard.live(), &id, max_fails, &why);
                        tried.push(id);
                        if tried.len() as u32 > policy.retries {
                            return Err((502, "no backend could be reached".into()));
                        }
                        continue;
                    }
                },
            };
            let mut conn = Conn {
                io,
                id,
                addr,
                guard,
                close,
                reused,
            };
            let failed = match attempt.attempt(&mut conn).await {
                Ok(t) => return Ok((t, conn)),
                Err(failed) => failed,
            };
            let Conn {
                id,
                addr,
                guard,
                close,
                ..
            } = conn;
            // A pooled connection gone stale is not the backend's fault: retry on a fresh one
            // to the same backend, if the request cannot have been acted on twice.
            let stale_retry = match &failed {
                Failure::Unsent(_) => true,
                Failure::Unanswered(_) => how.idempotent,
                Failure::Answered(..) => false,
            };
            if reused && how.replayable && stale_retry && stale < MAX_STALE_RETRIES {
                stale += 1;
                again = Some((id, addr, guard, close));
                continue;
            }
            crate::metrics::failure(
                &self.upstream,
                match &failed {
                    Failure::Unsent(_) => "send",
                    Failure::Unanswered(_) => "unanswered",
                    Failure::Answered(504, _) => "timeout",
                    Failure::Answered(..) => "bad_response",
                },
            );
            let (status, why, next_backend) = match failed {
                Failure::Unsent(why) => (502, why, true),
                Failure::Unanswered(why) => (502, why, how.idempotent),
                Failure::Answered(status, why) => (status, why, false),
            };

            tracing::warn!(upstream = %self.upstream, backend = %id, %addr, error = %why, "backend failed the request");
            self.failed(guard.live(), &id, max_fails, &why);
            tried.push(id);
            if !(next_backend && how.replayable) || tried.len() as u32 > policy.retries {
                return Err((status, format!("backend failed: {why}")));
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
    ) -> Result<TcpStream, String> {
        let started = std::time::Instant::now();
        let mut io =
            match tokio::time::timeout(policy.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => return Err(format!("connect: {e}")),
                Err(_) => return Err("connect timed out".into()),
            };
        let _ = io.set_nodelay(true);
        if let (Some(v), Some(c), Some(l)) = (policy.proxy_protocol, client, local) {
            let header = super::proxy_protocol::header(v, c, l);
            io.write_all(&header)
                .await
                .map_err(|e| format!("sending the PROXY header: {e}"))?;
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
