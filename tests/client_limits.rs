//! Per-client limits (nginx's `limit_req` and `limit_conn`) against a real tideway, from raw
//! sockets bound to distinct loopback addresses: what each client gets, what the backend
//! received, and that another client is not touched. Then the same nginx config served by real
//! nginx and by `tideway run --nginx`, given the same requests.

mod common;
#[path = "support/counting.rs"]
mod counting;

use common::nginx::{wait_port, Running};
use common::*;
use counting::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `app` upstream on `backend`, then the zone tables.
fn app_and_zones(backend: SocketAddr, zones: &str) -> String {
    format!("[upstream.app]\nbackends = [{{ addr = \"{backend}\" }}]\n\n{zones}")
}

const ONE_PER_MINUTE: &str =
    "[limit_zone.one]\nkind = \"rate\"\nkey = \"ip\"\nsize = \"1m\"\nrate = \"1r/m\"\n";
const CONNS: &str = "[limit_zone.addr]\nkind = \"conn\"\nsize = \"1m\"\n";

/// One keep-alive `GET /` on `io`: the status and the body.
async fn keepalive_get(io: &mut tokio::net::TcpStream) -> (u16, String) {
    io.write_all(b"GET / HTTP/1.1\r\nHost: limits.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = io.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if body.len() >= len {
                return (status_in(&buf), body.to_string());
            }
        }
    }
}

#[tokio::test]
async fn a_burst_with_nodelay_passes_burst_plus_one_and_refuses_the_rest() {
    let b = Counting::start().await;
    let p = start_proxy_with(
        "client_limits = [{ zone = \"one\", burst = 3, nodelay = true }]",
        &app_and_zones(b.addr, ONE_PER_MINUTE),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..8 {
        got.push(get_from(ONE, p.http, "/").await);
    }
    assert_eq!(got, [200, 200, 200, 200, 503, 503, 503, 503]);
    assert_eq!(b.received(), 4);
    // A refusal is a JSON error, and a request without a body keeps its connection.
    let mut io = connect_from(ONE, p.http).await;
    for _ in 0..2 {
        let (status, body) = keepalive_get(&mut io).await;
        assert_eq!(status, 503);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "too many requests from this address");
    }
    assert_eq!(b.received(), 4);
    // Another client has a bucket of its own.
    assert_eq!(get_from(TWO, p.http, "/").await, 200);
    assert_eq!(b.received(), 5);
    assert_eq!(
        metric(
            &p,
            "tideway_limit_refused_total{reason=\"rate\",zone=\"one\"}"
        )
        .await,
        6.0
    );
}

/// A proxy whose listener delays requests over 30 a minute (a request drains in 2 s), with a
/// burst of 2.
async fn slow_zone(backend: SocketAddr) -> Proxy {
    start_proxy_with(
        "client_limits = [{ zone = \"slow\", burst = 2 }]",
        &app_and_zones(
            backend,
            "[limit_zone.slow]\nkind = \"rate\"\nrate = \"30r/m\"\n",
        ),
    )
    .await
}

#[tokio::test]
async fn without_nodelay_the_burst_is_delayed_not_refused() {
    let b = Counting::start().await;
    // 30r/m: a request drains in 2 s, so the volley is judged long before anything drains.
    let p = slow_zone(b.addr).await;
    let mut volley = Volley::fire(ONE, p.http, "/", 5).await;
    // One passes, two are over the burst; the two within it wait (2 s and 4 s).
    let first = volley.answers(3, Duration::from_secs(10)).await;
    assert_eq!(first, [200, 503, 503]);
    assert_eq!(b.received(), 1);
    let rest = volley.answers(2, Duration::from_secs(20)).await;
    assert_eq!(rest, [200, 200]);
    assert_eq!(b.received(), 3);
}

#[tokio::test]
async fn a_delayed_request_whose_client_leaves_is_never_sent() {
    let b = Counting::start().await;
    let p = slow_zone(b.addr).await;
    assert_eq!(get_from(ONE, p.http, "/").await, 200);
    // The second waits 2 s; its client leaves at once.
    let mut gone = connect_from(ONE, p.http).await;
    gone.write_all(b"GET /gone HTTP/1.1\r\nHost: limits.test\r\n\r\n")
        .await
        .unwrap();
    drop(gone);
    // Watch a window twice its delay for an absence: sent, it would arrive at 2 s.
    let window = std::time::Instant::now();
    while window.elapsed() < Duration::from_secs(4) {
        assert_eq!(
            b.received(),
            1,
            "the request whose client left reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn slow_requests_hold_their_clients_connection_count() {
    let b = Counting::start().await;
    let p = start_proxy_with(
        "client_limits = [{ zone = \"addr\", conn = 2, status = 429 }]",
        &app_and_zones(b.addr, CONNS),
    )
    .await;
    let http = p.http;
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(get_from(ONE, http, "/slow")))
        .collect();
    wait_until(Duration::from_secs(10), || async { b.received() == 2 }).await;
    assert_eq!(get_from(ONE, p.http, "/").await, 429);
    assert_eq!(b.received(), 2);
    assert_eq!(get_from(TWO, p.http, "/").await, 200);
    b.release();
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    // Both requests are over: their counts went back with them.
    assert_eq!(get_from(ONE, p.http, "/").await, 200);
    assert_eq!(
        metric(
            &p,
            "tideway_limit_refused_total{reason=\"conn\",zone=\"addr\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn open_websockets_count_until_they_close() {
    let demo = backend("ws").await;
    let p = start_proxy_with(
        "client_limits = [{ zone = \"addr\", conn = 2 }]",
        &app_and_zones(demo.addr, CONNS),
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let (ws, _) = tokio_tungstenite::connect_async(p.ws_url("/chat"))
            .await
            .unwrap();
        open.push(ws);
    }
    match tokio_tungstenite::connect_async(p.ws_url("/chat")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a third WebSocket: {:?}", other.map(|_| ())),
    }
    assert_eq!(get_from(ONE, p.http, "/").await, 503);
    assert_eq!(get_from(TWO, p.http, "/").await, 200);
    // The open ones still work.
    open[0].send("still here".into()).await.unwrap();
    assert_eq!(open[0].next().await.unwrap().unwrap(), "still here".into());
    let mut ws = open.pop().unwrap();
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    wait_until(Duration::from_secs(10), || async {
        get_from(ONE, p.http, "/").await == 200
    })
    .await;
}

/// A request on `socket` gets no byte back, and the socket closes.
async fn closed_unanswered(mut socket: tokio::net::TcpStream) {
    let _ = socket
        .write_all(b"GET / HTTP/1.1\r\nHost: limits.test\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the socket over the limit was not closed");
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
}

#[tokio::test]
async fn a_tcp_listener_closes_a_socket_over_the_limit() {
    let b = Counting::start().await;
    let p = start_proxy_with(
        "protocol = \"tcp\"\nclient_limits = [{ zone = \"addr\", conn = 1 }]",
        &app_and_zones(b.addr, CONNS),
    )
    .await;
    // From 127.0.0.3: the harness's readiness check connected from 127.0.0.1, and its tunnel
    // may not have ended yet.
    let mut first = connect_from(THREE, p.http).await;
    assert_eq!(keepalive_get(&mut first).await.0, 200);
    let second = connect_from(THREE, p.http).await;
    closed_unanswered(second).await;
    assert_eq!(b.received(), 1);
    // Another client gets through; the first one's socket still works.
    assert_eq!(get_from(TWO, p.http, "/").await, 200);
    assert_eq!(keepalive_get(&mut first).await.0, 200);
    drop(first);
    wait_until(Duration::from_secs(10), || async {
        get_from(THREE, p.http, "/").await == 200
    })
    .await;
    assert!(
        metric(
            &p,
            "tideway_limit_refused_total{reason=\"conn\",zone=\"addr\"}"
        )
        .await
            >= 1.0
    );
}

#[test]
fn a_limit_that_cannot_be_honoured_is_a_config_error_with_its_line() {
    let cases = [
        (
            "client_limits = [{ zone = \"nope\" }]",
            "",
            "unknown limit zone \"nope\"",
        ),
        (
            "protocol = \"tcp\"\nclient_limits = [{ zone = \"one\" }]",
            ONE_PER_MINUTE,
            "a tcp listener takes conn zones only",
        ),
        (
            "client_limits = [{ zone = \"addr\" }]",
            CONNS,
            "give conn = N",
        ),
        (
            "client_limits = [{ zone = \"one\", conn = 3 }]",
            ONE_PER_MINUTE,
            "conn is for conn zones",
        ),
        (
            "",
            "[limit_zone.z]\nkind = \"rate\"\nrate = \"10r/h\"\n",
            "invalid rate",
        ),
        (
            "",
            "[limit_zone.z]\nkind = \"conn\"\nkey = \"uri\"\n",
            "unknown zone key",
        ),
        (
            "",
            "[limit_zone.z]\nkind = \"conn\"\nsize = \"4k\"\n",
            "too small",
        ),
    ];
    for (listener, zones, want) in cases {
        let text = format!(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nupstream = \"app\"\n{listener}\n\n[upstream.app]\nbackends = []\n\n{zones}"
        );
        let err = tideway::config::parse(&text, Path::new("t.toml"))
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"))
            .to_string();
        assert!(err.starts_with("t.toml:") && err.contains(want), "{err}");
    }
}

// ---- the same nginx config, served by real nginx and by tideway ----

/// Four servers: a burst with nodelay, a delayed burst with its own status, a connection cap,
/// and a rate limit with a connection cap (which one judges first).
fn limits_conf(dir: &Path, backend: SocketAddr, ports: [u16; 4]) -> String {
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\nhttp {{\n    access_log off;\n    client_body_temp_path {d};\n    proxy_temp_path {d};\n    limit_req_zone $binary_remote_addr zone=burst:1m rate=1r/m;\n    limit_req_zone $remote_addr zone=delayed:1m rate=1r/m;\n    limit_conn_zone $binary_remote_addr zone=addr:1m;\n    limit_conn_zone $binary_remote_addr zone=addr2:1m;\n    limit_req_zone $binary_remote_addr zone=both:1m rate=1r/m;\n    upstream app {{ server {backend}; }}\n    server {{\n        listen 127.0.0.1:{p0};\n        limit_req zone=burst burst=3 nodelay;\n        location / {{ proxy_pass http://app; }}\n    }}\n    server {{\n        listen 127.0.0.1:{p1};\n        limit_req_status 429;\n        location / {{\n            limit_req zone=delayed burst=2;\n            proxy_pass http://app;\n        }}\n    }}\n    server {{\n        listen 127.0.0.1:{p2};\n        limit_conn addr 1;\n        limit_conn_status 429;\n        location / {{ proxy_pass http://app; }}\n    }}\n    server {{\n        listen 127.0.0.1:{p3};\n        limit_req zone=both burst=5 nodelay;\n        limit_conn addr2 1;\n        limit_conn_status 429;\n        location / {{ proxy_pass http://app; }}\n    }}\n}}\n",
        d = dir.display(),
        p0 = ports[0],
        p1 = ports[1],
        p2 = ports[2],
        p3 = ports[3],
    )
}

/// What one server gave the same requests: statuses, and the backend's count after each part.
async fn exercise(ports: [u16; 4], b: &Counting) -> Vec<String> {
    let mut seen = Vec::new();
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    // Burst with nodelay, one connection after another; then another client.
    let mut burst = Vec::new();
    for _ in 0..7 {
        burst.push(get_from(ONE, at(ports[0]), "/").await);
    }
    burst.push(get_from(TWO, at(ports[0]), "/").await);
    seen.push(format!(
        "nodelay burst: {burst:?}, backend {}",
        b.received()
    ));
    // Delayed burst: 6 at once; the answers that come at once, and how many wait.
    let mut volley = Volley::fire(ONE, at(ports[1]), "/", 6).await;
    let prompt = volley.answers(4, Duration::from_secs(10)).await;
    // Those within the burst wait a minute or more: not answered, not sent on.
    let late = volley.arrived();
    seen.push(format!(
        "delayed burst: prompt {prompt:?}, late {late:?}, backend {}",
        b.received()
    ));
    // A connection cap of 1: a slow request holds it.
    let slow = tokio::spawn(get_from(ONE, at(ports[2]), "/slow"));
    let before = b.received();
    wait_until(Duration::from_secs(10), || async {
        b.received() == before + 1
    })
    .await;
    let over = get_from(ONE, at(ports[2]), "/").await;
    let other = get_from(TWO, at(ports[2]), "/").await;
    b.release();
    let held = slow.await.unwrap();
    seen.push(format!(
        "conn cap: held {held}, over {over}, other client {other}, backend {}",
        b.received()
    ));
    // Rate and connection limits together: a request over the connection cap is charged to
    // the rate first (nginx runs limit_req before limit_conn), so the bucket fills with it.
    b.hold();
    let slow = tokio::spawn(get_from(ONE, at(ports[3]), "/slow"));
    let before = b.received();
    wait_until(Duration::from_secs(10), || async {
        b.received() == before + 1
    })
    .await;
    let mut over = Vec::new();
    for _ in 0..7 {
        over.push(get_from(ONE, at(ports[3]), "/").await);
    }
    b.release();
    let held = slow.await.unwrap();
    seen.push(format!(
        "rate and conn: held {held}, over {over:?}, backend {}",
        b.received()
    ));
    seen
}

#[tokio::test]
async fn the_same_nginx_config_gives_the_same_answers_as_real_nginx() {
    if Command::new("nginx").arg("-v").output().is_err() {
        panic!("nginx is not installed (scripts/test.sh installs nginx-light)");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for who in ["nginx", "tideway"] {
        let b = Counting::start().await;
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let d = dir.path().join(who);
        std::fs::create_dir_all(&d).unwrap();
        let file = d.join("nginx.conf");
        std::fs::write(&file, limits_conf(&d, b.addr, ports)).unwrap();
        let mut cmd = if who == "nginx" {
            let mut c = Command::new("nginx");
            c.arg("-p").arg(&d).arg("-c").arg(&file);
            c
        } else {
            let mut c = Command::new(env!("CARGO_BIN_EXE_tideway"));
            c.args(["run", "--nginx"])
                .arg(&file)
                .args(["--admin", &format!("127.0.0.1:{}", free_port())])
                .arg("--data-dir")
                .arg(d.join("data"));
            c
        };
        let _server = Running(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        for p in ports {
            wait_port(p).await;
        }
        results.push(exercise(ports, &b).await);
    }
    println!("nginx:   {:#?}\ntideway: {:#?}", results[0], results[1]);
    assert_eq!(results[0], results[1]);
    // And what that is: nginx's documented behaviour.
    assert_eq!(
        results[0],
        [
            "nodelay burst: [200, 200, 200, 200, 503, 503, 503, 200], backend 5",
            "delayed burst: prompt [200, 429, 429, 429], late [], backend 6",
            "conn cap: held 200, over 429, other client 200, backend 8",
            "rate and conn: held 200, over [429, 429, 429, 429, 429, 503, 503], backend 9",
        ]
    );
}

#[test]
fn an_nginx_limit_tideway_cannot_honour_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nginx.conf");
    let cases = [
        (
            "limit_req_zone $uri zone=u:1m rate=1r/s;",
            3,
            "tideway limits by client address only",
        ),
        (
            "limit_conn nowhere 1;",
            4,
            "unknown limit_conn_zone \"nowhere\"",
        ),
        ("limit_req zone=x burst=-1;", 3, "invalid burst"),
    ];
    for (line, at, want) in cases {
        std::fs::write(
            &file,
            format!("http {{\n    upstream app {{ server 127.0.0.1:1; }}\n    {line}\n    server {{ listen 8080; location / {{ proxy_pass http://app; }} }}\n}}\n"),
        )
        .unwrap();
        let err = tideway::nginx::import(&file).err().unwrap().to_string();
        let place = format!("{}:{at}", file.display());
        // An unknown zone is found where a server uses it (the server's line, 4).
        assert!(err.contains(want) && err.contains(&place), "{err}");
        let out = Command::new(env!("CARGO_BIN_EXE_tideway"))
            .args(["check", "--nginx"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{line}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(want));
    }
}

/// A TCP listener that a reload adds gets its per-client limits, as one there at startup does.
#[tokio::test]
async fn a_tcp_listener_added_by_reload_keeps_its_limit() {
    let b = Counting::start().await;
    let p = start_proxy(&app_and_zones(b.addr, CONNS)).await;
    let port = free_port();
    let mut text = std::fs::read_to_string(&p.config_path).unwrap();
    text.push_str(&format!(
        "\n[[listener]]\nlisten = \"127.0.0.1:{port}\"\nprotocol = \"tcp\"\nupstream = \"app\"\nclient_limits = [{{ zone = \"addr\", conn = 1 }}]\n"
    ));
    std::fs::write(&p.config_path, text).unwrap();
    p.reload().await;
    let tcp: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until(Duration::from_secs(10), || async {
        get_from(TWO, tcp, "/").await == 200
    })
    .await;
    let mut first = connect_from(THREE, tcp).await;
    assert_eq!(keepalive_get(&mut first).await.0, 200);
    let before = b.received();
    let second = connect_from(THREE, tcp).await;
    closed_unanswered(second).await;
    assert_eq!(b.received(), before);
    assert_eq!(keepalive_get(&mut first).await.0, 200);
}
