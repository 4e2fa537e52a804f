//! Active health checks. One task per upstream with checks configured probes every backend
//! each `interval` and sends [`Diff::SetHealth`] on a transition: down after `fall` failures in
//! a row, up after `rise` passes in a row, except that a backend that has never passed comes
//! up on its first pass (it starts out unhealthy and takes no traffic until then). A backend
//! that has never passed is logged at warn level, with the last check's error, once it has
//! failed `fall` checks in a row: once, not at every check.
//!
//! The checker follows the snapshot: new backends are picked up, removed ones forgotten, and a
//! backend the data plane ejected (passive health) must pass `rise` checks to come back. Its
//! settings are read from the snapshot each round, so a reload that changes them applies;
//! [`Checkers::ensure`], run at start and after each reload, starts a checker for an upstream
//! that gained checks, and a checker ends when its upstream loses them (or goes).
//!
//! Imports: `config`, `pool`, `net::wire`. Never `proxy` or `admin`.

mod probe;

pub use probe::probe;

use crate::config::{HealthConfig, HealthKind};
use crate::pool::{BackendId, PoolHandle, Verdict};
use std::collections::HashMap;

/// Hysteresis state of one backend.
#[derive(Debug, Default)]
struct Tracker {
    up: bool,
    passed_once: bool,
    ok: u32,
    failed: u32,
}

/// The active checks of an upstream in the current snapshot, if on.
fn checks(pool: &PoolHandle, name: &str) -> Option<HealthConfig> {
    pool.snapshot()
        .upstream(name)?
        .policy
        .health
        .clone()
        .filter(|h| h.kind != HealthKind::None)
}

/// The checker tasks, one per upstream with active checks.
pub struct Checkers {
    pool: PoolHandle,
    running: std::sync::Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl Checkers {
    pub fn new(pool: PoolHandle) -> Self {
        Checkers {
            pool,
            running: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Start a checker for every upstream that has checks and none running (at start, and
    /// after a reload; a checker whose upstream lost its checks has ended by itself).
    pub fn ensure(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|_, task| !task.is_finished());
        let names: Vec<String> = self.pool.snapshot().upstreams.keys().cloned().collect();
        for name in names {
            if running.contains_key(&name) {
                continue;
            }
            if let Some(cfg) = checks(&self.pool, &name) {
                tracing::info!(upstream = %name, kind = ?cfg.kind, interval = ?cfg.interval, "active health checks on");
                let task = tokio::spawn(check_upstream(self.pool.clone(), name.clone()));
                running.insert(name, task);
            }
        }
    }
}

impl Checkers {
    /// End every checker (shutdown) and wait until they are gone.
    pub async fn stop(&self) {
        let running: Vec<_> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.drain().map(|(_, task)| task).collect()
        };
        for task in running {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn check_upstream(pool: PoolHandle, name: String) {
    let mut trackers: HashMap<BackendId, Tracker> = HashMap::new();
    let Some(first) = checks(&pool, &name) else {
        return;
    };
    let mut interval = first.interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The settings as of this round: a reload may have changed or removed them.
        let Some(cfg) = checks(&pool, &name) else {
            tracing::info!(upstream = %name, "active health checks off");
            return;
        };
        if cfg.interval != interval {
            interval = cfg.interval;
            tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
        }
        let (targets, tls): (Vec<_>, _) = match pool.snapshot().upstream(&name) {
            Some(up) => (
                up.backends
                    .iter()
                    .map(|b| (b.id.clone(), b.addr, b.healthy))
                    .collect(),
                up.policy.tls.clone(),
            ),
            None => return,
        };
        let listed: std::collections::HashSet<&BackendId> = targets.iter().map(|t| &t.0).collect();
        trackers.retain(|id, _| listed.contains(id));
        let results = futures_util::future::join_all(
            targets.iter().map(|t| probe(&cfg, tls.as_deref(), t.1)),
        )
        .await;
        for ((id, _, healthy), result) in targets.into_iter().zip(results) {
            let t = trackers.entry(id.clone()).or_insert_with(|| Tracker {
                up: healthy,
                ..Tracker::default()
            });
            if t.up && !healthy {
                // Taken out elsewhere (passive ejection): it must earn its way back.
                *t = Tracker {
                    passed_once: t.passed_once,
                    ..Tracker::default()
                };
            }
            let error = result.as_ref().err().cloned();
            if let Some((healthy, reason)) = t.observe(&cfg, result) {
                pool.report(&name, id, Verdict::Health { healthy, reason });
            } else if let Some(error) = error.filter(|_| t.never_healthy(&cfg)) {
                tracing::warn!(upstream = %name, backend = %id, failed = t.failed, %error,
                    "backend has never passed a health check; it takes no traffic until one passes");
            }
        }
    }
}

impl Tracker {
    /// Whether the result just folded in makes this backend "never healthy": it has not
    /// passed a check yet and has now failed `fall` in a row. True once per such state (the
    /// count goes on past `fall`; a pass ends the state, and a new tracker starts it over),
    /// so the warning is one line, not one per check.
    fn never_healthy(&self, cfg: &HealthConfig) -> bool {
        !self.passed_once && self.failed == cfg.fall.max(1)
    }

    /// Fold in one result; returns a transition to publish.
    fn observe(
        &mut self,
        cfg: &HealthConfig,
        result: Result<(), String>,
    ) -> Option<(bool, String)> {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.failed = 0;
                let first = !self.passed_once;
                self.passed_once = true;
                if !self.up && (first || self.ok >= cfg.rise) {
                    self.up = true;
                    let why = if first {
                        "first check passed".to_string()
                    } else {
                        format!("{} checks passed in a row", self.ok)
                    };
                    return Some((true, why));
                }
            }
            Err(why) => {
                self.failed += 1;
                self.ok = 0;
                if self.up && self.failed >= cfg.fall {
                    self.up = false;
                    return Some((
                        false,
                        format!("{} checks failed in a row, last: {why}", self.failed),
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> HealthConfig {
        HealthConfig {
            kind: HealthKind::Tcp,
            path: "/".into(),
            expect: (200, 399),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }

    #[test]
    fn hysteresis_needs_rise_and_fall_in_a_row() {
        let c = cfg();
        let mut t = Tracker::default();
        // Never passed: the first pass brings it up.
        assert_eq!(t.observe(&c, Ok(())).map(|x| x.0), Some(true));
        // Two failures are not enough; a pass resets the count.
        assert!(t.observe(&c, Err("x".into())).is_none());
        assert!(t.observe(&c, Err("x".into())).is_none());
        assert!(t.observe(&c, Ok(())).is_none());
        assert!(t.observe(&c, Err("x".into())).is_none());
        assert!(t.observe(&c, Err("x".into())).is_none());
        assert_eq!(t.observe(&c, Err("x".into())).map(|x| x.0), Some(false));
        // Back up only after two passes in a row.
        assert!(t.observe(&c, Ok(())).is_none());
        assert!(t.observe(&c, Err("x".into())).is_none());
        assert!(t.observe(&c, Ok(())).is_none());
        assert_eq!(t.observe(&c, Ok(())).map(|x| x.0), Some(true));
    }

    #[test]
    fn a_backend_that_never_passes_is_reported_once() {
        let c = cfg();
        let mut t = Tracker::default();
        let reported = (0..20)
            .filter(|_| t.observe(&c, Err("x".into())).is_none() && t.never_healthy(&c))
            .count();
        assert_eq!(reported, 1);
        // A pass ends it; later failures are transitions of a backend that was up.
        assert_eq!(t.observe(&c, Ok(())).map(|x| x.0), Some(true));
        for _ in 0..5 {
            t.observe(&c, Err("x".into()));
            assert!(!t.never_healthy(&c));
        }
    }

    #[test]
    fn alternating_results_never_flap() {
        let c = cfg();
        let mut t = Tracker {
            up: true,
            passed_once: true,
            ..Tracker::default()
        };
        let flips = (0..1000)
            .filter_map(|i| t.observe(&c, if i % 2 == 0 { Ok(()) } else { Err("x".into()) }))
            .count();
        assert_eq!(flips, 0);
    }
}
