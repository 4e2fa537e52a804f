//! Upgrade admission per backend against a real tideway and real backends: a reconnect storm
//! of 5,000 WebSockets on three backends limited to 500 new upgrades a second (the counts
//! come from tideway's own counters), then the queue, its deadline and its refusals one
//! client at a time, with what the backend received and that nobody blamed it.

mod common;
#[path = "support/counting.rs"]
mod counting;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "support/storm.rs"]
mod storm;

use common::*;
use counting::Counting;
use recorder::Recorder;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use storm::{handshake_at, raise_fd_limit, upgrades, Ended};

const CLIENTS: usize = 5000;
const RATE: u64 = 500;
const BURST: u64 = 5;

/// A demo backend in a process of its own (a storm's sockets are many), on a free port.
async fn demo_backend(id: &str) -> (Killed, std::net::SocketAddr) {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tideway"))
        .args(["demo-backend", "--listen", &addr.to_string(), "--id", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_until(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    (child, addr)
}

async fn metrics_text(p: &Proxy) -> String {
    reqwest::get(p.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of a metric family's samples in a /metrics text.
fn total(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_is_admitted_at_the_rate_and_every_client_connects_or_is_refused() {
    let fds = raise_fd_limit();
    assert!(
        fds as usize > CLIENTS + 1000,
        "the storm needs {CLIENTS} sockets here and twice that in tideway: ulimit -n is {fds}"
    );
    let mut held = Vec::new();
    let mut items = Vec::new();
    for i in 1..=3 {
        let (child, addr) = demo_backend(&format!("b{i}")).await;
        held.push(child);
        items.push(format!("{{ addr = \"{addr}\", id = \"b{i}\" }}"));
    }
    // Clients that waited 2 s are refused: the storm ends with both outcomes.
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\nbackends = [{}]\nadmission = {{ per_second = {RATE}, burst = {BURST}, queue = 2000, queue_timeout = \"2s\", retry_after = \"2s\" }}\n",
        items.join(", ")
    ))
    .await;
    // Connected first, then every handshake at once: the storm outruns the rate however busy
    // this machine is.
    let conns = storm::connect_all(p.http, CLIENTS).await;
    let started = Instant::now();
    let clients = storm::storm(p.http, conns, false, Duration::from_secs(120)).await;
    let text = metrics_text(&p).await;
    // The storm's length on the test's clock: from before the first connect to after the
    // scrape, so longer than tideway's view of it (the permissive side).
    let elapsed = started.elapsed().as_secs_f64();

    let mut connected = Vec::new();
    let mut refused = 0;
    for c in clients {
        match c.ended {
            Ended::Connected(io) => connected.push(io),
            Ended::Refused { retry_after, body } => {
                refused += 1;
                let secs = retry_after.expect("a refusal says when to come back");
                assert!((2..=4).contains(&secs), "Retry-After {secs}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert!(
                    v["error"].as_str().unwrap().contains("retry later"),
                    "{body}"
                );
            }
            Ended::Failed(why) => panic!("a client neither connected nor was refused: {why}"),
        }
    }
    assert_eq!(connected.len() + refused, CLIENTS);

    let counts = upgrades(&text, "app");
    let of = |b: &str, outcome: &str| counts.get(&(b.to_string(), outcome.to_string())).copied();
    let bound = BURST as f64 + RATE as f64 * elapsed;
    let (mut admitted, mut queued, mut turned_away) = (0, 0, 0);
    for b in ["b1", "b2", "b3"] {
        let a = of(b, "admitted").expect("every backend's count is shown");
        assert!(
            a as f64 <= bound,
            "{b}: {a} admitted in {elapsed:.2} s; at most {bound:.0} ({BURST} + {RATE}/s)"
        );
        admitted += a;
        queued += of(b, "queued").unwrap();
        turned_away += of(b, "refused").unwrap();
    }
    eprintln!(
        "storm: {} connected, {refused} refused in {elapsed:.2} s; per backend {counts:?}",
        connected.len()
    );
    assert_eq!(
        admitted as usize,
        connected.len(),
        "each 101 was admitted once"
    );
    assert_eq!(turned_away as usize, refused, "each 503 was a refusal");
    assert!(queued > 0, "the storm outran the rate: clients had to wait");
    // Nobody blamed a backend for the storm, and every admitted WebSocket is open.
    assert_eq!(total(&text, "tideway_backend_failures_total"), 0.0);
    assert_eq!(total(&text, "tideway_upstream_failures_total"), 0.0);
    let open = connected.len() as f64;
    wait_until(Duration::from_secs(20), || async {
        total(
            &metrics_text(&p).await,
            "tideway_backend_active_connections",
        ) == open
    })
    .await;
    // The admin API shows the same counts.
    let view = p.upstream_json().await;
    let shown: u64 = view["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["upgrades"]["admitted"].as_u64().unwrap())
        .sum();
    assert_eq!(shown, admitted);
    drop(connected);
}

/// `GET /` on a connection of its own: the status.
async fn plain_get(to: std::net::SocketAddr) -> u16 {
    let io = tokio::net::TcpStream::connect(to).await.unwrap();
    counting::status_of(io, "/").await
}

/// The admission counts of backend `b` in the admin API.
async fn admission_of(p: &Proxy) -> serde_json::Value {
    p.upstream_json().await["backends"][0]["upgrades"].clone()
}

#[tokio::test]
async fn a_full_queue_and_a_long_wait_get_503_with_retry_after_and_the_backend_is_not_blamed() {
    let b = Counting::start().await;
    // One handshake at a time, one client waiting, for a second; one failure would eject.
    let p = start_proxy(&format!(
        "[upstream.app]\nbackends = [{{ addr = \"{}\" }}]\nmax_fails = 1\nadmission = {{ max_pending = 1, queue = 1, queue_timeout = \"1s\", retry_after = \"3s\" }}\n",
        b.addr
    ))
    .await;
    let limit = Duration::from_secs(30);
    // The backend holds the first handshake unanswered: it is pending.
    let to = p.http;
    let first = tokio::spawn(async move { handshake_at(to, "/slow", limit).await });
    wait_until(Duration::from_secs(10), || async { b.received() == 1 }).await;
    // The second waits in the queue.
    let asked = Instant::now();
    let second = tokio::spawn(async move { handshake_at(to, "/slow", limit).await });
    wait_until(Duration::from_secs(10), || async {
        admission_of(&p).await["waiting"] == 1
    })
    .await;
    // The third finds the queue full: refused at once.
    match handshake_at(to, "/slow", limit).await {
        Ended::Refused { retry_after, body } => {
            let secs = retry_after.expect("Retry-After");
            assert!(
                (3..=6).contains(&secs),
                "Retry-After {secs}: between 3 s and twice that"
            );
            assert!(body.contains("\"error\""), "{body}");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // Plain HTTP is not judged: it passes the queue.
    assert_eq!(plain_get(to).await, 200);
    // The second is refused once its wait is over, and not before.
    match second.await.unwrap() {
        Ended::Refused { retry_after, .. } => assert!(retry_after.is_some()),
        other => panic!("expected 503 after the wait, got {other:?}"),
    }
    assert!(
        asked.elapsed() >= Duration::from_secs(1),
        "refused before its deadline"
    );
    // The refused handshakes never reached the backend: it got the first and the GET.
    assert_eq!(b.received(), 2);
    let counts = admission_of(&p).await;
    assert_eq!(
        (&counts["admitted"], &counts["queued"], &counts["refused"]),
        (&1.into(), &1.into(), &2.into()),
        "{counts}"
    );
    // The backend answers the first handshake (with 200: no upgrade); its place is free again.
    b.release();
    assert!(
        matches!(first.await.unwrap(), Ended::Failed(_)),
        "a 200 is neither 101 nor 503"
    );
    wait_until(Duration::from_secs(10), || async {
        admission_of(&p).await["pending"] == 0
    })
    .await;
    // Nobody blamed the backend: no failure counted, still healthy, still taking upgrades.
    let text = metrics_text(&p).await;
    assert_eq!(total(&text, "tideway_backend_failures_total"), 0.0);
    assert_eq!(total(&text, "tideway_upstream_failures_total"), 0.0);
    assert_eq!(
        p.health().await,
        BTreeMap::from([(b.addr.to_string(), true)])
    );
    let counted = upgrades(&text, "app");
    assert_eq!(
        counted.get(&(b.addr.to_string(), "refused".into())),
        Some(&2)
    );
}

/// Read one answer from `io` (its head and a `content-length` body) within 20 s: (status,
/// head, body).
async fn read_answer(io: &mut tokio::net::TcpStream) -> (u16, String, String) {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]);
                    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
                    return (status.unwrap_or(0), head.clone(), body.to_string());
                }
            }
            let n = io.read(&mut chunk).await.expect("the answer, not a reset");
            assert!(n > 0, "closed before a whole answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an answer within 20 s")
}

async fn connect(to: std::net::SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(to).await.unwrap()
}

async fn send(io: &mut tokio::net::TcpStream, bytes: &[u8]) {
    tokio::io::AsyncWriteExt::write_all(io, bytes)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_body_sent_while_queued_reaches_the_backend_whole_and_none_of_it_is_a_request() {
    let b = Recorder::start().await;
    // Every request judged, one unanswered at a time, a handshake answered within 1 s.
    let p = start_proxy(&format!(
        "[upstream.app]\nbackends = [{{ addr = \"{}\" }}]\nmax_fails = 0\nadmission = {{ max_pending = 1, queue = 4, queue_timeout = \"30s\", all_requests = true, handshake_timeout = \"1s\" }}\n",
        b.addr
    ))
    .await;
    // The backend never answers this one: it holds the only place until handshake_timeout.
    let mut first = connect(p.http).await;
    send(&mut first, b"GET /hold HTTP/1.1\r\nhost: t\r\n\r\n").await;
    wait_until(Duration::from_secs(10), || async { b.seen().len() == 1 }).await;
    // An upload over 64 KiB (streamed, not buffered) waits in the queue; its body comes
    // meanwhile, and starts with what reads as a request.
    const LEN: usize = 100_000;
    let mut body = b"GET /smuggled HTTP/1.1\r\nhost: t\r\n\r\n".to_vec();
    body.resize(LEN, b'a');
    let mut up = connect(p.http).await;
    let head = format!("POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: {LEN}\r\n\r\n");
    send(&mut up, head.as_bytes()).await;
    wait_until(Duration::from_secs(10), || async {
        admission_of(&p).await["waiting"] == 1
    })
    .await;
    send(&mut up, &body).await;
    // The first handshake missed its deadline: 504, and its place went on.
    assert_eq!(read_answer(&mut first).await.0, 504);
    let (status, _, text) = read_answer(&mut up).await;
    assert_eq!((status, text.as_str()), (200, "ok"));
    // The connection goes on with the client's next request, and only that.
    send(&mut up, b"GET /next HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(read_answer(&mut up).await.0, 200);
    let seen = b.seen();
    let lines: Vec<_> = seen.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "GET /hold HTTP/1.1",
            "POST /up HTTP/1.1",
            "GET /next HTTP/1.1"
        ]
    );
    assert!(seen[1].body == body, "the body arrived whole and in order");
    // The missed deadline is the backend's failure.
    let text = metrics_text(&p).await;
    assert_eq!(total(&text, "tideway_backend_failures_total"), 1.0);
}

#[tokio::test]
async fn clients_waiting_for_admission_fill_no_backend_s_max_conns_and_one_that_leaves_logs_499() {
    let b = Recorder::start().await;
    let upstream = format!(
        "[upstream.app]\nbackends = [{{ addr = \"{}\", max_conns = 2 }}]\nadmission = {{ max_pending = 1, queue = 4, queue_timeout = \"30s\", all_requests = true }}\n",
        b.addr
    );
    let p = start_proxy_opts("access_log = true", "", "", &upstream, &[]).await;
    let mut held = connect(p.http).await;
    send(&mut held, b"GET /hold HTTP/1.1\r\nhost: t\r\n\r\n").await;
    wait_until(Duration::from_secs(10), || async { b.seen().len() == 1 }).await;
    // Two more wait for the place: neither is active at the backend, so the second is not
    // turned away for max_conns (a 503 counted as no_backend).
    let mut waiting = Vec::new();
    for path in ["/a", "/b"] {
        let mut io = connect(p.http).await;
        send(
            &mut io,
            format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes(),
        )
        .await;
        waiting.push(io);
    }
    wait_until(Duration::from_secs(10), || async {
        admission_of(&p).await["waiting"] == 2
    })
    .await;
    let text = metrics_text(&p).await;
    assert_eq!(total(&text, "tideway_backend_active_connections"), 1.0);
    assert_eq!(total(&text, "tideway_upstream_failures_total"), 0.0);
    assert_eq!(b.seen().len(), 1);
    // A client that hangs up while it waits leaves the queue, logged as nginx's 499.
    drop(waiting.remove(0));
    wait_until(Duration::from_secs(10), || async {
        admission_of(&p).await["waiting"] == 1
    })
    .await;
    let log = p.dir.path().join("tideway.log");
    wait_until(Duration::from_secs(10), || async {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("\"GET /a HTTP/1.1\" 499 "))
    })
    .await;
}

#[tokio::test]
async fn a_refusal_with_a_body_still_coming_lingers_instead_of_resetting_the_upload() {
    let b = Recorder::start().await;
    // The bucket starts empty and nobody may wait: the first request is refused at once.
    let p = start_proxy(&format!(
        "[upstream.app]\nbackends = [{{ addr = \"{}\" }}]\nadmission = {{ per_second = 1, queue = 0, all_requests = true }}\n",
        b.addr
    ))
    .await;
    let io = connect(p.http).await;
    let (mut rd, mut wr) = io.into_split();
    // An upload of 10 MB, 4 MB of it sent as fast as it goes: most of it unread when the 503
    // goes out.
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let head = "POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: 10000000\r\n\r\n";
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..64 {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let mut text = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut text),
    )
    .await
    .expect("the connection ends");
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.starts_with("HTTP/1.1 503 ") && text.contains("retry-after: "),
        "{read:?}: {text}"
    );
    // tideway read the rest of what came (lingering) instead of resetting the connection
    // under the client's upload.
    let sent = writer.await.unwrap();
    assert!(sent.is_ok(), "the upload was cut by a reset: {sent:?}");
    assert!(b.seen().is_empty(), "nothing reached the backend");
}

#[tokio::test]
async fn a_client_whose_backend_is_drained_while_it_waits_goes_to_another() {
    let (a, b) = (Recorder::start().await, Recorder::start().await);
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\nbackends = [{{ addr = \"{}\", id = \"a\" }}, {{ addr = \"{}\", id = \"b\" }}]\nmax_fails = 0\nadmission = {{ max_pending = 1, queue = 4, queue_timeout = \"30s\", all_requests = true, handshake_timeout = \"2s\" }}\n",
        a.addr, b.addr
    ))
    .await;
    // Round robin: the held request goes to one backend, the next to the other (answered),
    // the third waits for the first one's place.
    let mut held = connect(p.http).await;
    send(&mut held, b"GET /hold HTTP/1.1\r\nhost: t\r\n\r\n").await;
    wait_until(Duration::from_secs(10), || async {
        a.seen().len() + b.seen().len() == 1
    })
    .await;
    let (busy, other, busy_id) = if a.seen().len() == 1 {
        (&a, &b, "a")
    } else {
        (&b, &a, "b")
    };
    let mut second = connect(p.http).await;
    send(&mut second, b"GET /second HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(read_answer(&mut second).await.0, 200);
    assert_eq!(other.seen().len(), 1);
    let mut third = connect(p.http).await;
    send(&mut third, b"GET /third HTTP/1.1\r\nhost: t\r\n\r\n").await;
    wait_until(Duration::from_secs(10), || async {
        let view = p.upstream_json().await;
        view["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["upgrades"]["waiting"] == 1)
    })
    .await;
    // The operator drains the busy backend while the third client waits for it.
    let r = p
        .admin_req(
            reqwest::Method::POST,
            &format!("/v1/upstreams/app/backends/{busy_id}/state"),
            ADMIN_TOKEN,
        )
        .json(&serde_json::json!({"state": "draining"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Its place comes (the held handshake misses its deadline): it goes to the other backend.
    assert_eq!(read_answer(&mut third).await.0, 200);
    let lines = |r: &Recorder| r.seen().iter().map(|s| s.line.clone()).collect::<Vec<_>>();
    assert_eq!(lines(busy), ["GET /hold HTTP/1.1"]);
    assert_eq!(
        lines(other),
        ["GET /second HTTP/1.1", "GET /third HTTP/1.1"]
    );
}

#[tokio::test]
async fn a_slow_upload_holds_no_pending_place() {
    let b = Recorder::start().await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbackends = [{{ addr = \"{}\" }}]\nadmission = {{ max_pending = 1, queue = 4, queue_timeout = \"30s\", all_requests = true }}\n",
        b.addr
    ))
    .await;
    // An upload over 64 KiB streams at the client's pace: admitted, it sends a little and
    // pauses.
    const LEN: usize = 100_000;
    let mut up = connect(p.http).await;
    let head = format!("POST /up HTTP/1.1\r\nhost: t\r\ncontent-length: {LEN}\r\n\r\n");
    send(&mut up, head.as_bytes()).await;
    send(&mut up, &[b'a'; 1000]).await;
    wait_until(Duration::from_secs(10), || async {
        admission_of(&p).await["admitted"] == 1
    })
    .await;
    // Meanwhile the only place under max_pending is free for another request.
    let mut other = connect(p.http).await;
    send(&mut other, b"GET /other HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(read_answer(&mut other).await.0, 200);
    assert_eq!(admission_of(&p).await["waiting"], 0);
    // The upload ends, and is answered.
    send(&mut up, &[b'a'; LEN - 1000]).await;
    assert_eq!(read_answer(&mut up).await.0, 200);
    let seen = b.seen();
    let lines: Vec<_> = seen.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(lines, ["GET /other HTTP/1.1", "POST /up HTTP/1.1"]);
    assert_eq!(seen[1].body.len(), LEN);
}
