//! The autoscale hook: acts on the recommended backend count without Kubernetes. For each
//! upstream with `[upstream.X.autoscale]`, the count (`GET /v1/upstreams/X/scale`, fleet-wide
//! with etcd) is read every `interval`; when it moves, a command runs (`exec`, through `sh -c`)
//! or a webhook gets a JSON POST, so a Supervisor or systemd setup can add or remove workers.
//!
//! - **Reference**: at start, the backends in place (active ones in the pool); the hook fires when
//!   the recommendation leaves it, and a successful run makes the new count the reference. A
//!   failed run leaves the reference, so the change is tried again after the cooldown.
//! - **Hysteresis**: scaling out follows `ceil(active / target)` at once; scaling in waits until
//!   the load fits the smaller count with a margin, `ceil(active / (target * (1 - h))))`, so a
//!   load hovering at a boundary does not flap.
//! - **Cooldown**: at least `cooldown` between two runs; changes meanwhile are folded into the
//!   next run, which carries the count as it is then.
//! - **Start**: the cooldown also runs from start, since connections are still coming back.
//! - **Fleet**: every instance computes the same fleet-wide count, and only the instance with
//!   the smallest name among the live ones runs the hook (without etcd, the only instance);
//!   the others take each count as in place, so one taking over starts from it. An instance
//!   runs the hook only after leading for two rounds of fleet reports in a row.
//!
//! The command runs in a clean environment: `PATH` and `HOME` (when tideway has them), the
//! variables `env` lists (never a token: the config refuses them, and they are skipped here
//! too), then `TIDEWAY_INSTANCE`, `TIDEWAY_UPSTREAM`, `TIDEWAY_BACKENDS` (the new count),
//! `TIDEWAY_PREVIOUS_BACKENDS`, `TIDEWAY_ACTIVE_CONNECTIONS` and `TIDEWAY_TARGET_PER_BACKEND`,
//! which win over a listed variable of the same name. The webhook gets the same counts as
//! JSON. Output and exit status are logged; runs are counted by outcome.
//!
//! Imports: `config`, `pool`, `discovery::fleet`, `metrics`, and the scale signal ([`super::signal`]).

use super::signal::ScaleView;
use crate::config::{AutoscaleConfig, ScaleConfig, ScaleHook, SECRET_ENV};
use crate::discovery::fleet::Fleet;
use crate::pool::PoolHandle;
use crate::pool::State;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the hook task wakes to see which upstream is due.
const TICK: Duration = Duration::from_millis(100);
/// Output kept in the log, per stream.
const MAX_OUTPUT: usize = 2048;

/// The count to scale to, if any: out as soon as `ceil(active / target)` exceeds `current`,
/// in once the load fits a smaller count with the `hysteresis` margin; clamped to the scale
/// section's min and max.
pub fn decide(active: u64, scale: &ScaleConfig, hysteresis: f64, current: usize) -> Option<usize> {
    let clamp = |n: u64| (n as usize).clamp(scale.min as usize, scale.max as usize);
    let target = f64::from(scale.target_per_backend);
    let out = clamp(active.div_ceil(u64::from(scale.target_per_backend)));
    if out > current {
        return Some(out);
    }
    let fits = clamp((active as f64 / (target * (1.0 - hysteresis))).ceil() as u64);
    (fits < current).then_some(fits)
}

/// What one run of the hook is told.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Change {
    /// The instance running the hook (its fleet name, or "local" without etcd).
    pub instance: String,
    pub upstream: String,
    pub backends: usize,
    pub previous_backends: usize,
    pub active_connections: u64,
    pub target_per_backend: u32,
}

/// Per upstream: the count in place and when the hook last ran.
#[derive(Default)]
struct Track {
    reference: Option<usize>,
    last_run: Option<Instant>,
    next_check: Option<Instant>,
    /// A run is under way; its outcome sets `reference`.
    running: Arc<AtomicBool>,
    /// Set by a run that succeeded, taken at the next check.
    applied: Arc<Mutex<Option<usize>>>,
    /// Since when this instance has led the fleet without a break.
    leader_since: Option<Instant>,
}

/// How long an instance must have led, in every view it read, before it runs the hook: two
/// rounds of fleet reports, so an instance that has not seen a newcomer yet (or a newcomer
/// that has not seen the others) never runs it beside the real leader.
const LEAD_SETTLE: Duration =
    Duration::from_secs(2 * crate::discovery::fleet::PUBLISH_EVERY.as_secs());

/// The hook's watch: runs until dropped (the server owns it and stops it at shutdown). A
/// hook already running when it stops is left to finish.
pub async fn autoscaler(pool: PoolHandle, fleet: Option<Arc<Fleet>>) {
    let mut tracks: HashMap<String, Track> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        step(&pool, fleet.as_deref(), &mut tracks, Instant::now());
    }
}

/// Is this instance the one that runs the hooks?
fn leads(fleet: Option<&Fleet>) -> bool {
    fleet.is_none_or(|f| f.instances().iter().all(|other| f.instance <= *other))
}

fn step(
    pool: &PoolHandle,
    fleet: Option<&Fleet>,
    tracks: &mut HashMap<String, Track>,
    now: Instant,
) {
    let snap = pool.snapshot();
    tracks.retain(|name, _| {
        snap.upstream(name)
            .is_some_and(|u| u.policy.autoscale.is_some())
    });
    for (name, up) in &snap.upstreams {
        let (Some(cfg), Some(scale)) = (&up.policy.autoscale, &up.policy.scale) else {
            continue;
        };
        let t = tracks.entry(name.clone()).or_default();
        if t.next_check.is_some_and(|at| now < at) || t.running.load(Ordering::Acquire) {
            continue;
        }
        t.next_check = Some(now + cfg.interval);
        if let Some(n) = t.applied.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.reference = Some(n);
        }
        let signal = ScaleView::of(up, fleet);
        let active = signal.active_connections;
        let lead = leads(fleet);
        t.leader_since = if lead {
            Some(t.leader_since.unwrap_or(now))
        } else {
            None
        };
        let Some(current) = t.reference else {
            // The count in place: the backends taking part (not draining or disabled). The
            // cooldown runs from here too: right after a start, connections are still coming
            // back, and the load would read as low.
            let in_place = up
                .backends
                .iter()
                .filter(|b| b.state == State::Active)
                .count();
            t.reference = Some(in_place);
            t.last_run = Some(now);
            tracing::info!(upstream = %name, backends = in_place, "autoscale: reference count");
            continue;
        };
        let Some(want) = decide(active, scale, cfg.hysteresis, current) else {
            continue;
        };
        if t.last_run
            .is_some_and(|at| now.duration_since(at) < cfg.cooldown)
        {
            continue;
        }
        let settled = fleet.is_none()
            || t.leader_since
                .is_some_and(|at| now.duration_since(at) >= LEAD_SETTLE);
        if !settled {
            if !lead {
                // The leader runs the hook for the same count; follow it, so that taking over
                // (when the leader leaves) starts from the count in place.
                t.reference = Some(want);
                t.last_run = Some(now);
            }
            // A leader not settled yet keeps its count and cooldown, and runs the hook once
            // it is (following here would leave the change never run).
            continue;
        }
        t.last_run = Some(now);
        t.running.store(true, Ordering::Release);
        let change = Change {
            instance: fleet.map_or_else(|| "local".to_string(), |f| f.instance.clone()),
            upstream: name.clone(),
            backends: want,
            previous_backends: current,
            active_connections: active,
            target_per_backend: scale.target_per_backend,
        };
        let (running, applied, cfg) = (t.running.clone(), t.applied.clone(), cfg.clone());
        tokio::spawn(async move {
            let _done = Running(running);
            let ok = run(&cfg, &change).await;
            let outcome = if ok { "ok" } else { "failed" };
            let m = crate::metrics::global();
            m.autoscale_runs
                .with_label_values(&[&change.upstream, outcome])
                .inc();
            if ok {
                m.autoscale_backends
                    .with_label_values(&[&change.upstream])
                    .set(change.backends as i64);
                *applied.lock().unwrap_or_else(|e| e.into_inner()) = Some(change.backends);
            }
        });
    }
}

/// Clears a track's `running` flag when its run ends, however it ends.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Run the hook once; true when it succeeded (exit 0, or a 2xx answer).
async fn run(cfg: &AutoscaleConfig, c: &Change) -> bool {
    tracing::info!(upstream = %c.upstream, from = c.previous_backends, to = c.backends, active = c.active_connections, "autoscale: running the hook");
    match &cfg.hook {
        ScaleHook::Exec(cmd) => exec(cmd, &hook_env(c, &cfg.env), c, cfg.timeout).await,
        ScaleHook::Webhook(url) => webhook(url, c, cfg.timeout).await,
    }
}

/// Read a pipe to its end, keeping the first [`MAX_OUTPUT`] bytes (reading on, so the writer
/// never blocks on a full pipe).
fn drain_pipe<R>(pipe: Option<R>) -> tokio::task::JoinHandle<Vec<u8>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut kept = Vec::new();
        let Some(mut pipe) = pipe else {
            return kept;
        };
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
            let room = MAX_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
        kept
    })
}

/// What a pipe held by the time the command ended; a background process that keeps the
/// pipe open is not waited for.
async fn taken(mut h: tokio::task::JoinHandle<Vec<u8>>) -> String {
    let bytes = match tokio::time::timeout(Duration::from_millis(500), &mut h).await {
        Ok(Ok(bytes)) => bytes,
        _ => {
            h.abort();
            Vec::new()
        }
    };
    String::from_utf8_lossy(&bytes).trim_end().to_string()
}

/// Variables of tideway's environment every command gets, when set.
const BASE_ENV: [&str; 2] = ["PATH", "HOME"];

/// The whole environment of a command run: [`BASE_ENV`], the `listed` variables of tideway's
/// environment (never a token), then the counts of `c`.
fn hook_env(c: &Change, listed: &[String]) -> Vec<(String, std::ffi::OsString)> {
    let inherited = BASE_ENV
        .into_iter()
        .chain(listed.iter().map(String::as_str))
        .filter(|name| !SECRET_ENV.contains(name))
        .filter_map(|name| std::env::var_os(name).map(|v| (name.to_string(), v)));
    let counts = [
        ("TIDEWAY_INSTANCE", c.instance.clone()),
        ("TIDEWAY_UPSTREAM", c.upstream.clone()),
        ("TIDEWAY_BACKENDS", c.backends.to_string()),
        ("TIDEWAY_PREVIOUS_BACKENDS", c.previous_backends.to_string()),
        (
            "TIDEWAY_ACTIVE_CONNECTIONS",
            c.active_connections.to_string(),
        ),
        (
            "TIDEWAY_TARGET_PER_BACKEND",
            c.target_per_backend.to_string(),
        ),
    ]
    .map(|(name, v)| (name.to_string(), v.into()));
    inherited.chain(counts).collect()
}

/// Run the command in a process group of its own, with `env` as its whole environment; on
/// `limit`, kill the whole group.
async fn exec(
    cmd: &str,
    env: &[(String, std::ffi::OsString)],
    c: &Change,
    limit: Duration,
) -> bool {
    let spawned = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(upstream = %c.upstream, error = %e, "autoscale: the command could not run");
            return false;
        }
    };
    let (out, err) = (
        drain_pipe(child.stdout.take()),
        drain_pipe(child.stderr.take()),
    );
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            tracing::warn!(upstream = %c.upstream, error = %e, "autoscale: lost the command");
            None
        }
        Err(_) => {
            // The whole group (procps `kill`; the library forbids unsafe code, so no
            // killpg); without it, at least the shell.
            let group = match child.id() {
                Some(pid) => tokio::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status()
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.success().then_some(()).ok_or(s.to_string())),
                None => Err("no process id".into()),
            };
            match group {
                Ok(()) => {
                    tracing::warn!(upstream = %c.upstream, ?limit, "autoscale: the command timed out; its process group was killed")
                }
                Err(e) => {
                    let _ = child.start_kill();
                    tracing::warn!(upstream = %c.upstream, ?limit, error = %e, "autoscale: the command timed out; only its shell could be killed");
                }
            }
            None
        }
    };
    let (stdout, stderr) = (taken(out).await, taken(err).await);
    match status {
        Some(s) if s.success() => {
            tracing::info!(upstream = %c.upstream, status = %s, %stdout, %stderr, "autoscale: command done");
            true
        }
        Some(s) => {
            tracing::warn!(upstream = %c.upstream, status = %s, %stdout, %stderr, "autoscale: command failed");
            false
        }
        None => false,
    }
}

async fn webhook(url: &str, c: &Change, limit: Duration) -> bool {
    let sent = reqwest::Client::new()
        .post(url)
        .timeout(limit)
        .json(c)
        .send()
        .await;
    // The URL may carry a credential: it is never logged.
    match sent {
        Ok(r) if r.status().is_success() => {
            tracing::info!(upstream = %c.upstream, status = %r.status(), "autoscale: webhook done");
            true
        }
        Ok(r) => {
            tracing::warn!(upstream = %c.upstream, status = %r.status(), "autoscale: webhook refused");
            false
        }
        Err(e) => {
            let e = e.without_url();
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            tracing::warn!(upstream = %c.upstream, error = %e, cause = cause.as_deref().unwrap_or(""), "autoscale: webhook failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_at_once_in_with_a_margin() {
        let s = ScaleConfig {
            target_per_backend: 2,
            min: 1,
            max: 10,
        };
        assert_eq!(decide(5, &s, 0.2, 1), Some(3));
        assert_eq!(decide(5, &s, 0.2, 3), None);
        // 5 fits 3 backends exactly, but not with a 20% margin (3.2 > 3 -> 4).
        assert_eq!(decide(5, &s, 0.2, 5), Some(4));
        assert_eq!(decide(5, &s, 0.0, 5), Some(3));
        assert_eq!(decide(0, &s, 0.2, 3), Some(1));
        assert_eq!(decide(1000, &s, 0.2, 3), Some(10), "clamped to max");
        assert_eq!(decide(0, &s, 0.2, 1), None, "clamped to min");
    }
}
