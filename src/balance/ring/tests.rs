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

/// The ring as nginx lays it out: every point, sorted by (hash, id), equal hashes once.
fn reference(members: &[(&str, u32, u32)]) -> Vec<(u32, u32)> {
    let mut points: Vec<(u32, &str, u32)> = members
        .iter()
        .flat_map(|&(id, w, slot)| point_hashes(id, w).map(move |h| (h, id, slot)))
        .collect();
    points.sort_unstable();
    points.dedup_by_key(|p| p.0);
    points.into_iter().map(|(h, _, s)| (h, s)).collect()
}

/// The owner of `hash` in a reference layout.
fn reference_owner(points: &[(u32, u32)], hash: u32) -> u32 {
    let i = points.partition_point(|p| p.0 < hash) % points.len();
    points[i].1
}

#[test]
fn adding_and_removing_one_by_one_matches_a_ring_laid_out_at_once() {
    let names = ids(40);
    let ring = Ring::with_capacity(0);
    let id_of = |s: u32| names[s as usize].as_str();
    let mut members: Vec<(&str, u32, u32)> = Vec::new();
    // Grow through several bucket sizes, with mixed weights, then remove every third.
    let mut ring = ring;
    for (slot, id) in names.iter().enumerate() {
        let w = 1 + (slot as u32 % 4);
        if ring.crowded_with((w * POINTS_PER_WEIGHT) as usize) {
            ring = ring.grown((w * POINTS_PER_WEIGHT) as usize);
        }
        ring.add(slot as u32, id, w, id_of);
        members.push((id, w, slot as u32));
    }
    assert!(
        ring.buckets() > 64,
        "the ring grew: {} buckets",
        ring.buckets()
    );
    for &(id, w, slot) in members.iter().filter(|m| m.2 % 3 == 0) {
        ring.remove(slot, id, w);
    }
    members.retain(|m| m.2 % 3 != 0);
    let want = reference(&members);
    assert_eq!(ring.len(), want.len());
    for k in 0..20_000u32 {
        let h = key_hash(format!("user-{k}").as_bytes());
        assert_eq!(
            ring.walk(h).next(),
            Some(reference_owner(&want, h)),
            "key {k}"
        );
    }
    // A whole turn yields every distinct point once.
    assert_eq!(ring.walk(0).count(), want.len());
    let walked: Vec<u32> = ring.walk(want[5].0).take(10).collect();
    let expect: Vec<u32> = want[5..15].iter().map(|p| p.1).collect();
    assert_eq!(walked, expect);
}

#[test]
fn equal_hashes_go_to_the_id_that_sorts_first_whatever_the_order_of_adding() {
    let (x, y) = ("backend-x", "backend-x:");
    assert_eq!(split_host_port(x), split_host_port(y), "same host and port");
    for order in [[0u32, 1], [1, 0]] {
        let names = [x, y];
        let ring = Ring::with_capacity(0);
        for &s in &order {
            ring.add(s, names[s as usize], 1, |t| names[t as usize]);
        }
        // Every point collides: the walk sees x's only, each once.
        assert_eq!(ring.walk(0).count(), POINTS_PER_WEIGHT as usize);
        assert!(ring.walk(0).all(|s| s == 0), "order {order:?}");
        ring.remove(0, x, 1);
        assert!(ring.walk(0).all(|s| s == 1), "y takes over once x is gone");
    }
}

#[test]
fn an_empty_ring_walks_nowhere() {
    let ring = Ring::default();
    assert_eq!(ring.walk(12345).next(), None);
    ring.add(0, "a:1", 1, |_| "a:1");
    ring.remove(0, "a:1", 1);
    assert!(ring.is_empty());
    assert_eq!(ring.walk(12345).next(), None);
}
