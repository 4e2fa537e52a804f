//! Plain HTTP/1.1 requests, through pingora's `ProxyHttp`: pick a backend per request, keep
//! upstream connections alive, add the forwarding headers, and on a connect failure retry on
//! another backend.

use super::key::request_hash;
use super::route::{client_ip, error_body, Route};
use crate::pool::backend::ActiveGuard;
use crate::pool::BackendId;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;
use std::time::Duration;

/// How long an idle upstream keep-alive connection stays in pingora's pool.
pub const DEFAULT_UPSTREAM_IDLE: Duration = Duration::from_secs(60);

/// The `ProxyHttp` implementation of one listener.
pub struct Router {
    pub route: Route,
}

/// Per-request state.
#[derive(Default)]
pub struct RequestCtx {
    /// The backend of the current attempt; dropping it ends its active count.
    current: Option<(BackendId, std::net::SocketAddr, ActiveGuard)>,
    /// Backends that failed to connect for this request.
    tried: Vec<BackendId>,
    key: u32,
    retries: u32,
    connect_timeout: Duration,
    max_fails: u32,
    fail_on_5xx: bool,
    /// Retries on the same backend after a stale pooled connection.
    stale_retries: u32,
}

/// Retries on the same backend when a reused keep-alive connection turns out stale.
pub const MAX_STALE_RETRIES: u32 = 2;

impl Router {
    fn choose(
        &self,
        snap: &crate::pool::Snapshot,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), super::route::NoBackend> {
        let b = self.route.pick(snap, ctx.key, &ctx.tried)?;
        ctx.current = Some((b.id.clone(), b.addr, b.live.begin()));
        Ok(())
    }
}

#[async_trait]
impl ProxyHttp for Router {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// No downstream modules: pingora's default adds a (disabled) compression module whose
    /// per-request context costs CPU for nothing.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // One snapshot for the policy and the pick.
        let chosen = {
            let snap = self.route.pool.load();
            if let Ok(up) = self.route.upstream(&snap) {
                // Only `hash` looks at the key; the others skip the work.
                if up.policy.balance == crate::config::Balance::Hash {
                    let req = session.req_header();
                    let ip = client_ip(session.client_addr());
                    ctx.key = request_hash(&up.policy.hash_key, ip, req.uri.query(), |name| {
                        req.headers.get(name).map(|v| v.as_bytes())
                    });
                }
                ctx.retries = up.policy.retries;
                ctx.connect_timeout = up.policy.connect_timeout;
                ctx.max_fails = up.policy.passive.max_fails;
                ctx.fail_on_5xx = up.policy.passive.fail_on_5xx;
            }
            self.choose(&snap, ctx)
        };
        if let Err(e) = chosen {
            let body = error_body(&e.to_string());
            let mut resp = ResponseHeader::build(503, Some(3))?;
            resp.insert_header("content-type", "application/json")?;
            resp.insert_header("content-length", body.len().to_string())?;
            session.write_response_header(Box::new(resp), false).await?;
            session
                .write_response_body(Some(bytes::Bytes::from(body)), true)
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if ctx.current.is_none() {
            self.choose(&self.route.pool.load(), ctx)
                .map_err(|e| Error::explain(ErrorType::HTTPStatus(503), e.to_string()))?;
        }
        let (_, addr, _) = ctx.current.as_ref().expect("chosen above");
        let mut peer = HttpPeer::new(*addr, false, String::new());
        peer.options.connection_timeout = Some(ctx.connect_timeout);
        peer.options.idle_timeout = Some(DEFAULT_UPSTREAM_IDLE);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some((id, _, guard)) = ctx.current.take() {
            self.route
                .failed(guard.live(), &id, ctx.max_fails, &e.to_string());
            ctx.tried.push(id);
        }
        if ctx.tried.len() as u32 <= ctx.retries {
            e.set_retry(true);
        }
        e
    }

    /// pingora's policy (idempotent requests retry on a reused connection that broke), plus:
    /// a stale pooled connection is retried on the same backend (stickiness holds); other
    /// retried failures go to another backend.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        if e.retry() {
            if client_reused && ctx.stale_retries < MAX_STALE_RETRIES {
                // A pooled keep-alive connection had gone stale: not the backend's fault, so
                // retry the same backend on a fresh connection and keep the request sticky.
                ctx.stale_retries += 1;
            } else {
                if let Some((id, _, _)) = ctx.current.take() {
                    ctx.tried.push(id);
                }
                if ctx.tried.len() as u32 > ctx.retries {
                    e.set_retry(false);
                }
            }
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(ip) = client_ip(session.client_addr()) {
            let ip = ip.to_string();
            let chain = match req.headers.get("x-forwarded-for").map(|v| v.to_str()) {
                Some(Ok(prev)) if !prev.is_empty() => format!("{prev}, {ip}"),
                _ => ip.clone(),
            };
            req.insert_header("x-forwarded-for", chain)?;
            req.insert_header("x-real-ip", ip)?;
        }
        req.insert_header("x-forwarded-proto", self.route.proto)?;
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let Some((id, _, guard)) = ctx.current.take() else {
            return;
        };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        match e {
            Some(e) if e.esource() == &ErrorSource::Upstream => {
                self.route
                    .failed(guard.live(), &id, ctx.max_fails, &e.to_string())
            }
            _ if ctx.fail_on_5xx && status >= 500 => self.route.failed(
                guard.live(),
                &id,
                ctx.max_fails,
                &format!("answered {status}"),
            ),
            Some(_) => {}
            None => guard.live().record_success(),
        }
    }
}
