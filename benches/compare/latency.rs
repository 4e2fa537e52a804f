//! Tail latency at a fixed rate: an open-loop HTTP/1.1 keep-alive load (requests sent on a
//! schedule, not when the previous answer came back), so a stall shows up in the latency of
//! every request scheduled behind it instead of slowing the load down (no coordinated
//! omission). Latency runs from a request's scheduled time to the end of its answer when the
//! answer before it was late (the wait is the proxy's doing), else from when it was sent (the
//! timer's lateness, up to a millisecond in tokio, is the load generator's own). An answer
//! with `Connection: close` (a proxy's keep-alive request limit) ends the connection cleanly;
//! the next request opens a new one.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

/// Connections the rate is spread over.
const CONNS: usize = 16;

/// Latency percentiles of one run, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tail {
    pub p50: f64,
    pub p99: f64,
    /// Requests that got no complete answer.
    pub failed: u64,
}

/// How reading an answer went.
#[derive(PartialEq)]
enum Answer {
    /// Complete; the connection stays open.
    Open,
    /// Complete, with `Connection: close`.
    Closing,
    /// EOF or a malformed answer.
    Failed,
}

/// Read one response with a `Content-Length` body from `s`, using `buf` (which may hold the
/// start of it already).
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Answer {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let closing = head.lines().any(|l| l.trim() == "connection: close");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 16384];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return Answer::Failed,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..total);
            return if closing {
                Answer::Closing
            } else {
                Answer::Open
            };
        }
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return Answer::Failed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `rate` requests a second to `port` for `seconds`, over [`CONNS`] connections.
pub async fn run(port: u16, rate: f64, seconds: u64) -> Tail {
    let per_conn = Duration::from_secs_f64(CONNS as f64 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..CONNS)
        .map(|k| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                s.set_nodelay(true).unwrap();
                let req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
                let mut buf = Vec::with_capacity(4096);
                let mut lat: Vec<u32> = Vec::new();
                let mut failed = 0u64;
                // Connections start spread over one interval.
                let mut next = start + per_conn.mul_f64(k as f64 / CONNS as f64);
                let mut prev_done = Instant::now();
                while next < end {
                    tokio::time::sleep_until(next).await;
                    let origin = if prev_done > next {
                        next
                    } else {
                        Instant::now()
                    };
                    let answer = if s.write_all(req).await.is_ok() {
                        read_response(&mut s, &mut buf).await
                    } else {
                        Answer::Failed
                    };
                    prev_done = Instant::now();
                    if answer == Answer::Failed {
                        failed += 1;
                    } else {
                        lat.push(origin.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    if answer != Answer::Open {
                        s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                        s.set_nodelay(true).unwrap();
                        buf.clear();
                    }
                    next += per_conn;
                }
                (lat, failed)
            })
        })
        .collect();
    let mut all: Vec<u32> = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        failed += f;
    }
    all.sort_unstable();
    let at = |q: f64| {
        if all.is_empty() {
            return f64::NAN;
        }
        f64::from(all[((all.len() - 1) as f64 * q).round() as usize])
    };
    Tail {
        p50: at(0.50),
        p99: at(0.99),
        failed,
    }
}

/// [`run`] on each of `ports` in turn, `rounds` times over. For each port: the median p50 and
/// the median p99 of its rounds (failures summed), and its p99 round by round.
pub async fn rounds(
    ports: &[u16],
    rate: f64,
    seconds: u64,
    rounds: usize,
) -> Vec<(Tail, Vec<f64>)> {
    let mut runs: Vec<Vec<Tail>> = vec![Vec::new(); ports.len()];
    for _ in 0..rounds {
        for (port, runs) in ports.iter().zip(runs.iter_mut()) {
            runs.push(run(*port, rate, seconds).await);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    runs.into_iter()
        .map(|r| {
            let p99s: Vec<f64> = r.iter().map(|t| t.p99).collect();
            let tail = Tail {
                p50: median(r.iter().map(|t| t.p50).collect()),
                p99: median(p99s.clone()),
                failed: r.iter().map(|t| t.failed).sum(),
            };
            (tail, p99s)
        })
        .collect()
}
