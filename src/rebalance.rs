//! Rebalancing: after the pool changes, the WebSockets that are no longer where the upstream
//! would place them are closed with 1001, a few a second, so their clients reconnect to the
//! backend that should have them. Without it, a scale-out leaves the new backends idle: a
//! WebSocket never moves by itself.
//!
//! Misplaced means:
//! - `hash`: a new connection with the session's key would go to another backend (the ring's
//!   pick, with bounded load and `max_conns` as a new connection sees them, not counting the
//!   session itself);
//! - the other algorithms: the session's backend holds more than `factor` times its weighted
//!   share of the upstream's sessions; the newest sessions above that share go.
//!
//! A session on a draining, disabled or unhealthy backend is never touched (drain has its own
//! deadline, and a disabled backend keeps its connections), and a session placed right is
//! never closed. Closes wait until the pool has stayed unchanged for `settle`, so a burst of
//! registrations moves each session once, and then go at `per_second` divided among the
//! fleet's instances, each closing its own sessions.
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

/// The sessions of `up` that are misplaced, in the order to close them. Sessions already
/// closing are left out.
pub fn misplaced(up: &Upstream, sessions: &[(u64, Session)], factor: f64) -> Vec<u64> {
    let index: HashMap<&str, usize> = up
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| (&*b.id, i))
        .collect();
    // Sessions still open, on a backend that takes traffic, with that backend's index.
    let placed: Vec<(u64, &Session, usize)> = sessions
        .iter()
        .filter(|(_, s)| !s.close.is_cancelled())
        .filter_map(|(n, s)| {
            let i = *index.get(&*s.backend)?;
            up.backends[i].eligible().then_some((*n, s, i))
        })
        .collect();
    if up.policy.balance == crate::config::Balance::Hash {
        return placed
            .into_iter()
            .filter(|(_, s, i)| {
                up.selector
                    .home(&up.backends, s.key, *i)
                    .is_some_and(|home| home != *i)
            })
            .map(|(n, _, _)| n)
            .collect();
    }
    shed(up, placed, factor)
}

/// The newest sessions above `factor` times each backend's weighted share.
fn shed(up: &Upstream, placed: Vec<(u64, &Session, usize)>, factor: f64) -> Vec<u64> {
    let mut on: HashMap<usize, Vec<u64>> = HashMap::new();
    for (n, _, i) in &placed {
        on.entry(*i).or_default().push(*n);
    }
    let total_weight: f64 = up
        .backends
        .iter()
        .filter(|b| b.eligible())
        .map(|b| f64::from(b.weight))
        .sum();
    if total_weight == 0.0 {
        return Vec::new();
    }
    let total = placed.len() as f64;
    let mut out = Vec::new();
    for (i, mut ns) in on {
        let share = total * f64::from(up.backends[i].weight) / total_weight;
        let cap = (share * factor).ceil() as usize;
        if ns.len() > cap {
            ns.sort_unstable();
            out.extend(ns.drain(cap..));
        }
    }
    out.sort_unstable();
    out
}

/// Per upstream: what the rebalancer remembers between ticks.
struct Watch {
    /// The upstream as last seen; a different one means the pool changed.
    seen: Arc<Upstream>,
    changed_at: Instant,
    /// Misplaced sessions may remain: look again as soon as the budget allows.
    pending: bool,
    last_scan: Instant,
    /// Closes allowed right now (token bucket).
    budget: f64,
}

/// Run the rebalancer for the life of the process.
pub fn spawn(pool: PoolHandle, fleet: Option<Arc<Fleet>>) {
    tokio::spawn(async move {
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
    });
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
        let w = watches.entry(name.clone()).or_insert_with(|| Watch {
            seen: up.clone(),
            changed_at: now,
            pending: true,
            last_scan: now,
            budget: 0.0,
        });
        if !Arc::ptr_eq(&w.seen, up) {
            w.seen = up.clone();
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
    use crate::pool::backend::{Backend, Live, Source, State};
    use crate::pool::Sessions;

    fn backend(id: &str, state: State) -> Backend {
        Backend {
            id: id.into(),
            addr: ([127, 0, 0, 1], 1000).into(),
            weight: 1,
            effective_weight: 100,
            max_conns: 0,
            state,
            healthy: true,
            source: Source::Static,
            live: Arc::new(Live::default()),
            close: Default::default(),
        }
    }

    fn upstream(balance: Balance, ids: &[(&str, State)]) -> Upstream {
        let policy = UpstreamPolicy {
            balance,
            hash_key: HashKey::Query("uid".into()),
            ..UpstreamPolicy::default()
        };
        Upstream::new(
            "chat".into(),
            Arc::new(policy),
            ids.iter().map(|(id, st)| backend(id, *st)).collect(),
        )
    }

    fn owner(up: &Upstream, key: u32) -> String {
        up.pick(key, |_| false).unwrap().id.to_string()
    }

    #[test]
    fn on_hash_only_sessions_the_ring_moved_are_misplaced() {
        let two = upstream(Balance::Hash, &[("a", State::Active), ("b", State::Active)]);
        let four = upstream(
            Balance::Hash,
            &[
                ("a", State::Active),
                ("b", State::Active),
                ("c", State::Active),
                ("d", State::Active),
            ],
        );
        let reg = Arc::new(Sessions::default());
        let name: Arc<str> = "chat".into();
        let mut guards = Vec::new();
        let mut expect = Vec::new();
        for uid in 0..400u32 {
            let key = crate::balance::key_hash(uid.to_string().as_bytes());
            let was = owner(&two, key);
            let (_, g) = reg.open(&name, was.as_str().into(), key, &Default::default());
            guards.push(g);
            if owner(&four, key) != was {
                expect.push(uid as u64);
            }
        }
        assert_eq!(misplaced(&two, &reg.of("chat"), 1.25), Vec::<u64>::new());
        let got = misplaced(&four, &reg.of("chat"), 1.25);
        assert_eq!(got, expect, "exactly the keys the ring moved");
        assert!(got.len() > 100, "about half move to the new backends");
    }

    #[test]
    fn sessions_on_draining_or_closing_backends_are_left_alone() {
        let up = upstream(
            Balance::Hash,
            &[("a", State::Active), ("gone", State::Draining)],
        );
        let reg = Arc::new(Sessions::default());
        let name: Arc<str> = "chat".into();
        let (_, _g1) = reg.open(&name, "gone".into(), 1, &Default::default());
        let (close, _g2) = reg.open(&name, "nowhere".into(), 2, &Default::default());
        close.cancel();
        assert!(misplaced(&up, &reg.of("chat"), 1.25).is_empty());
    }

    #[test]
    fn other_algorithms_shed_the_newest_above_the_factor() {
        let up = upstream(
            Balance::LeastConn,
            &[
                ("a", State::Active),
                ("b", State::Active),
                ("c", State::Active),
                ("d", State::Active),
            ],
        );
        let reg = Arc::new(Sessions::default());
        let name: Arc<str> = "chat".into();
        let mut guards = Vec::new();
        for i in 0..100 {
            let b = if i % 2 == 0 { "a" } else { "b" };
            guards.push(reg.open(&name, b.into(), 0, &Default::default()).1);
        }
        // 100 sessions over 4 backends: a share of 25, capped at 32 with factor 1.25.
        let got = misplaced(&up, &reg.of("chat"), 1.25);
        assert_eq!(got.len(), 2 * (50 - 32));
        let all = reg.of("chat");
        let newest_a: Vec<u64> = all
            .iter()
            .filter(|(_, s)| &*s.backend == "a")
            .map(|(n, _)| *n)
            .skip(32)
            .collect();
        assert!(newest_a.iter().all(|n| got.contains(n)));
        // Within the factor: nothing moves.
        let even: Vec<(u64, Session)> = all
            .into_iter()
            .enumerate()
            .map(|(i, (n, mut s))| {
                s.backend = ["a", "b", "c", "d"][i % 4].into();
                (n, s)
            })
            .collect();
        assert!(misplaced(&up, &even, 1.25).is_empty());
    }
}
