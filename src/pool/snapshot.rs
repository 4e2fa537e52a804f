//! The immutable view the data plane reads: every upstream, its backends, and their selection
//! structures, all from one version. Readers `load()` it once per request or connection.
//!
//! A publish rebuilds only the upstreams that changed, and those from persistent parts
//! ([`Backends`], the selector's membership lists, the shared ring), so a snapshot costs about
//! the changes, not the pool (switching an upstream's `balance` to `hash` fills a new ring).

use super::backend::{Backend, BackendId, State};
use super::table::Backends;
use crate::balance::Selector;
use crate::config::{Balance, UpstreamPolicy};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One published version of the whole pool.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases by one with every publish.
    pub version: u64,
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
}

impl Snapshot {
    /// Look up an upstream by name.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }
}

/// One upstream inside a snapshot.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub policy: Arc<UpstreamPolicy>,
    /// By slot; iterates in id order.
    pub backends: Backends,
    pub selector: Selector,
    /// Tags of the backends passive health holds out (see [`Backend::ejected`]).
    pub ejected: Arc<[u32]>,
}

impl Upstream {
    /// Build the upstream view and its selection structures from scratch, `backends[i]` in
    /// slot `i` (tests).
    pub fn new(name: String, policy: Arc<UpstreamPolicy>, backends: Vec<Backend>) -> Self {
        let selector = Selector::build(&policy, &backends);
        Upstream {
            name,
            policy,
            ejected: backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.ejected)
                .map(|(i, _)| i as u32)
                .collect(),
            backends: Backends::from_vec(backends),
            selector,
        }
    }

    /// Pick a backend for a request whose key hashes to `key`, skipping `exclude`d ones.
    /// When no backend is eligible and some are out by passive health alone, one of those
    /// is picked (Envoy's panic routing): passive health never empties an upstream, active
    /// checks do when backends are really down.
    pub fn pick(&self, key: u32, exclude: impl Fn(&Backend) -> bool) -> Option<&Backend> {
        if self.selector.eligible_count() == 0 && !self.ejected.is_empty() {
            return self.panic_pick(key, exclude);
        }
        self.selector
            .pick(&self.backends, key, exclude)
            .and_then(|s| self.backends.get(s))
    }

    /// Panic routing: a backend of those passive health holds out, by key (`hash`) or at
    /// random.
    fn panic_pick(&self, key: u32, exclude: impl Fn(&Backend) -> bool) -> Option<&Backend> {
        let candidates = || {
            self.ejected
                .iter()
                .filter_map(|&t| self.backends.get(t))
                .filter(|b| b.ejected && b.state == State::Active && b.weight > 0 && !exclude(b))
        };
        let n = candidates().count();
        if n == 0 {
            return None;
        }
        let at = if self.policy.balance == Balance::Hash {
            key
        } else {
            rand::random::<u32>()
        };
        candidates().nth(at as usize % n)
    }

    /// Find a backend by id.
    pub fn backend(&self, id: &str) -> Option<&Backend> {
        self.backends.by_id(id)
    }

    /// Ids of all backends, in id order, for diagnostics.
    pub fn ids(&self) -> impl Iterator<Item = &BackendId> {
        self.backends.iter().map(|b| &b.id)
    }
}
