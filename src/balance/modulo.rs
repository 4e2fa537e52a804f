//! nginx's plain `hash KEY` (without `consistent`), as `ngx_http_upstream_hash_module` maps it:
//! the key's CRC-32 picks a point in the servers' total weight, servers laid out in their
//! order, each over as many points as its weight. When that server cannot take the request
//! (down, failed, at `max_conns`, or already tried), the key is hashed again with the try's
//! number written in front of it (`crc32("1" KEY)`, `crc32("2" KEY)`, ...), each hash's bits
//! 16..31 added to the point so far; after 20 such misses, or with fewer than two servers, or
//! an empty key, the pick falls back to round robin.
//!
//! Every primary backend holds its place whatever its state, as nginx's `down` servers keep
//! theirs: a backend going out moves only the keys that were on it.
//!
//! Imports nothing else in tideway.

use crc32fast::Hasher;

/// Most rehashes before round robin takes over (nginx's limit).
pub const MAX_REHASH: u32 = 20;

/// A request's hash key: its CRC-32 and its length in bytes (rehashing needs both).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Key {
    pub hash: u32,
    pub len: u32,
    /// The key came out empty (a missing variable): nginx's `hash`, consistent or not, then
    /// balances round robin. A key known by its hash alone is not empty.
    pub empty: bool,
}

impl Key {
    /// The key of `raw`.
    pub fn of(raw: &[u8]) -> Self {
        Key {
            hash: crc32fast::hash(raw),
            len: raw.len() as u32,
            empty: raw.is_empty(),
        }
    }

    /// A key known by its hash alone (an empty key as far as [`Modulo`] is concerned).
    pub fn hash_only(hash: u32) -> Self {
        Key {
            hash,
            len: 0,
            empty: false,
        }
    }

    /// CRC-32 of the decimal `n` followed by the key, from the key's CRC and length.
    fn rehashed(self, n: u32) -> u32 {
        let mut h = Hasher::new();
        h.update(n.to_string().as_bytes());
        h.combine(&Hasher::new_with_initial_len(
            self.hash,
            u64::from(self.len),
        ));
        h.finalize()
    }
}

/// The primary backends of a plain-`hash` upstream, in server order.
#[derive(Debug, Default)]
pub struct Modulo {
    /// (tag, end of its weight range), ranges laid end to end.
    peers: Vec<(u32, u64)>,
    total: u64,
}

impl Modulo {
    /// Backends as `(tag, weight)` in server order.
    pub fn new(peers: impl IntoIterator<Item = (u32, u32)>) -> Self {
        let mut total = 0u64;
        let peers = peers
            .into_iter()
            .filter(|&(_, w)| w > 0)
            .map(|(tag, w)| {
                total += u64::from(w);
                (tag, total)
            })
            .collect();
        Modulo { peers, total }
    }

    /// The tag `ok` accepts that nginx would pick for `key`; None: round robin decides.
    pub fn pick(&self, key: Key, ok: impl Fn(u32) -> bool) -> Option<u32> {
        if self.peers.len() < 2 || key.len == 0 {
            return None;
        }
        let mut point = 0u64;
        for n in 0..=MAX_REHASH {
            let crc = if n == 0 { key.hash } else { key.rehashed(n) };
            point += u64::from((crc >> 16) & 0x7fff);
            let w = point % self.total;
            let i = self.peers.partition_point(|&(_, end)| end <= w);
            let tag = self.peers[i].0;
            if ok(tag) {
                return Some(tag);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rehash_is_crc_of_the_number_then_the_key() {
        let k = Key::of(b"user-42");
        assert_eq!(k.rehashed(1), crc32fast::hash(b"1user-42"));
        assert_eq!(k.rehashed(17), crc32fast::hash(b"17user-42"));
    }

    #[test]
    fn first_choice_is_the_weighted_point_of_the_key() {
        // Weights 1, 2, 3: points 0 | 1 2 | 3 4 5.
        let m = Modulo::new([(10, 1), (11, 2), (12, 3)]);
        for i in 0..500u32 {
            let raw = i.to_string();
            let k = Key::of(raw.as_bytes());
            let w = u64::from((k.hash >> 16) & 0x7fff) % 6;
            let want = match w {
                0 => 10,
                1 | 2 => 11,
                _ => 12,
            };
            assert_eq!(m.pick(k, |_| true), Some(want), "key {raw}");
        }
    }

    #[test]
    fn a_refused_choice_rehashes_and_gives_up_to_round_robin() {
        let m = Modulo::new([(0, 1), (1, 1)]);
        let k = Key::of(b"abc");
        let first = m.pick(k, |_| true).unwrap();
        let second = m.pick(k, |t| t != first).unwrap();
        assert_ne!(first, second);
        assert_eq!(m.pick(k, |_| false), None);
        assert_eq!(m.pick(Key::hash_only(k.hash), |_| true), None, "empty key");
        assert_eq!(Modulo::new([(0, 1)]).pick(k, |_| true), None, "one server");
    }
}
