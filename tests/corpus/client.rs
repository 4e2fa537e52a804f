//! The corpus's raw-socket client: sends a client's bytes on a connection of its own and reads
//! answers within a deadline, never by sleeping. Reading stops at end of stream, at the deadline,
//! once every request has a final answer on a connection that stays open, or (after a 101) once
//! a whole WebSocket frame came back.
//!
//! Imports only the case types; knows nothing of tideway or nginx.

use super::cases::Client;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one client connection may take in all.
pub const DEADLINE: Duration = Duration::from_secs(3);
/// How long to wait for an answer (e.g. `100 Continue`) before sending a client's next part.
pub const PART_WAIT: Duration = Duration::from_secs(1);

/// How a client connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The server closed it (or reset it).
    Closed,
    /// Every request was answered and the connection stayed open.
    Open,
    /// Still open, with answers missing, when the deadline came.
    Stalled,
}

/// One answer as the client parsed it.
#[derive(Clone, Debug)]
pub struct Response {
    /// 0 for bytes that are not an HTTP response.
    pub status: u16,
    /// The head, lower-cased.
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl Response {
    fn closes(&self) -> bool {
        let h = &self.head;
        h.lines()
            .any(|l| l.starts_with("connection:") && l.contains("close"))
            || (h.starts_with("http/1.0") && !h.contains("keep-alive"))
    }

    fn is_final(&self) -> bool {
        self.status == 101 || !(100..200).contains(&self.status)
    }
}

/// What one client connection got.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub responses: Vec<Response>,
    pub end: End,
    /// Bytes after a 101.
    pub tunnel: Vec<u8>,
    pub elapsed: Duration,
}

struct Reader {
    s: TcpStream,
    buf: Vec<u8>,
    responses: Vec<Response>,
    tunnel: Option<Vec<u8>>,
    eof: bool,
}

impl Reader {
    /// Parse what can be parsed; `true` once `done` holds or the stream ended.
    fn progress(&mut self, done: &dyn Fn(&Reader) -> bool) -> bool {
        loop {
            if let Some(t) = &mut self.tunnel {
                t.append(&mut self.buf);
                break;
            }
            let Some((r, used)) = parse_response(&self.buf, self.eof) else {
                break;
            };
            self.buf.drain(..used);
            if r.status == 101 {
                self.tunnel = Some(Vec::new());
            }
            self.responses.push(r);
        }
        self.eof || done(self)
    }

    /// Read until `done` holds, the stream ends or `deadline` passes (false then).
    async fn until(&mut self, deadline: Instant, done: &dyn Fn(&Reader) -> bool) -> bool {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if self.progress(done) {
                return true;
            }
            let d = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(d, self.s.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn finals(&self) -> usize {
        self.responses.iter().filter(|r| r.is_final()).count()
    }
}

/// Run one client against `addr`. The connection is returned open (if it is) so the caller can
/// hold it while later clients run.
pub async fn run(addr: SocketAddr, client: &Client) -> (Outcome, Option<TcpStream>) {
    let start = Instant::now();
    let deadline = start + DEADLINE;
    let s = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut r = Reader {
        s,
        buf: Vec::new(),
        responses: Vec::new(),
        tunnel: None,
        eof: false,
    };
    for (i, part) in client.parts.iter().enumerate() {
        // A server that already refused may have closed: what it said is read below.
        let _ = r.s.write_all(part).await;
        if i + 1 < client.parts.len() {
            let want = r.responses.len() + 1;
            let wait = deadline.min(Instant::now() + PART_WAIT);
            r.until(wait, &|r: &Reader| r.responses.len() >= want).await;
        }
    }
    let requests = client.requests;
    let done = move |r: &Reader| match &r.tunnel {
        Some(t) => ws_frame_len(t).is_some(),
        None => r.finals() >= requests && r.responses.last().is_some_and(|l| !l.closes()),
    };
    let finished = r.until(deadline, &done).await;
    let end = match (r.eof, finished) {
        (true, _) => End::Closed,
        (false, true) => End::Open,
        (false, false) => End::Stalled,
    };
    let outcome = Outcome {
        responses: r.responses,
        end,
        tunnel: r.tunnel.unwrap_or_default(),
        elapsed: start.elapsed(),
    };
    (outcome, (!r.eof).then_some(r.s))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first response in `buf` and the bytes it used; `None` if more bytes are needed.
/// At end of stream, bytes that are no response come back as one with status 0.
pub fn parse_response(buf: &[u8], eof: bool) -> Option<(Response, usize)> {
    if buf.is_empty() {
        return None;
    }
    let garbage = || {
        let r = Response {
            status: 0,
            head: String::from_utf8_lossy(buf).to_ascii_lowercase(),
            body: Vec::new(),
            chunked: false,
        };
        (r, buf.len())
    };
    let Some(head_len) = find(buf, b"\r\n\r\n").map(|p| p + 4) else {
        return eof.then(garbage);
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).to_ascii_lowercase();
    let status = head
        .strip_prefix("http/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else {
        return Some(garbage());
    };
    let header = |name: &str| {
        head.split("\r\n")
            .skip(1)
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let rest = &buf[head_len..];
    let (body, used) = if (100..200).contains(&status) || status == 204 || status == 304 {
        (Vec::new(), 0)
    } else if chunked {
        dechunk(rest)?
    } else if let Some(cl) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        (rest.get(..cl)?.to_vec(), cl)
    } else if eof {
        (rest.to_vec(), rest.len())
    } else {
        return None;
    };
    let r = Response {
        status,
        head,
        body,
        chunked,
    };
    Some((r, head_len + used))
}

/// A complete chunked body at the start of `buf`: the data and the bytes it used.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&buf[at..], b"\r\n")?;
        let line = String::from_utf8_lossy(&buf[at..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = at + find(&buf[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((body, at));
                }
            }
        }
        body.extend_from_slice(buf.get(at..at + size)?);
        at += size + 2;
        if buf.len() < at {
            return None;
        }
    }
}

/// The length of the first complete WebSocket frame in `buf`, if there is one.
pub fn ws_frame_len(buf: &[u8]) -> Option<usize> {
    let b1 = *buf.get(1)?;
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    let (len, at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let total = at + mask + usize::try_from(len).ok()?;
    (buf.len() >= total).then_some(total)
}

/// A masked client frame with first byte `b0` (FIN and opcode) and `payload`.
pub fn masked_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![b0, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}
