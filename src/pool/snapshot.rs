//! The immutable view the data plane reads: every upstream, its backends, and their selection
//! structures, all from one version. Readers `load()` it once per request or connection.
//!
//! A publish rebuilds only the upstreams that changed, and those from persistent parts
//! ([`Backends`], the selector's membership lists, the shared ring), so a snapshot costs about
//! the changes, not the pool (switching an upstream's `balance` to `hash` fills a new ring).

use super::backend::{Backend, BackendId, State};
use super::table::Backends;
use crate::balance::{Key, Selector};
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
    /// Picks among the primary backends.
    pub selector: Selector,
    /// Picks among the backups (nginx's `backup`), when the upstream has any.
    pub backups: Option<Selector>,
    /// Tags of the backends passive health holds out (see [`Backend::ejected`]).
    pub ejected: Arc<[u32]>,
}

impl Upstream {
    /// Build the upstream view and its selection structures from scratch, `backends[i]` in
    /// slot `i` (tests).
    pub fn new(name: String, policy: Arc<UpstreamPolicy>, backends: Vec<Backend>) -> Self {
        let selector = Selector::build(&policy, &backends);
        let backups = Selector::build_backups(&policy, &backends);
        Upstream {
            name,
            backups,
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
    pub fn pick(&self, key: u32, exclude: impl Fn(&Backend) -> bool) -> Option<&Backend> {
        self.pick_key(Key::hash_only(key), exclude)
    }

    /// Pick a backend for a request with `key`, skipping `exclude`d ones: a primary backend;
    /// when none can take the request, a backup (nginx's `backup`); when none of those
    /// either, and no primary is eligible while some are out by passive health alone, one of
    /// those (Envoy's panic routing): passive health never empties an upstream, active checks
    /// do when backends are really down.
    pub fn pick_key(&self, key: Key, exclude: impl Fn(&Backend) -> bool) -> Option<&Backend> {
        let picked = self
            .selector
            .pick_key(&self.backends, key, &exclude)
            .or_else(|| {
                let backups = self.backups.as_ref()?;
                backups.pick(&self.backends, key.hash, &exclude)
            });
        if picked.is_none() && self.selector.eligible_count() == 0 && !self.ejected.is_empty() {
            return self.panic_pick(key.hash, exclude);
        }
        picked.and_then(|s| self.backends.get(s))
    }

    /// Panic routing: a backend of those passive health holds out, by key (`hash`) or at
    /// random.
    fn panic_pick(&self, key: u32, exclude: impl Fn(&Backend) -> bool) -> Option<&Backend> {
        // Primaries first: a backup is held out only when no primary is.
        let of = |backup: bool| {
            let exclude = &exclude;
            move || {
                self.ejected
                    .iter()
                    .filter_map(|&t| self.backends.get(t))
                    .filter(move |b| {
                        b.ejected
                            && b.server.backup == backup
                            && b.state == State::Active
                            && b.weight > 0
                            && !exclude(b)
                    })
            }
        };
        let (primaries, backups) = (of(false), of(true));
        let (mut candidates, mut n) = (primaries, primaries().count());
        if n == 0 {
            n = backups().count();
            if n == 0 {
                return None;
            }
            candidates = backups;
        }
        let at = if self.policy.balance == Balance::Hash {
            key
        } else {
            rand::random::<u32>()
        };
        candidates().nth(at as usize % n)
    }

    /// The backend a sticky cookie names, if it may take this request now: in the pool,
    /// eligible (active, healthy, weight > 0), not `exclude`d, and, for a backup, only while no
    /// primary is eligible (the balancer would be picking among backups then too). None: the
    /// balancer picks, and the answer carries a new cookie.
    pub fn sticky(
        &self,
        value: super::sticky::StickyId,
        exclude: impl Fn(&Backend) -> bool,
    ) -> Option<&Backend> {
        let b = self.backends.by_sticky(value)?;
        let usable = b.eligible()
            && !exclude(b)
            && (!b.server.backup || self.selector.eligible_count() == 0);
        usable.then_some(b)
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
