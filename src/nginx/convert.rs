//! nginx directives -> tideway TOML. What is understood becomes config; anything else is a
//! warning naming the directive and its file:line, and is ignored.

use super::parse::Directive;
use super::realip::RealIpConf;
use super::routes::{Inherited, Notes};
use crate::config::{LocationConfig, RouteAction, ServerConfig};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The result of a conversion.
#[derive(Debug, Default)]
pub struct Converted {
    pub toml: String,
    pub warnings: Vec<String>,
    /// What makes the import fail, each with its nginx file:line.
    pub errors: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct Upstream {
    balance: Option<&'static str>,
    hash_key: Option<String>,
    servers: Vec<Server>,
    max_fails: Option<u32>,
    fail_timeout: Option<String>,
    slow_start: Option<String>,
    idle_timeout: Option<String>,
}

#[derive(Debug, Clone)]
struct Server {
    addr: String,
    weight: u32,
    max_conns: u32,
    down: bool,
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
}

struct Cx {
    /// Directory relative file names (certificates) resolve against: the main file's.
    base: std::path::PathBuf,
    warnings: Vec<String>,
    errors: Vec<String>,
    upstreams: BTreeMap<String, Upstream>,
    listeners: Vec<Listener>,
}

impl Cx {
    fn warn(&mut self, d: &Directive, why: &str) {
        self.warnings
            .push(format!("{}: \"{}\" {why}; ignored", d.at(), d.name));
    }
}

/// nginx time ("30", "10s", "1m", "500ms") as a tideway duration string.
fn time(v: &str) -> Option<String> {
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

/// nginx hash key -> tideway hash_key.
fn hash_key(v: &str) -> Option<String> {
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
                match s.args.first().and_then(|k| hash_key(k)) {
                    Some(k) => up.hash_key = Some(k),
                    None => cx.warn(s, "uses a key tideway cannot hash ($remote_addr, $http_*, $cookie_*, $arg_* are understood); hashing the client address instead"),
                }
                if s.args.get(1).map(String::as_str) != Some("consistent") {
                    cx.warnings.push(format!("{}: \"hash\" without \"consistent\": tideway always hashes consistently (ketama), so keys may map differently than nginx's plain hash", s.at()));
                }
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
        max_conns: 0,
        down: false,
    };
    for p in &d.args[1..] {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        match k {
            "weight" => match v.parse() {
                Ok(w) => s.weight = w,
                Err(_) => cx.warn(d, &format!("has an invalid weight {v:?}")),
            },
            "max_fails" => up.max_fails = v.parse().ok().or(up.max_fails),
            "fail_timeout" => up.fail_timeout = time(v).or(up.fail_timeout.take()),
            "slow_start" => up.slow_start = time(v).or(up.slow_start.take()),
            "down" => s.down = true,
            "backup" => {
                cx.warnings.push(format!(
                    "{}: backup server {} is not supported; ignored",
                    d.at(),
                    s.addr
                ));
                return;
            }
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
                max_conns: 0,
                down: false,
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

fn http_server(cx: &mut Cx, d: &Directive, block_realip: &RealIpConf, http: &Inherited) {
    let mut realip = RealIpConf::default();
    let mut listens = Vec::new();
    let mut cert = None;
    let mut key = None;
    for s in d.block.as_deref().unwrap_or_default() {
        match s.name.as_str() {
            "listen" => {
                if let Some(a) = s.args.first() {
                    let has = |flag: &str| s.args.iter().any(|x| x == flag);
                    let default = has("default_server") || has("default");
                    listens.push((listen_addr(a), has("ssl"), has("proxy_protocol"), default));
                }
            }
            _ if realip.take(s, false, &mut cx.warnings) => {}
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
            _ if Inherited::default().take(s, &mut Notes::default()) => {}
            _ => cx.warn(s, "is not understood in a server block"),
        }
    }
    let mut notes = Notes::default();
    let server = super::routes::server(d, http, false, &mut notes, &mut |s| pass(cx, s));
    cx.warnings.append(&mut notes.warnings);
    cx.errors.append(&mut notes.errors);
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
        });
    }
}

fn stream_server(cx: &mut Cx, d: &Directive, block_realip: &RealIpConf) {
    let mut realip = RealIpConf::default();
    let mut listens = Vec::new();
    let mut pass = None;
    for s in d.block.as_deref().unwrap_or_default() {
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
            _ => cx.warn(s, "is not understood in a stream server block"),
        }
    }
    let Some(upstream) = pass else {
        return cx.warn(d, "has no proxy_pass");
    };
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
    };
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
                // The block's realip settings, wherever they stand in it, hold for its servers.
                let mut realip = RealIpConf::default();
                // So do its proxy settings (timeouts, body size, proxy_set_header).
                let mut notes = Notes::default();
                let http = Inherited::default().within(b, &mut notes);
                cx.errors.append(&mut notes.errors);
                for s in b
                    .iter()
                    .filter(|x| x.name != "upstream" && x.name != "server")
                {
                    realip.take(s, stream, &mut cx.warnings);
                }
                for s in b.iter().filter(|x| x.name != "upstream") {
                    match (s.name.as_str(), stream) {
                        ("server", false) => http_server(&mut cx, s, &realip, &http),
                        ("server", true) => stream_server(&mut cx, s, &realip),
                        ("map", _) | ("include", _) => {}
                        ("proxy_set_header" | "proxy_http_version", false) => {}
                        (_, false) if Inherited::default().take(s, &mut Notes::default()) => {}
                        (name, _) if RealIpConf::reads(name, stream) => {}
                        _ => cx.warn(s, &format!("is not understood in the {} block", d.name)),
                    }
                }
            }
            // A conf.d snippet: its server blocks are http servers.
            ("server", Some(_)) => {
                http_server(&mut cx, d, &RealIpConf::default(), &Inherited::default())
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
        base: _,
        warnings,
        errors,
        upstreams,
        listeners,
    } = cx;
    Converted {
        toml: render(&upstreams, &listeners),
        warnings,
        errors,
    }
}

/// One `[[listener.route]]` table (with the server's host list when `server` is given), then
/// its nested routes.
fn render_route(out: &mut String, table: &str, server: Option<&ServerConfig>, l: &LocationConfig) {
    let _ = writeln!(out, "\n[[{table}]]");
    if let Some(s) = server.filter(|s| !s.names.is_empty()) {
        let hosts: Vec<String> = s.names.iter().map(|n| format!("{n:?}")).collect();
        let _ = writeln!(out, "host = [{}]", hosts.join(", "));
    }
    if let Some(s) = server {
        if s.default {
            out.push_str("default = true\n");
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
    let _ = writeln!(out, "origin = {:?}", l.at);
    let inner = format!("{table}.route");
    for n in &l.nested {
        render_route(out, &inner, None, n);
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
        for s in &l.servers {
            for loc in &s.locations {
                render_route(&mut out, "listener.route", Some(s), loc);
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
        if let Some(m) = u.max_fails {
            let _ = writeln!(out, "max_fails = {m}");
        }
        if let Some(t) = &u.fail_timeout {
            let _ = writeln!(out, "fail_timeout = {t:?}");
        }
        if let Some(t) = &u.slow_start {
            let _ = writeln!(out, "slow_start = {t:?}");
        }
        if let Some(t) = &u.idle_timeout {
            let _ = writeln!(out, "idle_timeout = {t:?}");
        }
        out.push_str("backends = [\n");
        for s in &u.servers {
            let _ = write!(out, "  {{ addr = {:?}", s.addr);
            if s.weight != 1 {
                let _ = write!(out, ", weight = {}", s.weight);
            }
            if s.max_conns != 0 {
                let _ = write!(out, ", max_conns = {}", s.max_conns);
            }
            if s.down {
                out.push_str(", state = \"disabled\"");
            }
            out.push_str(" },\n");
        }
        out.push_str("]\n");
    }
    out
}
