//! A recording backend that frames HTTP requests the way PHP Workerman 4.x does, so tests can
//! see exactly which requests a lenient application server would cut out of what a proxy sends.
//!
//! Framing, per TCP connection: bytes are buffered; a head ends at the first `\r\n\r\n`; the
//! method is the text before the first space. Body length: in [`Mode::Lenient41`] (Workerman
//! <= 4.1.0) GET, OPTIONS, HEAD and DELETE have no body whatever the headers say; otherwise (and
//! for every method in [`Mode::Lenient42`], Workerman 4.2.1) it is PHP `(int)` of the 10 bytes
//! after the first case-insensitive `\r\nContent-Length: ` in the head (their leading ASCII
//! digits, else 0), and 0 without that header. Head and body are one request, recorded as framed
//! with its connection number, and answered `200 OK` with Content-Length, keep-alive always
//! (even after `Connection: close`).
//!
//! Paths: `POST /store` appends its body to a shared store, `GET /stored` returns it,
//! `/chunked` is answered with a chunked body (`hello world`).
//!
//! WebSocket: a request with `Upgrade: websocket` is held for [`UPGRADE_HOLD`] before it is
//! answered, and the bytes that arrived beyond its head by then are recorded as `early` (a strict
//! backend would refuse them). With `accept_ws` and a `Sec-WebSocket-Key` it answers `101` and
//! records every later byte, echoing WebSocket frames; otherwise it answers `200 OK` (a refused
//! upgrade) and goes on parsing HTTP, early bytes included.
//!
//! Imports only std, tokio and tungstenite's accept-key helper; knows nothing of tideway.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long an upgrade head is held before the backend answers it.
pub const UPGRADE_HOLD: Duration = Duration::from_millis(200);

/// Which Workerman release's framing to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Workerman <= 4.1.0: GET, OPTIONS, HEAD and DELETE never have a body.
    Lenient41,
    /// Workerman 4.2.1: every method's body length comes from Content-Length.
    Lenient42,
}

/// How the backend behaves.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub mode: Mode,
    /// Answer a WebSocket upgrade that has a key with `101` (else `200`, a refused upgrade).
    pub accept_ws: bool,
    /// Workerman's `Websocket::dealHandshake`: any GET whose head holds `Sec-WebSocket-Key:`
    /// (case-insensitive; as a header, inside another header's value, or in the target) is
    /// answered `101`, with or without `Upgrade` and `Connection`, and becomes a tunnel.
    pub deal_handshake: bool,
    /// Workerman's `maxPackageSize`: a request whose body length is over it is answered
    /// `HTTP/1.1 413 Request Entity Too Large` and the connection closed at once, mid-body
    /// (with unread bytes, so the close is a reset).
    pub max_package: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Lenient42,
            accept_ws: false,
            deal_handshake: false,
            max_package: None,
        }
    }
}

/// One request as the backend framed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// Connection number, in accept order from 0.
    pub conn: usize,
    /// Head and body, exactly as framed.
    pub raw: Vec<u8>,
}

/// One upgrade request and what arrived around the answer to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upgrade {
    pub conn: usize,
    /// 101, or 200 for a refused upgrade.
    pub answered: u16,
    /// Bytes beyond the upgrade head already received when the backend answered.
    pub early: Vec<u8>,
    /// Bytes received after the 101 (empty for a refused upgrade).
    pub after: Vec<u8>,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    /// Heads of requests refused for their size (413 and a close).
    too_large: Vec<Vec<u8>>,
    upgrades: Vec<Upgrade>,
    store: Vec<u8>,
    /// Per connection: bytes received and not (yet) framed as a request.
    pending: std::collections::BTreeMap<usize, usize>,
}

/// A running recording backend; stops when dropped.
pub struct Workerman {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    activity: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Workerman {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Workerman {
    /// Listen on 127.0.0.1:0 and serve every connection in a task of its own.
    pub async fn start(options: Options) -> Workerman {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let activity = Arc::new(AtomicUsize::new(0));
        let conn = Conn {
            options,
            state: state.clone(),
            activity: activity.clone(),
            no: 0,
        };
        let task = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for no in 0.. {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                conn.activity.fetch_add(1, Ordering::SeqCst);
                let c = Conn { no, ..conn.clone() };
                tasks.spawn(c.serve(stream));
            }
        });
        Workerman {
            addr,
            state,
            activity,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request framed so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every upgrade request answered so far, in order.
    pub fn upgrades(&self) -> Vec<Upgrade> {
        self.state.lock().unwrap().upgrades.clone()
    }

    /// Bytes received on HTTP connections and not framed as a request (yet), in all.
    pub fn unframed(&self) -> usize {
        self.state.lock().unwrap().pending.values().sum()
    }

    /// Heads of the requests refused with 413 for a body over `max_package`.
    pub fn too_large(&self) -> Vec<Vec<u8>> {
        self.state.lock().unwrap().too_large.clone()
    }

    /// What `POST /store` requests have stored.
    pub fn store(&self) -> Vec<u8> {
        self.state.lock().unwrap().store.clone()
    }

    /// Wait until nothing has arrived or been accepted for `quiet` (at most `limit`), so
    /// recordings are read after the backend has framed what is already on its way.
    pub async fn settle(&self, quiet: Duration, limit: Duration) {
        let start = Instant::now();
        let mut last = self.activity.load(Ordering::SeqCst);
        let mut since = Instant::now();
        while start.elapsed() < limit && since.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = self.activity.load(Ordering::SeqCst);
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
    }
}

#[derive(Clone)]
struct Conn {
    options: Options,
    state: Arc<Mutex<State>>,
    activity: Arc<AtomicUsize>,
    no: usize,
}

impl Conn {
    /// Read more bytes into `buf`; false at end of stream or on an error.
    async fn read_more(&self, s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                self.activity.fetch_add(1, Ordering::SeqCst);
                true
            }
        }
    }

    fn pending(&self, n: usize) {
        self.state.lock().unwrap().pending.insert(self.no, n);
    }

    async fn serve(self, mut s: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let head_len = loop {
                if let Some(p) = find(&buf, b"\r\n\r\n") {
                    break p + 4;
                }
                if !self.read_more(&mut s, &mut buf).await {
                    return;
                }
                self.pending(buf.len());
            };
            let body = body_len(&buf[..head_len], self.options.mode);
            if self.options.max_package.is_some_and(|max| body > max) {
                let head = buf[..head_len].to_vec();
                self.state.lock().unwrap().too_large.push(head);
                let _ = s
                    .write_all(b"HTTP/1.1 413 Request Entity Too Large\r\n\r\n")
                    .await;
                return; // dropped with the body unread: a reset, as Workerman's close does
            }
            let total = head_len + body;
            while buf.len() < total {
                if !self.read_more(&mut s, &mut buf).await {
                    return;
                }
                self.pending(buf.len());
            }
            let raw: Vec<u8> = buf.drain(..total).collect();
            self.pending(buf.len());
            let rec = Recorded { conn: self.no, raw };
            let seen = {
                let mut st = self.state.lock().unwrap();
                st.requests.push(rec.clone());
                st.requests.len()
            };
            let head = String::from_utf8_lossy(rec.head()).to_ascii_lowercase();
            let handshake = if self.options.deal_handshake {
                rec.method() == "GET" && head.contains("sec-websocket-key:")
            } else {
                has_header(&head, "upgrade", "websocket")
            };
            let answer = if handshake {
                match self.upgrade(&mut s, &mut buf, &rec).await {
                    Some(answer) => answer,
                    None => return, // tunnelled until the end
                }
            } else {
                self.answer(&rec, seen)
            };
            if s.write_all(&answer).await.is_err() {
                return;
            }
        }
    }

    /// The answer to an ordinary request.
    fn answer(&self, rec: &Recorded, seen: usize) -> Vec<u8> {
        let (method, target) = (rec.method(), rec.target());
        if target == "/chunked" {
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n\
                5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec();
        }
        let body = match (method.as_str(), target.as_str()) {
            ("POST", "/store") => {
                let mut st = self.state.lock().unwrap();
                st.store.extend_from_slice(rec.body());
                format!("stored {}", rec.body().len()).into_bytes()
            }
            ("GET", "/stored") => self.state.lock().unwrap().store.clone(),
            _ => format!("seen {seen}: {}", rec.request_line()).into_bytes(),
        };
        ok(&body)
    }

    /// Hold an upgrade head, then answer it. `None` once a 101 tunnel has ended.
    async fn upgrade(
        &self,
        s: &mut TcpStream,
        buf: &mut Vec<u8>,
        rec: &Recorded,
    ) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + UPGRADE_HOLD;
        while let Ok(more) = tokio::time::timeout_at(deadline, self.read_more(s, buf)).await {
            if !more {
                break;
            }
            self.pending(buf.len());
        }
        let key = if self.options.deal_handshake {
            deal_handshake_key(rec.head())
        } else {
            rec.header_values("sec-websocket-key").into_iter().next()
        };
        let accept = self.options.accept_ws.then_some(key).flatten();
        let up = Upgrade {
            conn: self.no,
            answered: if accept.is_some() { 101 } else { 200 },
            early: buf.clone(),
            after: Vec::new(),
        };
        let Some(key) = accept else {
            self.state.lock().unwrap().upgrades.push(up);
            return Some(ok(b"upgrade refused"));
        };
        self.pending(0);
        let index = {
            let mut st = self.state.lock().unwrap();
            st.upgrades.push(up);
            st.upgrades.len() - 1
        };
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
        );
        s.write_all(answer.as_bytes()).await.ok()?;
        // The early bytes (if any) are the first tunnel bytes; they are already recorded.
        let mut frames = std::mem::take(buf);
        loop {
            while let Some((reply, used)) = echo_frame(&frames) {
                frames.drain(..used);
                s.write_all(&reply).await.ok()?;
            }
            let before = frames.len();
            if !self.read_more(s, &mut frames).await {
                return None;
            }
            let mut st = self.state.lock().unwrap();
            st.upgrades[index]
                .after
                .extend_from_slice(&frames[before..]);
        }
    }
}

/// `200 OK` with a Content-Length body, keep-alive.
fn ok(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: keep-alive\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The body length Workerman would give the request whose head (ending `\r\n\r\n`) is `head`.
pub fn body_len(head: &[u8], mode: Mode) -> usize {
    let method = head.split(|&b| b == b' ').next().unwrap_or_default();
    if mode == Mode::Lenient41 && [&b"GET"[..], b"OPTIONS", b"HEAD", b"DELETE"].contains(&method) {
        return 0;
    }
    let lower = head.to_ascii_lowercase();
    let needle = b"\r\ncontent-length: ";
    let Some(at) = find(&lower, needle) else {
        return 0;
    };
    let value = &head[at + needle.len()..];
    let digits = value
        .iter()
        .take(10)
        .take_while(|b| b.is_ascii_digit())
        .fold(0usize, |n, b| n * 10 + usize::from(b - b'0'));
    digits
}

/// The key Workerman's handshake takes: `/Sec-WebSocket-Key: *(.*?)\r\n/i` on the whole head.
fn deal_handshake_key(head: &[u8]) -> Option<String> {
    let lower = head.to_ascii_lowercase();
    let at = find(&lower, b"sec-websocket-key:")? + b"sec-websocket-key:".len();
    let rest = &head[at..];
    let end = find(rest, b"\r\n")?;
    Some(
        String::from_utf8_lossy(&rest[..end])
            .trim_start_matches(' ')
            .to_string(),
    )
}

/// Whether the lower-cased `head` has a header `name` whose value contains `token`.
fn has_header(head: &str, name: &str, token: &str) -> bool {
    head.split("\r\n").skip(1).any(|line| {
        line.split_once(':')
            .is_some_and(|(n, v)| n.trim() == name && v.contains(token))
    })
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The unmasked echo of the first complete WebSocket frame in `buf`, and the bytes it used.
fn echo_frame(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let mask: [u8; 4] = if masked {
        at += 4;
        buf.get(at - 4..at)?.try_into().ok()?
    } else {
        [0; 4]
    };
    let payload: Vec<u8> = buf
        .get(at..at + len)?
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Some((frame(b0, &payload), at + len))
}

/// An unmasked frame with first byte `b0` (FIN and opcode) and `payload`.
pub fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

impl Recorded {
    /// Length of the head, `\r\n\r\n` included.
    pub fn head_len(&self) -> usize {
        find(&self.raw, b"\r\n\r\n").map_or(self.raw.len(), |p| p + 4)
    }

    pub fn head(&self) -> &[u8] {
        &self.raw[..self.head_len()]
    }

    pub fn body(&self) -> &[u8] {
        &self.raw[self.head_len()..]
    }

    /// The first line of the head, lossily decoded.
    pub fn request_line(&self) -> String {
        let head = String::from_utf8_lossy(self.head()).into_owned();
        head.split("\r\n").next().unwrap_or_default().to_string()
    }

    /// The text before the first space (Workerman's idea of the method).
    pub fn method(&self) -> String {
        let line = self.request_line();
        line.split(' ').next().unwrap_or_default().to_string()
    }

    pub fn target(&self) -> String {
        self.request_line()
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    /// The last word of the request line.
    pub fn version(&self) -> String {
        let line = self.request_line();
        line.rsplit(' ').next().unwrap_or_default().to_string()
    }

    /// Header lines after the request line as (lower-case name, trimmed value), in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        let head = String::from_utf8_lossy(self.head()).into_owned();
        head.split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_ascii_lowercase(), v.trim().to_string()),
                None => (l.to_ascii_lowercase(), String::new()),
            })
            .collect()
    }

    /// Values of every header called `name` (lower case).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers()
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect()
    }
}

#[cfg(test)]
mod framing {
    use super::*;

    #[test]
    fn content_length_is_php_int_of_ten_bytes() {
        let cl = |v: &str| {
            body_len(
                format!("POST / HTTP/1.1\r\nContent-Length: {v}\r\n\r\n").as_bytes(),
                Mode::Lenient42,
            )
        };
        assert_eq!(cl("53"), 53);
        assert_eq!(cl("000000000053"), 0);
        assert_eq!(cl("+5"), 0);
        assert_eq!(cl("5 5"), 5);
        assert_eq!(cl("0x5"), 0);
        assert_eq!(cl("12345678901"), 1234567890);
        let get = b"GET / HTTP/1.1\r\ncontent-length: 9\r\n\r\n";
        assert_eq!(body_len(get, Mode::Lenient41), 0);
        assert_eq!(body_len(get, Mode::Lenient42), 9);
        assert_eq!(
            body_len(
                b"POST / HTTP/1.1\r\nContent-Length:9\r\n\r\n",
                Mode::Lenient42
            ),
            0
        );
    }
}
