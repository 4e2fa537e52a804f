//! One upstream as the controller holds it: its entries by id, which of them changed since the
//! last publish, the slots the ring and the selectors know them by, and the persistent parts a
//! snapshot is made of (the backend table, the membership lists, the `hash` ring), which it
//! changes one backend at a time.
//!
//! Every mutable access to an entry marks it changed ([`Entries::get_mut`]), so a publish
//! visits exactly the changed backends: O(changes x log n), not O(n).

use super::{effective_weight, Entry};
use crate::balance::ring::{Ring, POINTS_PER_WEIGHT};
use crate::balance::Membership;
use crate::config::UpstreamPolicy;
use crate::pool::backend::{Backend, BackendId};
use crate::pool::snapshot::Upstream;
use crate::pool::table::{slot, Backends, SLOT_BITS};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use tokio::time::Instant;

/// Entries by id, remembering which ones were touched since the last publish.
#[derive(Default)]
pub(super) struct Entries {
    map: BTreeMap<BackendId, Entry>,
    changed: BTreeSet<BackendId>,
    /// The entries the periodic tick must look at: retiring, or ramping up in slow start.
    /// Kept up to date from `changed` (every change to those fields marks the entry).
    watched: BTreeSet<BackendId>,
}

impl Entries {
    pub(super) fn get(&self, id: &str) -> Option<&Entry> {
        self.map.get(id)
    }

    /// A mutable entry; marks it changed.
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        let e = self.map.get_mut(id)?;
        self.changed.insert(e.backend.id.clone());
        Some(e)
    }

    /// A mutable entry, not marked changed: for the controller's own bookkeeping, which no
    /// snapshot shows (when to look at an expiry), and for renewing a registration's TTL (an
    /// atomic in `Live`, shared with the snapshots).
    pub(super) fn get_quiet(&mut self, id: &str) -> Option<&mut Entry> {
        self.map.get_mut(id)
    }

    /// The ids the tick must look at (see `watched`), after taking in the changes since the
    /// last look: O(changes + watched), not O(entries).
    pub(super) fn watched(&mut self) -> Vec<BackendId> {
        self.sync_watched();
        self.watched.iter().cloned().collect()
    }

    fn sync_watched(&mut self) {
        for id in &self.changed {
            match self.map.get(id) {
                Some(e) if e.retiring || e.ramp_from.is_some() => {
                    self.watched.insert(id.clone());
                }
                _ => {
                    self.watched.remove(id);
                }
            }
        }
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Entry> {
        self.map.values()
    }

    /// Let `f` change entries; those it returns `true` for are marked changed.
    pub(super) fn update_each(&mut self, mut f: impl FnMut(&mut Entry) -> bool) {
        for e in self.map.values_mut() {
            if f(e) {
                self.changed.insert(e.backend.id.clone());
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// How many entries are marked changed since the last publish.
    #[cfg(test)]
    pub(super) fn changed_len(&self) -> usize {
        self.changed.len()
    }
}

impl std::ops::Index<&BackendId> for Entries {
    type Output = Entry;
    fn index(&self, id: &BackendId) -> &Entry {
        &self.map[id]
    }
}

pub(super) struct UpstreamState {
    policy: Arc<UpstreamPolicy>,
    pub(super) backends: Entries,
    /// For `hash`: the ring, changed one backend at a time and shared by every snapshot.
    ring: Option<Arc<Ring>>,
    /// The snapshot parts, as of the last publish plus the changes applied since.
    table: Backends,
    members: Membership,
    /// The backups (nginx's `backup`), picked only when no other backend can be.
    backups: Membership,
    /// How many backends in `table` are backups, so a publish knows whether the upstream
    /// has any without looking at every backend.
    backups_in_table: usize,
    /// Static backends' places in the config (nginx's server order, which plain `hash` maps
    /// keys by); registered and etcd backends come after them, in id order.
    order: HashMap<BackendId, u32>,
    /// Ring points to add once the snapshot that holds their backends is out:
    /// tag -> (id, weight in the ring now, weight wanted).
    pending: HashMap<u32, (BackendId, u32, u32)>,
    /// Slot -> its generation (the high bits of the tag of whoever holds it next).
    generations: Vec<u8>,
    /// Slots free to reuse, oldest first, and slots freed since the last publish (reused only
    /// after it). A slot whose generation has gone all the way round is not reused at all, so
    /// a tag is never handed out twice.
    free_slots: std::collections::VecDeque<u32>,
    freed: Vec<u32>,
    /// What the last publish made of this upstream; reused while nothing changes.
    published: Option<Arc<Upstream>>,
    /// The policy changed: publish this upstream anew at the next publish.
    policy_changed: bool,
    /// `balance` changed to or from `hash`: the ring is made anew.
    new_ring: bool,
    /// Tags of the backends passive health holds out, as of the last publish (at most
    /// `max_ejection_percent` of them), and the list the snapshot has of them.
    ejected: BTreeSet<u32>,
    panic: Arc<[u32]>,
}

impl UpstreamState {
    pub(super) fn new(policy: Arc<UpstreamPolicy>) -> Self {
        UpstreamState {
            policy,
            backends: Entries::default(),
            ring: None,
            table: Backends::default(),
            members: Membership::default(),
            backups: Membership::default(),
            backups_in_table: 0,
            order: HashMap::new(),
            pending: HashMap::new(),
            generations: Vec::new(),
            free_slots: std::collections::VecDeque::new(),
            freed: Vec::new(),
            published: None,
            policy_changed: true,
            new_ring: true,
            ejected: BTreeSet::new(),
            panic: Arc::from([]),
        }
    }

    /// How many backends passive health holds out now.
    pub(super) fn ejected_count(&self) -> usize {
        self.ejected.len()
    }

    pub(super) fn policy(&self) -> &Arc<UpstreamPolicy> {
        &self.policy
    }

    /// Replace the policy; the next publish publishes the upstream anew, and makes the ring
    /// anew only if `balance` changed (the ring depends on nothing else in the policy).
    pub(super) fn set_policy(&mut self, policy: Arc<UpstreamPolicy>) {
        self.new_ring |= policy.balance != self.policy.balance
            || policy.hash_consistent != self.policy.hash_consistent;
        self.policy = policy;
        self.policy_changed = true;
    }

    /// Add `entry` under a slot of its own.
    pub(super) fn insert(&mut self, mut entry: Entry) {
        let slot = self.free_slots.pop_front().unwrap_or_else(|| {
            self.generations.push(0);
            (self.generations.len() - 1) as u32
        });
        assert!(
            slot < 1 << SLOT_BITS,
            "more than 2^24 backends in one upstream"
        );
        entry.slot = u32::from(self.generations[slot as usize]) << SLOT_BITS | slot;
        entry.in_ring = 0;
        let id = entry.backend.id.clone();
        self.backends.changed.insert(id.clone());
        self.backends.map.insert(id, entry);
    }

    /// Remove a backend: from the table and the membership lists (seen at the next publish)
    /// and from the ring (at once).
    pub(super) fn take(&mut self, id: &BackendId) -> Option<Entry> {
        let e = self.backends.map.remove(id)?;
        // Marked changed so the next publish is not skipped (the loop passes missing ids).
        self.backends.changed.insert(id.clone());
        if let (Some(ring), w @ 1..) = (&self.ring, e.in_ring) {
            ring.remove(e.slot, &e.backend.id, w);
        }
        self.pending.remove(&e.slot);
        if self.ejected.remove(&e.slot) {
            self.panic = self.ejected.iter().copied().collect();
        }
        if self.table.get(e.slot).is_some_and(|b| b.server.backup) {
            self.backups_in_table -= 1;
        }
        self.table.clear(e.slot);
        self.members.set(e.slot, None);
        self.backups.set(e.slot, None);
        let i = slot(e.slot);
        if let Some(next) = self.generations[i].checked_add(1) {
            self.generations[i] = next;
            self.freed.push(i as u32);
        }
        Some(e)
    }

    /// This upstream for the next snapshot: the last one when nothing changed, else one built
    /// from the persistent parts after applying the changed entries to them. Ring points that
    /// go (a backend leaving, a weight going down) are taken out now; those that come wait in
    /// `pending` for [`Self::published`], unless the ring is new and no snapshot has it yet.
    pub(super) fn snapshot(&mut self, name: &str, now: Instant) -> Arc<Upstream> {
        let hash = crate::balance::consistent(&self.policy);
        let mut fresh = false;
        if std::mem::take(&mut self.new_ring) {
            self.ring = None;
            self.pending.clear();
            self.backends.update_each(|e| {
                e.in_ring = 0;
                true
            });
        }
        let republish = std::mem::take(&mut self.policy_changed);
        if let (false, false, Some(up)) = (
            republish,
            !self.backends.changed.is_empty(),
            &self.published,
        ) {
            return up.clone();
        }
        if hash && self.ring.is_none() {
            let points = self.backends.len() * POINTS_PER_WEIGHT as usize;
            self.ring = Some(Arc::new(Ring::with_capacity(points)));
            fresh = true;
        }
        let mut extra = 0usize;
        let mut ejections_changed = false;
        self.backends.sync_watched();
        for id in std::mem::take(&mut self.backends.changed) {
            let Some(e) = self.backends.map.get_mut(&id) else {
                continue;
            };
            let b = Backend {
                effective_weight: effective_weight(e, self.policy.slow_start, now),
                ..e.backend.clone()
            };
            let eligible = b.eligible();
            ejections_changed |= if b.ejected {
                self.ejected.insert(e.slot)
            } else {
                self.ejected.remove(&e.slot)
            };
            let backup = b.server.backup;
            let weight = eligible.then_some(b.effective_weight);
            self.members.set(e.slot, weight.filter(|_| !backup));
            self.backups.set(e.slot, weight.filter(|_| backup));
            // Marked but unchanged (a refused or no-op diff): nothing to copy.
            let same = self.table.get(e.slot).is_some_and(|old| unchanged(old, &b));
            if let Some(ring) = &self.ring {
                let want = if eligible && !backup { b.weight } else { 0 };
                if want < e.in_ring {
                    ring.reweigh(e.slot, &b.id, e.in_ring, want, |_| "");
                } else if want > e.in_ring {
                    self.pending.insert(e.slot, (b.id.clone(), e.in_ring, want));
                    extra += ((want - e.in_ring) * POINTS_PER_WEIGHT) as usize;
                }
                e.in_ring = want;
            }
            if !same {
                let was = self.table.get(e.slot).is_some_and(|o| o.server.backup);
                self.backups_in_table =
                    self.backups_in_table + usize::from(backup) - usize::from(was);
                self.table.set(e.slot, b);
            }
        }
        if let Some(ring) = self.ring.as_ref().filter(|r| r.crowded_with(extra)) {
            self.ring = Some(Arc::new(ring.grown(extra)));
            fresh = true;
        }
        if fresh {
            // No snapshot holds this ring yet: its points can all go in before it is seen.
            self.add_pending();
        }
        if ejections_changed {
            self.panic = self.ejected.iter().copied().collect();
        }
        let modulo = crate::balance::modulo(&self.policy).then(|| Arc::new(self.modulo()));
        let backups =
            (self.backups_in_table > 0).then(|| self.backups.backup_selector(&self.policy));
        let up = Arc::new(Upstream {
            name: name.to_string(),
            policy: self.policy.clone(),
            backends: self.table.clone(),
            selector: self
                .members
                .selector(&self.policy, self.ring.clone(), modulo),
            backups,
            ejected: self.panic.clone(),
        });
        self.published = Some(up.clone());
        up
    }

    /// Record the static backends' order in the config; returns whether it changed (the
    /// next publish then rebuilds the upstream).
    pub(super) fn set_order<'a>(&mut self, ids: impl Iterator<Item = &'a str>) -> bool {
        let order: HashMap<BackendId, u32> = ids
            .enumerate()
            .map(|(i, id)| (id.into(), i as u32))
            .collect();
        if order == self.order {
            return false;
        }
        self.order = order;
        self.policy_changed = true;
        true
    }

    /// nginx's server list for plain `hash`: the primary backends, static ones in config
    /// order, then the others in id order; each holds its place whatever its state. O(n log n)
    /// per publish that changes this upstream, and only for plain `hash`.
    fn modulo(&self) -> crate::balance::Modulo {
        let mut peers: Vec<(u32, u32, u32)> = self
            .table
            .slots()
            .filter(|(_, b)| !b.server.backup)
            .map(|(tag, b)| {
                (
                    self.order.get(&b.id).copied().unwrap_or(u32::MAX),
                    tag,
                    b.weight,
                )
            })
            .collect();
        // Stable: backends outside the config keep their id order.
        peers.sort_by_key(|p| p.0);
        crate::balance::Modulo::new(peers.into_iter().map(|(_, tag, w)| (tag, w)))
    }

    fn add_pending(&mut self) {
        if let Some(ring) = &self.ring {
            // Every backend with points in the ring is in the table under the same tag.
            let table = &self.table;
            let id_of = |t: u32| table.get(t).map_or("", |b| &*b.id);
            for (tag, (id, from, to)) in self.pending.drain() {
                ring.reweigh(tag, &id, from, to, id_of);
            }
        }
    }

    /// The snapshot is out: add the ring points that waited for it, and free the slots
    /// released before it.
    pub(super) fn published(&mut self) {
        self.add_pending();
        self.free_slots.extend(self.freed.drain(..));
    }
}

/// Would publishing `new` over `old` change anything a reader sees?
fn unchanged(old: &Backend, new: &Backend) -> bool {
    old.id == new.id
        && old.addr == new.addr
        && old.weight == new.weight
        && old.effective_weight == new.effective_weight
        && old.max_conns == new.max_conns
        && old.state == new.state
        && old.healthy == new.healthy
        && old.ejected == new.ejected
        && old.source == new.source
        && old.server == new.server
        && Arc::ptr_eq(&old.live, &new.live)
        && old.close.is_cancelled() == new.close.is_cancelled()
}
