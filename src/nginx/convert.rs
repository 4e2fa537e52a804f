//! nginx directives -> tideway TOML. What is understood becomes config; anything else is a
//! warning naming the directive and its file:line, and is ignored.

use super::limit::Scope;
use super::parse::Directive;
use super::realip::RealIpConf;
use super::retry::Retry;
use super::routes::{Inherited, Notes};
use crate::config::ServerConfig;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The result of a conversion.
#[derive(Debug, Default)]
pub struct Converted {
    pub toml: String,
    pub warnings: Vec<String>,
    /// What makes the import fail: what nginx itself would refuse, or what tideway cannot
    /// honour (a limit keyed by other than the client address, access control), each with its
    /// nginx file:line.
    pub errors: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct Upstream {
    balance: Option<&'static str>,
    hash_key: Option<String>,
    /// `hash KEY` without `consistent`.
    plain_hash: bool,
    servers: Vec<Server>,
    slow_start: Option<String>,
    idle_timeout: Option<String>,
    /// The `proxy_next_upstream*` settings of the locations that proxy here.
    retry: Option<Retry>,
}

#[derive(Debug, Clone, Default)]
struct Server {
    addr: String,
    weight: u32,
    max_conns: u32,
    down: bool,
    backup: bool,
    max_fails: Option<u32>,
    fail_timeout: Option<String>,
}

#[derive(Debug)]
struct Listener {
    listen: String,
    protocol: &'static str,
    upstream: String,
    /// An http listener's servers (the `server` blocks on its `listen`, in file order).
    servers: Vec<ServerConfig>,
    /// Certificates, in the order of the servers that name them (the first is the default).
    tls: Vec<(String, String)>,
    proxy_protocol: bool,
    /// The `real_ip = { ... }` value, when realip is on.
    real_ip: Option<String>,
    /// The `client_limits = [...]` line, or empty.
    limits: String,
}

struct Cx {
    /// Directory relative file names (certificates) resolve against: the main file's.
    base: std::path::PathBuf,
    warnings: Vec<String>,
    errors: Vec<String>,
    upstreams: BTreeMap<String, Upstream>,
    listeners: Vec<Listener>,
    /// `limit_req_zone` and `limit_conn_zone`, by name.
    zones: BTreeMap<String, super::limit::Zone>,
    /// The limit directives of the enclosing http or stream block.
    outer: Scope,
}

impl Cx {
    /// Read a limit directive into `scope`; true if `d` was one.
    fn limit(&mut self, scope: &mut Scope, d: &Directive) -> bool {
        match scope.read(d) {
            None => false,
            Some(r) => {
                self.errors.extend(r.err());
                true
            }
        }
    }

    /// The `client_limits` line for a listener with these limits.
    fn client_limits(&mut self, scope: &Scope, d: &Directive, tcp: bool) -> String {
        let all = scope.under(&self.outer);
        all.render(&self.zones, tcp).unwrap_or_else(|e| {
            self.errors.push(format!("{}: {e}", d.at()));
            String::new()
        })
    }

    fn warn(&mut self, d: &Directive, why: &str) {
        self.warnings
            .push(format!("{}: \"{}\" {why}; ignored", d.at(), d.name));
    }
}

/// nginx time ("30", "10s", "1m", "500ms") as a tideway duration string.
pub(super) fn time(v: &str) -> Option<String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("{v}s"));
    }
    crate::config::parse_duration(v).ok().map(|_| v.to_string())
}

/// nginx `listen` argument -> host:port.
fn listen_addr(v: &str) -> String {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        format!("0.0.0.0:{v}")
    } else if let Some(port) = v.strip_prefix("*:") {
        format!("0.0.0.0:{port}")
    } else if v.contains(':') {
        v.to_string()
    } else {
        format!("{v}:80")
    }
}

/// nginx hash key -> tideway hash_key: the short forms for one variable, else the nginx
/// expression itself (when tideway can evaluate it).
fn hash_key(v: &str) -> Option<String> {
    simple_hash_key(v).or_else(|| {
        v.parse::<crate::config::key_expr::KeyExpr>()
            .ok()
            .map(|_| v.to_string())
    })
}

fn simple_hash_key(v: &str) -> Option<String> {
    if v == "$remote_addr" || v == "$binary_remote_addr" {
        Some("ip".into())
    } else if let Some(h) = v.strip_prefix("$http_") {
        Some(format!("header:{}", h.replace('_', "-")))
    } else if let Some(c) = v.strip_prefix("$cookie_") {
        Some(format!("cookie:{c}"))
    } else {
        v.strip_prefix("$arg_").map(|a| format!("query:{a}"))
    }
}

fn upstream(cx: &mut Cx, d: &Directive) {
    let Some(name) = d.args.first() else {
        return cx.warn(d, "has no name");
    };
    let mut up = Upstream::default();
    for s in d.block.as_deref().unwrap_or_default() {
        match s.name.as_str() {
            "server" => server(cx, &mut up, s),
            "hash" => {
                let consistent = s.args.get(1).map(String::as_str) == Some("consistent");
                // Plain hash: the key as nginx writes it, which never falls back to the
                // client address (an empty key goes round robin, as in nginx).
                let key = s.args.first().and_then(|k| {
                    if consistent {
                        hash_key(k)
                    } else {
                        k.parse::<crate::config::key_expr::KeyExpr>()
                            .ok()
                            .map(|_| k.clone())
                    }
                });
                match key {
                    Some(k) => up.hash_key = Some(k),
                    None => cx.warn(s, "uses a key tideway cannot hash ($remote_addr, $binary_remote_addr, $request_uri, $args, $request_method, $host, $http_*, $cookie_*, $arg_* and text are understood); hashing the client address instead"),
                }
                up.plain_hash = !consistent;
                up.balance = Some("hash");
            }
            "ip_hash" => {
                cx.warnings.push(format!("{}: \"ip_hash\" becomes a consistent hash of the client address; clients may land on other backends than with nginx", s.at()));
                up.balance = Some("hash");
                up.hash_key = Some("ip".into());
            }
            "least_conn" => up.balance = Some("least_conn"),
            "random" => {
                if s.args.first().map(String::as_str) != Some("two") {
                    cx.warnings.push(format!(
                        "{}: \"random\" becomes p2c (two random choices, the less loaded wins)",
                        s.at()
                    ));
                }
                up.balance = Some("p2c");
            }
            "keepalive" | "keepalive_timeout" | "keepalive_requests" | "keepalive_time"
            | "zone" => {}
            _ => cx.warn(s, "is not understood in an upstream block"),
        }
    }
    // nginx refuses `backup` under `hash` and `ip_hash` ("invalid parameter").
    if up.balance == Some("hash") {
        for (s, srv) in d
            .block
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|s| s.name == "server")
            .zip(&up.servers)
        {
            if srv.backup {
                cx.warnings.push(format!("{}: backup server {} is not allowed with hash or ip_hash (nginx: invalid parameter \"backup\"); ignored", s.at(), srv.addr));
            }
        }
        up.servers.retain(|s| !s.backup);
    }
    cx.upstreams.insert(name.clone(), up);
}

fn server(cx: &mut Cx, up: &mut Upstream, d: &Directive) {
    let Some(addr) = d.args.first() else {
        return cx.warn(d, "has no address");
    };
    let addr = if addr.contains(':') {
        addr.clone()
    } else {
        format!("{addr}:80")
    };
    let mut s = Server {
        addr,
        weight: 1,
        ..Server::default()
    };
    for p in &d.args[1..] {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        match k {
            "weight" => match v.parse() {
                Ok(w) => s.weight = w,
                Err(_) => cx.warn(d, &format!("has an invalid weight {v:?}")),
            },
            "max_fails" => match v.parse() {
                Ok(n) => s.max_fails = Some(n),
                Err(_) => cx.warn(d, &format!("has an invalid max_fails {v:?}")),
            },
            "fail_timeout" => match time(v) {
                Some(t) => s.fail_timeout = Some(t),
                None => cx.warn(d, &format!("has an invalid fail_timeout {v:?}")),
            },
            "slow_start" => up.slow_start = time(v).or(up.slow_start.take()),
            "down" => s.down = true,
            "backup" => s.backup = true,
            "max_conns" => match v.parse() {
                Ok(n) => s.max_conns = n,
                Err(_) => cx.warn(d, &format!("has an invalid max_conns {v:?}")),
            },
            _ => cx.warnings.push(format!(
                "{}: server parameter {p:?} is not understood; ignored",
                d.at()
            )),
        }
    }
    up.servers.push(s);
}

/// `proxy_pass` target -> upstream name, creating an upstream for a bare address.
fn target(cx: &mut Cx, d: &Directive, scheme: bool) -> Option<String> {
    let raw = d.args.first()?;
    let rest = if scheme {
        match raw
            .strip_prefix("http://")
            .or_else(|| raw.strip_prefix("https://"))
        {
            Some(r) => r,
            None => {
                cx.warn(d, "has a target that is not http://");
                return None;
            }
        }
    } else {
        raw.as_str()
    };
    let host = rest.split('/').next().unwrap_or(rest).to_string();
    if cx.upstreams.contains_key(&host) {
        return Some(host);
    }
    if host.contains('$') {
        cx.errors.push(format!(
            "{}: \"proxy_pass\" with a variable ({raw}) is not supported",
            d.at()
        ));
        return None;
    }
    let name = host.replace([':', '.'], "_");
    cx.upstreams
        .entry(name.clone())
        .or_insert_with(|| Upstream {
            servers: vec![Server {
                addr: if host.contains(':') {
                    host.clone()
                } else {
                    format!("{host}:80")
                },
                weight: 1,
                ..Server::default()
            }],
            ..Upstream::default()
        });
    Some(name)
}

/// `proxy_pass http://NAME[/URI]` -> the upstream and the URI part.
fn pass(cx: &mut Cx, d: &Directive) -> Option<(String, Option<String>)> {
    let name = target(cx, d, true)?;
    let raw = d.args.first()?;
    let rest = raw.split_once("://").map_or(raw.as_str(), |(_, r)| r);
    let uri = rest.find('/').map(|i| rest[i..].to_string());
    Some((name, uri))
}

/// Access control tideway does not implement: never dropped, the import fails (issue 21).
pub(super) const ACCESS: [&str; 5] = [
    "allow",
    "deny",
    "auth_basic",
    "auth_basic_user_file",
    "auth_request",
];

/// An error with file:line for each access control directive, at any depth.
fn refuse_access(errors: &mut Vec<String>, block: &[Directive]) {
    for d in block {
        if ACCESS.contains(&d.name.as_str()) {
            errors.push(format!(
                "{}: \"{}\" is access control, which tideway does not implement; remove it only if the backend enforces the same rule",
                d.at(),
                d.name
            ));
        }
        refuse_access(errors, d.block.as_deref().unwrap_or_default());
    }
}

/// The `location`s in `block`, nested ones too: each proxied location's `proxy_next_upstream*`
/// settings (inherited from `retry`) go to its upstream, the first location's holding.
/// Per-client limits are per listen: `whole` (the server's only location is `location /`,
/// with none nested) takes that location's, returned, as the server's own, since every request
/// goes through it; in any other location they are an error.
fn locations(
    cx: &mut Cx,
    block: &[Directive],
    retry: &Retry,
    passed: &BTreeMap<String, String>,
    whole: bool,
) -> Scope {
    let mut limits = Scope::default();
    for s in block.iter().filter(|s| s.name == "location") {
        let inner = s.block.as_deref().unwrap_or_default();
        let mut here = retry.clone();
        for l in inner {
            if here.take(l, &mut cx.warnings) || (whole && cx.limit(&mut limits, l)) {
                continue;
            }
            if Scope::default().read(l).is_some() {
                cx.errors.push(format!(
                    "{}: \"{}\": per-location limits are not supported yet (only in a server's sole `location /`); set them at server level",
                    l.at(),
                    l.name
                ));
            }
        }
        let up = inner
            .iter()
            .filter(|l| l.name == "proxy_pass")
            .find_map(|l| passed.get(&l.at()));
        if let Some(u) = up.and_then(|up| cx.upstreams.get_mut(up)) {
            match &u.retry {
                Some(r) if *r != here => cx.warnings.push(format!(
                    "{}: proxy_next_upstream settings differ from another location's for upstream {:?} (tideway keeps them per upstream: the first location's hold)",
                    s.at(),
                    up.unwrap_or(&String::new())
                )),
                Some(_) => {}
                None => u.retry = Some(here.clone()),
            }
        }
        locations(cx, inner, &here, passed, false);
    }
    limits
}

/// The settings an http block passes to its servers.
struct Outer<'a> {
    realip: &'a RealIpConf,
    /// Timeouts, body size, `proxy_set_header`.
    proxy: &'a Inherited,
    retry: &'a Retry,
}

fn http_server(cx: &mut Cx, d: &Directive, outer: Outer<'_>) {
    let Outer {
        realip: block_realip,
        proxy: http,
        retry: block_retry,
    } = outer;
    let mut realip = RealIpConf::default();
    // Server-level retry settings hold for every location, wherever they stand.
    let mut retry = block_retry.clone();
    let mut ignored = Vec::new();
    for s in d.block.as_deref().unwrap_or_default() {
        retry.take(s, &mut ignored);
    }
    cx.warnings.append(&mut ignored);
    let mut listens = Vec::new();
    let mut cert = None;
    let mut key = None;
    let mut limits = Scope::default();
    for s in d.block.as_deref().unwrap_or_default() {
        if cx.limit(&mut limits, s) {
            continue;
        }
        match s.name.as_str() {
            "listen" => {
                if let Some(a) = s.args.first() {
                    let has = |flag: &str| s.args.iter().any(|x| x == flag);
                    let default = has("default_server") || has("default");
                    listens.push((listen_addr(a), has("ssl"), has("proxy_protocol"), default));
                }
            }
            _ if realip.take(s, false, &mut cx.warnings) => {}
            _ if s.name.starts_with("proxy_next_upstream") => {}
            "ssl_certificate" => cert = s.args.first().cloned(),
            "ssl_certificate_key" => key = s.args.first().cloned(),
            "server_name"
            | "ssl_protocols"
            | "ssl_ciphers"
            | "ssl_prefer_server_ciphers"
            | "location"
            | "return"
            | "proxy_http_version"
            | "proxy_set_header" => {}
            name if ACCESS.contains(&name) => {}
            _ if Inherited::default().take(s, &mut Notes::default()) => {}
            _ => cx.warn(s, "is not understood in a server block"),
        }
    }
    let mut notes = Notes::default();
    // Each proxy_pass's upstream, by the directive's file:line.
    let mut passed = BTreeMap::new();
    let server = super::routes::server(d, http, false, &mut notes, &mut |s| {
        let found = pass(cx, s);
        if let Some((up, _)) = &found {
            passed.insert(s.at(), up.clone());
        }
        found
    });
    cx.warnings.append(&mut notes.warnings);
    cx.errors.append(&mut notes.errors);
    let block = d.block.as_deref().unwrap_or_default();
    let located: Vec<&Directive> = block.iter().filter(|s| s.name == "location").collect();
    let whole = matches!(&located[..], [l] if l.args == ["/"]
        && !l.block.as_deref().unwrap_or_default().iter().any(|n| n.name == "location"));
    let located = locations(cx, block, &retry, &passed, whole);
    let limits = cx.client_limits(&located.under(&limits), d, false);
    if listens.is_empty() {
        listens.push(("0.0.0.0:80".into(), false, false, false));
    }
    let realip = realip.over(block_realip);
    for (listen, ssl, proxy_protocol, default) in listens {
        let tls = match (ssl, &cert, &key) {
            (true, Some(c), Some(k)) => {
                let at = |p: &String| cx.base.join(p).to_string_lossy().into_owned();
                Some((at(c), at(k)))
            }
            (true, _, _) => {
                cx.warn(
                    d,
                    "listens with ssl but lacks ssl_certificate or ssl_certificate_key",
                );
                continue;
            }
            _ => None,
        };
        let mut server = server.clone();
        server.default = default;
        let existing = cx
            .listeners
            .iter_mut()
            .find(|l| l.listen == listen && l.protocol == "http");
        if let Some(l) = existing {
            // Another server on the same listen: one more set of names.
            if default && l.servers.iter().any(|s| s.default) {
                cx.errors.push(format!(
                    "{}: a duplicate default server for {listen}",
                    d.at()
                ));
            }
            if l.limits != limits {
                cx.errors.push(format!(
                    "{}: per-client limits differ from another server's on {listen}; tideway applies them per listen: set the same limits on every server of a listen",
                    d.at()
                ));
            }
            l.servers.push(server);
            l.tls.extend(tls);
            l.proxy_protocol |= proxy_protocol;
            continue;
        }
        let real_ip = realip.render(false, proxy_protocol, &d.at(), &mut cx.warnings);
        cx.listeners.push(Listener {
            listen,
            protocol: "http",
            upstream: String::new(),
            servers: vec![server],
            tls: tls.into_iter().collect(),
            proxy_protocol,
            real_ip,
            limits: limits.clone(),
        });
    }
}

fn stream_server(cx: &mut Cx, d: &Directive, block_realip: &RealIpConf) {
    let mut realip = RealIpConf::default();
    let mut listens = Vec::new();
    let mut pass = None;
    let mut limits = Scope::default();
    for s in d.block.as_deref().unwrap_or_default() {
        if cx.limit(&mut limits, s) {
            continue;
        }
        match s.name.as_str() {
            "listen" => listens.extend(
                s.args
                    .first()
                    .map(|a| (listen_addr(a), s.args.iter().any(|x| x == "proxy_protocol"))),
            ),
            _ if realip.take(s, true, &mut cx.warnings) => {}
            "proxy_pass" => pass = target(cx, s, false),
            "proxy_timeout" => {
                if let (Some(t), Some(p)) = (s.args.first().and_then(|v| time(v)), pass.clone()) {
                    if let Some(u) = cx.upstreams.get_mut(&p) {
                        u.idle_timeout = Some(t);
                    }
                }
            }
            "proxy_connect_timeout" => {}
            name if ACCESS.contains(&name) => {}
            _ => cx.warn(s, "is not understood in a stream server block"),
        }
    }
    let Some(upstream) = pass else {
        return cx.warn(d, "has no proxy_pass");
    };
    let limits = cx.client_limits(&limits, d, true);
    let realip = realip.over(block_realip);
    for (listen, proxy_protocol) in listens {
        let real_ip = realip.render(true, proxy_protocol, &d.at(), &mut cx.warnings);
        cx.listeners.push(Listener {
            listen,
            protocol: "tcp",
            upstream: upstream.clone(),
            servers: Vec::new(),
            tls: Vec::new(),
            proxy_protocol,
            real_ip,
            limits: limits.clone(),
        });
    }
}

/// Convert a parsed nginx config; relative certificate paths resolve against `base`.
pub fn convert(top: &[Directive], base: &std::path::Path) -> Converted {
    let mut cx = Cx {
        base: base.to_path_buf(),
        warnings: Vec::new(),
        errors: Vec::new(),
        upstreams: BTreeMap::new(),
        listeners: Vec::new(),
        zones: BTreeMap::new(),
        outer: Scope::default(),
    };
    refuse_access(&mut cx.errors, top);
    for d in top
        .iter()
        .filter(|d| d.name == "upstream" && d.block.is_some())
    {
        upstream(&mut cx, d);
    }
    for d in top
        .iter()
        .filter(|d| !(d.name == "upstream" && d.block.is_some()))
    {
        match (d.name.as_str(), &d.block) {
            ("http", Some(b)) | ("stream", Some(b)) => {
                let stream = d.name == "stream";
                // Upstreams first, so proxy_pass can refer to ones defined later.
                for u in b.iter().filter(|x| x.name == "upstream") {
                    upstream(&mut cx, u);
                }
                // Zones and block-level limits too: every server inherits them.
                let mut outer = Scope::default();
                for z in b.iter() {
                    if z.name == "limit_req_zone" || z.name == "limit_conn_zone" {
                        match super::limit::zone(z) {
                            Ok((name, zone)) => {
                                cx.zones.insert(name, zone);
                            }
                            Err(e) => cx.errors.push(e),
                        }
                    } else {
                        cx.limit(&mut outer, z);
                    }
                }
                cx.outer = outer;
                // The block's realip and retry settings, wherever they stand in it, hold for its
                // servers.
                let mut realip = RealIpConf::default();
                // So do its proxy settings (timeouts, body size, proxy_set_header).
                let mut notes = Notes::default();
                let http = Inherited::default().within(b, &mut notes);
                cx.errors.append(&mut notes.errors);
                let mut retry = Retry::default();
                for s in b
                    .iter()
                    .filter(|x| x.name != "upstream" && x.name != "server")
                {
                    realip.take(s, stream, &mut cx.warnings);
                    if !stream {
                        retry.take(s, &mut cx.warnings);
                    }
                }
                for s in b.iter().filter(|x| x.name != "upstream") {
                    match (s.name.as_str(), stream) {
                        (
                            "limit_req_zone" | "limit_conn_zone" | "limit_req" | "limit_conn"
                            | "limit_req_status" | "limit_conn_status",
                            _,
                        ) => {}
                        ("server", false) => {
                            let outer = Outer {
                                realip: &realip,
                                proxy: &http,
                                retry: &retry,
                            };
                            http_server(&mut cx, s, outer)
                        }
                        ("server", true) => stream_server(&mut cx, s, &realip),
                        ("map", _) | ("include", _) => {}
                        ("proxy_set_header" | "proxy_http_version", false) => {}
                        (_, false) if Inherited::default().take(s, &mut Notes::default()) => {}
                        (name, _) if RealIpConf::reads(name, stream) => {}
                        (name, false) if name.starts_with("proxy_next_upstream") => {}
                        (name, _) if ACCESS.contains(&name) => {}
                        _ => cx.warn(s, &format!("is not understood in the {} block", d.name)),
                    }
                }
            }
            // A conf.d snippet: its server blocks are http servers.
            ("server", Some(_)) => {
                let outer = Outer {
                    realip: &RealIpConf::default(),
                    proxy: &Inherited::default(),
                    retry: &Retry::default(),
                };
                http_server(&mut cx, d, outer)
            }
            _ => cx.warn(d, "is not understood at the top level"),
        }
    }
    // A listen whose servers have no location serves nothing tideway can serve.
    let mut empty = Vec::new();
    cx.listeners.retain(|l| {
        let keep = l.protocol != "http" || l.servers.iter().any(|s| !s.locations.is_empty());
        if !keep {
            empty.push(l.listen.clone());
        }
        keep
    });
    for listen in empty {
        cx.warnings.push(format!(
            "listen {listen}: no server on it has a location; not served"
        ));
    }
    // An upstream is named for the logs of each http listener.
    for l in cx.listeners.iter_mut().filter(|l| l.protocol == "http") {
        l.upstream = l
            .servers
            .iter()
            .flat_map(|s| &s.locations)
            .find_map(|loc| loc.action.upstream())
            .unwrap_or_default()
            .to_string();
    }
    let Cx {
        warnings,
        errors,
        upstreams,
        listeners,
        zones,
        ..
    } = cx;
    let mut toml = render(&upstreams, &listeners);
    toml.push_str(&super::limit::render_zones(&zones));
    Converted {
        toml,
        warnings,
        errors,
    }
}

fn render(upstreams: &BTreeMap<String, Upstream>, listeners: &[Listener]) -> String {
    let mut out = String::from("# Converted from nginx by `tideway import-nginx`.\n");
    for l in listeners {
        let _ = write!(out, "\n[[listener]]\nlisten = {:?}\n", l.listen);
        if l.protocol != "http" {
            let _ = writeln!(out, "protocol = {:?}", l.protocol);
        }
        if l.servers.is_empty() {
            let _ = writeln!(out, "upstream = {:?}", l.upstream);
        }
        match &l.tls[..] {
            [] => {}
            [(c, k)] => {
                let _ = writeln!(out, "tls = {{ cert = {c:?}, key = {k:?} }}");
            }
            many => {
                out.push_str("tls = [\n");
                for (c, k) in many {
                    let _ = writeln!(out, "  {{ cert = {c:?}, key = {k:?} }},");
                }
                out.push_str("]\n");
            }
        }
        if l.proxy_protocol {
            out.push_str("proxy_protocol = true\n");
        }
        if let Some(r) = &l.real_ip {
            let _ = writeln!(out, "real_ip = {r}");
        }
        out.push_str(&l.limits);
        for s in &l.servers {
            for loc in &s.locations {
                super::routes::render(&mut out, "listener.route", Some(s), loc);
            }
        }
    }
    for (name, u) in upstreams {
        let _ = write!(out, "\n[upstream.{name}]\n");
        if let Some(b) = u.balance {
            let _ = writeln!(out, "balance = {b:?}");
        }
        if let Some(k) = &u.hash_key {
            let _ = writeln!(out, "hash_key = {k:?}");
        }
        if u.plain_hash {
            out.push_str("hash_consistent = false\n");
        }
        if let Some(r) = &u.retry {
            let _ = writeln!(out, "next_upstream = {:?}", r.conditions);
            let _ = writeln!(out, "next_upstream_tries = {}", r.tries);
            if let Some(t) = &r.timeout {
                let _ = writeln!(out, "next_upstream_timeout = {t:?}");
            }
        }
        if let Some(t) = &u.slow_start {
            let _ = writeln!(out, "slow_start = {t:?}");
        }
        if let Some(t) = &u.idle_timeout {
            let _ = writeln!(out, "idle_timeout = {t:?}");
        }
        out.push_str("backends = [\n");
        // nginx takes a server listed twice as two peers; tideway ids must differ.
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &u.servers {
            let _ = write!(out, "  {{ addr = {:?}", s.addr);
            let n = seen.entry(&s.addr).or_default();
            *n += 1;
            if *n > 1 {
                let _ = write!(out, ", id = \"{}@{n}\"", s.addr);
            }
            if s.weight != 1 {
                let _ = write!(out, ", weight = {}", s.weight);
            }
            if s.max_conns != 0 {
                let _ = write!(out, ", max_conns = {}", s.max_conns);
            }
            if s.down {
                out.push_str(", state = \"disabled\"");
            }
            if s.backup {
                out.push_str(", backup = true");
            }
            if let Some(m) = s.max_fails {
                let _ = write!(out, ", max_fails = {m}");
            }
            if let Some(t) = &s.fail_timeout {
                let _ = write!(out, ", fail_timeout = {t:?}");
            }
            out.push_str(" },\n");
        }
        out.push_str("]\n");
    }
    out
}
