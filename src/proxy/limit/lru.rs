//! A bounded map from client address to a value, in least-recently-used order: what nginx's
//! zones keep as a red-black tree plus a queue, here a hash map into a slab of slots linked
//! newest to oldest. Every operation is O(1); memory grows with use up to `capacity` slots and
//! never beyond.

use std::collections::HashMap;
use std::net::IpAddr;

/// No slot.
const NIL: u32 = u32::MAX;

struct Slot<V> {
    key: IpAddr,
    value: V,
    /// Towards the newest.
    newer: u32,
    /// Towards the oldest.
    older: u32,
}

/// Address → value, at most `capacity` of them, oldest first to go.
pub struct Lru<V> {
    index: HashMap<IpAddr, u32>,
    slots: Vec<Slot<V>>,
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
    capacity: usize,
}

impl<V> Lru<V> {
    /// An empty map that will hold at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Lru {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            capacity: capacity.clamp(1, NIL as usize - 1),
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.index.len() >= self.capacity
    }

    /// The value of `key`, made the newest.
    pub fn touch(&mut self, key: &IpAddr) -> Option<&mut V> {
        let i = *self.index.get(key)?;
        self.unlink(i);
        self.link_newest(i);
        Some(&mut self.slots[i as usize].value)
    }

    /// The oldest value.
    pub fn oldest(&self) -> Option<&V> {
        (self.oldest != NIL).then(|| &self.slots[self.oldest as usize].value)
    }

    /// Drop the oldest entry.
    pub fn pop_oldest(&mut self) {
        let i = self.oldest;
        if i == NIL {
            return;
        }
        self.unlink(i);
        self.index.remove(&self.slots[i as usize].key);
        self.free.push(i);
    }

    /// Add `key` (not present) as the newest; when full, the oldest goes first.
    pub fn insert(&mut self, key: IpAddr, value: V) {
        debug_assert!(!self.index.contains_key(&key));
        if self.is_full() {
            self.pop_oldest();
        }
        let slot = Slot {
            key,
            value,
            newer: NIL,
            older: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, i);
        self.link_newest(i);
    }

    fn unlink(&mut self, i: u32) {
        let (newer, older) = {
            let s = &self.slots[i as usize];
            (s.newer, s.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
    }

    fn link_newest(&mut self, i: u32) {
        let old_newest = self.newest;
        {
            let s = &mut self.slots[i as usize];
            s.newer = NIL;
            s.older = old_newest;
        }
        match old_newest {
            NIL => self.oldest = i,
            n => self.slots[n as usize].newer = i,
        }
        self.newest = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut m = Lru::new(3);
        for n in 1..=3 {
            m.insert(ip(n), n);
        }
        assert_eq!(m.touch(&ip(1)), Some(&mut 1));
        m.insert(ip(4), 4); // 2 was the oldest
        assert!(m.touch(&ip(2)).is_none());
        assert_eq!(m.oldest(), Some(&3));
        m.pop_oldest();
        m.pop_oldest();
        assert_eq!(m.oldest(), Some(&4));
        assert_eq!(m.len(), 1);
        m.pop_oldest();
        assert!(m.is_empty() && m.oldest().is_none());
        m.insert(ip(9), 9);
        assert_eq!(m.touch(&ip(9)), Some(&mut 9));
    }
}
