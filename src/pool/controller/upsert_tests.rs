//! [`Diff::Upsert`] (an etcd put) and a re-list ([`Diff::Reset`]) change what they name and
//! mark only that, so the publish after them visits the changed backends alone, whatever the
//! upstream's size.

use super::tests::{backend, controller, spec};
use super::*;

fn etcd(id: &str, port: u16, weight: u32) -> BackendSpec {
    BackendSpec {
        source: Source::Etcd,
        weight,
        ..spec(id, port)
    }
}

fn upsert(id: &str, port: u16, weight: u32) -> Diff {
    Diff::Upsert {
        upstream: "u".into(),
        backend: etcd(id, port, weight),
    }
}

/// A controller with 1,000 etcd backends `e0`..`e999`, published.
fn large() -> Controller {
    let mut c = controller();
    let backends = (0..1000)
        .map(|i| etcd(&format!("e{i}"), 5000 + i, 1))
        .collect();
    let reset = Diff::Reset {
        upstream: "u".into(),
        source: Source::Etcd,
        backends,
    };
    assert_eq!(c.apply(reset), Ok(true));
    c
}

fn marked(c: &Controller) -> usize {
    c.upstreams["u"].backends.changed_len()
}

#[test]
fn an_upsert_marks_only_its_backend_and_a_repeat_publishes_nothing() {
    let mut c = large();
    assert!(c.upsert("u", etcd("new", 7000, 2), Instant::now()));
    assert_eq!(marked(&c), 1);
    c.publish();
    assert!(c.upsert("u", etcd("e7", 5007, 3), Instant::now()));
    assert_eq!(marked(&c), 1);
    c.publish();
    let v = c.version();
    assert_eq!(c.apply(upsert("e7", 5007, 3)), Ok(false));
    assert_eq!(c.version(), v);
    let snap = c.current().load_full();
    assert_eq!(backend(&snap, "e7").unwrap().weight, 3);
    assert_eq!(backend(&snap, "new").unwrap().addr, tests::addr(7000));
    assert_eq!(snap.upstream("u").unwrap().ids().count(), 1003);
}

#[test]
fn a_re_list_marks_only_what_differs() {
    let mut c = large();
    let mut backends: Vec<BackendSpec> = (1..1000)
        .map(|i| etcd(&format!("e{i}"), 5000 + i, 1))
        .collect();
    backends[0].weight = 2; // e1
    assert!(c.reset("u", Source::Etcd, backends.clone()));
    // e0 went, e1 changed.
    assert_eq!(marked(&c), 2);
    c.publish();
    assert!(!c.reset("u", Source::Etcd, backends));
    assert_eq!(marked(&c), 0);
}

#[test]
fn an_upsert_takes_back_a_leaving_backend_and_keeps_an_operators_weight() {
    let mut c = controller();
    c.apply(upsert("e1", 4001, 1)).unwrap();
    c.apply(Diff::SetWeight {
        upstream: "u".into(),
        id: "e1".into(),
        weight: 4,
    })
    .unwrap();
    c.apply(Diff::Retire {
        upstream: "u".into(),
        id: "e1".into(),
    })
    .unwrap();
    assert_eq!(
        backend(&c.current().load(), "e1").unwrap().state,
        State::Draining
    );
    // Put again before it left: it stays, active, at the operator's weight, at its new address.
    assert_eq!(c.apply(upsert("e1", 4002, 1)), Ok(true));
    let snap = c.current().load_full();
    let e1 = backend(&snap, "e1").unwrap();
    assert_eq!(
        (e1.state, e1.weight, e1.addr),
        (State::Active, 4, tests::addr(4002))
    );
}

#[test]
fn an_upsert_out_of_range_is_refused_and_changes_nothing() {
    let mut c = controller();
    let v = c.version();
    for w in [0, crate::config::MAX_WEIGHT + 1] {
        assert_eq!(
            c.apply(upsert("e1", 4001, w)),
            Err(PoolError::InvalidWeight)
        );
    }
    assert_eq!(
        c.apply(Diff::Upsert {
            upstream: "nope".into(),
            backend: etcd("e1", 4001, 1),
        }),
        Err(PoolError::UnknownUpstream("nope".into()))
    );
    assert_eq!(c.version(), v);
    assert!(backend(&c.current().load(), "e1").is_none());
}

#[test]
fn a_reload_marks_only_the_static_backends_that_differ() {
    let mut cfg = tests::config();
    let template = cfg[0].backends[0].clone();
    cfg[0].backends = (0..1000u16)
        .map(|i| crate::config::StaticBackend {
            id: format!("s{i}"),
            addr: tests::addr(6000 + i),
            ..template.clone()
        })
        .collect();
    let mut c = controller();
    c.configure(&cfg);
    assert_eq!(marked(&c), 0, "configure publishes");
    // What one upstream's reload marks, before its publish.
    assert!(!c.configure_one(&cfg[0]), "the same config changes nothing");
    assert_eq!(marked(&c), 0);
    cfg[0].backends[7].disabled = true;
    assert!(c.configure_one(&cfg[0]));
    assert_eq!(marked(&c), 1, "only the disabled one");
}
