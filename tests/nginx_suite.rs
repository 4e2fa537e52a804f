//! Behaviours nginx's own test suite (nginx/nginx-tests, run by hand: docs/nginx-tests.md)
//! relies on, kept here because the suite cannot run in CI. Each test runs `tideway run
//! --nginx` on a config in the suite's style, and compares with real nginx where both serve
//! the same thing:
//! - a server of the same config that only `return`s is a backend like any other, not a loop
//!   (the suite's configs proxy to such servers); a server that proxies to itself stays 508;
//! - `proxy_next_upstream` does not count a `down` server as one more to try: with the others
//!   tried, the last answer goes to the client (nginx's `peer.tries`);
//! - (a location that neither proxies nor returns, where nginx serves files, is
//!   tests/nginx_report.rs's: an import error, or 404 with `--skip-unproxied`);
//! - a server listed twice in an upstream is two peers;
//! - `return 444` closes the connection without an answer;
//! - `hash KEY consistent` balances a key that comes out empty round robin;
//! - `max_fails` counts failures with successes between them, until `fail_timeout` has passed
//!   since the last one;
//! - a response with Content-Length twice, or with Transfer-Encoding too, is a 502;
//! - `add_header` applies to the answer a `return` makes (the suite's backends tag it with
//!   `add_header X-Port $server_port`), for nginx's statuses or `always`.

mod common;

use common::nginx::*;
use common::*;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request over a raw socket; the whole answer (the proxy closes: HTTP/1.0).
async fn get(port: u16, target: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw answer.
fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The body of a raw answer.
fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// A backend that answers every request `404` with body `id`, counting requests.
async fn not_found(
    id: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{id}",
                    id.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, count)
}

fn write(dir: &Path, name: &str, http: &str) -> std::path::PathBuf {
    let file = dir.join(name);
    let text = format!(
        "{}http {{\n    access_log off;\n    client_body_temp_path {d};\n    proxy_temp_path {d};\n{http}}}\n",
        nginx_main(dir),
        d = dir.display()
    );
    std::fs::write(&file, text).unwrap();
    file
}

#[tokio::test]
async fn a_server_that_only_returns_is_a_backend_and_one_that_proxies_to_itself_is_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (front, answers, looped) = (free_port(), free_port(), free_port());
    let http = format!(
        "    upstream own {{ server 127.0.0.1:{answers}; }}\n\
         upstream back {{ server 127.0.0.1:{looped}; }}\n\
         server {{ listen 127.0.0.1:{front}; location / {{ proxy_pass http://own; proxy_http_version 1.1; }} }}\n\
         server {{ listen 127.0.0.1:{answers}; location / {{ return 200 \"from-the-answering-server\"; }} }}\n\
         server {{ listen 127.0.0.1:{looped}; location / {{ proxy_pass http://back; }} }}\n"
    );
    let file = write(dir.path(), "self.conf", &http);
    let _t = run_tideway_nginx(&file, front, dir.path()).await;
    wait_port(answers).await;
    wait_port(looped).await;

    let r = get(front, "/x").await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(body(&r), "from-the-answering-server");
    // The server proxying to its own address: 508 at once, not requests nesting without end.
    let r = get(looped, "/x").await;
    assert_eq!(status(&r), 508, "{r}");
    assert!(body(&r).contains("loop detected"), "{r}");
}

#[tokio::test]
async fn next_upstream_does_not_count_a_down_server_as_in_nginx() {
    let (a, tried) = not_found("from-a").await;
    let (down, never) = not_found("from-down").await;
    let dir = tempfile::tempdir().unwrap();
    let (nport, tport) = (free_port(), free_port());
    let http = |port: u16| {
        format!(
            "    upstream u3 {{ server {a}; server {down} down; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://u3; proxy_http_version 1.1; proxy_next_upstream http_404; }} }}\n"
        )
    };
    let nfile = write(dir.path(), "nginx.conf", &http(nport));
    let tfile = write(dir.path(), "tideway.conf", &http(tport));
    let _n = run_nginx(&nfile, nport, dir.path()).await;
    let _t = run_tideway_nginx(&tfile, tport, dir.path()).await;

    for port in [nport, tport] {
        let before = tried.load(std::sync::atomic::Ordering::SeqCst);
        let r = get(port, "/down/").await;
        // The one server that is not down was tried once, and its 404 is the answer (not
        // "no backend could be reached").
        assert_eq!(status(&r), 404, "port {port}: {r}");
        assert_eq!(
            tried.load(std::sync::atomic::Ordering::SeqCst),
            before + 1,
            "port {port}"
        );
    }
    let tideway = get(tport, "/down/").await;
    assert_eq!(body(&tideway), "from-a", "{tideway}");
    assert_eq!(never.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_server_listed_twice_is_two_peers_as_in_nginx() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dir = tempfile::tempdir().unwrap();
    let (nport, tport) = (free_port(), free_port());
    let http = |port: u16| {
        format!(
            "    upstream u {{ server {a}; server {a}; server {b}; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://u; proxy_http_version 1.1; }} }}\n",
            a = a.addr,
            b = b.addr
        )
    };
    let nfile = write(dir.path(), "nginx.conf", &http(nport));
    let tfile = write(dir.path(), "tideway.conf", &http(tport));
    let _n = run_nginx(&nfile, nport, dir.path()).await;
    let _t = run_tideway_nginx(&tfile, tport, dir.path()).await;
    let client = reqwest::Client::new();
    for port in [nport, tport] {
        let mut to_a = 0;
        for _ in 0..30 {
            let id = backend_id(&client, &format!("http://127.0.0.1:{port}/")).await;
            to_a += usize::from(id == "a");
        }
        assert_eq!(to_a, 20, "port {port}: a is two peers of three");
    }
}

/// `hash KEY consistent` with a key that comes out empty balances round robin, as nginx does
/// (nginx-tests upstream_hash.t "empty key - consistent"); a present key stays on one backend.
#[tokio::test]
async fn a_consistent_hash_balances_an_empty_key_round_robin_as_in_nginx() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dir = tempfile::tempdir().unwrap();
    let (nport, tport) = (free_port(), free_port());
    let http = |port: u16| {
        format!(
            "    upstream u {{ hash $arg_a consistent; server {a}; server {b}; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://u; proxy_http_version 1.1; }} }}\n",
            a = a.addr,
            b = b.addr
        )
    };
    let nfile = write(dir.path(), "nginx.conf", &http(nport));
    let tfile = write(dir.path(), "tideway.conf", &http(tport));
    let _n = run_nginx(&nfile, nport, dir.path()).await;
    let _t = run_tideway_nginx(&tfile, tport, dir.path()).await;
    let client = reqwest::Client::new();
    for port in [nport, tport] {
        // The argument missing, then present and empty: both an empty key.
        for target in ["/", "/?a="] {
            let mut to_a = 0;
            for _ in 0..20 {
                let id = backend_id(&client, &format!("http://127.0.0.1:{port}{target}")).await;
                to_a += usize::from(id == "a");
            }
            assert_eq!(to_a, 10, "port {port}, {target}: an empty key alternates");
        }
        let mut keyed = std::collections::BTreeSet::new();
        for _ in 0..10 {
            keyed.insert(backend_id(&client, &format!("http://127.0.0.1:{port}/?a=7")).await);
        }
        assert_eq!(keyed.len(), 1, "port {port}: a key keeps its backend");
    }
}

#[tokio::test]
async fn return_444_closes_without_an_answer_as_in_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let (nport, tport) = (free_port(), free_port());
    let http = |port: u16| {
        format!(
            "    server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"kept\"; }} location /drop {{ return 444; }} }}\n"
        )
    };
    let nfile = write(dir.path(), "nginx.conf", &http(nport));
    let tfile = write(dir.path(), "tideway.conf", &http(tport));
    let _n = run_nginx(&nfile, nport, dir.path()).await;
    let _t = run_tideway_nginx(&tfile, tport, dir.path()).await;
    for port in [nport, tport] {
        assert_eq!(
            get(port, "/drop").await,
            "",
            "port {port}: closed, no answer"
        );
        let r = get(port, "/").await;
        assert_eq!((status(&r), body(&r)), (200, "kept"), "port {port}: {r}");
    }
}

/// A backend that answers `200` with body `id` and closes, except that every `every`th request
/// it gets is closed without an answer (`every` 0: never).
async fn flaky(id: &'static str, every: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            n += 1;
            if every > 0 && n % every == 0 {
                continue;
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{id}",
                id.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn max_fails_counts_failures_with_successes_between_as_in_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let (nport, tport) = (free_port(), free_port());
    // One pair of backends per proxy, so each sees its own every-third failure.
    let (na, nb) = (flaky("a", 3).await, flaky("b", 0).await);
    let (ta, tb) = (flaky("a", 3).await, flaky("b", 0).await);
    let http = |port: u16, a: std::net::SocketAddr, b: std::net::SocketAddr| {
        format!(
            "    upstream u {{ server {a} max_fails=3 fail_timeout=10s; server {b} max_fails=3 fail_timeout=10s; }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://u; proxy_http_version 1.1; }} }}\n"
        )
    };
    let nfile = write(dir.path(), "nginx.conf", &http(nport, na, nb));
    let tfile = write(dir.path(), "tideway.conf", &http(tport, ta, tb));
    let _n = run_nginx(&nfile, nport, dir.path()).await;
    let _t = run_tideway_nginx(&tfile, tport, dir.path()).await;
    for port in [nport, tport] {
        let mut from_a = 0;
        for _ in 0..30 {
            let r = get(port, "/").await;
            assert_eq!(status(&r), 200, "port {port}: a failure goes on to b: {r}");
            from_a += usize::from(body(&r) == "a");
        }
        // a answers its 1st, 2nd, 4th, 5th, 7th and 8th requests; its 3rd failure (the 9th
        // request) takes it out for fail_timeout, though successes came between.
        assert_eq!(from_a, 6, "port {port}");
    }
}

/// A backend that answers every request with the raw bytes `answer`, then closes.
async fn raw_backend(answer: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    addr
}

#[tokio::test]
async fn a_response_framed_twice_is_refused_with_502() {
    let framed = [
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
    ];
    let ok =
        raw_backend("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok").await;
    for answer in framed {
        let bad = raw_backend(answer).await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let http = format!(
            "    server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://{bad}; }} location /ok {{ proxy_pass http://{ok}; }} }}\n"
        );
        let file = write(dir.path(), "framed.conf", &http);
        let _t = run_tideway_nginx(&file, port, dir.path()).await;
        let r = get(port, "/").await;
        assert_eq!(status(&r), 502, "{answer:?}: {r}");
        let r = get(port, "/ok").await;
        assert_eq!((status(&r), body(&r)), (200, "ok"), "{r}");
    }
}

/// The value of header `name` in a raw answer's head (names compared case-insensitively).
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split_once("\r\n\r\n").map_or(answer, |(h, _)| h);
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn add_header_applies_to_what_return_answers_as_in_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let http = |one: u16, two: u16| {
        format!(
            "    server {{ listen 127.0.0.1:{one}; listen 127.0.0.1:{two};\n\
             add_header X-Port $server_port;\n\
             location / {{ return 204; }}\n\
             location /err {{ return 500; }}\n\
             location /always {{ add_header X-Always \"on $request_method\" always; return 503; }} }}\n"
        )
    };
    let nfile = write(dir.path(), "nginx.conf", &http(ports[0], ports[1]));
    let tfile = write(dir.path(), "tideway.conf", &http(ports[2], ports[3]));
    let _n = run_nginx(&nfile, ports[0], dir.path()).await;
    let _t = run_tideway_nginx(&tfile, ports[2], dir.path()).await;
    wait_port(ports[1]).await;
    wait_port(ports[3]).await;
    for port in ports {
        // Each listen of the server answers with its own port.
        let r = get(port, "/").await;
        assert_eq!(status(&r), 204, "port {port}: {r}");
        assert_eq!(header(&r, "x-port"), Some(&*port.to_string()), "{r}");
        // 500 is not among nginx's statuses for add_header without `always`.
        let r = get(port, "/err").await;
        assert_eq!(status(&r), 500, "port {port}: {r}");
        assert_eq!(header(&r, "x-port"), None, "port {port}: {r}");
        // The location's own add_header replaces the server's; `always` adds it to a 503.
        let r = get(port, "/always").await;
        assert_eq!(status(&r), 503, "port {port}: {r}");
        assert_eq!(header(&r, "x-always"), Some("on GET"), "port {port}: {r}");
        assert_eq!(header(&r, "x-port"), None, "port {port}: {r}");
    }
}
