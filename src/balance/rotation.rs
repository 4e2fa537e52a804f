//! Weighted round robin that costs the same to set up at 10,000 backends as at 10.
//!
//! Backends of equal weight form a group, and a group hands its turns to its members in
//! rotation. Between groups, turns go by earliest deadline: a group of weight W (member weight
//! times members) has its k-th turn due at (k - 1/2) / W, and the turn due first is taken (the
//! heavier group on a tie). So every backend gets exactly its weight's share of each period (after
//! total-weight picks, every group has had exactly its weight's turns), spread evenly like
//! nginx's smooth weighted round robin, though not in nginx's exact order. A pick costs
//! O(log groups) under a short lock (none with one group), so many distinct weights do not
//! make picks slow.
//!
//! Setting up is one pass over the groups (no period is unrolled: that was O(total weight x
//! backends)). Weights part way through slow start are grouped at two significant digits, so
//! a ramping fleet does not split into one group per backend.

use super::chunked::Chunked;
use super::WEIGHT_SCALE;
use std::cmp::Ordering as Order;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Tries before a pick that keeps meeting rejected backends scans all of them.
const TRIES: usize = 8;

/// Backends of one weight.
#[derive(Debug)]
pub struct Group {
    /// Member weight times members.
    weight: i64,
    members: Chunked<u32>,
    cursor: Arc<AtomicUsize>,
}

impl Group {
    /// A group of `members` at `weight` each, handing out turns from `cursor`.
    pub fn new(weight: u32, members: Chunked<u32>, cursor: Arc<AtomicUsize>) -> Self {
        Group {
            weight: i64::from(weight) * members.len() as i64,
            members,
            cursor,
        }
    }
}

/// A group's next turn: its `k`-th, due at `(k - 1/2) / w` (the middle of its k-th share of
/// the period, which spreads turns more evenly than the end of it).
#[derive(Debug, PartialEq, Eq)]
struct Turn {
    k: u64,
    w: u64,
    group: usize,
}

impl Ord for Turn {
    /// The turn due first is the greatest (the heap pops it); ties go to the lower group
    /// index, which is the heavier group.
    fn cmp(&self, other: &Self) -> Order {
        let (a, b) = (
            u128::from(2 * self.k - 1) * u128::from(other.w),
            u128::from(2 * other.k - 1) * u128::from(self.w),
        );
        b.cmp(&a).then(other.group.cmp(&self.group))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

/// Round-robin state for one snapshot of an upstream.
#[derive(Debug, Default)]
pub struct Rotation {
    groups: Vec<Group>,
    /// Each group's next turn.
    turns: Mutex<BinaryHeap<Turn>>,
    members: usize,
}

/// The weight a member is grouped under: full weights as they are, ramping ones at two
/// significant digits.
pub fn group_weight(w: u32) -> u32 {
    if w.is_multiple_of(WEIGHT_SCALE) || w < 100 {
        return w;
    }
    let mut scale = 1;
    while w / scale >= 100 {
        scale *= 10;
    }
    (w + scale / 2) / scale * scale
}

impl Rotation {
    /// A rotation over `groups` (non-empty ones, heaviest first).
    pub fn new(groups: Vec<Group>) -> Self {
        let groups: Vec<Group> = groups
            .into_iter()
            .filter(|g| !g.members.is_empty())
            .collect();
        let members = groups.iter().map(|g| g.members.len()).sum();
        let turns = groups
            .iter()
            .enumerate()
            .map(|(group, g)| Turn {
                k: 1,
                w: g.weight.max(1) as u64,
                group,
            })
            .collect();
        Rotation {
            turns: Mutex::new(turns),
            groups,
            members,
        }
    }

    /// The group whose turn it is.
    fn next_group(&self) -> &Group {
        if self.groups.len() == 1 {
            return &self.groups[0];
        }
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let mut turn = turns.peek_mut().expect("one turn per group");
        let group = turn.group;
        turn.k += 1;
        drop(turn);
        &self.groups[group]
    }

    /// The next member `ok` accepts.
    pub fn pick(&self, ok: &impl Fn(u32) -> bool) -> Option<u32> {
        if self.members == 0 {
            return None;
        }
        for _ in 0..TRIES.min(self.members) {
            let g = self.next_group();
            let i = g.members[g.cursor.fetch_add(1, Ordering::Relaxed) % g.members.len()];
            if ok(i) {
                return Some(i);
            }
        }
        self.groups
            .iter()
            .flat_map(|g| g.members.iter().copied())
            .find(|&i| ok(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::membership::Membership;

    /// A rotation over `(slot, weight)` members, as a snapshot gets it.
    fn rotation(members: impl IntoIterator<Item = (u32, u32)>) -> Rotation {
        let mut m = Membership::default();
        for (s, w) in members {
            m.set(s, Some(w));
        }
        m.rotation()
    }

    fn sequence(r: &Rotation, n: usize) -> Vec<u32> {
        (0..n).map(|_| r.pick(&|_| true).unwrap()).collect()
    }

    #[test]
    fn turns_are_spread_like_smooth_weighted_round_robin() {
        // Weights a=5, b=1, c=1: b and c form one group of weight 2. Turns fall due at
        // (k - 1/2)/5 = .1 .3 .5 .7 .9 and (k - 1/2)/2 = .25 .75: a g a a a g a, with b and c
        // taking the group's turns (nginx: a a b a c a a).
        let r = rotation([(0, 500), (1, 100), (2, 100)]);
        assert_eq!(sequence(&r, 7), vec![0, 1, 0, 0, 0, 2, 0]);
        // Distinct weights: no member waits much longer than its fair gap between turns.
        let weights = [700u32, 500, 300, 200, 100];
        let total: u32 = weights.iter().sum::<u32>() / 100;
        let r = rotation(weights.iter().enumerate().map(|(i, &w)| (i as u32, w)));
        let seq = sequence(&r, 10 * total as usize);
        for (i, w) in weights.iter().enumerate() {
            let at: Vec<usize> = (0..seq.len()).filter(|&k| seq[k] == i as u32).collect();
            let fair = total.div_ceil(w / 100) as usize;
            let worst = at.windows(2).map(|p| p[1] - p[0]).max().unwrap();
            assert!(worst <= fair + 1, "member {i}: gap {worst}, fair {fair}");
        }
    }

    #[test]
    fn many_groups_cost_a_heap_step_not_a_scan() {
        // 1,000 distinct weights: a pick still takes one turn off a heap.
        let r = rotation((0..1000).map(|i| (i, 100 * (i + 1))));
        let period: u32 = (1..=1000).sum();
        let mut counts = vec![0u32; 1000];
        for _ in 0..period {
            counts[r.pick(&|_| true).unwrap() as usize] += 1;
        }
        assert!(counts.iter().enumerate().all(|(i, &c)| c == i as u32 + 1));
    }

    #[test]
    fn every_member_gets_its_share_of_each_period() {
        let weights: Vec<(u32, u32)> = (0..30).map(|i| (i, 100 * (1 + i % 3))).collect();
        let r = rotation(weights.clone());
        let period: u32 = weights.iter().map(|w| w.1 / 100).sum();
        let mut counts = [0u32; 30];
        for _ in 0..period * 4 {
            counts[r.pick(&|_| true).unwrap() as usize] += 1;
        }
        for (i, w) in weights {
            assert_eq!(counts[i as usize], 4 * w / 100, "member {i}");
        }
    }

    #[test]
    fn rejected_members_are_skipped_and_zero_weight_never_picked() {
        let r = rotation([(0, 100), (1, 0), (2, 100), (3, 300)]);
        for _ in 0..50 {
            let i = r.pick(&|i| i != 3).unwrap();
            assert!(i == 0 || i == 2, "{i}");
        }
        assert_eq!(r.pick(&|_| false), None);
        assert_eq!(rotation([]).pick(&|_| true), None);
    }

    #[test]
    fn ramping_weights_group_at_two_significant_digits() {
        assert_eq!(group_weight(300), 300);
        assert_eq!(group_weight(137), 140);
        assert_eq!(group_weight(1234), 1200);
        assert_eq!(group_weight(55), 55);
        let r = rotation((0..100).map(|i| (i, 130 + i % 7)));
        assert!(r.groups.len() <= 2, "{} groups", r.groups.len());
    }
}
