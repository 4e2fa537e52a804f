//! A backend as the pool sees it: identity, address, weight, operator state, health, and
//! where it came from. Plus its live counters, which outlive any one snapshot.
//!
//! Times in the counters (a registration's expiry, the last failure) are read from tokio's
//! clock ([`tokio::time::Instant`]), as the controller's are, so a test that pauses time
//! (`tokio::time::pause`) moves them too. Outside a runtime that clock is the system's.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A backend's stable identity: given at registration, the etcd key's last segment, or
/// `host:port` for static backends. The hash ring is built from ids.
pub type BackendId = Arc<str>;

/// Operator state of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Takes new connections (when healthy).
    Active,
    /// Takes no new connections; existing ones are left alone.
    Disabled,
    /// Takes no new connections; tunnels get a 1001 close by the drain timeout, spread over its
    /// last `close_spread` (see [`super::spread`]).
    Draining,
}

impl std::str::FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(State::Active),
            "disabled" => Ok(State::Disabled),
            "draining" => Ok(State::Draining),
            _ => Err(format!(
                "unknown state {s:?}; expected active, disabled or draining"
            )),
        }
    }
}

/// Where a backend came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Static,
    Http,
    Etcd,
}

/// What a source says about a backend: the part of a backend a diff can carry.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendSpec {
    pub id: BackendId,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Most active connections (requests and tunnels) at once; 0: no limit (nginx `max_conns`).
    pub max_conns: u32,
    pub source: Source,
    /// nginx's per-server parameters.
    pub server: ServerParams,
}

/// nginx's per-server parameters of a backend (static backends; registered ones take the
/// defaults).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerParams {
    /// Gets requests only when no other backend can take them (nginx's `backup`).
    pub backup: bool,
    /// Its own `max_fails` / `fail_timeout`; None: the upstream's.
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<Duration>,
}

pub use crate::balance::WEIGHT_SCALE;

/// A backend inside a snapshot.
#[derive(Clone, Debug)]
pub struct Backend {
    pub id: BackendId,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Weight used for selection, in hundredths of a weight unit: `weight * 100` normally,
    /// less while the backend is in slow start.
    pub effective_weight: u32,
    /// Most active connections at once; 0: no limit. A backend at its limit is skipped.
    pub max_conns: u32,
    pub state: State,
    pub healthy: bool,
    /// Unhealthy by passive health alone (ejected for `fail_timeout`, not failed by an active
    /// check): when nothing else can take a request, such backends still may (panic routing).
    pub ejected: bool,
    pub source: Source,
    /// nginx's per-server parameters (`backup`, `max_fails`, `fail_timeout`).
    pub server: ServerParams,
    /// Shared with every connection to this backend; survives snapshot swaps.
    pub live: Arc<Live>,
    /// Cancelled to close the tunnels opened under this state of the backend (drain deadline,
    /// shutdown). Replaced by a fresh token when a drained backend becomes active again.
    pub close: CancellationToken,
}

impl Backend {
    /// May a source add `addr` under this backend's id? Only as a refresh: the same address
    /// from the same source ([`Diff::Add`](super::Diff::Add) in the controller and the
    /// registry's checks before an etcd write both ask here).
    pub fn admits(&self, addr: SocketAddr, source: Source) -> Result<(), super::PoolError> {
        if self.addr != addr {
            return Err(super::PoolError::Conflict {
                id: self.id.to_string(),
                existing: self.addr.to_string(),
            });
        }
        if self.source != source {
            return Err(super::PoolError::OtherSource {
                id: self.id.to_string(),
                origin: self.source,
            });
        }
        Ok(())
    }

    /// Is the backend at its `max_conns` (so a pick must pass it by)?
    pub fn at_capacity(&self) -> bool {
        self.max_conns > 0 && self.live.active() >= u64::from(self.max_conns)
    }

    /// Consecutive failures that eject this backend (0: never), under `policy`.
    pub fn max_fails(&self, policy: &crate::config::UpstreamPolicy) -> u32 {
        self.server.max_fails.unwrap_or(policy.passive.max_fails)
    }

    /// How long a passive ejection of this backend lasts, under `policy`.
    pub fn fail_timeout(&self, policy: &crate::config::UpstreamPolicy) -> Duration {
        self.server
            .fail_timeout
            .unwrap_or(policy.passive.fail_timeout)
    }

    /// Has this backend just reached its `max_fails`, so that a pick passes it by before the
    /// controller's ejection is published (nginx checks `fails` at each pick)?
    pub fn tripped(&self, policy: &crate::config::UpstreamPolicy) -> bool {
        self.live
            .tripped(self.max_fails(policy), self.fail_timeout(policy))
    }

    /// May this backend get a new connection or request?
    pub fn eligible(&self) -> bool {
        self.state == State::Active && self.healthy && self.effective_weight > 0
    }
}

/// Per-backend live counters and the close signal for its tunnels.
#[derive(Debug, Default)]
pub struct Live {
    active: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    /// When a registration lapses, in milliseconds on the scale of [`EPOCH_MS`]; 0 = never.
    expires_at_ms: AtomicU64,
    /// The registration's TTL in milliseconds (0 = none), reused by heartbeats without one.
    ttl_ms: AtomicU64,
    /// Failures counted toward `max_fails` (passive health; nginx's `fails`): a success
    /// resets them only once `fail_timeout` has passed since the last failure, so failures
    /// with successes between them still add up, as in nginx.
    fail_streak: AtomicU64,
    /// When the last failure was, in milliseconds on the scale of [`EPOCH_MS`].
    last_failure_ms: AtomicU64,
    /// Did the last attempt fail?
    last_failed: AtomicBool,
    /// Bytes sent to the backend and received from it (HTTP as relayed, tunnels as they move).
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    /// WebSockets open to the backend (also in `active`, with HTTP requests and TCP tunnels).
    websockets: AtomicU64,
    /// What only some backends ever use (health transitions, a drain, upgrade admission),
    /// allocated the first time one is: the counters every backend uses stay one small heap
    /// block, so a pick across thousands of backends walks as little memory as it can.
    rare: OnceLock<Box<Rare>>,
}

/// The part of [`Live`] allocated on first use (see [`Live::rare`]).
#[derive(Debug, Default)]
struct Rare {
    /// Health transitions: to healthy, to unhealthy.
    went_up: AtomicU64,
    went_down: AtomicU64,
    /// A drain's close spread is under way: its tunnels close between these times, on the
    /// scale of [`EPOCH_MS`]; `until` 0 = none (see [`super::spread`]).
    closing_from_ms: AtomicU64,
    closing_until_ms: AtomicU64,
    /// While draining: when `drain_timeout` is over, on the scale of [`EPOCH_MS`]; 0 = not
    /// draining.
    drain_until_ms: AtomicU64,
    /// While draining: over how long before `drain_until_ms` the drain spreads its closes,
    /// in milliseconds.
    drain_spread_ms: AtomicU64,
    /// The backend's close signal as the controller last renewed it (taking a drain back):
    /// a tunnel whose drain was taken back while it waited to close listens to it again.
    /// Only the controller writes it.
    renewed_close: std::sync::Mutex<Option<CancellationToken>>,
    /// Upgrade admission (the upstream's `admission`): the data plane's state and counts.
    admission: super::admission::Gate,
}

/// The process-wide reference point for expiry times.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Where [`epoch`] sits on the millisecond scale of the counters: a time before it (a paused
/// test clock started before the epoch was first read) is still a distinct, ordered value,
/// and 0 stays free to mean "never".
const EPOCH_MS: u64 = 1 << 62;

/// `at` in milliseconds on the counters' scale (see [`EPOCH_MS`]).
pub(super) fn to_ms(at: Instant) -> u64 {
    let e = epoch();
    if at >= e {
        EPOCH_MS + (at - e).as_millis() as u64
    } else {
        EPOCH_MS - (e - at).as_millis() as u64
    }
}

/// The instant `ms` stands for on the counters' scale.
pub(super) fn from_ms(ms: u64) -> Instant {
    match ms.checked_sub(EPOCH_MS) {
        Some(after) => epoch() + Duration::from_millis(after),
        None => epoch() - Duration::from_millis(EPOCH_MS - ms),
    }
}

fn now_ms() -> u64 {
    to_ms(Instant::now())
}

impl Live {
    /// The rarely used part, allocated now if it was not yet.
    fn rare(&self) -> &Rare {
        self.rare.get_or_init(Box::default)
    }

    /// The rarely used part, if it was ever allocated (reads of a part never allocated see
    /// its zeroes).
    fn rare_if_any(&self) -> Option<&Rare> {
        self.rare.get().map(|r| &**r)
    }

    /// The rarely used part to write: allocated when a value is `set`; when one is cleared,
    /// only if it exists (a part never allocated already reads as cleared).
    fn rare_to_write(&self, set: bool) -> Option<&Rare> {
        if set {
            Some(self.rare())
        } else {
            self.rare_if_any()
        }
    }

    /// A drain's close spread starts, over the window `(from, until)`; None: the backend is no
    /// longer in it (taken back).
    pub(crate) fn set_closing(&self, window: Option<(Instant, Instant)>) {
        let Some(r) = self.rare_to_write(window.is_some()) else {
            return;
        };
        if let Some((from, _)) = window {
            r.closing_from_ms
                .store(to_ms(from).max(1), Ordering::Release);
        }
        let ms = window.map_or(0, |(_, u)| to_ms(u).max(1));
        r.closing_until_ms.store(ms, Ordering::Release);
    }

    /// The controller renewed the backend's close signal (a drain taken back): tunnels told
    /// to close by the old one and not yet closed go back to listening to `close`.
    pub(crate) fn renew_close(&self, close: CancellationToken) {
        *self
            .rare()
            .renewed_close
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(close);
    }

    /// The backend's close signal as last renewed (see [`Live::renew_close`]); None: never
    /// renewed.
    pub fn renewed_close(&self) -> Option<CancellationToken> {
        self.rare_if_any()?
            .renewed_close
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The drain's spread window, if one is under way.
    pub fn closing_window(&self) -> Option<(Instant, Instant)> {
        let r = self.rare_if_any()?;
        match r.closing_until_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some((
                from_ms(r.closing_from_ms.load(Ordering::Acquire)),
                from_ms(ms),
            )),
        }
    }

    /// Push the expiry to `ttl` from now (`None` = never expires).
    pub fn set_ttl(&self, ttl: Option<Duration>) {
        let at = ttl
            .map_or(0, |t| now_ms() + t.as_millis() as u64)
            .max(u64::from(ttl.is_some()));
        self.expires_at_ms.store(at, Ordering::Relaxed);
        self.ttl_ms
            .store(ttl.map_or(0, |t| t.as_millis() as u64), Ordering::Relaxed);
    }

    /// The registration's TTL, if it has one.
    pub fn ttl(&self) -> Option<Duration> {
        match self.ttl_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// When the registration lapses; `None` if it never does.
    pub fn expires_at(&self) -> Option<Instant> {
        match self.expires_at_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(from_ms(at)),
        }
    }

    /// Milliseconds until the registration lapses; `None` if it never does. 0 once lapsed.
    pub fn expires_in_ms(&self) -> Option<u64> {
        match self.expires_at_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at.saturating_sub(now_ms())),
        }
    }

    /// A drain began, to end at `until`, its 1001 closes spread over the last `spread` of it
    /// (None: the backend is not draining).
    pub fn set_drain(&self, drain: Option<(Instant, Duration)>) {
        let Some(r) = self.rare_to_write(drain.is_some()) else {
            return;
        };
        let spread = drain.map_or(0, |(_, s)| s.as_millis() as u64);
        r.drain_spread_ms.store(spread, Ordering::Relaxed);
        r.drain_until_ms
            .store(drain.map_or(0, |(u, _)| to_ms(u)), Ordering::Relaxed);
    }

    /// While draining: over how long before its deadline the drain spreads its 1001 closes
    /// (zero: all at the deadline).
    pub fn drain_spread(&self) -> Option<Duration> {
        let r = self.rare_if_any()?;
        match r.drain_until_ms.load(Ordering::Relaxed) {
            0 => None,
            _ => Some(Duration::from_millis(
                r.drain_spread_ms.load(Ordering::Relaxed),
            )),
        }
    }

    /// While draining: milliseconds until `drain_timeout` is over (0 once it is).
    pub fn drain_ends_in_ms(&self) -> Option<u64> {
        match self.rare_if_any()?.drain_until_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at.saturating_sub(now_ms())),
        }
    }

    /// Connections (HTTP requests in flight and open tunnels) right now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Requests and tunnels ever started.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failed connection attempts and failed requests ever seen.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Count a failure; returns how many failures now count toward `max_fails`.
    pub fn record_failure(&self) -> u64 {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.last_failure_ms.store(now_ms(), Ordering::Relaxed);
        self.last_failed.store(true, Ordering::Relaxed);
        self.fail_streak.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Count a success: the failures stop counting once `fail_timeout` has passed since the
    /// last one (nginx's round robin: a peer is "marked live" by a success after its check
    /// time moved past the last failure).
    pub fn record_success(&self, fail_timeout: Duration) {
        if self.last_failed.load(Ordering::Relaxed) {
            self.last_failed.store(false, Ordering::Relaxed);
        }
        if self.fail_streak.load(Ordering::Relaxed) != 0
            && now_ms().saturating_sub(self.last_failure_ms.load(Ordering::Relaxed))
                > fail_timeout.as_millis() as u64
        {
            self.fail_streak.store(0, Ordering::Relaxed);
        }
    }

    /// Have `max_fails` failures (0: never) been counted, the last within `fail_timeout`?
    /// The controller resets the count when it readmits the backend (or keeps it in, when
    /// `max_ejection_percent` leaves no room to eject it).
    pub fn tripped(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        max_fails > 0
            && self.fail_streak.load(Ordering::Relaxed) >= u64::from(max_fails)
            && now_ms().saturating_sub(self.last_failure_ms.load(Ordering::Relaxed))
                <= fail_timeout.as_millis() as u64
    }

    /// Did the last attempt on this backend fail?
    pub fn failing(&self) -> bool {
        self.last_failed.load(Ordering::Relaxed)
    }

    /// Count bytes sent to the backend.
    pub fn sent(&self, n: u64) {
        if n > 0 {
            self.bytes_sent.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Count bytes received from the backend.
    pub fn received(&self, n: u64) {
        if n > 0 {
            self.bytes_received.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Bytes sent to and received from the backend so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_sent.load(Ordering::Relaxed),
            self.bytes_received.load(Ordering::Relaxed),
        )
    }

    /// Count a health transition.
    pub fn transition(&self, healthy: bool) {
        let r = self.rare();
        let c = if healthy { &r.went_up } else { &r.went_down };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Health transitions so far: (to healthy, to unhealthy).
    pub fn transitions(&self) -> (u64, u64) {
        self.rare_if_any().map_or((0, 0), |r| {
            (
                r.went_up.load(Ordering::Relaxed),
                r.went_down.load(Ordering::Relaxed),
            )
        })
    }

    /// Upgrade admission to this backend (allocated on first use: only upstreams with
    /// `admission` use it).
    pub fn admission(&self) -> &super::admission::Gate {
        &self.rare().admission
    }

    /// Upgrade admission to this backend if it was ever used (a view reads it without
    /// allocating; None reads as all zeroes).
    pub fn admission_used(&self) -> Option<&super::admission::Gate> {
        self.rare_if_any().map(|r| &r.admission)
    }

    /// Start counting failures anew (a backend readmitted, or kept in for want of room).
    pub fn reset_streak(&self) {
        self.fail_streak.store(0, Ordering::Relaxed);
    }

    /// A WebSocket to this backend opened (`true`) or ended (`false`).
    pub fn websocket(&self, open: bool) {
        if open {
            self.websockets.fetch_add(1, Ordering::Relaxed);
        } else {
            self.websockets.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// WebSockets open to this backend now.
    pub fn websockets(&self) -> u64 {
        self.websockets.load(Ordering::Relaxed)
    }

    /// Start a connection; it ends when the guard drops.
    pub fn begin(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

/// Holds one unit of a backend's active count.
#[derive(Debug)]
pub struct ActiveGuard(Arc<Live>);

impl ActiveGuard {
    /// The counters this guard belongs to.
    pub fn live(&self) -> &Arc<Live> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_every_backend_uses_stay_one_small_block() {
        // 96 bytes before drains, admission and WebSocket counts came (~290 with them); 104
        // now: with the Arc's two counts a 120-byte block, in glibc's 128-byte chunk as
        // before. A pick across 10,000 backends walks these blocks (least_conn reads each
        // one's `active`), so what only some backends use lives in `Rare`, allocated on
        // first use.
        assert!(
            std::mem::size_of::<Live>() <= 104,
            "{}",
            std::mem::size_of::<Live>()
        );
        let live = Live::default();
        assert_eq!(live.transitions(), (0, 0));
        assert_eq!(live.drain_spread(), None);
        assert!(live.admission_used().is_none());
        live.set_drain(None);
        live.set_closing(None);
        assert!(
            live.rare.get().is_none(),
            "ending no drain allocates nothing"
        );
        live.transition(false);
        assert_eq!(live.transitions(), (0, 1));
    }

    #[test]
    fn max_fails_failures_trip_a_backend_until_the_streak_is_reset() {
        let live = Live::default();
        let minute = Duration::from_secs(60);
        live.record_failure();
        assert!(!live.tripped(2, minute), "one failure of two");
        live.record_failure();
        assert!(live.tripped(2, minute), "two failures of two");
        assert!(!live.tripped(0, minute), "max_fails 0 never trips");
        assert!(!live.tripped(3, minute), "two failures of three");
        live.reset_streak();
        assert!(
            !live.tripped(2, minute),
            "the controller's readmission resets the count"
        );
    }
}
