//! Selection ([`crate::balance`]) over the pool's own backends and upstreams.

use crate::balance::*;
use crate::config::{Balance, UpstreamPolicy};
use crate::pool::backend::{Backend, Live, Source, State};
use std::sync::Arc;

fn backends(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Backend {
            id: format!("b{i}").into(),
            addr: ([127, 0, 0, 1], 1000 + i as u16).into(),
            weight: w,
            effective_weight: w * 100,
            max_conns: 0,
            state: State::Active,
            healthy: true,
            ejected: false,
            source: Source::Static,
            server: Default::default(),
            live: Arc::new(Live::default()),
            close: Default::default(),
        })
        .collect()
}

fn policy(balance: Balance) -> UpstreamPolicy {
    UpstreamPolicy {
        balance,
        ..UpstreamPolicy::default()
    }
}

#[test]
fn round_robin_follows_weights_exactly_per_period() {
    let bs = backends(&[1, 2, 3]);
    let s = Selector::build(&policy(Balance::RoundRobin), &bs);
    let mut counts = [0; 3];
    for _ in 0..600 {
        counts[s.pick(&bs, 0, |_| false).unwrap() as usize] += 1;
    }
    assert_eq!(counts, [100, 200, 300]);
}

#[test]
fn ineligible_backends_are_never_picked() {
    let mut bs = backends(&[1, 1, 1, 1]);
    bs[0].state = State::Draining;
    bs[1].state = State::Disabled;
    bs[2].healthy = false;
    for balance in [
        Balance::RoundRobin,
        Balance::LeastConn,
        Balance::P2c,
        Balance::Hash,
    ] {
        let s = Selector::build(&policy(balance), &bs);
        for k in 0..200u32 {
            assert_eq!(
                s.pick(&bs, k.wrapping_mul(2_654_435_761), |_| false),
                Some(3),
                "{balance}"
            );
        }
    }
}

#[test]
fn exclude_skips_tried_backends_and_runs_out() {
    let bs = backends(&[1, 1]);
    for balance in [
        Balance::RoundRobin,
        Balance::LeastConn,
        Balance::P2c,
        Balance::Hash,
    ] {
        let s = Selector::build(&policy(balance), &bs);
        assert_eq!(s.pick(&bs, 7, |b| &*b.id == "b0"), Some(1), "{balance}");
        assert_eq!(s.pick(&bs, 7, |_| true), None, "{balance}");
    }
}

#[test]
fn least_conn_prefers_the_least_loaded_per_weight() {
    let bs = backends(&[1, 1, 2]);
    let _g: Vec<_> = (0..3).map(|_| bs[0].live.begin()).collect();
    let _h: Vec<_> = (0..2).map(|_| bs[2].live.begin()).collect();
    let s = Selector::build(&policy(Balance::LeastConn), &bs);
    assert_eq!(s.pick(&bs, 0, |_| false), Some(1));
}

#[test]
fn p2c_never_picks_the_busiest_of_two() {
    let bs = backends(&[1, 1]);
    let _g: Vec<_> = (0..5).map(|_| bs[0].live.begin()).collect();
    let s = Selector::build(&policy(Balance::P2c), &bs);
    for _ in 0..100 {
        assert_eq!(s.pick(&bs, 0, |_| false), Some(1));
    }
}

#[test]
fn bounded_load_moves_keys_off_an_overloaded_owner() {
    let bs = backends(&[1, 1, 1]);
    let mut p = policy(Balance::Hash);
    let s0 = Selector::build(&p, &bs);
    let key = key_hash(b"sticky-user");
    let owner = s0.pick(&bs, key, |_| false).unwrap();
    let _g: Vec<_> = (0..10).map(|_| bs[owner as usize].live.begin()).collect();
    // Without a bound the owner keeps the key; with 150% it must move.
    assert_eq!(s0.pick(&bs, key, |_| false), Some(owner));
    p.hash_balance_factor = 150;
    let s = Selector::build(&p, &bs);
    assert_ne!(s.pick(&bs, key, |_| false), Some(owner));
}

#[test]
fn backups_come_after_primaries_and_before_panic_routing() {
    use crate::pool::Upstream;
    for balance in [Balance::RoundRobin, Balance::LeastConn, Balance::P2c] {
        let mut bs = backends(&[1, 1, 1]);
        bs[2].server.backup = true;
        let up = |bs: Vec<Backend>| Upstream::new("u".into(), Arc::new(policy(balance)), bs);
        let all = up(bs.clone());
        for _ in 0..20 {
            let b = all.pick(0, |_| false).unwrap();
            assert_ne!(
                &*b.id, "b2",
                "{balance}: a backup while primaries can take it"
            );
        }
        // Every primary tried: the backup.
        let id = |b: Option<&Backend>| b.map(|b| b.id.to_string());
        let b = all.pick(0, |b| !b.server.backup);
        assert_eq!(id(b), Some("b2".into()), "{balance}");
        // Primaries out by passive health: the backup, not panic routing.
        for b in &mut bs[..2] {
            (b.healthy, b.ejected) = (false, true);
        }
        assert_eq!(id(up(bs.clone()).pick(0, |_| false)), Some("b2".into()));
        // The backup out by an active check too: panic routing among the primaries.
        bs[2].healthy = false;
        let last = up(bs);
        let panic = last.pick(0, |_| false).unwrap();
        assert!(panic.id.as_ref() != "b2" && panic.ejected, "{balance}");
    }
}

#[test]
fn plain_hash_keeps_down_servers_in_place() {
    let mut p = policy(Balance::Hash);
    p.hash_consistent = false;
    let mut bs = backends(&[1, 2, 3]);
    let up = crate::pool::Upstream::new("u".into(), Arc::new(p.clone()), bs.clone());
    let keys: Vec<Key> = (0..300)
        .map(|i| Key::of(format!("k{i}").as_bytes()))
        .collect();
    let before: Vec<_> = keys
        .iter()
        .map(|&k| up.pick_key(k, |_| false).unwrap().id.clone())
        .collect();
    bs[1].state = State::Disabled;
    let up = crate::pool::Upstream::new("u".into(), Arc::new(p), bs);
    for (k, was) in keys.iter().zip(&before) {
        let now = up.pick_key(*k, |_| false).unwrap().id.clone();
        if &**was != "b1" {
            assert_eq!(&now, was, "only keys of the down server move");
        } else {
            assert_ne!(&*now, "b1");
        }
    }
}

/// nginx's `hash KEY consistent` balances a request whose key came out empty round robin
/// (nginx-tests upstream_hash.t "empty key - consistent"); a key known by its hash alone, and
/// any non-empty key, stays on its ring place.
#[test]
fn a_consistent_hash_balances_an_empty_key_round_robin() {
    let bs = backends(&[1, 1, 1]);
    let s = Selector::build(&policy(Balance::Hash), &bs);
    let mut counts = [0; 3];
    for _ in 0..300 {
        counts[s.pick_key(&bs, Key::of(b""), |_| false).unwrap() as usize] += 1;
    }
    assert_eq!(counts, [100, 100, 100]);
    let one = s.pick_key(&bs, Key::of(b"uid-7"), |_| false);
    let by_hash = s.pick(&bs, Key::of(b"").hash, |_| false);
    for _ in 0..20 {
        assert_eq!(s.pick_key(&bs, Key::of(b"uid-7"), |_| false), one);
        assert_eq!(s.pick(&bs, Key::of(b"").hash, |_| false), by_hash);
    }
}
