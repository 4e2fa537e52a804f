//! A `limit_req` zone: one leaky bucket per client address, as nginx's
//! `ngx_http_limit_req_module` keeps them.
//!
//! Each bucket holds `excess` in thousandths of a request and the time it was last charged.
//! A request from an address finds its bucket drained by `rate × elapsed` and adds one request
//! (1000): above the listener's burst it is refused and the bucket is left as it was; otherwise
//! the bucket keeps the new excess. A new address starts at 0. Integer math throughout, as
//! nginx's (a rate of "1r/m" drains 16 thousandths a second).
//!
//! Bounded: the zone holds at most `entries` buckets, kept in least-recently-used order. Before
//! a new address gets a bucket, up to two of the oldest are dropped if idle for a minute and
//! drained to zero; when the zone is still full, the oldest is dropped whatever it holds, then
//! up to two more idle ones (nginx's `ngx_http_limit_req_expire`). nginx refuses a request when
//! even that frees nothing (its oldest entry is pinned by a request in flight); here no entry
//! is pinned between two locks, so the oldest can always go and a full zone never refuses.

use super::lru::Lru;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// How long a bucket must be idle before a newcomer may drop it (nginx: 60 s).
const IDLE_MS: u64 = 60_000;

/// One address's bucket.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Thousandths of a request above the rate.
    excess: u64,
    /// When it was last charged, in ms since the zone's epoch; None: never (a bucket created
    /// for a limit whose request then failed another one, as nginx's `last = 0`).
    last: Option<u64>,
}

/// What a look-up found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the burst: the excess this request brings the bucket to.
    Pass(u64),
    /// Over the burst: refused (the excess it would have brought).
    Busy(u64),
}

/// A named rate zone, shared by every listener that names it.
pub struct RateZone {
    pub name: Arc<str>,
    /// Thousandths of a request a second.
    pub milli_per_sec: u64,
    epoch: Instant,
    buckets: Mutex<Lru<Bucket>>,
}

impl RateZone {
    pub fn new(name: &str, milli_per_sec: u64, entries: usize) -> Self {
        RateZone {
            name: name.into(),
            // Never 0: delays divide by it (the config refuses a zero rate anyway).
            milli_per_sec: milli_per_sec.max(1),
            epoch: Instant::now(),
            buckets: Mutex::new(Lru::new(entries)),
        }
    }

    /// Milliseconds since the zone began.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The bucket drained over `ms`, with one request added.
    fn charged(&self, b: &Bucket, now: u64) -> u64 {
        let Some(last) = b.last else {
            return 0;
        };
        let drained = self.milli_per_sec.saturating_mul(now.saturating_sub(last)) / 1000;
        (b.excess + 1000).saturating_sub(drained)
    }

    /// Look `key` up against `burst` (thousandths): the request's verdict. With `commit`, a
    /// passing request is charged at once (the last limit of a request, nginx's `account`);
    /// otherwise [`RateZone::account`] charges it once every limit has passed.
    pub fn lookup(&self, key: IpAddr, burst: u64, commit: bool, now: u64) -> Verdict {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = buckets.touch(&key) {
            let excess = self.charged(b, now);
            if excess > burst {
                return Verdict::Busy(excess);
            }
            if commit {
                *b = Bucket {
                    excess,
                    last: Some(now),
                };
            }
            return Verdict::Pass(excess);
        }
        self.make_room(&mut buckets, now);
        let last = commit.then_some(now);
        buckets.insert(key, Bucket { excess: 0, last });
        Verdict::Pass(0)
    }

    /// Charge `key` for a request every limit let through (the limits before the last one).
    pub fn account(&self, key: IpAddr, now: u64) -> u64 {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let excess = match buckets.touch(&key) {
            Some(b) => {
                let excess = self.charged(b, now);
                *b = Bucket {
                    excess,
                    last: Some(now),
                };
                return excess;
            }
            None => 0,
        };
        // Dropped since the look-up: a fresh bucket, as a new address gets.
        self.make_room(&mut buckets, now);
        buckets.insert(
            key,
            Bucket {
                excess,
                last: Some(now),
            },
        );
        excess
    }

    /// Before a new bucket: drop up to two idle, drained ones from the old end; if the zone is
    /// still full, the oldest whatever it holds, and up to two more idle ones.
    fn make_room(&self, buckets: &mut Lru<Bucket>, now: u64) {
        self.drop_idle(buckets, now);
        if buckets.is_full() {
            buckets.pop_oldest();
            self.drop_idle(buckets, now);
        }
    }

    fn drop_idle(&self, buckets: &mut Lru<Bucket>, now: u64) {
        for _ in 0..2 {
            let Some(b) = buckets.oldest() else {
                return;
            };
            if let Some(last) = b.last {
                let idle = now.saturating_sub(last);
                let drained = self.milli_per_sec.saturating_mul(idle) / 1000;
                if idle < IDLE_MS || b.excess > drained {
                    return;
                }
            }
            buckets.pop_oldest();
        }
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_burst_passes_burst_plus_one_then_refuses_and_refusals_do_not_charge() {
        let z = RateZone::new("one", 16, 1000); // 1r/m
        let a = ip(1);
        let got: Vec<Verdict> = (0..6).map(|_| z.lookup(a, 3000, true, 5)).collect();
        assert_eq!(
            got,
            [
                Verdict::Pass(0),
                Verdict::Pass(1000),
                Verdict::Pass(2000),
                Verdict::Pass(3000),
                Verdict::Busy(4000),
                Verdict::Busy(4000),
            ]
        );
        // Another address has a bucket of its own.
        assert_eq!(z.lookup(ip(2), 0, true, 5), Verdict::Pass(0));
        assert_eq!(z.lookup(ip(2), 0, true, 5), Verdict::Busy(1000));
    }

    #[test]
    fn the_bucket_drains_at_the_rate_in_integer_thousandths() {
        let z = RateZone::new("one", 10_000, 1000); // 10r/s
        let a = ip(1);
        assert_eq!(z.lookup(a, 0, true, 0), Verdict::Pass(0));
        assert_eq!(z.lookup(a, 0, true, 50), Verdict::Busy(500));
        // 100 ms later one request has drained: it passes again.
        assert_eq!(z.lookup(a, 0, true, 100), Verdict::Pass(0));
        assert_eq!(z.lookup(a, 5000, true, 100), Verdict::Pass(1000));
        assert_eq!(z.lookup(a, 5000, true, 130), Verdict::Pass(1700));
    }

    #[test]
    fn an_uncommitted_new_bucket_is_charged_nothing() {
        let z = RateZone::new("one", 16, 1000);
        assert_eq!(z.lookup(ip(1), 0, false, 10), Verdict::Pass(0));
        assert_eq!(z.account(ip(1), 10), 0);
        assert_eq!(z.lookup(ip(1), 0, true, 10), Verdict::Busy(1000));
    }

    #[test]
    fn a_flood_of_addresses_stays_within_the_zone_and_evicts_the_oldest() {
        let z = RateZone::new("one", 16, 256);
        for n in 0..100_000 {
            assert!(matches!(z.lookup(ip(n), 0, true, 1), Verdict::Pass(_)));
            assert!(z.len() <= 256);
        }
        assert_eq!(z.len(), 256);
        // The newest are still held (refused again), the oldest were dropped (a fresh bucket).
        assert!(matches!(z.lookup(ip(99_999), 0, true, 1), Verdict::Busy(_)));
        assert_eq!(z.lookup(ip(0), 0, true, 1), Verdict::Pass(0));
    }

    #[test]
    fn idle_drained_buckets_make_room_before_a_full_zone_evicts() {
        let z = RateZone::new("one", 1000, 300); // 1r/s
        for n in 0..3 {
            z.lookup(ip(n), 0, true, 0);
        }
        // A minute on, the two oldest are idle and drained: a newcomer drops both.
        z.lookup(ip(10), 0, true, IDLE_MS);
        assert_eq!(z.len(), 2);
    }
}
