//! One method per kind of [`Diff`](crate::pool::Diff): what [`Controller::apply`] dispatches
//! to. Each checks what it needs, changes the state or refuses (a refused diff changes
//! nothing), and says whether anything a snapshot shows changed; `apply` publishes. Times come
//! in as `now`, read by `apply` from tokio's clock.
//!
//! Callers have checked that the upstream exists.

use super::housekeeping::watch_expiry;
use super::{checks_on, Controller};
use crate::config::MAX_WEIGHT;
use crate::pool::backend::{BackendId, BackendSpec, Source, State};
use crate::pool::deadlines::Deadline;
use crate::pool::diff::PoolError;
use crate::pool::toggles::Toggle;
use std::time::Duration;
use tokio::time::Instant;

/// The refusal for an id `upstream` does not hold.
fn unknown(upstream: &str, id: &BackendId) -> PoolError {
    PoolError::UnknownBackend {
        upstream: upstream.to_string(),
        id: id.to_string(),
    }
}

/// A weight outside 1..=[`MAX_WEIGHT`] is refused.
fn check_weight(weight: u32) -> Result<(), PoolError> {
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(PoolError::InvalidWeight)
    }
}

impl Controller {
    /// [`Diff::Upsert`](crate::pool::Diff::Upsert): a weight in range, then `upsert`.
    pub(super) fn upsert_checked(
        &mut self,
        name: &str,
        spec: BackendSpec,
        now: Instant,
    ) -> Result<bool, PoolError> {
        check_weight(spec.weight)?;
        Ok(self.upsert(name, spec, now))
    }

    /// [`Diff::Add`](crate::pool::Diff::Add): a new backend, or a refresh of the same id at
    /// the same address from the same source (a repeat registration).
    pub(super) fn add(
        &mut self,
        name: &str,
        spec: BackendSpec,
        ttl: Option<Duration>,
        operator: bool,
        now: Instant,
    ) -> Result<bool, PoolError> {
        check_weight(spec.weight)?;
        let up = self.upstreams.get_mut(name).expect("checked by apply");
        let Some(e) = up.backends.get_mut(&spec.id) else {
            return self.add_new(name, spec, ttl, operator, now);
        };
        e.backend.admits(spec.addr, spec.source)?;
        e.backend.live.set_ttl(ttl);
        watch_expiry(&mut self.deadlines, name, e);
        // An operator's weight toggle outlives a refresh of the registration.
        let weight = self
            .toggles
            .get(name, &spec.id)
            .and_then(|t| t.weight)
            .unwrap_or(spec.weight);
        let mut changed = e.backend.weight != weight || e.backend.max_conns != spec.max_conns;
        e.backend.weight = weight;
        e.backend.max_conns = spec.max_conns;
        if e.retiring && ttl.is_some() {
            // Renewed while lapsing (or leaving): it stays, and takes traffic unless an
            // operator decided otherwise.
            e.take_back(&self.shutdown, self.toggles.decided(name, &spec.id));
            changed = true;
        }
        Ok(changed)
    }

    /// An id the upstream does not hold yet.
    fn add_new(
        &mut self,
        name: &str,
        spec: BackendSpec,
        ttl: Option<Duration>,
        operator: bool,
        now: Instant,
    ) -> Result<bool, PoolError> {
        // An operator's disable or drain holds the address out, not only the id: the register
        // token may not bring it back under a new id.
        let decided = self.toggles.decided_at(name, spec.addr, &spec.id);
        if let (Some((id, state)), Source::Http, false) = (decided, spec.source, operator) {
            return Err(PoolError::Decided {
                addr: spec.addr,
                id: id.to_string(),
                state,
            });
        }
        if spec.source == Source::Http {
            // A new registration starts clean: toggles left by an earlier one with the same id
            // (a drain before it left) do not apply, except an operator's decision.
            self.toggles.forget(name, &spec.id);
        }
        let mut entry = self.new_entry(name, spec, now);
        entry.backend.live.set_ttl(ttl);
        watch_expiry(&mut self.deadlines, name, &mut entry);
        let up = self.upstreams.get_mut(name).expect("checked by apply");
        up.insert(entry);
        Ok(true)
    }

    /// [`Diff::Remove`](crate::pool::Diff::Remove).
    pub(super) fn remove_backend(&mut self, name: &str, id: &BackendId) -> Result<bool, PoolError> {
        self.take(name, id).ok_or_else(|| unknown(name, id))?;
        Ok(true)
    }

    /// [`Diff::SetState`](crate::pool::Diff::SetState).
    pub(super) fn change_state(
        &mut self,
        name: &str,
        id: &BackendId,
        state: State,
        now: Instant,
    ) -> Result<bool, PoolError> {
        let up = self.upstreams.get_mut(name).expect("checked by apply");
        let e = up.backends.get_mut(id).ok_or_else(|| unknown(name, id))?;
        // A leaving backend stays draining until it is removed: with etcd, the deregistration
        // deletes its state key too, which arrives as "back to active".
        if e.backend.state == state || (e.retiring && state != State::Draining) {
            return Ok(false);
        }
        self.set_state(name, id, state, now);
        // An operator's decision stands for when the backend comes back.
        if self.toggles.decided(name, id).is_none() {
            self.toggles.update(name, id, |t| t.state = Some(state));
        }
        Ok(true)
    }

    /// [`Diff::Decide`](crate::pool::Diff::Decide): enabling ends the decision; a disable or
    /// drain sticks to the id.
    pub(super) fn decide(
        &mut self,
        name: &str,
        id: &BackendId,
        state: State,
        now: Instant,
    ) -> Result<bool, PoolError> {
        let up = self.upstreams.get_mut(name).expect("checked by apply");
        let addr = up.backends.get(id).map(|e| e.backend.addr);
        let record = |t: &mut Toggle| {
            t.state = Some(state);
            t.operator = state != State::Active;
            // The address the decision holds out (kept while the id is gone).
            t.addr = if t.operator { addr.or(t.addr) } else { None };
        };
        let Some(e) = up.backends.get_mut(id) else {
            // Gone, with a decision that stuck: the decision changes.
            self.toggles
                .decided(name, id)
                .ok_or_else(|| unknown(name, id))?;
            match state {
                State::Active => self.toggles.update(name, id, |t| t.operator = false),
                _ => self.toggles.update(name, id, record),
            }
            self.toggles.forget(name, id);
            return Ok(false);
        };
        let changed = e.backend.state != state && !(e.retiring && state != State::Draining);
        if changed {
            self.set_state(name, id, state, now);
        }
        self.toggles.update(name, id, record);
        Ok(changed)
    }

    /// [`Diff::Drain`](crate::pool::Diff::Drain): a drain with its own close spread, as an
    /// operator's decision or a plain state change. The spread is taken only by a drain that
    /// starts here: one under way keeps its own.
    pub(super) fn drain(
        &mut self,
        name: &str,
        id: &BackendId,
        spread: Option<Duration>,
        operator: bool,
        now: Instant,
    ) -> Result<bool, PoolError> {
        let up = self.upstreams.get_mut(name).expect("checked by apply");
        if let Some(e) = up.backends.get_quiet(id) {
            if e.backend.state != State::Draining {
                e.drain_spread = spread;
            }
        }
        match operator {
            true => self.decide(name, id, State::Draining, now),
            false => self.change_state(name, id, State::Draining, now),
        }
    }

    /// [`Diff::Retire`](crate::pool::Diff::Retire): drain, then leave.
    pub(super) fn retire(
        &mut self,
        name: &str,
        id: &BackendId,
        now: Instant,
    ) -> Result<bool, PoolError> {
        let up = self.upstreams.get_mut(name).expect("checked by apply");
        let e = up.backends.get_mut(id).ok_or_else(|| unknown(name, id))?;
        e.retiring = true;
        if e.backend.state == State::Draining {
            return Ok(false);
        }
        self.set_state(name, id, State::Draining, now);
        Ok(true)
    }

    /// [`Diff::SetWeight`](crate::pool::Diff::SetWeight); the weight is kept as a toggle.
    pub(super) fn set_weight(
        &mut self,
        name: &str,
        id: &BackendId,
        weight: u32,
    ) -> Result<bool, PoolError> {
        check_weight(weight)?;
        let up = self.upstreams.get_mut(name).expect("checked by apply");
        let e = up.backends.get_mut(id).ok_or_else(|| unknown(name, id))?;
        let changed = e.backend.weight != weight;
        e.backend.weight = weight;
        if changed {
            self.toggles.update(name, id, |t| t.weight = Some(weight));
        }
        Ok(changed)
    }

    /// [`Diff::SetHealth`](crate::pool::Diff::SetHealth): an active check's verdict. Coming
    /// up starts a slow start; either way it ends a passive ejection.
    pub(super) fn set_health(
        &mut self,
        name: &str,
        id: &BackendId,
        healthy: bool,
        reason: &str,
        now: Instant,
    ) -> Result<bool, PoolError> {
        let up = self.upstreams.get_mut(name).expect("checked by apply");
        let slow = up.policy().slow_start.is_some();
        let e = up.backends.get_mut(id).ok_or_else(|| unknown(name, id))?;
        if e.backend.healthy == healthy {
            return Ok(false);
        }
        if healthy {
            tracing::info!(upstream = %name, backend = %id, %reason, "backend is healthy");
            if slow {
                e.ramp_from = Some(now);
            }
        } else {
            tracing::warn!(upstream = %name, backend = %id, %reason, "backend is unhealthy");
        }
        e.backend.healthy = healthy;
        if healthy {
            // Readmitted: failures count anew (an ejection leaves its streak to this point).
            e.backend.live.reset_streak();
        }
        // An active verdict either way ends a passive ejection.
        e.backend.ejected = false;
        e.readmit_at = None;
        e.backend.live.transition(healthy);
        Ok(true)
    }

    /// [`Diff::Eject`](crate::pool::Diff::Eject): passive health holds the backend out for
    /// its `fail_timeout` (readmitted then by a deadline, unless active checks judge it), as
    /// long as no more than `max_ejection_percent` of the upstream is held out.
    pub(super) fn eject(
        &mut self,
        name: &str,
        id: &BackendId,
        reason: &str,
        now: Instant,
    ) -> Result<bool, PoolError> {
        let up = self.upstreams.get_mut(name).expect("checked by apply");
        let upstream_timeout = up.policy().passive.fail_timeout;
        let active_checks = checks_on(up.policy());
        let pct = up.policy().passive.max_ejection_percent as usize;
        let room = up.backends.len() * pct / 100 > up.ejected_count();
        let e = up.backends.get_quiet(id).ok_or_else(|| unknown(name, id))?;
        if !e.backend.healthy {
            return Ok(false);
        }
        if !room {
            // Kept in: its failures count anew from here. An ejected backend keeps its tripped
            // streak until it is readmitted, so picks skip it until the snapshot that holds it
            // out is published (resetting here would let a pick in between take it).
            e.backend.live.reset_streak();
            tracing::warn!(upstream = %name, backend = %id, %reason, max_ejection_percent = pct, "backend kept in: passive health holds out as many backends as it may");
            return Ok(false);
        }
        let e = up.backends.get_mut(id).expect("found above");
        let fail_timeout = e.backend.server.fail_timeout.unwrap_or(upstream_timeout);
        tracing::warn!(upstream = %name, backend = %id, %reason, ?fail_timeout, "backend ejected (passive health)");
        e.backend.healthy = false;
        e.backend.ejected = true;
        e.readmit_at = (!active_checks).then(|| now + fail_timeout);
        if let Some(at) = e.readmit_at {
            self.deadlines.schedule(
                at,
                Deadline::Readmit {
                    upstream: name.to_string(),
                    id: id.clone(),
                    at,
                },
            );
        }
        e.backend.live.transition(false);
        Ok(true)
    }

    /// [`Diff::Heartbeat`](crate::pool::Diff::Heartbeat): renew a registration's TTL.
    /// Publishes nothing: the expiry is a live value.
    pub(super) fn heartbeat(
        &mut self,
        name: &str,
        id: &BackendId,
        ttl: Duration,
    ) -> Result<bool, PoolError> {
        let up = self.upstreams.get_mut(name).expect("checked by apply");
        let e = up.backends.get_quiet(id).ok_or_else(|| unknown(name, id))?;
        if e.backend.source != Source::Http {
            return Err(PoolError::OtherSource {
                id: id.to_string(),
                origin: e.backend.source,
            });
        }
        e.backend.live.set_ttl(Some(ttl));
        watch_expiry(&mut self.deadlines, name, e);
        Ok(false)
    }

    /// [`Diff::Resolved`](crate::pool::Diff::Resolved): the upstream as configured, with the
    /// name's backends made these addresses.
    pub(super) fn resolved(&mut self, name: &str, host: &str, addrs: &[std::net::IpAddr]) -> bool {
        match self
            .resolving
            .get(name)
            .and_then(|u| u.with_addresses(host, addrs))
        {
            Some(next) => self.configure_one(&next),
            None => false,
        }
    }
}
