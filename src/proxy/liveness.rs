//! A tunnel's clocks: when each peer was last heard from, when each direction's waiting bytes
//! last moved, and whether a ping is out. From these and the upstream's [`Liveness`] come the
//! tunnel's one timer's next wake and, when one passes, why the tunnel ends.
//!
//! Every idle WebSocket holds one [`Watch`], so it is small: times are milliseconds on a
//! process-wide clock in a `u32`, which wraps after 49 days; compared by wrapping difference,
//! they stay right as long as no wait is longer, and timeouts are capped at `u32::MAX` ms.
//!
//! Activity for `idle_timeout` is a byte read from either peer, or a ping tideway sent: a pong
//! answering tideway's ping counts, so a client that answers is never idle; one that does not
//! is closed by the ping timeout instead.

use crate::config::Liveness;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// Milliseconds on the process-wide clock (wrapping).
pub(super) fn now_ms() -> u32 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    // An hour back (where the monotonic clock allows): a test runtime's paused clock, which
    // starts at its own creation, is not behind it.
    let base = *BASE.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    });
    Instant::now().saturating_duration_since(base).as_millis() as u32
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// The peer a direction reads from: 0 the client (client to backend), 1 the backend.
pub(super) type Side = usize;
pub(super) const CLIENT: Side = 0;
pub(super) const BACKEND: Side = 1;

/// Why the watch ends a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expired {
    /// Nothing read from either peer for `idle_timeout`.
    Idle,
    /// A pinged peer sent nothing for `pong_timeout`.
    Ping,
    /// Bytes waited for a peer for `send_timeout` without one of them taken.
    Send,
}

/// A tunnel's timeouts and stamps (milliseconds, see the module doc).
pub(super) struct Watch {
    idle: u32,
    /// Low 29 bits, `ping_interval` in ms (0: no pings; capped at 6 days); the top three, the
    /// flags [`PINGED`] by side and [`PING_BACKEND`] (a separate byte would cost every tunnel
    /// 8 bytes of padding).
    ping: u32,
    pong: u32,
    /// 0: no send timeout.
    send: u32,
    /// By side: the last byte read from that peer, or tideway's ping to it, whichever is later.
    heard: [u32; 2],
    /// By side it reads from: when the bytes waiting to be written the other way last moved,
    /// or began to wait.
    stall: [u32; 2],
}

/// In `Watch::ping`: a ping to that side is out.
const PINGED: [u32; 2] = [1 << 29, 1 << 30];
/// In `Watch::ping`: the backend is pinged too.
const PING_BACKEND: u32 = 1 << 31;
/// In `Watch::ping`: the interval's bits.
const INTERVAL: u32 = (1 << 29) - 1;

impl Watch {
    /// A watch that closes after `idle` without a byte read, with neither pings nor a send
    /// timeout until [`Self::keep`].
    pub(super) fn new(idle: Duration) -> Self {
        let now = now_ms();
        Watch {
            idle: ms(idle),
            ping: 0,
            pong: 0,
            send: 0,
            heard: [now; 2],
            stall: [now; 2],
        }
    }

    /// Ping and time sends as `live` says.
    pub(super) fn keep(&mut self, live: &Liveness) {
        self.ping = live.ping_interval.map_or(0, |d| ms(d).clamp(1, INTERVAL));
        self.pong = ms(live.pong_timeout);
        self.send = live.send_timeout.map_or(0, |d| ms(d).max(1));
        if live.ping_backend && self.ping > 0 {
            self.ping |= PING_BACKEND;
        }
    }

    /// `send_timeout` in ms, if on.
    pub(super) fn send_ms(&self) -> Option<u32> {
        (self.send > 0).then_some(self.send)
    }

    /// `pong_timeout` in ms.
    pub(super) fn pong_ms(&self) -> u32 {
        self.pong
    }

    fn interval(&self) -> u32 {
        self.ping & INTERVAL
    }

    /// Does the tunnel ping `side`?
    pub(super) fn pings(&self, side: Side) -> bool {
        self.interval() > 0 && (side == CLIENT || self.ping & PING_BACKEND != 0)
    }

    /// Bytes moved in the direction reading from `side`: `read` from its peer, `wrote` some
    /// waiting bytes, or bytes `began` to wait.
    pub(super) fn moved(&mut self, side: Side, read: bool, wrote_or_began: bool, now: u32) {
        if read {
            self.heard[side] = now;
            self.ping &= !PINGED[side];
        }
        if wrote_or_began {
            self.stall[side] = now;
        }
    }

    /// Is a ping to `side` due (pings on, none out, nothing heard for `ping_interval`)?
    pub(super) fn ping_due(&self, side: Side, now: u32) -> bool {
        self.pings(side)
            && self.ping & PINGED[side] == 0
            && now.wrapping_sub(self.heard[side]) >= self.interval()
    }

    /// A ping went to `side`: it has `pong_timeout` to send something.
    pub(super) fn pinged(&mut self, side: Side, now: u32) {
        self.ping |= PINGED[side];
        self.heard[side] = now;
    }

    /// Has the direction reading from `side` waited `send_timeout` with bytes to write?
    pub(super) fn stalled(&self, side: Side, waiting: bool, now: u32) -> bool {
        waiting && self.send > 0 && now.wrapping_sub(self.stall[side]) >= self.send
    }

    /// What expired at `now`, or how long until the next deadline (ms). `waiting`: by side,
    /// whether that direction has bytes waiting; a ping due but not sent yet (no frame
    /// boundary) has no deadline of its own.
    pub(super) fn next(&self, waiting: [bool; 2], now: u32) -> Result<u32, Expired> {
        let left = |stamp: u32, limit: u32| {
            limit
                .checked_sub(now.wrapping_sub(stamp))
                .filter(|l| *l > 0)
        };
        let quiet = now
            .wrapping_sub(self.heard[CLIENT])
            .min(now.wrapping_sub(self.heard[BACKEND]));
        let mut next = self
            .idle
            .checked_sub(quiet)
            .filter(|l| *l > 0)
            .ok_or(Expired::Idle)?;
        for side in [CLIENT, BACKEND] {
            if waiting[side] && self.send > 0 {
                next = next.min(left(self.stall[side], self.send).ok_or(Expired::Send)?);
            }
            if !self.pings(side) {
                continue;
            }
            if self.ping & PINGED[side] != 0 {
                next = next.min(left(self.heard[side], self.pong).ok_or(Expired::Ping)?);
            } else if let Some(l) = left(self.heard[side], self.interval()) {
                next = next.min(l);
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ping: u64, pong: u64, send: u64, backend: bool) -> Liveness {
        Liveness {
            ping_interval: Some(Duration::from_millis(ping)),
            pong_timeout: Duration::from_millis(pong),
            ping_backend: backend,
            send_timeout: Some(Duration::from_millis(send)),
        }
    }

    #[test]
    fn a_ping_then_silence_expires_after_interval_plus_pong_timeout() {
        let mut w = Watch::new(Duration::from_secs(3600));
        w.keep(&live(300, 200, 60_000, false));
        let t0 = w.heard[CLIENT];
        assert_eq!(w.next([false; 2], t0), Ok(300));
        assert!(!w.ping_due(CLIENT, t0 + 299));
        assert!(w.ping_due(CLIENT, t0 + 300));
        assert!(!w.ping_due(BACKEND, t0 + 300), "the backend is not pinged");
        w.pinged(CLIENT, t0 + 300);
        assert_eq!(w.next([false; 2], t0 + 400), Ok(100));
        assert_eq!(w.next([false; 2], t0 + 500), Err(Expired::Ping));
        // Any byte from the client answers.
        w.moved(CLIENT, true, false, t0 + 450);
        assert_eq!(w.next([false; 2], t0 + 500), Ok(250));
    }

    #[test]
    fn an_answering_client_is_not_idle_and_a_stall_expires() {
        let mut w = Watch::new(Duration::from_millis(1000));
        w.keep(&live(300, 200, 500, true));
        let t0 = w.heard[CLIENT];
        w.moved(CLIENT, true, false, t0 + 900);
        w.moved(BACKEND, true, false, t0 + 900);
        assert_eq!(w.next([false; 2], t0 + 1100), Ok(100));
        // Bytes for the client wait from t0 + 1000 on; moving them restarts the clock.
        w.moved(BACKEND, false, true, t0 + 1000);
        assert_eq!(w.next([false, true], t0 + 1150), Ok(50));
        assert_eq!(w.next([false, true], t0 + 1500), Err(Expired::Send));
        assert!(w.stalled(BACKEND, true, t0 + 1500));
        assert!(!w.stalled(BACKEND, false, t0 + 1500));
        w.moved(CLIENT, false, true, t0 + 1200);
        assert!(!w.stalled(CLIENT, true, t0 + 1500), "its own clock");
    }

    #[test]
    fn clocks_compare_across_the_wrap_and_long_timeouts_are_capped() {
        let mut w = Watch::new(Duration::from_secs(100 * 86_400));
        assert_eq!(w.idle, u32::MAX);
        w.heard = [u32::MAX - 10; 2];
        assert_eq!(w.next([true; 2], 5), Ok(u32::MAX - 16));
        assert!(!w.pings(CLIENT));
        assert!(!w.stalled(CLIENT, true, 5), "no send timeout before keep()");
        w.keep(&live(u64::MAX / 2, 1, 1, true));
        assert_eq!(w.interval(), INTERVAL, "capped, flags apart");
        assert!(w.pings(BACKEND));
        assert_eq!(std::mem::size_of::<Watch>(), 32);
    }
}
