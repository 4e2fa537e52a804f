//! Consistent hashing, nginx-compatible ketama, updated in place one backend at a time.
//!
//! Each backend contributes `160 * weight` points. A point's hash is nginx's
//! `crc32(HOST "\0" PORT PREV_HASH)` (see `ngx_http_upstream_update_chash`), where HOST and PORT
//! come from the backend id split at its last `:` when what follows is all digits. Static
//! backends have `host:port` as their id, so a ring built from the same `server` lines as an
//! nginx `hash ... consistent` upstream maps every key like nginx does. A key is hashed with
//! plain CRC-32 and served by the first point at or after it, wrapping around. Points with
//! equal hashes count once, for the backend whose id sorts first (nginx keeps one of them too).
//!
//! Layout: the hash space is cut into `2^bits` buckets by the top bits of a point's hash. Each
//! bucket is a small sorted vector behind its own `ArcSwapOption`, and a bitmap says which
//! buckets hold points, so a lookup skips empty stretches a word at a time. Adding or removing
//! a backend replaces only the buckets its points fall in: the cost is its own point count
//! times a bucket's size (about 16 to 64 points), not a re-sort of the ring; a heavy backend
//! (weight 1000: 160,000 points) touches nearly every bucket. When buckets get crowded,
//! [`Ring::grown`] redistributes the sorted points into more buckets (no hashing, no sort),
//! each time the ring grows fourfold, up to 65,536 buckets; past about 4 million points the
//! buckets just get fuller.
//!
//! One writer: only the pool controller calls [`Ring::add`] and [`Ring::remove`] (they take
//! `&self` because readers share the ring through an `Arc` across snapshots). Readers never
//! block; a reader racing a change sees each bucket either before or after it.
//!
//! Backends are named by tag (a slot number and its generation, see `pool::table`), which a
//! snapshot's backend table resolves; a tag the table does not hold resolves to nothing.

use arc_swap::{ArcSwapOption, Guard};
use crc32fast::Hasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Points per unit of weight, as in nginx.
pub const POINTS_PER_WEIGHT: u32 = 160;

/// Fewest and most bucket bits.
const MIN_BITS: u32 = 6;
const MAX_BITS: u32 = 16;
/// Average points per bucket aimed at when sizing, and the crowding that triggers a grow.
const AIM_PER_BUCKET: usize = 16;
const GROW_PER_BUCKET: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point {
    hash: u32,
    slot: u32,
}

type Bucket = Vec<Point>;

/// A ketama ring over backend slots.
#[derive(Debug)]
pub struct Ring {
    bits: u32,
    buckets: Box<[ArcSwapOption<Bucket>]>,
    /// One bit per bucket: set when the bucket holds points.
    occupied: Box<[AtomicU64]>,
    points: AtomicUsize,
}

impl Default for Ring {
    fn default() -> Self {
        Ring::with_capacity(0)
    }
}

/// CRC-32 of a key, as nginx's `ngx_crc32_long`.
pub fn key_hash(key: &[u8]) -> u32 {
    crc32fast::hash(key)
}

fn split_host_port(id: &str) -> (&str, &str) {
    if let Some(rest) = id.strip_prefix("unix:") {
        return (rest, "");
    }
    match id.rfind(':') {
        Some(i) if !id[i + 1..].is_empty() && id[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            (&id[..i], &id[i + 1..])
        }
        Some(i) if id[i + 1..].is_empty() => (&id[..i], ""),
        _ => (id, ""),
    }
}

/// The `160 * weight` point hashes of backend `id`, in nginx's order.
fn point_hashes(id: &str, weight: u32) -> impl Iterator<Item = u32> {
    let (host, port) = split_host_port(id);
    let mut base = Hasher::new();
    base.update(host.as_bytes());
    base.update(b"\0");
    base.update(port.as_bytes());
    let mut prev: u32 = 0;
    (0..weight.saturating_mul(POINTS_PER_WEIGHT)).map(move |_| {
        let mut h = base.clone();
        h.update(&prev.to_le_bytes());
        prev = h.finalize();
        prev
    })
}

fn bits_for(points: usize) -> u32 {
    let buckets = (points / AIM_PER_BUCKET).max(1).next_power_of_two();
    buckets.trailing_zeros().clamp(MIN_BITS, MAX_BITS)
}

impl Ring {
    /// An empty ring sized for about `points` points.
    pub fn with_capacity(points: usize) -> Self {
        let bits = bits_for(points);
        let n = 1usize << bits;
        Ring {
            bits,
            buckets: (0..n).map(|_| ArcSwapOption::empty()).collect(),
            occupied: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            points: AtomicUsize::new(0),
        }
    }

    /// Build a ring from `(id, weight, slot)` triples (tests and benchmarks; the controller
    /// adds backends one by one).
    pub fn build<'a>(members: impl IntoIterator<Item = (&'a str, u32, u32)>) -> Self {
        let members: Vec<(&str, u32, u32)> = members.into_iter().collect();
        let total: usize = members
            .iter()
            .map(|m| m.1 as usize * POINTS_PER_WEIGHT as usize)
            .sum();
        let ring = Ring::with_capacity(total);
        let ids: std::collections::HashMap<u32, &str> =
            members.iter().map(|&(id, _, slot)| (slot, id)).collect();
        for &(id, weight, slot) in &members {
            ring.add(slot, id, weight, |s| ids.get(&s).copied().unwrap_or(""));
        }
        ring
    }

    fn bucket_of(&self, hash: u32) -> usize {
        (hash >> (32 - self.bits)) as usize
    }

    /// Is the ring empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of points (equal hashes of different backends each counted).
    pub fn len(&self) -> usize {
        self.points.load(Ordering::Acquire)
    }

    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Would `extra` more points crowd the buckets enough to call for [`Ring::grown`]?
    pub fn crowded_with(&self, extra: usize) -> bool {
        self.bits < MAX_BITS && self.len() + extra > GROW_PER_BUCKET << self.bits
    }

    /// A copy of this ring with buckets sized for `extra` more points. It shares nothing with
    /// this one, so the controller swaps it in for later snapshots.
    pub fn grown(&self, extra: usize) -> Ring {
        let ring = Ring::with_capacity(self.len() + extra);
        let mut fill: Vec<Bucket> = vec![Vec::new(); ring.buckets.len()];
        for b in self.buckets.iter() {
            if let Some(points) = b.load_full() {
                for p in points.iter() {
                    fill[ring.bucket_of(p.hash)].push(*p);
                }
            }
        }
        let mut count = 0;
        for (i, points) in fill.into_iter().enumerate() {
            count += points.len();
            ring.store(i, points);
        }
        ring.points.store(count, Ordering::Release);
        ring
    }

    fn store(&self, i: usize, points: Bucket) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if points.is_empty() {
            self.buckets[i].store(None);
            self.occupied[word].fetch_and(!bit, Ordering::Release);
        } else {
            self.buckets[i].store(Some(Arc::new(points)));
            self.occupied[word].fetch_or(bit, Ordering::Release);
        }
    }

    /// Add backend `slot` (id `id`) with `weight`. `id_of` names the slots already in the ring,
    /// to order points with equal hashes by id. Writer only.
    pub fn add<'a, 'b: 'a>(
        &self,
        slot: u32,
        id: &'a str,
        weight: u32,
        id_of: impl Fn(u32) -> &'b str,
    ) {
        self.reweigh(slot, id, 0, weight, id_of);
    }

    /// Remove backend `slot`, which is in the ring as `id` with `weight`. Writer only.
    pub fn remove(&self, slot: u32, id: &str, weight: u32) {
        self.reweigh(slot, id, weight, 0, |_| "");
    }

    /// Change backend `slot` (id `id`) from weight `from` to `to` (0: not in the ring). A
    /// backend's points at weight w are the first `160 * w` of one chain, so only the chain's
    /// tail between the two weights comes or goes: the keys the rest of its points own stay
    /// put, also while the change is under way. Writer only.
    pub fn reweigh<'a, 'b: 'a>(
        &self,
        slot: u32,
        id: &'a str,
        from: u32,
        to: u32,
        id_of: impl Fn(u32) -> &'b str,
    ) {
        if from == to {
            return;
        }
        let chain: Vec<u32> = point_hashes(id, from.max(to)).collect();
        let split = (from.min(to) * POINTS_PER_WEIGHT) as usize;
        let mut kept: Vec<u32> = chain[..split].to_vec();
        kept.sort_unstable();
        kept.dedup();
        let mut tail: Vec<u32> = chain[split..]
            .iter()
            .copied()
            .filter(|h| kept.binary_search(h).is_err())
            .collect();
        tail.sort_unstable();
        tail.dedup();
        if to > from {
            self.insert(slot, id, &tail, id_of);
        } else {
            self.delete(slot, &tail);
        }
    }

    /// Insert points `hashes` (sorted, distinct) of backend `slot`.
    fn insert<'a, 'b: 'a>(
        &self,
        slot: u32,
        id: &'a str,
        hashes: &[u32],
        id_of: impl Fn(u32) -> &'b str,
    ) {
        let name = |s: u32| -> &'a str {
            if s == slot {
                id
            } else {
                id_of(s)
            }
        };
        // Names are looked up only for equal hashes (rare): a lookup is a cache miss.
        let before = |a: &Point, b: &Point| {
            a.hash < b.hash || (a.hash == b.hash && name(a.slot) < name(b.slot))
        };
        for group in hashes.chunk_by(|a, b| self.bucket_of(*a) == self.bucket_of(*b)) {
            let i = self.bucket_of(group[0]);
            let old = self.buckets[i].load();
            let old: &[Point] = old.as_deref().map_or(&[], Vec::as_slice);
            let mut merged = Vec::with_capacity(old.len() + group.len());
            let (mut a, mut b) = (0, 0);
            while a < old.len() || b < group.len() {
                let new = group.get(b).map(|&hash| Point { hash, slot });
                match new {
                    Some(n) if a == old.len() || before(&n, &old[a]) => {
                        merged.push(n);
                        b += 1;
                    }
                    _ => {
                        merged.push(old[a]);
                        a += 1;
                    }
                }
            }
            self.store(i, merged);
        }
        self.points.fetch_add(hashes.len(), Ordering::AcqRel);
    }

    /// Delete points `hashes` (sorted, distinct) of backend `slot`.
    fn delete(&self, slot: u32, hashes: &[u32]) {
        let mut removed = 0;
        for group in hashes.chunk_by(|a, b| self.bucket_of(*a) == self.bucket_of(*b)) {
            let i = self.bucket_of(group[0]);
            let old = self.buckets[i].load();
            let Some(old) = old.as_deref() else {
                continue;
            };
            let kept: Bucket = old
                .iter()
                .copied()
                .filter(|p| p.slot != slot || group.binary_search(&p.hash).is_err())
                .collect();
            removed += old.len() - kept.len();
            self.store(i, kept);
        }
        self.points.fetch_sub(removed, Ordering::AcqRel);
    }

    /// The first occupied bucket at or after `from`, wrapping around.
    fn next_occupied(&self, from: usize) -> Option<usize> {
        let n = self.buckets.len();
        let words = self.occupied.len();
        let (mut w, bit) = ((from % n) / 64, from % 64);
        let mut mask = self.occupied[w].load(Ordering::Acquire) & (!0u64 << bit);
        for _ in 0..=words {
            if mask != 0 {
                return Some(w * 64 + mask.trailing_zeros() as usize);
            }
            w = (w + 1) % words;
            mask = self.occupied[w].load(Ordering::Acquire);
        }
        None
    }

    /// Backend slots in ring order starting at `hash`: the owner first, then the ones a key
    /// falls over to. Yields each point once (equal hashes once), so a slot can repeat;
    /// callers stop at the first they accept.
    pub fn walk(&self, hash: u32) -> Walk<'_> {
        let i = self.bucket_of(hash);
        let bucket = self.buckets[i].load();
        let pos = bucket
            .as_deref()
            .map_or(0, |b| b.partition_point(|p| p.hash < hash));
        Walk {
            ring: self,
            index: i,
            bucket,
            pos,
            left: self.len(),
            last: None,
        }
    }
}

/// Iterator returned by [`Ring::walk`].
pub struct Walk<'a> {
    ring: &'a Ring,
    index: usize,
    bucket: Guard<Option<Arc<Bucket>>>,
    pos: usize,
    /// Points still to yield: the walk ends after one turn of the ring.
    left: usize,
    last: Option<u32>,
}

impl Iterator for Walk<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        // Bounded by the buckets in one turn plus the points in it.
        for _ in 0..=self.ring.buckets.len() + self.left {
            if self.left == 0 {
                return None;
            }
            let here = self
                .bucket
                .as_deref()
                .and_then(|b| b.get(self.pos))
                .copied();
            match here {
                Some(p) => {
                    self.pos += 1;
                    self.left -= 1;
                    if self.last == Some(p.hash) {
                        continue;
                    }
                    self.last = Some(p.hash);
                    return Some(p.slot);
                }
                None => {
                    self.index = self.ring.next_occupied(self.index + 1)?;
                    self.bucket = self.ring.buckets[self.index].load();
                    self.pos = 0;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
