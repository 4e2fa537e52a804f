//! A route's `proxy_set_header` and `add_header` templates ([`crate::config::headers`]),
//! evaluated against one request: the variables read the request head as parsed by
//! [`super::request`], with nginx's rules (`$arg_` and `$cookie_` raw, `$host` lowercased
//! without port).
//!
//! Framing stays safe whatever a variable holds: a value that would contain a control byte
//! (CR, LF, NUL, anything below 0x20 but HTAB, or DEL) is not sent at all, as an empty one is
//! not (nginx's rule for empty values). The engine writes the framing headers; templates
//! cannot name them (refused at load).

use crate::config::headers::ADD_HEADER_STATUSES;
use crate::config::headers::{AddHeader, MapDef, Part, RouteHeaders, Template, Var};
use std::io::Write;
use std::net::SocketAddr;

/// What the variables of one request read.
pub struct Vars<'r> {
    pub headers: &'r [httparse::Header<'r>],
    /// The Host (or an absolute-form target's authority).
    pub host: Option<&'r [u8]>,
    /// The matched server's first name: `$host` without a Host.
    pub server_name: &'r str,
    /// The route's upstream name (`$proxy_host`).
    pub proxy_host: &'r str,
    pub client: Option<SocketAddr>,
    pub method: &'r str,
    /// The client's `X-Forwarded-For` values.
    pub xff: &'r [&'r [u8]],
    pub scheme: &'r str,
    /// The origin-form target as sent.
    pub target: &'r str,
    pub port: u16,
    /// `$request_id` (None: a fresh one each time it is read).
    pub request_id: Option<&'r super::request_id::RequestId>,
}

/// Headers `add_header` gives the client, rendered when the request is classified (the
/// request's head is gone by the time the answer comes).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// Lines for the statuses in [`ADD_HEADER_STATUSES`].
    pub listed: Vec<u8>,
    /// Lines for every status (`always`).
    pub always: Vec<u8>,
}

impl Added {
    /// Write the lines for a final response of `status`.
    pub fn write(&self, status: u16, out: &mut Vec<u8>) {
        for lines in self.lines(status) {
            out.extend_from_slice(lines);
        }
    }

    /// The lines (`name: value` CRLF each) for a final response of `status`.
    pub fn lines(&self, status: u16) -> [&[u8]; 2] {
        let listed: &[u8] = if ADD_HEADER_STATUSES.contains(&status) {
            &self.listed
        } else {
            b""
        };
        [listed, &self.always]
    }
}

/// Is `v` a value that may be sent (not empty, no control byte)?
fn sendable(v: &[u8]) -> bool {
    !v.is_empty() && !v.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// `$host`: lowercased, without port or trailing dot.
fn host_name(h: &[u8]) -> &[u8] {
    let h = match h.iter().position(|&b| b == b']') {
        Some(end) if h.first() == Some(&b'[') => &h[..=end],
        _ => h.split(|&b| b == b':').next().unwrap_or(h),
    };
    h.strip_suffix(b".").unwrap_or(h)
}

/// A header whose name, lowercased with `-` as `_`, is `name` (given with `-`): nginx's
/// `$http_NAME`. X-Forwarded-For and Cookie values are joined as nginx 1.22 joins them.
fn header(vars: &Vars<'_>, name: &str, out: &mut Vec<u8>) {
    let sep: &[u8] = match name {
        "cookie" => b"; ",
        "x-forwarded-for" => b", ",
        _ => b"",
    };
    let mut first = true;
    for h in vars.headers {
        if h.name.len() == name.len() && h.name.eq_ignore_ascii_case(name) {
            if !first {
                out.extend_from_slice(sep);
            }
            out.extend_from_slice(h.value);
            if sep.is_empty() {
                return;
            }
            first = false;
        }
    }
}

/// nginx's `$cookie_NAME`: the first `NAME=` (case-insensitive) in the Cookie headers, its
/// value up to `;`.
fn cookie<'v>(vars: &Vars<'v>, name: &str) -> Option<&'v [u8]> {
    let name = name.as_bytes();
    for h in vars
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
    {
        let mut rest = h.value;
        while !rest.is_empty() {
            if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name) {
                let after = rest[name.len()..].trim_ascii_start();
                if let Some(v) = after.strip_prefix(b"=") {
                    let v = v.trim_ascii_start();
                    let end = v.iter().position(|&b| b == b';').unwrap_or(v.len());
                    return Some(&v[..end]);
                }
            }
            let skip = rest
                .iter()
                .position(|&b| b == b';' || b == b',')
                .map_or(rest.len(), |i| i + 1);
            rest = rest[skip..].trim_ascii_start();
        }
    }
    None
}

/// nginx's `$arg_NAME`: the first `NAME=` (case-insensitive) at the start of the query or
/// after `&`, raw up to the next `&`.
fn arg<'v>(target: &'v str, name: &str) -> Option<&'v [u8]> {
    let args = target.split_once('?')?.1.as_bytes();
    let name = name.as_bytes();
    args.split(|&b| b == b'&').find_map(|a| {
        let v = a.get(name.len()..)?.strip_prefix(b"=")?;
        a[..name.len()].eq_ignore_ascii_case(name).then_some(v)
    })
}

/// A map's value for this request.
fn map<'m>(m: &'m MapDef, vars: &Vars<'_>) -> &'m Template {
    let mut key = Vec::new();
    vars.eval(&m.source, &mut key);
    if let Some(t) = m.exact.get(&key.to_ascii_lowercase()) {
        return t;
    }
    m.regexes
        .iter()
        .find(|(re, _)| re.is_match(&key))
        .map_or(&m.default, |(_, t)| t)
}

impl Vars<'_> {
    /// Append `t`'s value for this request to `out`.
    pub fn eval(&self, t: &Template, out: &mut Vec<u8>) {
        for p in t.parts.iter() {
            match p {
                Part::Text(s) => out.extend_from_slice(s),
                Part::Var(v) => self.var(v, out),
            }
        }
    }

    fn var(&self, v: &Var, out: &mut Vec<u8>) {
        match v {
            Var::Host => match self.host {
                Some(h) => out.extend(host_name(h).iter().map(u8::to_ascii_lowercase)),
                None => out.extend_from_slice(self.server_name.as_bytes()),
            },
            Var::RemoteAddr => {
                if let Some(c) = self.client {
                    let _ = write!(out, "{}", c.ip());
                }
            }
            Var::RemotePort => {
                if let Some(c) = self.client {
                    let _ = write!(out, "{}", c.port());
                }
            }
            Var::ServerName => out.extend_from_slice(self.server_name.as_bytes()),
            Var::ProxyHost => out.extend_from_slice(self.proxy_host.as_bytes()),
            Var::RequestMethod => out.extend_from_slice(self.method.as_bytes()),
            Var::RequestId => match self.request_id {
                Some(id) => out.extend_from_slice(id.get().as_bytes()),
                None => {
                    out.extend_from_slice(super::request_id::RequestId::default().get().as_bytes())
                }
            },
            Var::Args => {
                let q = self.target.split_once('?').map_or("", |(_, q)| q);
                out.extend_from_slice(q.as_bytes());
            }
            Var::IsArgs => {
                if self.target.contains('?') {
                    out.push(b'?');
                }
            }
            Var::ProxyAddXForwardedFor => {
                for prev in self.xff.iter().map(|v| v.trim_ascii()) {
                    if !prev.is_empty() {
                        out.extend_from_slice(prev);
                        out.extend_from_slice(b", ");
                    }
                }
                if let Some(c) = self.client {
                    let _ = write!(out, "{}", c.ip());
                }
            }
            Var::Scheme => out.extend_from_slice(self.scheme.as_bytes()),
            Var::RequestUri => out.extend_from_slice(self.target.as_bytes()),
            Var::ServerPort => {
                let _ = write!(out, "{}", self.port);
            }
            Var::Http(name) => header(self, name, out),
            Var::Cookie(name) => out.extend_from_slice(cookie(self, name).unwrap_or_default()),
            Var::Arg(name) => out.extend_from_slice(arg(self.target, name).unwrap_or_default()),
            Var::Map(m) => self.eval(map(m, self), out),
        }
    }

    /// Append `name: value` CRLF to `out`, unless the value is empty or holds a control byte;
    /// true when written.
    pub fn field(&self, name: &str, value: &Template, out: &mut Vec<u8>) -> bool {
        self.field_if(name, value, out, |_| true)
    }

    /// [`Self::field`], when the value also passes `check` (Host: a valid authority, so a
    /// set Host is held to the rules a client's is).
    pub fn field_if(
        &self,
        name: &str,
        value: &Template,
        out: &mut Vec<u8>,
        check: fn(&[u8]) -> bool,
    ) -> bool {
        let start = out.len();
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        let at = out.len();
        self.eval(value, out);
        if !sendable(&out[at..]) || !check(&out[at..]) {
            out.truncate(start);
            return false;
        }
        out.extend_from_slice(b"\r\n");
        true
    }

    /// The `add_header` lines of a route for this request, if it has any.
    pub fn added(&self, headers: &RouteHeaders) -> Option<Box<Added>> {
        if headers.add.is_empty() {
            return None;
        }
        let mut a = Added::default();
        for AddHeader {
            name,
            value,
            always,
        } in &headers.add
        {
            let out = if *always {
                &mut a.always
            } else {
                &mut a.listed
            };
            self.field(name, value, out);
        }
        Some(Box::new(a))
    }
}

/// Does the route set header `name` itself (so the client's, and tideway's default, are not
/// sent)?
pub fn sets(headers: Option<&RouteHeaders>, name: &str) -> bool {
    headers.is_some_and(|h| h.set.iter().any(|s| s.name.eq_ignore_ascii_case(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::headers::{compile, map as map_def, Maps};
    use std::sync::Arc;

    fn with<R>(raw: &[u8], f: impl FnOnce(&Vars<'_>) -> R) -> R {
        let mut hs = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut hs);
        req.parse(raw).unwrap();
        let target = req.path.unwrap();
        let headers: &[httparse::Header<'_>] = req.headers;
        let host = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| h.value);
        let xff: Vec<&[u8]> = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|h| h.value)
            .collect();
        let vars = Vars {
            headers,
            host,
            server_name: "example.com",
            proxy_host: "app",
            client: Some("10.0.0.7:40001".parse().unwrap()),
            method: req.method.unwrap(),
            xff: &xff,
            scheme: "https",
            target,
            port: 8443,
            request_id: None,
        };
        f(&vars)
    }

    fn eval(raw: &str, text: &str, maps: &Maps) -> String {
        let t = compile(text, maps).unwrap();
        with(raw.as_bytes(), |v| {
            let mut out = Vec::new();
            v.eval(&t, &mut out);
            String::from_utf8(out).unwrap()
        })
    }

    const RAW: &str = "GET /p?a=1&UID=42&x=%0d%0a HTTP/1.1\r\nHost: WWW.Example.COM.:8080\r\nCookie: a=b; Sid = s1;x=y\r\nX-Forwarded-For: 1.1.1.1\r\nX-Thing: t\r\nUpgrade: WebSocket\r\n\r\n";

    #[test]
    fn variables_read_as_nginx_reads_them() {
        let m = Maps::new();
        let e = |t: &str| eval(RAW, t, &m);
        assert_eq!(e("$host"), "www.example.com");
        assert_eq!(e("$http_host"), "WWW.Example.COM.:8080");
        assert_eq!(e("$remote_addr"), "10.0.0.7");
        assert_eq!(e("$proxy_add_x_forwarded_for"), "1.1.1.1, 10.0.0.7");
        assert_eq!(e("$scheme://$server_port"), "https://8443");
        assert_eq!(e("$request_uri"), "/p?a=1&UID=42&x=%0d%0a");
        assert_eq!(e("[$http_x_thing][$http_nope]"), "[t][]");
        assert_eq!(e("$cookie_sid|$cookie_X|$cookie_none"), "s1|y|");
        assert_eq!(e("$arg_uid|$arg_a|$arg_x|$arg_none"), "42|1|%0d%0a|");
        assert_eq!(
            e("$request_method $server_name $remote_port"),
            "GET example.com 40001"
        );
        assert_eq!(e("${is_args}${query_string}"), "?a=1&UID=42&x=%0d%0a");
        assert_eq!(e("$proxy_host"), "app");
        assert_eq!(eval("GET /p HTTP/1.0\r\n\r\n", "[$is_args$args]", &m), "[]");
        assert_eq!(eval("GET / HTTP/1.0\r\n\r\n", "$host", &m), "example.com");
        assert_eq!(
            eval("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", "$host", &m),
            "[::1]"
        );
    }

    #[test]
    fn maps_pick_exact_then_regex_then_default() {
        let def = map_def(
            "connection_upgrade",
            "$http_upgrade",
            &[
                ("".into(), "close".into()),
                ("websocket".into(), "upgrade".into()),
                ("~^h2".into(), "h2:$host".into()),
            ],
            Some("other"),
        )
        .unwrap();
        let mut maps = Maps::new();
        maps.insert(def.name.clone(), Arc::new(def));
        let e = |up: &str| {
            let raw = format!("GET / HTTP/1.1\r\nHost: h\r\n{up}\r\n");
            eval(&raw, "$connection_upgrade", &maps)
        };
        assert_eq!(
            e("Upgrade: WebSocket\r\n"),
            "upgrade",
            "exact keys ignore case"
        );
        assert_eq!(e(""), "close");
        assert_eq!(e("Upgrade: h2c\r\n"), "h2:h");
        assert_eq!(e("Upgrade: x\r\n"), "other");
    }

    #[test]
    fn empty_or_control_values_are_not_sent() {
        let m = Maps::new();
        let t = |s: &str| compile(s, &m).unwrap();
        // httparse takes obs-text but no CR or LF in a value; a value can still come out empty.
        with(RAW.as_bytes(), |v| {
            let mut out = Vec::new();
            assert!(!v.field("X-Empty", &t("$http_nope"), &mut out));
            assert!(out.is_empty());
            assert!(v.field("X-Arg", &t("$arg_x"), &mut out));
            assert_eq!(out, b"X-Arg: %0d%0a\r\n", "raw, as nginx: never decoded");
        });
        let mut out = b"keep".to_vec();
        let bad = Template {
            parts: vec![Part::Text(b"a\rb".to_vec().into())].into(),
        };
        with(RAW.as_bytes(), |v| {
            assert!(!v.field("X-Bad", &bad, &mut out))
        });
        assert_eq!(out, b"keep");
    }

    #[test]
    fn added_lines_follow_nginxs_status_list() {
        let m = Maps::new();
        let h = RouteHeaders {
            set: Vec::new(),
            add: vec![
                crate::config::headers::check_add("X-A", compile("a", &m).unwrap(), false).unwrap(),
                crate::config::headers::check_add("X-B", compile("$host", &m).unwrap(), true)
                    .unwrap(),
            ],
        };
        let a = with(RAW.as_bytes(), |v| v.added(&h)).unwrap();
        for (status, want) in [
            (200, "X-A: a\r\nX-B: www.example.com\r\n"),
            (304, "X-A: a\r\nX-B: www.example.com\r\n"),
            (404, "X-B: www.example.com\r\n"),
            (500, "X-B: www.example.com\r\n"),
        ] {
            let mut out = Vec::new();
            a.write(status, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{status}");
        }
    }
}
