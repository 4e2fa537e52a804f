//! Hostile clients against lenient backends: what a client can provoke a Workerman backend
//! into (a 101 to any GET whose head holds `Sec-WebSocket-Key:`, a 413 and a reset mid-upload)
//! is blamed on the client, never on the backend, and what other clients see afterwards is a
//! healthy upstream. Raw sockets on the client side; the backends are the recording stand-in
//! that frames requests as Workerman 4.2.1 does (`support/workerman.rs`).

mod common;
#[path = "support/workerman.rs"]
mod workerman;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use workerman::{Mode, Options, Workerman};

/// Longest any one exchange of these tests may take before the test fails.
const EXCHANGE: Duration = Duration::from_secs(10);

/// Workerman 4.2.1 as the issue found it: `dealHandshake` on every GET, a 256 KiB package
/// limit.
fn lenient() -> Options {
    Options {
        mode: Mode::Lenient42,
        accept_ws: true,
        deal_handshake: true,
        max_package: Some(256 * 1024),
    }
}

/// Send `head` (and `body`, written by a task of its own so a proxy that stops reading cannot
/// block the test) on a fresh connection and read the answer until the proxy closes. Returns
/// the status and the whole answer.
async fn exchange(addr: SocketAddr, head: &str, body: Vec<u8>) -> (u16, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        for part in body.chunks(16 * 1024) {
            if wr.write_all(part).await.is_err() {
                return;
            }
        }
        // Keep the write half open: a half-close would read as a client gone.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    if tokio::time::timeout(EXCHANGE, read).await.is_err() {
        panic!(
            "the proxy did not answer and close: sent {:?}, got {:?}",
            head.lines().next(),
            String::from_utf8_lossy(&answer)
        );
    }
    writer.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A chunked encoding of `body` in 64 KiB chunks.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The value of a metric line `name{labels}` (0 when absent).
async fn failures(p: &Proxy, reason: &str) -> f64 {
    metric(
        p,
        &format!("tideway_upstream_failures_total{{reason=\"{reason}\",upstream=\"app\"}}"),
    )
    .await
}

/// The backend-side reasons of `tideway_upstream_failures_total`.
const BACKEND_REASONS: [&str; 5] = ["connect", "send", "unanswered", "timeout", "bad_response"];

#[tokio::test]
async fn a_hundred_provoking_requests_and_oversized_uploads_eject_no_backend() {
    let a = Workerman::start(lenient()).await;
    let b = Workerman::start(lenient()).await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\nmax_fails = 1\nfail_timeout = \"60s\"\n\
         backends = [{{ addr = \"{}\", id = \"a\" }}, {{ addr = \"{}\", id = \"b\" }}]",
        a.addr(),
        b.addr()
    ))
    .await;

    // 1. The two requests, fifty times each way.
    // A key as a header but no Upgrade: stripped, so the backend answers as HTTP.
    let stripped =
        "GET /chat HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Version: 13\r\nConnection: close\r\n\r\n";
    // `Upgrade: websocket` without `Connection: upgrade` is no handshake either.
    let half = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: close\r\n\r\n";
    // The key where no proxy can strip it: inside another header's value, or in the target.
    let in_value =
        "GET /chat HTTP/1.1\r\nHost: x\r\nX-Note: Sec-WebSocket-Key: abc\r\nConnection: close\r\n\r\n";
    let in_target =
        "GET /chat?Sec-WebSocket-Key:abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut statuses = std::collections::BTreeMap::<(usize, u16), usize>::new();
    for i in 0..100 {
        let head = [stripped, half, in_value, in_target][i % 4];
        let (status, _) = exchange(p.http, head, Vec::new()).await;
        *statuses.entry((i % 4, status)).or_default() += 1;
    }
    let want: std::collections::BTreeMap<(usize, u16), usize> = [
        ((0, 200), 25),
        ((1, 200), 25),
        ((2, 502), 25),
        ((3, 502), 25),
    ]
    .into();
    assert_eq!(
        statuses, want,
        "(form, status) -> count: stripped heads are served, a 101 to a non-handshake is a 502"
    );
    // What the backends got: no Sec-WebSocket-* field on any request that was not a handshake.
    let seen: Vec<_> = a.requests().into_iter().chain(b.requests()).collect();
    assert_eq!(seen.len(), 100);
    for r in &seen {
        assert!(
            r.headers()
                .iter()
                .all(|(n, _)| !n.to_ascii_lowercase().starts_with("sec-websocket-")),
            "a Sec-WebSocket-* field reached a backend: {:?}",
            String::from_utf8_lossy(r.head())
        );
    }
    assert_eq!(
        a.upgrades().len() + b.upgrades().len(),
        50,
        "Workerman switched on exactly the key it could find in a target or a value"
    );

    // 2. Three uploads over the backend's limit, streamed with a length, and one chunked.
    let big = vec![b'x'; 2 * 1024 * 1024];
    for _ in 0..3 {
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            big.len()
        );
        // The answer ends at the close either way: with `Connection: close` when tideway
        // saw the backend stop reading, cut (no last chunk) when the whole body fit in the
        // socket buffers before the backend's reset.
        let (status, text) = exchange(p.http, &head, big.clone()).await;
        assert_eq!(status, 413, "the backend's own answer is relayed: {text}");
    }
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let (status, text) = exchange(p.http, head, chunked(&big[..512 * 1024])).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(a.too_large().len() + b.too_large().len(), 4);

    // 3. Nothing of this was the backends' fault.
    let health = p.health().await;
    assert_eq!(
        health.values().filter(|h| **h).count(),
        2,
        "both backends healthy: {health:?}"
    );
    for reason in BACKEND_REASONS {
        assert_eq!(
            failures(&p, reason).await,
            0.0,
            "no {reason} failure counted"
        );
    }
    assert_eq!(failures(&p, "client_upgrade").await, 50.0);

    // 4. Other clients: 20 WebSockets and 20 HTTP requests, all served, on both backends.
    let mut sockets = Vec::new();
    for i in 0..20 {
        let (mut ws, _) = tokio::time::timeout(
            EXCHANGE,
            tokio_tungstenite::connect_async(p.ws_url(&format!("/chat?uid={i}"))),
        )
        .await
        .unwrap()
        .expect("the WebSocket opens");
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echo = tokio::time::timeout(EXCHANGE, ws.next()).await.unwrap();
        assert_eq!(
            echo.unwrap().unwrap().into_text().unwrap().as_str(),
            format!("hello {i}")
        );
        sockets.push(ws);
    }
    let client = reqwest::Client::new();
    for i in 0..20 {
        let r = client
            .get(p.url(&format!("/poll?i={i}")))
            .timeout(EXCHANGE)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        a.upgrades().len() > 25 && b.upgrades().len() > 25,
        "the WebSockets went to both backends"
    );
    let health = p.health().await;
    assert!(health.values().all(|h| *h), "{health:?}");
}

/// A backend that takes connections and closes them unanswered: every request to it fails.
async fn slammer() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_single_backend_is_never_ejected_by_passive_health() {
    let (dead, _task) = slammer().await;
    let p = start_proxy(&format!(
        "[upstream.app]\nmax_fails = 1\nfail_timeout = \"60s\"\n\
         backends = [{{ addr = \"{dead}\", id = \"dead\" }}]"
    ))
    .await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client.get(p.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 502, "the backend is tried, never 503");
    }
    assert!(p.health().await["dead"], "0 of 1 backends may be ejected");
    assert_eq!(
        failures(&p, "unanswered").await,
        3.0,
        "each failure counted"
    );
}

#[tokio::test]
async fn passive_health_ejects_at_most_half_and_panic_routes_the_rest() {
    let (d1, _t1) = slammer().await;
    let (d2, _t2) = slammer().await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\nmax_fails = 1\nfail_timeout = \"60s\"\n\
         backends = [{{ addr = \"{d1}\", id = \"d1\" }}, {{ addr = \"{d2}\", id = \"d2\" }}]"
    ))
    .await;
    let client = reqwest::Client::new();
    // The first request fails on one backend (ejected: 1 of 2 may be), then on the other
    // (kept: the share is full).
    for _ in 0..3 {
        let r = client.get(p.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 502);
    }
    let health = p.health().await;
    assert_eq!(
        health.values().filter(|h| !**h).count(),
        1,
        "exactly one of two out: {health:?}"
    );
    let kept = health.iter().find(|(_, h)| **h).unwrap().0.clone();
    // The operator disables the one left in: nothing is eligible, and passive health alone
    // holds the other out, so it still gets the requests (502 from it, not 503 from tideway).
    let r = p
        .admin_req(
            reqwest::Method::POST,
            &format!("/v1/upstreams/app/backends/{kept}/state"),
            ADMIN_TOKEN,
        )
        .json(&serde_json::json!({"state": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let before = failures(&p, "unanswered").await;
    let r = client.get(p.url("/")).send().await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 502, "panic routing to the ejected backend: {body}");
    assert_eq!(failures(&p, "unanswered").await, before + 1.0);
}

/// Connect to `addr` from the loopback address `from` (127.0.0.x), so one test can be several
/// clients.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((from, 0))).unwrap();
    s.connect(addr).await.unwrap()
}

/// Read an answer's status from `s` (0 when it closed without one).
async fn status_of(s: &mut TcpStream) -> u16 {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn one_client_holds_one_share_of_chunked_memory_and_each_body_has_a_deadline() {
    let a = backend("a").await;
    let p = start_proxy_with(
        "limits = { chunked_body_time = \"8s\" }",
        &format!("[upstream.app]\n{}", backends_toml(&[(&a, 1)])),
    )
    .await;
    // Nine bodies of 1,000 KiB from one client, each left unfinished: 8 fit its 8 MiB share.
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let part = {
        let mut c = format!("{:x}\r\n", 1000 * 1024).into_bytes();
        c.extend(std::iter::repeat_n(b'x', 1000 * 1024));
        c.extend_from_slice(b"\r\n");
        c
    };
    let mut held = Vec::new();
    for _ in 0..9 {
        let mut s = connect_from([127, 0, 0, 1], p.http).await;
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&part).await.unwrap();
        held.push(s);
    }
    // The first answer any of them gets is the refusal of the one over the share.
    let answers = held.iter_mut().map(|s| Box::pin(status_of(s)));
    let (status, refused, _) =
        tokio::time::timeout(EXCHANGE, futures_util::future::select_all(answers))
            .await
            .expect("one body is refused");
    assert_eq!(status, 503);
    held.remove(refused);

    // Another client still uploads.
    let mut other = connect_from([127, 0, 0, 2], p.http).await;
    let head =
        "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    other.write_all(head.as_bytes()).await.unwrap();
    other.write_all(&part).await.unwrap();
    other.write_all(b"0\r\n\r\n").await.unwrap();
    let status = tokio::time::timeout(EXCHANGE, status_of(&mut other)).await;
    assert_eq!(status.unwrap(), 200);

    // The held bodies end at their whole-body deadline (8 s), long before the 60 s between
    // reads (`body_timeout`). Eight fit the share; when the last two grow at the same moment,
    // both may be refused before the first one's bytes are given back, so seven may be left.
    let mut deadline = 0;
    for s in &mut held {
        let status = tokio::time::timeout(EXCHANGE, status_of(s)).await;
        match status.expect("an answer by the whole-body deadline") {
            408 => deadline += 1,
            503 => {}
            other => panic!("answered {other}"),
        }
    }
    let refused = metric(&p, "tideway_chunked_refused_total{reason=\"share\"}").await;
    assert!(
        (7..=8).contains(&deadline),
        "{deadline} bodies held to the deadline"
    );
    assert_eq!(
        refused as usize + deadline,
        9,
        "every other body refused for the share"
    );
}

/// A backend that reads a request head and then does `act` with the connection.
async fn scripted<F, Fut>(act: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let act = std::sync::Arc::new(act);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let act = act.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                act(s).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn an_interim_answer_during_an_upload_blames_no_backend() {
    // Early hints while the body is still coming, then nothing: the backend stopped taking the
    // request without a final answer.
    let hints = || async {
        scripted(|mut s: TcpStream| async move {
            let _ = s
                .write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
                .await;
            std::future::pending::<()>().await;
        })
        .await
    };
    let ((a, _ta), (b, _tb)) = (hints().await, hints().await);
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\nmax_fails = 1\nfail_timeout = \"60s\"\n\
         backends = [{{ addr = \"{a}\", id = \"a\" }}, {{ addr = \"{b}\", id = \"b\" }}]"
    ))
    .await;
    for _ in 0..2 {
        // More than the socket buffers hold, so the body is still being sent when the hints
        // arrive.
        let body = vec![b'x'; 16 * 1024 * 1024];
        let head = format!(
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let (status, text) = exchange(p.http, &head, body).await;
        assert_eq!(status, 502, "{text}");
    }
    assert!(p.health().await.values().all(|h| *h));
    for reason in BACKEND_REASONS {
        assert_eq!(
            failures(&p, reason).await,
            0.0,
            "no {reason} failure counted"
        );
    }
    assert_eq!(failures(&p, "client_body").await, 2.0);
}

#[tokio::test]
async fn a_reset_mid_answer_reaches_the_client_as_a_cut() {
    // A body that ends at the close, cut by a reset: the client must not get a whole-looking
    // answer (with a last chunk) and a connection that goes on.
    let (addr, _t) = scripted(|mut s: TcpStream| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n{\"balance\": 10")
            .await;
        let s = socket2::SockRef::from(&s);
        let _ = s.set_linger(Some(Duration::ZERO));
    })
    .await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbackends = [{{ addr = \"{addr}\", id = \"a\" }}]"
    ))
    .await;
    let (status, text) = exchange(
        p.http,
        "GET /balance HTTP/1.1\r\nHost: x\r\n\r\n",
        Vec::new(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("{\"balance\": 10"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "no last chunk: the client sees the cut: {text:?}"
    );
}

#[tokio::test]
async fn a_chunked_body_goes_from_the_budget_once_its_answer_goes_to_the_client() {
    // The backend takes the body whole, then answers 8 MiB that the client never reads: the
    // exchange lasts, the body's bytes need not.
    const BODY: usize = 1000 * 1024;
    let (addr, _t) = scripted(|mut s: TcpStream| async move {
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        // (The head was read in 1 KiB reads: up to 1 KiB of the body went with it.)
        while got + 1024 < BODY {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        let len = 8 * 1024 * 1024;
        let _ = s
            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes())
            .await;
        let _ = s.write_all(&vec![b'y'; len]).await;
        std::future::pending::<()>().await;
    })
    .await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbackends = [{{ addr = \"{addr}\", id = \"a\" }}]"
    ))
    .await;
    let mut body = format!("{BODY:x}\r\n").into_bytes();
    body.extend(std::iter::repeat_n(b'x', BODY));
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let head = "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    // Twelve from one address: more than its 8 MiB share if each stayed counted while its
    // answer is stuck on the way to the client.
    let mut held = Vec::new();
    for i in 0..12 {
        let mut s = connect_from([127, 0, 0, 1], p.http).await;
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        let status = tokio::time::timeout(EXCHANGE, status_of(&mut s)).await;
        assert_eq!(status.expect("an answer"), 200, "upload {i}");
        held.push(s);
    }
    assert_eq!(
        metric(&p, "tideway_chunked_refused_total").await,
        0.0,
        "nothing refused"
    );
}

/// A backend that copies the `lang` query argument, percent-decoded and unfiltered, into a
/// `Content-Language` header (as an app using Workerman's `withHeader` may): the client
/// writes part of the response head.
async fn reflector() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&buf)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let target = line.split(' ').nth(1).unwrap_or("");
                let raw = target.split("lang=").nth(1).unwrap_or("en");
                let mut lang = Vec::new();
                let mut i = 0;
                while i < raw.len() {
                    match raw.as_bytes()[i] {
                        b'%' if i + 2 < raw.len() && raw.is_char_boundary(i + 3) => {
                            lang.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap_or(b'?'));
                            i += 3;
                        }
                        b => {
                            lang.push(b);
                            i += 1;
                        }
                    }
                }
                let mut out = b"HTTP/1.1 200 OK\r\nContent-Language: ".to_vec();
                out.extend_from_slice(&lang);
                out.extend_from_slice(b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                let _ = s.write_all(&out).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// Review finding: a client whose query a backend reflects into a response header can write
/// a second Content-Length, a Transfer-Encoding or a bare CR into the backend's answer. The
/// client gets 502, and no backend is ejected for it (nginx would count it).
#[tokio::test]
async fn a_response_head_a_client_wrote_through_a_reflecting_backend_ejects_nothing() {
    let (a, _ta) = reflector().await;
    let (b, _tb) = reflector().await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\nmax_fails = 1\nfail_timeout = \"60s\"\n\
         backends = [{{ addr = \"{a}\", id = \"a\" }}, {{ addr = \"{b}\", id = \"b\" }}]"
    ))
    .await;
    for lang in [
        "en%0d%0aContent-Length:%202",
        "en%0d%0aTransfer-Encoding:%20chunked",
        "en%0dX",
    ] {
        for _ in 0..2 {
            let head =
                format!("GET /?lang={lang} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let (status, text) = exchange(p.http, &head, Vec::new()).await;
            assert_eq!(status, 502, "{lang}: {text}");
        }
    }
    let health = p.health().await;
    assert_eq!(
        health.values().filter(|h| **h).count(),
        2,
        "both backends healthy: {health:?}"
    );
    for _ in 0..4 {
        let head = "GET /?lang=de HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let (status, text) = exchange(p.http, head, Vec::new()).await;
        assert_eq!(status, 200, "{text}");
    }
}
