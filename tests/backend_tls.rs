//! TLS to backends, against a real TLS backend (tokio-rustls, a certificate from a CA of the
//! test's own): HTTP and a WebSocket through it, the certificate checked against the
//! upstream's CA under its server name, sent by SNI; a certificate the CA did not sign fails
//! with 502 and counts against the backend; active health checks go over TLS too; nginx's
//! defaults (no verification, no SNI) when asked; a tcp listener's tunnel over TLS; and
//! `proxy_pass https://` from an nginx config, next to real nginx on the same file.

mod common;
#[path = "support/tls_backend.rs"]
mod tls_backend;

use common::nginx::{nginx_main, run_nginx, run_tideway_nginx};
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tls_backend::{TestCa, TlsBackend, INJECTED, SMUGGLE, SMUGGLE_PAD};
use tokio_tungstenite::tungstenite::Message;

const NAME: &str = "backend.test";

/// A config path in TOML.
fn toml_path(p: &std::path::Path) -> String {
    format!("{:?}", p.display().to_string())
}

#[tokio::test]
async fn http_websocket_and_health_checks_reach_a_verified_tls_backend_by_its_sni_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let b = TlsBackend::start(&ca, NAME).await;
    let p = start_proxy(&format!(
        "[upstream.app]\ntls = {{ ca = {}, server_name = \"{NAME}\" }}\nhealth = {{ kind = \"http\", path = \"/health\", interval = \"200ms\", timeout = \"1s\", rise = 1, fall = 1 }}\nbackends = [{{ addr = \"{}\" }}]\n",
        toml_path(&ca.pem),
        b.addr
    ))
    .await;
    let client = reqwest::Client::new();
    // With active checks a backend takes traffic once its first check passed (over TLS).
    wait_until(Duration::from_secs(10), || async {
        let h = p.health().await;
        !h.is_empty() && h.values().all(|h| *h)
    })
    .await;

    let r = client.get(p.url("/hello")).send().await.unwrap();
    let log = || std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap_or_default();
    assert_eq!(r.status(), 200, "{}", log());
    assert_eq!(
        r.text().await.unwrap(),
        format!("tls-backend path=/hello sni={NAME}")
    );
    let r = client.get(p.url("/again")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The second request went on the first one's TLS connection, kept alive.
    let requests = b.requests();
    let on = |path: &str| requests.iter().find(|r| r.1 == path).map(|r| r.0);
    assert_eq!(on("/hello"), on("/again"), "{requests:?}");
    assert!(on("/hello").is_some());

    // A WebSocket upgrade over the TLS connection, and messages both ways after the 101.
    let (mut ws, resp) = tokio_tungstenite::connect_async(p.ws_url("/ws"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["one", "two"] {
        ws.send(Message::text(text)).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    let big = vec![7u8; 100_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
    assert!(b.paths().contains(&"/ws".to_string()));

    // Active checks reach the backend over TLS, and find it healthy.
    wait_until(Duration::from_secs(10), || async {
        b.paths().iter().any(|p| p == "/health")
    })
    .await;
    assert!(p.health().await.values().all(|h| *h));
    // Every handshake, the data plane's and the checks', named the server by SNI.
    let sni = b.sni();
    assert!(sni.iter().all(|s| s.as_deref() == Some(NAME)), "{sni:?}");
    assert_eq!(b.failed_handshakes(), 0);
}

#[tokio::test]
async fn a_certificate_the_ca_did_not_sign_is_a_502_and_the_backends_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let other = TestCa::new(dir.path(), "other");
    let b = TlsBackend::start(&other, NAME).await;
    let tls = format!(
        "tls = {{ ca = {}, server_name = \"{NAME}\" }}",
        toml_path(&ca.pem)
    );
    let p = start_proxy(&format!(
        "[upstream.app]\n{tls}\nbackends = [{{ addr = \"{a}\" }}]\n\n[upstream.checked]\n{tls}\nhealth = {{ kind = \"http\", path = \"/health\", interval = \"100ms\", timeout = \"1s\", rise = 1, fall = 1 }}\nbackends = [{{ addr = \"{a}\" }}]\n",
        a = b.addr
    ))
    .await;
    let before = metric(
        &p,
        "tideway_upstream_failures_total{reason=\"connect\",upstream=\"app\"}",
    )
    .await;
    let r = reqwest::get(p.url("/secret")).await.unwrap();
    assert_eq!(r.status(), 502);
    // The client is not told why; the log is.
    let body = r.text().await.unwrap();
    assert_eq!(body, r#"{"error":"no backend could be reached"}"#);
    let after = metric(
        &p,
        "tideway_upstream_failures_total{reason=\"connect\",upstream=\"app\"}",
    )
    .await;
    assert_eq!(
        after - before,
        1.0,
        "counted as the backend's connect failure"
    );
    let log = std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap();
    let failed = log
        .lines()
        .find(|l| l.contains("backend failed the request"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        failed.contains("TLS handshake") && failed.contains("certificate"),
        "{failed}"
    );
    // Not a byte of a request reached the backend; it saw the handshakes fail.
    assert!(b.paths().is_empty(), "{:?}", b.paths());
    assert!(b.failed_handshakes() >= 1);
    // The active checks fail the same handshake.
    wait_until(Duration::from_secs(10), || async {
        let v = p.admin_json("/v1/upstreams/checked").await;
        v["backends"][0]["healthy"] == serde_json::json!(false)
    })
    .await;
    assert!(b.paths().is_empty(), "{:?}", b.paths());
}

#[tokio::test]
async fn without_verification_and_sni_any_certificate_is_taken_and_no_name_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = TestCa::new(dir.path(), "unknown");
    let b = TlsBackend::start(&unknown, NAME).await;
    let p = start_proxy(&format!(
        "[upstream.app]\ntls = {{ verify = false, server_name = \"{NAME}\", sni = false }}\nbackends = [{{ addr = \"{}\" }}]\n",
        b.addr
    ))
    .await;
    let r = reqwest::get(p.url("/x")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tls-backend path=/x sni=-");
    assert_eq!(b.sni(), vec![None]);
}

/// A tcp listener passes its clients' bytes to the backend inside TLS tideway starts.
#[tokio::test]
async fn a_tcp_listener_reaches_its_backend_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let b = TlsBackend::start(&ca, NAME).await;
    let p = start_proxy_with(
        "protocol = \"tcp\"",
        &format!(
            "[upstream.app]\ntls = {{ ca = {}, server_name = \"{NAME}\" }}\nbackends = [{{ addr = \"{}\" }}]\n",
            toml_path(&ca.pem),
            b.addr
        ),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with(&format!("tls-backend path=/raw sni={NAME}")),
        "{answer}"
    );
}

/// One nginx file, three servers: `proxy_pass https://` verified against the CA under
/// `proxy_ssl_name` sent by SNI; against a CA that did not sign the backend's certificate;
/// and with nginx's defaults to a bare address. nginx and tideway answer alike, and the
/// backend sees the same SNI names from both.
#[tokio::test]
async fn proxy_pass_https_from_an_nginx_config_answers_as_nginx_does() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let other = TestCa::new(dir.path(), "other");
    let b = TlsBackend::start(&ca, NAME).await;
    let conf = |d: &std::path::Path, ports: [u16; 3]| {
        format!(
            "{}http {{
    access_log off;
    upstream backend {{ server {addr}; }}
    upstream wrong {{ server {addr}; }}
    server {{
        listen 127.0.0.1:{p0};
        location / {{
            proxy_pass https://backend;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name {NAME};
            proxy_ssl_server_name on;
        }}
    }}
    server {{
        listen 127.0.0.1:{p1};
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate {other};
        location / {{ proxy_pass https://wrong; }}
    }}
    server {{
        listen 127.0.0.1:{p2};
        location / {{ proxy_pass https://{addr}; }}
    }}
}}
",
            nginx_main(d),
            addr = b.addr,
            ca = ca.pem.display(),
            other = other.pem.display(),
            p0 = ports[0],
            p1 = ports[1],
            p2 = ports[2],
        )
    };
    let (nd, td) = (dir.path().join("nginx"), dir.path().join("tideway"));
    std::fs::create_dir_all(&nd).unwrap();
    std::fs::create_dir_all(&td).unwrap();
    let (np, tp) = (
        [free_port(), free_port(), free_port()],
        [free_port(), free_port(), free_port()],
    );
    std::fs::write(nd.join("nginx.conf"), conf(&nd, np)).unwrap();
    std::fs::write(td.join("nginx.conf"), conf(&td, tp)).unwrap();
    let _nginx = run_nginx(&nd.join("nginx.conf"), np[2], &nd).await;
    let _tideway = run_tideway_nginx(&td.join("nginx.conf"), tp[2], &td).await;
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for ports in [np, tp] {
        let mut seen = Vec::new();
        for port in ports {
            let before = b.sni().len();
            let r = client
                .get(format!("http://127.0.0.1:{port}/p"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            // nginx checks the certificate after the handshake, tideway during it: the
            // backend sees a handshake complete only with nginx. What counts is the 502.
            let (body, sni) = if status == 200 {
                (r.text().await.unwrap(), b.sni()[before..].to_vec())
            } else {
                (String::new(), vec![])
            };
            seen.push((status, body, sni));
        }
        answers.push(seen);
    }
    assert_eq!(
        answers[0],
        vec![
            (
                200,
                format!("tls-backend path=/p sni={NAME}"),
                vec![Some(NAME.to_string())]
            ),
            (502, String::new(), vec![]),
            (200, "tls-backend path=/p sni=-".to_string(), vec![None]),
        ],
        "nginx"
    );
    assert_eq!(answers[1], answers[0], "tideway as nginx");
}

/// An answer the backend sends unasked behind the asked one never reaches the next client.
/// Over TLS those bytes are usually read from the socket and decrypted inside rustls already,
/// where a look at the socket cannot see them: the pool must look at the TLS stream.
#[tokio::test]
async fn bytes_a_tls_backend_sends_past_its_answer_never_answer_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let b = TlsBackend::start(&ca, NAME).await;
    let p = start_proxy(&format!(
        "[upstream.app]\ntls = {{ ca = {}, server_name = \"{NAME}\" }}\nbackends = [{{ addr = \"{}\" }}]\n",
        toml_path(&ca.pem),
        b.addr
    ))
    .await;
    let client = reqwest::Client::new();
    let r = client.get(p.url(SMUGGLE)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        format!(
            "tls-backend path={SMUGGLE} sni={NAME}{}",
            ".".repeat(SMUGGLE_PAD)
        )
    );
    let r = client.get(p.url("/second")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        format!("tls-backend path=/second sni={NAME}"),
        "not the unasked answer {INJECTED:?}"
    );
    // The second request went on a new connection: the first one was thrown away.
    let requests = b.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_ne!(requests[0].0, requests[1].0, "{requests:?}");
}

/// Bytes queued in the kernel for the established TCP connection to `to` (its `tx_queue` in
/// /proc/net/tcp; the largest, beside the harness's readiness probes); None while there is
/// no such connection.
fn queued_to(to: std::net::SocketAddr) -> Option<u64> {
    let rem = format!("0100007F:{:04X}", to.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&rem.as_str()) && f.get(3) == Some(&"01"))
                .then(|| u64::from_str_radix(f[4].split(':').next()?, 16).ok())?
        })
        .max()
}

/// A tcp listener over TLS to a backend that stops reading: the client sends piece by piece
/// until a piece no longer reaches tideway's socket (the socket is full; rustls took the
/// piece), then only waits for the answer while the backend reads again. The bytes rustls
/// held are flushed when the socket drains: the backend gets every byte and answers.
#[tokio::test]
async fn bytes_rustls_took_while_the_socket_was_full_reach_the_backend_when_it_drains() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PIECE: usize = 16 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let acceptor = tls_backend::acceptor(&ca, NAME);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    // Each connection (the harness's readiness probes open some) reads nothing until told
    // how much will come.
    let (go, wait) = tokio::sync::watch::channel(0usize);
    let _backend = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, mut wait) = (acceptor.clone(), wait.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(&total) = wait.wait_for(|t| *t > 0).await.as_deref() else {
                    return;
                };
                let (mut got, mut buf) = (0, vec![0u8; 64 * 1024]);
                while got < total {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let _ = tls.write_all(format!("got {got}").as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let p = start_proxy_with(
        "protocol = \"tcp\"",
        &format!(
            "[upstream.app]\ntls = {{ ca = {}, server_name = \"{NAME}\" }}\nbackends = [{{ addr = \"{addr}\" }}]\n",
            toml_path(&ca.pem),
        ),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(&[b'x'; PIECE]).await.unwrap();
    let mut sent = PIECE;
    wait_until(Duration::from_secs(10), || async {
        queued_to(addr).is_some_and(|q| q > 0)
    })
    .await;
    // More pieces while each one still shows in the kernel's queue to the backend; the
    // first that does not (within a generous wait) sits in rustls. Bounded either way.
    while sent < 256 << 20 {
        let before = queued_to(addr).unwrap();
        s.write_all(&[b'x'; PIECE]).await.unwrap();
        sent += PIECE;
        let start = std::time::Instant::now();
        let grew = loop {
            if queued_to(addr).unwrap() > before {
                break true;
            }
            if start.elapsed() > Duration::from_millis(500) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if !grew {
            break;
        }
    }
    go.send(sent).unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
        .await
        .expect("the backend answers once it has every byte")
        .unwrap();
    assert_eq!(answer, format!("got {sent}"));
}

/// A TLS backend that closes its TCP without a close_notify ends a tunnel as a plain close
/// would (the client gets the answer, then the end of the stream), not as an error.
#[tokio::test]
async fn a_tls_backend_closing_without_close_notify_ends_a_tunnel_as_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let acceptor = tls_backend::acceptor(&ca, NAME);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Per connection (the harness's readiness probes open some): a ping, a pong, and the
    // TCP connection closed under the TLS session: no close_notify.
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let _backend = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut ping = [0u8; 4];
                if tls.read_exact(&mut ping).await.is_ok() && tls.write_all(b"pong").await.is_ok() {
                    let _ = tls.flush().await;
                }
                let (tcp, _) = tls.into_inner();
                drop(tcp);
            });
        }
    });
    let p = start_proxy_with(
        "protocol = \"tcp\"",
        &format!(
            "[upstream.app]\ntls = {{ ca = {}, server_name = \"{NAME}\" }}\nbackends = [{{ addr = \"{addr}\" }}]\n",
            toml_path(&ca.pem),
        ),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, b"pong");
    drop(s);
    let ended = |reason: &'static str| {
        let p = &p;
        async move {
            metric(
                p,
                &format!("tideway_tunnels_ended_total{{reason=\"{reason}\",upstream=\"app\"}}"),
            )
            .await
        }
    };
    // Every tunnel (one per backend connection) ended, each as a plain close.
    wait_until(Duration::from_secs(10), || async {
        let all = accepted.load(std::sync::atomic::Ordering::SeqCst) as f64;
        ended("closed").await + ended("error").await == all
    })
    .await;
    assert_eq!(ended("error").await, 0.0);
    assert!(ended("closed").await >= 1.0);
}

/// `proxy_ssl on` in an nginx `stream` server: the tcp listener speaks TLS to its backend,
/// verified against the stream block's CA under `proxy_ssl_name`, sent by SNI; and with
/// nginx's defaults (no verification, no SNI) to a bare address. Real nginx runs the same
/// file; both answer alike and the backend sees the same SNI names.
#[tokio::test]
async fn stream_proxy_ssl_from_an_nginx_config_answers_as_nginx_does() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let b = TlsBackend::start(&ca, NAME).await;
    let conf = |d: &std::path::Path, ports: [u16; 2]| {
        format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;
{}stream {{
    upstream backend {{ server {addr}; }}
    proxy_ssl_trusted_certificate {ca};
    server {{
        listen 127.0.0.1:{p0};
        proxy_pass backend;
        proxy_ssl on;
        proxy_ssl_verify on;
        proxy_ssl_name {NAME};
        proxy_ssl_server_name on;
    }}
    server {{
        listen 127.0.0.1:{p1};
        proxy_ssl on;
        proxy_pass {addr};
    }}
}}
",
            nginx_main(d),
            addr = b.addr,
            ca = ca.pem.display(),
            p0 = ports[0],
            p1 = ports[1],
        )
    };
    let (nd, td) = (dir.path().join("nginx"), dir.path().join("tideway"));
    std::fs::create_dir_all(&nd).unwrap();
    std::fs::create_dir_all(&td).unwrap();
    let (np, tp) = ([free_port(), free_port()], [free_port(), free_port()]);
    std::fs::write(nd.join("nginx.conf"), conf(&nd, np)).unwrap();
    std::fs::write(td.join("nginx.conf"), conf(&td, tp)).unwrap();
    let _nginx = run_nginx(&nd.join("nginx.conf"), np[1], &nd).await;
    let _tideway = run_tideway_nginx(&td.join("nginx.conf"), tp[1], &td).await;
    let mut answers = Vec::new();
    for ports in [np, tp] {
        let mut seen = Vec::new();
        for port in ports {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(b"GET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = String::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
                .await
                .expect("an answer or the end within 10 s");
            let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
            seen.push(body);
        }
        answers.push(seen);
    }
    assert_eq!(
        answers[0],
        vec![
            Some(format!("tls-backend path=/s sni={NAME}")),
            Some("tls-backend path=/s sni=-".to_string()),
        ],
        "nginx"
    );
    assert_eq!(answers[1], answers[0], "tideway as nginx");
    assert_eq!(b.failed_handshakes(), 0);
}
