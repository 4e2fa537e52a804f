//! Process-wide metrics: event counters, latency histograms, process and build facts.
//! Per-backend gauges and counters are not kept here: they live in the pool's live counters and
//! are rendered from the snapshot at scrape time, so a removed backend's series disappear with
//! it and the request path touches no registry for them. Per-upstream series here are pruned
//! by [`forget_upstream`] when a reload removes the upstream.
//!
//! Conventions (Prometheus): base units (seconds, bytes), `_total` for counters, labels
//! bounded by the config (upstream, listener) or by a fixed list (reason, class, outcome).
//!
//! Imports: nothing else in tideway.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use std::sync::OnceLock;

pub mod process;
pub mod websocket;

/// Why a request or connection failed, as counted in `tideway_upstream_failures_total`.
/// Those starting `client_` were provoked by the request and count against no backend;
/// `loop` is a backend that is one of tideway's own listeners; `local`, tideway short of its
/// own descriptors, memory or ports.
pub const FAILURE_REASONS: [&str; 12] = [
    "no_backend",
    "connect",
    "status",
    "send",
    "unanswered",
    "timeout",
    "bad_response",
    "client_upgrade",
    "client_body",
    "client_misread",
    "loop",
    "local",
];
/// How tunnels end, as counted in `tideway_tunnels_ended_total`.
pub const TUNNEL_ENDS: [&str; 8] = [
    "closed",
    "idle",
    "drain",
    "rebalance",
    "shutdown",
    "error",
    "ping_timeout",
    "send_timeout",
];
/// The protocols a request comes in with, as `tideway_requests_by_protocol_total` labels them.
pub const PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2"];
/// Why a listener refused a connection, as counted in `tideway_listener_refused_total`:
/// over the listener's `limits.max_connections`, or over the process-wide
/// `[server] max_connections`.
pub const LISTENER_REFUSALS: [&str; 2] = ["max_connections", "server_max_connections"];
/// Why a TLS handshake failed, as counted in `tideway_listener_tls_handshake_failures_total`:
/// not done within the handshake timeout; the client closed or reset before it was done;
/// the first bytes were not a TLS record (plain HTTP on a TLS port); no protocol version or
/// cipher suite in common; the client sent a fatal alert (it refused the certificate);
/// a malformed or out-of-order message; anything else.
pub const TLS_FAILURES: [&str; 7] = [
    "timeout",
    "closed",
    "not_tls",
    "incompatible",
    "alert",
    "malformed",
    "other",
];
/// Status classes of `tideway_http_responses_total`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Latency buckets for requests and upstream phases, in seconds.
const LATENCY: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Tunnel lifetime buckets, in seconds (a second to a day).
const LIFETIME: [f64; 9] = [
    1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0,
];

/// The process registry.
pub struct Metrics {
    pub registry: Registry,
    /// Tunnels ended, by upstream and reason (closed, idle, drain, rebalance, shutdown, error,
    /// ping_timeout, send_timeout).
    pub tunnels_ended: IntCounterVec,
    /// HTTP requests from the complete request head to the end of the answer, by upstream.
    pub request_duration: HistogramVec,
    /// HTTP answers sent to clients, by upstream and status class.
    pub responses: IntCounterVec,
    /// HTTP requests, by upstream and the protocol they came in with ([`PROTOCOLS`]).
    pub requests_by_protocol: IntCounterVec,
    /// Connecting to a backend (TCP handshake and PROXY header), by upstream.
    pub connect_duration: HistogramVec,
    /// From the request sent to the backend to its response head, by upstream.
    pub response_duration: HistogramVec,
    /// How long WebSocket and TCP tunnels lived, by upstream.
    pub tunnel_duration: HistogramVec,
    /// Failed attempts and requests, by upstream and reason ([`FAILURE_REASONS`]).
    pub failures: IntCounterVec,
    /// Config reloads, by result (ok, failed).
    pub reloads: IntCounterVec,
    /// When the last reload was applied (seconds since the epoch).
    pub last_reload: Gauge,
    /// A served certificate's notAfter (seconds since the epoch), by listener and file.
    pub cert_expiry: GaugeVec,
    /// 1 while the etcd watch is established.
    pub etcd_up: IntGauge,
    /// etcd sessions (list + watch) lost and restarted.
    pub etcd_sessions_lost: IntCounter,
    /// Malformed etcd entries ignored.
    pub etcd_malformed: IntCounter,
    /// Access lines not written: the writer's queue was full, or the write failed.
    pub access_log_dropped: IntCounter,
    /// WebSockets the rebalancer closed (1001) to move them, by upstream.
    pub rebalance_closed: IntCounterVec,
    /// Misplaced WebSockets still waiting for a close, as of the last check, by upstream.
    pub rebalance_misplaced: IntGaugeVec,
    /// Chunked request bodies refused or evicted by the memory budget, by reason.
    pub chunked_refused: IntCounterVec,
    /// Autoscale hook runs, by upstream and outcome (ok, failed).
    pub autoscale_runs: IntCounterVec,
    /// The backend count the autoscale hook last reported successfully, by upstream.
    pub autoscale_backends: IntGaugeVec,
    /// Connections each listener accepted (served or refused), by listener.
    pub listener_accepted: IntCounterVec,
    /// Connections each listener holds now (WebSockets and tunnels included), by listener.
    pub listener_active: IntGaugeVec,
    /// Connections a listener refused, by listener and reason ([`LISTENER_REFUSALS`]).
    pub listener_refused: IntCounterVec,
    /// Failed TLS handshakes, by listener and reason ([`TLS_FAILURES`]).
    pub listener_tls_failures: IntCounterVec,
    /// WebSocket closes, messages, bytes, sessions and failed handshakes.
    pub websocket: websocket::WebSocketMetrics,
}

/// One listener's series, resolved once (its gateway keeps them), so the accept path costs
/// no label lookup.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub accepted: IntCounter,
    pub active: IntGauge,
    /// By reason, in [`LISTENER_REFUSALS`] order.
    pub refused: [IntCounter; 2],
    /// By reason, in [`TLS_FAILURES`] order (a listener without TLS: unregistered ones).
    pub tls_failures: [IntCounter; 7],
}

impl ListenerMetrics {
    /// The series of the listener at `listen`, every reason at 0 from the start (only a TLS
    /// listener has handshake failures).
    pub fn of(listen: &str, tls: bool) -> Self {
        let m = global();
        ListenerMetrics {
            accepted: m.listener_accepted.with_label_values(&[listen]),
            active: m.listener_active.with_label_values(&[listen]),
            refused: LISTENER_REFUSALS.map(|r| m.listener_refused.with_label_values(&[listen, r])),
            tls_failures: TLS_FAILURES.map(|r| {
                if tls {
                    m.listener_tls_failures.with_label_values(&[listen, r])
                } else {
                    IntCounter::new("unregistered", "-").expect("valid metric")
                }
            }),
        }
    }

    /// Series registered nowhere (a gateway built without its listener's name).
    pub fn detached() -> Self {
        let c = || IntCounter::new("unregistered", "-").expect("valid metric");
        ListenerMetrics {
            accepted: c(),
            active: IntGauge::new("unregistered", "-").expect("valid metric"),
            refused: [c(), c()],
            tls_failures: [c(), c(), c(), c(), c(), c(), c()],
        }
    }

    /// Count a failed TLS handshake (`reason` one of [`TLS_FAILURES`]; another is `other`).
    pub fn tls_failed(&self, reason: &str) {
        let i = TLS_FAILURES.iter().position(|r| *r == reason);
        self.tls_failures[i.unwrap_or(TLS_FAILURES.len() - 1)].inc();
    }
}

/// Drop every series of a listener a reload removed.
pub fn forget_listener(listen: &str) {
    let m = global();
    let _ = m.listener_accepted.remove_label_values(&[listen]);
    let _ = m.listener_active.remove_label_values(&[listen]);
    for r in LISTENER_REFUSALS {
        let _ = m.listener_refused.remove_label_values(&[listen, r]);
    }
    for r in TLS_FAILURES {
        let _ = m.listener_tls_failures.remove_label_values(&[listen, r]);
    }
}

/// One upstream's histograms, resolved once (a listener's route keeps them), so observing
/// costs no label lookup.
#[derive(Clone)]
pub struct UpstreamMetrics {
    pub request: Histogram,
    pub connect: Histogram,
    pub response: Histogram,
    /// The tunnel lifetime histogram and the WebSocket counters, shared by its tunnels.
    pub tunnel: std::sync::Arc<websocket::TunnelMeter>,
    /// Requests by protocol, in [`PROTOCOLS`] order.
    pub protocols: [IntCounter; 3],
}

impl UpstreamMetrics {
    /// The histograms of `upstream`.
    pub fn of(upstream: &str) -> Self {
        let m = global();
        UpstreamMetrics {
            request: m.request_duration.with_label_values(&[upstream]),
            connect: m.connect_duration.with_label_values(&[upstream]),
            response: m.response_duration.with_label_values(&[upstream]),
            tunnel: std::sync::Arc::new(websocket::TunnelMeter::of(
                upstream,
                m.tunnel_duration.with_label_values(&[upstream]),
            )),
            protocols: PROTOCOLS.map(|p| m.requests_by_protocol.with_label_values(&[upstream, p])),
        }
    }

    /// The request counter of `protocol` (one of [`PROTOCOLS`]; another counts as the last).
    pub fn by_protocol(&self, protocol: &str) -> &IntCounter {
        let i = PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(2);
        &self.protocols[i]
    }
}

/// Count a failure of `upstream` (`reason` is one of [`FAILURE_REASONS`]).
pub fn failure(upstream: &str, reason: &'static str) {
    global()
        .failures
        .with_label_values(&[upstream, reason])
        .inc();
}

/// Count a chunked body the memory budget refused or evicted.
pub fn chunked_refused(reason: &'static str) {
    global().chunked_refused.with_label_values(&[reason]).inc();
}

/// Count an answer of `status` on `upstream`.
pub fn response(upstream: &str, status: u16) {
    let class = match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    global()
        .responses
        .with_label_values(&[upstream, class])
        .inc();
}

/// Every `upstream` label value in the process registry.
pub fn upstreams_seen() -> std::collections::BTreeSet<String> {
    global()
        .registry
        .gather()
        .iter()
        .flat_map(|f| f.get_metric())
        .flat_map(|m| m.get_label())
        .filter(|l| l.name() == "upstream")
        .map(|l| l.value().to_string())
        .collect()
}

/// Every series of `family`: its labels and its value (a counter's or a gauge's). Collected
/// from the family alone, not by gathering the whole registry (whose process collector lists
/// every open descriptor).
pub fn series_of(family: &dyn prometheus::core::Collector) -> Vec<(Vec<(String, String)>, f64)> {
    family
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            (
                labels,
                m.get_counter().get_value() + m.get_gauge().get_value(),
            )
        })
        .collect()
}

/// Drop every series of an upstream a reload removed.
pub fn forget_upstream(upstream: &str) {
    let m = global();
    for h in [
        &m.request_duration,
        &m.connect_duration,
        &m.response_duration,
        &m.tunnel_duration,
    ] {
        let _ = h.remove_label_values(&[upstream]);
    }
    for r in FAILURE_REASONS {
        let _ = m.failures.remove_label_values(&[upstream, r]);
    }
    for r in TUNNEL_ENDS {
        let _ = m.tunnels_ended.remove_label_values(&[upstream, r]);
    }
    for c in STATUS_CLASSES {
        let _ = m.responses.remove_label_values(&[upstream, c]);
    }
    for p in PROTOCOLS {
        let _ = m.requests_by_protocol.remove_label_values(&[upstream, p]);
    }
    for o in ["ok", "failed"] {
        let _ = m.autoscale_runs.remove_label_values(&[upstream, o]);
    }
    let _ = m.autoscale_backends.remove_label_values(&[upstream]);
    let _ = m.rebalance_closed.remove_label_values(&[upstream]);
    let _ = m.rebalance_misplaced.remove_label_values(&[upstream]);
    m.websocket.forget(upstream);
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram_vec(name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &["upstream"],
    )
    .expect("valid metric")
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let m = Metrics {
            registry: Registry::new(),
            tunnels_ended: counter_vec(
                "tideway_tunnels_ended_total",
                "WebSocket/TCP tunnels ended, by reason",
                &["upstream", "reason"],
            ),
            request_duration: histogram_vec(
                "tideway_request_duration_seconds",
                "HTTP requests, from the complete request head to the end of the answer",
                &LATENCY,
            ),
            responses: counter_vec(
                "tideway_http_responses_total",
                "HTTP answers sent to clients, by status class",
                &["upstream", "class"],
            ),
            requests_by_protocol: counter_vec(
                "tideway_requests_by_protocol_total",
                "HTTP requests, by the protocol they came in with (http/1.0, http/1.1, h2)",
                &["upstream", "protocol"],
            ),
            connect_duration: histogram_vec(
                "tideway_upstream_connect_duration_seconds",
                "Connecting to a backend (TCP handshake and PROXY header)",
                &LATENCY,
            ),
            response_duration: histogram_vec(
                "tideway_upstream_response_duration_seconds",
                "From the request sent to the backend to its response head",
                &LATENCY,
            ),
            tunnel_duration: histogram_vec(
                "tideway_tunnel_duration_seconds",
                "How long WebSocket and TCP tunnels lived",
                &LIFETIME,
            ),
            failures: counter_vec(
                "tideway_upstream_failures_total",
                "Failed backend attempts and requests, by reason (no_backend, connect, send, unanswered, timeout, bad_response; client_upgrade, client_body, client_misread: provoked by the request, never counted against the backend; loop, local: tideway's own)",
                &["upstream", "reason"],
            ),
            reloads: counter_vec(
                "tideway_config_reloads_total",
                "Config reloads (SIGHUP, POST /v1/reload), by result",
                &["result"],
            ),
            last_reload: Gauge::new(
                "tideway_config_last_reload_success_timestamp_seconds",
                "When the config was last loaded or reloaded successfully",
            )
            .expect("valid metric"),
            cert_expiry: GaugeVec::new(
                Opts::new(
                    "tideway_tls_certificate_expiry_timestamp_seconds",
                    "notAfter of each served certificate",
                ),
                &["listener", "cert"],
            )
            .expect("valid metric"),
            etcd_up: IntGauge::new("tideway_etcd_up", "1 while the etcd watch is established")
                .expect("valid metric"),
            etcd_sessions_lost: IntCounter::new(
                "tideway_etcd_sessions_lost_total",
                "etcd sessions (list + watch) lost and restarted",
            )
            .expect("valid metric"),
            access_log_dropped: IntCounter::new(
                "tideway_access_log_dropped_total",
                "Access lines not written: the access-log writer's queue was full or the write failed",
            )
            .expect("valid metric"),
            etcd_malformed: IntCounter::new(
                "tideway_etcd_malformed_total",
                "Malformed etcd entries ignored",
            )
            .expect("valid metric"),
            rebalance_closed: counter_vec(
                "tideway_rebalance_closed_total",
                "WebSockets closed with 1001 to move them to the backend that should have them",
                &["upstream"],
            ),
            rebalance_misplaced: gauge_vec(
                "tideway_rebalance_misplaced",
                "Misplaced WebSockets still to be moved, as of the last check",
                &["upstream"],
            ),
            chunked_refused: counter_vec(
                "tideway_chunked_refused_total",
                "Chunked request bodies the memory budget refused (share, full) or evicted for a client holding less (evicted)",
                &["reason"],
            ),
            autoscale_runs: counter_vec(
                "tideway_autoscale_runs_total",
                "Autoscale hook runs, by outcome (ok, failed)",
                &["upstream", "outcome"],
            ),
            autoscale_backends: gauge_vec(
                "tideway_autoscale_backends",
                "Backend count the autoscale hook last reported successfully",
                &["upstream"],
            ),
            listener_accepted: counter_vec(
                "tideway_listener_connections_accepted_total",
                "Connections a listener accepted, served or refused",
                &["listener"],
            ),
            listener_active: gauge_vec(
                "tideway_listener_connections_active",
                "Connections a listener holds now (WebSockets and TCP tunnels included)",
                &["listener"],
            ),
            listener_refused: counter_vec(
                "tideway_listener_refused_total",
                "Connections refused, by reason (max_connections: the listener's limit; server_max_connections: the process-wide cap)",
                &["listener", "reason"],
            ),
            listener_tls_failures: counter_vec(
                "tideway_listener_tls_handshake_failures_total",
                "Failed TLS handshakes, by reason (timeout, closed, not_tls, incompatible, alert, malformed, other)",
                &["listener", "reason"],
            ),
            websocket: websocket::WebSocketMetrics::new(),
        };
        let build = gauge_vec(
            "tideway_build_info",
            "Always 1; the labels say which build runs",
            &["version"],
        );
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let r = &m.registry;
        let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.tunnels_ended.clone()),
            Box::new(m.request_duration.clone()),
            Box::new(m.responses.clone()),
            Box::new(m.requests_by_protocol.clone()),
            Box::new(m.connect_duration.clone()),
            Box::new(m.response_duration.clone()),
            Box::new(m.tunnel_duration.clone()),
            Box::new(m.failures.clone()),
            Box::new(m.reloads.clone()),
            Box::new(m.last_reload.clone()),
            Box::new(m.cert_expiry.clone()),
            Box::new(m.etcd_up.clone()),
            Box::new(m.etcd_sessions_lost.clone()),
            Box::new(m.etcd_malformed.clone()),
            Box::new(m.access_log_dropped.clone()),
            Box::new(m.rebalance_closed.clone()),
            Box::new(m.rebalance_misplaced.clone()),
            Box::new(m.chunked_refused.clone()),
            Box::new(m.autoscale_runs.clone()),
            Box::new(m.autoscale_backends.clone()),
            Box::new(m.listener_accepted.clone()),
            Box::new(m.listener_active.clone()),
            Box::new(m.listener_refused.clone()),
            Box::new(m.listener_tls_failures.clone()),
            Box::new(build),
            // RSS, virtual memory, open fds and their limit, CPU seconds, start time.
            Box::new(process::Process::new()),
        ];
        collectors.extend(m.websocket.collectors());
        for c in collectors {
            r.register(c).expect("registered once");
        }
        m
    })
}
