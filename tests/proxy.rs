//! End-to-end: a real tideway process in front of real demo backends.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn http_reaches_three_backends_with_forwarding_headers() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let proxy = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\n{}",
        backends_toml(&[(&a, 1), (&b, 1), (&c, 1)])
    ))
    .await;
    let client = reqwest::Client::new();
    let mut seen = HashMap::new();
    for _ in 0..30 {
        *seen
            .entry(backend_id(&client, &proxy.url("/hello")).await)
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n == 10), "{seen:?}");

    let v: serde_json::Value = client
        .get(proxy.url("/x"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["x_forwarded_for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(v["x_real_ip"], "127.0.0.1");
    assert_eq!(v["x_forwarded_proto"], "http");
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let a = backend("ws-a").await;
    let proxy = start_proxy(&format!("[upstream.app]\n{}", backends_toml(&[(&a, 1)]))).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(proxy.ws_url("/chat?uid=1"))
        .await
        .expect("upgrade through tideway");
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["x-backend-id"], "ws-a");
    for i in 0..20 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    let big = vec![7u8; 200_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn round_robin_spreads_3000_requests_by_weight() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let proxy = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\n{}",
        backends_toml(&[(&a, 1), (&b, 2), (&c, 3)])
    ))
    .await;
    let client = reqwest::Client::new();
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..3000 {
        *seen
            .entry(backend_id(&client, &proxy.url("/")).await)
            .or_insert(0) += 1;
    }
    for (id, expected) in [("a", 500.0), ("b", 1000.0), ("c", 1500.0)] {
        let got = f64::from(seen[id]);
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "{id}: {got} requests, expected {expected} ±5% ({seen:?})"
        );
    }
}

#[tokio::test]
async fn hash_on_query_uid_is_sticky_for_http_and_websocket() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let proxy = start_proxy(&format!(
        "[upstream.app]\nbalance = \"hash\"\nhash_key = \"query:uid\"\n{}",
        backends_toml(&[(&a, 1), (&b, 1), (&c, 1)])
    ))
    .await;
    let client = reqwest::Client::new();
    let mut owners = HashMap::new();
    for uid in 0..60 {
        let url = proxy.url(&format!("/poll?uid={uid}"));
        let first = backend_id(&client, &url).await;
        for _ in 0..5 {
            assert_eq!(backend_id(&client, &url).await, first, "uid {uid} moved");
        }
        owners.insert(uid, first);
    }
    let distinct: std::collections::HashSet<_> = owners.values().collect();
    assert_eq!(distinct.len(), 3, "60 uids should use all 3 backends");
    // A WebSocket with the same uid lands where the HTTP requests did.
    for uid in [0, 1, 2, 3, 4] {
        let (_ws, resp) =
            tokio_tungstenite::connect_async(proxy.ws_url(&format!("/chat?uid={uid}")))
                .await
                .unwrap();
        assert_eq!(
            resp.headers()["x-backend-id"],
            owners[&uid].as_str(),
            "uid {uid}"
        );
    }
}

#[tokio::test]
async fn idle_timeout_closes_websocket_with_1001() {
    let a = backend("a").await;
    let proxy = start_proxy(&format!(
        "[upstream.app]\nidle_timeout = \"2s\"\n{}",
        backends_toml(&[(&a, 1)])
    ))
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(proxy.ws_url("/chat"))
        .await
        .unwrap();
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    let start = Instant::now();
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("closed within 10 s")
        .expect("a frame, not end of stream")
        .expect("a clean frame, not a reset");
    let elapsed = start.elapsed();
    match msg {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
}

/// The data plane of a one-listener config, in this process: the listener's gateway behind the
/// accept path the binary uses (`accept::serve`), and the pool controller. Under paused time
/// (`start_paused`), every timer on the path (the gateway's, the tunnel's, the controller's)
/// runs on the test's clock, which jumps ahead whenever everything waits.
/// Keep the second value alive while the test uses the proxy: dropping it stops the listener.
async fn in_process_proxy(upstreams: &str) -> (std::net::SocketAddr, impl Sized) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (config, pool) = in_process_pool(addr, upstreams);
    let never = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (gateway, _) =
        tideway::server::listeners::http_gateway(&pool, &config.listeners[0], never).unwrap();
    let (shutdown, watch) = tokio::sync::watch::channel(false);
    tokio::spawn(tideway::net::accept::serve(
        std::sync::Arc::new(socket),
        std::sync::Arc::new(gateway),
        watch,
    ));
    (addr, shutdown)
}

/// No timer on the path cuts an idle WebSocket (pingora's 60 s read timeout was one): quiet
/// for 70 s, it still echoes. Run in-process under paused time, so the 70 s take no time; the
/// binary's idle handling is shown end to end by `idle_timeout_closes_websocket_with_1001`.
#[tokio::test(start_paused = true)]
async fn idle_websocket_outlives_pingoras_60s_timeout() {
    let a = backend("a").await;
    let (addr, _proxy) =
        in_process_proxy(&format!("[upstream.app]\n{}", backends_toml(&[(&a, 1)]))).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));
    // Idle for 70 s: nothing may arrive (no close, no reset) in that time.
    let start = tokio::time::Instant::now();
    let quiet = tokio::time::timeout(Duration::from_secs(70), ws.next()).await;
    assert!(quiet.is_err(), "the idle WebSocket was closed: {quiet:?}");
    assert!(start.elapsed() >= Duration::from_secs(70));
    ws.send(Message::text("after 70 s")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("after 70 s")
    );
}

#[tokio::test]
async fn connect_failure_retries_on_another_backend() {
    let a = backend("alive").await;
    let dead = free_port();
    let proxy = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\nbackends = [{{ addr = \"{}\", id = \"alive\" }}, {{ addr = \"127.0.0.1:{dead}\", id = \"dead\" }}]",
        a.addr
    ))
    .await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        assert_eq!(backend_id(&client, &proxy.url("/")).await, "alive");
    }
    for _ in 0..6 {
        let (_ws, resp) = tokio_tungstenite::connect_async(proxy.ws_url("/chat"))
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-backend-id"], "alive");
    }
}

#[tokio::test]
async fn no_available_backend_answers_503_with_json() {
    let dead = free_port();
    let proxy = start_proxy(&format!(
        "[upstream.app]\nretries = 0\nbackends = [{{ addr = \"127.0.0.1:{dead}\" }}]"
    ))
    .await;
    let r = reqwest::get(proxy.url("/")).await.unwrap();
    assert_eq!(r.status(), 502);
    let proxy2 = start_proxy("[upstream.app]\nbackends = []").await;
    let r = reqwest::get(proxy2.url("/")).await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "no available backend in upstream \"app\"");
    // An empty upstream still has its metrics (an empty family must not break the scrape).
    let text = reqwest::get(proxy2.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("tideway_upstream_available_backends{upstream=\"app\"} 0"),
        "{text}"
    );
    let ws = tokio_tungstenite::connect_async(proxy2.ws_url("/chat")).await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("expected a 503, got {other:?}"),
    }
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1001() {
    graceful_signal_closes_websockets_with_1001("-TERM").await;
}

/// `nginx -s quit` sends SIGQUIT: a graceful shutdown too (pingora's default would wait to
/// hand its listeners to a new process instead).
#[tokio::test]
async fn sigquit_is_a_graceful_shutdown_too() {
    graceful_signal_closes_websockets_with_1001("-QUIT").await;
}

async fn graceful_signal_closes_websockets_with_1001(signal: &str) {
    let a = backend("a").await;
    let mut proxy = start_proxy(&format!("[upstream.app]\n{}", backends_toml(&[(&a, 1)]))).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let (mut ws, _) = tokio_tungstenite::connect_async(proxy.ws_url("/chat"))
            .await
            .unwrap();
        ws.send(Message::text("hi")).await.unwrap();
        ws.next().await.unwrap().unwrap();
        clients.push(ws);
    }
    std::process::Command::new("kill")
        .args([signal, &proxy.child.id().to_string()])
        .status()
        .unwrap();
    let signalled = std::time::Instant::now();
    for ws in clients.iter_mut() {
        expect_going_away(ws, Duration::from_secs(5), "within 5 s of the signal").await;
    }
    let status = proxy.child.wait().unwrap();
    assert!(status.success(), "{status}");
    // The grace period is 1 s; pingora's upgrade path would first wait 5 s for a new process.
    let exited = signalled.elapsed();
    assert!(exited < Duration::from_secs(4), "exited after {exited:?}");
}
