//! Process-wide event counters (tunnels opened and how they ended). Per-backend gauges and
//! counters are not kept here: they live in the pool's live counters and are rendered from the
//! snapshot at scrape time, so the request path touches no registry.
//!
//! Imports: nothing else in tideway.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
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
    /// WebSockets the rebalancer closed (1001) to move them, by upstream.
    pub rebalance_closed: IntCounterVec,
    /// Misplaced WebSockets still waiting for a close, as of the last check, by upstream.
    pub rebalance_misplaced: IntGaugeVec,
    /// Autoscale hook runs, by upstream and outcome (ok, failed).
    pub autoscale_runs: IntCounterVec,
    /// The backend count the autoscale hook last reported successfully, by upstream.
    pub autoscale_backends: IntGaugeVec,
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
        let rebalance_closed = IntCounterVec::new(
            Opts::new(
                "tideway_rebalance_closed_total",
                "WebSockets closed with 1001 to move them to the backend that should have them",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let rebalance_misplaced = IntGaugeVec::new(
            Opts::new(
                "tideway_rebalance_misplaced",
                "Misplaced WebSockets still to be moved, as of the last check",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let autoscale_runs = IntCounterVec::new(
            Opts::new(
                "tideway_autoscale_runs_total",
                "Autoscale hook runs, by outcome (ok, failed)",
            ),
            &["upstream", "outcome"],
        )
        .expect("valid metric");
        let autoscale_backends = IntGaugeVec::new(
            Opts::new(
                "tideway_autoscale_backends",
                "Backend count the autoscale hook last reported successfully",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        for c in [
            Box::new(rebalance_closed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(rebalance_misplaced.clone()),
            Box::new(autoscale_runs.clone()),
            Box::new(autoscale_backends.clone()),
        ] {
            registry.register(c).expect("registered once");
        }
        Metrics {
            registry,
            rebalance_closed,
            rebalance_misplaced,
            autoscale_runs,
            autoscale_backends,
            tunnels_ended,
            health_transitions,
            etcd_up,
            etcd_sessions_lost,
            etcd_malformed,
        }
    })
}
