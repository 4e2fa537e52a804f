use super::*;
use crate::config::{Balance, StaticBackend, UpstreamConfig, UpstreamPolicy};
use crate::pool::Verdict;
use std::net::SocketAddr;

pub(super) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub(super) fn config() -> Vec<UpstreamConfig> {
    vec![UpstreamConfig {
        name: "u".into(),
        policy: UpstreamPolicy {
            balance: Balance::RoundRobin,
            drain_timeout: Duration::from_secs(7),
            ..UpstreamPolicy::default()
        },
        backends: vec![
            StaticBackend {
                id: "127.0.0.1:1001".into(),
                addr: addr(1001),
                weight: 1,
                max_conns: 0,
                disabled: false,
                backup: false,
                max_fails: None,
                fail_timeout: None,
            },
            StaticBackend {
                id: "127.0.0.1:1002".into(),
                addr: addr(1002),
                weight: 2,
                max_conns: 0,
                disabled: false,
                backup: false,
                max_fails: None,
                fail_timeout: None,
            },
        ],
        names: Vec::new(),
    }]
}

pub(super) fn controller() -> Controller {
    Controller::new(&config(), CancellationToken::new(), Toggles::in_memory())
}

pub(super) fn spec(id: &str, port: u16) -> BackendSpec {
    BackendSpec {
        id: id.into(),
        addr: addr(port),
        weight: 1,
        max_conns: 0,
        source: Source::Http,
        server: Default::default(),
    }
}

pub(super) fn add(id: &str, port: u16) -> Diff {
    Diff::Add {
        upstream: "u".into(),
        backend: spec(id, port),
        ttl: Some(Duration::from_secs(30)),
        operator: false,
    }
}

pub(super) fn backend<'a>(snap: &'a Snapshot, id: &str) -> Option<&'a Backend> {
    snap.upstream("u").unwrap().backend(id)
}

#[test]
fn starts_with_static_backends_as_version_1() {
    let c = controller();
    let snap = c.current().load();
    assert_eq!(snap.version, 1);
    let ids: Vec<&str> = snap.upstream("u").unwrap().ids().map(|i| &**i).collect();
    assert_eq!(ids, ["127.0.0.1:1001", "127.0.0.1:1002"]);
}

#[test]
fn add_publishes_and_repeat_add_is_a_heartbeat() {
    let mut c = controller();
    assert_eq!(c.apply(add("a", 2001)), Ok(true));
    assert_eq!(c.version(), 2);
    let snap = c.current().load_full();
    let a = backend(&snap, "a").unwrap();
    assert_eq!(a.source, Source::Http);
    assert!(a.live.expires_in_ms().unwrap() > 29_000);
    // Same id, same address: refreshes the TTL, publishes nothing.
    assert_eq!(c.apply(add("a", 2001)), Ok(false));
    assert_eq!(c.version(), 2);
    // Same id, another address: refused, nothing changes.
    assert!(matches!(
        c.apply(add("a", 2002)),
        Err(PoolError::Conflict { .. })
    ));
    assert_eq!(c.version(), 2);
    assert_eq!(backend(&c.current().load(), "a").unwrap().addr, addr(2001));
}

#[test]
fn remove_publishes_and_unknown_ids_are_refused() {
    let mut c = controller();
    let rm = |id: &str| Diff::Remove {
        upstream: "u".into(),
        id: id.into(),
    };
    assert_eq!(c.apply(rm("127.0.0.1:1001")), Ok(true));
    assert!(backend(&c.current().load(), "127.0.0.1:1001").is_none());
    assert!(matches!(
        c.apply(rm("nope")),
        Err(PoolError::UnknownBackend { .. })
    ));
    assert_eq!(c.version(), 2);
    assert!(matches!(
        c.apply(Diff::Remove {
            upstream: "other".into(),
            id: "x".into()
        }),
        Err(PoolError::UnknownUpstream(_))
    ));
}

#[test]
fn set_state_publishes_once_and_drain_schedules_a_deadline() {
    let mut c = controller();
    let set = |state| Diff::SetState {
        upstream: "u".into(),
        id: "127.0.0.1:1001".into(),
        state,
    };
    assert_eq!(c.apply(set(State::Draining)), Ok(true));
    assert_eq!(c.apply(set(State::Draining)), Ok(false));
    assert_eq!(c.version(), 2);
    // Two deadlines in the controller's own queue: the start of the close spread (the last
    // 80% of drain_timeout: 1.4 s from now), and the drain's end, drain_timeout (7 s) from now.
    let spread_at = c.next_deadline().expect("the spread's start");
    let left = spread_at.saturating_duration_since(Instant::now());
    assert!(
        left > Duration::from_millis(1300) && left <= Duration::from_millis(1400),
        "{left:?}"
    );
    assert_eq!(c.serve_deadlines(Instant::now()), 0, "not due yet");
    let epoch = 1;
    let snap = c.current().load_full();
    let b = backend(&snap, "127.0.0.1:1001").unwrap();
    assert_eq!(b.state, State::Draining);
    assert!(!b.eligible());
    // The spread's start tells this drain's tunnels to close, each by the drain's end.
    let close = b.close.clone();
    assert_eq!(c.serve_deadlines(spread_at), 1);
    assert!(close.is_cancelled());
    let at = c.next_deadline().expect("the drain's end");
    let (_, until) = b.live.closing_window().expect("a spread window");
    assert!(
        until.max(at) - until.min(at) <= Duration::from_millis(1),
        "{until:?} {at:?}"
    );
    assert_eq!(c.serve_deadlines(at), 1);
    assert!(c.next_deadline().is_none());
    // Back to active: a fresh close signal, no spread window, and the old deadline no longer
    // applies.
    assert_eq!(c.apply(set(State::Active)), Ok(true));
    let snap = c.current().load_full();
    let b = backend(&snap, "127.0.0.1:1001").unwrap();
    assert!(!b.close.is_cancelled());
    assert!(b.live.closing_window().is_none());
    assert_eq!(
        c.drain_deadline("u", &"127.0.0.1:1001".into(), epoch),
        (false, false)
    );
}

#[test]
fn weight_and_health_publish_only_on_change() {
    let mut c = controller();
    let weight = |w| Diff::SetWeight {
        upstream: "u".into(),
        id: "127.0.0.1:1002".into(),
        weight: w,
    };
    assert_eq!(c.apply(weight(2)), Ok(false));
    assert_eq!(c.apply(weight(5)), Ok(true));
    assert_eq!(c.apply(weight(0)), Err(PoolError::InvalidWeight));
    let health = |h| Diff::SetHealth {
        upstream: "u".into(),
        id: "127.0.0.1:1002".into(),
        healthy: h,
        reason: "test".into(),
    };
    assert_eq!(c.apply(health(true)), Ok(false));
    assert_eq!(c.apply(health(false)), Ok(true));
    assert_eq!(c.version(), 3);
    let snap = c.current().load_full();
    let b = backend(&snap, "127.0.0.1:1002").unwrap();
    assert_eq!((b.weight, b.healthy), (5, false));
    assert_eq!(snap.upstream("u").unwrap().selector.eligible_count(), 1);
}

#[test]
fn heartbeat_refreshes_without_publishing() {
    let mut c = controller();
    c.apply(Diff::Add {
        upstream: "u".into(),
        backend: spec("a", 2001),
        ttl: Some(Duration::from_secs(1)),
        operator: false,
    })
    .unwrap();
    let v = c.version();
    let hb = Diff::Heartbeat {
        upstream: "u".into(),
        id: "a".into(),
        ttl: Duration::from_secs(60),
    };
    assert_eq!(c.apply(hb), Ok(false));
    assert_eq!(c.version(), v);
    let snap = c.current().load_full();
    assert!(backend(&snap, "a").unwrap().live.expires_in_ms().unwrap() > 59_000);
}

#[test]
fn reset_replaces_only_its_source_and_is_idempotent() {
    let mut c = controller();
    c.apply(add("h", 3001)).unwrap();
    let reset = |ids: &[(&str, u16)]| Diff::Reset {
        upstream: "u".into(),
        source: Source::Etcd,
        backends: ids
            .iter()
            .map(|(id, p)| BackendSpec {
                source: Source::Etcd,
                ..spec(id, *p)
            })
            .collect(),
    };
    assert_eq!(c.apply(reset(&[("e1", 4001), ("e2", 4002)])), Ok(true));
    assert_eq!(c.apply(reset(&[("e1", 4001), ("e2", 4002)])), Ok(false));
    assert_eq!(c.apply(reset(&[("e2", 4002)])), Ok(true));
    let snap = c.current().load_full();
    let ids: Vec<&str> = snap.upstream("u").unwrap().ids().map(|i| &**i).collect();
    // Static and HTTP backends are untouched by an etcd reset.
    assert_eq!(ids, ["127.0.0.1:1001", "127.0.0.1:1002", "e2", "h"]);
}

#[test]
fn live_counters_survive_swaps() {
    let mut c = controller();
    let before = c.current().load_full();
    let live = backend(&before, "127.0.0.1:1001").unwrap().live.clone();
    let guard = live.begin();
    // Several unrelated changes publish new snapshots...
    c.apply(add("x", 5001)).unwrap();
    c.apply(Diff::SetWeight {
        upstream: "u".into(),
        id: "127.0.0.1:1001".into(),
        weight: 3,
    })
    .unwrap();
    let after = c.current().load_full();
    assert!(after.version > before.version);
    // ...and the counters are the same object, still counting the open connection.
    let b = backend(&after, "127.0.0.1:1001").unwrap();
    assert!(Arc::ptr_eq(&b.live, &live));
    assert_eq!(b.live.active(), 1);
    drop(guard);
    assert_eq!(b.live.active(), 0);
    assert_eq!(b.live.requests(), 1);
}

#[test]
fn removed_backend_keeps_counting_its_connections() {
    let mut c = controller();
    let snap = c.current().load_full();
    let guard = backend(&snap, "127.0.0.1:1001").unwrap().live.begin();
    c.apply(Diff::Remove {
        upstream: "u".into(),
        id: "127.0.0.1:1001".into(),
    })
    .unwrap();
    assert_eq!(guard.live().active(), 1);
}

#[tokio::test]
async fn handle_applies_through_the_task_and_waits_for_publish() {
    let c = controller();
    let pool = c.spawn();
    assert_eq!(pool.apply(add("a", 2001)).await, Ok(true));
    // Published before apply() returned.
    assert!(backend(&pool.snapshot(), "a").is_some());
    assert_eq!(pool.snapshot().version, 2);
}

/// Paused time: the ramp follows 10% + 90% x elapsed / slow_start exactly, republished by the
/// tick, and stops at full weight.
#[tokio::test(start_paused = true)]
async fn slow_start_ramps_effective_weight_after_recovery() {
    let mut cfg = config();
    cfg[0].policy.slow_start = Some(Duration::from_secs(10));
    let mut c = Controller::new(&cfg, CancellationToken::new(), Toggles::in_memory());
    let health = |h| Diff::SetHealth {
        upstream: "u".into(),
        id: "127.0.0.1:1001".into(),
        healthy: h,
        reason: "test".into(),
    };
    c.apply(health(false)).unwrap();
    c.apply(health(true)).unwrap();
    let snap = c.current().load_full();
    let b = backend(&snap, "127.0.0.1:1001").unwrap();
    // Just recovered: about 10% of its weight (1 -> 10 of 100 units).
    assert!(
        (10..=12).contains(&b.effective_weight),
        "{}",
        b.effective_weight
    );
    // The other backend joined when the controller started, so it ramps too: 10% of weight 2.
    assert_eq!(
        backend(&snap, "127.0.0.1:1002").unwrap().effective_weight,
        20
    );
    let weights = |c: &Controller| {
        let snap = c.current().load_full();
        ["127.0.0.1:1001", "127.0.0.1:1002"].map(|id| backend(&snap, id).unwrap().effective_weight)
    };
    // Half way: 55% of each weight.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(c.tick(), "a ramp republishes");
    assert_eq!(weights(&c), [55, 110]);
    tokio::time::advance(Duration::from_millis(4900)).await;
    assert!(c.tick());
    assert_eq!(weights(&c), [99, 198], "not full before slow_start is over");
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(c.tick());
    assert_eq!(weights(&c), [100, 200], "full weight at slow_start");
    assert!(!c.tick(), "the ramp is over: nothing more to publish");
    // Without slow start, effective weight is the weight.
    let plain = controller();
    let snap = plain.current().load_full();
    assert_eq!(
        backend(&snap, "127.0.0.1:1002").unwrap().effective_weight,
        200
    );
}

#[test]
fn a_toggled_weight_survives_a_reset_of_its_source() {
    let mut c = controller();
    let etcd = |w| Diff::Reset {
        upstream: "u".into(),
        source: Source::Etcd,
        backends: vec![BackendSpec {
            source: Source::Etcd,
            weight: w,
            ..spec("e1", 4001)
        }],
    };
    c.apply(etcd(1)).unwrap();
    c.apply(Diff::SetWeight {
        upstream: "u".into(),
        id: "e1".into(),
        weight: 4,
    })
    .unwrap();
    let v = c.version();
    // A re-list of the same set publishes nothing and keeps the operator's weight.
    assert_eq!(c.apply(etcd(1)), Ok(false));
    assert_eq!(c.version(), v);
    assert_eq!(backend(&c.current().load(), "e1").unwrap().weight, 4);
}

/// The controller's run loop, on paused time: a registration nobody renews lapses at its TTL
/// (draining), and its tunnels are told to close when the drain's close spread starts (the
/// last 80% of drain_timeout), each by the drain deadline, with nothing else sent to the
/// controller; neither happens a moment early.
#[tokio::test(start_paused = true)]
async fn a_lapsed_registration_is_closed_with_no_other_traffic() {
    let (ttl, drain) = (Duration::from_secs(2), Duration::from_secs(3));
    let mut cfg = config();
    cfg[0].policy.drain_timeout = drain;
    let pool = Controller::new(&cfg, CancellationToken::new(), Toggles::in_memory()).spawn();
    let start = Instant::now();
    pool.apply(Diff::Add {
        upstream: "u".into(),
        backend: spec("r", 3001),
        ttl: Some(ttl),
        operator: false,
    })
    .await
    .unwrap();
    let close = backend(&pool.snapshot(), "r").unwrap().close.clone();
    let guard = backend(&pool.snapshot(), "r").unwrap().live.begin();
    let state = || backend(&pool.snapshot(), "r").unwrap().state;
    // Expiries are kept in whole milliseconds and timers fire on millisecond ticks.
    let ms = Duration::from_millis(10);
    // Nothing else is sent: the expiry deadline finds the lapse...
    tokio::time::sleep_until(start + ttl - ms).await;
    assert_eq!(state(), State::Active, "not lapsed before its TTL");
    tokio::time::sleep_until(start + ttl + ms).await;
    assert_eq!(state(), State::Draining, "lapsed at its TTL");
    // ...then the spread starts, and tells the tunnels to close by the drain deadline.
    let spread = drain.mul_f64(crate::pool::spread::DEFAULT_CLOSE_SPREAD_SHARE);
    let from = start + ttl + drain - spread;
    let early = tokio::time::timeout_at(from - ms, close.cancelled()).await;
    assert!(early.is_err(), "closed before the spread's start");
    let closed = tokio::time::timeout_at(from + ms, close.cancelled()).await;
    assert!(
        closed.is_ok(),
        "tunnels told to close at the spread's start"
    );
    let until = backend(&pool.snapshot(), "r")
        .unwrap()
        .live
        .closing_window()
        .map(|w| w.1);
    let end = start + ttl + drain;
    assert!(
        until.is_some_and(|u| u.max(end) - u.min(end) <= 2 * ms),
        "{until:?}"
    );
    drop(guard);
}

#[tokio::test]
async fn the_task_ends_when_the_last_handle_is_dropped() {
    let (pool, task) = controller().into_task();
    let running = tokio::spawn(task.run());
    let other = pool.clone();
    drop(pool);
    assert!(!running.is_finished());
    drop(other);
    tokio::time::timeout(Duration::from_secs(2), running)
        .await
        .expect("the controller task ended")
        .unwrap();
}

#[tokio::test]
async fn health_verdicts_are_coalesced_never_dropped() {
    let pool = controller().spawn();
    let id: BackendId = "127.0.0.1:1001".into();
    // Far more verdicts than the diff queue holds; the last one says down.
    for i in 0..5_000 {
        pool.report(
            "u",
            id.clone(),
            Verdict::Health {
                healthy: i % 2 == 0,
                reason: format!("check {i}"),
            },
        );
    }
    let waited = tokio::time::timeout(Duration::from_secs(2), async {
        while backend(&pool.snapshot(), "127.0.0.1:1001").unwrap().healthy {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the last verdict (down) was applied");
}

#[tokio::test]
async fn toggles_are_on_disk_when_the_change_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::new(
        &config(),
        CancellationToken::new(),
        Toggles::load(dir.path()),
    );
    let (pool, task) = c.into_task();
    let running = tokio::spawn(task.run());
    pool.apply(Diff::SetWeight {
        upstream: "u".into(),
        id: "127.0.0.1:1001".into(),
        weight: 9,
    })
    .await
    .unwrap();
    // Acknowledged means on disk: a crash right now keeps the toggle.
    let saved = Toggles::load(dir.path());
    assert_eq!(saved.get("u", "127.0.0.1:1001").unwrap().weight, Some(9));
    drop(pool);
    running.await.unwrap();
}

#[test]
fn a_reload_takes_the_new_config_and_keeps_registrations() {
    let mut c = controller();
    c.apply(add("reg", 2001)).unwrap();
    // Same config again: nothing changes, nothing is published.
    let v = c.version();
    assert!(!c.configure(&config()));
    assert_eq!(c.version(), v);
    // New static set, a new policy, a new upstream.
    let mut cfg = config();
    cfg[0].backends.remove(0);
    cfg[0].backends[0].disabled = true;
    cfg[0].policy.drain_timeout = Duration::from_secs(9);
    let mut other = config().remove(0);
    other.name = "w".into();
    cfg.push(other);
    assert!(c.configure(&cfg));
    let snap = c.current().load_full();
    let u = snap.upstream("u").unwrap();
    let ids: Vec<&str> = u.backends.iter().map(|b| &*b.id).collect();
    assert_eq!(
        ids,
        ["127.0.0.1:1002", "reg"],
        "static re-listed, registration kept"
    );
    assert_eq!(u.backend("127.0.0.1:1002").unwrap().state, State::Disabled);
    assert_eq!(u.policy.drain_timeout, Duration::from_secs(9));
    assert!(snap.upstream("w").is_some());
    // An upstream left out of the config goes.
    assert!(c.configure(&cfg[1..]));
    assert!(c.current().load_full().upstream("u").is_none());
}

#[test]
fn a_registration_refresh_keeps_toggles_and_a_new_one_starts_clean() {
    let mut c = controller();
    c.apply(add("r", 2001)).unwrap();
    c.apply(Diff::SetWeight {
        upstream: "u".into(),
        id: "r".into(),
        weight: 9,
    })
    .unwrap();
    // The owner refreshes with its own weight: the operator's toggle stands.
    c.apply(add("r", 2001)).unwrap();
    assert_eq!(backend(&c.current().load_full(), "r").unwrap().weight, 9);
    // Deregistered (retiring), then registered again before it left: it takes traffic again.
    c.apply(Diff::Retire {
        upstream: "u".into(),
        id: "r".into(),
    })
    .unwrap();
    c.apply(add("r", 2001)).unwrap();
    let b = backend(&c.current().load_full(), "r").unwrap().clone();
    assert_eq!(b.state, State::Active);
    // Gone for good, then a new registration with the same id: no old toggle applies.
    c.apply(Diff::SetState {
        upstream: "u".into(),
        id: "r".into(),
        state: State::Draining,
    })
    .unwrap();
    c.apply(Diff::Remove {
        upstream: "u".into(),
        id: "r".into(),
    })
    .unwrap();
    c.apply(add("r", 2001)).unwrap();
    let b = backend(&c.current().load_full(), "r").unwrap().clone();
    assert_eq!((b.state, b.weight), (State::Active, 1));
}

#[test]
fn a_leaving_backend_stays_draining_when_its_state_key_goes_too() {
    // With etcd, a drain then a deregistration deletes the backend's key and its state key in
    // one transaction; the watch delivers Retire, then SetState Active (the toggle is gone).
    let mut c = controller();
    c.apply(add("r", 2001)).unwrap();
    for diff in [
        Diff::SetState {
            upstream: "u".into(),
            id: "r".into(),
            state: State::Draining,
        },
        Diff::Retire {
            upstream: "u".into(),
            id: "r".into(),
        },
    ] {
        c.apply(diff).unwrap();
    }
    let changed = c
        .apply(Diff::SetState {
            upstream: "u".into(),
            id: "r".into(),
            state: State::Active,
        })
        .unwrap();
    assert!(!changed);
    let b = backend(&c.current().load_full(), "r").unwrap().clone();
    assert_eq!(b.state, State::Draining);
    assert!(!b.eligible());
}

#[test]
fn the_ring_changed_in_place_maps_keys_as_one_built_from_scratch() {
    let mut cfg = config();
    cfg[0].policy.balance = Balance::Hash;
    let mut c = Controller::new(&cfg, CancellationToken::new(), Toggles::in_memory());
    let check = |c: &Controller, step: &str| {
        let snap = c.current().load_full();
        let up = snap.upstream("u").unwrap();
        let all: Vec<Backend> = up.backends.iter().cloned().collect();
        let fresh = crate::pool::Upstream::new("u".into(), up.policy.clone(), all);
        for k in 0..3000u32 {
            let key = k.wrapping_mul(2_654_435_761);
            assert_eq!(
                up.pick(key, |_| false).map(|b| b.id.clone()),
                fresh.pick(key, |_| false).map(|b| b.id.clone()),
                "{step}: key {key}"
            );
        }
    };
    check(&c, "start");
    // Enough backends to grow the ring's buckets more than once.
    for i in 0..60u16 {
        c.apply(add(&format!("r{i}"), 2000 + i)).unwrap();
    }
    check(&c, "60 registered");
    for i in (0..60u16).step_by(3) {
        c.apply(Diff::Remove {
            upstream: "u".into(),
            id: format!("r{i}").into(),
        })
        .unwrap();
    }
    check(&c, "every third removed");
    // Slots freed above are reused by new backends.
    for i in 100..110u16 {
        c.apply(add(&format!("r{i}"), 2000 + i)).unwrap();
    }
    check(&c, "slots reused");
    c.apply(Diff::SetState {
        upstream: "u".into(),
        id: "r1".into(),
        state: State::Disabled,
    })
    .unwrap();
    c.apply(Diff::SetWeight {
        upstream: "u".into(),
        id: "r2".into(),
        weight: 7,
    })
    .unwrap();
    c.verdict(
        "u".into(),
        "r4".into(),
        Verdict::Eject {
            reason: "test".into(),
        },
    );
    check(&c, "disabled, reweighted, unhealthy");
    // Switching away from hash and back rebuilds the ring.
    cfg[0].policy.balance = Balance::LeastConn;
    c.configure(&cfg);
    cfg[0].policy.balance = Balance::Hash;
    c.configure(&cfg);
    check(&c, "policy switched and back");
}

fn hash_controller() -> Controller {
    let mut cfg = config();
    cfg[0].policy.balance = Balance::Hash;
    Controller::new(&cfg, CancellationToken::new(), Toggles::in_memory())
}

fn keys() -> impl Iterator<Item = u32> {
    (0..5000u32).map(|k| k.wrapping_mul(2_654_435_761))
}

#[test]
fn a_policy_change_is_published_even_with_no_backends() {
    let mut cfg = config();
    cfg[0].backends.clear();
    let mut c = Controller::new(&cfg, CancellationToken::new(), Toggles::in_memory());
    cfg[0].policy.registration.max_weight = 5;
    assert!(c.configure(&cfg));
    let snap = c.current().load_full();
    assert_eq!(
        snap.upstream("u").unwrap().policy.registration.max_weight,
        5
    );
}

#[test]
fn an_old_snapshot_never_reaches_a_removed_backend_through_its_reused_slot() {
    let mut c = hash_controller();
    c.apply(add("x", 2001)).unwrap();
    let old = c.current().load_full();
    c.apply(Diff::Remove {
        upstream: "u".into(),
        id: "x".into(),
    })
    .unwrap();
    // The removal was published, so the next backend reuses x's slot.
    c.apply(add("y", 2002)).unwrap();
    let now = c.current().load_full();
    let slot = |s: &Snapshot, id: &str| s.upstream("u").unwrap().backends.slot_of(id);
    let (x, y) = (slot(&old, "x").unwrap(), slot(&now, "y").unwrap());
    assert_eq!(
        crate::pool::table::slot(x),
        crate::pool::table::slot(y),
        "y took x's slot"
    );
    assert_ne!(x, y, "under another generation");
    let up = old.upstream("u").unwrap();
    let to_x = keys()
        .filter(|&k| up.pick(k, |_| false).map(|b| &*b.id) == Some("x"))
        .count();
    assert_eq!(to_x, 0, "the old snapshot sent keys to removed x");
}

#[test]
fn a_policy_change_keeps_the_ring_and_a_new_ring_is_full_when_published() {
    let mut c = hash_controller();
    let before = c.current().load_full();
    let owners: Vec<Option<BackendId>> = keys()
        .map(|k| {
            before
                .upstream("u")
                .unwrap()
                .pick(k, |_| false)
                .map(|b| b.id.clone())
        })
        .collect();
    let up = c.upstreams.get_mut("u").unwrap();
    // A field the ring does not depend on: the snapshot stored maps every key as before.
    let mut p = (**up.policy()).clone();
    p.drain_timeout = Duration::from_secs(99);
    up.set_policy(Arc::new(p.clone()));
    let s = up.snapshot("u", Instant::now());
    let same = keys()
        .zip(&owners)
        .all(|(k, o)| s.pick(k, |_| false).map(|b| b.id.clone()) == *o);
    assert!(same, "keys moved on an unrelated policy change");
    up.published();
    // Away from hash and back: the new ring is full in the very snapshot that brings it.
    p.balance = Balance::RoundRobin;
    up.set_policy(Arc::new(p.clone()));
    up.snapshot("u", Instant::now());
    up.published();
    p.balance = Balance::Hash;
    up.set_policy(Arc::new(p));
    let s = up.snapshot("u", Instant::now());
    let same = keys()
        .zip(&owners)
        .all(|(k, o)| s.pick(k, |_| false).map(|b| b.id.clone()) == *o);
    assert!(same, "the new ring was not full before its first publish");
    up.published();
}

#[test]
fn a_weight_change_moves_only_the_keys_it_must_even_mid_publish() {
    let mut c = hash_controller();
    let before = c.current().load_full();
    let owner = |s: &crate::pool::Upstream, k: u32| s.pick(k, |_| false).map(|b| b.id.clone());
    let owners: Vec<_> = keys()
        .map(|k| owner(before.upstream("u").unwrap(), k))
        .collect();
    let up = c.upstreams.get_mut("u").unwrap();
    up.backends
        .get_mut("127.0.0.1:1001")
        .unwrap()
        .backend
        .weight = 3;
    // Between the store and the points' arrival: nothing moves yet.
    let mid = up.snapshot("u", Instant::now());
    assert!(keys().zip(&owners).all(|(k, o)| owner(&mid, k) == *o));
    up.published();
    // After: keys move only to the heavier backend.
    let mut gained = 0;
    for (k, o) in keys().zip(&owners) {
        let now = owner(&mid, k);
        if now != *o {
            assert_eq!(now.as_deref(), Some("127.0.0.1:1001"));
            gained += 1;
        }
    }
    assert!(
        gained > 500,
        "weight 1 -> 3 of 2 backends moved {gained} of 5000"
    );
    // And down again: back to where they were, with none moving elsewhere meanwhile.
    let up = c.upstreams.get_mut("u").unwrap();
    up.backends
        .get_mut("127.0.0.1:1001")
        .unwrap()
        .backend
        .weight = 1;
    let down = up.snapshot("u", Instant::now());
    assert!(keys().zip(&owners).all(|(k, o)| owner(&down, k) == *o));
    up.published();
}

#[test]
fn a_tag_is_never_handed_out_twice_however_often_slots_change_hands() {
    let mut c = controller();
    let mut seen = std::collections::HashSet::new();
    for i in 0..600u16 {
        let id = format!("churn{i}");
        c.apply(add(&id, 3000 + i)).unwrap();
        let tag = c
            .current()
            .load()
            .upstream("u")
            .unwrap()
            .backends
            .slot_of(&id);
        assert!(seen.insert(tag.unwrap()), "tag {tag:?} handed out twice");
        c.apply(Diff::Remove {
            upstream: "u".into(),
            id: id.as_str().into(),
        })
        .unwrap();
    }
}

#[test]
fn plain_hash_orders_static_backends_as_configured_then_the_others_by_id() {
    let mut cfg = config();
    cfg[0].policy.balance = Balance::Hash;
    cfg[0].policy.hash_consistent = false;
    // Config order 1002 then 1001: not id order.
    cfg[0].backends.reverse();
    let mut c = Controller::new(&cfg, CancellationToken::new(), Toggles::in_memory());
    c.apply(add("zz", 3001)).unwrap();
    c.apply(add("aa", 3002)).unwrap();
    let snap = c.current().load_full();
    let up = snap.upstream("u").unwrap();
    let tag = |id: &str| up.backends.slot_of(id).unwrap();
    let order = ["127.0.0.1:1002", "127.0.0.1:1001", "aa", "zz"];
    let weights = [2, 1, 1, 1];
    let want = crate::balance::Modulo::new(order.iter().zip(weights).map(|(id, w)| (tag(id), w)));
    for i in 0..500 {
        let key = crate::balance::Key::of(format!("key-{i}").as_bytes());
        let got = up
            .pick_key(key, |_| false)
            .map(|b| up.backends.slot_of(&b.id).unwrap());
        assert_eq!(got, want.pick(key, |_| true), "key-{i}");
    }
}
