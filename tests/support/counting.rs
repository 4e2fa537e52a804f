//! A backend that counts the requests it receives, and raw-socket clients that choose their
//! source address, for per-client limit tests.
//!
//! The backend reads request heads (no bodies), counts each one, and answers `200 OK` with
//! `ok`; a request for `/slow` is held until [`Counting::release`] (or its client goes), and
//! again after [`Counting::hold`]. It
//! keeps the connection open unless the request says `Connection: close` (nginx sends that).
//! A request for `/big` is answered with a body of [`BIG_BODY`] bytes, written as fast as the
//! connection takes them; [`Counting::body_sent`] says how many it took.
//!
//! Clients bind their socket to a chosen loopback address (`127.0.0.1`, `127.0.0.2`, ...) so
//! one test can be several clients. Imports only std and tokio.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// The counting backend, serving until dropped.
pub struct Counting {
    pub addr: SocketAddr,
    received: Arc<AtomicUsize>,
    body_sent: Arc<AtomicUsize>,
    /// `/big` bodies whose connection failed before the end.
    cut: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Counting {
    pub async fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let body_sent = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(AtomicUsize::new(0));
        let (release, held) = watch::channel(false);
        let (count, sent) = (received.clone(), (body_sent.clone(), cut.clone()));
        let task = tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                tokio::spawn(serve(io, count.clone(), sent.clone(), held.clone()));
            }
        });
        Counting {
            addr,
            received,
            body_sent,
            cut,
            release,
            task,
        }
    }

    /// Request heads received so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// Bytes of `/big` bodies the connections took so far.
    pub fn body_sent(&self) -> usize {
        self.body_sent.load(Ordering::SeqCst)
    }

    /// `/big` bodies whose connection was closed (by the proxy) before their end.
    pub fn big_cut(&self) -> usize {
        self.cut.load(Ordering::SeqCst)
    }

    /// Answer every held `/slow` request, and every later one at once.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    /// Hold `/slow` requests again, until the next [`Counting::release`].
    pub fn hold(&self) {
        let _ = self.release.send(false);
    }
}

/// The length of a `/big` body: 1 GiB, more than any buffer on its way should hold.
pub const BIG_BODY: usize = 1 << 30;

async fn serve(
    mut io: TcpStream,
    count: Arc<AtomicUsize>,
    (sent, cut): (Arc<AtomicUsize>, Arc<AtomicUsize>),
    mut held: watch::Receiver<bool>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(head) = crate::common::heads::next(&mut io, &mut buf).await else {
            return;
        };
        let head = head.to_ascii_lowercase();
        count.fetch_add(1, Ordering::SeqCst);
        if head.starts_with("get /slow") {
            let _ = held.wait_for(|r| *r).await;
        }
        if head.starts_with("get /big") {
            if !send_big(&mut io, &sent).await {
                cut.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        let close = head.contains("connection: close");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{}\r\nok",
            if close { "connection: close\r\n" } else { "" }
        );
        if io.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Answer `/big`: [`BIG_BODY`] bytes, counted in `sent` as the connection takes them. False:
/// the connection failed before the end.
async fn send_big(io: &mut TcpStream, sent: &AtomicUsize) -> bool {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG_BODY}\r\n\r\n");
    if io.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut left = BIG_BODY;
    while left > 0 {
        let n = match io.write(&chunk[..left.min(chunk.len())]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        sent.fetch_add(n, Ordering::SeqCst);
        left -= n;
    }
    true
}

/// A TCP connection to `to` from the loopback address `from`.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Send `GET path` with `Connection: close` on `io` and return the status (0: no answer).
pub async fn status_of(mut io: TcpStream, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: limits.test\r\nConnection: close\r\n\r\n");
    if io.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = io.read_to_end(&mut answer).await;
    status_in(&answer)
}

/// The status of an HTTP answer's first line (0: none).
pub fn status_in(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One `GET path` from `from` to `to` on a connection of its own: the status.
pub async fn get_from(from: IpAddr, to: SocketAddr, path: &str) -> u16 {
    status_of(connect_from(from, to).await, path).await
}

/// Requests sent at once, each on its own connection, whose answers are collected as they come.
pub struct Volley {
    answers: tokio::sync::mpsc::UnboundedReceiver<u16>,
    pub sent: usize,
}

impl Volley {
    /// Send `n` requests from `from` to `to`, all connected before any is sent.
    pub async fn fire(from: IpAddr, to: SocketAddr, path: &str, n: usize) -> Volley {
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(connect_from(from, to).await);
        }
        let (tx, answers) = tokio::sync::mpsc::unbounded_channel();
        for io in conns {
            let (tx, path) = (tx.clone(), path.to_string());
            tokio::spawn(async move {
                let _ = tx.send(status_of(io, &path).await);
            });
        }
        Volley { answers, sent: n }
    }

    /// The next `k` answers, each within `limit`; panics if one does not come.
    pub async fn answers(&mut self, k: usize, limit: Duration) -> Vec<u16> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < k {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.answers.recv()).await {
                Ok(Some(s)) => got.push(s),
                _ => panic!(
                    "only {} of {k} answers within {limit:?}: {got:?}",
                    got.len()
                ),
            }
        }
        got.sort_unstable();
        got
    }

    /// Answers that already arrived, without waiting.
    pub fn arrived(&mut self) -> Vec<u16> {
        let mut got = Vec::new();
        while let Ok(s) = self.answers.try_recv() {
            got.push(s);
        }
        got
    }
}

/// `127.0.0.1`
pub const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
/// `127.0.0.2`: another client.
pub const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
/// `127.0.0.3`: a client no harness helper uses (readiness checks connect from `127.0.0.1`).
pub const THREE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));
