use super::super::tests::{add, backend, config, controller};
use super::super::Controller;
use crate::pool::backend::State;
use crate::pool::diff::Diff;
use crate::pool::toggles::Toggles;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn heartbeat(id: &str, ttl: Duration) -> Diff {
    Diff::Heartbeat {
        upstream: "u".into(),
        id: id.into(),
        ttl,
    }
}

#[tokio::test(start_paused = true)]
async fn a_registration_lapses_at_its_expiry_and_heartbeats_queue_one_look() {
    let mut c = controller();
    assert_eq!(c.apply(add("a", 2001)), Ok(true));
    let first = c.next_deadline().expect("a look at the expiry");
    for _ in 0..100 {
        assert_eq!(c.apply(heartbeat("a", Duration::from_secs(30))), Ok(false));
    }
    assert_eq!(c.deadlines.len(), 1, "renewals queue nothing more");
    // The look falls, finds the registration renewed, and puts itself off: nothing published.
    let version = c.version();
    assert_eq!(c.serve_deadlines(first), 0);
    assert_eq!(c.version(), version);
    assert_eq!(c.deadlines.len(), 1);
    assert!(c.next_deadline().unwrap() >= first);
    let snap = c.current().load_full();
    assert_eq!(backend(&snap, "a").unwrap().state, State::Active);
    // A shorter TTL brings the look forward (moved, not added); this one lapses now.
    let later = c.next_deadline().unwrap();
    assert_eq!(c.apply(heartbeat("a", Duration::ZERO)), Ok(false));
    assert_eq!(c.deadlines.len(), 1);
    assert!(c.next_deadline().unwrap() < later);
    // Expiries are kept in whole milliseconds: the look is due within one. Let (paused) time
    // reach that instant itself (the registration's clock reads it too), then serve.
    let due = c.next_deadline().unwrap();
    assert!(due <= Instant::now() + Duration::from_millis(2));
    tokio::time::advance(due.saturating_duration_since(Instant::now())).await;
    assert_eq!(c.serve_deadlines(Instant::now()), 1);
    assert_eq!(c.version(), version + 1);
    let snap = c.current().load_full();
    assert_eq!(backend(&snap, "a").unwrap().state, State::Draining);
    // Later: the close spread starts, the drain deadline removes it, and nothing else is
    // queued.
    assert_eq!(
        c.serve_deadlines(Instant::now() + Duration::from_secs(60)),
        2
    );
    assert!(backend(&c.current().load_full(), "a").is_none());
    assert!(c.next_deadline().is_none());
}

#[test]
fn an_ejected_backend_is_readmitted_by_its_own_deadline_only() {
    let mut c = controller();
    let eject = || Diff::Eject {
        upstream: "u".into(),
        id: "127.0.0.1:1001".into(),
        reason: "test".into(),
    };
    let healthy = |c: &super::Controller| {
        backend(&c.current().load_full(), "127.0.0.1:1001")
            .unwrap()
            .healthy
    };
    assert_eq!(c.apply(eject()), Ok(true));
    assert!(!healthy(&c));
    let first = c.next_deadline().expect("a readmission deadline");
    assert_eq!(c.serve_deadlines(first), 1);
    assert!(healthy(&c));
    // Ejected again: a readmission made stale (here by a health verdict) does nothing.
    assert_eq!(c.apply(eject()), Ok(true));
    let second = c.next_deadline().unwrap();
    assert_eq!(
        c.apply(Diff::SetHealth {
            upstream: "u".into(),
            id: "127.0.0.1:1001".into(),
            healthy: true,
            reason: "test".into(),
        }),
        Ok(true)
    );
    assert_eq!(c.apply(eject()), Ok(true));
    assert_eq!(c.serve_deadlines(second), 0, "the stale one");
    assert!(!healthy(&c));
    let third = c.next_deadline().unwrap();
    assert_eq!(c.serve_deadlines(third), 1);
    assert!(healthy(&c));
}

#[test]
fn an_ejected_backend_stays_tripped_until_it_is_readmitted() {
    // The proxy's picks skip a backend whose failure streak tripped; the controller's
    // ejection reaches them only when its snapshot is published. Were the streak reset by the
    // ejection itself, a pick between the two would find the backend neither tripped nor held
    // out (nginx_suite's max_fails test saw a 7th request reach it, once in four CI runs).
    let mut c = controller();
    let id = "127.0.0.1:1001";
    let minute = Duration::from_secs(60);
    let live = backend(&c.current().load_full(), id).unwrap().live.clone();
    for _ in 0..3 {
        live.record_failure();
    }
    assert!(live.tripped(3, minute));
    let eject = Diff::Eject {
        upstream: "u".into(),
        id: id.into(),
        reason: "test".into(),
    };
    assert_eq!(c.apply(eject.clone()), Ok(true));
    assert!(live.tripped(3, minute), "still tripped while held out");
    // Readmitted by its deadline: failures count anew.
    let at = c.next_deadline().expect("a readmission deadline");
    assert_eq!(c.serve_deadlines(at), 1);
    assert!(backend(&c.current().load_full(), id).unwrap().healthy);
    assert!(!live.tripped(1, minute), "readmitted with no failures");
    // Readmitted by an active check: the same.
    live.record_failure();
    assert_eq!(c.apply(eject), Ok(true));
    assert!(live.tripped(1, minute));
    let up = Diff::SetHealth {
        upstream: "u".into(),
        id: id.into(),
        healthy: true,
        reason: "test".into(),
    };
    assert_eq!(c.apply(up), Ok(true));
    assert!(!live.tripped(1, minute), "readmitted with no failures");
}

#[test]
fn a_backend_kept_in_for_want_of_room_counts_its_failures_anew() {
    // The default max_ejection_percent (50) lets one of the two backends out at a time.
    let mut c = controller();
    let minute = Duration::from_secs(60);
    let eject = |id: &str| Diff::Eject {
        upstream: "u".into(),
        id: id.into(),
        reason: "test".into(),
    };
    assert_eq!(c.apply(eject("127.0.0.1:1001")), Ok(true));
    let live = backend(&c.current().load_full(), "127.0.0.1:1002")
        .unwrap()
        .live
        .clone();
    live.record_failure();
    assert!(live.tripped(1, minute));
    assert_eq!(c.apply(eject("127.0.0.1:1002")), Ok(false), "no room");
    assert!(
        backend(&c.current().load_full(), "127.0.0.1:1002")
            .unwrap()
            .healthy
    );
    assert!(!live.tripped(1, minute), "kept in: its failures count anew");
}

#[test]
fn the_tick_looks_only_at_retiring_and_ramping_backends() {
    let mut c = controller();
    for i in 0..1000u16 {
        assert_eq!(c.apply(add(&format!("r{i}"), 3000 + i)), Ok(true));
    }
    let watched = |c: &mut super::Controller| c.upstreams.get_mut("u").unwrap().backends.watched();
    assert!(
        watched(&mut c).is_empty(),
        "registrations with a TTL are not polled"
    );
    let version = c.version();
    assert!(!c.tick());
    assert_eq!(c.version(), version);
    // One retires while a connection is open: watched until that connection ends.
    let snap = c.current().load_full();
    let guard = backend(&snap, "r7").unwrap().live.begin();
    let retire = Diff::Retire {
        upstream: "u".into(),
        id: "r7".into(),
    };
    assert_eq!(c.apply(retire), Ok(true));
    assert_eq!(watched(&mut c), ["r7".into()]);
    assert!(!c.tick());
    drop(guard);
    assert!(c.tick());
    assert!(backend(&c.current().load_full(), "r7").is_none());
    assert!(watched(&mut c).is_empty());
}

#[test]
fn the_queue_holds_one_look_per_registration_whatever_the_heartbeats_and_removals() {
    let mut c = controller();
    assert_eq!(c.apply(add("a", 2001)), Ok(true));
    // Ever shorter TTLs: each moves the one look earlier rather than adding one.
    for ms in (0..200u64).rev() {
        let ttl = Duration::from_secs(20) + Duration::from_millis(ms * 10);
        assert_eq!(c.apply(heartbeat("a", ttl)), Ok(false));
        assert_eq!(c.deadlines.len(), 1);
    }
    // Registered and removed again and again: the looks leave with the backends.
    for i in 0..100u16 {
        let id = format!("gone{i}");
        assert_eq!(c.apply(add(&id, 4000 + i)), Ok(true));
        let remove = Diff::Remove {
            upstream: "u".into(),
            id: id.as_str().into(),
        };
        assert_eq!(c.apply(remove), Ok(true));
    }
    assert_eq!(c.deadlines.len(), 1);
    // A reload without the upstream takes its looks too.
    assert!(c.configure(&[]));
    assert!(c.deadlines.is_empty());
}

/// Active checks turned off by a reload: nothing will judge the backends they (or passive
/// health, which then leaves readmission to them) held out, so each is readmitted after
/// `fail_timeout`, as passive health alone does, and its ejection place is freed.
#[test]
fn backends_held_out_are_readmitted_after_fail_timeout_when_checks_go_off() {
    let mut cfg = config();
    cfg[0].policy.health = Some(crate::config::HealthConfig {
        kind: crate::config::HealthKind::Tcp,
        path: "/".into(),
        expect: (200, 399),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        rise: 1,
        fall: 1,
    });
    let mut c = Controller::new(&cfg, CancellationToken::new(), Toggles::in_memory());
    let (one, two) = ("127.0.0.1:1001", "127.0.0.1:1002");
    let verdict = |id: &str, healthy| Diff::SetHealth {
        upstream: "u".into(),
        id: id.into(),
        healthy,
        reason: "test".into(),
    };
    let eject = |id: &str| Diff::Eject {
        upstream: "u".into(),
        id: id.into(),
        reason: "test".into(),
    };
    c.apply(verdict(one, true)).unwrap();
    // Ejected by passive health (readmission left to the checks), the other found down.
    assert_eq!(c.apply(eject(one)), Ok(true));
    c.apply(verdict(two, false)).unwrap();
    assert!(c.next_deadline().is_none());
    cfg[0].policy.health = None;
    let reloaded = Instant::now();
    assert!(c.configure(&cfg));
    let at = c.next_deadline().expect("a readmission is scheduled");
    let fail_timeout = cfg[0].policy.passive.fail_timeout;
    assert!(at >= reloaded + fail_timeout && at <= Instant::now() + fail_timeout);
    let snap = c.current().load_full();
    assert!(backend(&snap, one).unwrap().ejected, "still out until then");
    assert_eq!(snap.upstream("u").unwrap().ejected.len(), 1);
    assert_eq!(c.serve_deadlines(at), 2);
    let snap = c.current().load_full();
    for id in [one, two] {
        let b = backend(&snap, id).unwrap();
        assert!(b.healthy && !b.ejected, "{id}");
    }
    assert!(snap.upstream("u").unwrap().ejected.is_empty());
    // Its ejection place is free again (one of two backends, at 50%).
    assert_eq!(c.apply(eject(two)), Ok(true));
}
