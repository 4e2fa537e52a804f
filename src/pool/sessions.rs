//! Where the live WebSockets of rebalanced upstreams sit: one entry per tunnel with its
//! backend, the hash of its sticky key and a close signal of its own. The data plane opens an
//! entry when a tunnel starts and the entry's guard removes it when the tunnel ends; the
//! rebalancer reads the entries and closes the misplaced ones.
//!
//! Only upstreams with `rebalance` register their tunnels, so the others pay nothing. An
//! entry's close signal is a child of the backend's, so a drain deadline or a shutdown still
//! closes the tunnel, while closing one session leaves its neighbours alone.

use super::backend::BackendId;
use crate::config::HashKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// One live tunnel of a rebalanced upstream.
#[derive(Clone, Debug)]
pub struct Session {
    /// The backend it is connected to.
    pub backend: BackendId,
    /// The hash of the request's sticky key, as the pick used it.
    pub key: u32,
    /// The key the upstream hashed when the session opened (None: it did not hash). A reload
    /// that changes it leaves the session out of the ring's placement.
    pub hashed_by: Option<HashKey>,
    /// Cancelled to close this tunnel (with 1001, at a frame boundary).
    pub close: CancellationToken,
}

/// The sessions of every rebalanced upstream, by upstream and session number.
#[derive(Debug, Default)]
pub struct Sessions {
    by_upstream: Mutex<HashMap<Arc<str>, HashMap<u64, Session>>>,
    next: AtomicU64,
}

/// Removes its session when the tunnel ends.
#[derive(Debug)]
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    upstream: Arc<str>,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut all = self.sessions.lock();
        if let Some(map) = all.get_mut(&self.upstream) {
            map.remove(&self.id);
            if map.is_empty() {
                all.remove(&self.upstream);
            }
        }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, HashMap<u64, Session>>> {
        self.by_upstream.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a tunnel on `backend` whose key hashed to `key`; `parent` is the backend's
    /// close signal. Returns the tunnel's own close signal and the guard that unregisters it.
    pub fn open(
        self: &Arc<Self>,
        upstream: &Arc<str>,
        backend: BackendId,
        key: u32,
        hashed_by: Option<HashKey>,
        parent: &CancellationToken,
    ) -> (CancellationToken, SessionGuard) {
        let close = parent.child_token();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(upstream.clone()).or_default().insert(
            id,
            Session {
                backend,
                key,
                hashed_by,
                close: close.clone(),
            },
        );
        let guard = SessionGuard {
            sessions: self.clone(),
            upstream: upstream.clone(),
            id,
        };
        (close, guard)
    }

    /// A copy of the open sessions of `upstream`, by session number (ascending).
    pub fn of(&self, upstream: &str) -> Vec<(u64, Session)> {
        let mut out: Vec<(u64, Session)> = self
            .lock()
            .get(upstream)
            .map(|m| m.iter().map(|(k, s)| (*k, s.clone())).collect())
            .unwrap_or_default();
        out.sort_unstable_by_key(|(k, _)| *k);
        out
    }

    /// Number of open sessions of `upstream`.
    pub fn count(&self, upstream: &str) -> usize {
        self.lock().get(upstream).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_unregisters_and_a_session_closes_alone() {
        let s = Arc::new(Sessions::default());
        let up: Arc<str> = "chat".into();
        let parent = CancellationToken::new();
        let (a, ga) = s.open(&up, "b1".into(), 7, None, &parent);
        let (b, gb) = s.open(&up, "b1".into(), 8, None, &parent);
        assert_eq!(s.count("chat"), 2);
        a.cancel();
        assert!(!b.is_cancelled() && !parent.is_cancelled());
        drop(ga);
        assert_eq!(s.of("chat").len(), 1);
        parent.cancel();
        assert!(
            b.is_cancelled(),
            "the backend's close reaches every session"
        );
        drop(gb);
        assert_eq!(s.count("chat"), 0);
    }
}
