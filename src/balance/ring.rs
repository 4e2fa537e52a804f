//! Consistent hashing, nginx-compatible ketama.
//!
//! Each backend contributes `160 * weight` points. A point's hash is nginx's
//! `crc32(HOST "\0" PORT PREV_HASH)` (see `ngx_http_upstream_update_chash`), where HOST and PORT
//! come from the backend id split at its last `:` when what follows is all digits. Static
//! backends have `host:port` as their id, so a ring built from the same `server` lines as an
//! nginx `hash ... consistent` upstream maps every key like nginx does. A key is hashed with
//! plain CRC-32 and served by the first point at or after it, wrapping around.
//!
//! Points are sorted by (hash, id), so the ring does not depend on the order backends arrive in.

use crc32fast::Hasher;

/// Points per unit of weight, as in nginx.
pub const POINTS_PER_WEIGHT: u32 = 160;

/// A ketama ring over backend indices.
#[derive(Debug, Default)]
pub struct Ring {
    /// (hash, backend index), sorted by hash; equal hashes deduplicated keeping the first.
    points: Vec<(u32, u32)>,
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

impl Ring {
    /// Build a ring from `(id, weight, index)` triples.
    pub fn build<'a>(members: impl IntoIterator<Item = (&'a str, u32, u32)>) -> Self {
        let mut points: Vec<(u32, &str, u32)> = Vec::new();
        for (id, weight, index) in members {
            let (host, port) = split_host_port(id);
            let mut base = Hasher::new();
            base.update(host.as_bytes());
            base.update(b"\0");
            base.update(port.as_bytes());
            let mut prev: u32 = 0;
            for _ in 0..weight.saturating_mul(POINTS_PER_WEIGHT) {
                let mut h = base.clone();
                h.update(&prev.to_le_bytes());
                let hash = h.finalize();
                points.push((hash, id, index));
                prev = hash;
            }
        }
        points.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        points.dedup_by_key(|p| p.0);
        Ring {
            points: points.into_iter().map(|(h, _, i)| (h, i)).collect(),
        }
    }

    /// Is the ring empty?
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Position of the first point at or after `hash`.
    fn start(&self, hash: u32) -> usize {
        self.points.partition_point(|p| p.0 < hash) % self.points.len().max(1)
    }

    /// Backends in ring order starting at `hash`: the owner first, then the ones a key falls
    /// over to. Yields each point, so an index can repeat; callers stop at the first they accept.
    pub fn walk(&self, hash: u32) -> impl Iterator<Item = u32> + '_ {
        let n = self.points.len();
        let start = if n == 0 { 0 } else { self.start(hash) };
        (0..n).map(move |i| self.points[(start + i) % n].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(ring: &Ring, ids: &[String], key: &str) -> String {
        let i = ring.walk(key_hash(key.as_bytes())).next().unwrap();
        ids[i as usize].clone()
    }

    fn ring_of(ids: &[String]) -> Ring {
        Ring::build(
            ids.iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), 1, i as u32)),
        )
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:2346", i + 1)).collect()
    }

    const KEYS: usize = 100_000;

    #[test]
    fn removing_one_backend_moves_only_its_keys() {
        let all = ids(10);
        let before = ring_of(&all);
        let removed = all[3].clone();
        let rest: Vec<String> = all.iter().filter(|i| **i != removed).cloned().collect();
        let after = ring_of(&rest);
        let mut moved = 0;
        for k in 0..KEYS {
            let key = format!("user-{k}");
            let a = owner(&before, &all, &key);
            let b = owner(&after, &rest, &key);
            if a != removed {
                assert_eq!(a, b, "key {key} moved although its backend stayed");
            } else {
                moved += 1;
            }
        }
        // The removed backend owned roughly a tenth of the keys.
        assert!((5_000..15_000).contains(&moved), "moved {moved}");
    }

    #[test]
    fn adding_a_backend_moves_keys_only_to_it() {
        let ten = ids(10);
        let eleven = ids(11);
        let before = ring_of(&ten);
        let after = ring_of(&eleven);
        let mut gained = 0;
        for k in 0..KEYS {
            let key = format!("user-{k}");
            let a = owner(&before, &ten, &key);
            let b = owner(&after, &eleven, &key);
            if a != b {
                assert_eq!(b, eleven[10], "key {key} moved to an old backend");
                gained += 1;
            }
        }
        assert!((4_000..15_000).contains(&gained), "gained {gained}");
    }

    #[test]
    fn order_of_construction_does_not_matter() {
        let fwd = ids(10);
        let mut rev = fwd.clone();
        rev.reverse();
        let a = ring_of(&fwd);
        let b = ring_of(&rev);
        for k in 0..KEYS {
            let key = format!("user-{k}");
            assert_eq!(owner(&a, &fwd, &key), owner(&b, &rev, &key));
        }
    }

    #[test]
    fn host_port_split_follows_nginx() {
        assert_eq!(split_host_port("10.0.0.1:80"), ("10.0.0.1", "80"));
        assert_eq!(split_host_port("backend-a"), ("backend-a", ""));
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", "80"));
        assert_eq!(split_host_port("unix:/tmp/s"), ("/tmp/s", ""));
    }

    #[test]
    fn weight_adds_points() {
        let r = Ring::build([("a:1", 2, 0), ("b:1", 1, 1)]);
        assert_eq!(r.len(), 3 * POINTS_PER_WEIGHT as usize);
    }
}
