//! A snapshot's backends: a persistent table indexed by slot, plus an index by id.
//!
//! Both halves are persistent: the slots a [`Chunked`] array, the index an `imbl` ordered map.
//! A snapshot holds a clone (O(1)), and the controller changes its own copy one backend at a
//! time (a chunk of 64 slots and the chunk list; O(log n) in the index), sharing every
//! untouched part with the snapshots already out. So publishing a change costs about the same at 10,000
//! backends as at 10.
//!
//! Backends are named by tag: a slot number in the low [`SLOT_BITS`] bits and the slot's
//! generation above them, bumped each time the slot changes hands (a slot whose generation
//! would wrap is never reused). Tags are the controller's, stable while a backend is in the
//! pool. A tag whose generation is not the slot's current one finds nothing, so a ring point or
//! list entry left from the slot's previous holder never resolves to its next one. Iteration
//! is in id order.

use super::backend::{Backend, BackendId, Source};
use super::sticky::StickyId;
use crate::balance::chunked::Chunked;
use crate::balance::{Candidate, Table};
use std::sync::Arc;

/// Bits of a tag that are the slot number; the bits above are its generation.
pub const SLOT_BITS: u32 = 24;

/// The slot number in `tag`.
pub fn slot(tag: u32) -> usize {
    (tag & ((1 << SLOT_BITS) - 1)) as usize
}

/// The backends of one upstream in one snapshot.
#[derive(Clone, Debug, Default)]
pub struct Backends {
    /// By slot: the holder's tag and the backend (behind an `Arc`, so copying a chunk of 64
    /// costs 64 reference counts, not 64 backends' worth of them).
    slots: Chunked<Option<(u32, Arc<Backend>)>>,
    /// Id -> tag.
    ids: imbl::OrdMap<BackendId, u32>,
    /// Sticky cookie value ([`StickyId`] of the id) -> tag.
    sticky: imbl::OrdMap<StickyId, u32>,
    /// How many came from a registration or etcd (not from the config).
    registered: usize,
}

impl Backends {
    /// A table holding `backends` under tags 0, 1, ... (tests, and selectors built from
    /// scratch).
    pub fn from_vec(backends: Vec<Backend>) -> Self {
        let mut t = Backends::default();
        for (i, b) in backends.into_iter().enumerate() {
            t.set(i as u32, b);
        }
        t
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No backends?
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of backends that came from a registration or etcd, not from the config.
    pub fn registered(&self) -> usize {
        self.registered
    }

    /// The backend tagged `tag`, if it is still in this table.
    pub fn get(&self, tag: u32) -> Option<&Backend> {
        match self.slots.get(slot(tag)) {
            Some(Some((t, b))) if *t == tag => Some(b),
            _ => None,
        }
    }

    /// The tag of backend `id`.
    pub fn slot_of(&self, id: &str) -> Option<u32> {
        self.ids.get(id).copied()
    }

    /// Backend `id`.
    pub fn by_id(&self, id: &str) -> Option<&Backend> {
        self.slot_of(id).and_then(|s| self.get(s))
    }

    /// The backend a sticky cookie names.
    pub fn by_sticky(&self, value: StickyId) -> Option<&Backend> {
        self.sticky.get(&value).and_then(|&s| self.get(s))
    }

    /// Backends in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Backend> + '_ {
        self.slots().map(|(_, b)| b)
    }

    /// `(tag, backend)` in id order.
    pub fn slots(&self) -> impl Iterator<Item = (u32, &Backend)> + '_ {
        self.ids
            .values()
            .filter_map(|&s| self.get(s).map(|b| (s, b)))
    }

    /// Put `backend` under `tag`, replacing whatever held its slot.
    pub fn set(&mut self, tag: u32, backend: Backend) {
        let i = slot(tag);
        while self.slots.len() <= i {
            self.slots.push(None);
        }
        // The id under another tag (not something the controller does): that entry goes.
        if let Some(other) = self.ids.get(&backend.id).copied().filter(|&t| t != tag) {
            self.clear(other);
        }
        self.vacate(i);
        self.registered += usize::from(backend.source != Source::Static);
        self.ids.insert(backend.id.clone(), tag);
        self.sticky.insert(StickyId::of(&backend.id), tag);
        self.slots.set(i, Some((tag, Arc::new(backend))));
    }

    /// Remove the backend tagged `tag`, if it is there.
    pub fn clear(&mut self, tag: u32) {
        if self.get(tag).is_some() {
            self.vacate(slot(tag));
        }
    }

    fn vacate(&mut self, i: usize) {
        if let Some((tag, old)) = self.slots.get(i).and_then(Option::as_ref) {
            self.registered -= usize::from(old.source != Source::Static);
            if self.ids.get(&old.id) == Some(tag) {
                self.ids.remove(&old.id);
            }
            let value = StickyId::of(&old.id);
            if self.sticky.get(&value) == Some(tag) {
                self.sticky.remove(&value);
            }
            self.slots.set(i, None);
        }
    }
}

impl Table for Backends {
    type Backend = Backend;
    fn at(&self, tag: u32) -> Option<&Backend> {
        self.get(tag)
    }
}

/// What selection reads of a backend.
impl Candidate for Backend {
    fn id(&self) -> &str {
        &self.id
    }
    fn weight(&self) -> u32 {
        self.weight
    }
    fn effective_weight(&self) -> u32 {
        self.effective_weight
    }
    fn eligible(&self) -> bool {
        Backend::eligible(self)
    }
    fn backup(&self) -> bool {
        self.server.backup
    }
    fn active(&self) -> u64 {
        self.live.active()
    }
}

impl std::ops::Index<usize> for Backends {
    type Output = Backend;

    /// The backend tagged `tag`; panics when it is not in this table.
    fn index(&self, tag: usize) -> &Backend {
        self.get(tag as u32).expect("a backend with this tag")
    }
}

impl<'a> IntoIterator for &'a Backends {
    type Item = &'a Backend;
    type IntoIter = Box<dyn Iterator<Item = &'a Backend> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::backend::{Live, State};

    fn backend(id: &str, source: Source) -> Backend {
        Backend {
            id: id.into(),
            addr: ([127, 0, 0, 1], 1).into(),
            weight: 1,
            effective_weight: 100,
            max_conns: 0,
            state: State::Active,
            healthy: true,
            ejected: false,
            source,
            server: Default::default(),
            live: Arc::new(Live::default()),
            close: Default::default(),
        }
    }

    #[test]
    fn slots_ids_and_counts_stay_in_step() {
        let mut t = Backends::default();
        t.set(0, backend("b", Source::Static));
        t.set(1, backend("a", Source::Http));
        t.set(2, backend("c", Source::Etcd));
        let before = t.clone();
        assert_eq!((t.len(), t.registered()), (3, 2));
        let ids: Vec<&str> = t.iter().map(|b| &*b.id).collect();
        assert_eq!(ids, ["a", "b", "c"], "id order");
        // A slot changes hands; another empties.
        t.set(1, backend("d", Source::Static));
        t.clear(2);
        assert_eq!((t.len(), t.registered()), (2, 0));
        assert!(t.by_id("a").is_none() && t.by_id("c").is_none());
        assert_eq!(t.slot_of("d"), Some(1));
        assert_eq!(t.get(2).map(|b| &*b.id), None);
        let sticky = |id: &str| t.by_sticky(StickyId::of(id)).map(|b| b.id.to_string());
        assert_eq!(sticky("d").as_deref(), Some("d"));
        assert_eq!(
            (sticky("a"), sticky("c")),
            (None, None),
            "gone with their slots"
        );
        // A stale tag (the slot's earlier generation) finds nothing and clears nothing.
        let stale = 1 | 1 << SLOT_BITS;
        assert!(t.get(stale).is_none());
        t.clear(stale);
        assert_eq!(t.slot_of("d"), Some(1));
        // The same id under another tag moves, counted once.
        t.set(5, backend("d", Source::Http));
        assert_eq!((t.len(), t.registered(), t.slot_of("d")), (2, 1, Some(5)));
        assert!(t.get(1).is_none());
        // The copy taken before is untouched.
        assert_eq!((before.len(), before.registered()), (3, 2));
        assert_eq!(before.by_id("a").map(|b| b.source), Some(Source::Http));
    }
}
