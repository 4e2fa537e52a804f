//! The controller's timer queue. Deadlines live where the state lives (mini-redis keeps its
//! expirations the same way): the controller schedules them while applying a diff and serves
//! the due ones after every wake-up, whatever woke it (a diff, a health report, a tick or the
//! deadline itself), so none waits for unrelated traffic.

use super::backend::BackendId;
use std::collections::BTreeMap;
use tokio::time::Instant;

/// Something to do at a given time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// Close the tunnels of a backend that is still in drain `epoch`.
    Drain {
        upstream: String,
        id: BackendId,
        epoch: u64,
    },
    /// Start spreading the closes of a backend still in drain `epoch`: they all go by `until`,
    /// the drain's deadline (see [`crate::pool::spread`]).
    Spread {
        upstream: String,
        id: BackendId,
        epoch: u64,
        until: Instant,
    },
    /// Look whether a registration has lapsed: it was due to at `at`, unless a heartbeat
    /// renewed it since (then the look is put off until the new expiry).
    Expiry {
        upstream: String,
        id: BackendId,
        at: Instant,
    },
    /// Take back a backend ejected by passive health at `at` (its `fail_timeout` is over),
    /// unless something else took it back or ejected it again since.
    Readmit {
        upstream: String,
        id: BackendId,
        at: Instant,
    },
}

/// A scheduled deadline's key: its time, and its place among deadlines at the same time.
pub type Key = (Instant, u64);

/// Deadlines in time order (ties in scheduling order).
#[derive(Debug, Default)]
pub struct Deadlines {
    queue: BTreeMap<Key, Deadline>,
    seq: u64,
}

impl Deadlines {
    /// Schedule `what` at `at`. Returns its key, for [`Self::cancel`].
    pub fn schedule(&mut self, at: Instant, what: Deadline) -> Key {
        self.seq += 1;
        self.queue.insert((at, self.seq), what);
        (at, self.seq)
    }

    /// Take a scheduled deadline back (nothing if it was served already).
    pub fn cancel(&mut self, key: Key) {
        self.queue.remove(&key);
    }

    /// When the earliest deadline falls, if any.
    pub fn next(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// Take every deadline due at `now`, earliest first.
    pub fn due(&mut self, now: Instant) -> Vec<Deadline> {
        let later = self.queue.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.queue, later);
        due.into_values().collect()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drain(epoch: u64) -> Deadline {
        Deadline::Drain {
            upstream: "u".into(),
            id: "b".into(),
            epoch,
        }
    }

    #[test]
    fn serves_due_deadlines_in_order() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.schedule(t0 + Duration::from_secs(2), drain(2));
        d.schedule(t0 + Duration::from_secs(1), drain(1));
        d.schedule(t0 + Duration::from_secs(1), drain(3));
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(1)));
        assert!(d.due(t0).is_empty());
        assert_eq!(d.due(t0 + Duration::from_secs(1)), vec![drain(1), drain(3)]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.due(t0 + Duration::from_secs(5)), vec![drain(2)]);
        assert!(d.is_empty() && d.next().is_none());
    }
}
