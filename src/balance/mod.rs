//! Backend selection. A [`Selector`] is what a snapshot picks with; per request the work is a
//! lookup, never a rebuild. Nothing in it is rebuilt per snapshot either: the controller keeps
//! a [`Membership`] per upstream (eligible slots and round-robin groups, as persistent
//! vectors) and one [`Ring`] per `hash` upstream, changes them one backend at a time, and a
//! snapshot's selector takes O(1) clones of them.
//!
//! Backends are named by slot (see [`Table`]): stable while a backend is in the pool.
//!
//! Invariants: only eligible backends (active, healthy, weight > 0) are ever picked; the
//! `exclude` predicate lets a retry skip backends it already tried.
//!
//! A backend is whatever implements [`Candidate`] (the pool's `Backend` does, in `pool::table`),
//! so selection never names the pool's types.
//!
//! Imports: `config` (policy types); nothing above.

pub mod chunked;
pub mod membership;
pub mod modulo;
pub mod ring;
mod rotation;

use crate::config::UpstreamPolicy;
use rotation::Rotation;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use membership::Membership;
pub use modulo::{Key, Modulo};
pub use ring::{key_hash, Ring};

/// `effective_weight` units per unit of weight.
pub const WEIGHT_SCALE: u32 = 100;

/// What a selector reads of a backend.
pub trait Candidate {
    /// The backend's stable id (what the ring is built from).
    fn id(&self) -> &str;
    /// Configured weight.
    fn weight(&self) -> u32;
    /// Weight used for selection, in [`WEIGHT_SCALE`] units per unit of weight.
    fn effective_weight(&self) -> u32;
    /// May it get a new connection or request?
    fn eligible(&self) -> bool;
    /// Is it a backup (nginx's `backup`)?
    fn backup(&self) -> bool;
    /// Requests in flight and open tunnels.
    fn active(&self) -> u64;
}

/// Backends by slot, as a selector sees them.
pub trait Table {
    /// The backends' type.
    type Backend: Candidate;
    /// The backend in `slot`, if any.
    fn at(&self, slot: u32) -> Option<&Self::Backend>;
}

impl<B: Candidate> Table for Vec<B> {
    type Backend = B;
    fn at(&self, slot: u32) -> Option<&B> {
        self.get(slot as usize)
    }
}

/// Selection structures for one upstream in one snapshot.
#[derive(Debug)]
pub struct Selector {
    algo: Algo,
    /// Slots of eligible backends (no order).
    eligible: chunked::Chunked<u32>,
    /// Where `least_conn` starts its scan; shared across snapshots.
    cursor: Arc<AtomicUsize>,
}

#[derive(Debug)]
enum Algo {
    /// Smooth weighted round robin over groups of equal weight, rotating inside each group.
    RoundRobin(Rotation),
    LeastConn,
    P2c,
    Hash {
        ring: Arc<Ring>,
        factor: u32,
        /// For a request whose key came out empty (nginx: round robin).
        rotation: Rotation,
    },
    /// nginx's plain `hash`, round robin when it gives up.
    Modulo(Arc<Modulo>, Rotation),
}

impl Selector {
    /// Build the selection structures for `backends` under `policy` from scratch, slot `i`
    /// being `backends[i]`, with a ring of its own for `hash` (tests).
    /// Backups (nginx's `backup`) are left out: see [`Self::build_backups`].
    pub fn build<B: Candidate>(policy: &UpstreamPolicy, backends: &[B]) -> Self {
        let mut members = Membership::default();
        let primary = |b: &B| b.eligible() && !b.backup();
        for (i, b) in backends.iter().enumerate() {
            members.set(i as u32, primary(b).then_some(b.effective_weight()));
        }
        let ring = consistent(policy).then(|| {
            Arc::new(Ring::build(
                backends
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| primary(b))
                    .map(|(i, b)| (b.id(), b.weight(), i as u32)),
            ))
        });
        let modulo = modulo(policy).then(|| {
            Arc::new(Modulo::new(
                backends
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| !b.backup())
                    .map(|(i, b)| (i as u32, b.weight())),
            ))
        });
        members.selector(policy, ring, modulo)
    }

    /// The selector of the backups among `backends` (None when there are none), slot `i`
    /// being `backends[i]` (tests).
    pub fn build_backups<B: Candidate>(policy: &UpstreamPolicy, backends: &[B]) -> Option<Self> {
        let mut members = Membership::default();
        for (i, b) in backends.iter().enumerate().filter(|(_, b)| b.backup()) {
            members.set(i as u32, b.eligible().then_some(b.effective_weight()));
        }
        backends
            .iter()
            .any(|b| b.backup())
            .then(|| members.backup_selector(policy))
    }

    /// Is this a `hash` selector?
    pub fn is_hash(&self) -> bool {
        matches!(self.algo, Algo::Hash { .. })
    }

    /// For `hash`: slots in ring order from `key` (see [`Ring::walk`]); empty on the other
    /// algorithms.
    pub fn ring_walk(&self, key: u32) -> impl Iterator<Item = u32> + '_ {
        let walk = match &self.algo {
            Algo::Hash { ring, .. } => Some(ring.walk(key)),
            _ => None,
        };
        walk.into_iter().flatten()
    }

    /// Number of backends that may take new traffic.
    pub fn eligible_count(&self) -> usize {
        self.eligible.len()
    }

    /// Pick a backend's slot. `key` is the hash of the request's key (only used by `hash`);
    /// `exclude` rejects backends already tried.
    pub fn pick<T: Table + ?Sized>(
        &self,
        backends: &T,
        key: u32,
        exclude: impl Fn(&T::Backend) -> bool,
    ) -> Option<u32> {
        self.pick_key(backends, Key::hash_only(key), exclude)
    }

    /// [`Self::pick`] with the whole key, which nginx's plain `hash` rehashes.
    pub fn pick_key<T: Table + ?Sized>(
        &self,
        backends: &T,
        key: Key,
        exclude: impl Fn(&T::Backend) -> bool,
    ) -> Option<u32> {
        // A slot the ring names but this snapshot does not hold (a change in flight) is passed.
        let ok = |s: u32| backends.at(s).is_some_and(|b| !exclude(b));
        let (full, key) = (key, key.hash);
        match &self.algo {
            Algo::Modulo(modulo, rotation) => {
                let usable = |s: u32| backends.at(s).is_some_and(|b| b.eligible() && !exclude(b));
                modulo.pick(full, usable).or_else(|| rotation.pick(&ok))
            }
            Algo::RoundRobin(rotation) => rotation.pick(&ok),
            Algo::LeastConn => self.least_loaded(backends, &ok),
            Algo::P2c => self.two_choices(backends, &ok),
            // nginx's consistent hash balances an empty key round robin.
            Algo::Hash { rotation, .. } if full.empty => rotation.pick(&ok),
            Algo::Hash { factor, .. } => {
                let active = |s: u32| backends.at(s).map_or(0, |b| b.active());
                // The cap counts this connection: one more than the load now.
                let cap = || {
                    let total: u64 = self.eligible.iter().map(|&s| active(s)).sum();
                    self.bounded_cap(total + 1, *factor)
                };
                ring_choice(self.ring_walk(key), *factor, ok, active, cap)
            }
        }
    }

    /// For `hash`: where the ring places a connection with key hash `key`, when `ok` tells
    /// which slots can take it and `load` how loaded each is (the rebalancer places existing
    /// sessions with loads of its own). `total` is the load the bounded-load cap is taken
    /// from. `None` on the other algorithms.
    pub fn ring_place(
        &self,
        key: u32,
        ok: impl Fn(u32) -> bool,
        load: impl Fn(u32) -> u64,
        total: u64,
    ) -> Option<u32> {
        let Algo::Hash { factor, .. } = &self.algo else {
            return None;
        };
        ring_choice(self.ring_walk(key), *factor, ok, load, || {
            self.bounded_cap(total, *factor)
        })
    }

    /// Bounded-load cap for `total` connections: `factor`% of the average, rounded up.
    fn bounded_cap(&self, total: u64, factor: u32) -> u64 {
        let n = self.eligible.len().max(1) as u64;
        (total * u64::from(factor)).div_ceil(100 * n).max(1)
    }

    /// Fewest active connections per unit of weight; ties rotate.
    fn least_loaded<T: Table + ?Sized>(
        &self,
        backends: &T,
        ok: &impl Fn(u32) -> bool,
    ) -> Option<u32> {
        let n = self.eligible.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(u32, u64, u64)> = None;
        for &s in self.eligible.iter_from(start) {
            if !ok(s) {
                continue;
            }
            let Some(b) = backends.at(s) else { continue };
            let (load, w) = (b.active(), u64::from(b.effective_weight()));
            let better = match best {
                None => true,
                Some((_, bl, bw)) => (load as u128) * (bw as u128) < (bl as u128) * (w as u128),
            };
            if better {
                best = Some((s, load, w));
            }
        }
        best.map(|b| b.0)
    }

    /// Two random candidates; the one with less load per weight wins. In a large pool the
    /// candidates are drawn (again, a few times, when `ok` rejects one), so a pick does not
    /// scan the pool; in a small one, or when draws keep missing, from the accepted backends.
    fn two_choices<T: Table + ?Sized>(
        &self,
        backends: &T,
        ok: &impl Fn(u32) -> bool,
    ) -> Option<u32> {
        const SMALL: usize = 16;
        const DRAWS: usize = 8;
        let n = self.eligible.len();
        let drawn = (n > SMALL)
            .then(|| {
                let draw = |avoid: Option<u32>| {
                    (0..DRAWS)
                        .map(|_| self.eligible[rand::random_range(0..n)])
                        .find(|&s| ok(s) && Some(s) != avoid)
                };
                let a = draw(None)?;
                Some((a, draw(Some(a))?))
            })
            .flatten();
        let (a, b) = match drawn {
            Some(pair) => pair,
            None => {
                let rest: Vec<u32> = self.eligible.iter().copied().filter(|&s| ok(s)).collect();
                match rest.len() {
                    0 => return None,
                    1 => return Some(rest[0]),
                    m => {
                        let a = rand::random_range(0..m);
                        let b = (a + rand::random_range(1..m)) % m;
                        (rest[a], rest[b])
                    }
                }
            }
        };
        let load = |s: u32| {
            backends.at(s).map_or((u128::from(u64::MAX), 1), |b| {
                (b.active() as u128, u128::from(b.effective_weight()))
            })
        };
        let ((la, wa), (lb, wb)) = (load(a), load(b));
        Some(if la * wb <= lb * wa { a } else { b })
    }
}

/// Does `policy` hash consistently (a ring)?
pub fn consistent(policy: &UpstreamPolicy) -> bool {
    policy.balance == crate::config::Balance::Hash && policy.hash_consistent
}

/// Does `policy` hash as nginx's plain `hash`?
pub fn modulo(policy: &UpstreamPolicy) -> bool {
    policy.balance == crate::config::Balance::Hash && !policy.hash_consistent
}

/// The ring's choice along `walk` (backends in ring order from a key): the first backend `ok`
/// accepts; with a bounded-load `factor`, the first whose `load` is under `cap()`, else that
/// first one.
fn ring_choice(
    walk: impl Iterator<Item = u32>,
    factor: u32,
    ok: impl Fn(u32) -> bool,
    load: impl Fn(u32) -> u64,
    cap: impl FnOnce() -> u64,
) -> Option<u32> {
    let mut walk = walk.filter(|&i| ok(i));
    let first = walk.next();
    if factor == 0 {
        return first;
    }
    let cap = cap();
    std::iter::once(first)
        .flatten()
        .chain(walk)
        .find(|&i| load(i) < cap)
        .or(first)
}
