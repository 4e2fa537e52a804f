//! nginx `server` and `location` blocks -> tideway routes ([`crate::config::ServerConfig`]).
//!
//! Read: `server_name`, `listen ... default_server`, `location` with every modifier (nested),
//! `proxy_pass` with or without a URI part, `return`, `proxy_connect_timeout`,
//! `proxy_send_timeout`, `proxy_read_timeout`, `client_max_body_size` (inherited from `http`
//! to `server` to `location` as in nginx), `proxy_set_header` and `add_header` (a level that
//! has any replaces all inherited ones, as in nginx; `Upgrade` with a value passes WebSocket
//! handshakes on, and `Upgrade`/`Connection` are otherwise the engine's), `map` blocks (see
//! [`super::maps`]), `allow`/`deny` (a level with any replaces the enclosing level's list)
//! and a location's `limit_req`/`limit_conn` (as the route's own `client_limits`, the http
//! and server levels' under it). Every error names the nginx file:line.

use super::limit::{Scope, Zone};
use super::parse::Directive;
use crate::config::access::AccessRule;
use crate::config::headers::{AddHeader, RouteHeaders, SetHeader};
use crate::config::routes::{check_locations, server_name};
use crate::config::{
    AccessList, LocationConfig, PathRule, RouteAction, RouteSettings, ServerConfig,
};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

/// Settings a level passes to the levels inside it.
#[derive(Clone, Debug, Default)]
pub struct Inherited {
    connect: Option<Duration>,
    send: Option<Duration>,
    read: Option<Duration>,
    max_body: Option<u64>,
    /// `proxy_set_header Upgrade ...` is in effect: WebSocket handshakes go through.
    upgrade: bool,
    /// The `allow`/`deny`s in effect: a level with any replaces the enclosing level's.
    access: Option<AccessList>,
    /// The `limit_req`/`limit_conn`s in effect (http, server, locations), with the zones
    /// they name; `own_limits`: a location on the way sets some, so its routes carry them
    /// (else the listener's `client_limits` hold).
    limits: Scope,
    own_limits: bool,
    zones: Arc<BTreeMap<String, Zone>>,
    /// `proxy_set_header`s in effect, `Connection` and `Upgrade` left out.
    set: Vec<SetHeader>,
    /// `add_header`s in effect.
    add: Vec<AddHeader>,
    /// The `map` variables of the http block.
    maps: super::maps::Read,
}

/// Turns a `proxy_pass` into an upstream name and its URI part (None: not understood,
/// already warned about).
pub type Pass<'a> = &'a mut dyn FnMut(&Directive) -> Option<(String, Option<String>)>;

/// What the conversion found wrong or left out.
#[derive(Default)]
pub struct Notes {
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// Directives a location may hold that tideway reads elsewhere or that change nothing it
/// does.
const QUIET: [&str; 3] = ["proxy_http_version", "proxy_buffering", "proxy_redirect"];

/// nginx time ("30", "10s", "1m", "500ms").
fn time(v: &str) -> Option<Duration> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return crate::config::parse_duration(&format!("{v}s")).ok();
    }
    crate::config::parse_duration(v).ok()
}

/// nginx size ("1024", "8k", "10m", "1g"); 0 is no limit.
pub(super) fn size(v: &str) -> Option<u64> {
    let lower = v.to_ascii_lowercase();
    let (num, unit) = match lower.as_bytes().last()? {
        b'k' => (&lower[..lower.len() - 1], 1024),
        b'm' => (&lower[..lower.len() - 1], 1024 * 1024),
        b'g' => (&lower[..lower.len() - 1], 1024 * 1024 * 1024),
        _ => (&lower[..], 1),
    };
    num.parse::<u64>().ok().map(|n| n * unit)
}

/// A `proxy_set_header` or `add_header` tideway cannot take: one naming a variable tideway
/// does not read (`$upstream_addr`, `$request_body`, a `set` one) is left out with a warning
/// (ignored, an error with `--strict`), as any other directive tideway does not read, so the
/// rest of the config runs; any other fault (a framing header, a control byte) is an error.
fn unread(notes: &mut Notes, d: &Directive, e: &str) {
    if e.starts_with("unknown variable") {
        notes.warnings.push(format!(
            "{}: {} {}: {e}; ignored: tideway does not send this header",
            d.at(),
            d.name,
            d.args.first().map(String::as_str).unwrap_or_default()
        ));
    } else {
        notes.errors.push(format!("{}: {}: {e}", d.at(), d.name));
    }
}

impl Inherited {
    /// Take a setting directive of any level; false if `d` is not one.
    pub fn take(&mut self, d: &Directive, notes: &mut Notes) -> bool {
        let arg = d.args.first().map(String::as_str).unwrap_or_default();
        let bad = |notes: &mut Notes, what: &str| {
            notes.errors.push(format!(
                "{}: \"{}\" has an invalid {what} {arg:?}",
                d.at(),
                d.name
            ))
        };
        match d.name.as_str() {
            "proxy_connect_timeout" => match time(arg) {
                Some(t) => self.connect = Some(t),
                None => bad(notes, "time"),
            },
            "proxy_send_timeout" => match time(arg) {
                Some(t) => self.send = Some(t),
                None => bad(notes, "time"),
            },
            "proxy_read_timeout" => match time(arg) {
                Some(t) => self.read = Some(t),
                None => bad(notes, "time"),
            },
            "client_max_body_size" => match size(arg) {
                Some(0) => self.max_body = None,
                Some(n) => self.max_body = Some(n),
                None => bad(notes, "size"),
            },
            _ => return false,
        }
        true
    }

    /// The level's own `proxy_set_header`s (and `add_header`s) replace the inherited ones, as
    /// in nginx. Each is checked here, so an error names its file:line.
    fn headers(&mut self, block: &[Directive], notes: &mut Notes) {
        use crate::config::headers::{check_add, check_set, compile};
        let own = |name: &'static str| block.iter().filter(move |d| d.name == name);
        if own("proxy_set_header").next().is_some() {
            self.upgrade = false;
            self.set.clear();
        }
        for d in own("proxy_set_header") {
            let [name, value] = &d.args[..] else {
                notes.errors.push(format!(
                    "{}: proxy_set_header takes a name and a value",
                    d.at()
                ));
                continue;
            };
            if name.eq_ignore_ascii_case("upgrade") {
                self.upgrade = !value.is_empty();
                continue;
            }
            // The engine writes Connection itself (upgrade for a WebSocket, keep-alive to
            // its pool): `Connection $connection_upgrade`, "" or close all mean that.
            if name.eq_ignore_ascii_case("connection") {
                continue;
            }
            let checked = compile(value, &self.maps.defs).and_then(|t| check_set(name, t));
            match checked {
                Err(e) => unread(notes, d, &e),
                Ok(None) => {}
                Ok(Some(_)) if self.set.iter().any(|s| s.name.eq_ignore_ascii_case(name)) => {
                    notes.warnings.push(format!(
                        "{}: proxy_set_header {name} is set twice at this level; tideway sends the first",
                        d.at()
                    ))
                }
                Ok(Some(s)) => self.set.push(s),
            }
        }
        if own("add_header").next().is_some() {
            self.add.clear();
        }
        for d in own("add_header") {
            let (name, value, always) = match &d.args[..] {
                [n, v] => (n, v, false),
                [n, v, a] if a == "always" => (n, v, true),
                _ => {
                    notes.errors.push(format!(
                        "{}: add_header takes a name, a value and perhaps \"always\"",
                        d.at()
                    ));
                    continue;
                }
            };
            let checked = compile(value, &self.maps.defs).and_then(|t| check_add(name, t, always));
            match checked {
                Err(e) => unread(notes, d, &e),
                Ok(_) if self.add.iter().any(|a| a.name.eq_ignore_ascii_case(name)) => {
                    notes.warnings.push(format!(
                        "{}: add_header {name} is given twice at this level; tideway adds the first only",
                        d.at()
                    ))
                }
                Ok(a) => self.add.push(a),
            }
        }
    }

    /// The level's own `allow`/`deny`s, in order, replace the inherited ones, as in nginx.
    fn access(&mut self, block: &[Directive], notes: &mut Notes) {
        let mut rules = Vec::new();
        for d in block
            .iter()
            .filter(|d| d.name == "allow" || d.name == "deny")
        {
            let text = format!("{} {}", d.name, d.args.join(" "));
            match AccessRule::parse(&text) {
                Ok(r) => {
                    let written = d.args.first().and_then(|a| a.parse::<ipnet::IpNet>().ok());
                    if written.is_some_and(|n| n != n.trunc()) {
                        notes.warnings.push(format!(
                            "{}: low address bits of {} are meaningless (nginx warns too)",
                            d.at(),
                            d.args[0]
                        ));
                    }
                    rules.push(r)
                }
                Err(e) => notes
                    .errors
                    .push(format!("{}: \"{}\": {e}", d.at(), d.name)),
            }
        }
        if block.iter().any(|d| d.name == "allow" || d.name == "deny") {
            self.access = Some(AccessList { rules });
        }
    }

    /// The level inside `block`: these settings, then the block's own.
    pub fn within(&self, block: &[Directive], notes: &mut Notes) -> Inherited {
        let mut inner = self.clone();
        inner.maps.read(block, notes);
        inner.headers(block, notes);
        inner.access(block, notes);
        for d in block {
            inner.take(d, notes);
        }
        inner
    }

    /// These settings under the limits of the http and server levels (`limits`), which name
    /// `zones`.
    pub fn limited(&self, limits: Scope, zones: &BTreeMap<String, Zone>) -> Inherited {
        Inherited {
            limits,
            own_limits: false,
            zones: Arc::new(zones.clone()),
            ..self.clone()
        }
    }

    /// A location's own limit directives (errors with file:line into `notes`).
    fn location_limits(&mut self, block: &[Directive], notes: &mut Notes) {
        let mut own = Scope::default();
        for d in block {
            if let Some(Err(e)) = own.read(d) {
                notes.errors.push(e);
            }
        }
        if own.is_set() {
            self.limits = own.under(&self.limits);
            self.own_limits = true;
        }
    }

    /// The route settings of this level; `at` (the location) names a limit's error.
    fn settings(&self, at: &str, notes: &mut Notes) -> RouteSettings {
        let client_limits = self.own_limits.then(|| {
            self.limits
                .resolve(&self.zones, false)
                .map_err(|e| notes.errors.push(format!("{at}: {e}")))
                .unwrap_or_default()
        });
        RouteSettings {
            connect_timeout: self.connect,
            send_timeout: self.send,
            read_timeout: self.read,
            websocket: Some(self.upgrade),
            max_body: self.max_body,
            access: self.access.clone(),
            client_limits,
            headers: (!self.set.is_empty() || !self.add.is_empty()).then(|| {
                std::sync::Arc::new(RouteHeaders {
                    set: self.set.clone(),
                    add: self.add.clone(),
                })
            }),
        }
    }

    /// The `[map.NAME]` tables of the maps read so far.
    pub fn render_maps(&self) -> String {
        self.maps.render()
    }
}

/// `return CODE [text|URL]` or `return URL`.
fn answer(d: &Directive, notes: &mut Notes) -> Option<RouteAction> {
    let (first, rest) = (d.args.first()?, d.args.get(1));
    if first.starts_with("http://") || first.starts_with("https://") || first.starts_with('$') {
        return Some(RouteAction::Return {
            code: 302,
            text: first.clone(),
        });
    }
    match first.parse::<u16>() {
        Ok(code) if code <= 999 => Some(RouteAction::Return {
            code,
            text: rest.cloned().unwrap_or_default(),
        }),
        _ => {
            notes
                .errors
                .push(format!("{}: invalid return code {first:?}", d.at()));
            None
        }
    }
}

/// A `server` block's routes; `pass` turns a `proxy_pass` into an upstream name and its URI
/// part (None: not understood, already warned about).
pub fn server(
    d: &Directive,
    outer: &Inherited,
    default: bool,
    notes: &mut Notes,
    pass: Pass<'_>,
) -> ServerConfig {
    let block = d.block.as_deref().unwrap_or_default();
    let inherited = outer.within(block, notes);
    let mut names = Vec::new();
    for s in block.iter().filter(|s| s.name == "server_name") {
        for n in &s.args {
            match server_name(n) {
                Ok(n) => names.push(n),
                Err(e) => notes.errors.push(format!("{}: {e}", s.at())),
            }
        }
    }
    let mut locations = Vec::new();
    for s in block.iter().filter(|s| s.name == "location") {
        if let Some(l) = location(s, &inherited, notes, pass) {
            locations.push(l);
        }
    }
    // A `return` at the server level answers before any location is chosen.
    if let Some(r) = block.iter().find(|s| s.name == "return") {
        if let Some(action) = answer(r, notes) {
            if !locations.is_empty() {
                notes.warnings.push(format!(
                    "{}: \"return\" in the server block answers every request; its locations are never used",
                    r.at()
                ));
            }
            locations = vec![LocationConfig {
                rule: PathRule::Prefix("/".into()),
                action,
                settings: inherited.settings(&r.at(), notes),
                nested: Vec::new(),
                at: r.at(),
            }];
        }
    }
    if locations.is_empty() {
        notes.warnings.push(format!(
            "{}: this server has no location; tideway leaves it out (requests for its names go to the default server)",
            d.at()
        ));
    }
    if let Err((at, msg)) = check_locations(&locations, None) {
        notes.errors.push(format!("{at}: {msg}"));
    }
    ServerConfig {
        names,
        default,
        locations,
        tls: None,
    }
}

fn location(
    d: &Directive,
    outer: &Inherited,
    notes: &mut Notes,
    pass: Pass<'_>,
) -> Option<LocationConfig> {
    let block = d.block.as_deref().unwrap_or_default();
    let rule = match PathRule::parse(&d.args.join(" ")) {
        Ok(r) => r,
        Err(e) => {
            notes.errors.push(format!("{}: location: {e}", d.at()));
            return None;
        }
    };
    let mut inherited = outer.within(block, notes);
    inherited.location_limits(block, notes);
    let mut action = RouteAction::None;
    let mut returned = None;
    let mut nested = Vec::new();
    for s in block {
        match s.name.as_str() {
            "proxy_pass" => {
                if let Some((upstream, uri)) = pass(s) {
                    action = RouteAction::Proxy { upstream, uri };
                }
            }
            "return" => returned = returned.or_else(|| answer(s, notes)),
            "location" => nested.extend(location(s, &inherited, notes, pass)),
            name if QUIET.contains(&name) => {}
            // Read by `Inherited::within`.
            "proxy_set_header" | "add_header" => {}
            // Read by the conversion: retries per upstream; limits and access control read
            // above, or refused by the conversion.
            name if name.starts_with("proxy_next_upstream")
                || name.starts_with("proxy_ssl_")
                || name.starts_with("limit_")
                || super::access::ACCESS.contains(&name)
                || super::access::REFUSED_ACCESS.contains(&name) => {}
            _ if Inherited::default().take(s, &mut Notes::default()) => {}
            _ => notes.warnings.push(format!(
                "{}: \"{}\" is not understood in a location; ignored",
                s.at(),
                s.name
            )),
        }
    }
    // `return` runs before the content phase: it wins over proxy_pass.
    if let Some(r) = returned {
        action = r;
    }
    // A location that neither proxies nor returns is judged by `super::content`.
    Some(LocationConfig {
        rule,
        action,
        settings: inherited.settings(&d.at(), notes),
        nested,
        at: d.at(),
    })
}

/// One `[[listener.route]]` table (with the server's host list when `server` is given), then
/// its nested routes.
pub fn render(out: &mut String, table: &str, server: Option<&ServerConfig>, l: &LocationConfig) {
    let _ = writeln!(out, "\n[[{table}]]");
    if let Some(s) = server.filter(|s| !s.names.is_empty()) {
        let hosts: Vec<String> = s.names.iter().map(|n| format!("{n:?}")).collect();
        let _ = writeln!(out, "host = [{}]", hosts.join(", "));
    }
    if let Some(s) = server {
        if s.default {
            out.push_str("default = true\n");
        }
        if let Some(t) = &s.tls {
            let _ = writeln!(out, "tls = {{ cert = {:?}, key = {:?} }}", t.cert, t.key);
        }
    }
    let _ = writeln!(out, "path = {:?}", l.rule.to_string());
    match &l.action {
        RouteAction::Proxy { upstream, uri } => {
            let _ = writeln!(out, "upstream = {upstream:?}");
            if let Some(u) = uri {
                let _ = writeln!(out, "uri = {u:?}");
            }
        }
        RouteAction::Return { code, text } => {
            let _ = writeln!(out, "return = {{ code = {code}, text = {text:?} }}");
        }
        RouteAction::None => {}
    }
    let s = &l.settings;
    for (name, t) in [
        ("connect_timeout", s.connect_timeout),
        ("send_timeout", s.send_timeout),
        ("read_timeout", s.read_timeout),
    ] {
        match t.map(|t| t.as_millis()) {
            Some(ms) if ms % 1000 == 0 => {
                let _ = writeln!(out, "{name} = \"{}s\"", ms / 1000);
            }
            Some(ms) => {
                let _ = writeln!(out, "{name} = \"{ms}ms\"");
            }
            None => {}
        }
    }
    if let Some(w) = s.websocket {
        let _ = writeln!(out, "websocket = {w}");
    }
    if let Some(m) = s.max_body {
        let _ = writeln!(out, "max_body = {m}");
    }
    if let Some(a) = &s.access {
        let _ = writeln!(out, "access = {:?}", a.texts());
    }
    if let Some(c) = &s.client_limits {
        let _ = writeln!(out, "client_limits = {}", super::limit::render_limits(c));
    }
    if let Some(h) = &s.headers {
        out.push_str(&super::maps::render_headers(h));
    }
    let _ = writeln!(out, "origin = {:?}", l.at);
    let inner = format!("{table}.route");
    for n in &l.nested {
        render(out, &inner, None, n);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_and_times_read_as_nginx_writes_them() {
        assert_eq!(super::size("10m"), Some(10 * 1024 * 1024));
        assert_eq!(super::size("8K"), Some(8 * 1024));
        assert_eq!(super::size("100"), Some(100));
        assert_eq!(super::size("x"), None);
        assert_eq!(
            super::time("300"),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(super::time("5m"), Some(std::time::Duration::from_secs(300)));
    }
}
