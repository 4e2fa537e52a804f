//! A backend that records every request it parses (its request line and its body, read by
//! `Content-Length`), for framing tests: what the backend received, byte for byte. A request
//! for `/hold` is never answered; any other gets `200 OK` with `ok`, and the connection stays
//! open for the next request. Imports only std and tokio.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the backend parsed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub line: String,
    pub body: Vec<u8>,
}

/// The recording backend, serving until dropped.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((io, _)) = listener.accept().await {
                tokio::spawn(serve(io, log.clone()));
            }
        });
        Recorder { addr, seen, task }
    }

    /// The requests parsed so far, in order.
    pub fn seen(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(mut io: TcpStream, seen: Arc<Mutex<Vec<Recorded>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !read_more(&mut io, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let line = head.lines().next().unwrap_or_default().to_string();
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            if !read_more(&mut io, &mut buf).await {
                return;
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let hold = line.contains(" /hold ");
        seen.lock().unwrap().push(Recorded { line, body });
        if hold {
            // Never answered: read on until the client goes.
            while read_more(&mut io, &mut buf).await {}
            return;
        }
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if io.write_all(ok).await.is_err() {
            return;
        }
    }
}

/// Read more of `io` onto `buf`; false when the connection ends.
pub async fn read_more(io: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match io.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
