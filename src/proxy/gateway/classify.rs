//! The gateway's classify step: a request head, as either front door gives it (HTTP/1 bytes,
//! or an HTTP/2 stream's typed parts), against the listener's routes and the current
//! snapshot, through the one classifier ([`crate::proxy::request`]).

use super::super::access;
use super::super::dispatch::Routes;
use super::super::request::{
    classify_logged, classify_parts, Parts, Refusal, Request, Steer, Version,
};
use super::super::request_id::RequestId;
use super::super::tls::Identity;
use super::Gateway;
use crate::config::{Balance, UpstreamPolicy};
use crate::routing::Pick;
use std::sync::Arc;

/// What the request parser found for a request its route answers itself: the Host (or an
/// absolute-form target's authority) and the origin-form target, for a Location.
#[derive(Default)]
pub(super) struct Asked {
    pub(super) host: Option<String>,
    pub(super) target: String,
}

/// A request head as a front door gives it: `head_len` bytes of the connection's buffer
/// (HTTP/1), or typed parts (an HTTP/2 stream's).
#[derive(Clone, Copy)]
pub(super) enum Src<'p> {
    Raw(usize),
    Typed(&'p Parts<'p, 'p>),
}

impl Src<'_> {
    /// How many bytes of the client buffer the head takes.
    pub(super) fn len(self) -> usize {
        match self {
            Src::Raw(n) => n,
            Src::Typed(_) => 0,
        }
    }
}

/// A request classified against a listener's routes.
pub(super) struct Classified {
    pub(super) req: Request,
    pub(super) pick: Pick,
    /// The route's upstream policy (None: the upstream does not exist, or the route does not
    /// proxy).
    pub(super) policy: Option<Arc<UpstreamPolicy>>,
    /// For a route that does not proxy.
    pub(super) asked: Option<Asked>,
}

/// A head to classify: HTTP/1 bytes, or an HTTP/2 stream's parts.
pub(super) enum HeadIn<'a> {
    Raw(&'a [u8]),
    Typed(&'a Parts<'a, 'a>),
}

/// The version of an HTTP/1 head the classifier refused (`HTTP/1.0` at the end of its first
/// line; anything else counts as HTTP/1.1).
pub(super) fn http1_version(head: &[u8]) -> Version {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    if line.trim_ascii_end().ends_with(b"HTTP/1.0") {
        Version::Http10
    } else {
        Version::Http11
    }
}

impl Gateway {
    /// Classify a complete request head against `routes` and the current snapshot, writing
    /// the backend's head into `out` and, when the access log is on, what it shows of the head
    /// into `log`.
    pub(super) fn classify(
        &self,
        routes: &Routes,
        head: HeadIn<'_>,
        (client, local, tls): (
            Option<std::net::SocketAddr>,
            Option<std::net::SocketAddr>,
            Option<&Identity>,
        ),
        (out, log, id): (&mut Vec<u8>, Option<&mut access::Head>, &RequestId),
    ) -> Result<Classified, Refusal> {
        let snap = self.route.pool.load();
        let mut pick = Pick::NotFound;
        let mut policy = None;
        let mut asked = None;
        let steer = |host: Option<&[u8]>, target: &str| {
            let sent = host;
            // On TLS, a request without Host is for the name the connection was made for.
            let sni = tls.and_then(|t| t.sni.as_deref());
            let host = host.or(sni.map(str::as_bytes));
            pick = match tls {
                Some(t) if routes.table.misdirected(host, sni, |h| t.covers(h)) => {
                    Pick::Misdirected
                }
                _ => routes.table.select(host, target.as_bytes()),
            };
            let Some(p) = routes.proxy(pick) else {
                asked = Some(Asked {
                    host: sent.map(|h| String::from_utf8_lossy(h).into_owned()),
                    target: target.to_string(),
                });
                // A `return` gets its route's add_header lines (no backend head is sent).
                let Some((headers, server_name)) = routes.returned_headers(pick) else {
                    return Steer::default();
                };
                return Steer {
                    headers: Some(headers),
                    server_name,
                    port: local.map_or(0, |a| a.port()),
                    request_id: Some(id),
                    ..Steer::default()
                };
            };
            let up = p.route.upstream(&snap).ok();
            policy = up.map(|u| p.policy(&u.policy));
            let rewritten = p.uri.as_ref().and_then(|(prefix, uri)| {
                crate::routing::uri::replace_prefix(target.as_bytes(), prefix, uri).ok()
            });
            Steer {
                hash_key: up
                    .map(|u| &u.policy)
                    .filter(|p| p.balance == Balance::Hash)
                    .map(|p| &p.hash_key),
                default_host: &p.route.upstream,
                target: rewritten,
                websocket: p.settings.websocket.unwrap_or(true),
                sticky: up.and_then(|u| u.policy.sticky.as_ref()).map(|c| &*c.name),
                headers: p.settings.headers.as_deref(),
                server_name: &p.server_name,
                port: local.map_or(0, |a| a.port()),
                request_id: Some(id),
            }
        };
        let conn = (client, self.addressing.for_requests());
        let req = match head {
            HeadIn::Raw(raw) => classify_logged(raw, conn, self.route.proto, steer, out, log)?,
            HeadIn::Typed(parts) => {
                if let Some(log) = log {
                    *log = access::Head::of_parts(parts);
                }
                let len = parts.headers.len() * 32 + parts.target.len();
                classify_parts(parts, len, conn, self.route.proto, steer, out)?
            }
        };
        Ok(Classified {
            req,
            pick,
            policy,
            asked,
        })
    }
}
