//! The access log: one line per HTTP request and one per tunnel end (off unless `[server]
//! access_log = true` or `access_log_file`). Text lines are nginx's `combined` format exactly
//! (GoAccess and Logstash read them as nginx's); a WebSocket is one text line, written when
//! its tunnel ends, as nginx writes it (status 101, the bytes the tunnel sent). With
//! `--log-format json` every line is a JSON object: numbers as numbers, the request id, Host
//! and SNI, the backend's id and address; a WebSocket has its handshake's line and a tunnel
//! line with its URI and close code. Lines go to the access-log file or stderr ([`sink`]).
//! What a line shows of the request head is what the one parser
//! ([`super::request::classify_logged`]) read, taken only when the log is on.

pub mod line;
pub mod sink;

use crate::pool::BackendId;
use line::{seconds, Combined};
use serde_json::{json, Map, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

static ENABLED: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);

/// Write access lines as JSON objects (else as text).
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

fn json_mode() -> bool {
    JSON.load(Ordering::Relaxed)
}
/// Turn the access log on or off (at start; `[server]` is not reloaded).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Is the access log on?
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// What the log shows of a request head.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub version: String,
    pub referer: String,
    pub user_agent: String,
    /// The Host header (empty: none).
    pub host: String,
}

/// Longest request target kept in a log line.
const MAX_TARGET: usize = 2048;

impl Head {
    /// What the request parser read of a head: the request line as far as it got, and the
    /// last `Referer`, `User-Agent` and `Host` when it read the header fields (`fields`: the parse
    /// completed; a failed parse leaves them unreliable). Bytes that are not printable ASCII
    /// are escaped as `\xHH`.
    pub fn read(req: &httparse::Request<'_, '_>, fields: bool) -> Head {
        let version = match req.version {
            Some(minor) => format!("HTTP/1.{minor}"),
            None => String::new(),
        };
        let mut head = Head {
            method: escape(req.method.unwrap_or_default().as_bytes(), 32),
            target: escape(req.path.unwrap_or_default().as_bytes(), MAX_TARGET),
            version: escape(version.as_bytes(), 16),
            ..Head::default()
        };
        let headers: &[httparse::Header<'_>] = if fields { req.headers } else { &[] };
        head.fields(headers);
        head
    }

    /// What the log shows of a head a front door decoded into typed parts (an HTTP/2
    /// stream's): its method, target and protocol (`HTTP/2.0`), and the last `Referer`,
    /// `User-Agent` and `Host` of its fields.
    pub fn of_parts(parts: &super::request::Parts<'_, '_>) -> Head {
        let mut head = Head {
            method: escape(parts.method.as_bytes(), 32),
            target: escape(parts.target.as_bytes(), MAX_TARGET),
            version: parts.version.server_protocol().to_string(),
            ..Head::default()
        };
        head.fields(parts.headers);
        head
    }

    /// Take the last `Referer`, `User-Agent` and `Host` of `headers`.
    fn fields(&mut self, headers: &[httparse::Header<'_>]) {
        for h in headers {
            let value = h.value.trim_ascii();
            if h.name.eq_ignore_ascii_case("referer") {
                self.referer = escape(value, 512);
            } else if h.name.eq_ignore_ascii_case("user-agent") {
                self.user_agent = escape(value, 512);
            } else if h.name.eq_ignore_ascii_case("host") {
                self.host = escape(value, 256);
            }
        }
    }

    /// The host an absolute-form target named (`authority`), for a request without a Host
    /// field: routing went by it, so the log shows it.
    pub fn authority(&mut self, authority: &str) {
        if self.host.is_empty() {
            self.host = escape(authority.as_bytes(), 256);
        }
    }
}

/// nginx's escaping of a logged value (`ngx_http_log_escape`): `"`, `\`, control bytes and
/// bytes from 0x7f up as `\xHH`, the rest as is; at most `max` input bytes. The result is
/// printable ASCII without `"` or `\` other than its escapes, so it goes between quotes as is.
fn escape(bytes: &[u8], max: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len().min(max));
    for &b in bytes.iter().take(max) {
        match b {
            b'"' | b'\\' => {}
            0x20..=0x7e => {
                out.push(b as char);
                continue;
            }
            _ => {}
        }
        out.push_str("\\x");
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// At most `max` bytes of an escaped value, not cutting a `\xHH` in two.
fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    // Escaped values are ASCII: any cut is a character boundary.
    let from = max.saturating_sub(3);
    match s.as_bytes()[from..max].iter().rposition(|&b| b == b'\\') {
        Some(p) => &s[..from + p],
        None => &s[..max],
    }
}

/// What one HTTP exchange did, for the log and the metrics.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Status sent to the client (0: none, the connection was cut).
    pub status: u16,
    /// The backend that answered (None: no backend was reached).
    pub backend: Option<SocketAddr>,
    /// Its id (as the metrics name it).
    pub backend_id: Option<BackendId>,
    /// Request bytes from the client: head and body.
    pub received: u64,
    /// Bytes sent to the client: head and body.
    pub sent: u64,
    /// Of `sent`, the response head's.
    pub head: u64,
    /// From the request sent to the backend to its response head.
    pub upstream: Option<Duration>,
}

impl Outcome {
    /// nginx's `$body_bytes_sent`.
    pub fn body_sent(&self) -> u64 {
        self.sent.saturating_sub(self.head)
    }
}

/// Who sent a request and on what: for its line.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub client: Option<IpAddr>,
    /// The TLS server name the client asked for.
    pub sni: Option<&'a str>,
    /// nginx's `$request_id`.
    pub request_id: &'a str,
}

fn client_text(c: Option<IpAddr>) -> String {
    c.map_or_else(|| "-".to_string(), |ip| ip.to_string())
}

/// `""` as JSON null, for a field the request did not have.
fn text_or_null(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        s.into()
    }
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Log one HTTP request. In text, a 101 is left to its tunnel's end ([`tunnel`]).
pub fn request(seen: &Seen<'_>, head: &Head, upstream: &str, o: &Outcome, total: Duration) {
    if !json_mode() {
        if o.status != 101 {
            sink::text(&combined(seen.client, head, o.status, o.body_sent()));
        }
        return;
    }
    sink::json(into_map(json!({
        "kind": "http",
        "request_id": seen.request_id,
        "client": client_text(seen.client),
        "host": text_or_null(&head.host),
        "sni": seen.sni,
        "method": head.method,
        "uri": head.target,
        "version": head.version,
        "status": o.status,
        "bytes_sent": o.sent,
        "body_bytes_sent": o.body_sent(),
        "bytes_received": o.received,
        "referer": text_or_null(&head.referer),
        "user_agent": text_or_null(&head.user_agent),
        "upstream": upstream,
        "backend_id": o.backend_id.as_deref(),
        "backend_addr": o.backend.map(|a| a.to_string()),
        "request_time": seconds(total),
        "upstream_time": o.upstream.map(seconds),
    })));
}

fn combined(client: Option<IpAddr>, head: &Head, status: u16, body: u64) -> String {
    let client = client_text(client);
    Combined {
        client: &client,
        method: &head.method,
        target: &head.target,
        version: &head.version,
        status,
        body_bytes_sent: body,
        referer: &head.referer,
        user_agent: &head.user_agent,
    }
    .line(SystemTime::now())
}

/// What a WebSocket's end line needs of its handshake, made when the 101 is answered (only
/// with the log on) and kept for the tunnel's life, so as small as it can be: the few escaped
/// fields the line shows, one per line of one string, each at most [`TUNNEL_FIELD`] bytes.
/// Text: method, target, version, referer, User-Agent. JSON: request id, Host, SNI, target.
#[derive(Debug, Clone)]
pub struct Handshake {
    fields: Box<str>,
    /// Body bytes the 101 answer carried (the backend's first frames).
    body_sent: u64,
}

/// Longest field (escaped bytes) a WebSocket's handshake keeps for its end line.
pub const TUNNEL_FIELD: usize = 256;

impl Handshake {
    /// For the request `head` that `seen` sent, answered with `body_sent` body bytes.
    pub fn new(seen: &Seen<'_>, head: &Head, body_sent: u64) -> Handshake {
        let sni = seen.sni.map(|s| escape(s.as_bytes(), TUNNEL_FIELD));
        let fields: [&str; 5] = if json_mode() {
            let sni = sni.as_deref().unwrap_or("");
            [seen.request_id, &head.host, sni, &head.target, ""]
        } else {
            let h = head;
            [&h.method, &h.target, &h.version, &h.referer, &h.user_agent]
        };
        let mut all = String::new();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                all.push('\n');
            }
            all.push_str(cap(f, TUNNEL_FIELD));
        }
        Handshake {
            fields: all.into_boxed_str(),
            body_sent,
        }
    }

    /// Field `i` (see the type).
    fn field(&self, i: usize) -> &str {
        self.fields.split('\n').nth(i).unwrap_or("")
    }
}

/// Which side sent the first close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closer {
    Client,
    Backend,
    /// tideway's own 1001 (drain, shutdown, idle timeout).
    Tideway,
}

impl Closer {
    pub(super) fn name(self) -> &'static str {
        match self {
            Closer::Client => "client",
            Closer::Backend => "backend",
            Closer::Tideway => "tideway",
        }
    }
}

/// What one tunnel did, for the log.
#[derive(Debug, Clone)]
pub struct TunnelRecord<'a> {
    pub client: Option<IpAddr>,
    pub upstream: &'a str,
    pub backend: SocketAddr,
    /// "websocket" or "tcp".
    pub kind: &'static str,
    /// Bytes client -> backend and backend -> client.
    pub up: u64,
    pub down: u64,
    pub duration: Duration,
    /// How it ended: closed, idle, drain, rebalance, shutdown, error.
    pub end: &'static str,
    /// The first close frame's code, and who sent it (WebSocket).
    pub close: Option<(u16, Closer)>,
    /// The backend's id.
    pub backend_id: Option<&'a str>,
    /// The WebSocket's handshake.
    pub handshake: Option<&'a Handshake>,
}

/// Log the end of a tunnel. In text, a TCP tunnel's end is not an access line (nginx's
/// `combined` has no shape for it; nginx logs streams apart): it is an event on stderr with
/// the other logs, target `tideway::tunnel`.
pub fn tunnel(t: &TunnelRecord<'_>) {
    let h = t.handshake;
    if !json_mode() {
        match h {
            // nginx's line for a WebSocket: its request, 101, what was sent.
            Some(h) => {
                let head = Head {
                    method: h.field(0).into(),
                    target: h.field(1).into(),
                    version: h.field(2).into(),
                    referer: h.field(3).into(),
                    user_agent: h.field(4).into(),
                    host: String::new(),
                };
                sink::text(&combined(t.client, &head, 101, h.body_sent + t.down));
            }
            None => tracing::info!(
                target: "tideway::tunnel",
                kind = t.kind,
                client = %client_text(t.client),
                end = t.end,
                upstream = t.upstream,
                backend = %t.backend,
                duration = format_args!("{:.3}", t.duration.as_secs_f64()),
                bytes_up = t.up,
                bytes_down = t.down,
                "tunnel ended"
            ),
        }
        return;
    }
    sink::json(into_map(json!({
        "kind": t.kind,
        "request_id": h.map(|h| h.field(0)),
        "client": client_text(t.client),
        "host": h.map(|h| text_or_null(h.field(1))),
        "sni": h.map(|h| text_or_null(h.field(2))),
        "uri": h.map(|h| h.field(3)),
        "upstream": t.upstream,
        "backend_id": t.backend_id,
        "backend_addr": t.backend.to_string(),
        "bytes_up": t.up,
        "bytes_down": t.down,
        "duration": seconds(t.duration),
        "end": t.end,
        "close_code": t.close.map(|c| c.0),
        "closed_by": t.close.map(|c| c.1.name()),
    })));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the parser reads of `raw`, as the gateway logs it.
    fn parse(raw: &[u8]) -> Head {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(raw);
        Head::read(&req, matches!(parsed, Ok(httparse::Status::Complete(_))))
    }

    #[test]
    fn reads_the_request_line_and_escapes_what_is_not_printable() {
        let h = parse(
            b"GET /a?uid=42 HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8 \"q\"\r\nreferer: http://r/\r\n\r\n",
        );
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/a?uid=42");
        assert_eq!(h.version, "HTTP/1.1");
        assert_eq!(h.user_agent, "curl/8 \\x22q\\x22");
        assert_eq!(h.referer, "http://r/");
        assert_eq!(escape(b"a\x1b[31m\xff", 100), "a\\x1B[31m\\xFF");
        // nginx's set: `"`, `\`, control bytes, DEL and up; nothing else.
        assert_eq!(
            escape(b"a\"b\\c\nd\x7f e%", 100),
            "a\\x22b\\x5Cc\\x0Ad\\x7F e%"
        );
        let all: Vec<u8> = (0..=255).collect();
        let e = escape(&all, 256);
        assert!(!e.contains('"') && e.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert_eq!(e.len(), 256 + 3 * (32 + 2 + 129));
    }

    #[test]
    fn reads_a_bare_lf_head_after_empty_lines() {
        let h = parse(b"\r\n\nGET /a HTTP/1.1\nHost: x\nUser-Agent: u\n\n");
        assert_eq!((h.method.as_str(), h.target.as_str()), ("GET", "/a"));
        assert_eq!(h.user_agent, "u");
    }

    #[test]
    fn a_head_the_parser_refuses_shows_what_it_read() {
        // The version is not one httparse reads: the method and target are, no field is.
        let h = parse(b"GET /a HTTP/2.0\r\nUser-Agent: u\r\n\r\n");
        assert_eq!((h.method.as_str(), h.target.as_str()), ("GET", "/a"));
        assert_eq!((h.version.as_str(), h.user_agent.as_str()), ("", ""));
        let h = parse(b"GET /a HTTP/1.0\r\nUser-Agent: u\r\nbad header\r\n\r\n");
        assert_eq!(
            (h.version.as_str(), h.user_agent.as_str()),
            ("HTTP/1.0", "")
        );
    }

    #[test]
    fn a_capped_field_never_ends_inside_an_escape() {
        let e = escape(&[b'a', 0xff, 0xff], 100); // a\xFF\xFF
        assert_eq!(cap(&e, 100), e);
        assert_eq!(cap(&e, 5), "a\\xFF");
        for max in 2..5 {
            assert_eq!(cap(&e, max), "a", "{max}");
        }
        assert_eq!(cap(&e, 1), "a");
    }

    #[test]
    fn a_websocket_s_handshake_keeps_only_capped_fields() {
        let head = Head {
            method: "GET".into(),
            target: escape(&[b'/'; 2048], MAX_TARGET),
            version: "HTTP/1.1".into(),
            referer: escape(&[&b"a"[..], &[0xff; 511]].concat(), 512),
            user_agent: "ua".into(),
            host: "h".into(),
        };
        let seen = Seen {
            client: None,
            sni: None,
            request_id: "id",
        };
        let h = Handshake::new(&seen, &head, 7);
        assert_eq!(h.field(0), "GET");
        assert_eq!(h.field(1).len(), TUNNEL_FIELD);
        assert_eq!(h.field(2), "HTTP/1.1");
        assert_eq!(h.field(3).len(), 253); // `a` and 63 whole `\xFF`
        assert!(h.field(3).ends_with("\\xFF"));
        assert_eq!(h.field(4), "ua");
        assert!(h.fields.len() < 5 * TUNNEL_FIELD + 5);
    }
}
