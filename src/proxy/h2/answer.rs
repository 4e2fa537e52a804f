//! The response head an HTTP/2 stream gets, typed: a status and header fields, written by the
//! engine through [`ClientHead`] as the HTTP/1 door writes text. Fields that only describe an
//! HTTP/1 connection (`connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`,
//! `upgrade`, `te`) are never put in it: HTTP/2 forbids them (RFC 9113 §8.2.2), and the codec
//! would refuse the whole head.

use super::stream::H2Io;
use crate::proxy::response::ClientHead;
use http::header::{HeaderName, HeaderValue};
use pingora::protocols::Stream;

/// Fields an HTTP/2 head never carries.
const CONNECTION_SPECIFIC: [&[u8]; 6] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
    b"te",
];

/// A response head for an HTTP/2 stream.
#[derive(Debug, Default)]
pub struct H2Head {
    status: u16,
    fields: http::HeaderMap,
    /// About how many bytes the head holds (names, values, and 4 per field), for the log.
    len: usize,
}

impl H2Head {
    /// A head of `status` without fields.
    pub fn new(status: u16) -> Self {
        H2Head {
            status,
            len: 3,
            ..H2Head::default()
        }
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// About how many bytes the head holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is it empty? (Never: it holds a status.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The head as the codec takes it (a status it cannot carry becomes 502).
    pub fn into_response(self) -> http::Response<()> {
        let mut res = http::Response::new(());
        *res.status_mut() =
            http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        *res.headers_mut() = self.fields;
        res
    }
}

impl ClientHead for H2Head {
    const H2: bool = true;

    fn status(&mut self, status: u16, _reason: &str, _capacity: usize) {
        *self = H2Head::new(status);
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        if CONNECTION_SPECIFIC
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c))
        {
            return;
        }
        // A field the codec cannot carry (the backend's head was parsed by httparse, which
        // takes a little more than `http` does) is dropped, not sent broken.
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(value.trim_ascii()),
        ) else {
            return;
        };
        self.len += name.len() + value.len() + 4;
        self.fields.append(n, v);
    }

    fn lines(&mut self, text: &[u8]) {
        // Lines tideway rendered itself (a route's add_header): `name: value` CRLF each.
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                self.field(&line[..colon], &line[colon + 1..]);
            }
        }
    }

    fn end(&mut self) {}

    fn add(&mut self, name: &[u8], value: &[u8]) {
        self.field(name, value);
    }
}

/// When `client` is an HTTP/2 stream, give it the head of an answer of tideway's own: `status`,
/// `fields`, the rendered `lines` (a route's add_header) and `content-length: body_len` (none
/// on a 1xx, 204 or 304, which have no content: RFC 9110 §8.6); its body is then written as on
/// HTTP/1. `false`: `client` speaks HTTP/1, nothing done.
pub fn own(
    client: &Stream,
    status: u16,
    fields: &[(&[u8], &[u8])],
    lines: &[&[u8]],
    body_len: usize,
) -> bool {
    let Some(h2) = H2Io::of(client) else {
        return false;
    };
    let mut head = H2Head::new(status);
    for (name, value) in fields {
        head.field(name, value);
    }
    for text in lines {
        head.lines(text);
    }
    if !matches!(status, 100..=199 | 204 | 304) {
        let mut digits = [0u8; 20];
        head.field(
            b"content-length",
            crate::proxy::response::decimal(body_len as u64, &mut digits),
        );
    }
    h2.set_head(head);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_fields_never_reach_the_head() {
        let mut head = H2Head::new(200);
        head.field(b"Connection", b"close");
        head.field(b"Transfer-Encoding", b"chunked");
        head.field(b"Upgrade", b"websocket");
        head.field(b"X-Id", b" b1 ");
        head.lines(b"x-a: 1\r\nx-b: 2\r\n");
        head.add(b"set-cookie", b"a=1");
        let res = head.into_response();
        let names: Vec<_> = res.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-id", "x-a", "x-b", "set-cookie"]);
        assert_eq!(res.headers()["x-id"], "b1");
    }

    #[test]
    fn a_status_the_codec_cannot_carry_is_a_502() {
        assert_eq!(H2Head::new(42).into_response().status(), 502);
    }
}
