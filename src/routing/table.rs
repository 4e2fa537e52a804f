//! A listener's route table: its servers' names ([`super::host`]) and each server's
//! locations ([`super::location`]), built once per config and read by every request.

use super::host::Hosts;
use super::location::{Found, Level};
use super::uri::normalize;
use crate::config::{LocationConfig, RouteAction, ServerConfig};
use std::sync::Arc;

/// One route: a location of a server, as configured.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The index of its server in the listener's routes.
    pub server: usize,
    /// The server's names.
    pub hosts: Arc<[String]>,
    /// The server is the listener's default one.
    pub default_server: bool,
    /// The location (its nested ones are routes of their own).
    pub location: LocationConfig,
}

/// What a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The route with this index.
    Route(usize),
    /// nginx's 301 adding the trailing slash of this route's location.
    Redirect(usize),
    /// The server has no location for the path: 404.
    NotFound,
    /// The path cannot be decoded (a bad `%` escape, `%00`, `..` above the root): 400.
    BadPath,
    /// On TLS, the Host is another server's than the connection's SNI chose, and the
    /// connection's certificate does not cover it: 421 ([`Table::misdirected`]).
    Misdirected,
}

/// The routes of one listener.
#[derive(Debug)]
pub struct Table {
    hosts: Hosts,
    servers: Vec<Level>,
    routes: Vec<RouteInfo>,
    /// One server with only `location /` (no URI part): every request with a valid path is
    /// this route, with no matching.
    single: Option<usize>,
}

impl Table {
    /// Build the table of `servers` (validated config). `Err` says which regex failed.
    pub fn new(servers: &[ServerConfig]) -> Result<Table, String> {
        let default = servers.iter().position(|s| s.default).unwrap_or(0);
        let defaults = servers.iter().filter(|s| s.default).count();
        if defaults > 1 {
            return Err(format!(
                "{defaults} servers are the default server; one may be"
            ));
        }
        let hosts = Hosts::new(servers.iter().map(|s| s.names.as_slice()), default)?;
        let mut routes = Vec::new();
        let mut levels = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            let names: Arc<[String]> = s.names.clone().into();
            let mut add = |l: &LocationConfig| {
                let mut location = l.clone();
                location.nested = Vec::new();
                routes.push(RouteInfo {
                    server: i,
                    hosts: names.clone(),
                    default_server: i == default,
                    location,
                });
                routes.len() - 1
            };
            levels.push(Level::new(&s.locations, &mut add)?);
        }
        let single = match &levels[..] {
            [only] => only.only_root().filter(|&i| {
                !matches!(
                    routes[i].location.action,
                    RouteAction::Proxy { uri: Some(_), .. }
                )
            }),
            _ => None,
        };
        Ok(Table {
            hosts,
            servers: levels,
            routes,
            single,
        })
    }

    /// The route for a request with Host `host` (None: none sent) and request target
    /// `target` (origin form, query included).
    pub fn select(&self, host: Option<&[u8]>, target: &[u8]) -> Pick {
        if let Some(only) = self.single {
            // Only checked (borrowed, no allocation, unless it has `%` or dot segments).
            return match normalize(target) {
                Ok(_) => Pick::Route(only),
                Err(_) => Pick::BadPath,
            };
        }
        let Some(level) = self.servers.get(self.hosts.find(host)) else {
            return Pick::NotFound;
        };
        let Ok(uri) = normalize(target) else {
            return Pick::BadPath;
        };
        let mut cur = None;
        match level.find(&uri, &mut cur) {
            Some(Found::Route(id)) => Pick::Route(id),
            Some(Found::Redirect(id)) => Pick::Redirect(id),
            None => cur.map_or(Pick::NotFound, Pick::Route),
        }
    }

    /// Whether a request with Host `host` on a TLS connection made for `sni` (None: the
    /// client sent none) is misdirected: its Host chooses another server than `sni` chose (no
    /// SNI chooses the default server, as the certificate does), and the connection's
    /// certificate, asked through `covers` with the Host as matched, is not valid for it.
    /// A listener with one server never is.
    pub fn misdirected(
        &self,
        host: Option<&[u8]>,
        sni: Option<&str>,
        covers: impl FnOnce(&str) -> bool,
    ) -> bool {
        if self.servers.len() < 2 {
            return false;
        }
        let by_sni = match sni {
            None => self.hosts.default_server(),
            Some(name) => self.hosts.find(Some(name.as_bytes())),
        };
        if self.hosts.find(host) == by_sni {
            return false;
        }
        !host.and_then(|h| Hosts::name(h, covers)).unwrap_or(false)
    }

    /// Every route, in the order of the config (nested ones after their parent).
    pub fn routes(&self) -> &[RouteInfo] {
        &self.routes
    }

    /// The routes as JSON, for the admin API (`GET /v1/routes`).
    pub fn view(&self) -> serde_json::Value {
        let routes: Vec<serde_json::Value> = self
            .routes
            .iter()
            .map(|r| {
                let l = &r.location;
                let s = &l.settings;
                let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64());
                let mut v = serde_json::json!({
                    "server": r.server,
                    "hosts": &*r.hosts,
                    "default_server": r.default_server,
                    "path": l.rule.to_string(),
                    "at": l.at,
                    "connect_timeout": secs(s.connect_timeout),
                    "send_timeout": secs(s.send_timeout),
                    "read_timeout": secs(s.read_timeout),
                    "websocket": s.websocket.unwrap_or(true),
                    "max_body": s.max_body,
                });
                if let Some(a) = &s.access {
                    v["access"] = a.texts().into();
                }
                if let Some(c) = &s.client_limits {
                    let zones: Vec<&str> = c.iter().map(|l| l.zone.name.as_str()).collect();
                    v["client_limits"] = zones.into();
                }
                match &l.action {
                    RouteAction::Proxy { upstream, uri } => {
                        v["upstream"] = upstream.as_str().into();
                        v["uri"] = uri.as_deref().into();
                    }
                    RouteAction::Return { code, text } => {
                        v["return"] = serde_json::json!({ "code": code, "text": text });
                    }
                    RouteAction::None => v["none"] = true.into(),
                }
                if let Some(h) = &s.headers {
                    let set: serde_json::Map<_, _> = h
                        .set
                        .iter()
                        .map(|x| (x.name.to_string(), x.value.to_string().into()))
                        .collect();
                    let add: serde_json::Map<_, _> = h
                        .add
                        .iter()
                        .map(|x| {
                            let a = serde_json::json!({ "value": x.value.to_string(), "always": x.always });
                            (x.name.to_string(), a)
                        })
                        .collect();
                    v["set_header"] = set.into();
                    v["add_header"] = add.into();
                }
                v
            })
            .collect();
        serde_json::Value::Array(routes)
    }
}
