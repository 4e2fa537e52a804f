//! Per-route headers, nginx's `proxy_set_header`, `add_header` and `map`: header values are
//! templates of static text and request variables, compiled once at load into [`Template`]s
//! (no parsing per request). The data plane evaluates them ([`crate::proxy::headers`]).
//!
//! Variables: `$host`, `$http_host`, `$remote_addr`, `$proxy_add_x_forwarded_for`, `$scheme`,
//! `$request_uri`, `$request_id`, `$server_port`, `$server_name`, `$proxy_host`, `$remote_port`, `$request_method`, `$args`
//! (`$query_string`), `$is_args`, `$http_NAME`, `$cookie_NAME`, `$arg_NAME` (also written
//! `${name}`), and the names of `map`s. Any other is a config error.
//!
//! Framing and hop-by-hop headers stay the engine's: `Content-Length`, `Transfer-Encoding`,
//! `Connection` and `Upgrade` cannot be set or added ([`check_set`], [`check_add`]).
//!
//! Imports: nothing else in tideway.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A request variable a template reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    /// `$host`: Host lowercased, without port and trailing dot (or the server's name).
    Host,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$proxy_add_x_forwarded_for`: the client's X-Forwarded-For, then `$remote_addr`.
    ProxyAddXForwardedFor,
    /// `$scheme`: `http` or `https`.
    Scheme,
    /// `$request_uri`: the target as the client sent it, with its query.
    RequestUri,
    /// `$server_port`: the port the request came in on.
    ServerPort,
    /// `$server_name`: the matched server's first name.
    ServerName,
    /// `$proxy_host`: proxy_pass's host, the upstream's name (what nginx sends as Host by
    /// default).
    ProxyHost,
    /// `$remote_port`: the client's port.
    RemotePort,
    /// `$request_method`.
    RequestMethod,
    /// `$args` (also `$query_string`): the query, raw.
    Args,
    /// `$request_id`: 32 hex digits, random per request, the access log's `request_id`.
    RequestId,
    /// `$is_args`: `?` when the target has a query, else empty.
    IsArgs,
    /// `$http_NAME`: a request header (`NAME` lowercased, `_` for `-`); `$http_host` too.
    Http(Box<str>),
    /// `$cookie_NAME`: a cookie's value, raw.
    Cookie(Box<str>),
    /// `$arg_NAME`: a query argument's value, raw (not decoded), as nginx.
    Arg(Box<str>),
    /// A `map`'s result.
    Map(Arc<MapDef>),
}

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(Box<[u8]>),
    Var(Var),
}

/// A header value: text and variables, in order.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Template {
    pub parts: Box<[Part]>,
}

/// nginx's `map SOURCE $NAME { KEY VALUE; ... default VALUE; }`: exact keys (case-insensitive,
/// as nginx compares them), then regexes (`~`, `~*` caseless) in order, then the default.
#[derive(Clone, Debug)]
pub struct MapDef {
    pub name: String,
    pub source: Template,
    /// Exact keys, lowercased.
    pub exact: BTreeMap<Vec<u8>, Template>,
    pub regexes: Vec<(regex::bytes::Regex, Template)>,
    pub default: Template,
}

impl PartialEq for MapDef {
    fn eq(&self, o: &Self) -> bool {
        let pats = |m: &MapDef| -> Vec<String> {
            m.regexes
                .iter()
                .map(|(r, _)| r.as_str().to_owned())
                .collect()
        };
        self.name == o.name
            && self.source == o.source
            && self.exact == o.exact
            && pats(self) == pats(o)
            && self
                .regexes
                .iter()
                .map(|r| &r.1)
                .eq(o.regexes.iter().map(|r| &r.1))
            && self.default == o.default
    }
}
impl Eq for MapDef {}

/// The maps a config defines, by name (without `$`).
pub type Maps = BTreeMap<String, Arc<MapDef>>;

/// A header the backend gets (`proxy_set_header`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetHeader {
    pub name: Box<str>,
    pub value: Template,
}

/// A header the client gets (`add_header`): on 200, 201, 204, 206, 301, 302, 303, 304, 307
/// and 308 only, unless `always`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddHeader {
    pub name: Box<str>,
    pub value: Template,
    pub always: bool,
}

/// A route's own headers (a level that sets any replaces all inherited ones, as in nginx).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RouteHeaders {
    pub set: Vec<SetHeader>,
    pub add: Vec<AddHeader>,
}

/// The statuses `add_header` adds to without `always` (nginx's list).
pub const ADD_HEADER_STATUSES: [u16; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// Headers only the engine writes: framing and connection management.
const ENGINE_ONLY: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// Hop-by-hop headers tideway never forwards: setting one to a value is refused, to "" is a
/// no-op.
const HOP_BY_HOP: [&str; 5] = ["te", "keep-alive", "expect", "proxy-connection", "trailer"];

/// Is `name` an RFC 9110 token?
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Compile a header value. `maps` are the maps that may be used; variables outside them and
/// the built-in ones are an error naming the variable.
pub fn compile(text: &str, maps: &Maps) -> Result<Template, String> {
    if let Some(b) = text
        .bytes()
        .find(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(format!(
            "a header value may not hold control byte 0x{b:02x} (CR and LF would split the head)"
        ));
    }
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            lit.push(bytes[i]);
            i += 1;
            continue;
        }
        let (name, next) = if bytes.get(i + 1) == Some(&b'{') {
            let end = text[i + 2..]
                .find('}')
                .ok_or_else(|| format!("unclosed \"${{\" in {text:?}"))?;
            (&text[i + 2..i + 2 + end], i + 3 + end)
        } else {
            let len = bytes[i + 1..]
                .iter()
                .take_while(|&&b| is_name_byte(b))
                .count();
            (&text[i + 1..i + 1 + len], i + 1 + len)
        };
        if name.is_empty() || !name.bytes().all(is_name_byte) {
            return Err(format!("invalid variable name in {text:?}"));
        }
        if !lit.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut lit).into()));
        }
        parts.push(Part::Var(variable(name, maps)?));
        i = next;
    }
    if !lit.is_empty() {
        parts.push(Part::Text(lit.into()));
    }
    Ok(Template {
        parts: parts.into(),
    })
}

/// The variable `name` (without `$`).
fn variable(name: &str, maps: &Maps) -> Result<Var, String> {
    let lower = name.to_ascii_lowercase();
    let suffix = |p: &str| lower.strip_prefix(p).filter(|s| !s.is_empty());
    Ok(match lower.as_str() {
        "host" => Var::Host,
        "remote_addr" => Var::RemoteAddr,
        "proxy_add_x_forwarded_for" => Var::ProxyAddXForwardedFor,
        "scheme" => Var::Scheme,
        "request_uri" => Var::RequestUri,
        "server_port" => Var::ServerPort,
        "server_name" => Var::ServerName,
        "proxy_host" => Var::ProxyHost,
        "remote_port" => Var::RemotePort,
        "request_method" => Var::RequestMethod,
        "args" | "query_string" => Var::Args,
        "is_args" => Var::IsArgs,
        "request_id" => Var::RequestId,
        _ if maps.contains_key(&lower) => Var::Map(maps[&lower].clone()),
        _ => {
            if let Some(h) = suffix("http_") {
                Var::Http(h.replace('_', "-").into())
            } else if let Some(c) = suffix("cookie_") {
                // nginx compares cookie names case-insensitively.
                Var::Cookie(c.into())
            } else if let Some(a) = suffix("arg_") {
                Var::Arg(a.into())
            } else {
                return Err(format!(
                    "unknown variable \"${name}\" (tideway reads $host, $http_host, $remote_addr, $remote_port, $proxy_add_x_forwarded_for, $scheme, $request_method, $request_uri, $request_id, $args, $is_args, $server_name, $server_port, $proxy_host, $http_NAME, $cookie_NAME, $arg_NAME and map names)"
                ));
            }
        }
    })
}

impl Template {
    /// The template's text when it has no variables.
    pub fn text(&self) -> Option<&[u8]> {
        match &self.parts[..] {
            [] => Some(b""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }
}

impl std::fmt::Display for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Var::Host => f.write_str("host"),
            Var::RemoteAddr => f.write_str("remote_addr"),
            Var::ProxyAddXForwardedFor => f.write_str("proxy_add_x_forwarded_for"),
            Var::Scheme => f.write_str("scheme"),
            Var::RequestUri => f.write_str("request_uri"),
            Var::ServerPort => f.write_str("server_port"),
            Var::ServerName => f.write_str("server_name"),
            Var::ProxyHost => f.write_str("proxy_host"),
            Var::RemotePort => f.write_str("remote_port"),
            Var::RequestMethod => f.write_str("request_method"),
            Var::Args => f.write_str("args"),
            Var::IsArgs => f.write_str("is_args"),
            Var::RequestId => f.write_str("request_id"),
            Var::Http(h) => write!(f, "http_{}", h.replace('-', "_")),
            Var::Cookie(c) => write!(f, "cookie_{c}"),
            Var::Arg(a) => write!(f, "arg_{a}"),
            Var::Map(m) => f.write_str(&m.name),
        }
    }
}

/// The template as written, variables as `${name}` (it compiles back to itself).
impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in self.parts.iter() {
            match p {
                Part::Text(t) => f.write_str(&String::from_utf8_lossy(t))?,
                Part::Var(v) => write!(f, "${{{v}}}")?,
            }
        }
        Ok(())
    }
}

/// Check a `proxy_set_header` name and value: `Ok(None)` for one that sets nothing (a
/// hop-by-hop header set to "", which tideway never forwards anyway).
pub fn check_set(name: &str, value: Template) -> Result<Option<SetHeader>, String> {
    if !is_token(name) {
        return Err(format!("invalid header name {name:?}"));
    }
    let lower = name.to_ascii_lowercase();
    if ENGINE_ONLY.contains(&lower.as_str()) {
        return Err(format!(
            "{name} is written by tideway's engine (framing and connection management) and cannot be set; for WebSocket use websocket = true"
        ));
    }
    if HOP_BY_HOP.contains(&lower.as_str()) {
        if value.text() == Some(b"") {
            return Ok(None);
        }
        return Err(format!(
            "{name} is hop-by-hop: tideway never forwards it, and it can only be set to \"\""
        ));
    }
    if lower == "host" && value.text() == Some(b"") {
        return Err(
            "Host cannot be set to \"\": the backend gets HTTP/1.1, which needs one".into(),
        );
    }
    Ok(Some(SetHeader {
        name: name.into(),
        value,
    }))
}

/// Check an `add_header` name.
pub fn check_add(name: &str, value: Template, always: bool) -> Result<AddHeader, String> {
    if !is_token(name) {
        return Err(format!("invalid header name {name:?}"));
    }
    let lower = name.to_ascii_lowercase();
    if ENGINE_ONLY.contains(&lower.as_str()) || HOP_BY_HOP.contains(&lower.as_str()) {
        return Err(format!(
            "{name} is written by tideway's engine (framing and connection management) and cannot be added"
        ));
    }
    Ok(AddHeader {
        name: name.into(),
        value,
        always,
    })
}

/// Build a map: `source` (a template), `(key, value)` pairs in order (`~re` and `~*re` keys are
/// regexes; `\~` escapes a literal `~`), and the default ("" when absent).
pub fn map(
    name: &str,
    source: &str,
    entries: &[(String, String)],
    default: Option<&str>,
) -> Result<MapDef, String> {
    if name.is_empty() || !name.bytes().all(is_name_byte) {
        return Err(format!("invalid map variable name {name:?}"));
    }
    let none = Maps::new();
    let value = |v: &str| {
        compile(v, &none)
            .map_err(|e| format!("{e} (a map's values may use request variables, not maps)"))
    };
    let mut exact = BTreeMap::new();
    let mut regexes = Vec::new();
    for (k, v) in entries {
        let v = value(v)?;
        let (pattern, caseless) = match (k.strip_prefix("~*"), k.strip_prefix('~')) {
            (Some(p), _) => (Some(p), true),
            (None, Some(p)) => (Some(p), false),
            _ => (None, false),
        };
        match pattern {
            Some(p) => {
                let re = regex::bytes::RegexBuilder::new(p)
                    .case_insensitive(caseless)
                    .unicode(false)
                    .build()
                    .map_err(|e| format!("invalid map regex {p:?}: {e}"))?;
                regexes.push((re, v));
            }
            None => {
                let k = k.strip_prefix('\\').unwrap_or(k);
                exact
                    .entry(k.to_ascii_lowercase().into_bytes())
                    .or_insert(v);
            }
        }
    }
    Ok(MapDef {
        name: name.to_ascii_lowercase(),
        source: compile(source, &none)
            .map_err(|e| format!("{e} (a map's source may use request variables, not maps)"))?,
        exact,
        regexes,
        default: value(default.unwrap_or(""))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Template {
        compile(text, &Maps::new()).unwrap()
    }

    #[test]
    fn templates_compile_text_and_variables() {
        assert_eq!(t("static").text(), Some(&b"static"[..]));
        assert_eq!(t("").text(), Some(&b""[..]));
        let p = t("a $host-${scheme}b$http_X_Real_Ip;$cookie_Sid$arg_uid");
        assert_eq!(
            &p.parts[..],
            &[
                Part::Text(b"a ".to_vec().into()),
                Part::Var(Var::Host),
                Part::Text(b"-".to_vec().into()),
                Part::Var(Var::Scheme),
                Part::Text(b"b".to_vec().into()),
                Part::Var(Var::Http("x-real-ip".into())),
                Part::Text(b";".to_vec().into()),
                Part::Var(Var::Cookie("sid".into())),
                Part::Var(Var::Arg("uid".into())),
            ]
        );
        for v in [
            "$http_host",
            "$remote_addr",
            "$proxy_add_x_forwarded_for",
            "$request_uri",
            "$server_port",
            "$server_name",
            "$remote_port",
            "$request_method",
            "$args",
            "$query_string",
            "$is_args",
        ] {
            assert!(compile(v, &Maps::new()).is_ok(), "{v}");
        }
    }

    #[test]
    fn templates_render_back_to_themselves() {
        for text in [
            "a $host-${scheme}b$http_x_real_ip;$cookie_sid$arg_uid",
            "plain",
            "",
        ] {
            let once = t(text);
            assert_eq!(t(&once.to_string()), once, "{text}");
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        let m = Maps::new();
        assert!(compile("$nope", &m).unwrap_err().contains("$nope"));
        assert!(compile("$1", &m).is_err(), "no regex captures");
        assert!(compile("a$", &m).is_err());
        assert!(compile("${host", &m).is_err());
        assert!(compile("${ho-st}", &m).is_err());
        assert!(compile("$http_", &m).is_err());
        assert!(compile("a\r\nb: c", &m).is_err(), "CR LF in a static value");
        assert!(compile("a\rb", &m).is_err(), "bare CR");
        assert!(compile("a\tb", &m).is_ok(), "HTAB is a value byte");
    }

    #[test]
    fn framing_and_hop_by_hop_stay_the_engines() {
        for n in [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "Upgrade",
        ] {
            assert!(check_set(n, t("x")).is_err(), "{n}");
            assert!(check_set(n, t("")).is_err(), "{n}");
            assert!(check_add(n, t("x"), false).is_err(), "{n}");
        }
        assert_eq!(check_set("Keep-Alive", t("")).unwrap(), None);
        assert!(check_set("Keep-Alive", t("x")).is_err());
        assert!(check_set("Host", t("")).is_err());
        assert!(check_set("Bad Name", t("x")).is_err());
        assert!(check_set("X-Ok", t("$host")).unwrap().is_some());
    }

    #[test]
    fn maps_compile_and_are_variables() {
        let m = map(
            "connection_upgrade",
            "$http_upgrade",
            &[
                ("".into(), "close".into()),
                ("~*^web".into(), "upgrade".into()),
            ],
            Some("upgrade"),
        )
        .unwrap();
        assert_eq!(m.exact.len(), 1);
        assert_eq!(m.regexes.len(), 1);
        let mut maps = Maps::new();
        maps.insert(m.name.clone(), Arc::new(m));
        let p = compile("$connection_upgrade", &maps).unwrap();
        assert!(matches!(&p.parts[..], [Part::Var(Var::Map(_))]));
        assert!(map("x", "$nope", &[], None).is_err());
        assert!(map("x", "$host", &[("~(".into(), "a".into())], None).is_err());
        assert!(map("x", "$host", &[("a".into(), "$x".into())], None).is_err());
    }
}
