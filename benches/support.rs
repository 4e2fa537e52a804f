//! Small helpers the bench binaries share.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait (up to 20 s) until something listens on loopback `port`.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A keep-alive HTTP/1.1 client connection on loopback, as plain as it gets (a benchmark's
/// client must not be what is measured).
pub struct Http {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Http {
    /// Connect to loopback `port`.
    pub fn connect(port: u16) -> Self {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).unwrap();
        Http {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Send one request (`Content-Length` body) and read the answer; returns its status.
    pub fn request(&mut self, method: &str, path: &str, token: &str, body: &str) -> u16 {
        use std::io::{Read, Write};
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(req.as_bytes()).expect("send");
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    let n = self.stream.read(&mut chunk).expect("read");
                    assert!(n > 0, "connection closed mid-answer");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                self.buf.drain(..end + 4 + len);
                return status;
            }
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "connection closed before an answer");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The tideway binary run with `args` and `env` (RUST_LOG=warn, output dropped), killed when
/// dropped: `run --config PATH` for a proxy, `demo-backend ...` for a backend.
pub fn tideway(args: &[&str], env: &[(&str, &str)]) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_tideway"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tideway binary runs"),
    )
}
