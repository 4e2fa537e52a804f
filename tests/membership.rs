//! Membership at run time: registration, heartbeats, TTL, drain, toggles, auth, errors, ctl.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

async fn status_and_error(r: reqwest::RequestBuilder) -> (u16, String) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v["error"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn every_error_is_4xx_json_and_leaves_the_pool_unchanged() {
    let a = backend("a").await;
    let p = start_proxy(&format!("[upstream.app]\n{}", backends_toml(&[(&a, 1)]))).await;
    let reg = p
        .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
        .json(&json!({"addr": "127.0.0.1:4001", "id": "r1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reg.status(), 201);
    let before = p.backends().await;
    assert_eq!(before.len(), 2);

    let post = |path: &str, token: &str| p.admin_req(Method::POST, path, token);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            post("/v1/upstreams/app/backends", REGISTER_TOKEN).body("{not json"),
            400,
            "invalid JSON",
        ),
        (
            post("/v1/upstreams/app/backends", REGISTER_TOKEN).json(&json!({"addr": "nowhere"})),
            400,
            "invalid addr",
        ),
        (
            post("/v1/upstreams/app/backends", REGISTER_TOKEN)
                .json(&json!({"addr": "127.0.0.1:1", "colour": 1})),
            400,
            "unknown field",
        ),
        (
            post("/v1/upstreams/app/backends", REGISTER_TOKEN)
                .json(&json!({"addr": "127.0.0.1:1", "id": "bad id!"})),
            400,
            "invalid backend id",
        ),
        (
            post("/v1/upstreams/app/backends", REGISTER_TOKEN).body(vec![b' '; 70 * 1024]),
            413,
            "",
        ),
        (
            post("/v1/upstreams/nope/backends", REGISTER_TOKEN)
                .json(&json!({"addr": "127.0.0.1:1"})),
            404,
            "unknown upstream",
        ),
        (
            post("/v1/upstreams/app/backends", ADMIN_TOKEN)
                .json(&json!({"addr": "127.0.0.1:4002", "id": "r1"})),
            409,
            "already registered",
        ),
        (
            p.admin_req(
                Method::PUT,
                "/v1/upstreams/app/backends/ghost/heartbeat",
                REGISTER_TOKEN,
            ),
            404,
            "unknown",
        ),
        (
            p.admin_req(
                Method::DELETE,
                "/v1/upstreams/app/backends/ghost",
                ADMIN_TOKEN,
            ),
            404,
            "unknown backend",
        ),
        (
            post("/v1/upstreams/app/backends/r1/state", ADMIN_TOKEN)
                .json(&json!({"state": "sleeping"})),
            400,
            "unknown state",
        ),
        (
            p.admin_req(Method::PATCH, "/v1/upstreams/app/backends/r1", ADMIN_TOKEN)
                .json(&json!({"weight": 0})),
            400,
            "weight",
        ),
        // Auth: none, wrong, and the register token outside its rights.
        (
            reqwest::Client::new().get(p.admin_url("/v1/upstreams")),
            401,
            "missing bearer token",
        ),
        (
            p.admin_req(Method::GET, "/v1/upstreams", "wrong"),
            401,
            "invalid token",
        ),
        (
            p.admin_req(Method::GET, "/v1/upstreams", REGISTER_TOKEN),
            403,
            "register token",
        ),
        (
            post("/v1/upstreams/app/backends/r1/state", REGISTER_TOKEN)
                .json(&json!({"state": "disabled"})),
            403,
            "register token",
        ),
        (
            p.admin_req(
                Method::PATCH,
                "/v1/upstreams/app/backends/r1",
                REGISTER_TOKEN,
            )
            .json(&json!({"weight": 3})),
            403,
            "register token",
        ),
        (
            p.admin_req(
                Method::DELETE,
                &format!("/v1/upstreams/app/backends/{}", a.id),
                REGISTER_TOKEN,
            ),
            403,
            "registered over HTTP",
        ),
        (
            post(
                &format!("/v1/upstreams/app/backends/{}/drain", a.id),
                REGISTER_TOKEN,
            ),
            403,
            "registered over HTTP",
        ),
    ];
    for (i, (req, status, msg)) in cases.into_iter().enumerate() {
        let (got, error) = status_and_error(req).await;
        assert_eq!(got, status, "case {i}: {error}");
        if status != 413 {
            assert!(error.contains(msg), "case {i}: {error:?} lacks {msg:?}");
        }
        assert_eq!(p.backends().await, before, "case {i} changed the pool");
    }
}

#[tokio::test]
async fn endpoints_work_for_their_roles() {
    let p = start_proxy("[upstream.app]\nbackends = []").await;
    let b = backend("b").await;
    // Register (register token), repeat = heartbeat (200), explicit heartbeat.
    let r = p
        .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
        .json(&json!({"addr": b.addr.to_string(), "id": "b", "ttl": "20s", "weight": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let registered: Value = r.json().await.unwrap();
    let secret = registered["secret"].as_str().unwrap().to_string();
    let again = p
        .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
        .header("x-registration-secret", &secret)
        .json(&json!({"addr": b.addr.to_string(), "id": "b", "ttl": 20, "weight": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let hb = p
        .admin_req(
            Method::PUT,
            "/v1/upstreams/app/backends/b/heartbeat",
            REGISTER_TOKEN,
        )
        .header("x-registration-secret", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), 200);
    let hb: Value = hb.json().await.unwrap();
    assert_eq!(hb["ttl_ms"], 20_000, "a heartbeat keeps the registered TTL");
    // Admin: list, show, state, weight.
    let list: Value = p
        .admin_req(Method::GET, "/v1/upstreams", ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shown = &list["upstreams"][0]["backends"][0];
    assert_eq!(shown["id"], "b");
    assert_eq!(shown["source"], "http");
    assert_eq!(shown["healthy"], true);
    assert!(shown["expires_in_ms"].as_u64().unwrap() > 15_000);
    let st = p
        .admin_req(
            Method::POST,
            "/v1/upstreams/app/backends/b/state",
            ADMIN_TOKEN,
        )
        .json(&json!({"state": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(st.status(), 200);
    let w = p
        .admin_req(Method::PATCH, "/v1/upstreams/app/backends/b", ADMIN_TOKEN)
        .json(&json!({"weight": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 200);
    assert_eq!(
        p.backends().await,
        vec![("b".into(), b.addr.to_string(), "disabled".into(), 7)]
    );
    // Disabled: no traffic.
    assert_eq!(reqwest::get(p.url("/")).await.unwrap().status(), 503);
    // Register token: drain (own backend) and delete.
    let d: Value = p
        .admin_req(
            Method::POST,
            "/v1/upstreams/app/backends/b/drain?wait=5s",
            REGISTER_TOKEN,
        )
        .header("x-registration-secret", &secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // With the upstream's close spread: 80% of the default 30 s drain_timeout.
    assert_eq!(
        d,
        json!({"active_connections": 0, "drained": true, "close_spread_ms": 24_000})
    );
    let del = p
        .admin_req(
            Method::DELETE,
            "/v1/upstreams/app/backends/b",
            REGISTER_TOKEN,
        )
        .header("x-registration-secret", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 202);
    wait_until(Duration::from_secs(3), || async {
        p.backends().await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn registered_backend_gets_the_next_request_and_lapses_after_ttl() {
    let p = start_proxy("[upstream.app]\nbackends = []").await;
    let b = backend("fresh").await;
    let client = reqwest::Client::new();
    assert_eq!(client.get(p.url("/")).send().await.unwrap().status(), 503);
    let r = p
        .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
        .json(&json!({"addr": b.addr.to_string(), "id": "fresh", "ttl": "2s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // The very next request goes to it.
    assert_eq!(backend_id(&client, &p.url("/")).await, "fresh");
    let registered = Instant::now();
    // No heartbeats: gone within ttl + 1 s.
    wait_until(Duration::from_secs(5), || async {
        p.backends().await.is_empty()
    })
    .await;
    let gone_after = registered.elapsed();
    println!("registered with ttl 2s, no heartbeats: gone after {gone_after:?}");
    assert!(
        gone_after <= Duration::from_secs(3),
        "gone after {gone_after:?}"
    );
    let hb = p
        .admin_req(
            Method::PUT,
            "/v1/upstreams/app/backends/fresh/heartbeat",
            REGISTER_TOKEN,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(hb.status(), 404);
}

#[tokio::test]
async fn a_lapsed_registration_closes_its_websocket_with_no_api_traffic() {
    // close_spread = "0s": the 1001 goes at the drain deadline, not spread before it.
    let p =
        start_proxy("[upstream.app]\ndrain_timeout = \"1s\"\nclose_spread = \"0s\"\nbackends = []")
            .await;
    let b = backend("lapsing").await;
    let r = p
        .admin_req(Method::POST, "/v1/upstreams/app/backends", REGISTER_TOKEN)
        .json(&json!({"addr": b.addr.to_string(), "id": "lapsing", "ttl": "1s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let registered = Instant::now();
    let (mut ws, resp) = tokio_tungstenite::connect_async(p.ws_url("/chat"))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-backend-id"], "lapsing");
    // No heartbeat and no other call to the API: the lapse and its drain deadline are the
    // controller's own business (timed exactly by the pool's paused-time tests). ttl +
    // drain_timeout + 1 s = 3 s.
    expect_going_away(
        &mut ws,
        Duration::from_secs(3),
        "within ttl + drain_timeout + 1 s",
    )
    .await;
    let after = registered.elapsed();
    println!("ttl 1s + drain_timeout 1s: 1001 after {after:?}");
    assert!(
        after >= Duration::from_millis(1500),
        "closed before the drain: {after:?}"
    );
}

#[tokio::test]
async fn drain_keeps_open_websockets_until_the_deadline_then_sends_1001() {
    let (a, b) = (backend("a").await, backend("b").await);
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\ndrain_timeout = \"2s\"\nclose_spread = \"0s\"\n{}",
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    let mut on_a = Vec::new();
    while on_a.len() < 5 {
        let (ws, resp) = tokio_tungstenite::connect_async(p.ws_url("/chat"))
            .await
            .unwrap();
        if resp.headers()["x-backend-id"] == "a" {
            on_a.push(ws);
        }
    }
    let drain = tokio::spawn({
        let req = p.admin_req(
            Method::POST,
            "/v1/upstreams/app/backends/a/drain?wait=20s",
            ADMIN_TOKEN,
        );
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    });
    wait_until(Duration::from_secs(2), || async {
        p.backends().await[0].2 == "draining"
    })
    .await;
    let drain_started = Instant::now();
    // No new connection reaches a draining backend.
    for _ in 0..10 {
        let (_ws, resp) = tokio_tungstenite::connect_async(p.ws_url("/chat"))
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-backend-id"], "b");
    }
    // The open ones keep echoing.
    for ws in on_a.iter_mut() {
        ws.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("still here")
        );
    }
    // At the deadline every client gets a clean 1001 close.
    for ws in on_a.iter_mut() {
        expect_going_away(ws, Duration::from_secs(10), "the drain deadline").await;
    }
    assert!(
        drain_started.elapsed() >= Duration::from_millis(1500),
        "closed before drain_timeout"
    );
    let answer = drain.await.unwrap();
    assert_eq!(
        answer,
        json!({"active_connections": 0, "drained": true, "close_spread_ms": 0})
    );
}

#[tokio::test]
async fn churn_of_backend_b_does_not_disturb_200_websockets_on_a() {
    let a = backend("a").await;
    let b = backend("b").await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"least_conn\"\n{}",
        backends_toml(&[(&a, 1)])
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..200 {
        let (ws, resp) = tokio_tungstenite::connect_async(p.ws_url("/chat"))
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-backend-id"], "a");
        held.push(ws);
    }
    // Each round registers b under an id of its own, so no round waits for the previous
    // one's removal, which the controller's periodic tick makes (the tick's timing is the
    // pool's in-process tests' business); all of them must be gone at the end.
    for i in 0..100 {
        let id = format!("b{i}");
        let body = json!({"addr": b.addr.to_string(), "id": id, "ttl": "60s"});
        let ops: [(Method, String, Option<Value>); 4] = [
            (
                Method::POST,
                "/v1/upstreams/app/backends".into(),
                Some(body.clone()),
            ),
            (
                Method::PATCH,
                format!("/v1/upstreams/app/backends/{id}"),
                Some(json!({"weight": 1 + i % 5})),
            ),
            (
                Method::POST,
                format!("/v1/upstreams/app/backends/{id}/state"),
                Some(json!({"state": "disabled"})),
            ),
            (
                Method::DELETE,
                format!("/v1/upstreams/app/backends/{id}"),
                None,
            ),
        ];
        for (m, path, body) in ops {
            let mut req = p.admin_req(m, &path, ADMIN_TOKEN);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let st = req.send().await.unwrap().status();
            assert!(st.is_success(), "round {i} {path}: {st}");
        }
    }
    wait_until(Duration::from_secs(3), || async {
        p.backends().await.len() == 1
    })
    .await;
    for (i, ws) in held.iter_mut().enumerate() {
        let text = format!("still open {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
}

#[tokio::test]
async fn toggles_survive_a_restart() {
    let (a, b) = (backend("a").await, backend("b").await);
    let mut p = start_proxy(&format!(
        "[upstream.app]\n{}",
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    p.admin_req(
        Method::POST,
        "/v1/upstreams/app/backends/a/state",
        ADMIN_TOKEN,
    )
    .json(&json!({"state": "disabled"}))
    .send()
    .await
    .unwrap();
    p.admin_req(Method::PATCH, "/v1/upstreams/app/backends/b", ADMIN_TOKEN)
        .json(&json!({"weight": 5}))
        .send()
        .await
        .unwrap();
    p.restart().await;
    let after = p.backends().await;
    assert_eq!(after[0].2, "disabled");
    assert_eq!(after[1].3, 5);
    let client = reqwest::Client::new();
    for _ in 0..5 {
        assert_eq!(backend_id(&client, &p.url("/")).await, "b");
    }
}

#[tokio::test]
async fn ctl_drives_a_running_proxy() {
    let (a, b) = (backend("a").await, backend("b").await);
    let p = start_proxy(&format!(
        "[upstream.app]\n{}",
        backends_toml(&[(&a, 1), (&b, 1)])
    ))
    .await;
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tideway"))
            .args(["ctl", "--admin", &p.admin_url(""), "--token", ADMIN_TOKEN])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = ctl(&["list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"upstreams\""));
    let (code, out, _) = ctl(&["show", "app"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"a\"") && out.contains("\"b\""));
    assert_eq!(ctl(&["disable", "app", "a"]).0, Some(0));
    assert_eq!(p.backends().await[0].2, "disabled");
    assert_eq!(ctl(&["enable", "app", "a"]).0, Some(0));
    assert_eq!(p.backends().await[0].2, "active");
    assert_eq!(ctl(&["weight", "app", "b", "4"]).0, Some(0));
    assert_eq!(p.backends().await[1].3, 4);
    let (code, out, _) = ctl(&["drain", "app", "b", "--wait", "5s"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"drained\": true"), "{out}");
    assert_eq!(p.backends().await[1].2, "draining");
    let (code, _, err) = ctl(&["disable", "app", "ghost"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("404") && err.contains("unknown backend"),
        "{err}"
    );
}

#[tokio::test]
async fn demo_backend_registers_heartbeats_and_leaves_on_sigterm() {
    let p = start_proxy("[upstream.app]\nbackends = []").await;
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args([
            "demo-backend",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--id",
            "self-reg",
        ])
        .args(["--register", &p.admin_url(""), "--upstream", "app"])
        .env("TIDEWAY_REGISTER_TOKEN", REGISTER_TOKEN)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), || async {
        p.backends().await.len() == 1
    })
    .await;
    let client = reqwest::Client::new();
    assert_eq!(backend_id(&client, &p.url("/")).await, "self-reg");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    wait_until(Duration::from_secs(10), || async {
        p.backends().await.is_empty()
    })
    .await;
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn scale_recommends_backends_for_the_load() {
    let a = backend("a").await;
    let p = start_proxy(&format!(
        "[upstream.app]\nscale = {{ target_per_backend = 3, min = 1, max = 4 }}\n{}",
        backends_toml(&[(&a, 1)])
    ))
    .await;
    let scale = || async {
        p.admin_req(Method::GET, "/v1/upstreams/app/scale", ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert_eq!(
        scale().await,
        json!({"backends": 1, "healthy": 1, "active_connections": 0, "target_per_backend": 3, "recommended_backends": 1})
    );
    let mut held = Vec::new();
    for _ in 0..7 {
        held.push(
            tokio_tungstenite::connect_async(p.ws_url("/chat"))
                .await
                .unwrap()
                .0,
        );
    }
    wait_until(Duration::from_secs(3), || async {
        scale().await["active_connections"] == 7
    })
    .await;
    // ceil(7 / 3) = 3 backends recommended; the metric says the same.
    assert_eq!(scale().await["recommended_backends"], 3);
    assert_eq!(
        metric(
            &p,
            "tideway_upstream_recommended_backends{upstream=\"app\"}"
        )
        .await,
        3.0
    );
    for _ in 0..8 {
        held.push(
            tokio_tungstenite::connect_async(p.ws_url("/chat"))
                .await
                .unwrap()
                .0,
        );
    }
    wait_until(Duration::from_secs(3), || async {
        scale().await["active_connections"] == 15
    })
    .await;
    assert_eq!(scale().await["recommended_backends"], 4, "clamped to max");
}
