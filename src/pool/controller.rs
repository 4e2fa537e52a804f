//! The one writer. The controller owns the pool state, applies [`Diff`]s in arrival order,
//! and publishes a fresh [`Snapshot`] with `ArcSwap::store` when, and only when, something
//! changed. Everything else holds a [`PoolHandle`]: readers `load()`, writers `apply()`.
//!
//! Applying is pure: it changes the state and returns; what must happen outside (persisting
//! toggles) comes back as [`Effect`]s for the run loop ([`super::handle`]) to carry out, and
//! what must happen later goes into the controller's own timer queue ([`Deadlines`]).
//!
//! Invariants:
//! - Only this module calls `store()`.
//! - A refused or no-op diff publishes nothing, and a refused diff changes nothing.
//! - Live counters are keyed by (upstream, id) and reused across versions, so they survive
//!   swaps; a removed backend's counters live on in its open connections.

use super::backend::{
    Backend, BackendId, BackendSpec, Live, ServerParams, Source, State, WEIGHT_SCALE,
};
use super::deadlines::{Deadline, Deadlines};
use super::diff::{Diff, PoolError};
use super::inbox::Verdict;
use super::snapshot::Snapshot;
use super::toggles::Toggles;
use crate::config::{UpstreamConfig, UpstreamPolicy};
use arc_swap::ArcSwap;
use housekeeping::{forget_expiry, readmit_later};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use upstream::UpstreamState;

/// Something the controller wants done outside the (synchronous) apply step.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Write the operator toggles (JSON) to `path`.
    PersistToggles {
        path: std::path::PathBuf,
        json: Vec<u8>,
    },
}

struct Entry {
    backend: Backend,
    /// The tag the upstream's table, ring and selectors know this backend by: its slot and the
    /// slot's generation (see `pool::table`), stable while it is in the pool.
    slot: u32,
    /// The weight its points in the ring stand for (0: not in the ring).
    in_ring: u32,
    /// Which drain this backend is in (0 = none); a deadline for an older drain is ignored.
    drain_epoch: u64,
    /// The close spread its drain was asked for ([`Diff::Drain`]); None: the upstream's
    /// `close_spread`. Read when the drain starts, cleared when it ends.
    drain_spread: Option<Duration>,
    /// Draining on its way out: removed once it has no connections or its drain deadline passes.
    retiring: bool,
    /// Slow start: when the backend last became eligible.
    ramp_from: Option<Instant>,
    /// When to take the backend back: a passive ejection with no active checks configured, or
    /// any backend held out when a reload turned them off.
    readmit_at: Option<Instant>,
    /// The queued look at whether the registration lapsed, if any (see `housekeeping`).
    expiry_check: Option<crate::pool::deadlines::Key>,
}

impl Entry {
    /// A backend that was leaving stays: in `state` again (active, or what an operator
    /// decided), with a fresh close signal.
    fn take_back(&mut self, shutdown: &CancellationToken, state: Option<State>) {
        self.retiring = false;
        self.drain_epoch = 0;
        self.drain_spread = None;
        self.backend.live.set_drain(None);
        self.backend.state = state.unwrap_or(State::Active);
        self.renew_close(shutdown);
    }

    /// The backend is out of any drain: a fresh close signal if the drain's was spent, kept in
    /// [`Live`] too so the tunnels still waiting for their spread close listen to it again
    /// (written before the window is cleared: a tunnel that sees no window finds the new
    /// signal).
    fn renew_close(&mut self, shutdown: &CancellationToken) {
        if self.backend.close.is_cancelled() {
            self.backend.close = shutdown.child_token();
            self.backend.live.renew_close(self.backend.close.clone());
        }
        self.backend.live.set_closing(None);
    }
}

fn checks_on(policy: &UpstreamPolicy) -> bool {
    policy
        .health
        .as_ref()
        .is_some_and(|h| h.kind != crate::config::HealthKind::None)
}

/// Effective weight (in [`WEIGHT_SCALE`] units) of an entry at `now`: 10% to 100% of its weight
/// during slow start, linearly.
fn effective_weight(e: &Entry, slow_start: Option<Duration>, now: Instant) -> u32 {
    let full = e.backend.weight * WEIGHT_SCALE;
    match (e.ramp_from, slow_start) {
        (Some(from), Some(ss)) => {
            let t = (now.saturating_duration_since(from).as_secs_f64() / ss.as_secs_f64()).min(1.0);
            ((f64::from(full) * (0.1 + 0.9 * t)).round() as u32).max(1)
        }
        _ => full,
    }
}

/// The pool's single writer.
pub struct Controller {
    current: Arc<ArcSwap<Snapshot>>,
    upstreams: BTreeMap<String, UpstreamState>,
    shutdown: CancellationToken,
    version: u64,
    next_epoch: u64,
    deadlines: Deadlines,
    toggles: Toggles,
    /// The config of each upstream with `resolve` names, which a [`Diff::Resolved`] updates.
    resolving: BTreeMap<String, UpstreamConfig>,
}

/// How often the controller looks for lapsed registrations and drained backends to remove.
pub const DEFAULT_TICK: Duration = Duration::from_millis(250);

impl Controller {
    /// A controller holding the static backends of `upstreams`, already published as version 1,
    /// with the persisted `toggles` applied. `shutdown` is the parent of every tunnel's close
    /// signal.
    pub fn new(
        upstreams: &[UpstreamConfig],
        shutdown: CancellationToken,
        toggles: Toggles,
    ) -> Self {
        let mut c = Controller {
            current: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            upstreams: BTreeMap::new(),
            shutdown,
            version: 0,
            next_epoch: 1,
            deadlines: Deadlines::default(),
            toggles,
            resolving: BTreeMap::new(),
        };
        for u in upstreams {
            c.configure_one(u);
        }
        c.publish();
        c
    }

    /// Take a new set of upstreams from a re-read config (a reload): new upstreams are added,
    /// missing ones removed (their open tunnels are left alone), policies replaced, and each
    /// upstream's static backends made exactly the config's (as a re-list of that source;
    /// registered and etcd backends stay). Returns whether anything changed.
    pub fn configure(&mut self, upstreams: &[UpstreamConfig]) -> bool {
        let gone: Vec<String> = self
            .upstreams
            .keys()
            .filter(|name| !upstreams.iter().any(|u| &u.name == *name))
            .cloned()
            .collect();
        let mut changed = !gone.is_empty();
        for name in gone {
            tracing::info!(upstream = %name, "reload: upstream removed");
            self.resolving.remove(&name);
            if let Some(up) = self.upstreams.remove(&name) {
                for e in up.backends.values() {
                    forget_expiry(&mut self.deadlines, e);
                }
            }
        }
        for u in upstreams {
            changed |= self.configure_one(u);
        }
        if changed {
            self.publish();
        }
        changed
    }

    /// Add or update one upstream from the config; returns whether it changed.
    fn configure_one(&mut self, u: &UpstreamConfig) -> bool {
        let kept;
        let u = match self.keep_addresses(u) {
            Some(k) => {
                kept = k;
                &kept
            }
            None => u,
        };
        if u.names.iter().any(|n| n.resolve) {
            self.resolving.insert(u.name.clone(), u.clone());
        } else {
            self.resolving.remove(&u.name);
        }
        let mut changed = false;
        match self.upstreams.get_mut(&u.name) {
            Some(up) if **up.policy() == u.policy => {}
            Some(up) => {
                let checks_went_off = checks_on(up.policy()) && !checks_on(&u.policy);
                up.set_policy(Arc::new(u.policy.clone()));
                // What a backend's snapshot shows may follow the policy (slow start's weight).
                up.backends.update_each(|_| true);
                if checks_went_off {
                    readmit_later(&mut self.deadlines, &u.name, up, Instant::now());
                }
                changed = true;
            }
            None => {
                self.upstreams.insert(
                    u.name.clone(),
                    UpstreamState::new(Arc::new(u.policy.clone())),
                );
                changed = true;
            }
        }
        let specs = u
            .backends
            .iter()
            .map(|b| BackendSpec {
                id: b.id.as_str().into(),
                addr: b.addr,
                weight: b.weight,
                max_conns: b.max_conns,
                source: Source::Static,
                server: ServerParams {
                    backup: b.backup,
                    max_fails: b.max_fails,
                    fail_timeout: b.fail_timeout,
                },
            })
            .collect();
        changed |= self.reset(&u.name, Source::Static, specs);
        let up = self.upstreams.get_mut(&u.name).expect("inserted above");
        changed |= up.set_order(u.backends.iter().map(|b| b.id.as_str()));
        // `state = "disabled"` in the config (nginx's `down`), unless an operator toggled it.
        for b in &u.backends {
            if self
                .toggles
                .get(&u.name, &b.id)
                .and_then(|t| t.state)
                .is_some()
            {
                continue;
            }
            let up = self.upstreams.get_mut(&u.name).expect("inserted above");
            let want = if b.disabled {
                State::Disabled
            } else {
                State::Active
            };
            // Looked at quietly; marked changed (and so visited by the publish) only when its
            // state moves.
            let Some(e) = up.backends.get_quiet(b.id.as_str()) else {
                continue;
            };
            if e.backend.state != State::Draining && e.backend.state != want {
                let e = up.backends.get_mut(b.id.as_str()).expect("found above");
                e.backend.state = want;
                changed = true;
            }
        }
        changed
    }

    /// `u` (a reloaded config) with the addresses its `resolve` names had before where their
    /// lookup at load failed: a name that stops resolving keeps its last addresses, across a
    /// reload too. None when there is nothing to keep.
    fn keep_addresses(&self, u: &UpstreamConfig) -> Option<UpstreamConfig> {
        let old = self.resolving.get(&u.name)?;
        let mut kept: Option<UpstreamConfig> = None;
        for n in u.names.iter().filter(|n| n.resolve && n.addrs.is_empty()) {
            let Some(prev) = old
                .names
                .iter()
                .find(|o| o.resolve && o.host == n.host && !o.addrs.is_empty())
            else {
                continue;
            };
            let base = kept.as_ref().unwrap_or(u);
            if let Some(next) = base.with_addresses(&n.host, &prev.addrs) {
                tracing::warn!(upstream = %u.name, name = %n.host, addresses = prev.addrs.len(), "name does not resolve; keeping its last addresses");
                kept = Some(next);
            }
        }
        kept
    }

    /// The snapshot cell, for readers built before the controller starts running.
    pub fn current(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.current
    }

    /// Version of the last published snapshot.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Effects produced by the diffs applied so far, for the run loop to carry out.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.toggles
            .take_unsaved()
            .map(|(path, json)| Effect::PersistToggles { path, json })
            .into_iter()
            .collect()
    }

    /// When the earliest scheduled deadline falls.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// Apply a health verdict (ignored when the backend has gone meanwhile).
    pub fn verdict(&mut self, upstream: String, id: BackendId, verdict: Verdict) -> bool {
        let diff = match verdict {
            Verdict::Health { healthy, reason } => Diff::SetHealth {
                upstream,
                id,
                healthy,
                reason,
            },
            Verdict::Eject { reason } => Diff::Eject {
                upstream,
                id,
                reason,
            },
        };
        self.apply(diff).unwrap_or(false)
    }

    /// Apply one diff; publish if it changed anything. Returns whether it did.
    ///
    /// One line per kind of diff, each handled by a method of its own (`diffs`), as sozu's
    /// `ConfigState::dispatch` does. The clock is read here and handed to the handlers that
    /// use it (a re-list, `reset`, shared with reloads, reads it for the backends it adds).
    pub fn apply(&mut self, diff: Diff) -> Result<bool, PoolError> {
        let name = diff.upstream().to_string();
        if !self.upstreams.contains_key(&name) {
            return Err(PoolError::UnknownUpstream(name));
        }
        let up = name.as_str();
        let now = Instant::now();
        let changed = match diff {
            Diff::Add {
                backend,
                ttl,
                operator,
                ..
            } => self.add(up, backend, ttl, operator, now)?,
            Diff::Remove { id, .. } => self.remove_backend(up, &id)?,
            Diff::SetState { id, state, .. } => self.change_state(up, &id, state, now)?,
            Diff::Decide { id, state, .. } => self.decide(up, &id, state, now)?,
            Diff::Drain {
                id,
                spread,
                operator,
                ..
            } => self.drain(up, &id, spread, operator, now)?,
            Diff::Retire { id, .. } => self.retire(up, &id, now)?,
            Diff::SetWeight { id, weight, .. } => self.set_weight(up, &id, weight)?,
            Diff::SetHealth {
                id,
                healthy,
                reason,
                ..
            } => self.set_health(up, &id, healthy, &reason, now)?,
            Diff::Eject { id, reason, .. } => self.eject(up, &id, &reason, now)?,
            Diff::Heartbeat { id, ttl, .. } => self.heartbeat(up, &id, ttl)?,
            Diff::Upsert { backend, .. } => self.upsert_checked(up, backend, now)?,
            Diff::Reset {
                source, backends, ..
            } => self.reset(up, source, backends),
            Diff::Resolved { host, addrs, .. } => self.resolved(up, &host, &addrs),
        };
        if changed {
            self.publish();
        }
        Ok(changed)
    }

    /// Change a known backend's state; entering `Draining` schedules its drain deadline.
    fn set_state(&mut self, upstream: &str, id: &BackendId, state: State, now: Instant) {
        let up = self.upstreams.get_mut(upstream).expect("checked by caller");
        let drain_timeout = up.policy().drain_timeout;
        let configured = up.policy().close_spread;
        let slow_start = up.policy().slow_start.is_some();
        let e = up.backends.get_mut(id).expect("checked by caller");
        if state == State::Draining {
            let asked = e.drain_spread.or(configured);
            let spread = crate::pool::spread::length(asked, drain_timeout);
            e.drain_epoch = self.next_epoch;
            self.next_epoch += 1;
            let until = now + drain_timeout;
            if !spread.is_zero() {
                self.deadlines.schedule(
                    until - spread,
                    Deadline::Spread {
                        upstream: upstream.to_string(),
                        id: id.clone(),
                        epoch: e.drain_epoch,
                        until,
                    },
                );
            }
            e.backend.live.set_drain(Some((until, spread)));
            self.deadlines.schedule(
                until,
                Deadline::Drain {
                    upstream: upstream.to_string(),
                    id: id.clone(),
                    epoch: e.drain_epoch,
                },
            );
        } else {
            if state == State::Active && e.backend.state != State::Active && slow_start {
                e.ramp_from = Some(now);
            }
            e.drain_epoch = 0;
            e.drain_spread = None;
            e.retiring = false;
            e.backend.live.set_drain(None);
            e.renew_close(&self.shutdown);
        }
        e.backend.state = state;
    }

    /// Take a backend out of its upstream: the one way out of the pool, so its queued look at
    /// its expiry goes with it.
    fn take(&mut self, upstream: &str, id: &BackendId) -> Option<Entry> {
        let e = self.upstreams.get_mut(upstream)?.take(id)?;
        forget_expiry(&mut self.deadlines, &e);
        Some(e)
    }

    fn remove(&mut self, upstream: &str, id: &BackendId) {
        self.take(upstream, id);
        self.toggles.forget(upstream, id);
    }

    /// Make `source`'s backends in `upstream` exactly `specs`. Returns whether anything changed.
    fn reset(&mut self, upstream: &str, source: Source, specs: Vec<BackendSpec>) -> bool {
        let wanted: BTreeMap<BackendId, BackendSpec> =
            specs.into_iter().map(|s| (s.id.clone(), s)).collect();
        let mut changed = false;
        let stale: Vec<BackendId> = self.upstreams[upstream]
            .backends
            .values()
            .filter(|e| {
                // A retiring backend is already leaving (draining); a re-list must not cut that short.
                e.backend.source == source && !e.retiring && !wanted.contains_key(&e.backend.id)
            })
            .map(|e| e.backend.id.clone())
            .collect();
        for id in stale {
            self.take(upstream, &id);
            changed = true;
        }
        let now = Instant::now();
        for spec in wanted.into_values() {
            changed |= self.upsert(upstream, spec, now);
        }
        changed
    }

    /// Make the backend with `spec.id` exactly `spec` (see [`Diff::Upsert`]). Only an entry
    /// that changes is marked, so a publish after it visits that backend alone. Returns
    /// whether anything changed.
    fn upsert(&mut self, upstream: &str, mut spec: BackendSpec, now: Instant) -> bool {
        // An operator's weight toggle outlives re-lists and re-puts of the source.
        if let Some(w) = self.toggles.get(upstream, &spec.id).and_then(|t| t.weight) {
            spec.weight = w;
        }
        let up = self.upstreams.get_mut(upstream).expect("exists");
        let Some(e) = up.backends.get_quiet(&spec.id) else {
            let entry = self.new_entry(upstream, spec, now);
            self.upstreams
                .get_mut(upstream)
                .expect("exists")
                .insert(entry);
            return true;
        };
        let differs = e.backend.addr != spec.addr
            || e.backend.weight != spec.weight
            || e.backend.source != spec.source
            || e.backend.max_conns != spec.max_conns
            || e.backend.server != spec.server;
        if !e.retiring && !differs {
            return false;
        }
        let e = up.backends.get_mut(&spec.id).expect("found above");
        if e.retiring {
            // Back before it finished leaving (re-registered): take it back.
            e.take_back(&self.shutdown, self.toggles.decided(upstream, &spec.id));
        }
        e.backend.addr = spec.addr;
        e.backend.weight = spec.weight;
        e.backend.source = spec.source;
        e.backend.max_conns = spec.max_conns;
        e.backend.server = spec.server;
        true
    }

    /// A new entry for `spec`, as of `now` (when a slow start begins).
    fn new_entry(&self, upstream: &str, spec: BackendSpec, now: Instant) -> Entry {
        let toggle = self
            .toggles
            .get(upstream, &spec.id)
            .cloned()
            .unwrap_or_default();
        let policy = self.upstreams[upstream].policy();
        // With active checks on, a new backend takes traffic only after its first passing check.
        let healthy = !checks_on(policy);
        let ramp_from = (healthy && policy.slow_start.is_some()).then_some(now);
        Entry {
            backend: Backend {
                id: spec.id,
                addr: spec.addr,
                weight: toggle.weight.unwrap_or(spec.weight),
                effective_weight: 0,
                max_conns: spec.max_conns,
                state: toggle.state.unwrap_or(State::Active),
                healthy,
                ejected: false,
                source: spec.source,
                server: spec.server,
                live: Arc::new(Live::default()),
                close: self.shutdown.child_token(),
            },
            slot: 0,
            in_ring: 0,
            drain_epoch: 0,
            drain_spread: None,
            retiring: false,
            ramp_from,
            readmit_at: None,
            expiry_check: None,
        }
    }

    fn publish(&mut self) {
        self.version += 1;
        let now = Instant::now();
        let upstreams = self
            .upstreams
            .iter_mut()
            .map(|(name, u)| (name.clone(), u.snapshot(name, now)))
            .collect();
        self.current.store(Arc::new(Snapshot {
            version: self.version,
            upstreams,
        }));
        for u in self.upstreams.values_mut() {
            u.published();
        }
    }
}

mod diffs;
mod housekeeping;
mod upstream;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod decision_tests;

#[cfg(test)]
mod drain_tests;

#[cfg(test)]
mod names_tests;

#[cfg(test)]
mod upsert_tests;
