//! Process-wide event counters (tunnels opened and how they ended). Per-backend gauges and
//! counters are not kept here: they live in the pool's live counters and are rendered from the
//! snapshot at scrape time, so the request path touches no registry.
//!
//! Imports: nothing else in tideway.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::OnceLock;

/// The process registry.
pub struct Metrics {
    pub registry: Registry,
    /// Tunnels ended, by upstream and reason (closed, idle, signalled, error).
    pub tunnels_ended: IntCounterVec,
    /// Health transitions, by upstream, backend and direction (up, down).
    pub health_transitions: IntCounterVec,
    /// 1 while the etcd watch is established.
    pub etcd_up: IntGauge,
    /// etcd sessions (list + watch) lost and restarted.
    pub etcd_sessions_lost: IntCounter,
    /// Malformed etcd entries ignored.
    pub etcd_malformed: IntCounter,
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let registry = Registry::new();
        let tunnels_ended = IntCounterVec::new(
            Opts::new(
                "tideway_tunnels_ended_total",
                "WebSocket/TCP tunnels ended, by reason",
            ),
            &["upstream", "reason"],
        )
        .expect("valid metric");
        let health_transitions = IntCounterVec::new(
            Opts::new(
                "tideway_health_transitions_total",
                "Backend health changes, by direction",
            ),
            &["upstream", "backend", "to"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(tunnels_ended.clone()))
            .expect("registered once");
        registry
            .register(Box::new(health_transitions.clone()))
            .expect("registered once");
        let etcd_up = IntGauge::new("tideway_etcd_up", "1 while the etcd watch is established")
            .expect("valid metric");
        let etcd_sessions_lost = IntCounter::new(
            "tideway_etcd_sessions_lost_total",
            "etcd sessions (list + watch) lost and restarted",
        )
        .expect("valid metric");
        let etcd_malformed = IntCounter::new(
            "tideway_etcd_malformed_total",
            "Malformed etcd entries ignored",
        )
        .expect("valid metric");
        for c in [
            Box::new(etcd_up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(etcd_sessions_lost.clone()),
            Box::new(etcd_malformed.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        Metrics {
            registry,
            tunnels_ended,
            health_transitions,
            etcd_up,
            etcd_sessions_lost,
            etcd_malformed,
        }
    })
}
