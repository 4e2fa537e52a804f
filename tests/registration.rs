//! Registration scope: what the register token may do, per upstream. Every refusal is a 4xx
//! JSON answer and leaves the pool exactly as it was; the admin token is not bound by it.

mod common;

use common::etcd::Etcd;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &str = "x-registration-secret";

async fn answer(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Register `id` at `addr` with the register token; the answer.
async fn register(p: &Proxy, body: Value) -> (u16, Value) {
    answer(
        p.admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
            .json(&body),
    )
    .await
}

/// A refusal: the status, a JSON error, and the pool unchanged.
async fn refused(p: &Proxy, r: reqwest::RequestBuilder, status: u16, says: &str) {
    let before = p.upstream_json().await["backends"].clone();
    let (got, body) = answer(r).await;
    assert_eq!(got, status, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains(says), "{error:?} should say {says:?}");
    let after = p.upstream_json().await["backends"].clone();
    let strip = |v: &Value| {
        let mut v = v.clone();
        for b in v.as_array_mut().unwrap() {
            // Clocks, not the pool: a registration's expiry and a drain's time left.
            let b = b.as_object_mut().unwrap();
            b.remove("expires_in_ms");
            b.remove("drain_ends_in_ms");
        }
        v
    };
    assert_eq!(strip(&before), strip(&after), "the pool changed");
}

#[tokio::test]
async fn ranges_outside_the_scope_are_refused() {
    let p = start_proxy("[upstream.app]\nbackends = []").await;
    for addr in [
        "8.8.8.8:80",
        "169.254.169.254:80",
        "169.254.10.1:80",
        "[fe80::1]:80",
        "[fd00:ec2::254]:80",
        "0.0.0.0:80",
    ] {
        let r = p
            .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
            .json(&json!({"addr": addr, "id": "x"}));
        refused(&p, r, 403, "outside the ranges").await;
    }
    // tideway's own addresses are never a registration's, nor mapped forms of refused ones.
    for addr in [
        p.http.to_string(),
        p.admin.to_string(),
        "[::ffff:169.254.169.254]:80".to_string(),
        "[::ffff:8.8.8.8]:80".to_string(),
    ] {
        let r = p
            .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
            .json(&json!({"addr": addr, "id": "x"}));
        let says = if addr.contains("::ffff") {
            "outside the ranges"
        } else {
            "tideway's own"
        };
        refused(&p, r, 403, says).await;
    }
    // An IPv6 registration without an id gets one that ids may hold.
    let (status, body) = register(&p, json!({"addr": "[::1]:7001"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "::1:7001");
    // Private and loopback addresses are in the default scope.
    assert_eq!(
        register(&p, json!({"addr": "10.1.2.3:80", "id": "ok"}))
            .await
            .0,
        201
    );
    // The admin token is not bound by the scope.
    let (status, _) = answer(
        p.admin_req(Method::POST, "/v1/upstreams/app/backends", ADMIN_TOKEN)
            .json(&json!({"addr": "8.8.8.8:80", "id": "admin-made"})),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn a_listed_metadata_host_and_a_custom_range() {
    let p = start_proxy(
        "[upstream.app]\nregistration = { allow = [\"169.254.169.254\", \"203.0.113.0/24\"] }\nbackends = []",
    )
    .await;
    assert_eq!(
        register(&p, json!({"addr": "169.254.169.254:80", "id": "m"}))
            .await
            .0,
        201
    );
    assert_eq!(
        register(&p, json!({"addr": "203.0.113.7:80", "id": "t"}))
            .await
            .0,
        201
    );
    let r = p
        .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
        .json(&json!({"addr": "10.0.0.1:80", "id": "private"}));
    refused(&p, r, 403, "outside the ranges").await;
}

#[tokio::test]
async fn only_the_registrations_own_secret_manages_it() {
    let p = start_proxy("[upstream.app]\nbackends = []").await;
    let b = backend("mine").await;
    let (status, body) = register(&p, json!({"addr": b.addr.to_string(), "id": "mine"})).await;
    assert_eq!(status, 201);
    let secret = body["secret"]
        .as_str()
        .expect("a new registration returns its secret");
    let path = |tail: &str| format!("/v1/upstreams/app/backends/mine{tail}");
    let wrong = "0123456789abcdef0123456789abcdef";
    // Someone else with the register token: no secret, or a wrong one.
    for given in [None, Some(wrong)] {
        let with = |r: reqwest::RequestBuilder| match given {
            Some(s) => r.header(SECRET, s),
            None => r,
        };
        refused(
            &p,
            with(p.admin_req(Method::PUT, &path("/heartbeat"), REGISTER_TOKEN)),
            403,
            "X-Registration-Secret",
        )
        .await;
        refused(
            &p,
            with(p.admin_req(Method::POST, &path("/drain"), REGISTER_TOKEN)),
            403,
            "X-Registration-Secret",
        )
        .await;
        refused(
            &p,
            with(p.admin_req(Method::DELETE, &path(""), REGISTER_TOKEN)),
            403,
            "X-Registration-Secret",
        )
        .await;
        refused(
            &p,
            with(
                p.admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
                    .json(&json!({"addr": b.addr.to_string(), "id": "mine", "weight": 9})),
            ),
            403,
            "X-Registration-Secret",
        )
        .await;
    }
    // The owner can.
    let (status, _) = answer(
        p.admin_req(Method::PUT, &path("/heartbeat"), REGISTER_TOKEN)
            .header(SECRET, secret),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = answer(
        p.admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
            .header(SECRET, secret)
            .json(&json!({"addr": b.addr.to_string(), "id": "mine"})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.get("secret").is_none(),
        "a refresh returns no new secret"
    );
    let (status, _) = answer(
        p.admin_req(Method::DELETE, &path(""), REGISTER_TOKEN)
            .header(SECRET, secret),
    )
    .await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn count_and_weight_limits() {
    let p = start_proxy(
        "[upstream.app]\nregistration = { max_backends = 2, max_weight = 5 }\nbackends = []",
    )
    .await;
    let r = p
        .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
        .json(&json!({"addr": "127.0.0.1:5001", "id": "heavy", "weight": 6}));
    refused(&p, r, 400, "limit of 5").await;
    assert_eq!(
        register(
            &p,
            json!({"addr": "127.0.0.1:5001", "id": "r1", "weight": 5})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        register(&p, json!({"addr": "127.0.0.1:5002", "id": "r2"}))
            .await
            .0,
        201
    );
    let r = p
        .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
        .json(&json!({"addr": "127.0.0.1:5003", "id": "r3"}));
    refused(&p, r, 403, "limit of 2 registrations").await;
}

/// With etcd the count limit holds for registrations racing through several instances: etcd
/// itself refuses a new registration once the upstream has `max_backends` of them.
#[tokio::test]
async fn racing_registrations_through_two_instances_stay_within_the_count_limit() {
    let etcd = Etcd::start().await;
    let upstream = "[upstream.app]\nregistration = { max_backends = 2 }\nbackends = []";
    let one = start_proxy_full(&etcd.store(), "", upstream).await;
    let two = start_proxy_full(&etcd.store(), "", upstream).await;
    let bodies = (1..=20)
        .map(|i| json!({"addr": format!("10.9.0.{i}:80"), "id": format!("r{i}")}))
        .collect();
    let mut statuses = Vec::new();
    for (status, body) in register_at_once(&[&one, &two], bodies).await {
        if status == 403 {
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains("limit of 2 registrations"), "{body}");
        }
        statuses.push(status);
    }
    statuses.sort();
    println!("20 racing registrations, max_backends = 2: {statuses:?}");
    assert_eq!(made(&statuses), 2, "{statuses:?}");
    let mut c = etcd.client().await;
    let held = c
        .get(
            "/tw/upstreams/app/backends/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(held.count(), 2, "registrations in etcd");
    // Both instances show the two winners.
    wait_until(Duration::from_secs(5), || async {
        one.backends().await.len() == 2 && two.backends().await.len() == 2
    })
    .await;
}

/// A burst of new registrations far below the limit all get in: each failed try at the
/// counted write means another one landed, so they are written one after another, never
/// turned away as contended.
#[tokio::test]
async fn a_burst_of_registrations_below_the_limit_all_get_in_with_etcd() {
    let etcd = Etcd::start().await;
    let upstream = "[upstream.app]\nregistration = { max_backends = 100 }\nbackends = []";
    let one = start_proxy_full(&etcd.store(), "", upstream).await;
    let two = start_proxy_full(&etcd.store(), "", upstream).await;
    let bodies = (1..=30)
        .map(|i| json!({"addr": format!("10.9.1.{i}:80"), "id": format!("b{i}")}))
        .collect();
    let statuses: Vec<u16> = register_at_once(&[&one, &two], bodies)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    assert_eq!(made(&statuses), 30, "{statuses:?}");
    wait_until(Duration::from_secs(5), || async {
        one.backends().await.len() == 30 && two.backends().await.len() == 30
    })
    .await;
}

#[test]
fn a_bad_range_is_a_config_error_with_its_line() {
    let text = "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n\n[upstream.app]\nregistration = { allow = [\"10.0.0.0/33\"] }\nbackends = []\n";
    let err = tideway::config::parse(text, std::path::Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("t.toml:6"), "{err}");
    assert!(err.contains("not an address or CIDR range"), "{err}");
}

#[tokio::test]
async fn every_change_is_audited_with_role_remote_before_and_after() {
    let a = backend("a").await;
    let p = start_proxy(&format!("[upstream.app]\n{}", backends_toml(&[(&a, 1)]))).await;
    let (status, _) = answer(
        p.admin_req(Method::PATCH, "/v1/upstreams/app/backends/a", ADMIN_TOKEN)
            .json(&json!({"weight": 7})),
    )
    .await;
    assert_eq!(status, 200);
    let r = p
        .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
        .json(&json!({"addr": "8.8.8.8:80", "id": "far"}));
    refused(&p, r, 403, "outside the ranges").await;
    let log = std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("tideway::audit"))
        .collect();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    let weight = audit[0];
    for part in [
        "set_weight",
        "admin",
        "127.0.0.1:",
        "\"weight\":1",
        "\"weight\":7",
        "applied",
    ] {
        assert!(weight.contains(part), "{part:?} missing in {weight}");
    }
    let far = audit[1];
    for part in ["register", "far", "absent", "refused: 8.8.8.8 is outside"] {
        assert!(far.contains(part), "{part:?} missing in {far}");
    }
    assert!(
        !log.contains(ADMIN_TOKEN) && !log.contains(REGISTER_TOKEN),
        "a token was logged"
    );
}

/// Issue 20: an operator's disable survives the registrant deleting and registering its
/// backend again, until the operator enables it (or deletes it).
#[tokio::test]
async fn an_operator_disable_outlives_the_registrant() {
    let (a, x) = (backend("a").await, backend("x").await);
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\n{}",
        backends_toml(&[(&a, 1)])
    ))
    .await;
    let reg = json!({"addr": x.addr.to_string(), "id": "x", "ttl": 3600});
    let (status, body) = register(&p, reg.clone()).await;
    assert_eq!(status, 201, "{body}");
    let mut secret = body["secret"].as_str().unwrap().to_string();
    let set_state = |state: &str| {
        p.admin_req(
            Method::POST,
            "/v1/upstreams/app/backends/x/state",
            ADMIN_TOKEN,
        )
        .json(&json!({ "state": state }))
    };
    let state = || async {
        let v = p.upstream_json().await;
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == "x")
            .map(|b| b["state"].as_str().unwrap().to_string())
    };
    assert_eq!(answer(set_state("disabled")).await.0, 200);

    // The registrant deletes and registers again at once (while it drains), then once it has
    // left the pool (a new registration, with a new secret).
    for gone_first in [false, true] {
        let (status, body) = answer(
            p.admin_req(
                Method::DELETE,
                "/v1/upstreams/app/backends/x",
                REGISTER_TOKEN,
            )
            .header(SECRET, &secret),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        if gone_first {
            wait_until(Duration::from_secs(5), || async { state().await.is_none() }).await;
        }
        let r = p
            .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
            .header(SECRET, &secret)
            .json(&reg);
        let (status, body) = answer(r).await;
        assert!(status == 200 || status == 201, "{status} {body}");
        if let Some(s) = body["secret"].as_str() {
            secret = s.to_string();
        }
        assert_eq!(
            state().await.as_deref(),
            Some("disabled"),
            "gone first: {gone_first}"
        );
        let c = reqwest::Client::new();
        for _ in 0..10 {
            assert_eq!(backend_id(&c, &p.url("/")).await, "a");
        }
    }

    // The operator enables it: it takes traffic again.
    assert_eq!(answer(set_state("active")).await.0, 200);
    assert_eq!(state().await.as_deref(), Some("active"));
    let c = reqwest::Client::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        seen.insert(backend_id(&c, &p.url("/")).await);
    }
    assert!(seen.contains("x"), "{seen:?}");

    // Disabled again, then deleted by the operator: the decision goes with it.
    assert_eq!(answer(set_state("disabled")).await.0, 200);
    p.deregister("x").await;
    wait_until(Duration::from_secs(5), || async { state().await.is_none() }).await;
    let (status, body) = register(&p, reg).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(state().await.as_deref(), Some("active"));
}

/// The same address under a new id does not undo an operator's disable or drain: the register
/// token is refused (409, the pool unchanged), while the decision stands on the old id, present
/// or gone; the admin token is not bound, and an operator's enable frees the address.
#[tokio::test]
async fn an_operator_disable_is_not_undone_by_a_new_id_for_the_same_address() {
    let (a, x) = (backend("a").await, backend("x").await);
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\n{}",
        backends_toml(&[(&a, 1)])
    ))
    .await;
    let addr = x.addr.to_string();
    let (status, body) = register(&p, json!({"addr": addr, "id": "x", "ttl": 3600})).await;
    assert_eq!(status, 201, "{body}");
    let secret = body["secret"].as_str().unwrap().to_string();
    let set_state = |id: &str, state: &str| {
        p.admin_req(
            Method::POST,
            &format!("/v1/upstreams/app/backends/{id}/state"),
            ADMIN_TOKEN,
        )
        .json(&json!({ "state": state }))
    };
    let only_a = || async {
        let c = reqwest::Client::new();
        for _ in 0..10 {
            assert_eq!(backend_id(&c, &p.url("/")).await, "a");
        }
    };
    let new_id = |id: &str| {
        p.admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
            .json(&json!({"addr": addr, "id": id, "ttl": 3600}))
    };
    for decided in ["disabled", "draining"] {
        assert_eq!(answer(set_state("x", decided)).await.0, 200);
        // In the pool under its old id: the address is refused under another.
        refused(&p, new_id("x2"), 409, "operator").await;
        only_a().await;
        assert_eq!(answer(set_state("x", "active")).await.0, 200);
    }
    // Disabled, then deleted by its registrant and gone from the pool: still refused.
    assert_eq!(answer(set_state("x", "disabled")).await.0, 200);
    let (status, body) = answer(
        p.admin_req(
            Method::DELETE,
            "/v1/upstreams/app/backends/x",
            REGISTER_TOKEN,
        )
        .header(SECRET, &secret),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let gone = || async {
        let v = p.upstream_json().await;
        !v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == "x")
    };
    wait_until(Duration::from_secs(5), gone).await;
    refused(&p, new_id("x2"), 409, "operator").await;
    only_a().await;
    // The admin token is not bound by it.
    let (status, body) = answer(
        p.admin_req(Method::POST, "/v1/upstreams/app/backends", ADMIN_TOKEN)
            .json(&json!({"addr": addr, "id": "x3", "ttl": 3600})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    p.deregister("x3").await;
    // The operator enables the id (out of the pool): the address may register again.
    assert_eq!(answer(set_state("x", "active")).await.0, 200);
    let (status, body) = answer(new_id("x2")).await;
    assert_eq!(status, 201, "{body}");
}

/// A registrar's late write (a refresh, a drain or a deregistration that insists on the
/// registration it proved to own) leaves a later registration of the same id alone.
#[tokio::test]
async fn writes_for_a_replaced_registration_leave_the_new_one_alone() {
    use tideway::store::{Registering, Store, StoreError};
    let etcd = Etcd::start().await;
    let store = Store::new(tideway::config::EtcdSettings {
        endpoints: vec![etcd.client_url.clone()],
        prefix: "/tw".into(),
        ..Default::default()
    });
    let ttl = Duration::from_secs(60);
    let write = |addr, owner, how| store.register("app", "x", addr, 1, ttl, Some(owner), how);
    let (first_addr, second_addr) = (
        "10.9.0.1:80".parse().unwrap(),
        "10.9.0.2:80".parse().unwrap(),
    );
    write(first_addr, "aaaa", Registering::New { max: None })
        .await
        .unwrap();
    let (owner, first) = store.owner("app", "x").await.unwrap();
    assert_eq!(owner.as_deref(), Some("aaaa"));
    assert!(store.deregister("app", "x", Some(first)).await.unwrap());
    write(second_addr, "bbbb", Registering::New { max: None })
        .await
        .unwrap();
    let (owner, second) = store.owner("app", "x").await.unwrap();
    assert_eq!(owner.as_deref(), Some("bbbb"));
    assert!(second > first);
    // The first registrant's writes, too late: each is refused, and etcd is unchanged.
    let refresh = write(first_addr, "aaaa", Registering::Refresh(first)).await;
    assert!(
        matches!(refresh, Err(StoreError::Taken { .. })),
        "{refresh:?}"
    );
    let drain = store
        .toggle(
            "app",
            "x",
            Some((tideway::pool::State::Draining, None)),
            None,
            Some(first),
        )
        .await;
    assert!(matches!(drain, Err(StoreError::Taken { .. })), "{drain:?}");
    let delete = store.deregister("app", "x", Some(first)).await;
    assert!(
        matches!(delete, Err(StoreError::Taken { .. })),
        "{delete:?}"
    );
    let mut c = etcd.client().await;
    let value = c.get("/tw/upstreams/app/backends/x", None).await.unwrap();
    let value = String::from_utf8_lossy(value.kvs()[0].value()).into_owned();
    assert!(
        value.contains("10.9.0.2:80") && value.contains("bbbb"),
        "{value}"
    );
    let toggles = c.get("/tw/upstreams/app/state/x", None).await.unwrap();
    assert!(toggles.kvs().is_empty(), "no toggle was written");
    // The second registrant's, with its own registration's revision, go through.
    write(second_addr, "bbbb", Registering::Refresh(second))
        .await
        .unwrap();
    store
        .toggle(
            "app",
            "x",
            Some((tideway::pool::State::Draining, None)),
            None,
            Some(second),
        )
        .await
        .unwrap();
    assert!(store.deregister("app", "x", Some(second)).await.unwrap());
}
