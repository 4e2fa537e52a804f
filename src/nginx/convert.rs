//! nginx directives -> tideway TOML. What is understood becomes config; what is not is a
//! finding of the [`Report`] naming the directive and its file:line (approximated, ignored,
//! skipped or an error).

use super::limit::Scope;
use super::parse::Directive;
use super::realip::RealIpConf;
use super::report::{warning_class, Class, Finding, Report};
use super::retry::Retry;
use super::routes::{Inherited, Notes};
use crate::config::ServerConfig;
use std::collections::BTreeMap;

mod render;
use render::render;

/// The result of a conversion.
#[derive(Debug, Default)]
pub struct Converted {
    pub toml: String,
    /// What is approximated, ignored or skipped, each with its nginx file:line.
    pub warnings: Vec<String>,
    /// What makes the import fail: what nginx itself would refuse, or what tideway cannot
    /// honour (a limit keyed by other than the client address, access control, content it
    /// does not serve), each with its nginx file:line.
    pub errors: Vec<String>,
    /// Every directive and what became of it.
    pub report: Report,
}

/// How strictly to import.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options {
    /// Every ignored directive is an error.
    pub strict: bool,
    /// A location nginx serves itself (files, FastCGI...) or a UDP listen is left out,
    /// reported as skipped, instead of failing the import.
    pub skip_unproxied: bool,
}

#[derive(Debug, Default, Clone)]
pub(super) struct Upstream {
    balance: Option<&'static str>,
    hash_key: Option<String>,
    /// `hash KEY` without `consistent`.
    plain_hash: bool,
    servers: Vec<Server>,
    slow_start: Option<String>,
    pub(super) idle_timeout: Option<String>,
    /// The `proxy_next_upstream*` settings of the locations that proxy here.
    retry: Option<Retry>,
    /// The nginx file:line it comes from (its `upstream` block or `proxy_pass`).
    at: String,
    /// NGINX Plus's `sticky cookie`.
    sticky: Option<super::sticky::Sticky>,
    /// Set by the first location proxying here: its `tls = { ... }` line (`proxy_pass
    /// https://`), or None (`http://`).
    tls: Option<Option<String>>,
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
    /// nginx's `resolve`: the name is resolved again on its TTL.
    resolve: bool,
}

#[derive(Debug)]
pub(super) struct Listener {
    /// The nginx file:line of the `listen` (or `server` block) it comes from.
    pub(super) at: String,
    pub(super) listen: String,
    pub(super) protocol: &'static str,
    pub(super) upstream: String,
    /// An http listener's servers (the `server` blocks on its `listen`, in file order).
    pub(super) servers: Vec<ServerConfig>,
    pub(super) proxy_protocol: bool,
    /// The `real_ip = { ... }` value, when realip is on.
    pub(super) real_ip: Option<String>,
    /// The `client_limits = [...]` line, or empty.
    pub(super) limits: String,
    /// A PROXY header's address is believed only from trusted balancers (`real_ip`).
    pub(super) trusts_proxy: bool,
    /// HTTP/2 and the head limits its servers ask for ([`super::http2`]).
    pub(super) head: super::http2::ListenerHead,
}

pub(super) struct Cx {
    /// Directory relative file names (certificates) resolve against: the main file's.
    pub(super) base: std::path::PathBuf,
    pub(super) warnings: Vec<String>,
    pub(super) errors: Vec<String>,
    pub(super) upstreams: BTreeMap<String, Upstream>,
    pub(super) listeners: Vec<Listener>,
    /// `limit_req_zone` and `limit_conn_zone`, by name.
    pub(super) zones: BTreeMap<String, super::limit::Zone>,
    /// The limit directives of the enclosing http or stream block.
    pub(super) outer: Scope,
    pub(super) options: Options,
    /// Findings with their class known where they are made.
    pub(super) notes: Vec<Finding>,
    /// The `resolver` read (http or upstream block).
    pub(super) resolver: super::resolver::ResolverConf,
}

impl Cx {
    /// Read a limit directive into `scope`; true if `d` was one.
    pub(super) fn limit(&mut self, scope: &mut Scope, d: &Directive) -> bool {
        match scope.read(d) {
            None => false,
            Some(r) => {
                self.errors.extend(r.err());
                true
            }
        }
    }

    /// The `client_limits` line for a listener with these limits.
    pub(super) fn client_limits(&mut self, scope: &Scope, d: &Directive, tcp: bool) -> String {
        let all = scope.under(&self.outer);
        all.render(&self.zones, tcp).unwrap_or_else(|e| {
            self.errors.push(format!("{}: {e}", d.at()));
            String::new()
        })
    }

    pub(super) fn note(&mut self, d: &Directive, class: Class, why: impl Into<String>) {
        self.notes.push(Finding::of(d, class, why));
    }

    pub(super) fn warn(&mut self, d: &Directive, why: &str) {
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

/// nginx hash key -> tideway hash_key: `ip` for the client address, else the nginx expression
/// itself (when tideway can evaluate it). `$arg_a`, `$http_x` and `$cookie_c` stay
/// expressions rather than tideway's short forms (`query:a`...): a missing one is then empty,
/// which nginx balances round robin, where a short form falls back to the client address.
fn hash_key(v: &str) -> Option<String> {
    if v == "$remote_addr" || v == "$binary_remote_addr" {
        return Some("ip".into());
    }
    v.parse::<crate::config::key_expr::KeyExpr>()
        .ok()
        .map(|_| v.to_string())
}

fn upstream(cx: &mut Cx, d: &Directive) {
    let Some(name) = d.args.first() else {
        return cx.warn(d, "has no name");
    };
    let mut up = Upstream {
        at: d.at(),
        ..Upstream::default()
    };
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
                up.balance = Some("hash");
                up.hash_key = Some("ip".into());
            }
            "least_conn" => up.balance = Some("least_conn"),
            "random" => up.balance = Some("p2c"),
            "sticky" => match super::sticky::read(s) {
                Ok(Some(st)) => up.sticky = Some(st),
                Ok(None) => cx.warn(s, "is read only in its \"cookie\" form"),
                Err(e) => cx.errors.push(e),
            },
            "keepalive" | "keepalive_timeout" | "keepalive_requests" | "keepalive_time"
            | "zone" => {}
            "resolver" => cx.resolver.take(s, &mut cx.warnings),
            _ => cx.warn(s, "is not understood in an upstream block"),
        }
    }
    if let Some(e) = up
        .sticky
        .as_ref()
        .and_then(|st| super::sticky::conflict(st, up.balance))
    {
        cx.errors.push(e);
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
            "slow_start" => {
                up.slow_start = time(v).or(up.slow_start.take());
                cx.notes.push(param(
                    d,
                    k,
                    Class::Approximated,
                    "(server parameter) applies to the whole upstream in tideway",
                ));
            }
            "down" => s.down = true,
            "backup" => s.backup = true,
            "resolve" if s.addr.parse::<std::net::SocketAddr>().is_ok() => cx.notes.push(param(
                d,
                k,
                Class::Ignored,
                "(server parameter) on an address has nothing to resolve",
            )),
            "resolve" => s.resolve = true,
            "max_conns" => match v.parse() {
                Ok(n) => s.max_conns = n,
                Err(_) => cx.warn(d, &format!("has an invalid max_conns {v:?}")),
            },
            _ => cx.notes.push(param(
                d,
                k,
                Class::Ignored,
                "(server parameter) is not understood",
            )),
        }
    }
    up.servers.push(s);
}

/// A finding about one parameter of directive `d` (a `server` or `listen` line).
pub(super) fn param(d: &Directive, p: &str, class: Class, why: &str) -> Finding {
    Finding {
        at: d.at(),
        name: p.to_string(),
        class,
        why: why.to_string(),
    }
}

/// `proxy_pass` target -> upstream name, creating an upstream for a bare address. In http
/// (`scheme`: `http://` or `https://`), a target tideway cannot proxy to returns None and is
/// judged with its location ([`super::content`]); in stream it is an error here.
pub(super) fn target(cx: &mut Cx, d: &Directive, scheme: bool) -> Option<String> {
    let raw = d.args.first()?;
    let (rest, port) = match raw.strip_prefix("https://") {
        Some(rest) if scheme => (rest, 443),
        _ if scheme => (raw.strip_prefix("http://")?, 80),
        _ => (raw.as_str(), 80),
    };
    let mut host = rest.split('/').next().unwrap_or(rest).to_string();
    // A bare address without its port: https:// names port 443 (and an upstream of its own).
    if port == 443
        && !cx.upstreams.contains_key(&host)
        && !host.contains(':')
        && !host.contains('$')
    {
        host = format!("{host}:443");
    }
    if cx.upstreams.contains_key(&host) {
        return Some(host);
    }
    if host.contains('$') {
        if !scheme {
            cx.note(
                d,
                Class::Error,
                format!("with a variable ({raw}) is not supported"),
            );
        }
        return None;
    }
    let name = host.replace([':', '.'], "_");
    let at = d.at();
    cx.upstreams
        .entry(name.clone())
        .or_insert_with(|| Upstream {
            at,
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

/// The `location`s in `block`, nested ones too: each proxied location's `proxy_next_upstream*`
/// settings (inherited from `retry`) go to its upstream, the first location's holding. So do
/// its `proxy_pass` scheme and `proxy_ssl_*` settings, which must agree between the
/// locations proxying to one upstream: tideway speaks to an upstream one way.
fn locations(cx: &mut Cx, block: &[Directive], retry: &Retry, passed: &BTreeMap<String, String>) {
    for s in block.iter().filter(|s| s.name == "location") {
        let inner = s.block.as_deref().unwrap_or_default();
        let mut here = retry.clone();
        for l in inner {
            here.take(l, &mut cx.warnings);
        }
        let pass = inner
            .iter()
            .filter(|l| l.name == "proxy_pass")
            .find_map(|l| passed.get(&l.at()).map(|up| (l, up)));
        let tls = pass.and_then(|(l, _)| {
            let https = l.args.first()?.strip_prefix("https://")?;
            let host = https.split('/').next().unwrap_or(https);
            Some(
                here.ssl
                    .render(host, &cx.base)
                    .map_err(|e| format!("{}: {e}", l.at())),
            )
        });
        let tls = match tls.transpose() {
            Ok(tls) => tls,
            Err(e) => {
                cx.errors.push(e);
                None
            }
        };
        let up = pass.map(|(_, up)| up);
        if let Some((l, name)) = pass {
            upstream_tls(cx, name, tls, &here.ssl, &l.at());
        }
        if let Some(u) = up.and_then(|up| cx.upstreams.get_mut(up)) {
            match &u.retry {
                Some(r) if !r.same_retries(&here) => cx.warnings.push(format!(
                    "{}: proxy_next_upstream settings differ from another location's for upstream {:?} (tideway keeps them per upstream: the first location's hold)",
                    s.at(),
                    up.unwrap_or(&String::new())
                )),
                Some(_) => {}
                None => u.retry = Some(here.clone()),
            }
        }
        locations(cx, inner, &here, passed);
    }
}

/// Speak to upstream `name` with `tls` (a `tls = { ... }` line, or None: plain), as `ssl`
/// made it at `at`: the first one to proxy there sets it; another way later is an error.
pub(super) fn upstream_tls(
    cx: &mut Cx,
    name: &str,
    tls: Option<String>,
    ssl: &super::proxy_ssl::ProxySsl,
    at: &str,
) {
    if ssl.verify && ssl.trusted.is_none() && tls.is_some() {
        cx.warnings.push(format!("{at}: proxy_ssl_verify on without proxy_ssl_trusted_certificate: nginx trusts no CA then and fails every handshake; tideway checks against the system's CAs"));
    }
    if let Some(u) = cx.upstreams.get_mut(name) {
        match &u.tls {
            Some(first) if *first != tls => cx.errors.push(format!(
                "{at}: upstream {name:?} is proxied to with another scheme or other proxy_ssl_* settings elsewhere; tideway speaks to an upstream one way: give each its own upstream"
            )),
            Some(_) => {}
            None => u.tls = Some(tls),
        }
    }
}

/// The settings an http block passes to its servers.
struct Outer<'a> {
    realip: &'a RealIpConf,
    /// Timeouts, body size, `proxy_set_header`.
    proxy: &'a Inherited,
    retry: &'a Retry,
    /// `http2`, `http2_max_concurrent_streams`, `large_client_header_buffers`.
    head: &'a super::http2::HeadConf,
}

fn http_server(cx: &mut Cx, d: &Directive, outer: Outer<'_>) {
    let Outer {
        realip: block_realip,
        proxy: http,
        retry: block_retry,
        head: block_head,
    } = outer;
    let mut head = super::http2::HeadConf::default();
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
            "listen" => listens.extend(
                super::listen::read(s, false, cx.options.skip_unproxied, &mut cx.notes)
                    .map(|l| (l, s.at())),
            ),
            _ if realip.take(s, false, &mut cx.warnings) => {}
            _ if head.take(s, &mut cx.errors) => {}
            _ if s.name.starts_with("proxy_next_upstream") || s.name.starts_with("proxy_ssl_") => {}
            "ssl_certificate" => cert = s.args.first().cloned(),
            "ssl_certificate_key" => key = s.args.first().cloned(),
            "server_name"
            | "ssl_protocols"
            | "ssl_ciphers"
            | "ssl_prefer_server_ciphers"
            | "location"
            | "return"
            | "proxy_http_version"
            | "proxy_set_header"
            | "add_header" => {}
            name if super::access::ACCESS.contains(&name) => {}
            _ if Inherited::default().take(s, &mut Notes::default()) => {}
            _ => cx.warn(s, "is not understood in a server block"),
        }
    }
    let mut notes = Notes::default();
    // Each proxy_pass's upstream, by the directive's file:line.
    let mut passed = BTreeMap::new();
    let http = http.limited(limits.under(&cx.outer), &cx.zones);
    let mut server = super::routes::server(d, &http, false, &mut notes, &mut |s| {
        let found = pass(cx, s);
        if let Some((up, _)) = &found {
            passed.insert(s.at(), up.clone());
        }
        found
    });
    cx.warnings.append(&mut notes.warnings);
    cx.errors.append(&mut notes.errors);
    let block = d.block.as_deref().unwrap_or_default();
    // A `return` in the server answers everything: its locations are never used.
    if !block.iter().any(|s| s.name == "return") {
        let skip = cx.options.skip_unproxied;
        super::content::check(block, &mut server.locations, skip, &mut cx.notes);
    }
    locations(cx, block, &retry, &passed);
    let scope = limits.under(&cx.outer);
    let limits = cx.client_limits(&limits, d, false);
    if listens.is_empty() && !block.iter().any(|s| s.name == "listen") {
        let all = super::listen::Listen {
            addr: "0.0.0.0:80".into(),
            ..Default::default()
        };
        listens.push((all, d.at()));
    }
    let realip = realip.over(block_realip);
    let head = head.over(block_head);
    for (l, at) in listens {
        let super::listen::Listen {
            addr: listen,
            ssl,
            proxy_protocol,
            default,
            http2,
        } = l;
        let tls = match (ssl, &cert, &key) {
            (true, Some(c), Some(k)) => Some(crate::config::tls::TlsFiles {
                cert: cx.base.join(c),
                key: cx.base.join(k),
            }),
            (true, _, _) => {
                cx.errors.push(format!(
                    "{at}: \"listen\" with ssl needs ssl_certificate and ssl_certificate_key in its server (nginx refuses it too)"
                ));
                continue;
            }
            _ => None,
        };
        let mut server = server.clone();
        server.default = default;
        // Its own certificate, served when SNI names it (a route's `tls`).
        server.tls = tls;
        let existing = cx
            .listeners
            .iter_mut()
            .find(|l| l.listen == listen && l.protocol == "http");
        if let Some(l) = existing {
            // Another server on the same listen: one more set of names, none of them taken.
            let taken = l
                .servers
                .iter()
                .find_map(|s| match (&s.names[..], &server.names[..]) {
                    ([], []) => Some("\"\""),
                    (theirs, ours) => ours.iter().find(|n| theirs.contains(n)).map(String::as_str),
                });
            if let Some(name) = taken {
                cx.errors.push(format!(
                    "{}: server_name {name} is another server's on {listen} too; nginx would ignore it here (\"conflicting server name\"), tideway refuses it: keep it in one server",
                    d.at()
                ));
            }
            if default && l.servers.iter().any(|s| s.default) {
                cx.errors.push(format!(
                    "{}: a duplicate default server for {listen}",
                    d.at()
                ));
            }
            if l.servers.iter().any(|s| s.tls.is_some()) != server.tls.is_some() {
                cx.errors.push(format!(
                    "{}: {listen} has ssl for some of its servers and not for this one (nginx makes every server on it TLS): give each server's listen ssl and its ssl_certificate",
                    d.at()
                ));
            }
            if l.limits != limits {
                // Limits other than the listen's: each of the server's routes carries them.
                let own = scope.resolve(&cx.zones, false).unwrap_or_default();
                super::limit::carry(&mut server.locations, &own);
            }
            l.servers.push(server);
            l.proxy_protocol |= proxy_protocol;
            l.head.add(http2, head.clone());
            continue;
        }
        let real_ip = realip.render(false, proxy_protocol, &d.at(), &mut cx.warnings);
        cx.listeners.push(Listener {
            at,
            listen,
            protocol: "http",
            upstream: String::new(),
            servers: vec![server],
            proxy_protocol,
            trusts_proxy: proxy_protocol && realip.trusts_proxy_protocol(),
            real_ip,
            limits: limits.clone(),
            head: super::http2::ListenerHead::of(http2, head.clone()),
        });
    }
}

/// Convert a parsed nginx config; relative certificate paths resolve against `base`.
pub fn convert(top: &[Directive], base: &std::path::Path, options: Options) -> Converted {
    let mut cx = Cx {
        base: base.to_path_buf(),
        warnings: Vec::new(),
        errors: Vec::new(),
        upstreams: BTreeMap::new(),
        listeners: Vec::new(),
        zones: BTreeMap::new(),
        outer: Scope::default(),
        options,
        notes: Vec::new(),
        resolver: Default::default(),
    };
    super::access::refuse(&mut cx.errors, top, false, true);
    // The http blocks' `map`s, as `[map.NAME]` tables.
    let mut maps = String::new();
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
                maps.push_str(&http.render_maps());
                cx.errors.append(&mut notes.errors);
                let mut retry = Retry::default();
                let mut head = super::http2::HeadConf::default();
                let mut stream_ssl = super::stream::StreamSsl::default();
                for s in b
                    .iter()
                    .filter(|x| x.name != "upstream" && x.name != "server")
                {
                    realip.take(s, stream, &mut cx.warnings);
                    if !stream {
                        retry.take(s, &mut cx.warnings);
                        head.take(s, &mut cx.errors);
                    } else {
                        stream_ssl.take(s, &mut cx.warnings);
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
                                head: &head,
                            };
                            http_server(&mut cx, s, outer)
                        }
                        ("server", true) => super::stream::server(&mut cx, s, &realip, &stream_ssl),
                        (name, true) if super::stream::StreamSsl::reads(name) => {}
                        ("resolver", false) => cx.resolver.take(s, &mut cx.warnings),
                        ("map", _) | ("include", _) => {}
                        (name, false) if super::http2::HeadConf::reads(name) => {}
                        ("proxy_set_header" | "add_header" | "proxy_http_version", false) => {}
                        (_, false) if Inherited::default().take(s, &mut Notes::default()) => {}
                        (name, _) if RealIpConf::reads(name, stream) => {}
                        (name, false)
                            if name.starts_with("proxy_next_upstream")
                                || name.starts_with("proxy_ssl_") => {}
                        (name, _) if super::access::ACCESS.contains(&name) => {}
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
                    head: &Default::default(),
                };
                http_server(&mut cx, d, outer)
            }
            _ => cx.warn(d, "is not understood at the top level"),
        }
    }
    super::access::refuse_spoofable(
        &mut cx.errors,
        cx.listeners.iter().map(|l| {
            (
                l.listen.as_str(),
                l.proxy_protocol && !l.trusts_proxy,
                &l.servers[..],
            )
        }),
    );
    // A listen whose servers have no location serves nothing tideway can serve.
    let mut empty = Vec::new();
    cx.listeners.retain(|l| {
        let keep = l.protocol != "http" || l.servers.iter().any(|s| !s.locations.is_empty());
        if !keep {
            empty.push((l.at.clone(), l.listen.clone()));
        }
        keep
    });
    for (at, listen) in empty {
        cx.warnings.push(format!(
            "{at}: listen {listen}: no server on it has a location; not served"
        ));
    }
    super::http2::settle(&mut cx.listeners, &mut cx.notes);
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
        notes,
        resolver,
        ..
    } = cx;
    let mut toml = render(&upstreams, &listeners);
    toml.push_str(&super::limit::render_zones(&zones));
    toml.push_str(&resolver.render());
    toml.push_str(&maps);
    let mut report = Report::walk(top);
    for w in &warnings {
        report.note(Finding::from_message(w, warning_class(w)));
    }
    for e in &errors {
        report.note(Finding::from_message(e, Class::Error));
    }
    for n in notes {
        report.note(n);
    }
    if options.strict {
        report.strict();
    }
    Converted {
        toml,
        warnings: report.warnings(),
        errors: report.lines(Class::Error),
        report,
    }
}
