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
        for h in headers {
            let value = h.value.trim_ascii();
            if h.name.eq_ignore_ascii_case("referer") {
                head.referer = escape(value, 512);
            } else if h.name.eq_ignore_ascii_case("user-agent") {
                head.user_agent = escape(value, 512);
            } else if h.name.eq_ignore_ascii_case("host") {
                head.host = escape(value, 256);
            }
        }
        head
    }
}

/// Printable ASCII as is, anything else as `\xHH`; at most `max` input bytes.
fn escape(bytes: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(bytes.len().min(max));
    for &b in bytes.iter().take(max) {
        match b {
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02X}")),
        }
    }
    out
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

/// What a WebSocket's line needs of its handshake, kept (boxed, only with the log on) until
/// the tunnel ends.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub request_id: String,
    pub sni: Option<String>,
    pub head: Head,
    /// Body bytes the 101 answer carried (the backend's first frames).
    pub body_sent: u64,
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
    fn name(self) -> &'static str {
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
    /// How it ended: closed, idle, signalled, error.
    pub end: &'static str,
    /// The first close frame's code, and who sent it (WebSocket).
    pub close: Option<(u16, Closer)>,
    /// The backend's id.
    pub backend_id: Option<&'a str>,
    /// The WebSocket's handshake.
    pub handshake: Option<&'a Handshake>,
}

/// Log the end of a tunnel.
pub fn tunnel(t: &TunnelRecord<'_>) {
    let h = t.handshake;
    if !json_mode() {
        let line = match h {
            // nginx's line for a WebSocket: its request, 101, what was sent.
            Some(h) => combined(t.client, &h.head, 101, h.body_sent + t.down),
            None => format!(
                "{} - - [{}] \"{} tunnel\" end={} upstream={} backend={} duration={:.3} bytes_up={} bytes_down={}",
                client_text(t.client),
                line::time_local(SystemTime::now()),
                t.kind,
                t.end,
                t.upstream,
                t.backend,
                t.duration.as_secs_f64(),
                t.up,
                t.down,
            ),
        };
        sink::text(&line);
        return;
    }
    sink::json(into_map(json!({
        "kind": t.kind,
        "request_id": h.map(|h| h.request_id.as_str()),
        "client": client_text(t.client),
        "host": h.map(|h| text_or_null(&h.head.host)),
        "sni": h.and_then(|h| h.sni.as_deref()),
        "uri": h.map(|h| h.head.target.as_str()),
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
    use super::line::quoted;
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
        assert_eq!(h.user_agent, "curl/8 \"q\"");
        assert_eq!(quoted(&h.user_agent), "curl/8 \\\"q\\\"");
        assert_eq!(h.referer, "http://r/");
        assert_eq!(escape(b"a\x1b[31m\xff", 100), "a\\x1B[31m\\xFF");
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
}
