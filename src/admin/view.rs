//! JSON and Prometheus views of a snapshot.

use crate::discovery::fleet::Fleet;
use crate::pool::{Backend, Snapshot, Upstream};
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, TextEncoder};
use serde::Serialize;

pub use crate::scale::signal::ScaleView;

/// A backend as the API shows it.
#[derive(Serialize)]
pub struct BackendView<'a> {
    pub id: &'a str,
    pub addr: String,
    pub weight: u32,
    pub state: crate::pool::State,
    pub healthy: bool,
    pub active_connections: u64,
    /// Requests and tunnels ever started on this backend (by this instance).
    pub requests_total: u64,
    pub source: crate::pool::Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    /// A backup (nginx's `backup`): picked only when no other backend can be.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backup: bool,
    /// While draining: milliseconds until the upstream's `drain_timeout` is over (0 once it
    /// is); the connections left are `active_connections`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_ends_in_ms: Option<u64>,
    /// While draining: over how long before `drain_timeout` is over the drain spreads its
    /// 1001 closes (the drain's own spread, else the upstream's; 0: all at the deadline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_spread_ms: Option<u64>,
    /// Upgrade admission's counts (upstreams with `admission`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrades: Option<UpgradesView>,
}

/// A backend's upgrade admission on this instance: clients admitted, queued (each later
/// admitted or refused as well) and refused so far, and handshakes pending and clients
/// waiting right now.
#[derive(Serialize)]
pub struct UpgradesView {
    pub admitted: u64,
    pub queued: u64,
    pub refused: u64,
    pub pending: u32,
    pub waiting: usize,
}

impl UpgradesView {
    fn of(b: &Backend) -> Self {
        let gate = b.live.admission_used();
        let (admitted, queued, refused) = gate.map_or((0, 0, 0), |g| g.counts());
        let (pending, waiting) = gate.map_or((0, 0), |g| g.load());
        UpgradesView {
            admitted,
            queued,
            refused,
            pending,
            waiting,
        }
    }
}

impl<'a> From<&'a Backend> for BackendView<'a> {
    fn from(b: &'a Backend) -> Self {
        BackendView {
            id: &b.id,
            addr: b.addr.to_string(),
            weight: b.weight,
            state: b.state,
            healthy: b.healthy,
            active_connections: b.live.active(),
            requests_total: b.live.requests(),
            source: b.source,
            expires_in_ms: b.live.expires_in_ms(),
            backup: b.server.backup,
            drain_ends_in_ms: (b.state == crate::pool::State::Draining)
                .then(|| b.live.drain_ends_in_ms())
                .flatten(),
            close_spread_ms: (b.state == crate::pool::State::Draining)
                .then(|| b.live.drain_spread())
                .flatten()
                .map(|s| s.as_millis() as u64),
            upgrades: None,
        }
    }
}

/// An upstream as the API shows it.
#[derive(Serialize)]
pub struct UpstreamView<'a> {
    pub name: &'a str,
    pub balance: String,
    pub hash_key: String,
    /// How long a drain waits for connections to end before it closes them, in milliseconds.
    pub drain_timeout_ms: u64,
    /// With `rebalance`: WebSockets moved so far and still misplaced (this instance's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceView>,
    /// With `sticky`: the sticky cookie's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<&'a str>,
    pub backends: Vec<BackendView<'a>>,
}

/// Rebalancing, as counted by this instance.
#[derive(Serialize)]
pub struct RebalanceView {
    pub moved: u64,
    pub misplaced: i64,
}

impl<'a> From<&'a Upstream> for UpstreamView<'a> {
    fn from(u: &'a Upstream) -> Self {
        UpstreamView {
            name: &u.name,
            balance: u.policy.balance.to_string(),
            hash_key: u.policy.hash_key.to_string(),
            drain_timeout_ms: u.policy.drain_timeout.as_millis() as u64,
            rebalance: u.policy.rebalance.as_ref().map(|_| {
                let m = crate::metrics::global();
                RebalanceView {
                    moved: m.rebalance_closed.with_label_values(&[&u.name]).get(),
                    misplaced: m.rebalance_misplaced.with_label_values(&[&u.name]).get(),
                }
            }),
            sticky_cookie: u.policy.sticky.as_ref().map(|c| &*c.name),
            backends: u
                .backends
                .iter()
                .map(|b| BackendView {
                    upgrades: u.policy.admission.as_ref().map(|_| UpgradesView::of(b)),
                    ..BackendView::from(b)
                })
                .collect(),
        }
    }
}

/// Prometheus text for the pool plus the process registry.
pub fn prometheus_text(snap: &Snapshot, fleet: Option<&Fleet>) -> String {
    let labels = &["upstream", "backend"];
    let gauge = |name: &str, help: &str| {
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
    };
    let counter = |name: &str, help: &str| {
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
    };
    let active = gauge(
        "tideway_backend_active_connections",
        "Requests in flight and open tunnels per backend",
    );
    let websockets = gauge(
        "tideway_websocket_open",
        "WebSockets open per backend (also counted in tideway_backend_active_connections)",
    );
    let up = gauge(
        "tideway_backend_up",
        "1 if the backend takes new traffic (active and healthy)",
    );
    let weight = gauge("tideway_backend_weight", "Configured weight");
    let requests = counter(
        "tideway_backend_requests_total",
        "Requests and tunnels started per backend",
    );
    let failures = counter(
        "tideway_backend_failures_total",
        "Failed connects and failed requests per backend",
    );
    let sent = counter(
        "tideway_backend_sent_bytes_total",
        "Bytes sent to the backend (HTTP requests as relayed, tunnels as they move)",
    );
    let received = counter(
        "tideway_backend_received_bytes_total",
        "Bytes received from the backend (HTTP responses as relayed, tunnels as they move)",
    );
    let transitions = IntCounterVec::new(
        Opts::new(
            "tideway_health_transitions_total",
            "Backend health changes, by direction (up, down)",
        ),
        &["upstream", "backend", "to"],
    )
    .expect("valid metric");
    let eligible = IntGaugeVec::new(
        Opts::new(
            "tideway_upstream_available_backends",
            "Backends taking new traffic",
        ),
        &["upstream"],
    )
    .expect("valid metric");
    let recommended = IntGaugeVec::new(
        Opts::new(
            "tideway_upstream_recommended_backends",
            "Backends the scale settings recommend for the current load (upstreams with `scale`)",
        ),
        &["upstream"],
    )
    .expect("valid metric");
    let upgrades = IntCounterVec::new(
        Opts::new(
            "tideway_websocket_upgrades_total",
            "Upgrades judged by upgrade admission per backend (upstreams with `admission`), by outcome (admitted; queued: waited, then admitted or refused as well; refused: got 503)",
        ),
        &["upstream", "backend", "outcome"],
    )
    .expect("valid metric");
    for (name, u) in &snap.upstreams {
        eligible
            .with_label_values(&[name])
            .set(u.selector.eligible_count() as i64);
        if u.policy.scale.is_some() {
            recommended
                .with_label_values(&[name])
                .set(ScaleView::of(u, fleet).recommended_backends as i64);
        }
        for b in &u.backends {
            let l = [name.as_str(), &*b.id];
            active.with_label_values(&l).set(b.live.active() as i64);
            websockets
                .with_label_values(&l)
                .set(b.live.websockets() as i64);
            up.with_label_values(&l).set(i64::from(b.eligible()));
            weight.with_label_values(&l).set(i64::from(b.weight));
            requests.with_label_values(&l).inc_by(b.live.requests());
            failures.with_label_values(&l).inc_by(b.live.failures());
            let (out, back) = b.live.bytes();
            sent.with_label_values(&l).inc_by(out);
            received.with_label_values(&l).inc_by(back);
            let (went_up, went_down) = b.live.transitions();
            if went_up + went_down > 0 {
                let t = |to: &'static str| [name.as_str(), &*b.id, to];
                transitions.with_label_values(&t("up")).inc_by(went_up);
                transitions.with_label_values(&t("down")).inc_by(went_down);
            }
            if u.policy.admission.is_some() {
                let (admitted, queued, refused) =
                    b.live.admission_used().map_or((0, 0, 0), |g| g.counts());
                for (outcome, n) in [
                    ("admitted", admitted),
                    ("queued", queued),
                    ("refused", refused),
                ] {
                    upgrades
                        .with_label_values(&[name.as_str(), &*b.id, outcome])
                        .inc_by(n);
                }
            }
        }
    }
    let mut families = Vec::new();
    for c in [&active, &websockets, &up, &weight, &eligible, &recommended] {
        families.extend(prometheus::core::Collector::collect(c));
    }
    for c in [
        &requests,
        &failures,
        &sent,
        &received,
        &transitions,
        &upgrades,
    ] {
        families.extend(prometheus::core::Collector::collect(c));
    }
    families.extend(crate::metrics::global().registry.gather());
    // A family without samples (e.g. per-backend metrics of an empty upstream) makes the
    // encoder fail the whole scrape; leave such families out.
    families.retain(|f| !f.get_metric().is_empty());
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "could not encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}
