//! [`Diff::Resolved`]: a name's new answer applied to its upstream.

use super::*;
use crate::pool::toggles::Toggles;

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

fn ids(c: &Controller) -> Vec<String> {
    let snap = c.current().load();
    let mut ids: Vec<String> = snap.upstreams["u"]
        .backends
        .iter()
        .map(|b| b.id.to_string())
        .collect();
    ids.sort();
    ids
}

fn resolved(addrs: &[&str]) -> Diff {
    Diff::Resolved {
        upstream: "u".into(),
        host: "n.test".into(),
        addrs: addrs.iter().map(|a| ip(a)).collect(),
    }
}

#[test]
fn a_new_answer_adds_and_removes_the_names_backends_only() {
    let cfg = vec![crate::config::names::tests::upstream()];
    let mut c = Controller::new(&cfg, CancellationToken::new(), Toggles::in_memory());
    assert_eq!(
        ids(&c),
        ["a", "n.test:80@10.0.0.1", "n.test:80@10.0.0.2", "z"]
    );
    // An operator's decision on a name's backend holds while the name keeps that address.
    let id: BackendId = "n.test:80@10.0.0.2".into();
    c.apply(Diff::SetState {
        upstream: "u".into(),
        id: id.clone(),
        state: State::Disabled,
    })
    .unwrap();
    assert_eq!(
        c.apply(resolved(&["10.0.0.1", "10.0.0.2"])),
        Ok(false),
        "the same answer"
    );
    let v = c.version();
    assert_eq!(c.apply(resolved(&["10.0.0.2", "10.0.0.3"])), Ok(true));
    assert!(c.version() > v);
    assert_eq!(
        ids(&c),
        ["a", "n.test:80@10.0.0.2", "n.test:80@10.0.0.3", "z"]
    );
    let snap = c.current().load();
    let b = snap.upstreams["u"].backend(&id).unwrap();
    assert_eq!(b.state, State::Disabled);
    let new = snap.upstreams["u"].backend("n.test:80@10.0.0.3").unwrap();
    assert_eq!((new.weight, new.source), (3, Source::Static));
    // A diff for a name the upstream does not resolve (or an unknown upstream) changes nothing.
    let other = Diff::Resolved {
        upstream: "u".into(),
        host: "other.test".into(),
        addrs: vec![ip("10.0.0.9")],
    };
    assert_eq!(c.apply(other), Ok(false));
    // A reload whose config has the name no more: the stale answer is ignored.
    let mut plain = crate::config::names::tests::upstream();
    plain.names.clear();
    plain.backends.retain(|b| !b.id.starts_with("n.test"));
    c.configure(&[plain]);
    assert_eq!(ids(&c), ["a", "z"]);
    assert_eq!(c.apply(resolved(&["10.0.0.5"])), Ok(false));
    assert_eq!(ids(&c), ["a", "z"]);
}

#[test]
fn a_reload_whose_lookup_failed_keeps_the_last_addresses() {
    let cfg = vec![crate::config::names::tests::upstream()];
    let mut c = Controller::new(&cfg, CancellationToken::new(), Toggles::in_memory());
    c.apply(resolved(&["10.0.0.3"])).unwrap();
    // The reloaded config's lookup failed: the name has no addresses in it.
    let mut failed = crate::config::names::tests::upstream();
    failed.backends.retain(|b| !b.id.starts_with("n.test"));
    failed.backends.truncate(1);
    failed
        .backends
        .push(crate::config::names::tests::upstream().backends[3].clone());
    failed.names[0].addrs.clear();
    failed.names[0].count = 0;
    c.configure(&[failed]);
    assert_eq!(ids(&c), ["a", "n.test:80@10.0.0.3", "z"]);
    // And the next answer still applies.
    assert_eq!(c.apply(resolved(&["10.0.0.4"])), Ok(true));
    assert_eq!(ids(&c), ["a", "n.test:80@10.0.0.4", "z"]);
}
