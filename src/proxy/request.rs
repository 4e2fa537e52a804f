//! The request-head classifier: the one parser of client requests. It decides whether a
//! complete head is forwarded, upgraded to a WebSocket, or refused, and writes the head the
//! backend gets.
//!
//! The backends tideway fronts (Workerman and other PHP servers) frame requests leniently, so
//! the head a backend gets is rebuilt, never passed through: `METHOD TARGET HTTP/1.1`, the
//! client's end-to-end headers, the forwarding headers, and exactly one framing header in
//! canonical form, written by [`finish_head`] once the body's length is known. Anything
//! ambiguous is refused rather than guessed at (see [`Refusal`] and the table in docs/security.md).

use super::client::believe;
use super::key::{request_key, KeyParts};
use crate::config::headers::RouteHeaders;
use crate::config::{HashKey, RealIp};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};

mod parts;
pub use parts::{Parts, Version};

/// Most header fields the parser takes; [`crate::config::HttpLimits::max_headers`] is
/// enforced before parsing and may not exceed it.
pub const MAX_HEADERS: usize = 128;

/// A request refused before it reaches a backend: the status and why. The connection closes
/// after the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

impl Refusal {
    pub const fn new(status: u16, reason: &'static str) -> Self {
        Refusal { status, reason }
    }
}

/// How a request's body is delimited as the client sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
    /// HTTP/2 without `content-length`: the body ends with the stream's END_STREAM. Read whole
    /// (as a chunked one) and sent with its length.
    UntilEnd,
}

/// A request tideway forwards.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub body: RequestBody,
    /// The client connection closes after this exchange.
    pub close: bool,
    /// The client spoke HTTP/1.0: its answer is never chunked.
    pub http10: bool,
    /// The protocol the request came in with.
    pub version: Version,
    /// `HEAD`: the response has no body whatever its headers say.
    pub head_method: bool,
    /// Safe to send again to another backend (RFC 9110 idempotent methods).
    pub idempotent: bool,
    /// A valid WebSocket handshake: the backend may answer 101 and the connection becomes a
    /// tunnel.
    pub websocket: bool,
    /// The client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// `POST`, `PUT`, `PATCH` and unknown methods get `content-length: 0` when bodiless.
    pub length_always: bool,
    /// The sticky key, when the caller asked for one.
    pub key: crate::balance::Key,
    /// Not a WebSocket handshake, yet the head the backend gets holds `Sec-WebSocket-Key:`
    /// (in the target or inside another header's value): Workerman answers such a GET with
    /// 101. A malformed answer to it is the client's doing, not the backend's.
    pub misreadable: bool,
    /// The real client address of this request (see [`super::client`]).
    pub client: Option<SocketAddr>,
    /// The backend the request's sticky cookie names, when the upstream has `sticky` and the
    /// first cookie of that name is a well-formed value.
    pub sticky: Option<crate::pool::sticky::StickyId>,
    /// The route's `add_header` lines for the answer (None: it adds none).
    pub added: Option<Box<super::headers::Added>>,
}

/// Headers that describe one hop, or that tideway writes itself: never forwarded as sent.
const REQUEST_DROP: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
    "content-length",
    "expect",
    "host",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
];

/// Most addresses an `X-Forwarded-For` chain may hold: a request that has been through more
/// proxies is refused with 508 (it is most likely going round in a loop).
pub const MAX_FORWARDED_HOPS: usize = 20;

/// Largest request body length taken: 10 digits, all a Workerman 4.x backend reads.
pub const MAX_CONTENT_LENGTH: u64 = 9_999_999_999;

/// Headers a `Connection` header may never make hop-by-hop.
const NEVER_HOP_BY_HOP: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Append one header field line, `name: value` and CRLF.
pub(super) fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Is `token` one of the comma-separated values of a header (case-insensitive)?
pub(super) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Is header `name` listed in one of the `Connection` values (and allowed to be)?
pub(super) fn named_by(connection: &[&[u8]], name: &str) -> bool {
    connection.iter().any(|v| has_token(v, name))
        && !NEVER_HOP_BY_HOP
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
}

/// A `Content-Length` value: 1 to 18 ASCII digits, nothing else.
pub(super) fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Is `host` a plausible Host value (reg-name or IP literal, optional port)?
fn valid_host(host: &[u8]) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && !host.starts_with(b".")
        && host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~:[]!$&'()*+,;=%".contains(&b))
}

/// The authority of an absolute-form target and the origin-form rest (`/` when empty).
fn split_absolute(target: &str) -> Option<(&str, &str)> {
    // `get` is None when the cut would fall inside a character.
    let scheme = |n: usize, s: &str| target.get(..n).is_some_and(|p| p.eq_ignore_ascii_case(s));
    let rest = if target.len() > 7 && scheme(7, "http://") {
        &target[7..]
    } else if target.len() > 8 && scheme(8, "https://") {
        &target[8..]
    } else {
        return None;
    };
    match rest.find(['/', '?']) {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "")),
    }
}

/// Headers of interest, gathered in one pass.
#[derive(Default)]
struct Seen<'h> {
    host: Option<&'h [u8]>,
    hosts: usize,
    lengths: usize,
    length: Option<&'h [u8]>,
    encodings: usize,
    encoding: Option<&'h [u8]>,
    expect: Option<&'h [u8]>,
    upgrade: Option<&'h [u8]>,
    upgrades: usize,
    ws_key: bool,
    ws_version: bool,
    connection: [&'h [u8]; 4],
    n_connection: usize,
    xff: [&'h [u8]; 4],
    n_xff: usize,
    /// The first `X-Real-IP` (what nginx's realip module reads).
    x_real_ip: Option<&'h [u8]>,
}

/// What a request's route says about the head the backend gets, given by the caller once
/// the Host and the path are known (see [`classify`]).
#[derive(Default)]
pub struct Steer<'s> {
    /// The upstream hashes requests by this key.
    pub hash_key: Option<&'s HashKey>,
    /// The Host sent for an HTTP/1.0 request without one (the upstream's name, as nginx's
    /// `$proxy_host`).
    pub default_host: &'s str,
    /// The target the backend gets instead of the client's (proxy_pass with a URI part).
    pub target: Option<Vec<u8>>,
    /// WebSocket handshakes may be passed on.
    pub websocket: bool,
    /// The upstream's sticky cookie name.
    pub sticky: Option<&'s str>,
    /// The route's `proxy_set_header` and `add_header`.
    pub headers: Option<&'s RouteHeaders>,
    /// The matched server's first name (`$host` without a Host).
    pub server_name: &'s str,
    /// The port the request came in on (`$server_port`).
    pub port: u16,
    /// The request's id (`$request_id`), shared with the access log.
    pub request_id: Option<&'s super::request_id::RequestId>,
}

/// Classify the complete request head `raw` (its end found by [`super::head`]). For a request
/// to forward, write the backend's head into `out` (cleared first), all but its framing header
/// and final blank line, which [`finish_head`] adds. With a `hash_key`, the request's sticky
/// key hash is computed too. An HTTP/1.0 request without Host is sent with `host:
/// default_host`, since the backend gets HTTP/1.1. The request's route decides those: `steer`
/// is called with the Host (None: none sent) and the origin-form target once the head is known
/// to be valid. `conn` is the connection's client; with `real_ip`, a trusted proxy's header may
/// name another ([`super::client::believe`]): [`Request::client`] says who it is.
pub fn classify<'s>(
    raw: &[u8],
    (conn, real_ip): (Option<SocketAddr>, Option<&RealIp>),
    proto: &str,
    steer: impl FnOnce(Option<&[u8]>, &str) -> Steer<'s>,
    out: &mut Vec<u8>,
) -> Result<Request, Refusal> {
    classify_logged(raw, (conn, real_ip), proto, steer, out, None)
}

/// [`classify`], and with `log`, what the access log shows of the head, as far as the parse
/// got (a refused head included): the gateway logs what this one parse read.
pub fn classify_logged<'s>(
    raw: &[u8],
    (conn, real_ip): (Option<SocketAddr>, Option<&RealIp>),
    proto: &str,
    steer: impl FnOnce(Option<&[u8]>, &str) -> Steer<'s>,
    out: &mut Vec<u8>,
    log: Option<&mut super::access::Head>,
) -> Result<Request, Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (method, target, minor, headers) = parse(raw, &mut fields, log)?;
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let parts = Parts {
        method,
        target,
        version,
        headers,
        open: false,
    };
    classify_parts(&parts, raw.len(), (conn, real_ip), proto, steer, out)
}

/// The typed step both front doors share: classify a request head already decoded into
/// `parts` (`raw_len`: about how long it was, to size `out`). See [`classify`].
pub fn classify_parts<'s>(
    parts: &Parts<'_, '_>,
    raw_len: usize,
    (conn, real_ip): (Option<SocketAddr>, Option<&RealIp>),
    proto: &str,
    steer: impl FnOnce(Option<&[u8]>, &str) -> Steer<'s>,
    out: &mut Vec<u8>,
) -> Result<Request, Refusal> {
    let Parts {
        method,
        target,
        version,
        headers,
        open,
    } = *parts;
    match method {
        "CONNECT" => return Err(Refusal::new(501, "CONNECT is not supported")),
        "TRACE" => return Err(Refusal::new(405, "TRACE is not allowed")),
        _ => {}
    }
    let http10 = version == Version::Http10;
    let mut seen = Seen::gather(headers)?;
    let client = believe(real_ip, conn, seen.x_real_ip, &seen.xff[..seen.n_xff]);
    let ip = client.map(|c| c.ip());
    // Each proxy on the way adds one address; a chain this long is a request going round (a
    // backend that is tideway itself behind NAT or a port forward), or a client pretending.
    let hops: usize = seen.xff[..seen.n_xff]
        .iter()
        .map(|v| v.iter().filter(|&&b| b == b',').count() + 1)
        .sum();
    if hops > MAX_FORWARDED_HOPS {
        return Err(Refusal::new(508, "too many forwarding hops: a proxy loop?"));
    }
    let path = seen.locate(method, target, http10)?;
    let body = match seen.framing(http10)? {
        // An HTTP/2 stream not ended with its head, without a length: it ends at END_STREAM.
        RequestBody::None if version == Version::H2 && open => RequestBody::UntilEnd,
        body => body,
    };
    let bodiless = matches!(method, "GET" | "HEAD" | "OPTIONS" | "DELETE");
    // A bodiless method's HTTP/2 stream may end with an empty DATA frame: read to its end, the
    // body must be empty (see [`super::exchange`]).
    if bodiless && !matches!(body, RequestBody::None | RequestBody::UntilEnd) {
        // Workerman 4.x up to 4.1.0 ends these requests at the blank line whatever their
        // framing says, and would read the body as a request of its own.
        return Err(Refusal::new(
            400,
            "a body on a GET, HEAD, OPTIONS or DELETE request",
        ));
    }
    let expect_continue = match seen.expect {
        None => false,
        Some(_) if http10 => false,
        Some(v) if v.trim_ascii().eq_ignore_ascii_case(b"100-continue") => {
            body != RequestBody::None
        }
        Some(_) => return Err(Refusal::new(417, "unsupported expectation")),
    };

    let steered = steer(seen.host, path);
    let route_headers = steered.headers;
    // Only a route with headers of its own pays for variables.
    let vars = route_headers.map(|_| super::headers::Vars {
        headers,
        host: seen.host,
        server_name: steered.server_name,
        proxy_host: steered.default_host,
        client,
        method,
        xff: &seen.xff[..seen.n_xff],
        scheme: proto,
        target: path,
        port: steered.port,
        request_id: steered.request_id,
    });
    let connection = &seen.connection[..seen.n_connection];
    // A WebSocket handshake, or an Upgrade that is dropped and the request served as HTTP.
    let websocket = steered.websocket && method == "GET" && !http10 && seen.handshake();
    let close = if http10 {
        !named_by(connection, "keep-alive")
    } else {
        named_by(connection, "close")
    };
    let key = steered.hash_key.map_or_else(Default::default, |k| {
        let parts = KeyParts {
            client_ip: ip,
            method,
            target: path,
        };
        request_key(k, &parts, |name| field(headers, name))
    });

    let outgoing = Outgoing {
        method,
        path,
        headers,
        seen: &seen,
        websocket,
        ip,
        proto,
    };
    outgoing.write(raw_len, &steered, vars.as_ref(), out);
    let added = route_headers
        .zip(vars.as_ref())
        .and_then(|(h, v)| v.added(h));
    let misreadable = !websocket && holds_websocket_key(out);

    Ok(Request {
        body,
        close,
        http10,
        version,
        head_method: method == "HEAD",
        idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE"),
        websocket,
        expect_continue,
        length_always: !bodiless,
        key,
        misreadable,
        client,
        sticky: steered.sticky.and_then(|name| sticky_cookie(headers, name)),
        added,
    })
}

/// Parse the head `raw` with httparse into `fields`: its method, target, minor version and
/// header fields, unless it is refused as malformed or for its method. With `log`, what the
/// access log shows of it, as far as the parse got.
#[allow(clippy::type_complexity)] // the parts of one request line, and its fields
fn parse<'h, 'b>(
    raw: &'b [u8],
    fields: &'h mut [httparse::Header<'b>],
    log: Option<&mut super::access::Head>,
) -> Result<(&'b str, &'b str, u8, &'h [httparse::Header<'b>]), Refusal> {
    let mut req = httparse::Request::new(fields);
    let parsed = req.parse(raw);
    if let Some(log) = log {
        let complete = matches!(parsed, Ok(httparse::Status::Complete(_)));
        *log = super::access::Head::read(&req, complete);
        if let (true, Some((authority, _))) = (complete, req.path.and_then(split_absolute)) {
            log.authority(authority);
        }
    }
    match parsed {
        Ok(httparse::Status::Complete(n)) if n == raw.len() => {}
        Ok(_) => return Err(Refusal::new(400, "malformed request head")),
        Err(httparse::Error::Version) => return Err(version_refusal(raw)),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(431, "too many header fields"))
        }
        Err(_) => return Err(Refusal::new(400, "malformed request head")),
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Refusal::new(400, "malformed request line"));
    };
    Ok((method, target, minor, req.headers))
}

/// The value of the first header field `name`.
fn field<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

impl<'h> Seen<'h> {
    /// Gather the headers of interest in one pass; refuse more `Connection` or
    /// `X-Forwarded-For` headers than are kept.
    fn gather(headers: &[httparse::Header<'h>]) -> Result<Seen<'h>, Refusal> {
        let mut seen = Seen::default();
        for h in headers {
            let (name, value) = (h.name, h.value);
            if name.eq_ignore_ascii_case("host") {
                seen.hosts += 1;
                seen.host = Some(value.trim_ascii());
            } else if name.eq_ignore_ascii_case("content-length") {
                seen.lengths += 1;
                seen.length = Some(value);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                seen.encodings += 1;
                seen.encoding = Some(value);
            } else if name.eq_ignore_ascii_case("connection") {
                if seen.n_connection == seen.connection.len() {
                    return Err(Refusal::new(400, "too many Connection headers"));
                }
                seen.connection[seen.n_connection] = value;
                seen.n_connection += 1;
            } else if name.eq_ignore_ascii_case("upgrade") {
                seen.upgrades += 1;
                seen.upgrade = Some(value);
            } else if name.eq_ignore_ascii_case("expect") {
                seen.expect = Some(value);
            } else if name.eq_ignore_ascii_case("sec-websocket-key") {
                seen.ws_key = !value.trim_ascii().is_empty();
            } else if name.eq_ignore_ascii_case("sec-websocket-version") {
                seen.ws_version = value.trim_ascii() == b"13";
            } else if name.eq_ignore_ascii_case("x-forwarded-for") {
                if seen.n_xff == seen.xff.len() {
                    return Err(Refusal::new(400, "too many X-Forwarded-For headers"));
                }
                seen.xff[seen.n_xff] = value;
                seen.n_xff += 1;
            } else if name.eq_ignore_ascii_case("x-real-ip") && seen.x_real_ip.is_none() {
                seen.x_real_ip = Some(value);
            }
        }
        Ok(seen)
    }

    /// Where the request goes: its Host, and an absolute-form target that must agree with it
    /// (its authority becomes the Host). Returns the origin-form path.
    fn locate(&mut self, method: &str, target: &'h str, http10: bool) -> Result<&'h str, Refusal> {
        if self.hosts > 1 {
            return Err(Refusal::new(400, "more than one Host header"));
        }
        let mut path = target;
        if let Some((authority, rest)) = split_absolute(target) {
            match self.host {
                Some(h) if !h.eq_ignore_ascii_case(authority.as_bytes()) => {
                    return Err(Refusal::new(
                        400,
                        "the target's authority differs from Host",
                    ))
                }
                _ => {}
            }
            if !valid_host(authority.as_bytes()) {
                return Err(Refusal::new(400, "invalid authority in the target"));
            }
            self.host = Some(authority.as_bytes());
            path = rest;
        } else if !(target.starts_with('/') || (target == "*" && method == "OPTIONS")) {
            return Err(Refusal::new(400, "invalid request target"));
        }
        if let Some(why) = ambiguous_path(path) {
            return Err(Refusal::new(400, why));
        }
        match self.host {
            Some(h) if !valid_host(h) => Err(Refusal::new(400, "invalid Host header")),
            None if !http10 => Err(Refusal::new(400, "HTTP/1.1 request without Host")),
            _ => Ok(path),
        }
    }

    /// How the body is delimited: exactly one way, or refused.
    fn framing(&self, http10: bool) -> Result<RequestBody, Refusal> {
        Ok(match (self.lengths, self.encodings) {
            (0, 0) => RequestBody::None,
            (_, 1..) if self.lengths > 0 => {
                return Err(Refusal::new(
                    400,
                    "both Content-Length and Transfer-Encoding",
                ))
            }
            (0, 1) if http10 => {
                return Err(Refusal::new(
                    400,
                    "Transfer-Encoding in an HTTP/1.0 request",
                ))
            }
            (0, 1) => match self.encoding.map(<[u8]>::trim_ascii) {
                Some(v) if v.eq_ignore_ascii_case(b"chunked") => RequestBody::Chunked,
                _ => return Err(Refusal::new(501, "unsupported Transfer-Encoding")),
            },
            (0, _) => return Err(Refusal::new(400, "more than one Transfer-Encoding header")),
            (1, 0) => match self.length.and_then(parse_length) {
                Some(0) => RequestBody::None,
                // Workerman reads 10 digits of a length: more would be misread (and nobody
                // sends 10 GB through this proxy).
                Some(n) if n > MAX_CONTENT_LENGTH => {
                    return Err(Refusal::new(413, "Content-Length over 9999999999"))
                }
                Some(n) => RequestBody::Length(n),
                None => return Err(Refusal::new(400, "malformed Content-Length")),
            },
            _ => return Err(Refusal::new(400, "more than one Content-Length header")),
        })
    }

    /// Do the headers make a WebSocket handshake (the method and version checked apart)?
    fn handshake(&self) -> bool {
        self.upgrades == 1
            && named_by(&self.connection[..self.n_connection], "upgrade")
            && self
                .upgrade
                .is_some_and(|u| u.trim_ascii().eq_ignore_ascii_case(b"websocket"))
            && self.ws_key
            && self.ws_version
    }
}

/// What the backend's head is written from.
struct Outgoing<'a, 'h> {
    method: &'h str,
    /// The origin-form target.
    path: &'h str,
    headers: &'a [httparse::Header<'h>],
    seen: &'a Seen<'h>,
    /// A WebSocket handshake that is passed on.
    websocket: bool,
    /// The real client's address.
    ip: Option<IpAddr>,
    proto: &'a str,
}

impl Outgoing<'_, '_> {
    /// Write the backend's head into `out` (cleared first; `raw_len`: the client's head's
    /// length), all but the framing header and the final blank line: the request line, one
    /// Host, the client's end-to-end fields, the handshake's, the forwarding headers and the
    /// route's `proxy_set_header` lines (with `vars`).
    fn write(
        &self,
        raw_len: usize,
        steered: &Steer<'_>,
        vars: Option<&super::headers::Vars<'_>>,
        out: &mut Vec<u8>,
    ) {
        let (seen, route_headers) = (self.seen, steered.headers);
        let connection = &seen.connection[..seen.n_connection];
        out.clear();
        out.reserve(raw_len + 160);
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        // An absolute-form target's path may be empty (`http://h` or `http://h?q`).
        if let Some(t) = &steered.target {
            out.extend_from_slice(t);
        } else {
            if !self.path.starts_with('/') && self.path != "*" {
                out.push(b'/');
            }
            out.extend_from_slice(self.path.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        // Exactly one Host: the route's (when it comes out sendable and a valid authority, as
        // a client's must be) or the client's.
        let set_host =
            route_headers.and_then(|h| h.set.iter().find(|s| s.name.eq_ignore_ascii_case("host")));
        if !matches!((set_host, vars), (Some(s), Some(v)) if v.field_if("host", &s.value, out, valid_host))
        {
            let host = seen.host.unwrap_or(steered.default_host.as_bytes());
            write_field(out, b"host", host);
        }
        for h in self.headers {
            // A name with an underscore is dropped, as nginx does by default: PHP and CGI map
            // `X_Real_IP` and `X-Real-IP` to the same variable.
            // `Sec-WebSocket-*` belongs to a handshake: on any other request it only invites a
            // lenient backend to switch protocols.
            if REQUEST_DROP.iter().any(|d| h.name.eq_ignore_ascii_case(d))
                || h.name.contains('_')
                || named_by(connection, h.name)
                || (!self.websocket && is_websocket_field(h.name))
                || super::headers::sets(route_headers, h.name)
            {
                continue;
            }
            write_field(out, h.name.as_bytes(), h.value);
        }
        if self.websocket {
            out.extend_from_slice(b"connection: upgrade\r\nupgrade: websocket\r\n");
        }
        let xff = &seen.xff[..seen.n_xff];
        write_forwarding(out, xff, self.ip, self.proto, route_headers);
        if let (Some(h), Some(v)) = (route_headers, vars) {
            for s in h
                .set
                .iter()
                .filter(|s| !s.name.eq_ignore_ascii_case("host"))
            {
                v.field(&s.name, &s.value, out);
            }
        }
    }
}

/// The value of the first cookie `name` in the `Cookie` headers, read as a sticky value (see
/// [`crate::pool::sticky::StickyId::parse`]); a malformed one is as good as none.
fn sticky_cookie(
    headers: &[httparse::Header<'_>],
    name: &str,
) -> Option<crate::pool::sticky::StickyId> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .find_map(|h| super::key::cookie(h.value, name))
        .and_then(crate::pool::sticky::StickyId::parse)
}

/// Why a request target must not reach a lenient backend as written, if it must not: tideway
/// picks a route on the normalized path, while the backend (PHP's `parse_url`, which
/// normalizes nothing) reads the raw one. A fragment (PHP stops at `#`), a dot segment (`..`
/// or `.`, also as `%2e`, or hidden behind an encoded `/`) or a leading `//` (read as a host)
/// would let the two see different paths, and a route that denies be passed by. nginx
/// forwards these as they are; tideway is stricter.
fn ambiguous_path(target: &str) -> Option<&'static str> {
    if target.contains('#') {
        return Some("a fragment (#) in the request target");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path.starts_with("//") {
        return Some("a request target starting with //");
    }
    if has_dot_segment(path.as_bytes()) {
        return Some("a dot segment (. or ..) in the request path");
    }
    None
}

/// Does `path` hold a segment that is `.` or `..`, with dots also as `%2e` and separators
/// also as `\\`, `%2f` or `%5c`? One pass, no allocation.
fn has_dot_segment(path: &[u8]) -> bool {
    let (mut dots, mut other) = (0u32, false);
    let mut i = 0;
    loop {
        let (sep, dot, step) = match path.get(i..).unwrap_or_default() {
            [] | [b'/' | b'\\', ..] => (true, false, 1),
            [b'%', b'2', x, ..] if x | 0x20 == b'f' => (true, false, 3),
            [b'%', b'5', x, ..] if x | 0x20 == b'c' => (true, false, 3),
            [b'%', b'2', x, ..] if x | 0x20 == b'e' => (false, true, 3),
            [b'.', ..] => (false, true, 1),
            _ => (false, false, 1),
        };
        if sep {
            if !other && (dots == 1 || dots == 2) {
                return true;
            }
            if i >= path.len() {
                return false;
            }
            (dots, other) = (0, false);
        } else if dot {
            dots += 1;
        } else {
            other = true;
        }
        i += step;
    }
}

/// Is `name` one of the WebSocket handshake's `Sec-WebSocket-*` fields?
fn is_websocket_field(name: &str) -> bool {
    name.len() > 14 && name.as_bytes()[..14].eq_ignore_ascii_case(b"sec-websocket-")
}

/// Does `head` hold `Sec-WebSocket-Key:` anywhere, in any case (what Workerman's handshake
/// looks for: `/Sec-WebSocket-Key: *(.*?)\r\n/i`)?
fn holds_websocket_key(head: &[u8]) -> bool {
    const KEY: &[u8] = b"sec-websocket-key:";
    head.windows(KEY.len())
        .any(|w| (w[0] | 0x20) == b's' && w.eq_ignore_ascii_case(KEY))
}

/// A version httparse does not take: 505 for a well-formed `HTTP/d.d` it does not speak,
/// 400 for anything else.
fn version_refusal(raw: &[u8]) -> Refusal {
    let line = raw
        .trim_ascii_start()
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    if line.split(|&b| b == b' ').count() != 3 {
        return Refusal::new(400, "malformed request line");
    }
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Refusal::new(505, "HTTP version not supported")
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => {
            Refusal::new(505, "HTTP version not supported")
        }
        _ => Refusal::new(400, "malformed request line"),
    }
}

/// The forwarding headers, the one place tideway writes them (HTTP and WebSocket alike):
/// `X-Forwarded-For` (the client's earlier chain in `xff`, joined, then the client),
/// `X-Real-IP` and `X-Forwarded-Proto: proto`; each unless the route sets it (`set`).
fn write_forwarding(
    out: &mut Vec<u8>,
    xff: &[&[u8]],
    client: Option<IpAddr>,
    proto: &str,
    set: Option<&RouteHeaders>,
) {
    let own = |name| !super::headers::sets(set, name);
    if let Some(ip) = client {
        if own("x-forwarded-for") {
            out.extend_from_slice(b"x-forwarded-for: ");
            for prev in xff.iter().map(|v| v.trim_ascii()) {
                if !prev.is_empty() {
                    out.extend_from_slice(prev);
                    out.extend_from_slice(b", ");
                }
            }
            let _ = write!(out, "{ip}\r\n");
        }
        if own("x-real-ip") {
            let _ = write!(out, "x-real-ip: {ip}\r\n");
        }
    }
    if own("x-forwarded-proto") {
        out.extend_from_slice(b"x-forwarded-proto: ");
        out.extend_from_slice(proto.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// End the backend's head: the one framing header (`content-length: len`, or none for a
/// bodiless request of a method without a body), then the blank line.
pub fn finish_head(out: &mut Vec<u8>, req: &Request, len: u64) {
    if len > 0 || req.length_always {
        let _ = write!(out, "content-length: {len}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
