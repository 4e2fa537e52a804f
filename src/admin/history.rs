//! The pool's last minutes, kept for the dashboard (`GET /v1/history`): every
//! [`DEFAULT_HISTORY_INTERVAL`] the sampler reads the live counters of every backend and keeps
//! [`DEFAULT_HISTORY_POINTS`] points (5 minutes), so a page opened now draws the last minutes.
//!
//! The series kept are bounded whatever the pool's size (the last counts of each backend, one
//! map entry per backend, are kept too):
//! - per upstream, its totals: connections, requests per second, errors per second;
//! - per backend, only for the [`DEFAULT_HISTORY_BACKENDS`] backends of each upstream with the
//!   most connections (then requests) at each sample, draining ones first, so a drain's
//!   progress is drawn;
//!   a series not among them gets a gap, and one with only gaps left in the window is dropped;
//!   an upstream keeps at most twice that many series (the longest-unpicked go first).
//!
//! A sample visits every backend once (three relaxed loads and a map update each, plus a sort
//! of the upstream's backends, every 5 s); the requests and failures of each backend
//! since the last sample are kept per backend, so an upstream's totals are exact even for
//! backends that have no series. Rates are per second of tokio's monotonic clock; `times` are
//! wall-clock milliseconds, for the page's axis only.

use crate::pool::{BackendId, PoolHandle, Snapshot, State};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the sampler reads the pool.
pub const DEFAULT_HISTORY_INTERVAL: Duration = Duration::from_secs(5);
/// Points kept per series (with the interval: 5 minutes).
pub const DEFAULT_HISTORY_POINTS: usize = 60;
/// Backends of one upstream sampled with a series of their own at each sample.
pub const DEFAULT_HISTORY_BACKENDS: usize = 16;

/// One sample of one series: connections then, and requests and failures since the sample
/// before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Point {
    connections: u64,
    requests: u64,
    errors: u64,
}

/// Points aligned with [`History::times`]; None: not sampled then.
type Series = VecDeque<Option<Point>>;

#[derive(Default)]
struct UpstreamHistory {
    total: Series,
    backends: BTreeMap<BackendId, Series>,
    /// Each backend's requests and failures at the last sample.
    seen: HashMap<(BackendId, usize), (u64, u64)>,
    /// Backends in the upstream at the last sample.
    count: usize,
}

/// The kept samples.
#[derive(Default)]
struct Samples {
    /// When each sample was taken (milliseconds since the epoch), oldest first: the page's
    /// axis only.
    times: VecDeque<u64>,
    /// The same samples on a monotonic clock (milliseconds): rates are per second of this, so
    /// a wall clock stepped by NTP does not bend them.
    mono: VecDeque<u64>,
    upstreams: BTreeMap<String, UpstreamHistory>,
}

/// The pool's recent history, shared by the sampler and the admin API.
pub struct History {
    samples: Mutex<Samples>,
    interval: Duration,
    points: usize,
    per_upstream: usize,
}

impl Default for History {
    fn default() -> Self {
        Self::new(
            DEFAULT_HISTORY_INTERVAL,
            DEFAULT_HISTORY_POINTS,
            DEFAULT_HISTORY_BACKENDS,
        )
    }
}

fn push(s: &mut Series, p: Option<Point>, points: usize) {
    s.push_back(p);
    while s.len() > points {
        s.pop_front();
    }
}

/// A new series, with gaps for the `len` samples before it.
fn gaps(len: usize) -> Series {
    std::iter::repeat_n(None, len).collect()
}

impl History {
    pub fn new(interval: Duration, points: usize, per_upstream: usize) -> Self {
        History {
            samples: Mutex::default(),
            interval,
            points: points.max(2),
            per_upstream,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take one sample of `snap`, at wall-clock time `at_ms` and monotonic time `mono_ms`.
    pub fn sample(&self, snap: &Snapshot, at_ms: u64, mono_ms: u64) {
        let mut s = self.lock();
        let before = s.times.len();
        s.times.push_back(at_ms);
        s.mono.push_back(mono_ms);
        while s.times.len() > self.points {
            s.times.pop_front();
            s.mono.pop_front();
        }
        s.upstreams
            .retain(|name, _| snap.upstreams.contains_key(name));
        for (name, u) in &snap.upstreams {
            let h = s.upstreams.entry(name.clone()).or_default();
            if h.total.is_empty() {
                h.total = gaps(before.min(self.points));
            }
            let mut seen = HashMap::with_capacity(u.backends.len());
            let mut total = Point::default();
            let mut points = Vec::with_capacity(u.backends.len());
            for b in &u.backends {
                let (requests, failures) = (b.live.requests(), b.live.failures());
                // Keyed by the counters' address too: a backend removed and registered again
                // under the same id between samples has new counters, from zero.
                let key = (b.id.clone(), Arc::as_ptr(&b.live) as usize);
                let (r0, f0) = h.seen.get(&key).copied().unwrap_or((0, 0));
                let p = Point {
                    connections: b.live.active(),
                    requests: requests.saturating_sub(r0),
                    errors: failures.saturating_sub(f0),
                };
                seen.insert(key, (requests, failures));
                total.connections += p.connections;
                total.requests += p.requests;
                total.errors += p.errors;
                points.push((b.state == State::Draining, &b.id, p));
            }
            h.seen = seen;
            h.count = u.backends.len();
            push(&mut h.total, Some(total), self.points);
            // The backends drawn this time: draining ones, then the busiest (connections,
            // then requests since the last sample).
            if points.len() > self.per_upstream {
                points.sort_by(|a, b| {
                    (b.0, b.2.connections, b.2.requests)
                        .cmp(&(a.0, a.2.connections, a.2.requests))
                        .then(a.1.cmp(b.1))
                });
                points.truncate(self.per_upstream);
            }
            let len = h.total.len();
            let mut picked: HashMap<&BackendId, Point> =
                points.into_iter().map(|(_, id, p)| (id, p)).collect();
            for (id, series) in h.backends.iter_mut() {
                push(series, picked.remove(id), self.points);
            }
            for (id, p) in picked {
                let mut series = gaps(len - 1);
                series.push_back(Some(p));
                h.backends.insert(id.clone(), series);
            }
            h.backends.retain(|_, s| s.iter().any(Option::is_some));
            // At most twice the picks: those picked longest ago go first.
            while h.backends.len() > 2 * self.per_upstream {
                let last = |s: &Series| s.iter().rposition(Option::is_some);
                let oldest = h
                    .backends
                    .iter()
                    .min_by_key(|(_, s)| last(s))
                    .map(|(id, _)| id.clone());
                match oldest {
                    Some(id) => h.backends.remove(&id),
                    None => break,
                };
            }
        }
    }

    /// The kept history as the API shows it: `times`, and per upstream its totals and its
    /// backends' series, each value aligned with `times` (null: not sampled then). Rates are
    /// per second over the time since the sample before.
    pub fn view(&self) -> Value {
        let s = self.lock();
        let times: Vec<u64> = s.times.iter().copied().collect();
        let mono: Vec<u64> = s.mono.iter().copied().collect();
        let interval_ms = self.interval.as_millis() as u64;
        let secs: Vec<f64> = (0..mono.len())
            .map(|i| {
                let ms = match i {
                    0 => interval_ms,
                    i => mono[i].saturating_sub(mono[i - 1]).max(1),
                };
                ms as f64 / 1000.0
            })
            .collect();
        let series = |points: &Series| {
            let rate = |f: fn(&Point) -> u64| -> Vec<Option<f64>> {
                points
                    .iter()
                    .zip(&secs)
                    .map(|(p, s)| p.map(|p| (f(&p) as f64 / s * 100.0).round() / 100.0))
                    .collect()
            };
            json!({
                "connections": points.iter().map(|p| p.map(|p| p.connections)).collect::<Vec<_>>(),
                "requests_per_second": rate(|p| p.requests),
                "errors_per_second": rate(|p| p.errors),
            })
        };
        let upstreams: Vec<Value> = s
            .upstreams
            .iter()
            .map(|(name, h)| {
                let backends: Vec<Value> = h
                    .backends
                    .iter()
                    .map(|(id, points)| {
                        let mut v = series(points);
                        v["id"] = json!(&**id);
                        v
                    })
                    .collect();
                json!({
                    "name": name,
                    "backends_total": h.count,
                    "total": series(&h.total),
                    "backends": backends,
                })
            })
            .collect();
        json!({
            "interval_ms": interval_ms,
            "points_kept": self.points,
            "backends_per_upstream": self.per_upstream,
            "times": times,
            "upstreams": upstreams,
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sample the pool every interval, from now on (the server owns the task and stops it).
pub async fn sampler(history: Arc<History>, pool: PoolHandle) {
    let mut tick = tokio::time::interval(history.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = tokio::time::Instant::now();
    loop {
        let at = tick.tick().await;
        let mono_ms = at.saturating_duration_since(start).as_millis() as u64;
        history.sample(&pool.snapshot(), now_ms(), mono_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamPolicy;
    use crate::pool::{Backend, Live, Source, Upstream};

    fn pool(backends: usize) -> Snapshot {
        let backends = (0..backends)
            .map(|i| Backend {
                id: format!("b{i:05}").into(),
                addr: ([127, 0, 0, 1], 10000 + i as u16).into(),
                weight: 1,
                effective_weight: 100,
                max_conns: 0,
                state: State::Active,
                healthy: true,
                ejected: false,
                source: Source::Static,
                server: Default::default(),
                live: Arc::new(Live::default()),
                close: Default::default(),
            })
            .collect();
        let u = Upstream::new("u".into(), Arc::new(UpstreamPolicy::default()), backends);
        Snapshot {
            version: 1,
            upstreams: [("u".to_string(), Arc::new(u))].into(),
        }
    }

    #[test]
    fn keeps_a_bounded_window_and_bounded_series() {
        let snap = pool(40);
        let u = snap.upstream("u").unwrap();
        let h = History::new(Duration::from_secs(5), 4, 3);
        h.sample(&snap, 0, 0);
        // The busiest: b00020 (5 connections), b00030 (2), b00007 (1).
        let guards: Vec<_> = [(20, 5), (30, 2), (7, 1)]
            .iter()
            .flat_map(|&(i, n)| std::iter::repeat_n(i, n))
            .map(|i| u.backend(&format!("b{i:05}")).unwrap().live.begin())
            .collect();
        for t in 1..10 {
            h.sample(&snap, 1000 * t, 1000 * t);
        }
        let v = h.view();
        assert_eq!(v["times"], json!([6000, 7000, 8000, 9000]));
        let up = &v["upstreams"][0];
        assert_eq!(up["backends_total"], 40);
        assert_eq!(up["total"]["connections"], json!([8, 8, 8, 8]));
        let ids: Vec<&str> = up["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["b00007", "b00020", "b00030"]);
        assert_eq!(
            up["total"]["requests_per_second"],
            json!([0.0, 0.0, 0.0, 0.0])
        );
        // Requests since the sample before, per second of the time between.
        drop(guards);
        let more: Vec<_> = (0..4)
            .map(|_| u.backend("b00001").unwrap().live.begin())
            .collect();
        drop(more);
        h.sample(&snap, 11000, 11000);
        let v = h.view();
        let up = &v["upstreams"][0];
        assert_eq!(up["total"]["requests_per_second"][3], json!(2.0));
        assert_eq!(up["total"]["connections"][3], json!(0));
        // With no connections anywhere, b00001 is the busiest by its requests: it gets a
        // series; those not drawn this time get a gap.
        let series = |id: &str| {
            up["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["id"] == id)
                .unwrap()
                .clone()
        };
        assert_eq!(
            series("b00001")["requests_per_second"],
            json!([null, null, null, 2.0])
        );
        assert_eq!(series("b00007")["connections"], json!([1, 1, 1, null]));
    }

    #[test]
    fn draining_backends_are_drawn_first() {
        let mut snap = pool(10);
        let u = Arc::get_mut(snap.upstreams.get_mut("u").unwrap()).unwrap();
        let mut all: Vec<Backend> = u.backends.iter().cloned().collect();
        all[9].state = State::Draining;
        *u = Upstream::new("u".into(), u.policy.clone(), all);
        let h = History::new(Duration::from_secs(5), 4, 1);
        h.sample(&snap, 0, 0);
        let v = h.view();
        assert_eq!(v["upstreams"][0]["backends"][0]["id"], "b00009");
    }
}
