//! Backend selection. A [`Selector`] is built once per snapshot from the upstream's backends and
//! policy, so the per-request work is a lookup, never a rebuild.
//!
//! Invariants: only eligible backends (active, healthy, weight > 0) are ever picked; the
//! `exclude` predicate lets a retry skip backends it already tried.
//!
//! Imports: `config` (policy types) and `pool::backend` (the backend type); nothing above.

pub mod ring;
mod sequence;

use crate::config::{Balance, UpstreamPolicy};
use crate::pool::backend::Backend;
use ring::Ring;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use ring::key_hash;

/// Precomputed selection structures for one upstream in one snapshot.
#[derive(Debug)]
pub struct Selector {
    algo: Algo,
    /// Indices of eligible backends, in id order.
    eligible: Vec<u32>,
    cursor: AtomicUsize,
}

#[derive(Debug)]
enum Algo {
    /// One period of nginx's smooth weighted round robin, as backend indices.
    RoundRobin(Vec<u32>),
    LeastConn,
    P2c,
    Hash {
        ring: Ring,
        factor: u32,
    },
}

impl Selector {
    /// Build the selection structures for `backends` (sorted by id) under `policy`.
    pub fn build(policy: &UpstreamPolicy, backends: &[Backend]) -> Self {
        let eligible: Vec<u32> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.eligible())
            .map(|(i, _)| i as u32)
            .collect();
        let algo = match policy.balance {
            Balance::RoundRobin => Algo::RoundRobin(sequence::smooth_weighted(
                eligible
                    .iter()
                    .map(|&i| (i, backends[i as usize].effective_weight)),
            )),
            Balance::LeastConn => Algo::LeastConn,
            Balance::P2c => Algo::P2c,
            Balance::Hash => Algo::Hash {
                ring: Ring::build(eligible.iter().map(|&i| {
                    let b = &backends[i as usize];
                    (&*b.id, b.weight, i)
                })),
                factor: policy.hash_balance_factor,
            },
        };
        Selector {
            algo,
            eligible,
            cursor: AtomicUsize::new(0),
        }
    }

    /// For `hash`: the ring (over backend indices) and the bounded-load factor (0 = off).
    pub fn ring(&self) -> Option<(&Ring, u32)> {
        match &self.algo {
            Algo::Hash { ring, factor } => Some((ring, *factor)),
            _ => None,
        }
    }

    /// Number of backends that may take new traffic.
    pub fn eligible_count(&self) -> usize {
        self.eligible.len()
    }

    /// Pick a backend index. `key` is the hash of the request's key (only used by `hash`);
    /// `exclude` rejects backends already tried.
    pub fn pick(
        &self,
        backends: &[Backend],
        key: u32,
        exclude: impl Fn(&Backend) -> bool,
    ) -> Option<usize> {
        let ok = |i: u32| !exclude(&backends[i as usize]);
        let found = match &self.algo {
            Algo::RoundRobin(seq) => {
                if seq.is_empty() {
                    return None;
                }
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..seq.len())
                    .map(|k| seq[(start + k) % seq.len()])
                    .find(|&i| ok(i))
            }
            Algo::LeastConn => self.least_loaded(backends, &ok),
            Algo::P2c => self.two_choices(backends, &ok),
            Algo::Hash { ring, factor } => {
                // The cap counts this connection: one more than the load now.
                let cap = || {
                    let total: u64 = self
                        .eligible
                        .iter()
                        .map(|&i| backends[i as usize].live.active())
                        .sum();
                    self.bounded_cap(total + 1, *factor)
                };
                ring_choice(
                    ring,
                    *factor,
                    key,
                    ok,
                    |i| backends[i as usize].live.active(),
                    cap,
                )
            }
        };
        found.map(|i| i as usize)
    }

    /// For `hash`: where the ring places a connection with key hash `key`, when `ok` tells
    /// which backends can take it and `load` how loaded each is (the rebalancer places existing
    /// sessions with loads of its own). `total` is the load the bounded-load cap is taken
    /// from. `None` on the other algorithms.
    pub fn ring_place(
        &self,
        key: u32,
        ok: impl Fn(u32) -> bool,
        load: impl Fn(u32) -> u64,
        total: u64,
    ) -> Option<u32> {
        let Algo::Hash { ring, factor } = &self.algo else {
            return None;
        };
        ring_choice(ring, *factor, key, ok, load, || {
            self.bounded_cap(total, *factor)
        })
    }

    /// Bounded-load cap for `total` connections: `factor`% of the average, rounded up.
    fn bounded_cap(&self, total: u64, factor: u32) -> u64 {
        let n = self.eligible.len().max(1) as u64;
        (total * u64::from(factor)).div_ceil(100 * n).max(1)
    }

    /// Fewest active connections per unit of weight; ties rotate.
    fn least_loaded(&self, backends: &[Backend], ok: &impl Fn(u32) -> bool) -> Option<u32> {
        let n = self.eligible.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(u32, u64, u64)> = None;
        for k in 0..n {
            let i = self.eligible[(start + k) % n];
            if !ok(i) {
                continue;
            }
            let b = &backends[i as usize];
            let (load, w) = (b.live.active(), u64::from(b.effective_weight));
            let better = match best {
                None => true,
                Some((_, bl, bw)) => (load as u128) * (bw as u128) < (bl as u128) * (w as u128),
            };
            if better {
                best = Some((i, load, w));
            }
        }
        best.map(|b| b.0)
    }

    /// Two random candidates; the one with less load per weight wins.
    fn two_choices(&self, backends: &[Backend], ok: &impl Fn(u32) -> bool) -> Option<u32> {
        let candidates: Vec<u32> = self.eligible.iter().copied().filter(|&i| ok(i)).collect();
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            n => {
                let a = rand::random_range(0..n);
                let mut b = rand::random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let load = |i: u32| {
                    let be = &backends[i as usize];
                    (be.live.active() as u128, u128::from(be.effective_weight))
                };
                let ((la, wa), (lb, wb)) = (load(candidates[a]), load(candidates[b]));
                Some(if la * wb <= lb * wa {
                    candidates[a]
                } else {
                    candidates[b]
                })
            }
        }
    }
}

/// The ring's choice for `key`: the first backend `ok` accepts from the key on; with a
/// bounded-load `factor`, the first whose `load` is under `cap()`, else that first one.
fn ring_choice(
    ring: &Ring,
    factor: u32,
    key: u32,
    ok: impl Fn(u32) -> bool,
    load: impl Fn(u32) -> u64,
    cap: impl FnOnce() -> u64,
) -> Option<u32> {
    let mut walk = ring.walk(key).filter(|&i| ok(i));
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

#[cfg(test)]
mod tests;
