//! What a client's RST_STREAM costs on HTTP/2 (rapid reset, CVE-2023-44487), against a
//! backend that counts what it receives and sees its connections close: a reset stream stops
//! at once wherever its work is (its backend connection closes), too many strikes on one
//! connection get GOAWAY(ENHANCE_YOUR_CALM), other clients are served and the backend stays in
//! service; an answer given before the request body was read ends the stream with
//! RST_STREAM(NO_ERROR) instead of draining the body.

mod common;
#[path = "support/h2_routes.rs"]
mod h2_routes;

use common::h2::{extended_connect_ready, h2_client, h2_fetch, start_h2_proxy};
use common::Proxy;
use h2_routes::proxy_with_returns;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The stream cap these tests set (`max_concurrent_streams`).
const CAP: usize = 10;

/// tideway's strikes per place under the cap before GOAWAY (`reset::STRIKES_PER_STREAM`).
const STRIKES_PER_STREAM: usize = 2;

/// A raw HTTP/1.1 backend that counts request heads. `/hold...` is never answered, `/drip`
/// gets a head for 1 MB and 100 bytes of it, both then held until tideway closes the
/// connection; anything else gets `200 ok` (keep-alive).
struct Holding {
    addr: SocketAddr,
    heads: Arc<AtomicUsize>,
    /// Connections holding a request that tideway has not closed yet.
    holding: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Holding {
    async fn start() -> Holding {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (heads, holding) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (h, o) = (Arc::clone(&heads), Arc::clone(&holding));
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(hold(conn, h.clone(), o.clone()));
            }
        });
        Holding {
            addr,
            heads,
            holding,
            task,
        }
    }

    fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }

    fn holding(&self) -> usize {
        self.holding.load(Ordering::SeqCst)
    }
}

async fn hold(mut conn: tokio::net::TcpStream, heads: Arc<AtomicUsize>, holding: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = common::heads::next(&mut conn, &mut buf).await else {
            return;
        };
        heads.fetch_add(1, Ordering::SeqCst);
        let path = head.split(' ').nth(1).unwrap_or("/");
        let held = if path.starts_with("/hold") {
            Some(&b""[..])
        } else if path == "/drip" {
            Some(&b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n"[..])
        } else {
            None
        };
        let Some(start) = held else {
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if conn.write_all(ok).await.is_err() {
                return;
            }
            continue;
        };
        holding.fetch_add(1, Ordering::SeqCst);
        if !start.is_empty() {
            let _ = conn.write_all(start).await;
            let _ = conn.write_all(&[b'x'; 100]).await;
        }
        // Held until tideway closes the connection.
        let mut sink = [0u8; 4096];
        while let Ok(n) = conn.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        holding.fetch_sub(1, Ordering::SeqCst);
        return;
    }
}

/// Poll `cond` until it holds or `within` has passed; whether it held.
async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

fn get(path: &str) -> http::Request<()> {
    http::Request::get(format!("https://a.test{path}"))
        .body(())
        .unwrap()
}

async fn capped_proxy(backend: SocketAddr) -> Proxy {
    let limits = format!("limits = {{ max_concurrent_streams = {CAP} }}");
    start_h2_proxy(backend, true, "", &limits).await
}

/// A served request on a connection of its own: the backend is in service.
async fn served(p: &Proxy) -> bool {
    let (mut c, _conn) = h2_client(p, "a.test").await;
    matches!(h2_fetch(&mut c, get("/ok"), None).await, Ok((200, _)))
}

#[tokio::test]
async fn a_rapid_reset_flood_costs_a_bounded_number_of_backend_requests_and_gets_goaway() {
    let b = Holding::start().await;
    let p = capped_proxy(b.addr).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/h2_rapid_reset.py"
    );
    let port = p.http.port().to_string();
    // 1000 streams, 5 per round (the previous round's 5 still open: the cap), each reset one
    // round trip after it was sent; meanwhile another client's requests on a connection of
    // its own.
    let flood = tokio::process::Command::new("/usr/bin/python3")
        .args([script, &port, "a.test", "/hold/", "1000", "5"])
        .output();
    let others = async {
        let mut ok = 0;
        for _ in 0..5 {
            ok += usize::from(served(&p).await);
        }
        ok
    };
    let (flood, others) = tokio::join!(flood, others);
    let flood = flood.expect("python3 runs");
    let text = String::from_utf8_lossy(&flood.stdout);
    let log = std::fs::read_to_string(p.dir.path().join("tideway.log")).unwrap_or_default();
    let got: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|_| panic!("{text}\n{}", String::from_utf8_lossy(&flood.stderr)));
    assert_eq!(others, 5, "other clients are served during the flood");
    assert_eq!(got["goaway"], 11, "GOAWAY(ENHANCE_YOUR_CALM): {got}\n{log}");
    assert!(got["sent"].as_u64().unwrap() < 1000, "{got}");
    // Each stream that reached the backend is a strike (reset at work): at most the strikes
    // allowed, plus the streams at work when the last ones were counted.
    let bound = (STRIKES_PER_STREAM + 1) * CAP + 1;
    assert!(
        b.heads() <= bound,
        "the backend saw {} requests (at most {bound}): {got}",
        b.heads()
    );
    assert!(
        until(Duration::from_secs(10), || b.holding() == 0).await,
        "every held backend connection is closed: {} open",
        b.holding()
    );
    // A reset never counts against the backend (max_fails = 1 would eject it).
    assert!(served(&p).await, "the backend is still in service");
}

/// On one connection, send `request(n)` for n = 0, 1, ... (ending the client's side with it
/// when `end`) and reset each once the backend has
/// it (its backend connection must then close), until the connection is refused: it must end
/// in GOAWAY(ENHANCE_YOUR_CALM) after STRIKES_PER_STREAM x CAP + 1 resets.
async fn reset_until_goaway(
    b: &Holding,
    (c, conn): (
        h2::client::SendRequest<bytes::Bytes>,
        tokio::task::JoinHandle<Result<(), h2::Error>>,
    ),
    (request, end): (impl Fn(usize) -> http::Request<()>, bool),
) {
    let mut reset = 0;
    loop {
        assert!(reset < 10 * CAP, "no GOAWAY after {reset} resets at work");
        let Ok(mut c) = c.clone().ready().await else {
            break;
        };
        let Ok((answer, mut stream)) = c.send_request(request(reset), end) else {
            break;
        };
        let seen = reset + 1;
        tokio::select! {
            reached = until(Duration::from_secs(10), || b.heads() >= seen) => {
                assert!(reached, "the request reached the backend, or was refused");
            }
            // Refused (the connection was sent GOAWAY at this stream).
            _ = answer => break,
        }
        stream.send_reset(h2::Reason::CANCEL);
        reset += 1;
        assert!(
            until(Duration::from_secs(10), || b.holding() == 0).await,
            "the reset stream's backend connection is closed"
        );
    }
    let error = conn
        .await
        .unwrap()
        .expect_err("the connection ends in error");
    assert_eq!(
        error.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "{error:?} after {reset} resets"
    );
    // Strikes past STRIKES_PER_STREAM x the cap: the next stream is refused with GOAWAY.
    assert_eq!(
        reset,
        STRIKES_PER_STREAM * CAP + 1,
        "GOAWAY after {reset} resets"
    );
    assert_eq!(b.heads(), reset);
}

#[tokio::test]
async fn streams_reset_while_the_backend_works_free_it_and_too_many_get_goaway() {
    let b = Holding::start().await;
    let p = capped_proxy(b.addr).await;
    let client = h2_client(&p, "a.test").await;
    reset_until_goaway(&b, client, (|n| get(&format!("/hold/{n}")), true)).await;
    assert!(served(&p).await, "the backend is still in service");
}

#[tokio::test]
async fn a_stream_reset_while_its_answer_is_relayed_frees_its_backend_connection() {
    let b = Holding::start().await;
    let p = capped_proxy(b.addr).await;
    let (c, _conn) = h2_client(&p, "a.test").await;
    let mut c = c.ready().await.unwrap();
    let (answer, mut stream) = c.send_request(get("/drip"), true).unwrap();
    let res = answer.await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = body.data().await.expect("some of the body").unwrap();
    assert!(!first.is_empty());
    assert_eq!(b.holding(), 1);
    // The backend sends nothing more: only the client's reset can end the relay.
    stream.send_reset(h2::Reason::CANCEL);
    assert!(
        until(Duration::from_secs(10), || b.holding() == 0).await,
        "the backend connection is closed once the client reset the stream"
    );
    assert!(served(&p).await, "the backend is still in service");
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_ends_the_stream_with_rst_no_error() {
    let b = Holding::start().await;
    let p = proxy_with_returns(b.addr, "").await;
    let (c, _conn) = h2_client(&p, "a.test").await;
    let mut c = c.ready().await.unwrap();
    const TOTAL: usize = 1 << 20;
    let req = http::Request::post("https://a.test/here")
        .header("content-length", TOTAL.to_string())
        .body(())
        .unwrap();
    let (answer, mut up) = c.send_request(req, false).unwrap();
    up.send_data(bytes::Bytes::from_static(&[b'a'; 1000]), false)
        .unwrap();
    let mut sent = 1000;
    let res = answer.await.unwrap();
    assert_eq!(res.status(), 200);
    // Send the rest as fast as the server's window lets: a server that drains the body
    // takes all of it; one that ends the stream gives no window past the first.
    let reason = loop {
        up.reserve_capacity(16 * 1024);
        let got = poll_fn(|cx| {
            if let Poll::Ready(reset) = up.poll_reset(cx) {
                return Poll::Ready(Err(reset.ok()));
            }
            up.poll_capacity(cx).map(Ok)
        })
        .await;
        match got {
            Err(reset) => break reset,
            Ok(Some(Ok(n))) => {
                let n = n.min(TOTAL - sent);
                sent += n;
                let chunk = bytes::Bytes::from(vec![b'a'; n]);
                if up.send_data(chunk, sent == TOTAL).is_err() || sent == TOTAL {
                    break None;
                }
            }
            Ok(_) => break poll_fn(|cx| up.poll_reset(cx)).await.ok(),
        }
    };
    assert_eq!(
        reason,
        Some(h2::Reason::NO_ERROR),
        "after {sent} of {TOTAL} bytes"
    );
    assert!(sent <= 65_535 + 1000, "{sent} bytes taken after the answer");
    let mut body = res.into_body();
    let mut got = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"here", "the answer came whole");
    assert_eq!(b.heads(), 0);
}

#[tokio::test]
async fn a_client_that_ignores_goaway_gets_no_new_streams_past_the_grace() {
    let b = Holding::start().await;
    // GOAWAY after 2 streams (`keepalive_requests`); the connection stays busy with the first
    // stream, which the backend never answers. Each stream refused past the grace is a strike:
    // past 2 x the cap of 4, the connection is cut with ENHANCE_YOUR_CALM.
    let limits = "limits = { keepalive_requests = 2, max_concurrent_streams = 4 }";
    let p = start_h2_proxy(b.addr, true, "", limits).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/h2_frames.py");
    let port = p.http.port().to_string();
    // The grace is 5 s (`h2::conn::GOAWAY_GRACE`): 9 s of a GET every 0.25 s outlasts it.
    let run = tokio::process::Command::new("/usr/bin/python3")
        .args([script, "after-goaway", "127.0.0.1", &port])
        .args([
            "--authority",
            "a.test",
            "--path",
            "/hold/goaway",
            "--seconds",
            "9",
        ])
        .output()
        .await
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&run.stdout);
    let got: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|_| panic!("{text}\n{}", String::from_utf8_lossy(&run.stderr)));
    assert!(got["goaway"].is_object(), "GOAWAY was sent: {got}");
    let refused: Vec<u64> = got["reset_streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert!(
        refused.len() > 5,
        "streams past the grace are refused: {got}"
    );
    assert_eq!(got["resets"]["REFUSED_STREAM"], refused.len(), "{got}");
    assert_eq!(got["goaway"]["code"], "ENHANCE_YOUR_CALM", "{got}");
    // The last refusal's RST_STREAM may be overtaken by the GOAWAY that ends the connection.
    let strikes = STRIKES_PER_STREAM * 4;
    assert!(
        (strikes..=strikes + 1).contains(&refused.len()),
        "cut at the strikes: {got}"
    );
    // Nothing opened after the first refused stream was served, and the backend saw only the
    // streams taken before the grace ended.
    let first = *refused.iter().min().unwrap();
    let statuses = got["statuses"].as_object().unwrap();
    let served_after = statuses
        .keys()
        .filter_map(|k| k.parse::<u64>().ok())
        .filter(|&id| id > first)
        .count();
    assert_eq!(served_after, 0, "no stream after {first} was served: {got}");
    let taken = got["sent"].as_u64().unwrap() as usize + 1 - refused.len();
    assert!(
        b.heads() <= taken,
        "the backend saw {} requests: {got}",
        b.heads()
    );
}

#[tokio::test]
async fn extended_connects_reset_before_their_websocket_opens_are_strikes_too() {
    let b = Holding::start().await;
    let p = capped_proxy(b.addr).await;
    let (c, conn) = h2_client(&p, "a.test").await;
    let c = extended_connect_ready(c).await;
    let connect = |n: usize| {
        http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("https://a.test/hold/ws{n}"))
            .extension(h2::ext::Protocol::from_static("websocket"))
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap()
    };
    // The stream stays open, as a WebSocket's does.
    reset_until_goaway(&b, (c, conn), (connect, false)).await;
    assert!(served(&p).await, "the backend is still in service");
}
