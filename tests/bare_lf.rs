//! Bare LF line ends (RFC 9112 §2.2), differential against real nginx: the same raw bytes go
//! to tideway and to nginx, each in front of a raw recording backend of its own. Request heads
//! and chunked request bodies may end their lines in a bare LF, a backend may answer with
//! bare-LF heads and bare-LF chunk framing, and a bare CR is refused. Each test asserts the
//! client's answer and exactly what the backend received: CRLF only, the head tideway
//! rebuilds. A backend answering bare LF is a healthy backend: never a failure, never ejected.

mod common;
#[path = "corpus/nginx.rs"]
mod nginx;

use common::{metric, start_proxy, wait_until};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The answer of a backend that frames its own head in CRLF.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// How long one client may wait for its answers.
const DEADLINE: Duration = Duration::from_secs(5);

/// A raw HTTP/1.1 backend on a real socket: frames each request at its first CRLF CRLF and its
/// Content-Length (what a strict backend does), records it byte for byte, and answers every
/// request with `answer` on a connection it keeps open, unless `close` says to close it after
/// the first answer.
struct Backend {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    async fn start(answer: &'static [u8]) -> Backend {
        Backend::start_with(answer, false).await
    }

    async fn start_with(answer: &'static [u8], close: bool) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r, c) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, answer, close, r.clone()));
            }
        });
        Backend {
            addr,
            requests,
            connections,
            task,
        }
    }

    fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(
    mut s: TcpStream,
    answer: &'static [u8],
    close: bool,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if matches!(s.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                return;
            }
        };
        let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head + len {
            if matches!(s.read_buf(&mut buf).await, Ok(0) | Err(_)) {
                return;
            }
        }
        requests
            .lock()
            .unwrap()
            .push(buf.drain(..head + len).collect());
        if s.write_all(answer).await.is_err() || close {
            return;
        }
    }
}

/// Every LF is preceded by CR and every CR followed by LF.
fn crlf_only(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\n' => i > 0 && bytes[i - 1] == b'\r',
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}

/// One answer as the client got it: its head as sent, its status and its (de-chunked) body.
#[derive(Debug)]
struct Answer {
    head: String,
    status: u16,
    body: Vec<u8>,
}

/// Strictly decode a CRLF-framed chunked body at the start of `buf`: (data, bytes used).
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let (mut data, mut at) = (Vec::new(), 0);
    loop {
        let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&buf[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return (buf.get(at..at + 2)? == b"\r\n").then_some((data, at + 2));
        }
        data.extend_from_slice(buf.get(at..at + size)?);
        at += size;
        if buf.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
}

/// The first complete answer in `buf` (its head must end in CRLF CRLF): the answer and its length.
fn parse_answer(buf: &[u8]) -> Option<(Answer, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let status = head.get(9..12)?.parse().unwrap();
    let lower = head.to_ascii_lowercase();
    let rest = &buf[end..];
    let (body, used) = if status == 101 {
        (rest.to_vec(), rest.len())
    } else if lower.contains("\r\ntransfer-encoding: chunked\r\n") {
        dechunk(rest)?
    } else {
        let len: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        (rest.get(..len)?.to_vec(), len)
    };
    Some((Answer { head, status, body }, end + used))
}

/// Send `parts` on one connection (each after the answers to the one before) and read the
/// answers: `want` in all, and, after a 101, until `tunnel` bytes followed it. Also returns
/// every byte received, and whether the server closed the connection.
async fn exchange(
    addr: SocketAddr,
    parts: &[&[u8]],
    want: usize,
    tunnel: usize,
) -> (Vec<Answer>, Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (mut raw, mut answers, mut closed) = (Vec::new(), Vec::new(), false);
    let deadline = Instant::now() + DEADLINE;
    let per_part = want.div_ceil(parts.len());
    for (i, part) in parts.iter().enumerate() {
        s.write_all(part).await.unwrap();
        let wanted = if i + 1 == parts.len() {
            want
        } else {
            per_part * (i + 1)
        };
        loop {
            answers.clear();
            let mut at = 0;
            while let Some((a, used)) = parse_answer(&raw[at..]) {
                at += used;
                answers.push(a);
            }
            let done = answers.len() >= wanted
                && answers
                    .last()
                    .is_none_or(|a| a.status != 101 || a.body.len() >= tunnel);
            if done || closed {
                break;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline.into(), s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => closed = true,
                Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("no answer in time; got {:?}", String::from_utf8_lossy(&raw)),
            }
        }
    }
    (answers, raw, closed)
}

/// tideway in front of a fresh backend answering `answer`.
async fn tideway(answer: &'static [u8]) -> (common::Proxy, Backend) {
    let backend = Backend::start(answer).await;
    let p = start_proxy(&format!(
        "[upstream.app]\nbackends = [{{ addr = \"{}\", id = \"raw\" }}]\n",
        backend.addr
    ))
    .await;
    (p, backend)
}

/// nginx in front of a fresh backend answering `answer`.
async fn nginx(answer: &'static [u8]) -> (nginx::Nginx, Backend) {
    let backend = Backend::start(answer).await;
    (nginx::Nginx::start(backend.addr).await, backend)
}

/// The head tideway sends for a request from this test's client: `line`, Host `x`, `extra`
/// header lines, the forwarding headers and the framing for a body of `body` bytes.
fn rebuilt(line: &str, extra: &str, body: &str) -> Vec<u8> {
    let length = if line.starts_with("POST") {
        format!("content-length: {}\r\n", body.len())
    } else {
        String::new()
    };
    format!(
        "{line}\r\nhost: x\r\n{extra}x-forwarded-for: 127.0.0.1\r\nx-real-ip: 127.0.0.1\r\n\
         x-forwarded-proto: http\r\n{length}\r\n{body}"
    )
    .into_bytes()
}

/// The request line and body of a request a backend recorded.
fn line_and_body(raw: &[u8]) -> (String, Vec<u8>) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let text = String::from_utf8_lossy(&raw[..end]);
    (
        text.lines().next().unwrap().to_string(),
        raw[end..].to_vec(),
    )
}

/// A case's name, the client's bytes, and each request the backend must get.
type Sent = (&'static str, &'static [u8], Vec<Vec<u8>>);

/// Client bytes with bare-LF or mixed line ends: tideway and nginx both answer 200 to each
/// request and their backends get the same request lines and bodies, in CRLF; tideway's
/// backend gets exactly the head tideway rebuilds.
#[tokio::test]
async fn bare_lf_requests_are_taken_and_sent_on_in_crlf() {
    let cases: [Sent; 5] = [
        (
            "bare-LF head",
            b"GET /a HTTP/1.1\nHost: x\nX-A: 1\n\n",
            vec![rebuilt("GET /a HTTP/1.1", "X-A: 1\r\n", "")],
        ),
        (
            "mixed line ends, ending LF CRLF",
            b"POST /a HTTP/1.1\r\nHost: x\nX-A: 1\r\nContent-Length: 5\n\r\nhello",
            vec![rebuilt("POST /a HTTP/1.1", "X-A: 1\r\n", "hello")],
        ),
        (
            "empty lines first, ending CRLF LF",
            b"\n\r\nGET /a HTTP/1.1\nHost: x\r\nX-A: 1  \r\n\n",
            vec![rebuilt("GET /a HTTP/1.1", "X-A: 1\r\n", "")],
        ),
        (
            "bare-LF chunked body with extension and trailer",
            b"POST /a HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n\
              5\nhello\n6;e=1\n world\r\n0\nX-T: 1\n\n",
            vec![rebuilt("POST /a HTTP/1.1", "", "hello world")],
        ),
        (
            "bare-LF head, a CRLF request pipelined behind it",
            b"GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            vec![
                rebuilt("GET /a HTTP/1.1", "", ""),
                rebuilt("GET /b HTTP/1.1", "", ""),
            ],
        ),
    ];
    for (name, bytes, want) in cases {
        let (p, ours) = tideway(OK).await;
        let (answers, raw, closed) = exchange(p.http, &[bytes], want.len(), 0).await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        assert_eq!(statuses, vec![200; want.len()], "{name}: tideway answered");
        assert!(!closed && crlf_only(&raw), "{name}: {raw:?}");
        let got = ours.requests();
        assert_eq!(
            got,
            want,
            "{name}: tideway's backend got {:?}",
            got.iter()
                .map(|r| String::from_utf8_lossy(r))
                .collect::<Vec<_>>()
        );

        let (n, theirs) = nginx(OK).await;
        let (answers, raw, _) = exchange(n.addr, &[bytes], want.len(), 0).await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        assert_eq!(statuses, vec![200; want.len()], "{name}: nginx answered");
        assert!(crlf_only(&raw));
        let nginx_got = theirs.requests();
        assert!(
            nginx_got.iter().all(|r| crlf_only(r)),
            "{name}: {nginx_got:?}"
        );
        let same: Vec<_> = got.iter().map(|r| line_and_body(r)).collect();
        let theirs_lines: Vec<_> = nginx_got.iter().map(|r| line_and_body(r)).collect();
        assert_eq!(same, theirs_lines, "{name}: tideway's backend vs nginx's");
    }
}

/// A bare CR (in a head or in chunk framing) is refused by both with 400 and a close, and
/// nothing reaches either backend.
#[tokio::test]
async fn a_bare_cr_is_refused_like_nginx() {
    let cases: [(&str, &[u8], u16); 4] = [
        (
            "bare CR ending the request line",
            b"GET /a HTTP/1.1\rHost: x\r\n\r\n",
            400,
        ),
        (
            "bare CR ending a header line",
            b"GET /a HTTP/1.1\nHost: x\rX-A: 1\n\n",
            400,
        ),
        (
            "bare CR in chunk framing",
            b"POST /a HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n5\rhello\n0\n\n",
            400,
        ),
        (
            "obs-fold after a bare LF",
            b"GET /a HTTP/1.1\nHost: x\nX-A: 1\n 2\n\n",
            400,
        ),
    ];
    for (name, bytes, status) in cases {
        let (p, ours) = tideway(OK).await;
        let (answers, raw, closed) = exchange(p.http, &[bytes], 1, 0).await;
        assert_eq!(answers.len(), 1, "{name}: {raw:?}");
        assert_eq!(answers[0].status, status, "{name}: tideway");
        assert!(
            String::from_utf8_lossy(&answers[0].body).contains("\"error\""),
            "{name}: {:?}",
            answers[0]
        );
        assert!(
            closed || answers[0].head.contains("connection: close"),
            "{name}"
        );
        let (n, theirs) = nginx(OK).await;
        let (answers, _, _) = exchange(n.addr, &[bytes], 1, 0).await;
        assert_eq!(answers[0].status, status, "{name}: nginx");
        assert_eq!(
            ours.requests(),
            Vec::<Vec<u8>>::new(),
            "{name}: tideway forwarded"
        );
        assert_eq!(
            theirs.requests(),
            Vec::<Vec<u8>>::new(),
            "{name}: nginx forwarded"
        );
    }
}

const LF_LENGTH: &[u8] =
    b"HTTP/1.1 200 OK\nContent-Type: text/plain\nX-Backend: lf\nContent-Length: 11\n\nhello world";
const LF_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\nX-Backend: lf\nTransfer-Encoding: chunked\n\n\
    5\nhello\n6;ext=1\n world\r\n0\nX-Trailer: 1\n\n";
const MIXED: &[u8] = b"HTTP/1.1 200 OK\r\nX-Backend: lf\nContent-Length: 11\n\r\nhello world";
const BARE_CR: &[u8] = b"HTTP/1.1 200 OK\rX-Backend: lf\r\nContent-Length: 11\r\n\r\nhello world";

/// A backend answering with bare-LF heads and bare-LF chunk framing: both proxies pass the
/// answer on, tideway with its head rebuilt in CRLF and the body re-framed, twice on one client
/// connection; tideway reuses the one backend connection, so it framed each answer where the
/// backend ended it.
#[tokio::test]
async fn bare_lf_answers_reach_the_client_in_crlf() {
    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "bare-LF head, Content-Length",
            LF_LENGTH,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: lf\r\ncontent-length: 11\r\n\r\n",
        ),
        (
            "bare-LF head and chunk framing",
            LF_CHUNKED,
            "HTTP/1.1 200 OK\r\nX-Backend: lf\r\ntransfer-encoding: chunked\r\n\r\n",
        ),
        (
            "mixed line ends",
            MIXED,
            "HTTP/1.1 200 OK\r\nX-Backend: lf\r\ncontent-length: 11\r\n\r\n",
        ),
    ];
    for (name, answer, head) in cases {
        let (p, ours) = tideway(answer).await;
        let (answers, raw, closed) = exchange(p.http, &[GET, GET], 2, 0).await;
        assert!(
            !closed && crlf_only(&raw),
            "{name}: {:?}",
            String::from_utf8_lossy(&raw)
        );
        for a in &answers {
            assert_eq!(
                (a.head.as_str(), a.body.as_slice()),
                (head, &b"hello world"[..]),
                "{name}"
            );
        }
        assert_eq!(answers.len(), 2, "{name}");
        assert_eq!(
            ours.requests(),
            vec![rebuilt("GET /a HTTP/1.1", "", ""); 2],
            "{name}"
        );
        assert_eq!(
            ours.connections.load(Ordering::SeqCst),
            1,
            "{name}: backend connections"
        );
        assert_eq!(
            metric(&p, "tideway_upstream_failures_total").await,
            0.0,
            "{name}"
        );

        let (n, _theirs) = nginx(answer).await;
        let (answers, raw, _) = exchange(n.addr, &[GET, GET], 2, 0).await;
        assert!(crlf_only(&raw), "{name}: nginx");
        let got: Vec<_> = answers.iter().map(|a| (a.status, a.body.clone())).collect();
        assert_eq!(
            got,
            vec![(200, b"hello world".to_vec()); 2],
            "{name}: nginx"
        );
    }
}

/// A response head with a bare CR: tideway refuses it with 502. nginx takes an invalid status
/// line for an HTTP/0.9 answer: it passes the backend's bytes to the client as they are, bare
/// CR included.
#[tokio::test]
async fn a_bare_cr_answer_is_a_bad_gateway() {
    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let (p, _ours) = tideway(BARE_CR).await;
    let (answers, _, _) = exchange(p.http, &[GET], 1, 0).await;
    assert_eq!(answers[0].status, 502);
    assert!(String::from_utf8_lossy(&answers[0].body).contains("\"error\""));
    let theirs = Backend::start_with(BARE_CR, true).await;
    let n = nginx::Nginx::start(theirs.addr).await;
    let mut s = TcpStream::connect(n.addr).await.unwrap();
    s.write_all(GET).await.unwrap();
    let mut raw = Vec::new();
    while raw.len() < BARE_CR.len() {
        let n = tokio::time::timeout(DEADLINE, s.read_buf(&mut raw))
            .await
            .expect("nginx passes the answer on")
            .unwrap();
        assert!(n > 0, "closed after {raw:?}");
    }
    assert_eq!(raw, BARE_CR);
}

/// A WebSocket handshake answered with a bare-LF 101: the client gets the 101 in CRLF with all
/// its headers, then what the backend sent behind it.
#[tokio::test]
async fn a_bare_lf_101_is_rebuilt_in_crlf() {
    const HANDSHAKE: &[u8] =
        b"GET /ws HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n";
    const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n\
        Connection: Upgrade\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n\n\x81\x02hi";
    let (p, ours) = tideway(SWITCH).await;
    let (answers, raw, _) = exchange(p.http, &[HANDSHAKE], 1, 4).await;
    assert_eq!(
        answers[0].head,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        "{raw:?}"
    );
    assert_eq!(answers[0].body, b"\x81\x02hi");
    let got = ours.requests();
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with(b"GET /ws HTTP/1.1\r\nhost: x\r\n") && crlf_only(&got[0]));

    let (n, _theirs) = nginx(SWITCH).await;
    let (answers, raw, _) = exchange(n.addr, &[HANDSHAKE], 1, 4).await;
    assert_eq!(answers[0].status, 101, "{raw:?}");
    assert_eq!(answers[0].body, b"\x81\x02hi");
}

/// Backends that answer everything, health checks included, with bare-LF heads and chunk
/// framing are healthy: active checks pass (a backend takes traffic only after its first
/// pass), and with `max_fails = 1` no answer counts as a failure or ejects one.
#[tokio::test]
async fn a_backend_answering_bare_lf_is_never_a_failure() {
    let (a, b) = (
        Backend::start(LF_CHUNKED).await,
        Backend::start(LF_LENGTH).await,
    );
    let p = start_proxy(&format!(
        "[upstream.app]\nbalance = \"round_robin\"\nmax_fails = 1\nfail_timeout = \"30s\"\n\
         health = {{ kind = \"http\", path = \"/health\", interval = \"100ms\", timeout = \"500ms\", rise = 1, fall = 1 }}\n\
         backends = [{{ addr = \"{}\", id = \"a\" }}, {{ addr = \"{}\", id = \"b\" }}]\n",
        a.addr, b.addr
    ))
    .await;
    wait_until(Duration::from_secs(5), || async {
        p.health().await.values().all(|&h| h)
    })
    .await;
    const GET: &[u8] = b"GET /a HTTP/1.1\nHost: x\n\n";
    let (answers, _, _) = exchange(p.http, &[GET; 6], 6, 0).await;
    let got: Vec<_> = answers.iter().map(|a| (a.status, a.body.clone())).collect();
    assert_eq!(got, vec![(200, b"hello world".to_vec()); 6]);
    let served = |b: &Backend| {
        b.requests()
            .iter()
            .filter(|r| r.starts_with(b"GET /a "))
            .count()
    };
    assert_eq!((served(&a), served(&b)), (3, 3));
    assert_eq!(metric(&p, "tideway_upstream_failures_total").await, 0.0);
    let health = p.health().await;
    assert!(health.values().all(|&h| h), "{health:?}");
}
