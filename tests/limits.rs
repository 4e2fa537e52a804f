//! The listener's limits and the backend's `max_conns`, end to end: each limit is set low in
//! the config, crossed with raw sockets, and the answer and the connection's fate asserted.

mod common;
#[path = "support/counting.rs"]
mod counting;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read until the peer closes (bounded): everything it sent.
async fn read_all(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await;
    String::from_utf8_lossy(&all).into_owned()
}

fn one_backend(b: &Backend, extra: &str) -> String {
    format!(
        "[upstream.app]\nbackends = [{{ addr = \"{}\", id = \"b0\"{extra} }}]\n",
        b.addr
    )
}

#[tokio::test]
async fn keepalive_requests_closes_after_the_last_request() {
    let b = backend("demo").await;
    let p = start_proxy_with("limits = { keepalive_requests = 3 }", &one_backend(&b, "")).await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4);
    s.write_all(req.as_bytes()).await.unwrap();
    let all = read_all(&mut s).await;
    assert_eq!(all.matches("HTTP/1.1 200").count(), 3, "{all}");
    assert_eq!(all.matches("connection: close").count(), 1, "{all}");
}

#[tokio::test]
async fn a_slow_head_gets_408_and_an_idle_connection_just_closes() {
    let b = backend("demo").await;
    let p = start_proxy_with(
        "limits = { header_timeout = \"1s\", keepalive_timeout = \"1s\" }",
        &one_backend(&b, ""),
    )
    .await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let all = read_all(&mut s).await;
    assert!(all.starts_with("HTTP/1.1 408 "), "{all}");
    assert!(all.contains("{\"error\":"), "{all}");
    // A connection that never sends a byte is closed without an answer.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    assert_eq!(read_all(&mut s).await, "");
}

#[tokio::test]
async fn limits_on_lines_heads_and_counts() {
    let b = backend("demo").await;
    let p = start_proxy_with(
        "limits = { max_request_line = 100, max_header_line = 100, max_head = 400, max_headers = 5 }",
        &one_backend(&b, ""),
    )
    .await;
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(200));
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: {}\r\n\r\n",
        "a".repeat(200)
    );
    let many = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..6).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
    );
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..5)
            .map(|i| format!("X-{i}: {}\r\n", "v".repeat(90)))
            .collect::<String>()
    );
    for (raw, status) in [
        (long_target, 414),
        (long_header, 431),
        (many, 431),
        (big_head, 431),
    ] {
        let mut s = TcpStream::connect(p.http).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let all = read_all(&mut s).await;
        assert!(
            all.starts_with(&format!("HTTP/1.1 {status} ")),
            "{raw:?} -> {all}"
        );
    }
    // Within the limits: served.
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_all(&mut s).await.starts_with("HTTP/1.1 200 "));
}

#[tokio::test]
async fn max_connections_per_listener() {
    let b = backend("demo").await;
    let p = start_proxy_with("limits = { max_connections = 2 }", &one_backend(&b, "")).await;
    // Two keep-alive connections that were served hold both slots (a slot of the readiness
    // probe's connection is freed once tideway sees it closed, so retry until served).
    let mut held = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "slots never freed");
        let mut s = TcpStream::connect(p.http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if buf[..n].starts_with(b"HTTP/1.1 200 ") {
            held.push(s);
        } else {
            assert!(buf[..n].starts_with(b"HTTP/1.1 503 "));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut third = TcpStream::connect(p.http).await.unwrap();
    let all = read_all(&mut third).await;
    assert!(all.starts_with("HTTP/1.1 503 "), "{all}");
    assert!(all.contains("too many connections"), "{all}");
    // A slot freed is a slot taken again.
    drop(held.pop());
    let served = wait_until(Duration::from_secs(10), || async {
        let Ok(mut s) = TcpStream::connect(p.http).await else {
            return false;
        };
        let _ = s
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        read_all(&mut s).await.starts_with("HTTP/1.1 200 ")
    })
    .await;
    assert!(served < Duration::from_secs(10));
}

#[tokio::test]
async fn max_conns_skips_a_backend_at_its_limit() {
    let b = backend("demo").await;
    let p = start_proxy(&one_backend(&b, ", max_conns = 1")).await;
    // A WebSocket holds the backend's only connection.
    let (mut ws, _) = tokio_tungstenite::connect_async(p.ws_url("/ws"))
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .unwrap();
    assert!(ws.next().await.unwrap().is_ok());
    let c = reqwest::Client::new();
    let busy = c.get(p.url("/")).send().await.unwrap();
    assert_eq!(busy.status(), 503);
    assert!(busy.text().await.unwrap().contains("\"error\""));
    ws.close(None).await.unwrap();
    drop(ws);
    let freed = wait_until(Duration::from_secs(10), || async {
        c.get(p.url("/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(freed < Duration::from_secs(10));
}

/// A client that stops reading a large answer is cut after the listener's `send_timeout`
/// (nginx's `send_timeout`), and the backend's connection with it; another client is served
/// meanwhile. The client never reads, so only tideway's timeout can end the answer.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_send_timeout() {
    let b = counting::Counting::start().await;
    let upstream = format!("[upstream.app]\nbackends = [{{ addr = \"{}\" }}]\n", b.addr);
    let p = start_proxy_with("limits = { send_timeout = \"1s\" }", &upstream).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut s = socket.connect(p.http).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), || async { b.body_sent() > 0 }).await;
    let mut other = TcpStream::connect(p.http).await.unwrap();
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_all(&mut other).await.ends_with("ok"));
    // Bounded: the default send_timeout (60 s) would not end it within this.
    wait_until(Duration::from_secs(30), || async { b.big_cut() == 1 }).await;
    assert!(
        b.body_sent() < counting::BIG_BODY / 16,
        "{} bytes went to a client that reads nothing",
        b.body_sent()
    );
    // The client's connection ended too (reading now finds its end, not more of the body).
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(ended.is_ok(), "the client's connection is still open");
    assert!(got.len() < counting::BIG_BODY, "the answer was cut");
}
