//! Process-wide event counters (tunnels opened and how they ended). Per-backend gauges and
//! counters are not kept here: they live in the pool's live counters and are rendered from the
//! snapshot at scrape time, so the request path touches no registry.
//!
//! Imports: nothing else in tideway.

use prometheus::{IntCounterVec, Opts, Registry};
use std::sync::OnceLock;

/// The process registry.
pub struct Metrics {
    pub registry: Registry,
    /// Tunnels ended, by upstream and reason (closed, idle, signalled, error).
    pub tunnels_ended: IntCounterVec,
    /// Health transitions, by upstream, backend and direction (up, down).
    pub health_transitions: IntCounterVec,
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
        Metrics {
            registry,
            tunnels_ended,
            health_transitions,
        }
    })
}
