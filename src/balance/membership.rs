//! Which backends may be picked, kept up to date one backend at a time.
//!
//! The controller holds one [`Membership`] per upstream and tells it, for each backend that
//! changed, whether it is eligible and at what weight. It keeps the eligible slots, and the
//! round-robin groups (slots of equal weight), as persistent arrays ([`Chunked`]): [`Membership::selector`]
//! hands a snapshot clones of them (O(1) each), and a change copies a chunk of each list it
//! touches. A slot's
//! place in its lists is tracked here, so leaving is a swap with the last entry, not a search.

use super::chunked::Chunked;
use super::modulo::Modulo;
use super::ring::Ring;
use super::rotation::{group_weight, Group, Rotation};
use super::{Algo, Selector};
use crate::config::{Balance, UpstreamPolicy};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// A list of slots with O(log n) insert and remove (order not kept).
#[derive(Debug, Default)]
struct SlotList {
    items: Chunked<u32>,
    pos: HashMap<u32, usize>,
}

impl SlotList {
    fn insert(&mut self, slot: u32) {
        if self.pos.contains_key(&slot) {
            return;
        }
        self.pos.insert(slot, self.items.len());
        self.items.push(slot);
    }

    fn remove(&mut self, slot: u32) {
        let Some(i) = self.pos.remove(&slot) else {
            return;
        };
        let last = self.items.pop().expect("not empty");
        if last != slot {
            self.items.set(i, last);
            self.pos.insert(last, i);
        }
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A round-robin group under construction: its members and its cursor, which lives on
/// across snapshots so that frequent publishes do not restart the rotation.
#[derive(Debug, Default)]
struct GroupState {
    members: SlotList,
    cursor: Arc<AtomicUsize>,
}

/// The eligible backends of one upstream, by slot.
#[derive(Debug, Default)]
pub struct Membership {
    eligible: SlotList,
    /// Round-robin groups, heaviest first.
    groups: BTreeMap<std::cmp::Reverse<u32>, GroupState>,
    /// Slot -> the weight it is grouped under.
    weight_of: HashMap<u32, u32>,
    cursor: Arc<AtomicUsize>,
}

impl Membership {
    /// Record that `slot` is eligible with effective weight `weight` (`None` or 0: not
    /// eligible).
    pub fn set(&mut self, slot: u32, weight: Option<u32>) {
        let weight = weight.filter(|&w| w > 0).map(group_weight);
        if self.weight_of.get(&slot).copied() == weight {
            return;
        }
        if let Some(old) = self.weight_of.remove(&slot) {
            let key = std::cmp::Reverse(old);
            if let Some(g) = self.groups.get_mut(&key) {
                g.members.remove(slot);
                if g.members.is_empty() {
                    self.groups.remove(&key);
                }
            }
        }
        match weight {
            Some(w) => {
                self.eligible.insert(slot);
                self.groups
                    .entry(std::cmp::Reverse(w))
                    .or_default()
                    .members
                    .insert(slot);
                self.weight_of.insert(slot, w);
            }
            None => self.eligible.remove(slot),
        }
    }

    /// Number of eligible backends.
    pub fn len(&self) -> usize {
        self.eligible.items.len()
    }

    /// No eligible backends?
    pub fn is_empty(&self) -> bool {
        self.eligible.is_empty()
    }

    /// The round-robin groups as a snapshot gets them.
    pub(super) fn rotation(&self) -> Rotation {
        Rotation::new(
            self.groups
                .iter()
                .map(|(w, g)| Group::new(w.0, g.members.items.clone(), g.cursor.clone()))
                .collect(),
        )
    }

    /// A selector for a snapshot, under `policy`; `ring` is the upstream's ring for `hash`,
    /// `modulo` its server list for plain `hash`. Costs O(groups), not O(backends).
    pub fn selector(
        &self,
        policy: &UpstreamPolicy,
        ring: Option<Arc<Ring>>,
        modulo: Option<Arc<Modulo>>,
    ) -> Selector {
        let algo = match policy.balance {
            Balance::Hash if !policy.hash_consistent => {
                Algo::Modulo(modulo.unwrap_or_default(), self.rotation())
            }
            Balance::Hash => Algo::Hash {
                ring: ring.unwrap_or_default(),
                factor: policy.hash_balance_factor,
                rotation: self.rotation(),
            },
            Balance::RoundRobin => Algo::RoundRobin(self.rotation()),
            Balance::LeastConn => Algo::LeastConn,
            Balance::P2c => Algo::P2c,
        };
        Selector {
            algo,
            eligible: self.eligible.items.clone(),
            cursor: self.cursor.clone(),
        }
    }

    /// The selector of an upstream's backups: as the policy balances, except that `hash`
    /// (which refuses backups) rotates.
    pub fn backup_selector(&self, policy: &UpstreamPolicy) -> Selector {
        let algo = match policy.balance {
            Balance::LeastConn => Algo::LeastConn,
            Balance::P2c => Algo::P2c,
            Balance::RoundRobin | Balance::Hash => Algo::RoundRobin(self.rotation()),
        };
        Selector {
            algo,
            eligible: self.eligible.items.clone(),
            cursor: self.cursor.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_and_go_and_change_groups() {
        let mut m = Membership::default();
        for s in 0..10 {
            m.set(s, Some(100 * (1 + s % 2)));
        }
        assert_eq!(m.len(), 10);
        assert_eq!(m.groups.len(), 2);
        m.set(3, None);
        m.set(4, Some(0));
        assert_eq!(m.len(), 8);
        // Slot 5 moves from weight 200 to 100; slot 1 is set again unchanged.
        m.set(5, Some(100));
        m.set(1, Some(200));
        let mut heavy: Vec<u32> = m.groups[&std::cmp::Reverse(200)]
            .members
            .items
            .iter()
            .copied()
            .collect();
        heavy.sort_unstable();
        assert_eq!(heavy, vec![1, 7, 9]);
        let mut all: Vec<u32> = m.eligible.items.iter().copied().collect();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 5, 6, 7, 8, 9]);
        for s in 0..10 {
            m.set(s, None);
        }
        assert!(m.is_empty());
        assert!(m.groups.is_empty(), "empty groups go");
    }
}
