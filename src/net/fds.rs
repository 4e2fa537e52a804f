//! File descriptors: the process's budget, and who may spend it.
//!
//! At start tideway reads its soft `RLIMIT_NOFILE` and sets a reserve aside for the data plane
//! ([`Budget`]). The admin listener accepts nothing once the open descriptors reach
//! `limit - reserve`, so it can never take the descriptors a proxied connection needs. The
//! data plane has a process-wide cap on client connections ([`proxied`]), by default
//! `(limit - reserve) / 2` since a proxied connection holds two descriptors (client and
//! backend); a connection over the cap is answered (HTTP 503) or closed rather than left to
//! fail `accept`.
//!
//! Linux only: the limit is read from `/proc/self/limits`, the open count from
//! `/proc/self/fd` (at most every [`OPEN_COUNT_MAX_AGE`] for admin admissions, which count
//! what may have opened in between); elsewhere the limit is unknown and nothing is refused
//! for it.
//! Imports nothing of tideway's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Descriptors kept for the data plane when `[server] fd_reserve` is not set: a quarter of
/// the soft limit, at least [`MIN_FD_RESERVE`] (and never more than half the limit).
pub const DEFAULT_FD_RESERVE_SHARE: usize = 4;
/// Smallest default reserve.
pub const MIN_FD_RESERVE: usize = 32;

/// The soft limit on open files, when it can be read.
pub fn soft_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(usize::MAX),
        n => n.parse().ok(),
    }
}

/// Reads of `/proc/self/fd` so far (by [`open_count`]).
static OPEN_COUNT_READS: AtomicUsize = AtomicUsize::new(0);

/// Descriptors open in this process now, when they can be counted: O(open descriptors).
pub fn open_count() -> Option<usize> {
    OPEN_COUNT_READS.fetch_add(1, Ordering::Relaxed);
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory being read is one of them.
    Some(dir.count().saturating_sub(1))
}

/// The descriptor budget: the soft limit and the part kept for the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The soft `RLIMIT_NOFILE` (None: unknown, nothing is refused for it).
    pub limit: Option<usize>,
    /// Descriptors the admin listener leaves to the data plane.
    pub reserve: usize,
}

impl Budget {
    /// The budget under `limit` with `reserve` (None: the default share).
    pub fn new(limit: Option<usize>, reserve: Option<usize>) -> Self {
        let reserve = reserve.unwrap_or_else(|| match limit {
            Some(l) => (l / DEFAULT_FD_RESERVE_SHARE)
                .max(MIN_FD_RESERVE)
                .min(l / 2),
            None => MIN_FD_RESERVE,
        });
        Budget { limit, reserve }
    }

    /// This process's budget, with the configured reserve (None: the default).
    pub fn of_process(reserve: Option<usize>) -> Self {
        Self::new(soft_limit(), reserve)
    }

    /// Descriptors the admin listener may see open before it stops accepting.
    pub fn admin_ceiling(&self) -> Option<usize> {
        self.limit.map(|l| l.saturating_sub(self.reserve))
    }

    /// The default process-wide cap on proxied client connections: `(limit - reserve) / 2`
    /// (0: no cap, when the limit is unknown or unlimited).
    pub fn default_connection_cap(&self) -> usize {
        match self.limit {
            Some(l) if l != usize::MAX => (l.saturating_sub(self.reserve) / 2).max(1),
            _ => 0,
        }
    }

    /// Whether the admin listener may take one more descriptor. `newest` is the descriptor
    /// just accepted: descriptors are handed out lowest first, so at least `newest` are open
    /// and a high number refuses without counting.
    pub fn admin_may_take(&self, newest: usize) -> bool {
        let Some(ceiling) = self.admin_ceiling() else {
            return true;
        };
        if newest >= ceiling {
            return false;
        }
        CENSUS.admit(ceiling, Instant::now(), proxied().open(), open_count)
    }
}

/// How long the admin listener reuses a count of `/proc/self/fd`, so that an admission check
/// costs O(1), not O(open descriptors), however fast connections come and go.
pub const OPEN_COUNT_MAX_AGE: Duration = Duration::from_millis(100);

/// The open-descriptor count admin admissions are checked against: read at most every
/// [`OPEN_COUNT_MAX_AGE`], and in between the last count plus what may have opened since
/// (each admin connection admitted, two descriptors per proxied connection over those open at
/// the read). Descriptors closed since are still counted until the next read: it errs towards
/// refusing, never towards eating into the reserve.
struct Census {
    last: Mutex<Option<Seen>>,
}

/// One read of the open count, and the admissions since.
struct Seen {
    at: Instant,
    /// Open descriptors at the read, the newest accepted one included.
    open: usize,
    /// Proxied connections open at the read.
    proxied: usize,
    /// Admin connections admitted since the read.
    admitted: usize,
}

impl Census {
    const fn new() -> Self {
        Census {
            last: Mutex::new(None),
        }
    }

    /// Whether a just-accepted admin connection keeps the open count within `ceiling`, with
    /// `proxied` connections open now; `count` reads the open count (called only when the last
    /// read is [`OPEN_COUNT_MAX_AGE`] old). Unknown counts refuse nothing.
    fn admit(
        &self,
        ceiling: usize,
        now: Instant,
        proxied: usize,
        count: impl FnOnce() -> Option<usize>,
    ) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match last.as_mut() {
            Some(seen) if now.saturating_duration_since(seen.at) < OPEN_COUNT_MAX_AGE => {
                let grown = 2 * proxied.saturating_sub(seen.proxied);
                // The newest descriptor is one more than the read and the admissions since.
                let open = seen.open + seen.admitted + 1 + grown;
                let ok = open <= ceiling;
                seen.admitted += usize::from(ok);
                ok
            }
            _ => {
                let Some(open) = count() else {
                    return true;
                };
                *last = Some(Seen {
                    at: now,
                    open,
                    proxied,
                    admitted: 0,
                });
                open <= ceiling
            }
        }
    }
}

static CENSUS: Census = Census::new();

/// The process-wide cap on proxied client connections (0: none), and how many are open.
pub struct ConnectionCap {
    cap: AtomicUsize,
    open: AtomicUsize,
}

/// One proxied connection counted against the cap; dropping it frees its place.
#[must_use]
pub struct Slot(&'static ConnectionCap);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionCap {
    const fn new() -> Self {
        ConnectionCap {
            cap: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        }
    }

    /// Set the cap (0: none). Connections already open stay.
    pub fn set(&self, cap: usize) {
        self.cap.store(cap, Ordering::Release);
    }

    /// The cap (0: none).
    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::Acquire)
    }

    /// Proxied connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A place for one more connection, or None when the process is full.
    pub fn try_take(&'static self) -> Option<Slot> {
        let cap = self.cap();
        let mut open = self.open.load(Ordering::Acquire);
        loop {
            if cap > 0 && open >= cap {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Slot(self)),
                Err(now) => open = now,
            }
        }
    }
}

static PROXIED: ConnectionCap = ConnectionCap::new();

/// The process-wide cap on proxied client connections (HTTP and TCP listeners).
pub fn proxied() -> &'static ConnectionCap {
    &PROXIED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_reserve_is_a_quarter_within_bounds() {
        assert_eq!(Budget::new(Some(1024), None).reserve, 256);
        assert_eq!(Budget::new(Some(100), None).reserve, 32);
        assert_eq!(Budget::new(Some(40), None).reserve, 20);
        assert_eq!(Budget::new(Some(1024), Some(10)).reserve, 10);
        assert_eq!(Budget::new(None, None).reserve, MIN_FD_RESERVE);
    }

    #[test]
    fn the_default_cap_halves_what_the_reserve_leaves() {
        assert_eq!(Budget::new(Some(256), None).default_connection_cap(), 96);
        assert_eq!(Budget::new(None, None).default_connection_cap(), 0);
        assert_eq!(
            Budget::new(Some(usize::MAX), None).default_connection_cap(),
            0
        );
    }

    #[test]
    fn a_high_descriptor_number_refuses_without_counting() {
        let b = Budget::new(Some(256), Some(64));
        assert!(!b.admin_may_take(192));
        assert!(!b.admin_may_take(500));
        assert!(Budget::new(None, None).admin_may_take(100_000));
    }

    #[test]
    fn many_admission_checks_in_a_row_do_not_read_proc_each_time() {
        let b = Budget::new(Some(1 << 20), Some(64));
        let calls = 1000;
        let before = OPEN_COUNT_READS.load(Ordering::Relaxed);
        for _ in 0..calls {
            assert!(b.admin_may_take(3));
        }
        let reads = OPEN_COUNT_READS.load(Ordering::Relaxed) - before;
        assert!(
            reads <= calls / 10,
            "{reads} reads of /proc/self/fd for {calls} checks"
        );
    }

    #[test]
    fn between_reads_admissions_and_proxied_connections_count_towards_the_ceiling() {
        let census = Census::new();
        let reads = std::cell::Cell::new(0);
        let count = |n| {
            let reads = &reads;
            move || {
                reads.set(reads.get() + 1);
                Some(n)
            }
        };
        let t = Instant::now();
        // Read: 6 open. Then 6 + 0 + 1 and 6 + 1 + 1 (the read, the admissions since, the
        // newest) without a read; 6 + 2 + 1 is over 8.
        assert!(census.admit(8, t, 0, count(6)));
        assert!(census.admit(8, t, 0, count(0)));
        assert!(census.admit(8, t, 0, count(0)));
        assert!(!census.admit(8, t, 0, count(0)));
        assert_eq!(reads.get(), 1);
        // The next read, once the last is old enough, starts over; a proxied connection
        // opened since counts for two.
        let later = t + OPEN_COUNT_MAX_AGE;
        assert!(census.admit(9, later, 1, count(6)));
        assert_eq!(reads.get(), 2);
        assert!(census.admit(9, later, 2, count(0)), "6 + 0 + 1 + 2");
        assert!(!census.admit(9, later, 2, count(0)), "6 + 1 + 1 + 2");
        assert_eq!(reads.get(), 2);
        // A count over the ceiling refuses; no count refuses nothing.
        let census = Census::new();
        assert!(!census.admit(9, t, 0, count(10)));
        assert!(census.admit(9, t + OPEN_COUNT_MAX_AGE, 0, || None));
    }

    #[test]
    fn this_process_limit_and_count_are_read() {
        assert!(soft_limit().is_some_and(|l| l > 0));
        assert!(open_count().is_some_and(|n| n >= 3));
    }

    #[test]
    fn a_full_cap_refuses_until_a_slot_is_dropped() {
        static CAP: ConnectionCap = ConnectionCap::new();
        CAP.set(2);
        let a = CAP.try_take().unwrap();
        let _b = CAP.try_take().unwrap();
        assert!(CAP.try_take().is_none());
        drop(a);
        assert_eq!(CAP.open(), 1);
        assert!(CAP.try_take().is_some());
        CAP.set(0);
        let many: Vec<_> = (0..10).filter_map(|_| CAP.try_take()).collect();
        assert_eq!(many.len(), 10);
    }
}
