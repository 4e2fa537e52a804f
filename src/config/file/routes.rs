//! `[[listener.route]]` as written, and its validation into [`crate::config::ServerConfig`]s:
//! routes with the same `host` list form one server (nginx's `server` block), in the order
//! they first appear; the first server is the default one unless a route says `default`.

use super::super::duration::Dur;
use super::super::routes::*;
use super::Ctx;
use crate::config::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteSection {
    #[serde(default)]
    host: Vec<Spanned<String>>,
    default: Option<bool>,
    path: Option<Spanned<String>>,
    upstream: Option<Spanned<String>>,
    uri: Option<Spanned<String>>,
    #[serde(rename = "return")]
    answer: Option<Spanned<ReturnSection>>,
    connect_timeout: Option<Spanned<Dur>>,
    send_timeout: Option<Spanned<Dur>>,
    read_timeout: Option<Spanned<Dur>>,
    websocket: Option<bool>,
    max_body: Option<u64>,
    origin: Option<String>,
    /// The server's own certificate (a top-level route only; its server's other routes may
    /// repeat it).
    tls: Option<Spanned<super::TlsFileSection>>,
    #[serde(default)]
    route: Vec<Spanned<RouteSection>>,
    /// nginx's `allow`/`deny` in order: `["allow 10.0.0.0/8", "deny all"]`.
    access: Option<Vec<Spanned<String>>>,
    /// The route's own per-client limits, in place of the listener's.
    client_limits: Option<Vec<Spanned<crate::config::limit::UseSection>>>,
    set_header: Option<Spanned<super::headers::Ordered<String>>>,
    add_header: Option<Spanned<super::headers::Ordered<super::headers::Added>>>,
}

/// The zones a route's `client_limits` may name.
pub(super) type Zones = BTreeMap<String, crate::config::LimitZone>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReturnSection {
    code: u16,
    #[serde(default)]
    text: String,
}

/// A listener's upstream (its first, with routes) and servers: from `upstream = "NAME"` (one
/// route `/`) or its `[[listener.route]]` tables (http only), never both.
pub(super) fn of_listener(
    cx: &Ctx<'_>,
    l: &super::ListenerSection,
    protocol: crate::config::Protocol,
    upstreams: &BTreeMap<String, Spanned<super::UpstreamSection>>,
    zones: &Zones,
) -> Result<(String, Vec<ServerConfig>), ConfigError> {
    Ok(match (&l.upstream, l.route.is_empty()) {
        (Some(u), true) => {
            let upstream = known_upstream(cx, u, upstreams)?;
            let (line, _) = super::line_col(cx.text, u.span().start);
            let at = format!("{}:{line}", cx.path.display());
            let servers = single(&upstream, &at);
            (upstream, servers)
        }
        (Some(u), false) => return Err(cx.err(
            u.span(),
            "a listener has upstream = \"NAME\" (one route) or [[listener.route]] tables, not both",
        )),
        (None, true) => {
            return Err(cx.err(
                l.listen.span(),
                "a listener needs upstream = \"NAME\" or [[listener.route]] tables",
            ))
        }
        (None, false) if protocol == crate::config::Protocol::Tcp => {
            return Err(cx.err(
                l.route[0].span(),
                "a tcp listener has one upstream = \"NAME\"; routes are for http",
            ))
        }
        (None, false) => {
            let servers = servers(cx, &l.route, upstreams, zones)?;
            let first = servers
                .iter()
                .flat_map(|s| &s.locations)
                .find_map(|l| l.action.upstream())
                .unwrap_or_default()
                .to_string();
            (first, servers)
        }
    })
}

/// A listener's own `tls` with its servers' certificates considered: a route with `tls` makes
/// the listener terminate TLS (its own list then empty), and on a TLS listener a server
/// without a certificate of its own is served the listener's, so it must have some.
pub(super) fn server_tls(
    cx: &Ctx<'_>,
    l: &super::ListenerSection,
    tls: Option<Vec<crate::config::tls::TlsFiles>>,
    servers: &[ServerConfig],
) -> Result<Option<Vec<crate::config::tls::TlsFiles>>, ConfigError> {
    let tls = match tls {
        None if servers.iter().any(|s| s.tls.is_some()) => Some(Vec::new()),
        tls => tls,
    };
    if tls.as_ref().is_some_and(Vec::is_empty) {
        if let Some(s) = servers.iter().find(|s| s.tls.is_none()) {
            return Err(cx.err(
                l.listen.span(),
                format!(
                    "the server with host {:?} has no certificate on this TLS listener; give one of its routes tls = {{ cert, key }}, or the listener tls",
                    s.names
                ),
            ));
        }
    }
    Ok(tls)
}

/// The upstream `u` names, if it is defined.
fn known_upstream(
    cx: &Ctx<'_>,
    u: &Spanned<String>,
    upstreams: &BTreeMap<String, Spanned<super::UpstreamSection>>,
) -> Result<String, ConfigError> {
    if upstreams.contains_key(u.get_ref()) {
        return Ok(u.get_ref().clone());
    }
    let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
    Err(cx.err(
        u.span(),
        format!(
            "unknown upstream {:?}; defined upstreams: [{}]",
            u.get_ref(),
            known.join(", ")
        ),
    ))
}

/// The servers of one listener's `route` tables; `upstreams` are the defined ones.
pub(super) fn servers(
    cx: &Ctx<'_>,
    routes: &[Spanned<RouteSection>],
    upstreams: &BTreeMap<String, Spanned<super::UpstreamSection>>,
    zones: &Zones,
) -> Result<Vec<ServerConfig>, ConfigError> {
    let mut servers: Vec<ServerConfig> = Vec::new();
    let mut defaults = 0;
    for sp in routes {
        let r = sp.get_ref();
        let mut names = Vec::new();
        for h in &r.host {
            names.push(server_name(h.get_ref()).map_err(|e| cx.err(h.span(), e))?);
        }
        let location = location(cx, sp, (upstreams, zones), &RouteSettings::default())?;
        let i = match servers.iter().position(|s| s.names == names) {
            Some(i) => i,
            None => {
                servers.push(ServerConfig {
                    names,
                    default: false,
                    locations: Vec::new(),
                    tls: None,
                });
                servers.len() - 1
            }
        };
        if let Some(t) = &r.tls {
            let files = crate::config::tls::TlsFiles {
                cert: t.get_ref().cert.clone(),
                key: t.get_ref().key.clone(),
            };
            match &servers[i].tls {
                Some(had) if *had != files => {
                    return Err(cx.err(
                        t.span(),
                        "another route of this server (host list) names another certificate; a server has one",
                    ))
                }
                Some(_) => {}
                None => {
                    crate::config::tls::load_cert(&files)
                        .map_err(|e| cx.err(t.span(), e.to_string()))?;
                    servers[i].tls = Some(files);
                }
            }
        }
        nested_tls(cx, &r.route)?;
        if r.default == Some(true) && !servers[i].default {
            defaults += 1;
            if defaults > 1 {
                return Err(cx.err(sp.span(), "only one server (host list) may be the default"));
            }
            servers[i].default = true;
        }
        servers[i].locations.push(location);
    }
    for s in &servers {
        // `at` is where the route was defined: this file, or the nginx file it came from.
        check_locations(&s.locations, None).map_err(|(at, msg)| {
            let (path, line) = at
                .rsplit_once(':')
                .and_then(|(p, l)| Some((p.into(), l.parse().ok()?)))
                .unwrap_or_else(|| (cx.path.to_path_buf(), 0));
            ConfigError::Invalid {
                path,
                line,
                col: 1,
                msg,
            }
        })?;
    }
    Ok(servers)
}

/// A nested route names no certificate: a certificate is its server's.
fn nested_tls(cx: &Ctx<'_>, routes: &[Spanned<RouteSection>]) -> Result<(), ConfigError> {
    for r in routes {
        if let Some(t) = &r.get_ref().tls {
            return Err(cx.err(
                t.span(),
                "tls belongs to a top-level route (it is its server's certificate), not a nested one",
            ));
        }
        nested_tls(cx, &r.get_ref().route)?;
    }
    Ok(())
}

/// One route table (and the ones nested in it) as a location. A setting the table leaves out
/// is its parent's (`parent`), as a nested nginx location inherits its enclosing one's.
fn location(
    cx: &Ctx<'_>,
    sp: &Spanned<RouteSection>,
    (upstreams, zones): (&BTreeMap<String, Spanned<super::UpstreamSection>>, &Zones),
    parent: &RouteSettings,
) -> Result<LocationConfig, ConfigError> {
    let r = sp.get_ref();
    let rule = match &r.path {
        None => PathRule::Prefix("/".into()),
        Some(p) => PathRule::parse(p.get_ref()).map_err(|e| cx.err(p.span(), e))?,
    };
    let action = match (&r.upstream, &r.answer) {
        (Some(_), Some(a)) => {
            return Err(cx.err(a.span(), "a route has either upstream or return, not both"))
        }
        (Some(u), None) => {
            known_upstream(cx, u, upstreams)?;
            RouteAction::Proxy {
                upstream: u.get_ref().clone(),
                uri: r.uri.as_ref().map(|u| u.get_ref().clone()),
            }
        }
        (None, Some(a)) => {
            let a = a.get_ref();
            RouteAction::Return {
                code: a.code,
                text: a.text.clone(),
            }
        }
        (None, None) if !r.route.is_empty() => RouteAction::None,
        (None, None) => {
            return Err(cx.err(
                sp.span(),
                "a route needs upstream = \"NAME\", return = { code = N, text = \"...\" }, or nested routes",
            ))
        }
    };
    if let (Some(u), None) = (&r.uri, &r.upstream) {
        return Err(cx.err(u.span(), "uri is the URI part of an upstream route"));
    }
    if let Some(u) = &r.uri {
        if !u.get_ref().starts_with('/') {
            return Err(cx.err(u.span(), "uri must start with /"));
        }
    }
    let positive = |d: &Option<Spanned<Dur>>, name: &str| match d {
        Some(d) if d.get_ref().0.is_zero() => {
            Err(cx.err(d.span(), format!("{name} must be more than 0")))
        }
        Some(d) => Ok(Some(d.get_ref().0)),
        None => Ok(None),
    };
    let settings = RouteSettings {
        connect_timeout: positive(&r.connect_timeout, "connect_timeout")?
            .or(parent.connect_timeout),
        send_timeout: positive(&r.send_timeout, "send_timeout")?.or(parent.send_timeout),
        read_timeout: positive(&r.read_timeout, "read_timeout")?.or(parent.read_timeout),
        websocket: r.websocket.or(parent.websocket),
        max_body: r.max_body.or(parent.max_body),
        access: match &r.access {
            Some(rules) => Some(access_list(cx, rules)?),
            None => parent.access.clone(),
        },
        client_limits: match &r.client_limits {
            Some(uses) => Some(crate::config::limit::uses(cx, uses, zones, false)?),
            None => parent.client_limits.clone(),
        },
        headers: super::headers::route(cx, &r.set_header, &r.add_header, parent.headers.as_ref())?,
    };
    let mut nested = Vec::new();
    for n in &r.route {
        if !n.get_ref().host.is_empty() || n.get_ref().default.is_some() {
            return Err(cx.err(
                n.span(),
                "a nested route takes its host from the route it is in",
            ));
        }
        nested.push(location(cx, n, (upstreams, zones), &settings)?);
    }
    let at = match &r.origin {
        Some(o) => o.clone(),
        None => {
            let (line, _) = super::line_col(cx.text, sp.span().start);
            format!("{}:{line}", cx.path.display())
        }
    };
    Ok(LocationConfig {
        rule,
        action,
        settings,
        nested,
        at,
    })
}

/// A route's `access` rules, each checked (an empty list lets everyone in).
fn access_list(
    cx: &Ctx<'_>,
    rules: &[Spanned<String>],
) -> Result<crate::config::AccessList, ConfigError> {
    let rules = rules
        .iter()
        .map(|r| {
            crate::config::access::AccessRule::parse(r.get_ref()).map_err(|e| cx.err(r.span(), e))
        })
        .collect::<Result<_, _>>()?;
    Ok(crate::config::AccessList { rules })
}
