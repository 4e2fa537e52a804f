//! A real TLS backend for tests: a test CA (rcgen), a certificate it signs for a DNS name and
//! 127.0.0.1, and a tokio-rustls server on port 0 that answers HTTP/1.x (keep-alive when the
//! request allows it) and echoes WebSocket messages after a real 101; on [`SMUGGLE`] it sends
//! an unasked answer behind the asked one. It records what it saw: the SNI name of each
//! handshake, handshakes that failed, and each request's path. [`acceptor`] is its TLS side,
//! for tests that serve other ways.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// A certificate authority of the test's own.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    /// Its certificate as a PEM file.
    pub pem: PathBuf,
}

impl TestCa {
    /// A new CA, its certificate written to `dir/NAME.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("tideway test CA {name}"));
        let cert = params.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        TestCa { cert, key, pem }
    }

    /// A leaf certificate for `dns` and 127.0.0.1, signed by this CA, with its key.
    pub fn issue(&self, dns: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let (cert, key) = self.leaf(dns);
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), der)
    }

    fn leaf(&self, dns: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![dns.to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }

    /// The PEM files of a leaf certificate for `dns` and 127.0.0.1 and its key, in `dir`.
    pub fn issue_files(&self, dir: &Path, dns: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf(dns);
        let (c, k) = (
            dir.join(format!("{dns}.pem")),
            dir.join(format!("{dns}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

/// The path the backend answers with an unasked answer behind the asked one.
pub const SMUGGLE: &str = "/smuggle";
/// Bytes its answer's body is padded with, after the usual text.
pub const SMUGGLE_PAD: usize = 10_000;
/// That unasked answer.
pub const INJECTED: &str = "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nINJECTED!";

/// A TLS server side with a certificate for `dns` (and 127.0.0.1) that `ca` signs.
pub fn acceptor(ca: &TestCa, dns: &str) -> tokio_rustls::TlsAcceptor {
    let (cert, key) = ca.issue(dns);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// What the backend saw.
#[derive(Default)]
pub struct Seen {
    /// The SNI name of each completed handshake (None: the client sent none).
    pub sni: Vec<Option<String>>,
    /// Handshakes that failed (a client that refused the certificate).
    pub failed_handshakes: usize,
    /// Each request in order: the number of its connection (counted from 0) and its path.
    pub requests: Vec<(usize, String)>,
}

/// A TLS backend serving on 127.0.0.1 until dropped.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBackend {
    /// Serve with a certificate for `dns` (and 127.0.0.1) that `ca` signs.
    pub async fn start(ca: &TestCa, dns: &str) -> TlsBackend {
        let acceptor = acceptor(ca, dns);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            for conn in 0.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen) = (acceptor.clone(), recorded.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => {
                            let sni = tls.get_ref().1.server_name().map(str::to_string);
                            seen.lock().unwrap().sni.push(sni.clone());
                            serve(tls, (conn, sni), seen).await;
                        }
                        Err(_) => seen.lock().unwrap().failed_handshakes += 1,
                    }
                });
            }
        });
        TlsBackend { addr, seen, task }
    }

    /// The SNI names of the handshakes so far.
    pub fn sni(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().sni.clone()
    }

    pub fn requests(&self) -> Vec<(usize, String)> {
        self.seen.lock().unwrap().requests.clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.1).collect()
    }

    pub fn failed_handshakes(&self) -> usize {
        self.seen.lock().unwrap().failed_handshakes
    }
}

/// One header's value in a request head (names match case-insensitively).
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Answer requests on one connection: `body` names the path and the SNI name seen.
async fn serve<S>(mut s: S, (conn, sni): (usize, Option<String>), seen: Arc<Mutex<Seen>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let mut first = head.split_whitespace();
        let path = first.nth(1).unwrap_or("").to_string();
        let version = first.next().unwrap_or("");
        seen.lock().unwrap().requests.push((conn, path.clone()));
        let upgrade = header(&head, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        if let (true, Some(key)) = (upgrade, header(&head, "sec-websocket-key")) {
            let accept = derive_accept_key(key.as_bytes());
            let reply = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
            if s.write_all(reply.as_bytes()).await.is_err() || s.flush().await.is_err() {
                return;
            }
            let mut ws = WebSocketStream::from_raw_socket(s, Role::Server, None).await;
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    return;
                }
                if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                    return;
                }
            }
            return;
        }
        let close = version == "HTTP/1.0"
            || header(&head, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let mut body = format!(
            "tls-backend path={path} sni={}",
            sni.as_deref().unwrap_or("-")
        );
        if path == SMUGGLE {
            // Longer than a first read of the head takes: the rest is read as a body of a
            // length, which leaves the bytes behind it unread.
            body.push_str(&".".repeat(SMUGGLE_PAD));
        }
        let mut reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if path == SMUGGLE {
            // A second answer nobody asked for, in the same write (so in the same record).
            reply.push_str(INJECTED);
        }
        if s.write_all(reply.as_bytes()).await.is_err() || s.flush().await.is_err() {
            return;
        }
        if close {
            let _ = s.shutdown().await;
            return;
        }
    }
}
