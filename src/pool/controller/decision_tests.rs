//! Operator decisions ([`Diff::Decide`]) stick to the id: a registrant that deregisters and
//! registers again does not undo them; an operator's enable or delete does.

use super::tests::{add, backend, controller};
use super::*;

fn decide(id: &str, state: State) -> Diff {
    Diff::Decide {
        upstream: "u".into(),
        id: id.into(),
        state,
    }
}

fn retire(id: &str) -> Diff {
    Diff::Retire {
        upstream: "u".into(),
        id: id.into(),
    }
}

fn state(c: &Controller, id: &str) -> Option<State> {
    backend(&c.current().load_full(), id).map(|b| b.state)
}

#[test]
fn a_disable_outlives_deregistration_and_registration() {
    for decided in [State::Disabled, State::Draining] {
        let mut c = controller();
        c.apply(add("r", 2001)).unwrap();
        assert!(c.apply(decide("r", decided)).unwrap());
        // Deregistered, registered again while leaving: still as the operator decided.
        c.apply(retire("r")).unwrap();
        c.apply(add("r", 2001)).unwrap();
        assert_eq!(state(&c, "r"), Some(decided));
        // Gone for good (drained and removed), then a new registration: still decided.
        c.apply(retire("r")).unwrap();
        c.tick();
        assert_eq!(state(&c, "r"), None, "removed once it has no connections");
        c.apply(add("r", 2001)).unwrap();
        assert_eq!(state(&c, "r"), Some(decided));
        // The registrant's own drain does not replace the decision.
        c.apply(Diff::SetState {
            upstream: "u".into(),
            id: "r".into(),
            state: State::Draining,
        })
        .unwrap();
        c.apply(retire("r")).unwrap();
        c.tick();
        c.apply(add("r", 2001)).unwrap();
        assert_eq!(state(&c, "r"), Some(decided));
        // The operator enables it: active, and a later re-registration starts active.
        assert!(c.apply(decide("r", State::Active)).unwrap());
        assert_eq!(state(&c, "r"), Some(State::Active));
        c.apply(retire("r")).unwrap();
        c.tick();
        c.apply(add("r", 2001)).unwrap();
        assert_eq!(state(&c, "r"), Some(State::Active));
    }
}

#[test]
fn an_operator_may_change_a_decision_on_an_absent_id_and_no_other() {
    let mut c = controller();
    c.apply(add("r", 2001)).unwrap();
    c.apply(decide("r", State::Disabled)).unwrap();
    c.apply(retire("r")).unwrap();
    c.tick();
    // Not in the pool, but its decision stuck: an enable ends it.
    assert_eq!(c.apply(decide("r", State::Active)), Ok(false));
    c.apply(add("r", 2001)).unwrap();
    assert_eq!(state(&c, "r"), Some(State::Active));
    // An id that never had a decision is unknown.
    assert!(matches!(
        c.apply(decide("nobody", State::Disabled)),
        Err(PoolError::UnknownBackend { .. })
    ));
}

#[test]
fn a_decision_holds_its_address_out_under_other_ids_unless_the_operator_adds_it() {
    let mut c = controller();
    c.apply(add("r", 2001)).unwrap();
    c.apply(decide("r", State::Disabled)).unwrap();
    let other = |id: &str, operator: bool| Diff::Add {
        upstream: "u".into(),
        backend: super::tests::spec(id, 2001),
        ttl: Some(Duration::from_secs(30)),
        operator,
    };
    let version = c.version();
    assert!(matches!(
        c.apply(other("r2", false)),
        Err(PoolError::Decided { ref id, state: State::Disabled, .. }) if id == "r"
    ));
    assert_eq!(c.version(), version, "a refusal publishes nothing");
    assert_eq!(state(&c, "r2"), None);
    // Another address is not held; the operator's own registration is not bound.
    c.apply(add("r3", 2002)).unwrap();
    assert_eq!(c.apply(other("r4", true)), Ok(true));
    assert_eq!(state(&c, "r4"), Some(State::Active));
    // Enabled: the address is free again.
    c.apply(decide("r", State::Active)).unwrap();
    assert_eq!(c.apply(other("r2", false)), Ok(true));
}
