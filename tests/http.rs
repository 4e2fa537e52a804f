//! tideway's own HTTP/1.1 path, end to end against a scripted raw-socket backend: keep-alive
//! reuse, hop-by-hop headers, every way a response body can be delimited, interim answers,
//! pipelining, large bodies, stale pooled connections, failover and timeouts.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tideway::net::wire::{read_head, HeadRead};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted backend saw: (connection number, request head).
type Seen = Arc<Mutex<Vec<(usize, String)>>>;

/// A backend whose answer depends on the path. `hangup_reused`: close, unanswered, every
/// request after the first on a connection (a keep-alive connection gone stale).
async fn scripted(hangup_reused: bool) -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let conns = Arc::new(AtomicUsize::new(0));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let n = conns.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s, n, log.clone(), hangup_reused));
        }
    });
    (addr, seen)
}

async fn serve(mut s: TcpStream, conn: usize, seen: Seen, hangup_reused: bool) {
    let mut buf = Vec::new();
    for req_no in 0.. {
        let Ok(HeadRead::Complete(len)) = read_head(&mut s, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..len]).to_string();
        let lower = head.to_ascii_lowercase();
        let body_len: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < len + body_len {
            let mut chunk = vec![0; 64 * 1024];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed mid-body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf[len..len + body_len].to_vec();
        buf.drain(..len + body_len);
        seen.lock().unwrap().push((conn, head.clone()));
        if hangup_reused && req_no > 0 {
            return;
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        match path.as_str() {
            "/chunked" => {
                s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
            }
            "/close" => {
                s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await.unwrap();
                return;
            }
            "/early" => s
                .write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap(),
            "/head" => s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                .await
                .unwrap(),
            "/echo" => {
                let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                s.write_all(h.as_bytes()).await.unwrap();
                s.write_all(&body).await.unwrap();
            }
            "/big" => {
                let big = vec![b'z'; 1 << 20];
                let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len());
                s.write_all(h.as_bytes()).await.unwrap();
                s.write_all(&big).await.unwrap();
            }
            "/silent" => tokio::time::sleep(Duration::from_secs(30)).await,
            "/stall" => {
                s.write_all(b"HTTP/1.1 200 OK\r\n\r\npartial").await.unwrap();
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            "/hangup" => return,
            "/wait-close" => {
                let mut probe = [0u8; 1];
                let n = s.read(&mut probe).await.unwrap_or(0);
                seen.lock().unwrap().push((conn, format!("closed after {n}")));
                return;
            }
            _ => {
                let body = format!("{conn}:{req_no}");
                let h = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(h.as_bytes()).await.unwrap();
            }
        }
    }
}

fn upstream(addrs: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{ addr = \"{a}\", id = \"b{i}\" }}"))
        .collect();
    format!(
        "[upstream.app]\n{extra}\nbackends = [{}]\n",
        list.join(", ")
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn reuses_upstream_connections_and_drops_hop_by_hop_headers() {
    let (addr, seen) = scripted(false).await;
    let p = start_proxy(&upstream(&[addr], "")).await;
    let c = client();
    for i in 0..20 {
        let r = c
            .get(p.url("/"))
            .header("connection", "keep-alive, x-drop")
            .header("x-drop", "1")
            .header("keep-alive", "timeout=9")
            .header("x-keep", "2")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("keep-alive").is_none(),
            "hop-by-hop answer header"
        );
        // One backend connection carries every request, in order.
        assert_eq!(r.text().await.unwrap(), format!("0:{i}"));
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20);
    for (_, head) in seen.iter() {
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("x-keep: 2\r\n"), "{head}");
        assert!(lower.contains("x-forwarded-for: 127.0.0.1\r\n"), "{head}");
        assert!(lower.contains("x-forwarded-proto: http\r\n"), "{head}");
        for dropped in ["x-drop", "keep-alive", "connection"] {
            assert!(
                !lower.contains(&format!("\n{dropped}:")),
                "{dropped} in {head}"
            );
        }
    }
}

#[tokio::test]
async fn chunked_close_delimited_head_and_interim_answers() {
    let (addr, _) = scripted(false).await;
    let p = start_proxy(&upstream(&[addr], "")).await;
    let c = client();
    let r = c.get(p.url("/chunked")).send().await.unwrap();
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
    assert_eq!(r.text().await.unwrap(), "hello world");

    // A body that ends at the backend's close reaches the client chunked, on a connection that
    // stays open.
    let r = c.get(p.url("/close")).send().await.unwrap();
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
    assert!(r.headers().get("connection").is_none());
    assert_eq!(r.text().await.unwrap(), "until close");

    // HEAD: the length is announced, no body follows, and the connection stays usable.
    let r = c.head(p.url("/head")).send().await.unwrap();
    assert_eq!(r.headers()["content-length"], "100");
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    let r = c.get(p.url("/early")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = c.get(p.url("/chunked")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello world");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (addr, _) = scripted(false).await;
    let p = start_proxy(&upstream(&[addr], "")).await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nSECONDGET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut all = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut all))
        .await
        .expect("the connection closes after the last answer")
        .unwrap();
    let first = all.find("\r\n\r\n0:0").expect(&all);
    let second = all.find("\r\n\r\nSECOND").expect(&all);
    let third = all.find("5\r\nhello\r\n").expect(&all);
    assert!(first < second && second < third, "{all}");
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3, "{all}");
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let (addr, _) = scripted(false).await;
    let p = start_proxy(&upstream(&[addr], "")).await;
    let c = client();
    let body: Vec<u8> = (0..(1 << 20) + 7).map(|i| (i % 251) as u8).collect();
    let r = c
        .post(p.url("/echo"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == body, "echoed body differs");
    let r = c.get(p.url("/big")).send().await.unwrap();
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert!(got.iter().all(|&b| b == b'z'));
}

#[tokio::test]
async fn a_stale_pooled_connection_is_retried_on_the_same_backend() {
    // Every reused connection hangs up unanswered; each GET still succeeds, on a fresh one.
    let (addr, seen) = scripted(true).await;
    let p = start_proxy(&upstream(&[addr], "retries = 0\nmax_fails = 0")).await;
    let c = client();
    for _ in 0..5 {
        let r = c.get(p.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.text().await.unwrap().ends_with(":0"),
            "answered on a fresh connection"
        );
    }
    {
        let seen = seen.lock().unwrap();
        let conns: std::collections::BTreeSet<usize> = seen.iter().map(|(c, _)| *c).collect();
        assert_eq!(conns.len(), 5, "one fresh connection per request");
    }
    // A POST the backend may have acted on is never sent twice: on a stale connection it fails.
    seen.lock().unwrap().clear();
    let r = c.post(p.url("/")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 502);
    let posts = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, h)| h.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "the POST reached the backend once");
}

#[tokio::test]
async fn an_unanswered_get_fails_over_and_a_post_does_not() {
    let (hangs, _) = scripted(false).await;
    let good = backend("good").await;
    let p = start_proxy(&upstream(&[hangs, good.addr], "retries = 1\nmax_fails = 0")).await;
    let c = client();
    // Round robin alternates: every GET still lands on an answer, from the good backend.
    for _ in 0..6 {
        let r = c.get(p.url("/hangup")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-backend-id"], "good");
    }
    // A POST is not sent twice: on the hanging backend it fails with a JSON 502.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = c.post(p.url("/hangup")).body("once").send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 502 {
            let v: serde_json::Value = r.json().await.unwrap();
            assert!(
                v["error"].as_str().unwrap().contains("backend failed"),
                "{v}"
            );
        }
    }
    assert!(
        statuses.contains(&502) && statuses.contains(&200),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_silent_backend_times_out_with_504() {
    let (addr, _) = scripted(false).await;
    let p = start_proxy(&upstream(&[addr], "idle_timeout = \"1s\"\nmax_fails = 0")).await;
    let started = std::time::Instant::now();
    let r = client().get(p.url("/silent")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "backend failed: the backend timed out");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // Silent mid-body: the client sees the body cut (no last chunk), not a clean end.
    let r = client().get(p.url("/stall")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text().await.is_err(),
        "a cut body must not read as complete"
    );
}

#[tokio::test]
async fn a_connection_header_cannot_smuggle_a_request() {
    let (addr, seen) = scripted(false).await;
    let p = start_proxy(&upstream(&[addr], "")).await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    let inner = "GET /smuggled HTTP/1.1\r\nHost: internal\r\n\r\n";
    let outer = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: content-length, close\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    s.write_all(outer.as_bytes()).await.unwrap();
    let mut all = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut all))
        .await
        .unwrap()
        .unwrap();
    // The inner request is the POST's body, echoed back, never a request of its own.
    assert!(all.ends_with(inner), "{all}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].1.starts_with("POST /echo"));
}

#[tokio::test]
async fn sigterm_closes_idle_keep_alive_connections_at_once() {
    let (addr, _) = scripted(false).await;
    let mut p = start_proxy(&upstream(&[addr], "")).await;
    // A long grace period, so "closed at once" and "closed when the grace ends" differ by 5 s.
    let config = std::fs::read_to_string(&p.config_path).unwrap();
    let config = config.replace("shutdown_grace = \"1s\"", "shutdown_grace = \"6s\"");
    std::fs::write(&p.config_path, config).unwrap();
    p.restart().await;

    // Two keep-alive connections, one request each. The second sends the start of its next
    // request in the same write, so tideway holds it (read with the first) when SIGTERM comes.
    let mut idle = TcpStream::connect(p.http).await.unwrap();
    let mut busy = TcpStream::connect(p.http).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for (s, raw) in [
        (&mut idle, &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]),
        (
            &mut busy,
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\n"[..],
        ),
    ] {
        s.write_all(raw).await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    std::process::Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    // The idle connection closes now, not when the 6 s grace period ends.
    let n = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
        .await
        .expect("closed well before the grace period ended")
        .unwrap_or(0);
    assert_eq!(n, 0, "a clean close, no answer");
    // The request that was arriving is served, and its connection closes after it.
    busy.write_all(b"Host: x\r\n\r\n").await.unwrap();
    let mut all = String::new();
    tokio::time::timeout(Duration::from_secs(3), busy.read_to_string(&mut all))
        .await
        .expect("answered and closed")
        .unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(
        all.to_ascii_lowercase().contains("connection: close\r\n"),
        "{all}"
    );
    assert!(p.child.wait().unwrap().success());
}

#[tokio::test]
async fn chunked_bodies_http10_and_expect_are_served_by_the_one_engine() {
    let b = backend("demo").await;
    let p = start_proxy(&upstream(&[b.addr], "")).await;
    // A chunked request body (de-chunked, sent with its length), HTTP/1.0, and
    // Expect: 100-continue (answered by tideway, not forwarded).
    for (raw, body_len) in [
        (
            "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n",
            8,
        ),
        ("GET /old HTTP/1.0\r\nHost: x\r\n\r\n", 0),
        (
            "POST /exp HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd",
            4,
        ),
    ] {
        let mut s = TcpStream::connect(p.http).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut all = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut all))
            .await
            .expect("answered and closed")
            .unwrap();
        let last = all.rfind("HTTP/1.").unwrap();
        assert!(all[last..].contains(" 200 "), "{raw:?} -> {all}");
        assert!(all.contains("\"id\":\"demo\""), "{all}");
        assert!(all.contains(&format!("\"body_len\":{body_len}")), "{raw:?} -> {all}");
        assert!(all.contains("\"x_forwarded_proto\":\"http\""), "{all}");
        assert!(!all.contains("server: Pingora"), "{all}");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_releases_its_backend_connection() {
    // A long poll the client gives up on: the backend connection is closed, not held for the
    // hour of `idle_timeout`.
    let (addr, seen) = scripted(false).await;
    let p = start_proxy(&upstream(&[addr], "")).await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(b"GET /wait-close HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), || async {
        seen.lock().unwrap().len() == 1
    })
    .await;
    drop(s);
    wait_until(Duration::from_secs(5), || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(_, h)| h == "closed after 0")
    })
    .await;
}
