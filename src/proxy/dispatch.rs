//! A listener's routes as the data plane holds them: the [`crate::routing::Table`] that picks
//! a route for each request, and for each route what it does: proxy through its
//! [`Route`] (a binding to one upstream) with its own settings, or answer itself
//! (`return`, nginx's trailing-slash 301, 404).
//!
//! The routes of a listener sit in one [`SharedRoutes`]: every request loads the current
//! table (as it loads the pool snapshot), and a reload swaps in a new table as a whole. A
//! request, or a WebSocket tunnel, keeps the route it started on.

use super::route::Route;
use crate::config::UpstreamPolicy;
use crate::config::{routes::is_redirect, RouteAction, RouteSettings, ServerConfig};
use crate::pool::PoolHandle;
use crate::routing::{Pick, Table};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;

/// The current routes of one listener, swapped whole by a reload.
pub type SharedRoutes = Arc<ArcSwap<Routes>>;

/// A listener's route table and what each route does.
pub struct Routes {
    pub table: Table,
    pub entries: Vec<Entry>,
}

/// What one route does.
pub enum Entry {
    Proxy(Box<Proxy>),
    /// `return CODE [text|URL]`.
    Return {
        code: u16,
        text: Box<str>,
    },
    /// A location without a handler of its own.
    NotFound,
}

/// A route to an upstream.
pub struct Proxy {
    pub route: Route,
    /// proxy_pass's URI part and the location prefix it replaces.
    pub uri: Option<(Box<str>, Box<str>)>,
    pub settings: RouteSettings,
    /// The location's path, for nginx's trailing-slash redirect.
    pub path: Box<str>,
    /// The route's own per-client limits (None: the listener's).
    pub clients: Option<super::limit::ClientLimits>,
    /// The server's first name (`$host` for a request without Host).
    pub server_name: Box<str>,
}

impl Proxy {
    /// The upstream's policy with this route's timeouts. Borrowed as is when the route sets
    /// none (no allocation); a route with timeouts of its own pays one copy per request.
    pub fn policy(&self, upstream: &Arc<UpstreamPolicy>) -> Arc<UpstreamPolicy> {
        let s = &self.settings;
        if s.connect_timeout.is_none() && s.read_timeout.is_none() {
            return upstream.clone();
        }
        let mut p = UpstreamPolicy::clone(upstream);
        p.connect_timeout = s.connect_timeout.unwrap_or(p.connect_timeout);
        p.idle_timeout = s.read_timeout.unwrap_or(p.idle_timeout);
        Arc::new(p)
    }

    /// nginx's `proxy_send_timeout` for this route.
    pub fn send_timeout(&self) -> Duration {
        self.settings
            .send_timeout
            .unwrap_or(super::exchange::DEFAULT_SEND_TIMEOUT)
    }
}

/// Why a listener's routes cannot be built: what the routing table found wrong with its
/// servers and locations.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRoutes(pub String);

impl Routes {
    /// Build the routes of `servers`; `proto` is the listener's scheme (`http`, `https`).
    pub fn build(
        pool: &PoolHandle,
        servers: &[ServerConfig],
        proto: &'static str,
    ) -> Result<Routes, BadRoutes> {
        let table = Table::new(servers).map_err(BadRoutes)?;
        let entries = table
            .routes()
            .iter()
            .map(|info| {
                let l = &info.location;
                match &l.action {
                    RouteAction::Proxy { upstream, uri } => Entry::Proxy(Box::new(Proxy {
                        route: Route {
                            pool: pool.clone(),
                            upstream: upstream.as_str().into(),
                            proto,
                            metrics: crate::metrics::UpstreamMetrics::of(upstream),
                        },
                        uri: uri.as_ref().map(|u| {
                            let prefix = l.rule.path().unwrap_or("/");
                            (prefix.into(), u.as_str().into())
                        }),
                        settings: l.settings.clone(),
                        path: l.rule.path().unwrap_or_default().into(),
                        clients: l
                            .settings
                            .client_limits
                            .as_deref()
                            .map(super::limit::ClientLimits::new),
                        server_name: info.hosts.first().map_or("", |h| h.as_str()).into(),
                    })),
                    RouteAction::Return { code, text } => Entry::Return {
                        code: *code,
                        text: text.as_str().into(),
                    },
                    RouteAction::None => Entry::NotFound,
                }
            })
            .collect();
        Ok(Routes { table, entries })
    }

    /// The routes as a shared, swappable value.
    pub fn shared(self) -> SharedRoutes {
        Arc::new(ArcSwap::from_pointee(self))
    }

    /// Does the route `pick` names refuse `client` by its access list (nginx's `allow` and
    /// `deny`)? Checked for a route that proxies or answers 404; a `return` and the
    /// trailing-slash 301 answer first, as nginx's rewrite and find-config phases run before
    /// its access phase.
    pub fn forbids(&self, pick: Pick, client: Option<std::net::IpAddr>) -> bool {
        let Pick::Route(i) = pick else {
            return false;
        };
        if !matches!(self.entries.get(i), Some(Entry::Proxy(_) | Entry::NotFound)) {
            return false;
        }
        self.table.routes()[i]
            .location
            .settings
            .access
            .as_ref()
            .is_some_and(|a| !a.allows(client))
    }

    /// Does any route proxy? A listener whose routes all answer themselves cannot forward a
    /// request anywhere, so a backend at its address is no loop.
    pub fn forwards(&self) -> bool {
        self.entries.iter().any(|e| matches!(e, Entry::Proxy(_)))
    }

    /// The `add_header`s of the `return` route a pick names, with its server's first name
    /// (`$host` without a Host): nginx adds them to the answer `return` makes.
    pub fn returned_headers(
        &self,
        pick: Pick,
    ) -> Option<(&crate::config::headers::RouteHeaders, &str)> {
        let Pick::Route(i) = pick else {
            return None;
        };
        if !matches!(self.entries.get(i), Some(Entry::Return { .. })) {
            return None;
        }
        let info = &self.table.routes()[i];
        let headers = info.location.settings.headers.as_deref()?;
        Some((headers, info.hosts.first().map_or("", |h| h.as_str())))
    }

    /// The proxy route a pick names, if it is one.
    pub fn proxy(&self, pick: Pick) -> Option<&Proxy> {
        match pick {
            Pick::Route(i) => match self.entries.get(i) {
                Some(Entry::Proxy(p)) => Some(p),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A request answered by tideway itself.
pub struct SelfAnswer {
    pub status: u16,
    pub location: Option<String>,
    pub content_type: &'static str,
    pub body: String,
}

/// What tideway answers for a pick that does not go to a backend. `host` is the request's
/// Host (for an absolute Location, as nginx's `absolute_redirect`: lowercased, without port
/// and trailing dot; without one, the listener's address `local`), `target` its target.
pub fn self_answer(
    routes: &Routes,
    pick: Pick,
    (proto, host, local): (&str, Option<&str>, Option<std::net::SocketAddr>),
    target: &str,
) -> Option<SelfAnswer> {
    let port = local.map_or(0, |a| a.port());
    let absolute = |path: &str| {
        let host = match host {
            Some(h) => {
                let h = match h.find(']') {
                    Some(end) => &h[..=end],
                    None => h.split(':').next().unwrap_or(h),
                };
                h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
            }
            None => match local.map(|a| a.ip()) {
                Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
                Some(ip) => ip.to_string(),
                None => "localhost".into(),
            },
        };
        let default_port = if proto == "https" { 443 } else { 80 };
        if port == default_port {
            format!("{proto}://{host}{path}")
        } else {
            format!("{proto}://{host}:{port}{path}")
        }
    };
    let json = |status, msg: &str| SelfAnswer {
        status,
        location: None,
        content_type: "application/json",
        body: super::route::error_body(msg),
    };
    Some(match pick {
        Pick::Route(i) => match routes.entries.get(i)? {
            Entry::Proxy(_) => return None,
            Entry::NotFound => json(404, "no route for this path"),
            Entry::Return { code, text } if is_redirect(*code) => SelfAnswer {
                status: *code,
                location: Some(if text.starts_with('/') {
                    absolute(text)
                } else {
                    text.to_string()
                }),
                content_type: "text/plain",
                body: String::new(),
            },
            Entry::Return { code, text } => SelfAnswer {
                status: *code,
                location: None,
                content_type: "text/plain",
                body: text.to_string(),
            },
        },
        Pick::Redirect(i) => {
            let Some(Entry::Proxy(p)) = routes.entries.get(i) else {
                return Some(json(404, "no route for this path"));
            };
            let args = target.find('?').map_or("", |q| &target[q..]);
            SelfAnswer {
                status: 301,
                location: Some(absolute(&format!("{}{args}", p.path))),
                content_type: "text/plain",
                body: String::new(),
            }
        }
        Pick::NotFound => json(404, "no route for this host and path"),
        Pick::BadPath => json(400, "invalid request path"),
        Pick::Misdirected => json(
            421,
            "this Host is another server's than this TLS connection's name, and its certificate does not cover it: connect again with this Host as SNI",
        ),
    })
}

/// nginx's `return 444`: close the connection without an answer.
pub const CLOSE_WITHOUT_ANSWER: u16 = 444;

/// Send `a` to the client (without its body for a HEAD request), with the route's
/// `add_header` lines `added`; `close` ends the connection after it. A `return 444` sends
/// nothing and closes.
pub async fn send_answer(
    client: &mut pingora::protocols::Stream,
    a: &SelfAnswer,
    added: Option<&super::headers::Added>,
    (head_only, close): (bool, bool),
) -> (super::exchange::Next, u64) {
    use super::exchange::Next;
    use std::io::Write;
    if a.status == CLOSE_WITHOUT_ANSWER {
        return (Next::Close, 0);
    }
    if super::h2::stream::H2Io::of(client).is_some() {
        return send_h2_answer(client, a, added, head_only).await;
    }
    let mut resp = Vec::with_capacity(256 + a.body.len());
    let _ = write!(
        resp,
        "HTTP/1.1 {} {}\r\n",
        a.status,
        super::exchange::reason(a.status)
    );
    if let Some(l) = &a.location {
        let _ = write!(resp, "location: {l}\r\n");
    }
    if let Some(added) = added {
        added.write(a.status, &mut resp);
    }
    let _ = write!(
        resp,
        "content-type: {}\r\ncontent-length: {}\r\n{}\r\n",
        a.content_type,
        a.body.len(),
        if close { "connection: close\r\n" } else { "" }
    );
    if !head_only {
        resp.extend_from_slice(a.body.as_bytes());
    }
    let sent = resp.len() as u64;
    match super::body::send(client, &resp, super::exchange::DEFAULT_SEND_TIMEOUT).await {
        Err(_) => (Next::Abort, 0),
        Ok(()) if close => (Next::Close, sent),
        Ok(()) => (Next::KeepAlive, sent),
    }
}

/// [`send_answer`] on an HTTP/2 stream: the same fields, typed; the stream ends with it.
async fn send_h2_answer(
    client: &mut pingora::protocols::Stream,
    a: &SelfAnswer,
    added: Option<&super::headers::Added>,
    head_only: bool,
) -> (super::exchange::Next, u64) {
    use super::exchange::Next;
    let mut fields: Vec<(&[u8], &[u8])> = vec![(b"content-type", a.content_type.as_bytes())];
    if let Some(l) = &a.location {
        fields.push((b"location", l.as_bytes()));
    }
    let lines = added.map_or([&b""[..]; 2], |added| added.lines(a.status));
    super::h2::answer::own(client, a.status, &fields, &lines, a.body.len());
    let body = if head_only { "" } else { &a.body[..] };
    match super::body::send(
        client,
        body.as_bytes(),
        super::exchange::DEFAULT_SEND_TIMEOUT,
    )
    .await
    {
        Err(_) => (Next::Abort, 0),
        Ok(()) => (Next::Close, body.len() as u64),
    }
}
