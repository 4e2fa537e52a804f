//! A reconnect storm's clients, for the admission test and the storm bench: many WebSocket
//! handshakes to one address at once, each ending connected (101, the socket kept open) or
//! refused (503, with its `Retry-After`). Raw sockets and one fixed handshake: the client must
//! not be what is measured. Imports only std and tokio.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The handshake a client sends for `path`.
pub fn handshake_for(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: storm.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").into_bytes()
}

/// How one handshake ended.
#[derive(Debug)]
pub enum Ended {
    /// 101: the WebSocket is open (kept open while this value lives).
    Connected(TcpStream),
    /// 503 with `Retry-After` (None: the header was missing) and the body.
    Refused {
        retry_after: Option<u64>,
        body: String,
    },
    /// Anything else: what happened.
    Failed(String),
}

/// The answer head in `buf` (None: not complete yet).
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The value of header `name` (lowercase) in `head`.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// One storm client: connect to `to`, send the handshake for `/storm`, read the answer (for
/// at most `limit`).
pub async fn handshake(to: SocketAddr, limit: Duration) -> Ended {
    handshake_at(to, "/storm", limit).await
}

/// [`handshake`] for `path`.
pub async fn handshake_at(to: SocketAddr, path: &str, limit: Duration) -> Ended {
    match tokio::time::timeout(limit, handshake_inner(to, path)).await {
        Ok(ended) => ended,
        Err(_) => Ended::Failed(format!("no answer within {limit:?}")),
    }
}

async fn handshake_inner(to: SocketAddr, path: &str) -> Ended {
    match TcpStream::connect(to).await {
        Ok(io) => handshake_on(io, path).await,
        Err(e) => Ended::Failed(format!("connect: {e}")),
    }
}

/// The handshake for `path` on a connection already made.
async fn handshake_on(mut io: TcpStream, path: &str) -> Ended {
    if let Err(e) = io.write_all(&handshake_for(path)).await {
        return Ended::Failed(format!("send: {e}"));
    }
    let mut buf = Vec::with_capacity(512);
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        match io.read_buf(&mut buf).await {
            Ok(0) => return Ended::Failed("closed without an answer".into()),
            Err(e) => return Ended::Failed(format!("read: {e}")),
            Ok(_) => {}
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    if head.starts_with("HTTP/1.1 101 ") {
        return Ended::Connected(io);
    }
    if !head.starts_with("HTTP/1.1 503 ") {
        return Ended::Failed(format!("answered {:?}", head.lines().next()));
    }
    let len: usize = header(&head, "content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while buf.len() < end + len {
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ended::Refused {
        retry_after: header(&head, "retry-after").and_then(|v| v.parse().ok()),
        body: String::from_utf8_lossy(&buf[end..]).into_owned(),
    }
}

/// `n` connections to `to`, made before the storm (so that it comes at once, however fast
/// this machine connects).
pub async fn connect_all(to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let connecting: Vec<_> = (0..n)
        .map(|_| tokio::spawn(TcpStream::connect(to)))
        .collect();
    let mut conns = Vec::with_capacity(n);
    for c in connecting {
        conns.push(c.await.expect("a connect task").expect("connected"));
    }
    conns
}

/// A storm on `conns` (from [`connect_all`]): every handshake sent at once; each client's end
/// and when it came (after the storm started). With `retry`, a refused client waits its
/// `Retry-After` and tries again on a new connection until connected (then its end is its
/// last one, and `tries` counts its handshakes).
pub async fn storm(
    to: SocketAddr,
    conns: Vec<TcpStream>,
    retry: bool,
    limit: Duration,
) -> Vec<Client> {
    let n = conns.len();
    let start = Instant::now();
    let clients: Vec<_> = conns
        .into_iter()
        .map(|io| {
            tokio::spawn(async move {
                let mut tries = 0;
                let mut first = Some(io);
                loop {
                    tries += 1;
                    let ended = match first.take() {
                        Some(io) => tokio::time::timeout(limit, handshake_on(io, "/storm"))
                            .await
                            .unwrap_or_else(|_| {
                                Ended::Failed(format!("no answer within {limit:?}"))
                            }),
                        None => handshake(to, limit).await,
                    };
                    let at = start.elapsed();
                    match ended {
                        Ended::Refused {
                            retry_after: Some(s),
                            ..
                        } if retry => tokio::time::sleep(Duration::from_secs(s)).await,
                        ended => return Client { ended, at, tries },
                    }
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for c in clients {
        out.push(c.await.expect("a client task"));
    }
    out
}

/// One client of a storm.
#[derive(Debug)]
pub struct Client {
    pub ended: Ended,
    /// When its last handshake ended, after the storm started.
    pub at: Duration,
    pub tries: u32,
}

/// Raise this process's open-file limit to its hard limit (children inherit it): a storm
/// holds a socket per client. Returns the limit in force afterwards, read back (0 when it
/// cannot be read), so a refused raise shows as the old limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            eprintln!(
                "setrlimit(RLIMIT_NOFILE, {}): {}",
                lim.rlim_max,
                std::io::Error::last_os_error()
            );
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
    }
    lim.rlim_cur
}

/// The `tideway_websocket_upgrades_total` counts in a /metrics text: (backend, outcome) ->
/// count, for upstream `upstream`.
pub fn upgrades(
    metrics: &str,
    upstream: &str,
) -> std::collections::BTreeMap<(String, String), u64> {
    let label = |line: &str, name: &str| -> Option<String> {
        let from = line.find(&format!("{name}=\""))? + name.len() + 2;
        let to = from + line[from..].find('"')?;
        Some(line[from..to].to_string())
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("tideway_websocket_upgrades_total{"))
        .filter(|l| label(l, "upstream").as_deref() == Some(upstream))
        .filter_map(|l| {
            let n = l.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some(((label(l, "backend")?, label(l, "outcome")?), n))
        })
        .collect()
}
