//! Reloading the config, as `nginx -s reload`: listeners added and removed, and, under load,
//! the config file rewritten and
//! applied 5 times (SIGHUP and `POST /v1/reload`, alternately) while keep-alive HTTP clients
//! and 100 WebSockets run. Traffic follows each new backend set, no request fails, no
//! WebSocket is dropped, and an invalid file is refused with the old config kept.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Rewrite the `[upstream.app]` part of the proxy's config file.
fn rewrite(p: &Proxy, upstream: &str) {
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    let head = &text[..text.find("[upstream.app]").unwrap()];
    std::fs::write(&p.config_path, format!("{head}{upstream}\n")).unwrap();
}

/// The backends that answer 40 requests.
async fn serving(p: &Proxy) -> BTreeSet<String> {
    let c = reqwest::Client::new();
    let mut ids = BTreeSet::new();
    for _ in 0..40 {
        ids.insert(backend_id(&c, &p.url("/")).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_reloads_under_load_lose_nothing() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let set = |bs: &[&Backend]| -> String {
        let list: Vec<String> = bs
            .iter()
            .map(|x| format!("{{ addr = \"{}\", id = \"{}\" }}", x.addr, x.id))
            .collect();
        format!(
            "[upstream.app]\nbalance = \"round_robin\"\nbackends = [{}]",
            list.join(", ")
        )
    };
    let p = start_proxy(&set(&[&a])).await;

    let load = Load::start(&p.url("/"), 4);
    let mut sockets = Vec::new();
    for _ in 0..100 {
        let (ws, _) = tokio_tungstenite::connect_async(p.ws_url("/chat"))
            .await
            .unwrap();
        sockets.push(ws);
    }

    let steps: [&[&Backend]; 5] = [&[&a, &b], &[&b], &[&b, &c], &[&a, &c], &[&a, &b, &c]];
    for (i, step) in steps.iter().enumerate() {
        rewrite(&p, &set(step));
        if i % 2 == 0 {
            std::process::Command::new("kill")
                .args(["-HUP", &p.child.id().to_string()])
                .status()
                .unwrap();
        } else {
            let report = p.reload().await;
            assert_eq!(report["changed"], true, "{report}");
        }
        let want: BTreeSet<String> = step.iter().map(|x| x.id.clone()).collect();
        let took = wait_until(Duration::from_secs(10), || async {
            serving(&p).await == want
        })
        .await;
        println!("reload {}: serving {want:?} after {took:?}", i + 1);
    }

    // An invalid file is refused, with its line, and the running config stays.
    rewrite(&p, "[upstream.app]\nbalance = \"sideways\"\nbackends = []");
    let r = p
        .admin_req(Method::POST, "/v1/reload", ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let error: serde_json::Value = r.json().await.unwrap();
    let error = error["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("tideway.toml:") && error.contains("balance"),
        "{error}"
    );
    let all: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    assert_eq!(serving(&p).await, all);

    let (ok, failed) = load.stop().await;
    // Every WebSocket is still open and echoing (they were all on a, removed at reload 2).
    for ws in sockets.iter_mut() {
        ws.send(Message::text("still here")).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an echo")
            .unwrap()
            .unwrap();
        assert_eq!(echo, Message::text("still here"));
    }
    println!("5 reloads: {ok} requests ok, {failed} failed, 100 WebSockets kept");
    assert_eq!(failed, 0);
}

/// Rewrite the whole `[[listener]]` part: one listener per address, upstream `app`.
fn rewrite_listeners(p: &Proxy, addrs: &[std::net::SocketAddr]) {
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    let head = &text[..text.find("[[listener]]").unwrap()];
    let tail = &text[text.find("[upstream.app]").unwrap()..];
    let listeners: String = addrs
        .iter()
        .map(|a| format!("[[listener]]\nlisten = \"{a}\"\nupstream = \"app\"\n\n"))
        .collect();
    std::fs::write(&p.config_path, format!("{head}{listeners}{tail}")).unwrap();
}

/// Does a fresh connection to `addr` get a 200?
async fn serves(addr: std::net::SocketAddr) -> bool {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    c.get(format!("http://{addr}/"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

#[tokio::test]
async fn a_reload_adds_and_removes_listeners() {
    let a = backend("a").await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbackends = [{{ addr = \"{}\", id = \"a\" }}]",
        a.addr
    ))
    .await;
    let first = p.http;
    let second: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // A keep-alive connection opened before any change.
    let kept = reqwest::Client::new();
    assert_eq!(kept.get(p.url("/")).send().await.unwrap().status(), 200);

    // Added: the new port serves.
    rewrite_listeners(&p, &[first, second]);
    let report = p.reload().await;
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
    assert!(serves(second).await);
    assert!(serves(first).await);

    // The first removed: new connections to it are turned away; the open one keeps working,
    // and the second listener is untouched.
    rewrite_listeners(&p, &[second]);
    p.reload().await;
    assert!(
        !serves(first).await,
        "a removed listener turns new connections away"
    );
    assert_eq!(kept.get(p.url("/")).send().await.unwrap().status(), 200);
    assert!(serves(second).await);

    // Back again, and the added one removed: its port is free.
    rewrite_listeners(&p, &[first]);
    p.reload().await;
    assert!(serves(first).await);
    assert!(!serves(second).await);
    assert!(
        tokio::net::TcpStream::connect(second).await.is_err(),
        "the removed listener's socket is closed"
    );
}
