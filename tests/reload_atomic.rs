//! A reload is all or nothing (issue 20): a config the process cannot apply whole (a new
//! listener's port is held by another socket) is refused, by `POST /v1/reload` with a 400
//! naming the port and by SIGHUP with a log line, and the pool, the listeners and every API
//! answer about them stay exactly as they were.
//!
//! tideway's own addresses, a reload's listeners too, are never a backend: a registration
//! naming one is refused, and a backend that points back is answered 508, with no nested
//! request and no mark against its health.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

fn local(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Rewrite the config's `[[listener]]` tables (each to upstream `app`) and `[upstream.app]`.
fn rewrite(p: &Proxy, listeners: &[SocketAddr], upstream: &str) {
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    let head = &text[..text.find("[[listener]]").unwrap()];
    let listeners: String = listeners
        .iter()
        .map(|a| format!("[[listener]]\nlisten = \"{a}\"\nupstream = \"app\"\n\n"))
        .collect();
    std::fs::write(&p.config_path, format!("{head}{listeners}{upstream}\n")).unwrap();
}

fn upstream(backends: &[&Backend]) -> String {
    let pairs: Vec<(&Backend, u32)> = backends.iter().map(|b| (*b, 1)).collect();
    format!(
        "[upstream.app]\nbalance = \"round_robin\"\n{}",
        backends_toml(&pairs)
    )
}

/// Does a fresh connection to `addr` get a 200 from a backend? Its id.
async fn served_by(addr: SocketAddr) -> Option<String> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let r = c.get(format!("http://{addr}/")).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    Some(v["id"].as_str()?.to_string())
}

/// Drop what moves with time alone (a registration's remaining TTL), everywhere in `v`.
fn strip_clock(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("expires_in_ms");
            m.remove("drain_ends_in_ms");
            m.values_mut().for_each(strip_clock);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_clock),
        _ => {}
    }
}

/// Every API answer about the pool and the listeners: the upstreams (with the snapshot
/// version), the scale signal, and the per-backend and per-listener series of /metrics.
async fn api_state(p: &Proxy) -> Value {
    let mut upstreams = p.admin_json("/v1/upstreams").await;
    strip_clock(&mut upstreams);
    let scale = p.admin_json("/v1/upstreams/app/scale").await;
    let metrics = reqwest::get(p.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            ["tideway_backend_", "tideway_tls_certificate_"]
                .iter()
                .any(|s| l.starts_with(s))
        })
        .collect();
    assert!(!series.is_empty(), "{metrics}");
    json!({ "upstreams": upstreams, "scale": scale, "metrics": series })
}

/// How the refused reload is asked for.
#[derive(Clone, Copy, Debug)]
enum Via {
    Api,
    Sighup,
}

/// Listeners: `started` (pingora's), `kept` and `dropped` (added by a reload). The refused
/// config adds two backends and a listener whose port another socket holds, and removes
/// `started` and `dropped`. Nothing changes.
async fn a_refused_reload_changes_nothing(via: Via) {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let registered = backend("r").await;
    let p = start_proxy(&upstream(&[&a])).await;
    p.register("r", &registered.addr.to_string()).await;
    let started = p.http;
    let (kept, dropped) = (local(free_port()), local(free_port()));
    rewrite(&p, &[started, kept, dropped], &upstream(&[&a]));
    assert_eq!(p.reload().await["warnings"], json!([]));
    for l in [started, kept, dropped] {
        assert!(served_by(l).await.is_some(), "{l} serves");
    }

    let taken = local(free_port());
    let _holder = std::net::TcpListener::bind(taken).unwrap();
    rewrite(&p, &[kept, taken], &upstream(&[&a, &b, &c]));
    let before = api_state(&p).await;
    match via {
        Via::Api => {
            let r = p
                .admin_req(Method::POST, "/v1/reload", ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400);
            let body: Value = r.json().await.unwrap();
            let error = body["error"].as_str().unwrap();
            assert!(error.contains(&taken.to_string()), "{error}");
        }
        Via::Sighup => {
            let failed = metric(&p, "tideway_config_reloads_total{result=\"failed\"}").await;
            std::process::Command::new("kill")
                .args(["-HUP", &p.child.id().to_string()])
                .status()
                .unwrap();
            let log = p.dir.path().join("tideway.log");
            wait_until(Duration::from_secs(10), || async {
                std::fs::read_to_string(&log)
                    .unwrap()
                    .lines()
                    .any(|l| l.contains("SIGHUP: config refused") && l.contains(&taken.to_string()))
            })
            .await;
            assert_eq!(
                metric(&p, "tideway_config_reloads_total{result=\"failed\"}").await,
                failed + 1.0
            );
        }
    }
    let after = api_state(&p).await;
    assert_eq!(before, after, "{via:?}: the API answers changed");

    // Every listener serves as before, the removed ones too, from the old pool only.
    let old: BTreeSet<String> = ["a", "r"].iter().map(|s| s.to_string()).collect();
    let mut seen = BTreeSet::new();
    for l in [started, kept, dropped] {
        for _ in 0..10 {
            let id = served_by(l).await;
            assert!(id.is_some(), "{via:?}: {l} stopped serving");
            seen.extend(id);
        }
    }
    assert_eq!(seen, old, "{via:?}: only the old backends answer");
    // The pool holds the old backends only.
    let pool = p.upstream_json().await;
    let ids: BTreeSet<&str> = pool["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "r"].into_iter().collect());

    // Once the port is free, the same file applies whole.
    drop(_holder);
    let report = p.reload().await;
    assert_eq!(report["changed"], true, "{report}");
    assert!(served_by(taken).await.is_some());
    assert!(served_by(dropped).await.is_none(), "removed now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refused_over_the_api_changes_nothing() {
    a_refused_reload_changes_nothing(Via::Api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_refused_on_sighup_changes_nothing() {
    a_refused_reload_changes_nothing(Via::Sighup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tideway_never_proxies_to_itself() {
    let a = backend("a").await;
    let p = start_proxy(&upstream(&[&a])).await;
    // A listener added by reload, on every address (a wildcard bind), and its upstream
    // pointing back at it over loopback.
    let port = free_port();
    let wildcard: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    rewrite(&p, &[p.http, wildcard], &upstream(&[&a]));
    p.reload().await;
    assert_eq!(served_by(local(port)).await.as_deref(), Some("a"));

    // Its address is refused as a registration, to either token; so are the others.
    for token in [REGISTER_TOKEN, ADMIN_TOKEN] {
        for addr in [local(port), wildcard, p.http, p.admin] {
            let r = p
                .admin_req(Method::POST, "/v1/upstreams/app/backends", token)
                .json(&json!({"addr": addr.to_string(), "id": "loop"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{addr}");
            let body: Value = r.json().await.unwrap();
            assert!(
                body["error"].as_str().unwrap().contains("tideway's own"),
                "{body}"
            );
        }
    }

    // A static backend pointing back (the started listener, and the reload's over
    // loopback): 508 with a JSON error, one hop, and no mark against its health.
    let mut loops = vec![("self", p.http), ("wild", local(port))];
    // This host's address on its default route, if it has one, reaches the wildcard bind too.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    if probe.connect("8.8.8.8:53").is_ok() {
        let ip = probe.local_addr().unwrap().ip();
        if !ip.is_loopback() && !ip.is_unspecified() {
            loops.push(("host", SocketAddr::new(ip, port)));
        }
    }
    println!("pointing back: {loops:?}");
    for (id, target) in loops {
        let text = std::fs::read_to_string(&p.config_path).unwrap();
        let head = &text[..text.find("[upstream.app]").unwrap()];
        std::fs::write(
            &p.config_path,
            format!(
                "{head}[upstream.app]\nmax_fails = 1\nbackends = [{{ addr = \"{target}\", id = \"{id}\" }}]\n"
            ),
        )
        .unwrap();
        p.reload().await;
        let responses = metric(&p, "tideway_http_responses_total{").await;
        let r = reqwest::get(p.url("/")).await.unwrap();
        assert_eq!(r.status(), 508, "{id}");
        // The headers of tideway's other error answers, and nothing more.
        let names: BTreeSet<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        assert!(
            names.is_subset(&["content-type", "content-length", "connection"].into()),
            "{names:?}"
        );
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("loop detected"),
            "{body}"
        );
        // One answer for one request: no hop nested another.
        assert_eq!(
            metric(&p, "tideway_http_responses_total{").await,
            responses + 1.0
        );
        let b = &p.upstream_json().await["backends"][0];
        assert_eq!(
            (b["id"].as_str(), b["requests_total"].as_u64()),
            (Some(id), Some(1))
        );
        assert_eq!(
            b["healthy"], true,
            "not counted as the backend's failure: {b}"
        );
        let failures = metric(&p, "tideway_backend_failures_total{").await;
        assert_eq!(failures, 0.0);
    }
}
