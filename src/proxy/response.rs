//! A backend's response head, as tideway passes it to the client: hop-by-hop headers out, the
//! body's framing decided once and written canonically (`content-length: N`, or a chunked
//! body re-encoded by tideway), and `Connection: close` when the client connection ends with
//! the response.
//!
//! An HTTP/1.0 client never gets a chunked body (RFC 9112 §7.1): a chunked or close-delimited
//! answer is decoded and the connection closes at its end, as nginx does.

use super::body::{Encoding, Framing};
use super::h2::websocket;
use super::request::{has_token, named_by, parse_length, write_field, Request, MAX_HEADERS};
use std::io::Write;

/// A backend's response head, as tideway forwards it.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A 1xx interim response other than 101: dropped; the final one follows.
    Interim,
    /// `101 Switching Protocols` to a WebSocket handshake; its head for the client has been
    /// written, with all its headers.
    Switched,
    /// The final response; its head for the client has been written.
    Final(Response),
}

/// A final response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// How the backend delimits the body.
    pub framing: Framing,
    /// How the client gets it.
    pub encoding: Encoding,
    /// The backend connection can carry another request afterwards.
    pub reusable: bool,
    /// The client connection closes afterwards.
    pub close: bool,
}

/// Why a response head cannot be forwarded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("the backend sent a malformed response head")]
    Malformed,
    #[error("the backend sent a malformed Content-Length, several, or one with Transfer-Encoding")]
    Length,
    #[error("the backend switched protocols without a WebSocket handshake")]
    Upgrade,
    #[error("the backend sent a Transfer-Encoding other than chunked")]
    Coding,
    #[error("the backend answered tideway's WebSocket key with a wrong Sec-WebSocket-Accept")]
    Accept,
    #[error("the backend answered a WebSocket handshake with a 2xx without switching")]
    NoSwitch,
}

/// Headers that describe one hop or the body's framing, which tideway writes itself.
const RESPONSE_DROP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "content-length",
    "transfer-encoding",
];

/// The one Content-Length of a response: `Err` when there are several (even equal: as for
/// requests, and as current nginx answers 502) or it is malformed.
fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, BadResponse> {
    let mut len = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value).ok_or(BadResponse::Length)?;
            if len.is_some() {
                return Err(BadResponse::Length);
            }
            len = Some(n);
        }
    }
    Ok(len)
}

/// Where tideway writes a response head for the client: HTTP/1 text (a `Vec<u8>`), or an
/// HTTP/2 stream's typed head ([`super::h2::answer::H2Head`]). The HTTP/1 door's head is
/// written as before, with no allocation more.
pub trait ClientHead {
    /// The client speaks HTTP/2: a body is never chunked, and no field says how the
    /// connection goes on.
    const H2: bool;
    /// Start a head of `status` (what was written before is dropped); `capacity`: about how
    /// long it will be.
    fn status(&mut self, status: u16, reason: &str, capacity: usize);
    /// One header field.
    fn field(&mut self, name: &[u8], value: &[u8]);
    /// Fields tideway rendered as text, `name: value` and CRLF each (a route's `add_header`).
    fn lines(&mut self, text: &[u8]);
    /// End the head (HTTP/1's blank line).
    fn end(&mut self);
    /// Add one field to an ended head (a field tideway adds itself, such as a sticky cookie).
    fn add(&mut self, name: &[u8], value: &[u8]);
}

impl ClientHead for Vec<u8> {
    const H2: bool = false;
    fn status(&mut self, status: u16, reason: &str, capacity: usize) {
        self.clear();
        self.reserve(capacity);
        let _ = write!(self, "HTTP/1.1 {status:03} {reason}\r\n");
    }
    fn field(&mut self, name: &[u8], value: &[u8]) {
        write_field(self, name, value);
    }
    fn lines(&mut self, text: &[u8]) {
        self.extend_from_slice(text);
    }
    fn end(&mut self) {
        self.extend_from_slice(b"\r\n");
    }
    fn add(&mut self, name: &[u8], value: &[u8]) {
        add_field(self, name, value);
    }
}

/// `n` in decimal, in `buf`.
pub(super) fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Inspect the complete response head `raw` to `req` (`close`: the client connection closes
/// after this exchange whatever the answer). For a final response or a switch, write the head
/// for the client into `out` (cleared first), always with CRLF line ends.
pub fn inspect_response<H: ClientHead>(
    raw: &[u8],
    req: &Request,
    close: bool,
    out: &mut H,
) -> Result<Answer, BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    if !matches!(res.parse(raw), Ok(httparse::Status::Complete(n)) if n == raw.len()) {
        return Err(BadResponse::Malformed);
    }
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Err(BadResponse::Malformed);
    };
    let reason = res.reason.unwrap_or("");
    let headers: &[httparse::Header<'_>] = res.headers;
    match status {
        101 if req.websocket
            && headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("upgrade") && has_token(h.value, "websocket")
            }) =>
        {
            // A key tideway made is checked here; the client checks its own.
            if req.accept.is_some_and(|a| !a.answered(headers)) {
                return Err(BadResponse::Accept);
            }
            if H::H2 {
                // RFC 8441: the stream's extended CONNECT is answered 200, with the 101's
                // end-to-end fields.
                out.status(200, "OK", raw.len());
                for h in headers.iter().filter(|h| websocket::passed_on(h.name)) {
                    out.field(h.name.as_bytes(), h.value);
                }
            } else {
                // Rebuilt too, every header kept (the handshake's `Upgrade` and `Connection`
                // included), so the client gets CRLF line ends whatever the backend sent.
                out.status(101, reason, raw.len() + 8);
                for h in headers {
                    out.field(h.name.as_bytes(), h.value);
                }
            }
            out.end();
            return Ok(Answer::Switched);
        }
        101 => return Err(BadResponse::Upgrade),
        100..=199 => return Ok(Answer::Interim),
        // Any 2xx to an extended CONNECT would open the tunnel: only a switch answers it.
        200..=299 if req.accept.is_some() => return Err(BadResponse::NoSwitch),
        _ => {}
    }
    let fields = Fields::gather(headers)?;
    let connection = fields.connection();
    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
    let chunked = fields.chunked;
    let length = if chunked {
        None
    } else {
        content_length(headers)?
    };
    let bodiless = req.head_method || status == 204 || status == 304;
    let framing = match (bodiless, chunked, length) {
        (true, ..) => Framing::Empty,
        (false, true, _) => Framing::Chunked,
        (false, false, Some(n)) => Framing::Length(n),
        (false, false, None) => Framing::UntilClose,
    };
    // A body of unknown length goes to an HTTP/1.1 client chunked, so it can tell a whole body
    // from a cut one and keep its connection; an HTTP/1.0 client's body ends at close.
    let encoding = match framing {
        Framing::Chunked | Framing::UntilClose if !req.http10 && !H::H2 => Encoding::Chunked,
        _ => Encoding::Raw,
    };
    let ends_at_close =
        matches!(framing, Framing::Chunked | Framing::UntilClose) && encoding == Encoding::Raw;
    // A bodiless answer whose backend may still send a body (any answer to HEAD: Workerman
    // sends one; a 204 or 304 with a length or coding) must not leave the connection pooled:
    // bytes arriving later would be the next client's answer.
    let late_body = req.head_method || (bodiless && (chunked || length.is_some_and(|n| n > 0)));
    let reusable = version == 1
        && framing != Framing::UntilClose
        && !late_body
        && !named_by(connection, "close");
    let res = Response {
        status,
        framing,
        encoding,
        reusable,
        close: close || ends_at_close,
    };
    out.status(status, reason, raw.len() + 48);
    write_final_fields(out, headers, (connection, length), req, &res);
    Ok(Answer::Final(res))
}

/// The fields of a response head that decide its framing and its connection.
struct Fields<'h> {
    connection: [&'h [u8]; 4],
    n_connection: usize,
    /// `Transfer-Encoding: chunked` (the one coding taken).
    chunked: bool,
}

impl<'h> Fields<'h> {
    /// Gather them in one pass, refusing what cannot be framed one way: a coding other than
    /// `chunked`, more than one, or a coding with a length.
    fn gather(headers: &[httparse::Header<'h>]) -> Result<Fields<'h>, BadResponse> {
        let mut connection: [&[u8]; 4] = [b""; 4];
        let mut n_connection = 0;
        let mut codings = 0;
        let mut lengths = 0;
        for h in headers {
            if h.name.eq_ignore_ascii_case("connection") {
                if n_connection == connection.len() {
                    return Err(BadResponse::Malformed);
                }
                connection[n_connection] = h.value;
                n_connection += 1;
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Only `chunked` alone, as nginx: tideway re-frames the body and could not
                // carry another coding over.
                if !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(BadResponse::Coding);
                }
                codings += 1;
            } else if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
            }
        }
        if codings > 1 {
            return Err(BadResponse::Coding);
        }
        // Framed both ways: RFC 9112 §6.3 calls it a likely smuggling or splitting attempt,
        // and current nginx answers 502; so does tideway (as it refuses such a request with
        // 400).
        if codings > 0 && lengths > 0 {
            return Err(BadResponse::Length);
        }
        Ok(Fields {
            connection,
            n_connection,
            chunked: codings == 1,
        })
    }

    /// The `Connection` values.
    fn connection(&self) -> &[&'h [u8]] {
        &self.connection[..self.n_connection]
    }
}

/// After the status line of the client's head of final answer `res`: the backend's
/// end-to-end fields (hop-by-hop ones and those `connection` names dropped), the route's
/// `add_header` lines, the one framing header, the connection's, and the blank line. `length`:
/// the backend's Content-Length.
fn write_final_fields<H: ClientHead>(
    out: &mut H,
    headers: &[httparse::Header<'_>],
    (connection, length): (&[&[u8]], Option<u64>),
    req: &Request,
    res: &Response,
) {
    for h in headers {
        if RESPONSE_DROP.iter().any(|d| h.name.eq_ignore_ascii_case(d))
            || named_by(connection, h.name)
        {
            continue;
        }
        out.field(h.name.as_bytes(), h.value);
    }
    if let Some(a) = &req.added {
        for lines in a.lines(res.status) {
            out.lines(lines);
        }
    }
    let mut digits = [0u8; 20];
    match (res.framing, res.encoding) {
        (Framing::Length(n), _) => out.field(b"content-length", decimal(n, &mut digits)),
        // A HEAD, 204 or 304 answer keeps the length it describes.
        (Framing::Empty, _) if res.status != 204 => {
            if let Some(n) = length {
                out.field(b"content-length", decimal(n, &mut digits));
            }
        }
        (_, Encoding::Chunked) => out.field(b"transfer-encoding", b"chunked"),
        _ => {}
    }
    // HTTP/2 has no connection fields.
    match (H::H2, res.close, req.http10) {
        (false, true, _) => out.field(b"connection", b"close"),
        (false, false, true) => out.field(b"connection", b"keep-alive"),
        _ => {}
    }
    out.end();
}

/// Add one header field to a head [`inspect_response`] wrote into `out`, before its blank
/// line (a field tideway adds itself, such as a sticky cookie).
pub fn add_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if out.ends_with(b"\r\n\r\n") {
        out.truncate(out.len() - 2);
        write_field(out, name, value);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests;
