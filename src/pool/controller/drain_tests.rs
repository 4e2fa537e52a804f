//! A drain's own close spread ([`Diff::Drain`]): it replaces the upstream's for that drain
//! only, a drain under way keeps its own, and a drain that ends forgets it. On tokio's paused
//! clock, so the deadlines are exact.

use super::tests::{backend, controller};
use super::*;

const ID: &str = "127.0.0.1:1001";

fn drain(spread: Option<Duration>, operator: bool) -> Diff {
    Diff::Drain {
        upstream: "u".into(),
        id: ID.into(),
        spread,
        operator,
    }
}

#[tokio::test(start_paused = true)]
async fn a_drain_with_its_own_spread_uses_it_for_that_drain_only() {
    let s = Duration::from_secs;
    // drain_timeout 7 s, no close_spread: the upstream's spread is 80% of it, 5.6 s.
    let mut c = controller();
    let start = Instant::now();
    assert_eq!(c.apply(drain(Some(Duration::ZERO), true)), Ok(true));
    let snap = c.current().load_full();
    let b = backend(&snap, ID).unwrap();
    assert_eq!(b.state, State::Draining);
    assert_eq!(b.live.drain_spread(), Some(Duration::ZERO));
    // No spread to start: the one deadline is the drain's end.
    assert_eq!(c.next_deadline(), Some(start + s(7)));
    // Another drain asking for another spread changes nothing: the drain keeps its own.
    assert_eq!(c.apply(drain(Some(s(3)), false)), Ok(false));
    assert_eq!(c.next_deadline(), Some(start + s(7)));
    assert_eq!(b.live.drain_spread(), Some(Duration::ZERO));
    // At the deadline every tunnel is told to close at once: a window of no length.
    tokio::time::advance(s(7)).await;
    assert_eq!(c.serve_deadlines(Instant::now()), 1);
    assert!(b.close.is_cancelled());
    let (from, until) = b.live.closing_window().expect("a close window");
    assert_eq!(from, until);

    // Taken back: the spread goes with the drain.
    let active = Diff::Decide {
        upstream: "u".into(),
        id: ID.into(),
        state: State::Active,
    };
    assert_eq!(c.apply(active.clone()), Ok(true));
    assert_eq!(b.live.drain_spread(), None);
    // A drain without one spreads as the upstream says: from 1.4 s in to 7 s.
    let again = Instant::now();
    assert_eq!(c.apply(drain(None, false)), Ok(true));
    let b = backend(&c.current().load_full(), ID).unwrap().live.clone();
    assert_eq!(b.drain_spread(), Some(s(7).mul_f64(0.8)));
    assert_eq!(c.next_deadline(), Some(again + s(7) - s(7).mul_f64(0.8)));
    // And one with 3 s, from 4 s in to 7 s (the second drain's deadlines, still queued, no
    // longer apply).
    assert_eq!(c.apply(active), Ok(true));
    let third = Instant::now();
    assert_eq!(c.apply(drain(Some(s(3)), true)), Ok(true));
    assert_eq!(b.drain_spread(), Some(s(3)));
    tokio::time::advance(s(4)).await;
    c.serve_deadlines(Instant::now());
    let (from, until) = b.closing_window().expect("the spread under way");
    // The window is kept in whole milliseconds.
    let near = |a: Instant, b: Instant| a.max(b) - a.min(b) < Duration::from_millis(1);
    assert!(
        near(from, third + s(4)) && near(until, third + s(7)),
        "{:?}",
        (from - third, until - third)
    );
}
