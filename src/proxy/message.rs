//! HTTP/1.1 message heads on tideway's own forwarding path ([`super::exchange`]): which requests
//! it forwards itself, the head the backend gets (hop-by-hop headers out, forwarding headers in),
//! and how a response's body is delimited.
//!
//! Anything unusual (HTTP/1.0, `Transfer-Encoding` or `Expect` on a request, an `Upgrade`
//! other than WebSocket, a head tideway cannot parse) is left to pingora's HTTP proxy.

use super::body::Framing;
use super::head::MAX_HEADERS;
use super::key::request_hash;
use crate::config::HashKey;
use std::io::Write;
use std::net::IpAddr;

/// What to do with a complete request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Inspected {
    /// A WebSocket upgrade: tideway's tunnel.
    WebSocket,
    /// Forward it on tideway's own path; the head for the backend has been written.
    Forward(Request),
    /// Hand it to pingora's HTTP proxy as is.
    Pingora,
}

/// A request tideway forwards itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Length of the request body (`Content-Length`, else 0).
    pub body_len: u64,
    /// The client asked to close after this exchange.
    pub close: bool,
    /// `HEAD`: the response has no body whatever its headers say.
    pub head_method: bool,
    /// Safe to send again to another backend (RFC 9110 idempotent methods).
    pub idempotent: bool,
    /// The sticky key hash, when the caller asked for one.
    pub key: u32,
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus the forwarding headers
/// tideway sets itself.
const REQUEST_DROP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
];

/// Response headers that describe one hop.
const RESPONSE_DROP: [&str; 3] = ["connection", "keep-alive", "proxy-connection"];

/// Finish a head for a backend: `X-Forwarded-For` (the client's earlier chain in `xff`, joined,
/// then the client), `X-Real-IP`, `X-Forwarded-Proto: proto`, and the blank line. The client's
/// own `X-Real-IP` and `X-Forwarded-Proto` must have been left out.
pub(super) fn end_with_forwarding(
    out: &mut Vec<u8>,
    xff: &[&[u8]],
    client: Option<IpAddr>,
    proto: &str,
) {
    if let Some(ip) = client {
        out.extend_from_slice(b"x-forwarded-for: ");
        for prev in xff.iter().map(|v| v.trim_ascii()) {
            if !prev.is_empty() {
                out.extend_from_slice(prev);
                out.extend_from_slice(b", ");
            }
        }
        let _ = write!(out, "{ip}\r\nx-real-ip: {ip}\r\n");
    }
    out.extend_from_slice(b"x-forwarded-proto: ");
    out.extend_from_slice(proto.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Is `token` one of the comma-separated values of a header (case-insensitive)?
pub(super) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Headers that delimit or address a message: a `Connection` header naming them is ignored, or
/// the two hops would disagree on where a message ends (request smuggling).
const NEVER_HOP_BY_HOP: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Is header `name` listed in one of the `Connection` header values (and allowed to be)?
fn named_by(connection: &[&[u8]], name: &str) -> bool {
    connection.iter().any(|v| has_token(v, name))
        && !NEVER_HOP_BY_HOP
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
}

/// The single value of all `Content-Length` headers, `Err` when they are malformed or disagree.
fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, ()> {
    let mut len = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let n: u64 = std::str::from_utf8(v)
                .map_err(|_| ())?
                .parse()
                .map_err(|_| ())?;
            if len.is_some_and(|l| l != n) {
                return Err(());
            }
            len = Some(n);
        }
    }
    Ok(len)
}

/// Inspect the complete request head `raw`. For a request forwarded by tideway, write the head
/// for the backend into `out` (cleared first): request line and headers as they came, minus
/// hop-by-hop headers, plus `X-Forwarded-For` (appended to), `X-Real-IP` and
/// `X-Forwarded-Proto: proto`. With a `hash_key`, the request's sticky key hash is computed too.
pub fn inspect_request(
    raw: &[u8],
    client: Option<IpAddr>,
    proto: &str,
    hash_key: Option<&HashKey>,
    out: &mut Vec<u8>,
) -> Inspected {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // The head must end exactly where tideway's reader ended it (CRLF CRLF): httparse also
    // accepts bare LF line ends, which would hide bytes between the two ends.
    let parsed = matches!(req.parse(raw), Ok(httparse::Status::Complete(n)) if n == raw.len());
    if !parsed || req.version != Some(1) {
        return Inspected::Pingora;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Inspected::Pingora;
    };
    if method == "CONNECT" {
        return Inspected::Pingora;
    }
    let headers = req.headers;

    let mut connection: [&[u8]; 4] = [b""; 4];
    let mut n_connection = 0;
    let (mut upgrade, mut websocket) = (false, false);
    let mut xff: [&[u8]; 4] = [b""; 4];
    let mut n_xff = 0;
    for h in headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            if n_connection == connection.len() {
                return Inspected::Pingora;
            }
            connection[n_connection] = h.value;
            n_connection += 1;
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
            websocket |= has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
        {
            return Inspected::Pingora;
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            if n_xff == xff.len() {
                return Inspected::Pingora;
            }
            xff[n_xff] = h.value;
            n_xff += 1;
        }
    }
    let connection = &connection[..n_connection];
    if upgrade && named_by(connection, "upgrade") {
        return if websocket {
            Inspected::WebSocket
        } else {
            Inspected::Pingora
        };
    }
    let Ok(body_len) = content_length(headers) else {
        return Inspected::Pingora;
    };

    let key = hash_key.map_or(0, |k| {
        let query = target.split_once('?').map(|(_, q)| q);
        request_hash(k, client, query, |name| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        })
    });

    out.clear();
    out.reserve(raw.len() + 128);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in headers.iter() {
        if REQUEST_DROP.iter().any(|d| h.name.eq_ignore_ascii_case(d))
            || named_by(connection, h.name)
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    end_with_forwarding(out, &xff[..n_xff], client, proto);

    Inspected::Forward(Request {
        body_len: body_len.unwrap_or(0),
        close: named_by(connection, "close"),
        head_method: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        key,
    })
}

/// A backend's response head, as tideway forwards it.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A 1xx interim response: dropped; the final one follows.
    Interim,
    /// The final response; its head for the client has been written.
    Final(Response),
}

/// A final response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub framing: Framing,
    /// Pass a body that ends at close on as chunked.
    pub rechunk: bool,
    /// The backend connection can carry another request afterwards.
    pub reusable: bool,
    /// The client connection must close afterwards (it asked to, or the body ends at close).
    pub close: bool,
}

/// Why a response head cannot be forwarded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("the backend sent a malformed response head")]
    Malformed,
    #[error("the backend sent conflicting or malformed Content-Length headers")]
    Length,
    #[error("the backend switched protocols on a plain HTTP request")]
    Upgrade,
}

/// Inspect the complete response head `raw` to a request (`head_method` for `HEAD`; `close` when
/// the client connection closes after it). For a final response, write the head for the
/// client into `out` (cleared first), minus hop-by-hop headers, with `Connection: close` when
/// the client connection ends with it.
pub fn inspect_response(
    raw: &[u8],
    head_method: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<Answer, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    if !matches!(res.parse(raw), Ok(httparse::Status::Complete(n)) if n == raw.len()) {
        return Err(BadResponse::Malformed);
    }
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Err(BadResponse::Malformed);
    };
    match status {
        101 => return Err(BadResponse::Upgrade),
        100..=199 => return Ok(Answer::Interim),
        _ => {}
    }
    let headers = res.headers;
    let mut connection: [&[u8]; 4] = [b""; 4];
    let mut n_connection = 0;
    let mut chunked = None;
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            if n_connection == connection.len() {
                return Err(BadResponse::Malformed);
            }
            connection[n_connection] = h.value;
            n_connection += 1;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides; chunked must be last to delimit the body.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    let connection = &connection[..n_connection];
    // A body that ends at the backend's close is passed on chunked (as nginx does), so the
    // client can tell a complete body from a cut one and keep its connection; unless the
    // backend named a transfer coding of its own, when the client's body ends at close too.
    let mut rechunk = false;
    let framing = if head_method || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match chunked {
            Some(true) => Framing::Chunked,
            Some(false) => Framing::UntilClose,
            None => match content_length(headers) {
                Ok(Some(n)) => Framing::Length(n),
                Ok(None) => {
                    rechunk = true;
                    Framing::UntilClose
                }
                Err(()) => return Err(BadResponse::Length),
            },
        }
    };
    let ends_at_close = framing == Framing::UntilClose;
    let reusable = version == 1 && !ends_at_close && !named_by(connection, "close");
    let close = close || (ends_at_close && !rechunk);

    out.clear();
    out.reserve(raw.len() + 32);
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", res.reason.unwrap_or(""));
    for h in headers.iter() {
        if RESPONSE_DROP.iter().any(|d| h.name.eq_ignore_ascii_case(d))
            || named_by(connection, h.name)
            || (chunked.is_some() && h.name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if rechunk {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Answer::Final(Response {
        status,
        framing,
        rechunk,
        reusable,
        close,
    }))
}

#[cfg(test)]
mod tests;
