//! The access log: one line per HTTP request and one per tunnel end, as `tracing` events with
//! target `tideway::access` (off unless `[server] access_log = true`). In text mode the
//! message is close to nginx's combined format, with the upstream, the backend that served,
//! the bytes both ways and the durations appended; with `--log-format json` every field is a
//! JSON key. What a line shows of the request head is what the one parser
//! ([`super::request::classify_logged`]) read, taken only when the log is on.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);

/// Write access events for JSON logs (fields only) or text logs (the line only: fields in the
/// text formatter's tail would repeat client-controlled strings unquoted, letting a client
/// forge `key=value` pairs).
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

fn json() -> bool {
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
}

/// Longest request target kept in a log line.
const MAX_TARGET: usize = 2048;

impl Head {
    /// What the request parser read of a head: the request line as far as it got, and the
    /// last `Referer` and `User-Agent` when it read the header fields (`fields`: the parse
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

/// For a quoted field of the text line: `"` and `\` escaped, as nginx does.
fn quoted(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['"', '\\']) {
        s.replace('\\', "\\\\").replace('"', "\\\"").into()
    } else {
        s.into()
    }
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// What one HTTP exchange did, for the log and the metrics.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Status sent to the client (0: none, the connection was cut).
    pub status: u16,
    /// The backend that answered (None: no backend was reached).
    pub backend: Option<SocketAddr>,
    /// Request bytes from the client: head and body.
    pub received: u64,
    /// Bytes sent to the client: head and body.
    pub sent: u64,
    /// From the request sent to the backend to its response head.
    pub upstream: Option<Duration>,
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Log one HTTP request.
pub fn request(client: Option<IpAddr>, head: &Head, upstream: &str, o: &Outcome, total: Duration) {
    let client = client.map_or_else(|| "-".to_string(), |ip| ip.to_string());
    let backend = o.backend.map_or_else(|| "-".to_string(), |a| a.to_string());
    let upstream_time = o.upstream.map_or_else(|| "-".to_string(), secs);
    if json() {
        tracing::info!(
            target: "tideway::access",
            kind = "http",
            client = %client,
            method = %head.method,
            uri = %head.target,
            version = %head.version,
            status = o.status,
            bytes_sent = o.sent,
            bytes_received = o.received,
            referer = %head.referer,
            user_agent = %head.user_agent,
            upstream,
            backend = %backend,
            request_time = %secs(total),
            upstream_time = %upstream_time,
            "access"
        );
        return;
    }
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    tracing::info!(
        target: "tideway::access",
        "{client} - - [{time}] \"{} {} {}\" {} {} \"{}\" \"{}\" upstream={upstream} backend={backend} request_time={} upstream_time={upstream_time} bytes_received={}",
        quoted(&head.method),
        quoted(&head.target),
        quoted(&head.version),
        o.status,
        o.sent,
        quoted(dash(&head.referer)),
        quoted(dash(&head.user_agent)),
        secs(total),
        o.received,
    );
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
}

/// Log the end of a tunnel.
pub fn tunnel(t: &TunnelRecord<'_>) {
    let client = t
        .client
        .map_or_else(|| "-".to_string(), |ip| ip.to_string());
    if json() {
        tracing::info!(
            target: "tideway::access",
            kind = t.kind,
            client = %client,
            upstream = t.upstream,
            backend = %t.backend,
            bytes_up = t.up,
            bytes_down = t.down,
            duration = %secs(t.duration),
            end = t.end,
            "access"
        );
        return;
    }
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    tracing::info!(
        target: "tideway::access",
        "{client} - - [{time}] \"{} tunnel\" end={} upstream={} backend={} duration={} bytes_up={} bytes_down={}",
        t.kind,
        t.end,
        t.upstream,
        t.backend,
        secs(t.duration),
        t.up,
        t.down,
    );
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
