//! Close spread (HAProxy's `close-spread-time`): when tideway itself closes tunnels (shutdown,
//! binary upgrade, drain), the closes are spread over a window rather than sent in one instant,
//! so the clients do not all reconnect at once.
//!
//! The window always ends by the deadline that applies: a margin before the shutdown grace for
//! a shutdown or an upgrade ([`shutdown_length`]), the upstream's `drain_timeout` for a drain
//! (a drain's window ends at it). Its length is `close_spread` where configured, else
//! [`DEFAULT_CLOSE_SPREAD_SHARE`] of that deadline; never longer than it. `close_spread = "0s"`
//! closes everything in one go: a drain's at its deadline (as before spreads), a shutdown's at
//! the signal.
//!
//! Nothing here is per tunnel: a tunnel whose close signal fires asks this module why and
//! over which window ([`cause`]): the process-wide shutdown state, or its backend's drain
//! window kept in [`Live`]. It then picks a uniformly random time in what is left of the
//! window ([`pick`]), waits for it on its own timer and closes. Thousands wake at once, so
//! some wake late: picking in what is left (rather than in the whole window, closing at once
//! when the pick is past) spreads the late ones too. If the wake-ups are spread evenly over
//! the first `D` of a window `W`, the busiest second gets at most `W/D * ln(W/(W-D))` times
//! its share (1.28x for `D` = 2 s of 5 s), where picking in the whole window would put up to
//! 2x its share in the second the last tunnel wakes. A close that comes from neither (the
//! rebalancer closing one session: it paces its closes itself) goes at once.
//!
//! Imports: `pool::backend` only.

use super::backend::{from_ms, to_ms, Live};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Share of the deadline's window the closes spread over when `close_spread` is not set. A
/// drain's spread ends at its deadline, so by default a drained backend's tunnels start
/// closing at 20% of `drain_timeout`; a shutdown's also keeps a margin before the grace ends
/// ([`shutdown_length`]).
pub const DEFAULT_CLOSE_SPREAD_SHARE: f64 = 0.8;

/// Why tideway closes a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Its backend's drain.
    Drain,
    /// The rebalancer moves it (paced by the rebalancer; no spread).
    Rebalance,
    /// Shutdown or binary upgrade.
    Shutdown,
}

/// The spread over a deadline `window`: `configured`, else [`DEFAULT_CLOSE_SPREAD_SHARE`] of
/// the window; never longer than the window.
pub fn length(configured: Option<Duration>, window: Duration) -> Duration {
    configured
        .unwrap_or_else(|| window.mul_f64(DEFAULT_CLOSE_SPREAD_SHARE))
        .min(window)
}

/// Least time a shutdown keeps free between its spread's end and the end of the grace, for
/// the last closes to go out (a tunnel waits for a frame boundary, then lingers: the
/// tunnel's `DEFAULT_LINGER`, 2 s) before the runtime drops what is left.
pub const DEFAULT_SHUTDOWN_MARGIN: Duration = Duration::from_secs(2);

/// Share of the grace a shutdown keeps free after its spread, if more than
/// [`DEFAULT_SHUTDOWN_MARGIN`].
pub const DEFAULT_SHUTDOWN_MARGIN_SHARE: f64 = 0.2;

/// A shutdown's spread within `grace`: as [`length`], but ending a margin before the grace
/// does (the larger of [`DEFAULT_SHUTDOWN_MARGIN`] and [`DEFAULT_SHUTDOWN_MARGIN_SHARE`] of
/// it), so every tunnel's 1001 goes out before the runtime drops. Also returns whether a
/// configured spread was cut to fit.
pub fn shutdown_length(configured: Option<Duration>, grace: Duration) -> (Duration, bool) {
    let margin = DEFAULT_SHUTDOWN_MARGIN.max(grace.mul_f64(DEFAULT_SHUTDOWN_MARGIN_SHARE));
    let cap = grace.saturating_sub(margin);
    let spread = length(configured, grace);
    (spread.min(cap), configured.is_some_and(|c| c > cap))
}

/// When the shutdown began and when its closes must all have gone, on [`Live`]'s millisecond
/// scale; 0: no shutdown under way.
static SHUTDOWN_FROM: AtomicU64 = AtomicU64::new(0);
static SHUTDOWN_UNTIL: AtomicU64 = AtomicU64::new(0);

/// A close window: from when, until when.
pub type Window = (Instant, Instant);
/// The process-wide close signal (every backend's close signal descends from it).
static SHUTDOWN: OnceLock<CancellationToken> = OnceLock::new();

/// Make `token` the process-wide shutdown signal a drain's spreading tunnels still listen to
/// (the first one given stays: one process, one shutdown).
pub fn watch_shutdown(token: &CancellationToken) {
    let _ = SHUTDOWN.set(token.clone());
}

/// The process-wide shutdown signal (a never-cancelled one if none was given).
pub fn shutdown_signal() -> CancellationToken {
    SHUTDOWN.get_or_init(CancellationToken::new).clone()
}

/// A shutdown (or upgrade) begins: its closes spread over `spread` from now. Call before
/// cancelling the shutdown signal, so each tunnel sees the window when it wakes.
pub fn begin_shutdown(spread: Duration) {
    let now = Instant::now();
    SHUTDOWN_FROM.store(to_ms(now).max(1), Ordering::Release);
    SHUTDOWN_UNTIL.store(to_ms(now + spread).max(1), Ordering::Release);
}

/// The shutdown's spread window, if a shutdown is under way.
pub fn shutdown_window() -> Option<Window> {
    match SHUTDOWN_UNTIL.load(Ordering::Acquire) {
        0 => None,
        until => Some((
            from_ms(SHUTDOWN_FROM.load(Ordering::Acquire)),
            from_ms(until),
        )),
    }
}

/// Why a tunnel on the backend with counters `live` was told to close, and the window its
/// close goes in (None: now). A shutdown comes first: it ends the process.
pub fn cause(live: Option<&Live>) -> (Cause, Option<Window>) {
    if let Some(w) = shutdown_window() {
        return (Cause::Shutdown, Some(w));
    }
    match live.and_then(Live::closing_window) {
        Some(w) => (Cause::Drain, Some(w)),
        None => (Cause::Rebalance, None),
    }
}

/// A close time uniformly at random in what is left of `window`; now if there is none or it
/// is over.
pub fn pick(window: Option<Window>) -> Instant {
    let now = Instant::now();
    match window {
        Some((from, until)) if until > now => {
            let from = from.max(now);
            from + (until - from).mul_f64(rand::random::<f64>())
        }
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_most_of_the_window_and_never_longer() {
        let w = Duration::from_secs(10);
        assert_eq!(length(None, w), Duration::from_secs(8));
        assert_eq!(
            length(Some(Duration::from_secs(3)), w),
            Duration::from_secs(3)
        );
        assert_eq!(length(Some(Duration::from_secs(30)), w), w);
        assert_eq!(length(Some(Duration::ZERO), w), Duration::ZERO);
    }

    #[test]
    fn a_shutdown_spread_ends_a_margin_before_the_grace() {
        let s = Duration::from_secs;
        // The default, 80%, fits a 10 s grace; a 5 s grace keeps the 2 s linger free.
        assert_eq!(shutdown_length(None, s(10)), (s(8), false));
        assert_eq!(shutdown_length(None, s(5)), (s(3), false));
        // A configured spread up to the grace less the margin stays; longer is cut, and said.
        assert_eq!(shutdown_length(Some(s(5)), s(8)), (s(5), false));
        assert_eq!(shutdown_length(Some(s(8)), s(8)), (s(6), true));
        assert_eq!(shutdown_length(Some(s(60)), s(30)), (s(24), true));
        // A grace no longer than the margin: every close at once.
        assert_eq!(shutdown_length(None, s(1)), (Duration::ZERO, false));
        assert_eq!(
            shutdown_length(Some(Duration::ZERO), s(1)),
            (Duration::ZERO, false)
        );
    }

    #[tokio::test]
    async fn a_drain_window_names_the_drain_and_picks_within_it() {
        let live = Live::default();
        assert_eq!(cause(Some(&live)), (Cause::Rebalance, None));
        let now = Instant::now();
        let until = now + Duration::from_secs(4);
        live.set_closing(Some((now, until)));
        let (why, window) = cause(Some(&live));
        assert_eq!(why, Cause::Drain);
        let (from, to) = window.expect("a window");
        let ms = Duration::from_millis(2);
        assert!(from.max(now) - from.min(now) < ms && to.max(until) - to.min(until) < ms);
        for _ in 0..100 {
            let at = pick(window);
            assert!(at >= now && at <= to);
        }
        // A window that is over: now.
        let old = (now - Duration::from_secs(60), now - Duration::from_secs(30));
        let before = Instant::now();
        let at = pick(Some(old));
        assert!(at >= before && at <= Instant::now());
        assert!(pick(None) <= Instant::now());
        live.set_closing(None);
        assert_eq!(cause(Some(&live)), (Cause::Rebalance, None));
    }
}
