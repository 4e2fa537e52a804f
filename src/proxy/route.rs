//! What a listener serves: one upstream of the pool.

use super::error::{Error, Failure, Kind, NoBackend, Retry, Side};
use super::keepalive::Keepalive;
use crate::balance::Key;
use crate::config::{NextUpstream, UpstreamPolicy};
use crate::net::backend::{handshake, BackendIo};
use crate::pool::admission::Pending;
use crate::pool::backend::ActiveGuard;
use crate::pool::sticky::StickyId;
use crate::pool::{Backend, BackendId, Live, PoolHandle, Snapshot, Upstream, Verdict};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A connection to a backend for one attempt, counted as active until dropped.
pub struct Conn {
    pub io: BackendIo,
    pub id: BackendId,
    pub addr: SocketAddr,
    pub guard: ActiveGuard,
    /// Cancelled to close tunnels to this backend (drain deadline, shutdown).
    pub close: CancellationToken,
    /// Taken from the idle pool rather than opened for this attempt.
    pub reused: bool,
    /// Failures that eject this backend (its own `max_fails`, or the upstream's).
    pub max_fails: u32,
    /// Its `fail_timeout` (its own, or the upstream's): a success resets the failures only
    /// once this has passed since the last one, as in nginx.
    pub fail_timeout: std::time::Duration,
    /// A handshake upgrade admission let through, until its answer arrives (the attempt
    /// drops it then).
    pub pending: Option<Pending>,
}

/// What the retry loop needs to know about a request.
pub struct Attempts<'a> {
    /// The sticky key.
    pub key: Key,
    /// The backend the request's sticky cookie names (upstreams with `sticky`): tried first.
    pub sticky: Option<StickyId>,
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
    /// Upgrade admission judges this request ([`super::admission::gated`]); None: off.
    pub admission: Option<&'a crate::config::AdmissionConfig>,
}

/// One try of a request on a backend connection, run by [`Route::attempts`]. `more`: an
/// answer whose status `next_upstream` lists may go on to another backend (return
/// [`Error::answered`] before any of it reaches the client); otherwise it is the answer.
pub trait Attempt {
    type Output;
    fn attempt(
        &mut self,
        conn: &mut Conn,
        more: bool,
    ) -> impl std::future::Future<Output = Result<Self::Output, Error>> + Send;

    /// Wait for `admission` (the backend's upgrade admission) while watching the client:
    /// None when the client goes away first. By default the client is not watched.
    fn queued<F>(
        &mut self,
        admission: F,
    ) -> impl std::future::Future<Output = Option<F::Output>> + Send
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        async move { Some(admission.await) }
    }
}

/// The attempt of a tunnel: being connected is all it takes.
pub struct Connect;

impl Attempt for Connect {
    type Output = ();
    async fn attempt(&mut self, _: &mut Conn, _: bool) -> Result<(), Error> {
        Ok(())
    }
}

/// Retries on the same backend when a reused keep-alive connection turns out stale.
pub const MAX_STALE_RETRIES: u32 = 2;

/// How many times a client waiting for upgrade admission is sent to another backend when
/// the one it waits for is drained or removed; after that it is refused (503).
pub const MAX_REPICKS: u32 = 2;

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

impl Route {
    /// The upstream as of the current snapshot.
    pub fn upstream<'s>(&self, snap: &'s Snapshot) -> Result<&'s Arc<Upstream>, NoBackend> {
        snap.upstream(&self.upstream)
            .ok_or_else(|| NoBackend::UnknownUpstream(self.upstream.to_string()))
    }

    /// Pick a backend for a request with `key`, skipping the ids in `tried`: the one its
    /// `sticky` cookie names when it can take the request, else the balancer's choice.
    pub fn pick<'s>(
        &self,
        snap: &'s Snapshot,
        (key, sticky): (Key, Option<StickyId>),
        tried: &[BackendId],
    ) -> Result<&'s Backend, NoBackend> {
        let up = self.upstream(snap)?;
        let pick = |exclude: &dyn Fn(&Backend) -> bool| {
            let named = sticky
                .filter(|_| up.policy.sticky.is_some())
                .and_then(|v| up.sticky(v, exclude));
            named.or_else(|| up.pick_key(key, exclude))
        };
        let open = |b: &Backend| tried.contains(&b.id) || b.at_capacity();
        // A backend that reached `max_fails` is passed by until the controller's verdict is
        // in the snapshot; when every one has, the pick is as if none had.
        pick(&|b| open(b) || b.tripped(&up.policy))
            .or_else(|| pick(&open))
            .ok_or_else(|| NoBackend::NoneAvailable(self.upstream.to_string()))
    }
}

impl Route {
    /// The retry loop, the one for HTTP requests and tunnels alike (nginx's
    /// `proxy_next_upstream`): pick a backend, reuse an idle connection to it or open one
    /// (sending a PROXY protocol header when the upstream asks), and run `attempt` on it. A
    /// failure the backend caused counts toward its passive health (a listed 403 or 404 does
    /// not), and goes on to the next backend when the upstream's `next_upstream` lists it and
    /// the request can go: a connection never made took none of it; otherwise the request must
    /// be in hand, and idempotent unless `non_idempotent` is listed. At most `retries` more
    /// backends are tried, and none after `next_upstream_timeout`. A pooled connection that
    /// turns out stale is retried on a fresh connection to the same backend, so a sticky
    /// request stays put. On success the connection is handed back with `attempt`'s result;
    /// otherwise the [`Failure`] says what the client gets. A failure the client provoked
    /// never goes to another backend.
    pub async fn attempts<A: Attempt>(
        &self,
        how: Attempts<'_>,
        attempt: &mut A,
    ) -> Result<(A::Output, Conn), Failure> {
        // A PROXY protocol header names one client: such connections are never shared.
        let keepalive = how
            .keepalive
            .filter(|_| how.policy.proxy_protocol.is_none());
        let mut tries = Tries {
            started: std::time::Instant::now(),
            tried: Vec::new(),
            stale: 0,
            beyond: false,
        };
        let mut again: Option<Picked> = None;
        loop {
            let fresh = again.is_some();
            let picked = match again.take() {
                Some(same) => same,
                None => self.pick_admitted(&how, &mut tries, attempt).await?,
            };
            let pooled = keepalive.filter(|_| !fresh);
            let (failed, picked, reused) =
                match self.try_one(picked, pooled, &how, &tries, attempt).await {
                    Ok(done) => return Ok(done),
                    Err(failed) => failed,
                };
            // A pooled connection gone stale is not the backend's fault: retry on a fresh one
            // to the same backend, if the request cannot have been acted on twice.
            if reused
                && how.replayable
                && failed.stale_retry(how.idempotent)
                && tries.stale < MAX_STALE_RETRIES
            {
                tries.stale += 1;
                again = Some(picked);
                continue;
            }
            self.judge(failed, picked, &how, &mut tries)?;
        }
    }

    /// Pick the backend for the next attempt and, under upgrade admission, wait for its place
    /// there (a refusal blames no backend). The backend counts the request as active only
    /// once it is admitted: waiters fill no backend's `max_conns`. A client whose backend is
    /// closed (its drain deadline, its removal) while it waits, or is no longer active when
    /// its place comes (drained, disabled, removed), is sent to a backend picked anew, at
    /// most [`MAX_REPICKS`] times; the place it leaves goes to the next client.
    async fn pick_admitted<A: Attempt>(
        &self,
        how: &Attempts<'_>,
        tries: &mut Tries,
        attempt: &mut A,
    ) -> Result<Picked, Failure> {
        // One branch when admission is off.
        let Some(cfg) = how.admission else {
            return self.pick_next(how, tries).map(|c| c.begin(None));
        };
        for _ in 0..=MAX_REPICKS {
            let chosen = self.pick_next(how, tries)?;
            let place = super::admission::wait(&self.pool, &chosen.live, cfg, attempt);
            let admitted = tokio::select! {
                place = place => Some(place),
                () = chosen.close.cancelled() => None,
            };
            if let Some(place) = admitted {
                let place = place?;
                if self.active(&chosen.id) {
                    return Ok(chosen.begin(Some(place)));
                }
            }
        }
        Err(Failure::Busy(cfg.retry_after_secs(rand::random())))
    }

    /// Is backend `id` still in the pool and active?
    fn active(&self, id: &BackendId) -> bool {
        let snap = self.pool.load();
        self.upstream(&snap).is_ok_and(|u| {
            u.backends
                .iter()
                .any(|b| &b.id == id && b.state == crate::pool::backend::State::Active)
        })
    }

    /// Pick the backend for the next attempt (skipping those tried), and note whether there
    /// is one for an attempt after it.
    fn pick_next(&self, how: &Attempts<'_>, tries: &mut Tries) -> Result<Chosen, Failure> {
        let snap = self.pool.load();
        match self.pick(&snap, (how.key, how.sticky), &tries.tried) {
            Ok(b) => {
                tries.beyond = self.upstream(&snap).is_ok_and(|u| {
                    u.backends
                        .iter()
                        .filter(|b| b.state == crate::pool::backend::State::Active)
                        .nth(tries.tried.len() + 1)
                        .is_some()
                });
                Ok(Chosen {
                    id: b.id.clone(),
                    addr: b.addr,
                    live: b.live.clone(),
                    close: b.close.clone(),
                    max_fails: b.max_fails(how.policy),
                    fail_timeout: b.fail_timeout(how.policy),
                })
            }
            Err(e) if tries.tried.is_empty() => Err(self.count(Failure::NoBackend(e))),
            Err(_) => Err(Failure::Exhausted),
        }
    }

    /// Run `attempt` on a connection to `picked`: an idle one from `keepalive` when it holds
    /// one, else a new one. A failure hands `picked` back, with whether the connection was a
    /// pooled one.
    async fn try_one<A: Attempt>(
        &self,
        picked: Picked,
        keepalive: Option<&Keepalive>,
        how: &Attempts<'_>,
        tries: &Tries,
        attempt: &mut A,
    ) -> Result<(A::Output, Conn), (Error, Picked, bool)> {
        let policy = how.policy;
        let addr = picked.addr;
        let pooled = keepalive.and_then(|k| k.take(super::keepalive::pool_key(addr, policy)));
        let reused = pooled.is_some();
        // A backend that is tideway's own listener would nest requests without end: 508,
        // and not the backend's failure.
        let own = (!reused).then(|| self.pool.own().reaches(addr)).flatten();
        let opened = match (pooled, own) {
            (_, Some(own)) => Err(Error::looped(format!(
                "loop detected: backend {} ({addr}) is tideway's own listener {own}",
                picked.id
            ))),
            (Some(io), None) => Ok(io),
            (None, None) => self.open(addr, policy, how.client, how.local).await,
        };
        // May an answer with a listed status go on after this attempt?
        let more = tries.beyond
            && may_go_on(how, tries.tried.len() + 1, tries.started)
            && how.replayable
            && (how.idempotent || policy.next_upstream.has(NextUpstream::NON_IDEMPOTENT));
        let io = match opened {
            Ok(io) => io,
            Err(failed) => return Err((failed, picked, reused)),
        };
        let mut conn = picked.connected(io, reused);
        match attempt.attempt(&mut conn, more).await {
            Ok(t) => Ok((t, conn)),
            Err(failed) => Err((failed, Picked::left(conn), reused)),
        }
    }

    /// After the attempt on `picked` failed: count the failure, blame the backend when it
    /// caused it, and say whether the request goes on to another backend (`Ok`) or the client
    /// gets the failure.
    fn judge(
        &self,
        failed: Error,
        picked: Picked,
        how: &Attempts<'_>,
        tries: &mut Tries,
    ) -> Result<(), Failure> {
        let Picked {
            id,
            addr,
            guard,
            max_fails,
            ..
        } = picked;
        crate::metrics::failure(&self.upstream, failed.label());
        if failed.side() != Side::Backend {
            // Provoked by the request (or tideway's own configuration): the backend is not
            // blamed and the request goes nowhere else.
            tracing::info!(upstream = %self.upstream, backend = %id, %addr, side = ?failed.side(), error = %failed, "request failed, backend not blamed");
            return Err(Failure::Attempt(failed));
        }
        if failed.counts() {
            tracing::warn!(upstream = %self.upstream, backend = %id, %addr, error = %failed, "backend failed the request");
            self.failed(guard.live(), &id, max_fails, &failed.to_string());
        } else {
            tracing::info!(upstream = %self.upstream, backend = %id, %addr, error = %failed, "next backend (not a failure)");
        }
        tries.tried.push(id);
        if !goes_on(&failed, how) || !may_go_on(how, tries.tried.len(), tries.started) {
            return Err(Failure::Attempt(failed));
        }
        Ok(())
    }

    /// Count `failure` in `tideway_upstream_failures_total`, under the reason its type names.
    fn count(&self, failure: Failure) -> Failure {
        if let Some(reason) = failure.label() {
            crate::metrics::failure(&self.upstream, reason);
        }
        failure
    }

    /// Open a connection to a backend, with the PROXY protocol header when the upstream asks
    /// (before TLS, as nginx sends it), then TLS when the upstream has it. The connect
    /// timeout covers the handshake too. A failed handshake (an untrusted certificate, a
    /// name it does not cover) is the backend's failure to connect.
    async fn open(
        &self,
        addr: SocketAddr,
        policy: &UpstreamPolicy,
        client: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) -> Result<BackendIo, Error> {
        let started = std::time::Instant::now();
        let mut io =
            match tokio::time::timeout(policy.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => return Err(Error::connecting(&e)),
                Err(_) => return Err(Error::connect_timeout()),
            };
        let _ = io.set_nodelay(true);
        if let (Some(v), Some(c), Some(l)) = (policy.proxy_protocol, client, local) {
            let header = super::proxy_protocol::header(v, c, l);
            io.write_all(&header)
                .await
                .map_err(|e| Error::connect(format!("sending the PROXY header: {e}")))?;
        }
        let io = match &policy.tls {
            None => BackendIo::Plain(io),
            Some(tls) => {
                let shaking = handshake(io, tls.client.clone(), tls.server_name(addr.ip()));
                let left = policy.connect_timeout.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, shaking).await {
                    Ok(Ok(io)) => io,
                    Ok(Err(e)) => return Err(Error::connect(format!("TLS handshake: {e}"))),
                    Err(_) => return Err(Error::connect_timeout()),
                }
            }
        };
        self.metrics
            .connect
            .observe(started.elapsed().as_secs_f64());
        Ok(io)
    }

    /// Passive health: count a failure of backend `id`; at `max_fails` failures not reset by
    /// a success (0 = off), ask the controller to eject it.
    pub fn failed(&self, live: &Live, id: &BackendId, max_fails: u32, why: &str) {
        let streak = live.record_failure();
        if max_fails > 0 && streak == u64::from(max_fails) {
            let reason = format!("{streak} failures, last: {why}");
            self.pool
                .report(&self.upstream, id.clone(), Verdict::Eject { reason });
        }
    }
}

/// Where the retry loop stands.
struct Tries {
    started: std::time::Instant,
    /// The backends tried so far (a stale-connection retry stays on one).
    tried: Vec<BackendId>,
    /// Pooled connections found stale so far.
    stale: u32,
    /// Is there a backend for another attempt after this one? nginx's `peer.tries` counts
    /// every server of the upstream but a `down` one: the most attempts there can be. The
    /// scan stops at the first backend beyond the attempts so far.
    beyond: bool,
}

/// A backend chosen for the next attempt, before it counts the request as active.
struct Chosen {
    id: BackendId,
    addr: SocketAddr,
    live: std::sync::Arc<Live>,
    close: CancellationToken,
    max_fails: u32,
    fail_timeout: std::time::Duration,
}

impl Chosen {
    /// The request starts on this backend (its active count and requests), with the place
    /// upgrade admission gave it.
    fn begin(self, pending: Option<Pending>) -> Picked {
        Picked {
            id: self.id,
            addr: self.addr,
            guard: self.live.begin(),
            close: self.close,
            max_fails: self.max_fails,
            fail_timeout: self.fail_timeout,
            pending,
        }
    }
}

/// A picked backend, for one attempt.
struct Picked {
    id: BackendId,
    addr: SocketAddr,
    guard: ActiveGuard,
    close: CancellationToken,
    max_fails: u32,
    fail_timeout: std::time::Duration,
    pending: Option<Pending>,
}

impl Picked {
    /// The connection of an attempt on this backend (`reused`: taken from the idle pool).
    fn connected(self, io: BackendIo, reused: bool) -> Conn {
        Conn {
            io,
            id: self.id,
            addr: self.addr,
            guard: self.guard,
            close: self.close,
            reused,
            max_fails: self.max_fails,
            fail_timeout: self.fail_timeout,
            pending: self.pending,
        }
    }

    /// The backend of a failed attempt's connection; the connection itself is closed.
    fn left(conn: Conn) -> Picked {
        Picked {
            id: conn.id,
            addr: conn.addr,
            guard: conn.guard,
            close: conn.close,
            max_fails: conn.max_fails,
            fail_timeout: conn.fail_timeout,
            pending: conn.pending,
        }
    }
}

/// The `next_upstream` condition that must be listed for `failed` to go on (0: none).
fn condition(failed: &Error) -> u32 {
    match failed.kind() {
        Kind::Connect | Kind::Send | Kind::Unanswered => NextUpstream::ERROR,
        Kind::ConnectTimeout => NextUpstream::CONNECT_TIMEOUT,
        Kind::Timeout => NextUpstream::TIMEOUT,
        Kind::BadResponse | Kind::WrongAccept => NextUpstream::INVALID_HEADER,
        _ => 0,
    }
}

/// May the request go on after `failed` (a backend's failure), as far as the failure and the
/// request go?
fn goes_on(failed: &Error, how: &Attempts<'_>) -> bool {
    let nu = how.policy.next_upstream;
    // A status error is made only when the status is listed and the request may go on.
    if failed.kind() != Kind::Status && !nu.has(condition(failed)) {
        return false;
    }
    match failed.retry() {
        // A connection never made took none of the request: any request may go on.
        _ if matches!(failed.kind(), Kind::Connect | Kind::ConnectTimeout) => true,
        Retry::Anywhere => how.replayable,
        Retry::IfIdempotent => {
            how.replayable && (how.idempotent || nu.has(NextUpstream::NON_IDEMPOTENT))
        }
        Retry::Never => false,
    }
}

/// May attempt number `done + 1` start, as far as `retries` and `next_upstream_timeout` go?
fn may_go_on(how: &Attempts<'_>, done: usize, started: std::time::Instant) -> bool {
    let policy = how.policy;
    done as u64 <= u64::from(policy.retries)
        && policy
            .next_upstream_timeout
            .is_none_or(|t| started.elapsed() < t)
}

/// JSON error body, as everywhere in tideway.
pub fn error_body(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn how(policy: &UpstreamPolicy, idempotent: bool, replayable: bool) -> Attempts<'_> {
        Attempts {
            key: Key::default(),
            sticky: None,
            policy,
            keepalive: None,
            replayable,
            idempotent,
            client: None,
            local: None,
            admission: None,
        }
    }

    #[test]
    fn next_upstream_decides_only_for_backend_failures() {
        let all = [
            "error",
            "timeout",
            "invalid_header",
            "http_502",
            "non_idempotent",
        ];
        let policy = UpstreamPolicy {
            next_upstream: NextUpstream::parse(all).unwrap(),
            ..UpstreamPolicy::default()
        };
        // Whatever is listed, a failure the client provoked stays with its backend.
        for e in [
            Error::unasked_upgrade(),
            Error::bad_response("x", true),
            Error::cut_body("x"),
            Error::looped("x"),
        ] {
            assert!(!goes_on(&e, &how(&policy, true, true)), "{e:?}");
        }
        assert!(goes_on(&Error::timeout(), &how(&policy, false, true)));
        assert!(
            !goes_on(&Error::timeout(), &how(&policy, true, false)),
            "body streamed"
        );
        // The default: connect failures go on, read timeouts and bad answers do not.
        let default = UpstreamPolicy::default();
        assert!(goes_on(
            &Error::connect_timeout(),
            &how(&default, false, false)
        ));
        assert!(!goes_on(&Error::timeout(), &how(&default, true, true)));
        assert!(!goes_on(
            &Error::bad_response("x", false),
            &how(&default, true, true)
        ));
        assert!(
            !goes_on(&Error::unanswered("x"), &how(&default, false, true)),
            "POST"
        );
        let off = UpstreamPolicy {
            next_upstream: NextUpstream::OFF,
            ..UpstreamPolicy::default()
        };
        assert!(!goes_on(&Error::connect("x"), &how(&off, true, true)));
    }

    #[test]
    fn tries_and_the_timeout_bound_the_attempts() {
        let policy = UpstreamPolicy {
            retries: 2,
            next_upstream_timeout: Some(std::time::Duration::from_millis(50)),
            ..UpstreamPolicy::default()
        };
        let now = std::time::Instant::now();
        assert!(may_go_on(&how(&policy, true, true), 2, now));
        assert!(!may_go_on(&how(&policy, true, true), 3, now));
        let long_ago = now - std::time::Duration::from_millis(60);
        assert!(!may_go_on(&how(&policy, true, true), 1, long_ago));
    }
}
