//! WebSocket metrics: closes by code and by who closed, data messages and their payload bytes
//! each way, session lengths and failed handshakes, each by upstream. Open WebSockets are a
//! per-backend gauge rendered from the pool's live counters at scrape time (like the other
//! per-backend series), so they are not here.
//!
//! Counting a message costs no label lookup: an upstream's counters are resolved once, in its
//! [`TunnelMeter`] (a route holds it, every tunnel shares it), and a tunnel adds what one read
//! carried with one atomic add per counter that moved.
//!
//! Labels are bounded: `by` is [`CLOSERS`], `code` is [`CODES`] (see [`code_bucket`]),
//! `direction` is [`DIRECTIONS`], `reason` is [`HANDSHAKE_FAILURES`] or
//! [`super::FAILURE_REASONS`], `protocol` is [`PROTOCOLS`].
//!
//! Imports: nothing else in tideway.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

/// Directions of messages: index 0 is client to backend, 1 backend to client.
pub const DIRECTIONS: [&str; 2] = ["client_to_backend", "backend_to_client"];
/// Close code buckets of `tideway_websocket_closes_total` (1006: no close frame went by).
pub const CODES: [&str; 9] = [
    "1000",
    "1001",
    "1006",
    "1008",
    "1009",
    "1011",
    "other_1xxx",
    "3xxx",
    "4xxx",
];
/// Who closed a WebSocket: `client` or `backend` (the first close frame's sender, or, without
/// one, the side whose stream ended first), else why tideway closed it (the reason of
/// `tideway_tunnels_ended_total` it ended with). Every value that can appear is listed here.
pub const CLOSERS: [&str; 8] = [
    "client",
    "backend",
    "drain",
    "rebalance",
    "shutdown",
    "idle",
    "ping_timeout",
    "send_timeout",
];
/// Why a WebSocket handshake tideway forwarded did not become a tunnel: `refused` (the backend
/// answered without switching), `client_gone` (the client left before the 101 reached it),
/// `exhausted` (every backend tried failed, each counted under its own reason), or else the
/// failure's reason in `tideway_upstream_failures_total` ([`super::FAILURE_REASONS`]).
pub const HANDSHAKE_FAILURES: [&str; 3] = ["refused", "client_gone", "exhausted"];

/// The protocols a client opens a WebSocket with: an HTTP/1.1 upgrade, or an HTTP/2 extended
/// CONNECT (RFC 8441).
pub const PROTOCOLS: [&str; 2] = ["http/1.1", "h2"];

/// Session length buckets, in seconds (a tenth of a second to a day).
const SESSION: [f64; 13] = [
    0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0,
];

/// The label of close `code` (None: the WebSocket ended without a close frame, 1006).
pub fn code_bucket(code: Option<u16>) -> &'static str {
    match code {
        None | Some(1006) => "1006",
        Some(1000) => "1000",
        Some(1001) => "1001",
        Some(1008) => "1008",
        Some(1009) => "1009",
        Some(1011) => "1011",
        Some(3000..=3999) => "3xxx",
        Some(4000..=4999) => "4xxx",
        // 1005 and the other 1xxx; and codes no peer may send (under 1000, 2xxx, 5000 up).
        Some(_) => "other_1xxx",
    }
}

/// The WebSocket families of the process registry.
pub struct WebSocketMetrics {
    /// Closes, by upstream, by ([`CLOSERS`]) and code ([`CODES`]).
    pub closes: IntCounterVec,
    /// Data messages (a fragmented one counts once; control frames never), by upstream and
    /// direction.
    pub messages: IntCounterVec,
    /// Payload bytes of data frames, by upstream and direction.
    pub bytes: IntCounterVec,
    /// How long WebSockets lived, by upstream.
    pub session: HistogramVec,
    /// Handshakes forwarded that did not become a tunnel, by upstream and reason.
    pub handshake_failures: IntCounterVec,
    /// WebSockets opened (the backend switched), by upstream and protocol ([`PROTOCOLS`]).
    pub opened: IntCounterVec,
}

impl WebSocketMetrics {
    pub(super) fn new() -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        WebSocketMetrics {
            closes: counter(
                "tideway_websocket_closes_total",
                "WebSockets ended, by who closed (client, backend, or why tideway did) and close code (1006: no close frame)",
                &["upstream", "by", "code"],
            ),
            messages: counter(
                "tideway_websocket_messages_total",
                "WebSocket data messages relayed, by direction (a fragmented message counts once, control frames never)",
                &["upstream", "direction"],
            ),
            bytes: counter(
                "tideway_websocket_message_bytes_total",
                "Payload bytes of WebSocket data frames relayed, by direction",
                &["upstream", "direction"],
            ),
            session: HistogramVec::new(
                HistogramOpts::new(
                    "tideway_websocket_session_seconds",
                    "How long WebSockets lived, from the 101 to their end",
                )
                .buckets(SESSION.to_vec()),
                &["upstream"],
            )
            .expect("valid metric"),
            handshake_failures: counter(
                "tideway_websocket_handshake_failures_total",
                "WebSocket handshakes forwarded that did not become a WebSocket, by reason",
                &["upstream", "reason"],
            ),
            opened: counter(
                "tideway_websocket_opened_total",
                "WebSockets opened (the backend switched), by the protocol the client opened it with (http/1.1 or h2)",
                &["upstream", "protocol"],
            ),
        }
    }

    /// Every family, to register.
    pub(super) fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.closes.clone()),
            Box::new(self.messages.clone()),
            Box::new(self.bytes.clone()),
            Box::new(self.session.clone()),
            Box::new(self.handshake_failures.clone()),
            Box::new(self.opened.clone()),
        ]
    }

    /// Drop every series of `upstream`.
    pub(super) fn forget(&self, upstream: &str) {
        for by in CLOSERS {
            for code in CODES {
                let _ = self.closes.remove_label_values(&[upstream, by, code]);
            }
        }
        for d in DIRECTIONS {
            let _ = self.messages.remove_label_values(&[upstream, d]);
            let _ = self.bytes.remove_label_values(&[upstream, d]);
        }
        let _ = self.session.remove_label_values(&[upstream]);
        for r in HANDSHAKE_FAILURES.iter().chain(&super::FAILURE_REASONS) {
            let _ = self.handshake_failures.remove_label_values(&[upstream, r]);
        }
        for p in PROTOCOLS {
            let _ = self.opened.remove_label_values(&[upstream, p]);
        }
    }
}

/// Count a WebSocket handshake of `upstream` that failed (`reason`: one of
/// [`HANDSHAKE_FAILURES`] or [`super::FAILURE_REASONS`]).
pub fn handshake_failed(upstream: &str, reason: &'static str) {
    debug_assert!(
        HANDSHAKE_FAILURES.contains(&reason) || super::FAILURE_REASONS.contains(&reason),
        "{reason}"
    );
    super::global()
        .websocket
        .handshake_failures
        .with_label_values(&[upstream, reason])
        .inc();
}

/// What one read of a WebSocket stream carried: data messages completed and data payload
/// bytes (the proxy's frame tracker says, per read).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub messages: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Flow {
    fn add_assign(&mut self, o: Flow) {
        self.messages += o.messages;
        self.bytes += o.bytes;
    }
}

/// One upstream's tunnel series, resolved once and shared by its tunnels: the tunnel
/// lifetime histogram (every tunnel) and the WebSocket counters.
pub struct TunnelMeter {
    /// `tideway_tunnel_duration_seconds` (WebSocket and TCP).
    pub duration: Histogram,
    /// `tideway_websocket_session_seconds`.
    pub session: Histogram,
    messages: [IntCounter; 2],
    bytes: [IntCounter; 2],
    opened: [IntCounter; 2],
    upstream: String,
}

impl TunnelMeter {
    /// The series of `upstream` (`duration`: its tunnel lifetime histogram).
    pub(super) fn of(upstream: &str, duration: Histogram) -> Self {
        let ws = &super::global().websocket;
        let by_direction =
            |v: &IntCounterVec| DIRECTIONS.map(|d| v.with_label_values(&[upstream, d]));
        TunnelMeter {
            duration,
            session: ws.session.with_label_values(&[upstream]),
            messages: by_direction(&ws.messages),
            bytes: by_direction(&ws.bytes),
            opened: PROTOCOLS.map(|p| ws.opened.with_label_values(&[upstream, p])),
            upstream: upstream.to_string(),
        }
    }

    /// Count what went by in `direction` (0: client to backend, 1: backend to client).
    #[inline]
    pub fn flowed(&self, direction: usize, flow: Flow) {
        if flow.messages > 0 {
            self.messages[direction].inc_by(flow.messages);
        }
        if flow.bytes > 0 {
            self.bytes[direction].inc_by(flow.bytes);
        }
    }

    /// Count a WebSocket opened with `protocol` (one of [`PROTOCOLS`]).
    pub fn opened(&self, protocol: &str) {
        debug_assert!(PROTOCOLS.contains(&protocol), "{protocol}");
        let i = PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(0);
        self.opened[i].inc();
    }

    /// Count a WebSocket's end: who closed it (one of [`CLOSERS`]) and its close code (None:
    /// no close frame).
    pub fn closed(&self, by: &'static str, code: Option<u16>) {
        debug_assert!(CLOSERS.contains(&by), "{by}");
        super::global()
            .websocket
            .closes
            .with_label_values(&[&self.upstream, by, code_bucket(code)])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fall_in_bounded_buckets() {
        let cases = [
            (None, "1006"),
            (Some(1006), "1006"),
            (Some(1000), "1000"),
            (Some(1001), "1001"),
            (Some(1005), "other_1xxx"),
            (Some(1008), "1008"),
            (Some(1009), "1009"),
            (Some(1011), "1011"),
            (Some(1012), "other_1xxx"),
            (Some(2500), "other_1xxx"),
            (Some(3000), "3xxx"),
            (Some(4999), "4xxx"),
            (Some(5000), "other_1xxx"),
            (Some(0), "other_1xxx"),
        ];
        for (code, bucket) in cases {
            assert_eq!(code_bucket(code), bucket, "{code:?}");
            assert!(CODES.contains(&bucket));
        }
    }
}
