//! Rebalancing: after the pool changes, the WebSockets that are no longer where the upstream
//! would place them are closed with 1001, a few a second, so their clients reconnect to the
//! backend that should have them. Without it, a scale-out leaves the new backends idle: a
//! WebSocket never moves by itself.
//!
//! The plan works on each backend's load as placement sees it (`active`: requests in flight
//! and tunnels), less the sessions already closing, and moves sessions one at a time,
//! updating those loads as it goes, so a batch never moves more than the placement needs:
//! - `hash`: a session is misplaced when a new connection with its key would go to another
//!   backend: the ring's first backend that has room (`max_conns`) and, with
//!   `hash_balance_factor`, is under the bounded-load cap, counting the session itself on its
//!   own backend only once. A session whose key the upstream no longer hashes by (a reload
//!   changed it) is left alone;
//! - the other algorithms: a backend over `factor` times its weighted share of the load sheds
//!   its newest sessions down to that share; the sessions closing still count in the total,
//!   since they come back.
//!
//! A session on a draining, disabled or unhealthy backend is never touched (drain has its own
//! deadline, and a disabled backend keeps its connections), nor is one whose new home has just
//! failed a connection (it would only bounce back). Closes wait until what placement depends
//! on (backends, their eligibility, weights, limits) has stayed unchanged for `settle`, so a
//! burst of registrations moves each session once, and then go at `per_second` divided among
//! the fleet's instances, each closing its own sessions.
//!
//! Imports: `pool`, `config`, `metrics`, `discovery::fleet`.

use crate::discovery::fleet::Fleet;
use crate::pool::{PoolHandle, Session, Upstream};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the rebalancer looks at the pool.
pub const TICK: Duration = Duration::from_millis(100);
/// Without a pool change, how often sessions are checked again anyway (load drifts on the
/// algorithms other than `hash`).
pub const RESCAN: Duration = Duration::from_secs(10);

/// The sessions of `up` to close, in order; sessions already closing are left out.
pub fn misplaced(up: &Upstream, sessions: &[(u64, Session)], factor: f64) -> Vec<u64> {
    // Load by slot, as placement sees it, less the sessions already on their way out.
    let mut load: HashMap<usize, i64> = up
        .backends
        .slots()
        .map(|(s, b)| (s as usize, b.live.active() as i64))
        .collect();
    let mut open: Vec<(u64, &Session, usize)> = Vec::new();
    for (k, s) in sessions {
        let Some(i) = up.backends.slot_of(&s.backend).map(|i| i as usize) else {
            continue;
        };
        if s.close.is_cancelled() {
            *load.entry(i).or_default() -= 1;
        } else if up.backends[i].eligible() {
            open.push((*k, s, i));
        }
    }
    let total: i64 = up
        .backends
        .iter()
        .filter(|b| b.eligible())
        .map(|b| b.live.active() as i64)
        .sum();
    if !up.selector.is_hash() {
        return shed(up, open, &load, total, factor);
    }
    let hashed_by = &up.policy.hash_key;
    let mut out = Vec::new();
    for (k, s, i) in open {
        if s.hashed_by.as_ref() != Some(hashed_by) {
            continue;
        }
        // As a new connection would be placed if this session were not there: room
        // by `max_conns` on the others, and this session counted once. A slot this snapshot
        // does not hold (a change in flight) has no room.
        let room = |j: u32| {
            let j = j as usize;
            up.backends.get(j as u32).is_some_and(|b| {
                let m = i64::from(b.max_conns);
                j == i || m == 0 || load.get(&j).copied().unwrap_or(0) < m
            })
        };
        let own = |j: u32| {
            let l = load.get(&(j as usize)).copied().unwrap_or(0);
            (l - i64::from(j as usize == i)).max(0) as u64
        };
        let home = up
            .selector
            .ring_place(s.key, room, own, total.max(0) as u64)
            .map(|h| h as usize);
        if let Some(h) = home.filter(|&h| h != i && !up.backends[h].live.failing()) {
            *load.entry(i).or_default() -= 1;
            *load.entry(h).or_default() += 1;
            out.push(k);
        }
    }
    out
}

/// The newest sessions of each backend whose load is over `factor` times its weighted share.
fn shed(
    up: &Upstream,
    open: Vec<(u64, &Session, usize)>,
    load: &HashMap<usize, i64>,
    total: i64,
    factor: f64,
) -> Vec<u64> {
    let total_weight: f64 = up
        .backends
        .iter()
        .filter(|b| b.eligible())
        .map(|b| f64::from(b.weight))
        .sum();
    if total_weight == 0.0 {
        return Vec::new();
    }
    let mut on: HashMap<usize, Vec<u64>> = HashMap::new();
    for (k, _, i) in open {
        on.entry(i).or_default().push(k);
    }
    let mut out = Vec::new();
    for (i, mut ks) in on {
        let share = total as f64 * f64::from(up.backends[i].weight) / total_weight;
        let cap = (share * factor).ceil() as i64;
        let over = (load.get(&i).copied().unwrap_or(0) - cap).clamp(0, ks.len() as i64) as usize;
        ks.sort_unstable();
        out.extend(ks.split_off(ks.len() - over));
    }
    out.sort_unstable();
    out
}

/// What placement on `up` depends on: its backends, their eligibility, weights and limits, and
/// how it balances. A change of anything else (slow start, counters) does not reset `settle`.
fn fingerprint(up: &Upstream) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    up.policy.balance.hash(&mut h);
    up.policy.hash_key.hash(&mut h);
    up.policy.hash_balance_factor.hash(&mut h);
    for b in &up.backends {
        (&*b.id, b.eligible(), b.weight, b.max_conns).hash(&mut h);
    }
    h.finish()
}

/// Per upstream: what the rebalancer remembers between ticks.
struct Watch {
    /// The upstream's placement fingerprint as last seen.
    seen: u64,
    changed_at: Instant,
    /// Misplaced sessions may remain: look again as soon as the budget allows.
    pending: bool,
    last_scan: Instant,
    /// Closes allowed right now (token bucket).
    budget: f64,
}

/// The rebalancer: runs until dropped (the server owns it and stops it at shutdown).
pub async fn rebalancer(pool: PoolHandle, fleet: Option<Arc<Fleet>>) {
    let mut watches: HashMap<String, Watch> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64();
        last = now;
        let instances = 1 + fleet.as_ref().map_or(0, |f| f.instances().len());
        step(&pool, &mut watches, now, dt, instances);
    }
}

/// One tick: for each rebalanced upstream, refill its budget and close what it allows.
fn step(
    pool: &PoolHandle,
    watches: &mut HashMap<String, Watch>,
    now: Instant,
    dt: f64,
    instances: usize,
) {
    let snap = pool.snapshot();
    let metrics = crate::metrics::global();
    watches.retain(|name, _| {
        let keep = snap
            .upstream(name)
            .is_some_and(|u| u.policy.rebalance.is_some());
        if !keep {
            let _ = metrics.rebalance_misplaced.remove_label_values(&[name]);
            let _ = metrics.rebalance_closed.remove_label_values(&[name]);
        }
        keep
    });
    for (name, up) in &snap.upstreams {
        let Some(cfg) = &up.policy.rebalance else {
            continue;
        };
        let print = fingerprint(up);
        let w = watches.entry(name.clone()).or_insert_with(|| Watch {
            seen: print,
            changed_at: now,
            pending: true,
            last_scan: now,
            budget: 0.0,
        });
        if w.seen != print {
            w.seen = print;
            w.changed_at = now;
            w.pending = true;
        }
        let rate = f64::from(cfg.per_second) / instances as f64;
        w.budget = (w.budget + rate * dt).min((rate * TICK.as_secs_f64()).max(1.0));
        let settled = now.duration_since(w.changed_at) >= cfg.settle;
        let due = w.pending || now.duration_since(w.last_scan) >= RESCAN;
        if !settled || !due || w.budget < 1.0 {
            continue;
        }
        let sessions = pool.sessions().of(name);
        let wrong = misplaced(up, &sessions, cfg.factor);
        let n = (w.budget as usize).min(wrong.len());
        let by_number: HashMap<u64, &Session> = sessions.iter().map(|(k, s)| (*k, s)).collect();
        for k in &wrong[..n] {
            if let Some(s) = by_number.get(k) {
                tracing::debug!(upstream = %name, backend = %s.backend, "rebalance: closing a misplaced session with 1001");
                s.close.cancel();
            }
        }
        w.budget -= n as f64;
        w.pending = wrong.len() > n;
        w.last_scan = now;
        metrics
            .rebalance_misplaced
            .with_label_values(&[name])
            .set((wrong.len() - n) as i64);
        if n > 0 {
            metrics
                .rebalance_closed
                .with_label_values(&[name])
                .inc_by(n as u64);
            tracing::info!(upstream = %name, closed = n, left = wrong.len() - n, "rebalance: moved sessions");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, HashKey, UpstreamPolicy};
    use crate::pool::backend::{ActiveGuard, Backend, Live, Source, State};
    use crate::pool::Sessions;

    fn backend(id: &str, state: State, max_conns: u32) -> Backend {
        Backend {
            id: id.into(),
            addr: ([127, 0, 0, 1], 1000).into(),
            weight: 1,
            effective_weight: 100,
            max_conns,
            state,
            healthy: true,
            ejected: false,
            source: Source::Static,
            server: Default::default(),
            live: Arc::new(Live::default()),
            close: Default::default(),
        }
    }

    fn uid() -> HashKey {
        HashKey::Query("uid".into())
    }

    fn upstream(balance: Balance, factor: u32, ids: &[(&str, State, u32)]) -> Upstream {
        let policy = UpstreamPolicy {
            balance,
            hash_key: uid(),
            hash_balance_factor: factor,
            ..UpstreamPolicy::default()
        };
        Upstream::new(
            "chat".into(),
            Arc::new(policy),
            ids.iter().map(|(id, st, m)| backend(id, *st, *m)).collect(),
        )
    }

    fn active(ids: &[&str]) -> Vec<(&'static str, State, u32)> {
        ids.iter()
            .map(|id| {
                (
                    &*Box::leak(id.to_string().into_boxed_str()),
                    State::Active,
                    0,
                )
            })
            .collect()
    }

    /// Open sessions as tunnels do: registered, and counted on their backend.
    struct Open {
        reg: Arc<Sessions>,
        held: Vec<(crate::pool::SessionGuard, ActiveGuard)>,
    }

    impl Open {
        fn new() -> Self {
            Open {
                reg: Arc::new(Sessions::default()),
                held: Vec::new(),
            }
        }

        fn add(
            &mut self,
            up: &Upstream,
            on: &str,
            key: u32,
            hashed: bool,
        ) -> CancellationTokenAlias {
            let b = up.backend(on).unwrap();
            let name: Arc<str> = "chat".into();
            let (close, g) =
                self.reg
                    .open(&name, on.into(), key, hashed.then(uid), &Default::default());
            self.held.push((g, b.live.begin()));
            close
        }

        fn all(&self) -> Vec<(u64, Session)> {
            self.reg.of("chat")
        }
    }

    type CancellationTokenAlias = tokio_util::sync::CancellationToken;

    fn owner(up: &Upstream, key: u32) -> String {
        up.pick(key, |_| false).unwrap().id.to_string()
    }

    fn key(uid: u32) -> u32 {
        crate::balance::key_hash(uid.to_string().as_bytes())
    }

    #[test]
    fn on_hash_exactly_the_sessions_the_ring_moved_are_misplaced() {
        let two = upstream(Balance::Hash, 0, &active(&["a", "b"]));
        let four = upstream(Balance::Hash, 0, &active(&["a", "b", "c", "d"]));
        let mut open = Open::new();
        let mut expect = Vec::new();
        for u in 0..400u32 {
            let was = owner(&two, key(u));
            open.add(&two, &was, key(u), true);
            if owner(&four, key(u)) != was {
                expect.push(u as u64);
            }
        }
        assert_eq!(misplaced(&two, &open.all(), 1.25), Vec::<u64>::new());
        // The live counters are shared by both views, as snapshots share them.
        let four = Upstream::new(
            "chat".into(),
            four.policy.clone(),
            ["a", "b", "c", "d"]
                .iter()
                .map(|id| match two.backend(id) {
                    Some(b) => b.clone(),
                    None => backend(id, State::Active, 0),
                })
                .collect(),
        );
        let got = misplaced(&four, &open.all(), 1.25);
        assert_eq!(got, expect, "exactly the keys the ring moved");
        assert!(got.len() > 100, "about half move to the new backends");
    }

    #[test]
    fn bounded_load_moves_only_what_the_cap_needs() {
        // Factor 125 over 2 backends: 5 sessions whose keys start on a.
        let up = upstream(Balance::Hash, 125, &active(&["a", "b"]));
        let ring_a: Vec<u32> = (0..1000u32)
            .map(key)
            .filter(|&k| up.selector.ring_walk(k).next() == Some(0))
            .take(5)
            .collect();
        let mut open = Open::new();
        for &k in &ring_a {
            open.add(&up, "a", k, true);
        }
        // Total 5, cap ceil(5 * 1.25 / 2) = 4: one session moves, not all five.
        assert_eq!(misplaced(&up, &open.all(), 1.25).len(), 1);
    }

    #[test]
    fn max_conns_moves_only_into_free_slots() {
        let up = upstream(
            Balance::Hash,
            0,
            &[("a", State::Active, 10), ("b", State::Active, 0)],
        );
        // a holds 9 requests; 10 sessions whose home is a sit on b.
        let held: Vec<ActiveGuard> = (0..9).map(|_| up.backends[0].live.begin()).collect();
        let keys: Vec<u32> = (0..5000u32)
            .map(key)
            .filter(|&k| up.selector.ring_walk(k).next() == Some(0))
            .take(10)
            .collect();
        let mut open = Open::new();
        for &k in &keys {
            open.add(&up, "b", k, true);
        }
        assert_eq!(misplaced(&up, &open.all(), 1.25).len(), 1, "one free slot");
        drop(held);
    }

    #[test]
    fn sessions_left_alone_draining_closing_rehashed_or_bound_for_a_failing_home() {
        let up = upstream(Balance::Hash, 0, &active(&["a", "b"]));
        let mut open = Open::new();
        let on_b: Vec<u32> = (0..1000u32)
            .map(key)
            .filter(|&k| owner(&up, k) == "a")
            .take(3)
            .collect();
        // Opened before a reload changed the key: not judged by the new one.
        open.add(&up, "b", on_b[0], false);
        // Already closing.
        open.add(&up, "b", on_b[1], true).cancel();
        assert!(misplaced(&up, &open.all(), 1.25).is_empty());
        // A real candidate, until its home fails a connection.
        open.add(&up, "b", on_b[2], true);
        assert_eq!(misplaced(&up, &open.all(), 1.25).len(), 1);
        up.backends[0].live.record_failure();
        assert!(misplaced(&up, &open.all(), 1.25).is_empty());
        // On a draining backend: drain's business.
        let draining = upstream(
            Balance::Hash,
            0,
            &[("a", State::Active, 0), ("b", State::Draining, 0)],
        );
        let mut open = Open::new();
        open.add(&draining, "b", 1, true);
        assert!(misplaced(&draining, &open.all(), 1.25).is_empty());
    }

    #[test]
    fn other_algorithms_shed_the_newest_above_the_factor_of_the_load() {
        let up = upstream(Balance::LeastConn, 0, &active(&["a", "b", "c", "d"]));
        let mut open = Open::new();
        for i in 0..100 {
            open.add(&up, if i % 2 == 0 { "a" } else { "b" }, 0, false);
        }
        // 100 over 4 backends: a share of 25, capped at 32 with factor 1.25.
        let got = misplaced(&up, &open.all(), 1.25);
        assert_eq!(got.len(), 2 * (50 - 32));
        let newest_a: Vec<u64> = open
            .all()
            .iter()
            .filter(|(_, s)| &*s.backend == "a")
            .map(|(n, _)| *n)
            .skip(32)
            .collect();
        assert!(newest_a.iter().all(|n| got.contains(n)));
        // Once those close, they still count (they come back): nothing more to shed.
        let all = open.all();
        for (n, s) in &all {
            if got.contains(n) {
                s.close.cancel();
            }
        }
        assert!(misplaced(&up, &open.all(), 1.25).is_empty());
    }

    #[test]
    fn load_that_is_not_sessions_does_not_make_sessions_churn() {
        // b carries 100 requests in flight; a the 100 WebSockets least_conn put there.
        let up = upstream(Balance::LeastConn, 0, &active(&["a", "b"]));
        let held: Vec<ActiveGuard> = (0..100).map(|_| up.backends[1].live.begin()).collect();
        let mut open = Open::new();
        for _ in 0..100 {
            open.add(&up, "a", 0, false);
        }
        assert!(misplaced(&up, &open.all(), 1.25).is_empty());
        drop(held);
    }
}
