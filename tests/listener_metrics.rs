//! Listener metrics from a running tideway: connections accepted and open per listener (a
//! WebSocket holds its place), refusals over `limits.max_connections` (HTTP answers 503, TCP
//! closes), and failed TLS handshakes by reason, each from what real clients do on real
//! sockets.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The value of one series in /metrics (0 when absent).
async fn series(p: &Proxy, name: &str, labels: &str) -> f64 {
    metric(p, &format!("{name}{{{labels}}} ")).await
}

/// Poll until the series has `want`, or fail with what it had.
async fn wait_series(p: &Proxy, name: &str, labels: &str, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = series(p, name, labels).await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}{{{labels}}} is {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One keep-alive request on `s`, answered (the connection is served, so it holds a place).
async fn one_request(s: &mut TcpStream) {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before an answer");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

/// Everything `s` sends until it closes.
async fn read_all(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got));
    let _ = read.await.expect("the connection is closed");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn an_http_listener_counts_accepted_open_and_refused_connections() {
    let b = backend("m1").await;
    let p = start_proxy_with(
        "limits = { max_connections = 3 }",
        &format!("[upstream.app]\n{}\n", backends_toml(&[(&b, 1)])),
    )
    .await;
    let l = format!("listener=\"{}\"", p.http);
    let refused = format!("{l},reason=\"max_connections\"");
    // The readiness probe's connection, gone.
    wait_series(&p, "tideway_listener_connections_active", &l, 0.0).await;
    let accepted = series(&p, "tideway_listener_connections_accepted_total", &l).await;
    assert!(accepted >= 1.0, "the probe was accepted");
    // Every reason is there from the start, at 0.
    assert_eq!(
        series(&p, "tideway_listener_refused_total", &refused).await,
        0.0
    );
    let text = reqwest::get(p.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(&format!("tideway_listener_refused_total{{{refused}}} 0")),
        "{text}"
    );
    assert!(text.contains(&format!(
        "tideway_listener_refused_total{{{l},reason=\"server_max_connections\"}} 0"
    )));
    assert!(
        !text.contains("tideway_listener_tls_handshake_failures_total{"),
        "a plain listener has no handshakes to fail"
    );

    // Two keep-alive connections and a WebSocket: three places, the limit.
    let mut a = TcpStream::connect(p.http).await.unwrap();
    let mut c = TcpStream::connect(p.http).await.unwrap();
    one_request(&mut a).await;
    one_request(&mut c).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(p.ws_url("/ws"))
        .await
        .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Text(_)))));
    wait_series(&p, "tideway_listener_connections_active", &l, 3.0).await;
    assert_eq!(
        series(&p, "tideway_listener_connections_accepted_total", &l).await,
        accepted + 3.0
    );

    // A fourth is accepted, answered 503 and closed: counted as refused, never as open.
    let mut d = TcpStream::connect(p.http).await.unwrap();
    let answer = read_all(&mut d).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("too many connections on this listener"),
        "{answer}"
    );
    wait_series(&p, "tideway_listener_refused_total", &refused, 1.0).await;
    assert_eq!(
        series(&p, "tideway_listener_connections_accepted_total", &l).await,
        accepted + 4.0
    );
    assert_eq!(
        series(&p, "tideway_listener_connections_active", &l).await,
        3.0
    );

    // Places are given back as connections end, the WebSocket's too.
    drop(a);
    wait_series(&p, "tideway_listener_connections_active", &l, 2.0).await;
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    wait_series(&p, "tideway_listener_connections_active", &l, 1.0).await;
    // ... and a freed place serves again.
    let mut e = TcpStream::connect(p.http).await.unwrap();
    one_request(&mut e).await;
    wait_series(&p, "tideway_listener_connections_active", &l, 2.0).await;
    drop((c, e));
    wait_series(&p, "tideway_listener_connections_active", &l, 0.0).await;
    assert_eq!(
        series(&p, "tideway_listener_connections_accepted_total", &l).await,
        accepted + 5.0
    );
    assert_eq!(
        series(&p, "tideway_listener_refused_total", &refused).await,
        1.0
    );
}

#[tokio::test]
async fn a_tcp_listener_closes_a_connection_over_its_max_connections() {
    let b = backend("t1").await;
    let p = start_proxy_with(
        "protocol = \"tcp\"\nlimits = { max_connections = 1 }",
        &format!("[upstream.app]\n{}\n", backends_toml(&[(&b, 1)])),
    )
    .await;
    let l = format!("listener=\"{}\"", p.http);
    // The readiness probe's connection (a tunnel too), gone.
    wait_series(&p, "tideway_listener_connections_active", &l, 0.0).await;
    let mut first = TcpStream::connect(p.http).await.unwrap();
    one_request(&mut first).await;
    wait_series(&p, "tideway_listener_connections_active", &l, 1.0).await;
    let mut second = TcpStream::connect(p.http).await.unwrap();
    // Closed at once, with nothing sent (TCP has no answer to give), and nothing forwarded.
    let _ = second.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(read_all(&mut second).await, "");
    let refused = format!("{l},reason=\"max_connections\"");
    wait_series(&p, "tideway_listener_refused_total", &refused, 1.0).await;
    one_request(&mut first).await;
    drop(first);
    wait_series(&p, "tideway_listener_connections_active", &l, 0.0).await;
    let mut third = TcpStream::connect(p.http).await.unwrap();
    one_request(&mut third).await;
}

/// A tideway with one TLS listener (a fresh self-signed certificate for localhost) in front
/// of `b`; the directory holds the certificate and lives as long as the proxy is used.
async fn tls_proxy(b: &Backend) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let p = start_proxy_with(
        &format!("tls = {{ cert = {cert:?}, key = {key:?} }}"),
        &format!("[upstream.app]\n{}\n", backends_toml(&[(b, 1)])),
    )
    .await;
    (p, dir)
}

/// A TLS client configuration that trusts no certificate.
fn trusting_nothing() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS client that trusts no certificate: it refuses the server's with a fatal alert.
async fn refusing_client(addr: SocketAddr) {
    let config = trusting_nothing();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let r = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await;
    assert!(r.is_err(), "the client trusts no certificate");
}

#[tokio::test]
async fn failed_tls_handshakes_are_counted_by_reason() {
    let b = backend("s1").await;
    let (p, _dir) = tls_proxy(&b).await;
    let l = format!("listener=\"{}\"", p.http);
    let failures = "tideway_listener_tls_handshake_failures_total";
    let reason = |r: &str| format!("{l},reason=\"{r}\"");
    // The readiness probe connected and left: a handshake that failed as `closed`.
    wait_series(&p, "tideway_listener_connections_active", &l, 0.0).await;
    let accepted = series(&p, "tideway_listener_connections_accepted_total", &l).await;
    let closed = series(&p, failures, &reason("closed")).await;
    assert_eq!(closed, accepted, "each probe left before its hello");
    let text = reqwest::get(p.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for r in [
        "timeout",
        "not_tls",
        "incompatible",
        "alert",
        "malformed",
        "other",
    ] {
        assert!(
            text.contains(&format!("{failures}{{{}}} 0", reason(r))),
            "{r} is not at 0"
        );
    }

    // Plain HTTP on the TLS port: closed without an answer, counted as not TLS.
    let mut plain = TcpStream::connect(p.http).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut plain).await;
    assert!(!answer.contains("HTTP/1.1"), "{answer}");
    wait_series(&p, failures, &reason("not_tls"), 1.0).await;

    // A client that leaves before its hello.
    drop(TcpStream::connect(p.http).await.unwrap());
    wait_series(&p, failures, &reason("closed"), closed + 1.0).await;

    // A client that refuses the certificate.
    refusing_client(p.http).await;
    wait_series(&p, failures, &reason("alert"), 1.0).await;

    assert_eq!(series(&p, failures, &reason("other")).await, 0.0);
    assert_eq!(series(&p, failures, &reason("malformed")).await, 0.0);
    // Each was accepted, none holds a place now.
    assert_eq!(
        series(&p, "tideway_listener_connections_accepted_total", &l).await,
        accepted + 3.0
    );
    wait_series(&p, "tideway_listener_connections_active", &l, 0.0).await;
}

/// One deadline covers the whole TLS handshake, hello included: a client that sends half its
/// ClientHello, the rest most of a deadline later, and then never finishes is closed when the
/// deadline that began at accept runs out (not a fresh one after its hello), and counted as a
/// `timeout`.
#[tokio::test]
async fn a_trickled_tls_handshake_is_cut_at_one_deadline_from_accept() {
    let limit = tideway::proxy::tls::DEFAULT_TLS_HANDSHAKE_TIMEOUT;
    let b = backend("s1").await;
    let (p, _dir) = tls_proxy(&b).await;
    let l = format!("listener=\"{}\"", p.http);
    let failures = "tideway_listener_tls_handshake_failures_total";
    // A real ClientHello, from a rustls client that never gets to read the answer.
    let config = trusting_nothing();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut client = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "a ClientHello record");

    let start = std::time::Instant::now();
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let (first, rest) = hello.split_at(hello.len() / 2);
    s.write_all(first).await.unwrap();
    tokio::time::sleep(limit * 6 / 10).await;
    s.write_all(rest).await.unwrap();
    // The server answers the hello (its flight), then waits for a Finished that never comes.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit * 2, s.read_to_end(&mut got)).await;
    let took = start.elapsed();
    assert!(!got.is_empty(), "the server answered the whole hello");
    assert!(
        took >= limit && took < limit * 13 / 10,
        "closed {took:?} after connecting; the deadline is {limit:?} from accept"
    );
    wait_series(&p, failures, &format!("{l},reason=\"timeout\""), 1.0).await;
}
