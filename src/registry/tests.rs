//! The registry's checks, in process on a local pool, from a registrar's side: every refusal
//! leaves the pool's snapshot exactly as it was.

use super::*;
use crate::config::{StaticBackend, UpstreamConfig, UpstreamPolicy};
use crate::pool::toggles::Toggles;
use crate::pool::{Controller, Snapshot};
use tokio_util::sync::CancellationToken;

const U: &str = "u";

fn pool() -> PoolHandle {
    let mut policy = UpstreamPolicy::default();
    policy.registration.allow = vec!["10.0.0.0/8".parse().unwrap()];
    policy.registration.max_backends = 2;
    policy.registration.max_weight = 5;
    let upstream = UpstreamConfig {
        name: U.into(),
        policy,
        backends: vec![StaticBackend {
            id: "static".into(),
            addr: "10.9.9.9:80".parse().unwrap(),
            weight: 1,
            max_conns: 0,
            disabled: false,
            backup: false,
            max_fails: None,
            fail_timeout: None,
        }],
        names: Vec::new(),
    };
    let c = Controller::new(&[upstream], CancellationToken::new(), Toggles::in_memory());
    c.spawn()
}

fn registry() -> Registry {
    let pool = pool();
    pool.own().set(vec!["10.0.0.1:8080".parse().unwrap()]);
    Registry::local(pool, vec!["10.0.0.2:9000".parse().unwrap()])
}

fn reg(id: &str, addr: &str, weight: u32) -> Registration {
    Registration {
        id: id.into(),
        addr: addr.parse().unwrap(),
        weight,
        ttl: Duration::from_secs(30),
    }
}

fn registrar(secret: Option<&str>) -> Caller {
    Caller::Registrar {
        secret: secret.map(str::to_string),
    }
}

/// The pool as a registrar could change it: each backend's address, weight and state.
fn pool_of(r: &Registry) -> Vec<(String, SocketAddr, u32, State)> {
    let snap: Arc<Snapshot> = r.pool.snapshot();
    let up = snap.upstream(U).unwrap();
    up.ids()
        .map(|id| {
            let b = up.backend(id).unwrap();
            (id.to_string(), b.addr, b.weight, b.state)
        })
        .collect()
}

#[tokio::test]
async fn a_registrar_manages_only_its_own_registrations() {
    let r = registry();
    let mine = r
        .register(&registrar(None), U, reg("a", "10.0.0.5:80", 1))
        .await
        .unwrap();
    assert!(mine.fresh);
    let secret = mine.secret.expect("a new registration gets its secret");
    let before = pool_of(&r);
    // Without the secret, or with another, nothing of "a" is reachable.
    for who in [
        registrar(None),
        registrar(Some("not-it")),
        registrar(Some("")),
    ] {
        let refresh = r.register(&who, U, reg("a", "10.0.0.5:80", 1)).await;
        assert!(
            matches!(refresh, Err(RegistryError::NotYours { .. })),
            "{refresh:?}"
        );
        let grant = r.grant(&who, U, "a").await;
        assert!(
            matches!(grant, Err(RegistryError::NotYours { .. })),
            "{grant:?}"
        );
        assert_eq!(pool_of(&r), before);
    }
    // Nor a static backend, even with a valid secret of its own registration.
    let grant = r.grant(&registrar(Some(&secret)), U, "static").await;
    assert!(
        matches!(grant, Err(RegistryError::NotRegistered)),
        "{grant:?}"
    );
    let take = r
        .register(
            &registrar(Some(&secret)),
            U,
            reg("static", "10.9.9.9:80", 1),
        )
        .await;
    assert!(
        matches!(take, Err(RegistryError::NotRegistered)),
        "{take:?}"
    );
    // Toggles are the operator's.
    assert!(matches!(
        r.operator(&registrar(Some(&secret))),
        Err(RegistryError::OperatorOnly)
    ));
    assert_eq!(pool_of(&r), before);
    // With its secret: a refresh (no new secret), then a deregistration.
    let me = registrar(Some(&secret));
    let again = r
        .register(&me, U, reg("a", "10.0.0.5:80", 1))
        .await
        .unwrap();
    assert!(!again.fresh && again.secret.is_none());
    let grant = r.grant(&me, U, "a").await.unwrap();
    r.deregister(&grant).await.unwrap();
    // Draining, or already removed (it has no connections; the controller's tick may run).
    let state = r
        .pool
        .snapshot()
        .upstream(U)
        .unwrap()
        .backend("a")
        .map(|b| b.state);
    assert!(matches!(state, Some(State::Draining) | None), "{state:?}");
}

#[tokio::test]
async fn a_registrar_stays_within_its_scope_and_off_tideways_own_addresses() {
    let r = registry();
    let before = pool_of(&r);
    let refused = [
        ("outside the ranges", reg("x", "192.168.1.1:80", 1)),
        (
            "mapped form of an outside address",
            reg("x", "[::ffff:192.168.1.1]:80", 1),
        ),
        ("over the scope's weight", reg("x", "10.0.0.5:80", 6)),
        ("a listener", reg("x", "10.0.0.1:8080", 1)),
        ("the admin API", reg("x", "10.0.0.2:9000", 1)),
        ("the same id elsewhere", reg("static", "10.0.0.7:80", 1)),
    ];
    for (what, asked) in refused {
        let got = r.register(&registrar(None), U, asked).await;
        assert!(got.is_err(), "{what}: {got:?}");
        assert_eq!(pool_of(&r), before, "{what}");
    }
    // tideway's own addresses are refused to the operator too; the scope is not theirs.
    let own = r
        .register(&Caller::Operator, U, reg("x", "10.0.0.1:8080", 1))
        .await;
    assert!(matches!(own, Err(RegistryError::OwnAddress(_))), "{own:?}");
    r.register(&Caller::Operator, U, reg("op", "192.168.1.1:80", 9))
        .await
        .unwrap();
    // The count limit (2, the operator's counts) holds for registrars.
    r.register(&registrar(None), U, reg("b", "10.0.0.6:80", 1))
        .await
        .unwrap();
    let before = pool_of(&r);
    let full = r
        .register(&registrar(None), U, reg("c", "10.0.0.8:80", 1))
        .await;
    assert!(matches!(full, Err(RegistryError::Full { .. })), "{full:?}");
    assert_eq!(pool_of(&r), before);
}

#[tokio::test]
async fn the_weight_range_is_checked_before_any_write() {
    let r = registry();
    let op = r.operator(&Caller::Operator).unwrap();
    let before = pool_of(&r);
    for w in [0, crate::config::MAX_WEIGHT + 1] {
        let got = r
            .register(&Caller::Operator, U, reg("w", "10.0.0.5:80", w))
            .await;
        assert!(matches!(
            got,
            Err(RegistryError::Pool(PoolError::InvalidWeight))
        ));
        let got = r.set_weight(&op, U, "static", w).await;
        assert!(matches!(
            got,
            Err(RegistryError::Pool(PoolError::InvalidWeight))
        ));
        assert_eq!(pool_of(&r), before);
    }
    r.set_weight(&op, U, "static", crate::config::MAX_WEIGHT)
        .await
        .unwrap();
    let drained = r
        .drain(
            &r.grant(&Caller::Operator, U, "static").await.unwrap(),
            MAX_DRAIN_WAIT + Duration::from_secs(1),
            None,
        )
        .await;
    assert!(
        matches!(drained, Err(RegistryError::WaitTooLong)),
        "{drained:?}"
    );
    let snap = r.pool.snapshot();
    let b = snap.upstream(U).unwrap().backend("static").unwrap();
    assert_eq!(
        (b.weight, b.state),
        (crate::config::MAX_WEIGHT, State::Active)
    );
}

#[tokio::test]
async fn a_grant_is_for_the_registration_proven_not_a_later_one_of_the_id() {
    let r = registry();
    let a = r
        .register(&registrar(None), U, reg("x", "10.0.0.5:80", 1))
        .await
        .unwrap()
        .secret
        .unwrap();
    let grant = r.grant(&registrar(Some(&a)), U, "x").await.unwrap();
    // "x" leaves, and someone else registers the id before the grant is used.
    r.pool
        .apply(crate::pool::Diff::Remove {
            upstream: U.into(),
            id: "x".into(),
        })
        .await
        .unwrap();
    let b = r
        .register(&registrar(None), U, reg("x", "10.0.0.6:80", 1))
        .await
        .unwrap();
    assert!(b.fresh);
    // The new one is draining with a spread of its own: a stale grant asking for another
    // is refused as not its own, not told that spread (409).
    let op = r.grant(&Caller::Operator, U, "x").await.unwrap();
    let s = Duration::from_secs;
    assert_eq!(
        r.drain(&op, s(0), Some(s(5))).await.unwrap().spread,
        Some(s(5))
    );
    let before = pool_of(&r);
    let late = r.drain(&grant, s(0), Some(s(1))).await;
    assert!(
        matches!(late, Err(RegistryError::NotYours { .. })),
        "{late:?}"
    );
    let late = r.deregister(&grant).await;
    assert!(
        matches!(late, Err(RegistryError::NotYours { .. })),
        "{late:?}"
    );
    let late = r.drain(&grant, Duration::ZERO, None).await;
    assert!(
        matches!(late, Err(RegistryError::NotYours { .. })),
        "{late:?}"
    );
    assert_eq!(pool_of(&r), before, "the new registration is untouched");
}

#[tokio::test]
async fn racing_registrations_of_one_new_id_give_one_secret() {
    let r = Arc::new(registry());
    let race = (0..8).map(|_| {
        let r = r.clone();
        tokio::spawn(async move {
            r.register(&registrar(None), U, reg("a", "10.0.0.5:80", 1))
                .await
        })
    });
    let mut secrets = 0;
    for done in futures_join(race).await {
        if let Ok(Registered {
            secret: Some(_), ..
        }) = done
        {
            secrets += 1;
        }
    }
    assert_eq!(secrets, 1, "only the first registration of an id is new");
}

async fn futures_join<T>(tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap());
    }
    out
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let who = registrar(Some("s3cr3t-value"));
    let done = Registered {
        fresh: true,
        secret: Some("s3cr3t-value".into()),
    };
    for shown in [format!("{who:?}"), format!("{done:?}")] {
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}

/// A drain's own close spread: one longer than `drain_timeout` (30 s by default) is cut to
/// it; another one for a drain under way is refused, and leaves the pool and the drain as
/// they were; the same spread again (cut or not), or none, keeps the drain's own.
#[tokio::test]
async fn a_drain_spread_past_the_drain_timeout_is_cut_and_one_against_a_drain_under_way_refused() {
    let r = registry();
    let s = Duration::from_secs;
    let grant = || r.grant(&Caller::Operator, U, "static");
    let spread_of = || {
        let snap = r.pool.snapshot();
        let b = snap.upstream(U).unwrap().backend("static").unwrap();
        b.live.drain_spread()
    };
    assert_eq!(spread_of(), None);
    // Longer than the window: all of it, and the drain says so.
    let drained = r.drain(&grant().await.unwrap(), s(0), Some(s(31))).await;
    assert_eq!(drained.unwrap().spread, Some(s(30)));
    let draining = pool_of(&r);
    assert_eq!(draining[0].3, State::Draining);
    let other = r.drain(&grant().await.unwrap(), s(0), Some(s(0))).await;
    assert!(
        matches!(other, Err(RegistryError::OtherSpread { current, .. }) if current == s(30)),
        "{other:?}"
    );
    assert_eq!((pool_of(&r), spread_of()), (draining.clone(), Some(s(30))));
    for again in [Some(s(30)), Some(s(3600)), None] {
        let drained = r.drain(&grant().await.unwrap(), s(0), again).await;
        assert_eq!(drained.unwrap().spread, Some(s(30)), "{again:?}");
    }
    assert_eq!(pool_of(&r), draining);
}

/// A spread that is not whole milliseconds is taken as its whole milliseconds, as the drain
/// and its record keep it: asked again with the same value, the drain stands (no 409).
#[tokio::test]
async fn a_drain_spread_is_kept_in_whole_milliseconds_and_the_same_one_is_taken_again() {
    let r = registry();
    let grant = || r.grant(&Caller::Operator, U, "static");
    let asked = Some(Duration::from_micros(1500));
    for _ in 0..2 {
        let drained = r
            .drain(&grant().await.unwrap(), Duration::ZERO, asked)
            .await;
        assert_eq!(drained.unwrap().spread, Some(Duration::from_millis(1)));
    }
}
