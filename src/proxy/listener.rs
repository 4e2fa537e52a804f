//! A listener's own counts: its connections open now under its `limits.max_connections`, and
//! its series (`tideway_listener_*`). The gateway resolves them once, when it is built; the
//! accept path then costs a few atomic operations and no label lookup, and the place a connection
//! takes ([`ListenerPlace`]) is one pointer, held by the connection (by its WebSocket or
//! tunnel too) until it ends.

use crate::metrics::ListenerMetrics;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a connection was refused, in [`crate::metrics::LISTENER_REFUSALS`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over the listener's `limits.max_connections`.
    Listener = 0,
    /// Over the process-wide `[server] max_connections`.
    Process = 1,
}

struct Shared {
    /// Most connections at once; 0: no limit.
    max: usize,
    open: AtomicUsize,
    metrics: ListenerMetrics,
}

/// One listener's counts, shared by its gateway (and by the gateway a reload builds anew for
/// the same listener only if it is given the same value).
#[derive(Clone)]
pub struct ListenerCount(Arc<Shared>);

/// A connection's place in its listener's count: given back on drop.
pub struct ListenerPlace(Arc<Shared>);

impl ListenerCount {
    /// The counts of the listener at `listen`, with at most `max` connections at once (0: no
    /// limit); `tls`: it terminates TLS, so it counts failed handshakes.
    pub fn new(listen: &str, max: usize, tls: bool) -> Self {
        Self::with(ListenerMetrics::of(listen, tls), max)
    }

    /// Counts whose series are registered nowhere (a gateway built without its listener).
    pub fn detached(max: usize) -> Self {
        Self::with(ListenerMetrics::detached(), max)
    }

    fn with(metrics: ListenerMetrics, max: usize) -> Self {
        ListenerCount(Arc::new(Shared {
            max,
            open: AtomicUsize::new(0),
            metrics,
        }))
    }

    /// Count a connection accepted, before it is served or refused.
    pub fn accepted(&self) {
        self.0.metrics.accepted.inc();
    }

    /// A place for one more connection, or None when the listener is at `max_connections`
    /// (the refusal is counted).
    pub fn take(&self) -> Option<ListenerPlace> {
        let s = &self.0;
        // A compare-exchange, not add-then-undo: a taker about to be refused must not make
        // the count look higher to a neighbour while the listener is below its limit.
        let mut open = s.open.load(Ordering::Acquire);
        loop {
            if s.max > 0 && open >= s.max {
                self.refused(Refusal::Listener);
                return None;
            }
            match s
                .open
                .compare_exchange_weak(open, open + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => open = now,
            }
        }
        s.metrics.active.inc();
        Some(ListenerPlace(s.clone()))
    }

    /// Count a refusal.
    pub fn refused(&self, why: Refusal) {
        self.0.metrics.refused[why as usize].inc();
    }

    /// Count a failed TLS handshake, by its reason ([`crate::metrics::TLS_FAILURES`]).
    pub fn tls_failed(&self, reason: &str) {
        self.0.metrics.tls_failed(reason);
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }
}

impl Drop for ListenerPlace {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_and_given_back() {
        let c = ListenerCount::detached(2);
        let (a, b) = (c.take().unwrap(), c.take().unwrap());
        assert!(c.take().is_none(), "a third place under max 2");
        assert_eq!(c.open(), 2);
        assert_eq!(c.0.metrics.refused[Refusal::Listener as usize].get(), 1);
        assert_eq!(c.0.metrics.active.get(), 2);
        drop(a);
        let _c = c.take().expect("a place given back is free again");
        drop(b);
        assert_eq!((c.open(), c.0.metrics.active.get()), (1, 1));
        // What a WebSocket holds for its listener and the process: two pointers (an idle
        // WebSocket's task keeps it for its whole life).
        assert_eq!(std::mem::size_of::<ListenerPlace>(), 8);
        assert_eq!(std::mem::size_of::<super::super::gateway::Places>(), 16);
        let unlimited = ListenerCount::detached(0);
        let held: Vec<_> = (0..100).map(|_| unlimited.take().unwrap()).collect();
        assert_eq!(unlimited.open(), held.len());
    }
}
