//! What the controller does with time, at a cost that follows what is due, not the pool size:
//! - deadlines ([`Deadlines`]) for what falls at a known time: the start of a drain's close
//!   spread and the drain's end, a registration's expiry, the end of a passive ejection's
//!   `fail_timeout` (also scheduled for every backend held out when a reload turns active
//!   checks off: [`readmit_later`]);
//! - a periodic tick ([`DEFAULT_TICK`](super::DEFAULT_TICK)) for what has to be polled: the
//!   backends still ramping up in slow start, and the retiring ones waiting for their last
//!   connection to close. Only those are visited ([`Entries::watched`](super::upstream::Entries)).
//!
//! A heartbeat does not touch the queue when a look at the registration is already scheduled
//! no later than its new expiry: that look finds the registration renewed and puts itself off
//! to the new expiry. So a registration renewed every few seconds costs one queue operation
//! per TTL, not one per heartbeat, and never more than one queued look.

use super::upstream::UpstreamState;
use super::{Controller, Entry};
use crate::pool::backend::{BackendId, State};
use crate::pool::deadlines::{Deadline, Deadlines};
use tokio::time::Instant;

/// After a registration's TTL was set or renewed: make sure a deadline looks at it by the time
/// it may lapse.
/// An entry has at most one look queued: a renewal to an earlier expiry (a shorter TTL) moves
/// it, and a backend taken out of the pool takes its look with it ([`forget_expiry`]), so the
/// queue holds no more looks than there are registrations, whatever the heartbeats say.
pub(super) fn watch_expiry(deadlines: &mut Deadlines, upstream: &str, e: &mut Entry) {
    let Some(at) = e.backend.live.expires_at() else {
        return;
    };
    match e.expiry_check {
        Some((scheduled, _)) if scheduled <= at => return,
        Some(key) => deadlines.cancel(key),
        None => {}
    }
    let key = deadlines.schedule(
        at,
        Deadline::Expiry {
            upstream: upstream.to_string(),
            id: e.backend.id.clone(),
            at,
        },
    );
    e.expiry_check = Some(key);
}

/// A backend leaves the pool: its look at its expiry goes too.
pub(super) fn forget_expiry(deadlines: &mut Deadlines, e: &Entry) {
    if let Some(key) = e.expiry_check {
        deadlines.cancel(key);
    }
}

/// Active checks were turned off (a reload): nothing will judge the backends they found down,
/// nor those passive health ejected and left to them, so each is readmitted after the new
/// policy's `fail_timeout`, as passive health alone readmits (nginx's `max_fails` /
/// `fail_timeout`: a failed server is tried again after it). An ejected one keeps its
/// ejection place until then.
pub(super) fn readmit_later(
    deadlines: &mut Deadlines,
    upstream: &str,
    up: &mut UpstreamState,
    now: Instant,
) {
    let at = now + up.policy().passive.fail_timeout;
    up.backends.update_each(|e| {
        if e.backend.healthy || e.readmit_at.is_some() {
            return false;
        }
        e.readmit_at = Some(at);
        let id = e.backend.id.clone();
        tracing::info!(upstream, backend = %id, "active checks off: readmitted after fail_timeout");
        let upstream = upstream.to_string();
        deadlines.schedule(at, Deadline::Readmit { upstream, id, at });
        true
    });
}

impl Controller {
    /// Serve every deadline due at `now`, and publish once if any changed the pool. Returns how
    /// many still applied (a deadline made stale by a later change does nothing).
    pub fn serve_deadlines(&mut self, now: Instant) -> usize {
        let mut served = 0;
        let mut changed = false;
        for due in self.deadlines.due(now) {
            let (applied, changes) = match due {
                Deadline::Drain {
                    upstream,
                    id,
                    epoch,
                } => self.drain_deadline(&upstream, &id, epoch),
                Deadline::Spread {
                    upstream,
                    id,
                    epoch,
                    until,
                } => (self.drain_spread(&upstream, &id, epoch, until), false),
                Deadline::Expiry { upstream, id, at } => self.expiry(&upstream, &id, at, now),
                Deadline::Readmit { upstream, id, at } => self.readmit(&upstream, &id, at, now),
            };
            served += usize::from(applied);
            changed |= changes;
        }
        if changed {
            self.publish();
        }
        served
    }

    /// Periodic housekeeping over the watched backends only: slow-start ramps republish until
    /// they reach full weight, and retiring backends with no connections left are removed.
    /// Returns whether a snapshot was published.
    pub fn tick(&mut self) -> bool {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut changed = false;
        for (name, up) in self.upstreams.iter_mut() {
            let slow_start = up.policy().slow_start;
            for id in up.backends.watched() {
                let Some(e) = up.backends.get(&id) else {
                    continue;
                };
                if e.retiring {
                    if e.backend.live.active() == 0 {
                        gone.push((name.clone(), id));
                    }
                    continue;
                }
                let Some(from) = e.ramp_from else {
                    continue;
                };
                let e = up.backends.get_mut(&id).expect("just read");
                match slow_start {
                    // Republish while ramping; stop once at full weight.
                    Some(ss) => {
                        if now.saturating_duration_since(from) >= ss {
                            e.ramp_from = None;
                        }
                        changed = true;
                    }
                    // Slow start was switched off by a reload: the weight is already full.
                    None => e.ramp_from = None,
                }
            }
        }
        for (name, id) in gone {
            tracing::info!(upstream = %name, backend = %id, "drained; removed");
            self.remove(&name, &id);
            changed = true;
        }
        if changed {
            self.publish();
        }
        changed
    }

    /// A drain deadline fell: close the backend's tunnels if it is still in that drain (a
    /// retiring backend is removed too). Returns (whether it applied, whether the pool changed).
    pub(super) fn drain_deadline(
        &mut self,
        upstream: &str,
        id: &BackendId,
        epoch: u64,
    ) -> (bool, bool) {
        let Some(e) = self
            .upstreams
            .get(upstream)
            .and_then(|u| u.backends.get(id))
        else {
            return (false, false);
        };
        if e.backend.state != State::Draining || e.drain_epoch != epoch {
            return (false, false);
        }
        if e.backend.live.closing_window().is_none() {
            tracing::info!(upstream, backend = %id, "drain deadline reached; closing tunnels with 1001");
        } else {
            tracing::info!(upstream, backend = %id, "drain deadline reached; its spread ends");
        }
        // Without a spread (`close_spread = "0s"`), the tunnels close now, all at once.
        if e.backend.live.closing_window().is_none() {
            let now = Instant::now();
            e.backend.live.set_closing(Some((now, now)));
        }
        e.backend.close.cancel();
        let retiring = e.retiring;
        if retiring {
            self.remove(upstream, id);
        }
        (true, retiring)
    }

    /// A drain's spread starts: the backend's tunnels are told to close, each at a random time
    /// by `until` (the drain's deadline), if it is still in that drain. Returns whether it
    /// applied.
    pub(super) fn drain_spread(
        &mut self,
        upstream: &str,
        id: &BackendId,
        epoch: u64,
        until: Instant,
    ) -> bool {
        let Some(e) = self
            .upstreams
            .get(upstream)
            .and_then(|u| u.backends.get(id))
        else {
            return false;
        };
        if e.backend.state != State::Draining || e.drain_epoch != epoch {
            return false;
        }
        let now = Instant::now();
        let spread = until.saturating_duration_since(now);
        tracing::info!(upstream, backend = %id, ?spread, "drain: spreading the 1001 closes");
        e.backend.live.set_closing(Some((now, until)));
        e.backend.close.cancel();
        true
    }

    /// A registration's expiry fell: it lapses (starts retiring, draining) unless renewed since,
    /// in which case the look is put off to the new expiry.
    fn expiry(
        &mut self,
        upstream: &str,
        id: &BackendId,
        at: Instant,
        now: Instant,
    ) -> (bool, bool) {
        let Some(up) = self.upstreams.get_mut(upstream) else {
            return (false, false);
        };
        let Some(e) = up.backends.get_quiet(id) else {
            return (false, false);
        };
        if e.expiry_check.map(|(when, _)| when) != Some(at) {
            return (false, false); // not this entry's look (defensive: looks are cancelled)
        }
        e.expiry_check = None;
        match e.backend.live.expires_in_ms() {
            Some(0) if !e.retiring => {}
            // Already leaving, or no longer expiring: nothing to look at (a renewal schedules
            // its own look).
            Some(0) | None => return (false, false),
            Some(_) => {
                watch_expiry(&mut self.deadlines, upstream, e);
                return (false, false);
            }
        }
        tracing::info!(upstream, backend = %id, "registration lapsed; draining");
        let e = up.backends.get_mut(id).expect("just read");
        e.retiring = true;
        if e.backend.state != State::Draining {
            self.set_state(upstream, id, State::Draining, now);
        }
        (true, true)
    }

    /// A passive ejection's `fail_timeout` is over: take the backend back, unless it was taken
    /// back or ejected again since.
    fn readmit(
        &mut self,
        upstream: &str,
        id: &BackendId,
        at: Instant,
        now: Instant,
    ) -> (bool, bool) {
        let Some(up) = self.upstreams.get_mut(upstream) else {
            return (false, false);
        };
        let slow_start = up.policy().slow_start.is_some();
        let Some(e) = up.backends.get(id) else {
            return (false, false);
        };
        if e.readmit_at != Some(at) {
            return (false, false);
        }
        tracing::info!(upstream, backend = %id, "fail_timeout over; backend readmitted");
        let e = up.backends.get_mut(id).expect("just read");
        e.readmit_at = None;
        // Failures count anew (an ejection leaves its streak to this point).
        e.backend.live.reset_streak();
        e.backend.healthy = true;
        e.backend.ejected = false;
        e.backend.live.transition(true);
        if slow_start {
            e.ramp_from = Some(now);
        }
        (true, true)
    }
}

#[cfg(test)]
mod tests;
